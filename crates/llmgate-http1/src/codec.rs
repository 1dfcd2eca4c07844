//! HTTP/1.1 framing for both ends: request heads and bodies, response heads
//! and bodies (content-length, chunked, until close). Pure functions over
//! byte buffers, so every edge is unit-tested without I/O.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Largest head (request or response) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields accepted in a head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 4096;

/// The peer broke HTTP/1.1 framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP/1.1 message: {0}")]
pub struct ProtocolError(pub(crate) String);

fn bad(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// Fields that describe one connection and so never cross a proxy: the
/// hop-by-hop list of RFC 9110 §7.6.1, and `Proxy-Connection`, which old
/// clients send in its place. (Fields a `Connection` field names are
/// hop-by-hop too; that takes reading its value.)
fn connection_specific(name: &HeaderName) -> bool {
    llmgate_core::headers::is_hop_by_hop(name) || name.as_str() == "proxy-connection"
}

/// Request headers that describe one connection or that the client sets
/// itself; never copied from the caller's request.
fn skipped_request_header(name: &HeaderName) -> bool {
    connection_specific(name)
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::EXPECT
}

/// Writes `name: value` and its CRLF.
fn encode_field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The bytes [`encode_fields`] writes at most for `headers` (fields it
/// skips included).
fn fields_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Writes every field of `headers` that `skip` does not exclude.
fn encode_fields(headers: &HeaderMap, skip: impl Fn(&HeaderName) -> bool, out: &mut Vec<u8>) {
    for (name, value) in headers {
        if !skip(name) {
            encode_field(name.as_str().as_bytes(), value.as_bytes(), out);
        }
    }
}

/// Writes a request head into `out`: `path_prefix` (the replica URL's path,
/// no trailing slash) joined with the request's path and query, `Host` set
/// to `authority`, a `content-length` for `body_len` unless the method
/// carries no body and the body is empty, and the caller's end-to-end
/// headers.
pub fn encode_request_head(
    method: &Method,
    path_prefix: &str,
    path_and_query: &str,
    authority: &str,
    headers: &HeaderMap,
    body_len: usize,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_prefix.as_bytes());
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    encode_fields(headers, skipped_request_header, out);
    let bodiless = matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    );
    if body_len > 0 || !bodiless {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, body_len as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal: `write!` goes through `core::fmt`, several
/// times the cost of this for the one number each head carries.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes the size line of a chunk of `len` bytes (`{len:x}\r\n`).
pub fn encode_chunk_size(len: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the replica closes the connection (never reusable).
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The final status (interim 1xx answers are skipped).
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The end-to-end header fields, values sliced from the received head;
    /// see [`parse_response_head`] for those left out.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Parses a final response head from the front of `buf` and removes it
/// (interim 1xx answers are skipped). `Ok(None)` means more bytes are
/// needed.
///
/// The head's hop-by-hop fields ([`HOP_BY_HOP`], `Proxy-Connection`, and
/// every field a `Connection` value names) are not in
/// [`ResponseHead::headers`]: the answer is for a proxy, which must not
/// forward them, and leaving them out here costs less than inserting them
/// for the server to find and remove again (nginx, like most replicas,
/// sends `Connection: keep-alive` with every answer). They still decide
/// [`ResponseHead::framing`] and [`ResponseHead::keep_alive`] as before;
/// a field that `Connection` names is dropped only after those are
/// decided, so naming `Content-Length` does not change the framing.
///
/// [`HOP_BY_HOP`]: llmgate_core::headers::HOP_BY_HOP
pub fn parse_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, ProtocolError> {
    loop {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) | Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD_BYTES {
                    return Err(bad(format!(
                        "response head larger than {MAX_HEAD_BYTES} bytes"
                    )));
                }
                return Ok(None);
            }
            Err(e) => return Err(bad(format!("unparseable response head: {e}"))),
        };
        let code = res.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| bad(format!("status code {code}")))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(bad("101 Switching Protocols is not supported"));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: the final answer follows.
            buf.advance(len);
            continue;
        }
        let version = match res.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut inline = [NO_SPAN; INLINE_SPANS];
        let mut spilled = Vec::new();
        let spans = spans_of(buf, res.headers, &mut inline, &mut spilled);
        let head = buf.split_to(len).freeze();
        let mut noted = Noted::default();
        let mut headers = headers_from_spans(spans, &head, &mut noted, Fields::EndToEnd)?;
        let framing = framing(&head, spans, &noted, status, request_method)?;
        let connection = noted.connection.values(&head, spans, CONNECTION);
        let keep_alive = connection_of_answer(connection, version, &mut headers)
            && framing != Framing::UntilClose;
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Where one header field of a parsed head lies in its buffer: name start
/// and length, value start and length. Recorded while the parser's slices
/// borrow the buffer, so the values can become slices of the head (no
/// copies) once it is cut off.
type Span = (u32, u32, u32, u32);

const NO_SPAN: Span = (0, 0, 0, 0);

/// Spans kept on the stack; a head with more fields spills to the heap.
/// Room for all [`MAX_HEADERS`] would be zeroed and moved on every parse,
/// for heads that mostly carry fewer than ten fields.
const INLINE_SPANS: usize = 24;

fn spans_of<'s>(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    inline: &'s mut [Span; INLINE_SPANS],
    spilled: &'s mut Vec<Span>,
) -> &'s [Span] {
    let spans: &mut [Span] = if parsed.len() <= INLINE_SPANS {
        &mut inline[..parsed.len()]
    } else {
        spilled.resize(parsed.len(), NO_SPAN);
        spilled
    };
    let base = buf.as_ptr() as usize;
    for (span, h) in spans.iter_mut().zip(parsed) {
        *span = (
            (h.name.as_ptr() as usize - base) as u32,
            h.name.len() as u32,
            (h.value.as_ptr() as usize - base) as u32,
            h.value.len() as u32,
        );
    }
    spans
}

/// The fields that decide framing and persistence, noted while a head's
/// fields are converted: reading them then needs no lookups in the map.
#[derive(Default)]
struct Noted {
    content_length: Seen,
    transfer_encoding: Seen,
    connection: Seen,
    host: Seen,
    expect: Seen,
}

/// How often one field occurs in a head, and where its first value lies.
#[derive(Clone, Copy, Default)]
struct Seen {
    count: u32,
    start: u32,
    len: u32,
}

impl Seen {
    fn note(&mut self, start: u32, len: u32) {
        if self.count == 0 {
            self.start = start;
            self.len = len;
        }
        self.count += 1;
    }

    /// The values of field `name` (lower case), in order, read from the
    /// head itself.
    /// A field that occurs once (or not at all) needs no search; repeated
    /// ones are found again among the head's `spans`, not in its map,
    /// which may leave the field out.
    #[inline(always)]
    fn values<'a>(&self, head: &'a [u8], spans: &'a [Span], name: &'static [u8]) -> Values<'a> {
        match self.count {
            0 => Values::One(None),
            1 => Values::One(Some(
                &head[self.start as usize..(self.start + self.len) as usize],
            )),
            _ => Values::Many {
                spans: spans.iter(),
                head,
                name,
            },
        }
    }
}

/// Field names [`Seen::values`] looks for.
const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const CONNECTION: &[u8] = b"connection";
const EXPECT: &[u8] = b"expect";

/// The values of one field, as bytes.
#[derive(Clone)]
enum Values<'a> {
    One(Option<&'a [u8]>),
    Many {
        spans: std::slice::Iter<'a, Span>,
        head: &'a [u8],
        name: &'static [u8],
    },
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    #[inline(always)]
    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::One(v) => v.take(),
            Values::Many { spans, head, name } => next_of(spans, head, name),
        }
    }
}

/// The next value of field `name` among `spans`.
#[inline(never)]
fn next_of<'a>(
    spans: &mut std::slice::Iter<'a, Span>,
    head: &'a [u8],
    name: &[u8],
) -> Option<&'a [u8]> {
    spans.find_map(|&(ns, nl, vs, vl)| {
        // Names compare as `HeaderName`s do: without regard to case.
        let field = &head[ns as usize..(ns + nl) as usize];
        field
            .eq_ignore_ascii_case(name)
            .then(|| &head[vs as usize..(vs + vl) as usize])
    })
}

/// The header name `token` spells, for names most heads carry; `None` for
/// the rest, which take `HeaderName::from_bytes`. That lowercases the name
/// a byte at a time into a scratch buffer and then matches it against
/// every standard name; this compares a word at a time against a few.
///
/// `token` is a field name httparse accepted, so a token. OR-ing 0x20
/// into a token byte gives a lowercase letter only from that letter in
/// either case, and `-` only from `-` (the other byte it comes from, CR,
/// is no token byte): the comparison is ASCII case-insensitive equality,
/// the same match `from_bytes` makes.
fn common_name(token: &[u8]) -> Option<HeaderName> {
    let is = |lower: &[u8]| eq_lowercase(token, lower);
    Some(match token.len() {
        4 if is(b"host") => header::HOST,
        4 if is(b"date") => header::DATE,
        6 if is(b"server") => header::SERVER,
        6 if is(b"accept") => header::ACCEPT,
        10 if is(b"connection") => header::CONNECTION,
        10 if is(b"user-agent") => header::USER_AGENT,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"authorization") => header::AUTHORIZATION,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        15 if is(b"accept-encoding") => header::ACCEPT_ENCODING,
        17 if is(b"transfer-encoding") => header::TRANSFER_ENCODING,
        _ => return None,
    })
}

/// Whether `token`, of `lower`'s length (at least 4), spells `lower` (lower
/// case letters and `-`) in any case. OR-ing 0x20 into a byte gives a
/// lowercase letter only from that letter in either case, and `-` only
/// from `-` or CR; CR is in no field name or value, so this is exact for
/// both (see also [`common_name`]).
#[inline(always)]
fn eq_lowercase(token: &[u8], lower: &[u8]) -> bool {
    let n = lower.len();
    if n < 8 {
        let word =
            |s: &[u8], at: usize| u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
        return word(token, 0) | 0x2020_2020 == word(lower, 0)
            && word(token, n - 4) | 0x2020_2020 == word(lower, n - 4);
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mut at = 0;
    while at + 8 < n {
        if word(token, at) | 0x2020_2020_2020_2020 != word(lower, at) {
            return false;
        }
        at += 8;
    }
    // The last word overlaps the one before when `n` is no multiple of 8.
    word(token, n - 8) | 0x2020_2020_2020_2020 == word(lower, n - 8)
}

/// Which fields of a head go into its map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    /// Every field (a request head: the server forwards what it chooses).
    All,
    /// All but the [`connection_specific`] ones (a replica's answer).
    EndToEnd,
}

fn headers_from_spans(
    spans: &[Span],
    head: &Bytes,
    noted: &mut Noted,
    fields: Fields,
) -> Result<HeaderMap, ProtocolError> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(ns, nl, vs, vl) in spans {
        let name_bytes = &head[ns as usize..(ns + nl) as usize];
        let (name, common) = match common_name(name_bytes) {
            Some(name) => (name, true),
            None => (
                HeaderName::from_bytes(name_bytes).map_err(|_| {
                    bad(format!(
                        "header name {:?}",
                        String::from_utf8_lossy(name_bytes)
                    ))
                })?,
                false,
            ),
        };
        let mut hop = false;
        if name == header::CONTENT_LENGTH {
            noted.content_length.note(vs, vl);
        } else if name == header::TRANSFER_ENCODING {
            noted.transfer_encoding.note(vs, vl);
            hop = true;
        } else if name == header::CONNECTION {
            noted.connection.note(vs, vl);
            hop = true;
        } else if name == header::HOST {
            noted.host.note(vs, vl);
        } else if name == header::EXPECT {
            noted.expect.note(vs, vl);
        } else if fields == Fields::EndToEnd && !common {
            // Of the names `common_name` knows, only the two above are
            // hop-by-hop (`common_names_and_hop_by_hop_agree`), so the
            // fields nearly every answer carries skip this test.
            hop = connection_specific(&name);
        }
        if hop && fields == Fields::EndToEnd {
            continue;
        }
        let value = head.slice(vs as usize..(vs + vl) as usize);
        // SAFETY: `HeaderValue` takes every byte but controls other than
        // TAB (below 0x20, and 0x7F). httparse, parsing with the default
        // configuration as every caller here does (no obsolete line
        // folding, no skipped invalid lines), ends a value at the first
        // byte outside TAB, 0x20-0x7E and 0x80-0xFF, and fails the head
        // unless that byte starts the line end; the value excludes the
        // line end. So every byte of `value` is one `HeaderValue` takes
        // (`httparse_values_are_header_values` checks all 256 bytes, and
        // debug builds validate here anyway).
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(value) };
        headers.append(name, value);
    }
    Ok(headers)
}

fn framing(
    head: &[u8],
    spans: &[Span],
    noted: &Noted,
    status: StatusCode,
    method: &Method,
) -> Result<Framing, ProtocolError> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if noted.transfer_encoding.count > 0 {
        // RFC 9112 §6.3: chunked must be the final coding; anything else
        // runs until the connection closes. Transfer-Encoding overrides
        // Content-Length.
        let codings = noted
            .transfer_encoding
            .values(head, spans, TRANSFER_ENCODING);
        return Ok(match final_transfer_coding(codings) {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let lengths = noted.content_length.values(head, spans, CONTENT_LENGTH);
    Ok(match content_length_in(lengths)? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// The `Content-Length` of a head from the field's values: `None` when
/// absent; an error when it is not a number or its values disagree.
#[inline]
fn content_length_in<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<u64>, ProtocolError> {
    let mut length: Option<u64> = None;
    for v in values {
        length_value(v, &mut length)?;
    }
    Ok(length)
}

/// Adds one `Content-Length` value to `length`.
#[inline]
fn length_value(v: &[u8], length: &mut Option<u64>) -> Result<(), ProtocolError> {
    // A single number, the usual shape, needs no splitting.
    match decimal(v) {
        Some(n) if length.is_none_or(|l| l == n) => {
            *length = Some(n);
            Ok(())
        }
        _ => length_parts(v, length),
    }
}

/// What the server reads from a service's answer fields before writing
/// them: the `Content-Length` (`None` when absent or malformed), whether
/// HTTP/1.1 persistence survives `Connection`, and whether there is a
/// `Date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnswerFields {
    pub(crate) content_length: Option<u64>,
    pub(crate) keep_alive: bool,
    pub(crate) has_date: bool,
}

/// [`AnswerFields`] in one walk over the map: an answer has a handful of
/// fields, and comparing each name to three costs less than three hashed
/// lookups.
pub(crate) fn answer_fields(headers: &HeaderMap) -> AnswerFields {
    let mut length = Some(None);
    let mut close = false;
    let mut keep = false;
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            if let Some(l) = &mut length {
                if length_value(value.as_bytes(), l).is_err() {
                    length = None;
                }
            }
        } else if name == header::CONNECTION {
            connection_value(value.as_bytes(), &mut close, &mut keep);
        } else if name == header::DATE {
            has_date = true;
        }
    }
    AnswerFields {
        content_length: length.flatten(),
        keep_alive: persists(close, keep, Version::HTTP_11),
        has_date,
    }
}

/// Adds the comma-separated lengths of one `Content-Length` value to
/// `length`.
#[inline(never)]
fn length_parts(value: &[u8], length: &mut Option<u64>) -> Result<(), ProtocolError> {
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        let n = decimal(part).ok_or_else(|| {
            bad(format!(
                "content-length {:?}",
                String::from_utf8_lossy(part)
            ))
        })?;
        if length.is_some_and(|l| l != n) {
            return Err(bad("conflicting content-length values"));
        }
        *length = Some(n);
    }
    Ok(())
}

/// A non-empty run of ASCII digits as a number; `None` for anything else
/// (signs, spaces, other digits) or past `u64::MAX`. Straight from the
/// bytes: UTF-8 validation and `str::parse` cost more than the digits.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The last transfer coding named in `Transfer-Encoding` values.
fn final_transfer_coding<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty())
        .last()
}

/// Whether a message of `version` whose `Connection` field has these
/// values allows another message on its connection.
#[inline]
fn keep_alive_in<'a>(values: impl Iterator<Item = &'a [u8]>, version: Version) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in values {
        connection_value(v, &mut close, &mut keep);
    }
    persists(close, keep, version)
}

/// Notes `close` and `keep-alive` in one `Connection` value.
#[inline]
fn connection_value(v: &[u8], close: &mut bool, keep: &mut bool) {
    // A single token, the usual shape, needs no splitting.
    if v.len() == 10 && eq_lowercase(v, b"keep-alive") {
        *keep = true;
    } else if v.len() == 5 && eq_lowercase(v, b"close") {
        *close = true;
    } else {
        connection_tokens(v, close, keep);
    }
}

/// Whether a connection persists, given what its `Connection` said.
fn persists(close: bool, keep: bool, version: Version) -> bool {
    match version {
        Version::HTTP_10 => keep && !close,
        _ => !close,
    }
}

/// Notes `close` and `keep-alive` among the comma-separated tokens of one
/// `Connection` value.
#[inline(never)]
fn connection_tokens(value: &[u8], close: &mut bool, keep: &mut bool) {
    for token in value.split(|b| *b == b',') {
        let token = token.trim_ascii();
        *close |= token.eq_ignore_ascii_case(b"close");
        *keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
}

/// [`keep_alive_in`] for an answer's `Connection` values, which also
/// removes from `headers` the fields those values name (hop-by-hop too,
/// RFC 9110 §7.6.1), in the same walk.
#[inline]
fn connection_of_answer<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    version: Version,
    headers: &mut HeaderMap,
) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in values {
        // The usual values are one option and name nothing.
        if v.len() == 10 && eq_lowercase(v, b"keep-alive") {
            keep = true;
        } else if v.len() == 5 && eq_lowercase(v, b"close") {
            close = true;
        } else {
            connection_tokens(v, &mut close, &mut keep);
            remove_named(v, headers);
        }
    }
    persists(close, keep, version)
}

/// Removes from `headers` the fields that one `Connection` value names;
/// `close` and `keep-alive` are options, not names.
#[inline(never)]
fn remove_named(value: &[u8], headers: &mut HeaderMap) {
    // A value with bytes outside visible ASCII and tabs names nothing, as
    // for the server, which reads `Connection` through
    // `HeaderValue::to_str`: both ends of the proxy then agree.
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return;
    }
    for token in value.split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            headers.remove(name);
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin form, absolute form or `*`).
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, values sliced from the received head.
    pub headers: HeaderMap,
    /// How the body is delimited: [`Framing::Empty`], [`Framing::Length`]
    /// or [`Framing::Chunked`] (a request body never runs until close).
    pub framing: Framing,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// A request the server cannot take, with the status that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The answer's status: 400, 408, 413, 417, 431, 501, 505…
    pub status: StatusCode,
    /// What was wrong, for the client.
    pub message: String,
}

fn reject(status: StatusCode, msg: impl Into<String>) -> RequestError {
    RequestError {
        status,
        message: msg.into(),
    }
}

/// Parses a request head from the front of `buf` and removes it.
/// `Ok(None)` means more bytes are needed. Request smuggling shapes
/// (`Transfer-Encoding` with `Content-Length`, codings other than plain
/// `chunked`) are refused.
pub fn parse_request_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, RequestError> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) | Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(reject(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("request head larger than {MAX_HEAD_BYTES} bytes"),
                ));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(httparse::Error::Version) => {
            return Err(reject(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0 and HTTP/1.1 are served here",
            ))
        }
        Err(e) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("unparseable request head: {e}"),
            ))
        }
    };
    let bad_request = |e: ProtocolError| reject(StatusCode::BAD_REQUEST, e.to_string());
    let method_bytes = req.method.unwrap_or("").as_bytes();
    let method = Method::from_bytes(method_bytes)
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "invalid method"))?;
    let path = req.path.unwrap_or("");
    let path_at = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path_len = path.len();
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut inline = [NO_SPAN; INLINE_SPANS];
    let mut spilled = Vec::new();
    let spans = spans_of(buf, req.headers, &mut inline, &mut spilled);
    let head = buf.split_to(len).freeze();
    let target = head.slice(path_at..path_at + path_len);
    let uri = Uri::from_maybe_shared(target.clone()).map_err(|_| {
        reject(
            StatusCode::BAD_REQUEST,
            format!("request target {:?}", String::from_utf8_lossy(&target)),
        )
    })?;
    let mut noted = Noted::default();
    let headers = headers_from_spans(spans, &head, &mut noted, Fields::All).map_err(bad_request)?;

    let framing = if noted.transfer_encoding.count > 0 {
        if version == Version::HTTP_10 {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        if noted.content_length.count > 0 {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "both transfer-encoding and content-length",
            ));
        }
        let te = noted.transfer_encoding;
        let codings = te
            .values(&head, spans, TRANSFER_ENCODING)
            .flat_map(|v| v.split(|b| *b == b','))
            .filter(|c| !c.trim_ascii().is_empty())
            .count();
        match final_transfer_coding(te.values(&head, spans, TRANSFER_ENCODING)) {
            Some(c) if codings == 1 && c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => {
                return Err(reject(
                    StatusCode::NOT_IMPLEMENTED,
                    "only the chunked transfer coding is understood",
                ))
            }
        }
    } else {
        let lengths = noted.content_length.values(&head, spans, CONTENT_LENGTH);
        match content_length_in(lengths).map_err(bad_request)? {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    // RFC 9112 §3.2: two Hosts leave the target ambiguous. (A missing one
    // is tolerated: llmgate does not route on it or forward it.)
    if noted.host.count > 1 {
        return Err(reject(StatusCode::BAD_REQUEST, "more than one host header"));
    }
    let expects_continue = match noted.expect.values(&head, spans, EXPECT).next() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => version == Version::HTTP_11,
        Some(_) => {
            return Err(reject(
                StatusCode::EXPECTATION_FAILED,
                "only the 100-continue expectation is understood",
            ))
        }
    };
    let keep_alive = keep_alive_in(noted.connection.values(&head, spans, CONNECTION), version);
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expects_continue,
    }))
}

/// Response headers the server writes itself or that describe one
/// connection; never copied from a service's response.
fn skipped_response_header(name: &HeaderName) -> bool {
    connection_specific(name) || name == header::CONTENT_LENGTH
}

/// How a response head ends its connection handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 default: nothing to say.
    Default,
    /// `Connection: keep-alive` (answering an HTTP/1.0 client that asked).
    KeepAlive,
    /// `Connection: close`: the server closes after this response.
    Close,
}

/// A body of known length up to this size gets room after its head in the
/// head's buffer: the server gathers small bodies there to write them
/// with the head.
const GATHERED_BODY_BYTES: u64 = 4096;

/// Writes an HTTP/1.1 response head into `out`: the status line, the
/// service's end-to-end headers, `date` when given, and the framing
/// headers for `framing` (`Length(n)` writes `content-length: n` even for
/// a HEAD answer, whose body is not sent).
///
/// `out` grows once, to hold the head and, for `Length(n)` up to 4 KiB,
/// the `n` body bytes a caller may gather behind it.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    persistence: Persistence,
    date: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    let reason = status.canonical_reason().unwrap_or("");
    // Framing and persistence fields, at most
    // `content-length: {u64::MAX}\r\nconnection: keep-alive\r\n\r\n`.
    const FRAMING_LEN: usize = 64;
    let body = match framing {
        Framing::Length(n) if n <= GATHERED_BODY_BYTES => n as usize,
        _ => 0,
    };
    out.reserve(
        b"HTTP/1.1 200 \r\n".len()
            + reason.len()
            + fields_len(headers)
            + date.map_or(0, |d| b"date: \r\n".len() + d.len())
            + FRAMING_LEN
            + body,
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    encode_fields(headers, skipped_response_header, out);
    if let Some(date) = date {
        encode_field(b"date", date, out);
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// One step of body decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no more of the body; read from the connection.
    NeedMore,
    /// The body is complete.
    Done,
}

/// Incremental body decoder for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes left.
    Length(u64),
    /// Chunked, in this state. `strict`: line ends must be CRLF and a
    /// chunk size bare hex digits (request bodies, see
    /// [`Decoder::for_request`]).
    Chunked {
        /// Where in the chunked framing the decoder is.
        state: Chunk,
        /// Whether the framing is read strictly.
        strict: bool,
    },
    /// Everything until end of stream.
    UntilClose,
    /// Finished.
    Done,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

impl Decoder {
    /// A decoder for a body delimited by `framing`.
    pub fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked {
                state: Chunk::Size,
                strict: false,
            },
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// A decoder for a request body: like [`new`](Self::new), but chunked
    /// framing is read strictly (CRLF line ends, a chunk size of bare hex
    /// digits). A server that reads a lenient framing where a proxy in
    /// front of it reads a strict one (or the other way round) can be made
    /// to disagree with it on where a request ends, which is how requests
    /// are smuggled.
    pub fn for_request(framing: Framing) -> Decoder {
        match Decoder::new(framing) {
            Decoder::Chunked { state, .. } => Decoder::Chunked {
                state,
                strict: true,
            },
            other => other,
        }
    }

    /// Bytes still expected, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        loop {
            match self {
                Decoder::Done => return Ok(Step::Done),
                Decoder::Length(n) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = (*n).min(buf.len() as u64) as usize;
                    *n -= take as u64;
                    let data = buf.split_to(take).freeze();
                    if *n == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Step::Data(data));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Decoder::Chunked { state, strict } => match *state {
                    Chunk::Size => {
                        let Some(line) = take_line(buf, *strict)? else {
                            return Ok(Step::NeedMore);
                        };
                        let size = chunk_size(&line, *strict)?;
                        *state = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(n) => {
                        if buf.is_empty() {
                            return Ok(Step::NeedMore);
                        }
                        let take = n.min(buf.len() as u64) as usize;
                        let left = n - take as u64;
                        *state = if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        };
                        return Ok(Step::Data(buf.split_to(take).freeze()));
                    }
                    Chunk::DataEnd => match buf.first() {
                        None => return Ok(Step::NeedMore),
                        Some(b'\n') if !*strict => {
                            buf.advance(1);
                            *state = Chunk::Size;
                        }
                        Some(b'\r') if buf.len() < 2 => return Ok(Step::NeedMore),
                        Some(b'\r') if buf[1] == b'\n' => {
                            buf.advance(2);
                            *state = Chunk::Size;
                        }
                        Some(_) => return Err(bad("chunk data not followed by CRLF")),
                    },
                    Chunk::Trailers => {
                        let Some(line) = take_line(buf, *strict)? else {
                            return Ok(Step::NeedMore);
                        };
                        // Trailer fields are not relayed; an empty line ends
                        // the message.
                        if line.is_empty() {
                            *self = Decoder::Done;
                        }
                    }
                },
            }
        }
    }
}

/// Removes one line (without its CRLF, or a bare LF unless `strict`) from
/// the front of `buf`.
fn take_line(buf: &mut BytesMut, strict: bool) -> Result<Option<BytesMut>, ProtocolError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(i) => {
            let crlf = i > 0 && buf[i - 1] == b'\r';
            if strict && !crlf {
                return Err(bad("chunked line ended by a bare LF"));
            }
            let mut line = buf.split_to(i + 1);
            line.truncate(if crlf { i - 1 } else { i });
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(bad("chunk-size or trailer line too long")),
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8], strict: bool) -> Result<u64, ProtocolError> {
    // Chunk extensions (`;name=value`) are allowed and ignored.
    let before_ext = line.split(|b| *b == b';').next().unwrap_or(&[]);
    let hex = if strict {
        // Hex digits from the line's start; only whitespace before an
        // extension may follow them (RFC 9112 §7.1.1).
        let digits = before_ext
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let rest = &before_ext[digits..];
        let ext_follows = before_ext.len() < line.len();
        if !(rest.is_empty() || ext_follows && rest.iter().all(|b| matches!(b, b' ' | b'\t'))) {
            return Err(bad(format!(
                "chunk size {:?}",
                String::from_utf8_lossy(line)
            )));
        }
        &before_ext[..digits]
    } else {
        before_ext.trim_ascii()
    };
    if hex.is_empty() || hex.len() > 16 {
        return Err(bad(format!(
            "chunk size {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    let mut n: u64 = 0;
    for &b in hex {
        let d = (b as char)
            .to_digit(16)
            .ok_or_else(|| bad(format!("chunk size {:?}", String::from_utf8_lossy(line))))?;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(d as u64))
            .ok_or_else(|| bad("chunk size overflows"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], method: Method) -> Result<Option<ResponseHead>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        parse_response_head(&mut buf, &method)
    }

    /// Feeds `wire` to a decoder `step` bytes at a time; returns the body.
    fn decode_all(framing: Framing, wire: &[u8], step: usize) -> Result<Vec<u8>, ProtocolError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Done => return Ok(out),
                Step::NeedMore => {
                    if fed >= wire.len() {
                        return Err(bad("truncated"));
                    }
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn request_head_joins_prefix_sets_host_and_length_and_drops_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("client.example"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-foo"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-priority", HeaderValue::from_static("high"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut out = Vec::new();
        encode_request_head(
            &Method::POST,
            "/prefix",
            "/v1/completions?x=1",
            "127.0.0.1:9000",
            &h,
            12,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text
            .starts_with("POST /prefix/v1/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n"));
        assert!(text.contains("x-priority: high\r\n"));
        assert!(text.contains("content-type: application/json\r\n"));
        assert!(text.contains("content-length: 12\r\n"));
        assert!(!text.contains("999") && !text.contains("client.example"));
        assert!(!text.contains("connection") && !text.contains("expect"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn get_without_body_has_no_content_length_but_post_always_has_one() {
        let mut out = Vec::new();
        encode_request_head(
            &Method::GET,
            "",
            "/health",
            "h:1",
            &HeaderMap::new(),
            0,
            &mut out,
        );
        assert!(!String::from_utf8_lossy(&out).contains("content-length"));
        out.clear();
        encode_request_head(
            &Method::POST,
            "",
            "/x",
            "h:1",
            &HeaderMap::new(),
            0,
            &mut out,
        );
        assert!(String::from_utf8_lossy(&out).contains("content-length: 0\r\n"));
    }

    #[test]
    fn head_parses_in_pieces_and_leaves_the_body() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 1..wire.len() - 5 {
            assert!(
                head(&wire[..cut], Method::POST).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let mut buf = BytesMut::from(&wire[..]);
        let h = parse_response_head(&mut buf, &Method::POST)
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers["content-type"], "text/plain");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn interim_answers_are_skipped() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let h = head(wire, Method::POST).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.headers.contains_key("link"));
    }

    #[test]
    fn framing_rules() {
        let f = |wire: &str, m: Method| head(wire.as_bytes(), m).unwrap().unwrap();
        let h = f(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            Method::POST,
        );
        assert_eq!(h.framing, Framing::Chunked);
        let h = f(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Method::POST,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = f("HTTP/1.1 200 OK\r\n\r\n", Method::POST);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = f(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            Method::HEAD,
        );
        assert_eq!(h.framing, Framing::Empty);
        let h = f("HTTP/1.1 204 No Content\r\n\r\n", Method::POST);
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = f(
            "HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n",
            Method::POST,
        );
        assert_eq!(h.framing, Framing::Length(7));
        let h = f(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::POST,
        );
        assert!(!h.keep_alive);
        let h = f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::POST);
        assert!(!h.keep_alive);
        let h = f(
            "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n",
            Method::POST,
        );
        assert!(h.keep_alive);
    }

    /// `headers_from_spans` skips `HeaderValue`'s checks on what httparse
    /// accepted; this holds that to every byte, at a value's start, middle
    /// and end, in values short and long enough for httparse's vector
    /// paths.
    #[test]
    fn httparse_values_are_header_values() {
        for b in 0..=255u8 {
            for (before, after) in [(0, 0), (0, 1), (1, 0), (3, 3), (40, 40), (70, 1)] {
                let mut value = vec![b'a'; before];
                value.push(b);
                value.resize(before + 1 + after, b'a');
                let mut wire = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
                wire.extend_from_slice(&value);
                wire.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
                let mut slots = [httparse::EMPTY_HEADER; 4];
                let mut res = httparse::Response::new(&mut slots);
                let accepted = matches!(res.parse(&wire), Ok(httparse::Status::Complete(_)));
                if accepted {
                    for h in res.headers.iter() {
                        assert!(
                            HeaderValue::from_bytes(h.value).is_ok(),
                            "byte {b:#04x} at {before}: {:?}",
                            h.value
                        );
                    }
                }
                let parsed = head(&wire, Method::GET);
                assert_eq!(parsed.is_ok(), accepted, "byte {b:#04x} at {before}");
                if let Ok(Some(h)) = parsed {
                    let v = h.headers["x"].as_bytes();
                    assert_eq!(HeaderValue::from_bytes(v).unwrap().as_bytes(), v);
                }
            }
        }
    }

    #[test]
    fn common_names_match_as_from_bytes_does() {
        let names = [
            "host",
            "date",
            "server",
            "accept",
            "connection",
            "user-agent",
            "content-type",
            "authorization",
            "content-length",
            "accept-encoding",
            "transfer-encoding",
        ];
        for name in names {
            for spelled in [
                name.to_string(),
                name.to_ascii_uppercase(),
                name.split('-')
                    .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
                    .collect::<Vec<_>>()
                    .join("-"),
            ] {
                let fast = common_name(spelled.as_bytes());
                assert_eq!(
                    fast,
                    Some(HeaderName::from_bytes(spelled.as_bytes()).unwrap())
                );
            }
            // One byte off, anywhere, is another name (or none).
            for at in 0..name.len() {
                for b in (0..=255u8).filter(|b| b.is_ascii_graphic()) {
                    let mut near = name.as_bytes().to_vec();
                    near[at] = b;
                    if let (Some(fast), Ok(slow)) =
                        (common_name(&near), HeaderName::from_bytes(&near))
                    {
                        assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&near));
                    }
                }
            }
        }
        assert_eq!(common_name(b"x-request-id"), None);
        assert_eq!(common_name(b"content_length"), None);
        assert_eq!(common_name(b"expect"), None);
    }

    #[test]
    fn bad_heads_are_errors_that_say_why() {
        let e = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            Method::POST,
        )
        .unwrap_err();
        assert!(e.to_string().contains("conflicting content-length"), "{e}");
        let e = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            Method::POST,
        )
        .unwrap_err();
        assert!(e.to_string().contains("content-length"), "{e}");
        let e = head(b"SMTP ready\r\n\r\n", Method::POST).unwrap_err();
        assert!(e.to_string().contains("unparseable"), "{e}");
        let e = head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).unwrap_err();
        assert!(e.to_string().contains("101"), "{e}");
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 10, b'a');
        let e = head(&huge, Method::GET).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn answer_fields_read_length_persistence_and_date_in_one_walk() {
        let fields = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            answer_fields(&h)
        };
        let none = fields(&[("x-a", "1")]);
        assert_eq!(none.content_length, None);
        assert!(none.keep_alive && !none.has_date);
        let f = fields(&[
            ("content-length", "5"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("content-length", "5, 5"),
            ("connection", "upgrade, Close"),
        ]);
        assert_eq!(f.content_length, Some(5));
        assert!(!f.keep_alive && f.has_date);
        assert_eq!(
            fields(&[("content-length", "5"), ("content-length", "6")]).content_length,
            None
        );
        assert_eq!(
            fields(&[("content-length", "x"), ("content-length", "6")]).content_length,
            None
        );
        assert!(fields(&[("connection", "keep-alive")]).keep_alive);
        assert!(!fields(&[("connection", "close")]).keep_alive);
    }

    #[test]
    fn chunked_bodies_decode_at_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(
                decode_all(Framing::Chunked, wire, step).unwrap(),
                b"hello 0123456789",
                "step {step}"
            );
        }
        // Bare LF line endings are tolerated.
        assert_eq!(
            decode_all(Framing::Chunked, b"2\nhi\n0\n\n", 3).unwrap(),
            b"hi"
        );
    }

    #[test]
    fn chunked_errors() {
        assert!(decode_all(Framing::Chunked, b"zz\r\n", 4)
            .unwrap_err()
            .0
            .contains("chunk size"));
        assert!(decode_all(Framing::Chunked, b"2\r\nhiX\r\n", 9)
            .unwrap_err()
            .0
            .contains("CRLF"));
        assert!(decode_all(Framing::Chunked, b"fffffffffffffffff\r\n", 20).is_err());
        let long = vec![b'1'; MAX_LINE_BYTES + 2];
        assert!(decode_all(Framing::Chunked, &long, long.len())
            .unwrap_err()
            .0
            .contains("too long"));
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut d = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Step::Done);
        assert_eq!(&buf[..], b"def", "bytes after the body stay in the buffer");
        assert_eq!(decode_all(Framing::Length(4), b"wxyz", 1).unwrap(), b"wxyz");
    }

    // --- Request heads -------------------------------------------------

    fn req(bytes: &[u8]) -> Result<Option<RequestHead>, RequestError> {
        let mut buf = BytesMut::from(bytes);
        parse_request_head(&mut buf)
    }

    /// A request head that must parse whole.
    fn req_ok(text: &str) -> RequestHead {
        req(text.as_bytes())
            .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
            .unwrap_or_else(|| panic!("{text:?}: incomplete"))
    }

    /// The status a request head is refused with.
    fn req_status(bytes: &[u8]) -> StatusCode {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
        match req(bytes) {
            Err(e) => e.status,
            Ok(Some(h)) => panic!(
                "{shown:?} was accepted: {} {} with {} header fields",
                h.method,
                h.uri,
                h.headers.len()
            ),
            Ok(None) => panic!("{shown:?} was taken as an unfinished head"),
        }
    }

    #[test]
    fn request_target_method_version_and_query_are_kept() {
        let h = req_ok("POST /v1/chat/completions?stream=true&x=%20y HTTP/1.1\r\nhost: a\r\n\r\n");
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.uri.path(), "/v1/chat/completions");
        assert_eq!(h.uri.query(), Some("stream=true&x=%20y"));
        assert_eq!(h.uri.to_string(), "/v1/chat/completions?stream=true&x=%20y");
        assert!(h.uri.authority().is_none());
        let h = req_ok("OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(h.uri.to_string(), "*");
        let h = req_ok("GET http://replica:8000/v1/models HTTP/1.1\r\n\r\n");
        assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("replica:8000"));
        assert_eq!(h.uri.path(), "/v1/models");
    }

    #[test]
    fn request_header_values_are_kept_as_sent() {
        let wire = b"GET / HTTP/1.1\r\nHost: gw.example\r\nX-Custom: a  b\tc\r\nx-custom: second\r\nauthorization: Bearer sk-123==\r\nx-utf8: caf\xc3\xa9\r\n\r\n";
        let h = req(wire).unwrap().unwrap();
        assert_eq!(h.headers["host"], "gw.example");
        let custom: Vec<_> = h.headers.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["a  b\tc", "second"]);
        assert_eq!(h.headers[header::AUTHORIZATION], "Bearer sk-123==");
        assert_eq!(h.headers["x-utf8"].as_bytes(), "café".as_bytes());
        assert_eq!(h.headers.len(), 5);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive && !h.expects_continue);
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        let h = req_ok("\r\n\r\nGET /after-crlf HTTP/1.1\r\nhost: a\r\n\r\n");
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/after-crlf");
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "connection: close\r\n", false),
            ("HTTP/1.1", "connection: Keep-Alive, Close\r\n", false),
            ("HTTP/1.1", "connection: x-foo\r\n", true),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "connection: keep-alive\r\n", true),
            ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
            ("HTTP/1.0", "connection: x-foo, keep-alive\r\n", true),
            (
                "HTTP/1.0",
                "connection: keep-alive\r\nconnection: close\r\n",
                false,
            ),
        ];
        for (version, headers, keep) in cases {
            let h = req_ok(&format!("GET / {version}\r\n{headers}\r\n"));
            assert_eq!(h.keep_alive, keep, "{version} {headers:?}");
            let expected = if version == "HTTP/1.0" {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            assert_eq!(h.version, expected);
        }
    }

    #[test]
    fn content_length_frames_the_body_and_leaves_it_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"POST /v1/completions HTTP/1.1\r\ncontent-length: 11\r\n\r\nhello world GET"[..],
        );
        let h = parse_request_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(11));
        assert_eq!(&buf[..], b"hello world GET");
        assert_eq!(
            decode_all(h.framing, b"hello world", 3).unwrap(),
            b"hello world"
        );
        assert_eq!(
            req_ok("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            req_ok("POST / HTTP/1.1\r\ncontent-length: 7, 7\r\n\r\n").framing,
            Framing::Length(7)
        );
        assert_eq!(
            req_ok("POST / HTTP/1.1\r\ncontent-length: 7\r\ncontent-length: 7\r\n\r\n").framing,
            Framing::Length(7)
        );
        assert_eq!(req_ok("GET / HTTP/1.1\r\n\r\n").framing, Framing::Empty);
    }

    #[test]
    fn chunked_frames_the_body() {
        for te in ["chunked", "Chunked", " chunked ", "chunked,"] {
            let h = req_ok(&format!(
                "POST / HTTP/1.1\r\ntransfer-encoding: {te}\r\n\r\n"
            ));
            assert_eq!(h.framing, Framing::Chunked, "{te:?}");
        }
        let mut buf = BytesMut::from(
            &b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        );
        let h = parse_request_head(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(decode_all(h.framing, &buf, 1).unwrap(), b"abc");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let te_and_cl =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(req_status(te_and_cl), StatusCode::BAD_REQUEST);
        let cl_and_te =
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(req_status(cl_and_te), StatusCode::BAD_REQUEST);
        let te_in_10 = b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(req_status(te_in_10), StatusCode::BAD_REQUEST);
        for te in ["gzip, chunked", "gzip", "chunked, chunked", "identity"] {
            let wire = format!("POST / HTTP/1.1\r\ntransfer-encoding: {te}\r\n\r\n");
            assert_eq!(
                req_status(wire.as_bytes()),
                StatusCode::NOT_IMPLEMENTED,
                "{te}"
            );
        }
        let split =
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(req_status(split), StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn bad_content_lengths_are_400() {
        for cl in [
            "content-length: 3\r\ncontent-length: 4",
            "content-length: 3, 4",
            "content-length: abc",
            "content-length: -1",
            "content-length: +3",
            "content-length: 0x10",
            "content-length: 3 4",
            "content-length: 99999999999999999999999",
            "content-length: ",
        ] {
            let wire = format!("POST / HTTP/1.1\r\n{cl}\r\n\r\n");
            let e = req(wire.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{cl:?}");
            assert!(e.message.contains("content-length"), "{cl:?}: {e}");
        }
    }

    #[test]
    fn too_many_header_fields_are_431() {
        let mut wire = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            wire.push_str(&format!("x-h{i}: v\r\n"));
        }
        let at_limit = format!("{wire}\r\n");
        assert_eq!(req_ok(&at_limit).headers.len(), MAX_HEADERS);
        let over = format!("{wire}x-one-more: v\r\n\r\n");
        assert_eq!(
            req_status(over.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn every_field_is_kept_around_the_inline_span_room() {
        // Fewer fields than the stack room, exactly as many, one more
        // (spilled to the heap) and the most accepted.
        for n in [
            0,
            1,
            INLINE_SPANS - 1,
            INLINE_SPANS,
            INLINE_SPANS + 1,
            MAX_HEADERS - 1,
        ] {
            let fields: String = (0..n).map(|i| format!("x-h{i}: value {i}\r\n")).collect();
            let request = req_ok(&format!("GET / HTTP/1.1\r\n{fields}\r\n"));
            let response = head(
                format!("HTTP/1.1 200 OK\r\n{fields}content-length: 0\r\n\r\n").as_bytes(),
                Method::GET,
            )
            .unwrap()
            .unwrap();
            assert_eq!(request.headers.len(), n);
            assert_eq!(response.headers.len(), n + 1);
            for (headers, what) in [
                (&request.headers, "request"),
                (&response.headers, "response"),
            ] {
                let got: Vec<_> = headers
                    .iter()
                    .filter(|(k, _)| *k != header::CONTENT_LENGTH)
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                    .collect();
                let want: Vec<_> = (0..n)
                    .map(|i| (format!("x-h{i}"), format!("value {i}")))
                    .collect();
                assert_eq!(got, want, "{what} with {n} fields");
            }
        }
    }

    #[test]
    fn decimals_parse_like_digits_then_str_parse() {
        let reference = |part: &[u8]| {
            std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
        };
        let cases: &[&[u8]] = &[
            b"",
            b"0",
            b"00",
            b"7",
            b"0042",
            b"1234567890",
            b"18446744073709551615",
            b"18446744073709551616",
            b"99999999999999999999",
            b"000000000000000000000000001",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1a",
            b"a1",
            b"0x10",
            b"1.0",
            "\u{661}".as_bytes(),
            b"\xff1",
        ];
        for &part in cases {
            assert_eq!(
                decimal(part),
                reference(part),
                "{:?}",
                String::from_utf8_lossy(part)
            );
        }
    }

    #[test]
    fn decimals_are_written_like_display() {
        for n in [0, 1, 9, 10, 99, 100, 1234567890, u64::MAX - 1, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn an_unfinished_head_over_the_limit_is_431() {
        let mut wire = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        wire.resize(MAX_HEAD_BYTES - 1, b'a');
        assert!(req(&wire).unwrap().is_none(), "just under the limit waits");
        wire.push(b'a');
        assert_eq!(
            req_status(&wire),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn a_complete_head_over_the_limit_is_431() {
        let mut wire = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        wire.resize(MAX_HEAD_BYTES + 1024, b'a');
        wire.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            req_status(&wire),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn http2_preface_and_unknown_versions_are_505() {
        assert_eq!(
            req_status(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
        assert_eq!(
            req_status(b"GET / HTTP/1.2\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
    }

    #[test]
    fn garbage_is_400() {
        for wire in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: v\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nx-folded: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nx-nul: a\0b\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(req_status(wire), StatusCode::BAD_REQUEST, "{wire:?}");
        }
    }

    #[test]
    fn expect_100_continue_is_understood_and_other_expectations_are_417() {
        let h = req_ok("POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n");
        assert!(h.expects_continue);
        assert_eq!(h.framing, Framing::Length(3));
        let h = req_ok("POST / HTTP/1.1\r\nExpect: 100-Continue\r\ncontent-length: 3\r\n\r\n");
        assert!(h.expects_continue);
        let h = req_ok("POST / HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n");
        assert!(
            !h.expects_continue,
            "an HTTP/1.0 client gets no interim answer"
        );
        let e = req(b"POST / HTTP/1.1\r\nexpect: 200-ok\r\ncontent-length: 3\r\n\r\n").unwrap_err();
        assert_eq!(e.status, StatusCode::EXPECTATION_FAILED);
    }

    #[test]
    fn a_partial_head_waits_untouched_then_completes() {
        let wire = b"POST /v1/embeddings?a=1 HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n\r\nhi";
        let head_len = wire.len() - 2;
        for cut in 0..head_len {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(parse_request_head(&mut buf).unwrap().is_none(), "cut {cut}");
            assert_eq!(&buf[..], &wire[..cut], "a partial parse consumes nothing");
            buf.extend_from_slice(&wire[cut..]);
            let h = parse_request_head(&mut buf).unwrap().unwrap();
            assert_eq!(h.uri.to_string(), "/v1/embeddings?a=1", "cut {cut}");
            assert_eq!(h.headers["host"], "gw");
            assert_eq!(h.framing, Framing::Length(2));
            assert_eq!(&buf[..], b"hi", "cut {cut}");
        }
    }

    #[test]
    fn pipelined_heads_parse_one_at_a_time() {
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"[..]);
        let a = parse_request_head(&mut buf).unwrap().unwrap();
        let b = parse_request_head(&mut buf).unwrap().unwrap();
        assert_eq!((a.uri.path(), b.uri.path()), ("/a", "/b"));
        assert!(buf.is_empty());
        assert!(parse_request_head(&mut buf).unwrap().is_none());
    }

    // --- Response heads ------------------------------------------------

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn encode(
        status: StatusCode,
        headers: &HeaderMap,
        framing: Framing,
        persistence: Persistence,
        date: Option<&[u8]>,
    ) -> String {
        let mut out = Vec::new();
        encode_response_head(status, headers, framing, persistence, date, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn response_head_drops_hop_by_hop_and_length_and_keeps_the_rest_in_order() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-t"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.append("x-request-id", HeaderValue::from_static("r1"));
        h.append("x-request-id", HeaderValue::from_static("r2"));
        let text = encode(
            StatusCode::OK,
            &h,
            Framing::Length(5),
            Persistence::Default,
            None,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: r1\r\nx-request-id: r2\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn response_head_framing_persistence_and_date() {
        let none = HeaderMap::new();
        assert_eq!(
            encode(StatusCode::OK, &none, Framing::Chunked, Persistence::Default, Some(DATE)),
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            encode(
                StatusCode::NO_CONTENT,
                &none,
                Framing::Empty,
                Persistence::KeepAlive,
                None
            ),
            "HTTP/1.1 204 No Content\r\nconnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            encode(
                StatusCode::OK,
                &none,
                Framing::UntilClose,
                Persistence::Close,
                None
            ),
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            encode(
                StatusCode::PAYLOAD_TOO_LARGE,
                &none,
                Framing::Length(0),
                Persistence::Close,
                Some(DATE)
            ),
            "HTTP/1.1 413 Payload Too Large\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let odd = StatusCode::from_u16(599).unwrap();
        assert_eq!(
            encode(odd, &none, Framing::Empty, Persistence::Default, None),
            "HTTP/1.1 599 \r\n\r\n"
        );
    }

    /// A parsed answer's fields as `(name, value)` pairs, in map order
    /// (repeated names keep their order).
    fn fields(h: &ResponseHead) -> Vec<(String, String)> {
        h.headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect()
    }

    #[test]
    fn a_parsed_answer_leaves_out_hop_by_hop_fields_and_keeps_the_rest() {
        let wire = "HTTP/1.1 200 OK\r\n\
            X-Hop: 1\r\n\
            Content-Type: text/event-stream\r\n\
            Connection: keep-alive, X-Hop\r\n\
            Set-Cookie: a=1\r\n\
            Keep-Alive: timeout=5\r\n\
            X-Request-Id: r7\r\n\
            Transfer-Encoding: chunked\r\n\
            Proxy-Connection: keep-alive\r\n\
            Set-Cookie: b=2\r\n\
            Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
            CONNECTION: x-other\r\n\
            x-other: 2\r\n\
            Set-Cookie: c=3\r\n\r\n";
        let h = head(wire.as_bytes(), Method::POST).unwrap().unwrap();
        let pairs = [
            ("content-type", "text/event-stream"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("set-cookie", "c=3"),
            ("x-request-id", "r7"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ];
        let mut want: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        // Removing a field may move another name's entries in the map; a
        // stable sort by name keeps each name's values in order.
        let mut got = fields(&h);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
    }

    #[test]
    fn every_hop_by_hop_field_is_left_out_of_a_parsed_answer() {
        let names = llmgate_core::headers::HOP_BY_HOP
            .iter()
            .map(HeaderName::as_str)
            .chain(["proxy-connection"]);
        for name in names {
            let wire = format!(
                "HTTP/1.1 200 OK\r\n{name}: x-named\r\nx-named: 1\r\ncontent-length: 2\r\n\r\n"
            );
            let h = head(wire.as_bytes(), Method::POST).unwrap().unwrap();
            let left: Vec<_> = h.headers.keys().map(HeaderName::as_str).collect();
            // Only `Connection` makes the field it names hop-by-hop.
            if name == "connection" {
                assert_eq!(left, ["content-length"], "{name}");
            } else if name == "transfer-encoding" {
                // `x-named` is no coding this client reads to the end of.
                assert_eq!(left, ["x-named", "content-length"], "{name}");
                assert_eq!(h.framing, Framing::UntilClose, "{name}");
            } else {
                assert_eq!(left, ["x-named", "content-length"], "{name}");
                assert_eq!(h.framing, Framing::Length(2), "{name}");
            }
        }
    }

    #[test]
    fn hop_by_hop_fields_left_out_still_decide_framing_and_persistence() {
        let f = |wire: &str| head(wire.as_bytes(), Method::POST).unwrap().unwrap();
        let hop = "keep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-a: 1\r\n";
        let h = f(&format!(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n{hop}content-length: 5\r\n\r\n"
        ));
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        assert_eq!(
            fields(&h),
            [
                ("x-a".into(), "1".into()),
                ("content-length".into(), "5".into())
            ]
        );
        let h = f(&format!(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n{hop}\r\n"
        ));
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        assert_eq!(fields(&h), [("x-a".into(), "1".into())]);
        let h = f(&format!(
            "HTTP/1.1 200 OK\r\nconnection: close\r\n{hop}content-length: 1\r\n\r\n"
        ));
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(1), false));
        assert!(!h.headers.contains_key(header::CONNECTION));
        let h = f(&format!(
            "HTTP/1.0 200 OK\r\n{hop}content-length: 1\r\n\r\n"
        ));
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(1), false));
        let h = f(&format!(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n{hop}content-length: 1\r\n\r\n"
        ));
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(1), true));
        assert_eq!(
            fields(&h),
            [
                ("x-a".into(), "1".into()),
                ("content-length".into(), "1".into())
            ]
        );
        // Repeated fields that the map leaves out are read from the head.
        let h =
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        assert!(h.headers.is_empty());
        let h = f("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nConnection: close\r\ncontent-length: 1\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(1), false));
        // A field that `Connection` names still frames the body.
        let h = f("HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 3\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(3), true));
        assert!(h.headers.is_empty());
    }

    #[test]
    fn common_names_and_hop_by_hop_agree() {
        // `headers_from_spans` relies on this to skip `connection_specific`
        // for the names `common_name` returns: of the connection-specific
        // names, it knows only the two it notes.
        let names = llmgate_core::headers::HOP_BY_HOP
            .iter()
            .map(HeaderName::as_str)
            .chain(["proxy-connection"]);
        for name in names {
            for bytes in [name.to_string(), name.to_ascii_uppercase()] {
                match common_name(bytes.as_bytes()) {
                    None => {}
                    Some(h) => assert!(
                        h == header::CONNECTION || h == header::TRANSFER_ENCODING,
                        "{name}"
                    ),
                }
            }
        }
    }

    #[test]
    fn a_connection_value_that_is_not_visible_ascii_names_nothing() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nconnection: x-a, caf\xc3\xa9\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
            Method::POST,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            fields(&h),
            [
                ("x-a".into(), "1".into()),
                ("content-length".into(), "0".into())
            ]
        );
    }

    #[test]
    fn an_encoded_response_head_parses_back() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_response_head(
            StatusCode::CREATED,
            &h,
            Framing::Chunked,
            Persistence::Close,
            Some(DATE),
            &mut out,
        );
        let mut buf = BytesMut::from(&out[..]);
        let back = parse_response_head(&mut buf, &Method::POST)
            .unwrap()
            .unwrap();
        assert_eq!(back.status, StatusCode::CREATED);
        assert_eq!(back.framing, Framing::Chunked);
        assert!(!back.keep_alive);
        assert_eq!(back.headers["x-a"], "1");
        assert_eq!(back.headers["date"].as_bytes(), DATE);
        assert!(buf.is_empty());
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
        ] {
            let mut out = Vec::new();
            encode_chunk_size(len, &mut out);
            assert_eq!(out, line.as_bytes(), "{len}");
        }
        let mut out = Vec::new();
        encode_chunk_size(usize::MAX, &mut out);
        assert_eq!(out, format!("{:x}\r\n", usize::MAX).as_bytes());
    }

    #[test]
    fn two_host_headers_are_400_and_none_is_tolerated() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"[..]);
        let e = parse_request_head(&mut buf).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(parse_request_head(&mut buf).unwrap().is_some());
    }

    #[test]
    fn request_bodies_read_chunked_framing_strictly() {
        let decode = |wire: &[u8]| {
            let mut d = Decoder::for_request(Framing::Chunked);
            let mut buf = BytesMut::from(wire);
            let mut out = Vec::new();
            loop {
                match d.decode(&mut buf)? {
                    Step::Data(b) => out.extend_from_slice(&b),
                    Step::Done => return Ok(out),
                    Step::NeedMore => return Err(bad("truncated")),
                }
            }
        };
        assert_eq!(decode(b"2\r\nhi\r\n0\r\n\r\n").unwrap(), b"hi");
        assert_eq!(
            decode(b"2 ;ext=1\r\nhi\r\n0\r\nx-trailer: 1\r\n\r\n").unwrap(),
            b"hi"
        );
        for wire in [
            &b"2\nhi\r\n0\r\n\r\n"[..],
            b"2\r\nhi\n0\r\n\r\n",
            b"2\r\nhi\r\n0\r\n\n",
            b" 2\r\nhi\r\n0\r\n\r\n",
            b"2 \r\nhi\r\n0\r\n\r\n",
            b"+2\r\nhi\r\n0\r\n\r\n",
            b"0x2\r\nhi\r\n0\r\n\r\n",
        ] {
            assert!(decode(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        // The response side stays lenient: replicas' bare LFs are read.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b" 2 \nhi\n0\n\n"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"hi"))
        );
    }
}
