//! A hand-rolled reader for the common shape of a request body, tried before
//! serde_json.
//!
//! Most bodies are one object whose fields llmgate reads hold plain strings,
//! numbers, booleans or null, plus for chat a `messages` array of role and
//! content; serde_json spends most of its time on such a body in per-field
//! dispatch, copies and (for `messages`) a `Value` tree. [`scan_envelope`]
//! reads that shape directly, building the chat text on the way, and gives
//! up (`false`) on anything else: a field of another type, a duplicate
//! field, a number it would have to convert, a message of another shape,
//! malformed input. Giving up is always safe, since the caller then parses
//! with serde_json, so this reader only ever answers where serde_json would
//! answer the same and stays strictly inside the JSON grammar.

use std::borrow::Cow;

use crate::parse::{Envelope, PromptField};

/// Deepest nesting skipped in a field nobody reads; deeper bodies go to
/// serde_json (whose own limit is 128).
const MAX_SKIP_DEPTH: u32 = 16;

/// The fields llmgate reads, by their bit in the set of fields seen.
const MODEL: u8 = 1;
const STREAM: u8 = 2;
const MAX_TOKENS: u8 = 4;
const MAX_COMPLETION_TOKENS: u8 = 8;
const USER: u8 = 16;
const PROMPT: u8 = 32;
const INPUT: u8 = 64;
const MESSAGES: u8 = 128;

/// The known field whose name (and closing quote) starts `rest`, and the
/// length of both. Tried before reading the name as a string: most names
/// in a body are these, and this costs a compare or two.
fn known_field(rest: &[u8]) -> Option<(u8, usize)> {
    let candidates: &[(&[u8], u8)] = match rest.first()? {
        b'm' => &[
            (b"model\"", MODEL),
            (b"max_tokens\"", MAX_TOKENS),
            (b"messages\"", MESSAGES),
            (b"max_completion_tokens\"", MAX_COMPLETION_TOKENS),
        ],
        b'p' => &[(b"prompt\"", PROMPT)],
        b's' => &[(b"stream\"", STREAM)],
        b'u' => &[(b"user\"", USER)],
        b'i' => &[(b"input\"", INPUT)],
        _ => return None,
    };
    candidates
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .map(|&(name, field)| (field, name.len()))
}

/// Reads the envelope of `body` into `env` when the body has the common
/// shape; `false` (with `env` partly filled) otherwise.
pub(crate) fn scan_envelope<'a>(body: &'a [u8], env: &mut Envelope<'a>) -> bool {
    scan_into(body, env).is_some()
}

fn scan_into<'a>(body: &'a [u8], env: &mut Envelope<'a>) -> Option<()> {
    // One check of the whole body (fast for ASCII) instead of one per
    // string; serde_json would accept stray bytes in a skipped string, but
    // giving up on those is merely slower.
    let text = std::str::from_utf8(body).ok()?;
    let mut s = Scan {
        text,
        b: body,
        i: 0,
    };
    // Which known fields were seen: serde refuses a duplicate, null or not.
    let mut seen = 0u8;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_none() {
        loop {
            s.eat(b'"')?;
            let field = match known_field(&s.b[s.i..]) {
                Some((field, len)) => {
                    s.i += len;
                    field
                }
                None => {
                    // A name with escapes might still spell a known one.
                    let (_, escaped) = s.raw_str()?;
                    if escaped {
                        return None;
                    }
                    0
                }
            };
            if seen & field != 0 {
                return None;
            }
            seen |= field;
            s.ws();
            s.eat(b':')?;
            s.ws();
            match field {
                MODEL => env.model = s.opt_str()?,
                STREAM => env.stream = s.opt_bool()?,
                MAX_TOKENS => env.max_tokens = s.opt_u32()?,
                MAX_COMPLETION_TOKENS => env.max_completion_tokens = s.opt_u32()?,
                USER => env.user = s.opt_str()?,
                PROMPT => env.prompt = s.opt_str()?.map(PromptField::Str),
                INPUT => env.input = s.opt_str()?.map(PromptField::Str),
                MESSAGES => {
                    if s.lit(b"null").is_none() {
                        env.chat_text = Some(s.chat_messages()?);
                    }
                }
                _ => s.skip_value(0, false)?,
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(())
}

/// A cursor over a body already known to be UTF-8; every position it
/// slices at is next to an ASCII byte, so always a character boundary.
struct Scan<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn lit(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// The raw contents of a string whose opening quote was just read, and
    /// whether they hold escapes; the escapes are checked as serde_json
    /// checks them, control characters refused.
    fn raw_str(&mut self) -> Option<(&'a str, bool)> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i += special_offset(&self.b[self.i..])?;
            match self.b[self.i] {
                b'"' => {
                    let raw = self.text.get(start..self.i)?;
                    self.i += 1;
                    return Some((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            hex4(self.b.get(self.i..self.i + 4)?)?;
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// `null` or a string that is valid UTF-8 with only escapes serde_json
    /// accepts for a `str`.
    fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.lit(b"null").is_some() {
            return Some(None);
        }
        self.eat(b'"')?;
        let (raw, escaped) = self.raw_str()?;
        Some(Some(if escaped {
            Cow::Owned(unescape(raw)?)
        } else {
            Cow::Borrowed(raw)
        }))
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        match self.peek()? {
            b'n' => self.lit(b"null").map(|()| None),
            b't' => self.lit(b"true").map(|()| Some(true)),
            b'f' => self.lit(b"false").map(|()| Some(false)),
            _ => None,
        }
    }

    /// `null` or a plain non-negative integer that fits a `u32`; a sign, a
    /// fraction or an exponent is left to serde_json.
    fn opt_u32(&mut self) -> Option<Option<u32>> {
        if self.lit(b"null").is_some() {
            return Some(None);
        }
        let start = self.i;
        let mut n = 0u64;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n * 10 + u64::from(d - b'0');
            if n > u64::from(u32::MAX) {
                return None;
            }
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        Some(Some(n as u32))
    }

    /// Skips one value of a field nobody reads, as strictly as serde_json
    /// checks it: syntax only for a field of the envelope (`IgnoredAny`),
    /// and with `as_value` also what building a `Value` refuses (a lone
    /// surrogate, a float out of range; any float or long integer is left
    /// to serde_json there).
    fn skip_value(&mut self, depth: u32, as_value: bool) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.skipped_str(as_value)
            }
            b'n' => self.lit(b"null"),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'-' | b'0'..=b'9' if as_value => self.plain_integer(),
            b'-' | b'0'..=b'9' => self.skip_number(),
            open @ (b'[' | b'{') if depth < MAX_SKIP_DEPTH => {
                self.i += 1;
                let close = if open == b'[' { b']' } else { b'}' };
                self.ws();
                if self.eat(close).is_some() {
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.eat(b'"')?;
                        self.skipped_str(as_value)?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip_value(depth + 1, as_value)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        c if c == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// A string (opening quote read) whose text nobody reads.
    fn skipped_str(&mut self, as_value: bool) -> Option<()> {
        let (raw, escaped) = self.raw_str()?;
        if as_value && escaped {
            unescape(raw)?;
        }
        Some(())
    }

    /// `-? (0 | [1-9][0-9]{0,17})`: an integer any `Value` holds exactly.
    fn plain_integer(&mut self) -> Option<()> {
        self.eat(b'-');
        let start = self.i;
        self.digits();
        let digits = self.i - start;
        if digits == 0 || digits > 18 || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    /// The prompt text of a chat `messages` array, built as
    /// [`chat_text`](crate::parse) builds it from the parsed `Value`: per
    /// message `<|role|>` (`user` when the role is missing or not a
    /// string), the content's text, a newline. `None` where the `Value`
    /// path would fail or where this reader would have to guess: a
    /// message that is not an object, content of another shape, a
    /// repeated `role`, `content` or `text` (a `Value` keeps the last), a
    /// name with escapes.
    fn chat_messages(&mut self) -> Option<String> {
        self.eat(b'[')?;
        // The text is about as long as the rest of the body (markers in,
        // JSON syntax out): one allocation instead of a growth series.
        let mut out = String::with_capacity(self.b.len() - self.i);
        self.ws();
        if self.eat(b']').is_some() {
            return Some(out);
        }
        loop {
            self.chat_message(&mut out)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(out),
                _ => return None,
            }
        }
    }

    fn chat_message(&mut self, out: &mut String) -> Option<()> {
        self.eat(b'{')?;
        let mut role: Option<Cow<'a, str>> = None;
        let mut content: Option<Cow<'a, str>> = None;
        let (mut seen_role, mut seen_content) = (false, false);
        self.object_fields(|s, key| {
            match key {
                "role" if !seen_role => {
                    seen_role = true;
                    if s.peek()? == b'"' {
                        role = s.opt_str()?;
                    } else {
                        s.skip_value(1, true)?;
                    }
                }
                "content" if !seen_content => {
                    seen_content = true;
                    content = s.chat_content()?;
                }
                "role" | "content" => return None,
                _ => s.skip_value(1, true)?,
            }
            Some(())
        })?;
        out.push_str("<|");
        out.push_str(role.as_deref().unwrap_or("user"));
        out.push_str("|>");
        if let Some(c) = content {
            out.push_str(&c);
        }
        out.push('\n');
        Some(())
    }

    /// A message's `content`: null, a string, or an array of strings and
    /// parts whose `text` strings are taken.
    fn chat_content(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'n' | b'"' => self.opt_str(),
            b'[' => {
                self.i += 1;
                let mut text = String::new();
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(Some(Cow::Owned(text)));
                }
                loop {
                    match self.peek()? {
                        b'"' => text.push_str(&self.opt_str()??),
                        b'{' => {
                            self.i += 1;
                            let mut part: Option<Cow<'a, str>> = None;
                            let mut seen_text = false;
                            self.object_fields(|s, key| {
                                match key {
                                    "text" if !seen_text => {
                                        seen_text = true;
                                        if s.peek()? == b'"' {
                                            part = s.opt_str()?;
                                        } else {
                                            s.skip_value(2, true)?;
                                        }
                                    }
                                    "text" => return None,
                                    _ => s.skip_value(2, true)?,
                                }
                                Some(())
                            })?;
                            if let Some(t) = part {
                                text.push_str(&t);
                            }
                        }
                        _ => return None,
                    }
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b']' => return Some(Some(Cow::Owned(text))),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// The fields of an object whose `{` was just read, each name (without
    /// escapes) handed to `field` with the cursor at its value; the object's
    /// end is read too.
    fn object_fields(
        &mut self,
        mut field: impl FnMut(&mut Self, &str) -> Option<()>,
    ) -> Option<()> {
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let (key, escaped) = self.raw_str()?;
            if escaped {
                return None;
            }
            self.ws();
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn skip_number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.next()? {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.digit()?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some(())
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }
}

/// Offset of the first `"`, `\` or control character in `s`, eight bytes at
/// a time: prompts are long and mostly plain.
fn special_offset(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = s.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        // A byte is flagged when it is zero (after the xor) or below 0x20;
        // the lowest flag is always exact, later ones may be borrows.
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let hits = hits & HIGHS;
        if hits != 0 {
            return Some(base + (hits.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| base + p)
}

fn hex4(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | v as u16)
    })
}

/// The text of a string's raw contents (already checked by
/// [`Scan::raw_str`]), or `None` for a lone surrogate, which serde_json
/// refuses in a `str`.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find('\\') {
        out.push_str(&rest[..p]);
        let b = rest.as_bytes();
        let (c, used) = match b[p + 1] {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            _ => {
                let hi = hex4(&b[p + 2..p + 6])?;
                match hi {
                    0xD800..=0xDBFF => {
                        if b.get(p + 6..p + 8)? != b"\\u" {
                            return None;
                        }
                        let lo = hex4(b.get(p + 8..p + 12)?)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        let code =
                            0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                        (char::from_u32(code)?, 12)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(u32::from(hi))?, 6),
                }
            }
        };
        out.push(c);
        rest = &rest[p + used..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields<'a> = (
        Option<Cow<'a, str>>,
        Option<bool>,
        Option<u32>,
        Option<u32>,
        Option<Cow<'a, str>>,
        Option<Cow<'a, str>>,
        Option<Cow<'a, str>>,
    );

    /// The envelope's fields (but `messages`) when every prompt is a
    /// string, which is all the scanner produces.
    fn fields(env: Envelope<'_>) -> Option<Fields<'_>> {
        fn text(p: Option<PromptField<'_>>) -> Option<Option<Cow<'_, str>>> {
            match p {
                None => Some(None),
                Some(PromptField::Str(s)) => Some(Some(s)),
                Some(PromptField::Other(_)) => None,
            }
        }
        Some((
            env.model,
            env.stream,
            env.max_tokens,
            env.max_completion_tokens,
            env.user,
            text(env.prompt)?,
            text(env.input)?,
        ))
    }

    /// Whenever the scanner answers, serde_json answers the same.
    fn agrees(body: &[u8]) -> bool {
        let mut fast = Envelope::default();
        if !scan_envelope(body, &mut fast) {
            return false;
        }
        let mut slow: Envelope<'_> = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{:?}: scanner read what serde refuses: {e}",
                String::from_utf8_lossy(body)
            )
        });
        // The chat text the scanner built is the one the `Value` gives.
        let want = slow.messages.take().map(|m| {
            crate::parse::chat_text(&m).unwrap_or_else(|e| {
                panic!(
                    "{:?}: scanner read what chat_text refuses: {e}",
                    String::from_utf8_lossy(body)
                )
            })
        });
        assert_eq!(fast.messages, None);
        assert_eq!(
            fast.chat_text.take(),
            want,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        let slow = fields(slow).expect("serde read a non-string prompt");
        assert_eq!(
            fields(fast).unwrap(),
            slow,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        true
    }

    #[test]
    fn common_bodies_are_read_in_place() {
        for body in [
            r#"{"model":"llama-3-8b","prompt":"Say hello in one short sentence.","max_tokens":16,"temperature":0}"#,
            r#" { "model" : "m" , "prompt" : "p\n\"q\"\u00e9\ud83d\ude00" , "stream" : true , "user" : null } "#,
            r#"{"input":"x","max_completion_tokens":0,"stop":["\n",{"a":[1.5e-3,-0,true,null]}],"logit_bias":{}}"#,
            r#"{}"#,
            r#"{"models":5,"prompts":[1],"user_id":"x","inputs":{},"m":1,"prompt":"p"}"#,
            r#"{"messages":null,"prompt":null,"max_tokens":4294967295,"n":-12.25E+2,"x":"\u0000"}"#,
            r#"{"messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief\n"},{"role":"user","content":"hello","name":"x\u00e9"}],"stream":true}"#,
            r#"{"messages":[{"content":[{"type":"text","text":"hel"},{"type":"image_url","image_url":{"url":"http://x","n":[1,-2,null]}},"lo",{"text":5}]},{"role":7},{},{"role":null,"content":null},{"content":[]}]}"#,
        ] {
            assert!(agrees(body.as_bytes()), "{body}");
        }
        let mut env = Envelope::default();
        assert!(scan_envelope(
            br#"{"model":"m","prompt":"plain"}"#,
            &mut env
        ));
        assert!(matches!(env.model, Some(Cow::Borrowed("m"))));
        assert!(matches!(
            env.prompt,
            Some(PromptField::Str(Cow::Borrowed("plain")))
        ));
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        for body in [
            r#"{"model":"m","model":"n"}"#,
            r#"{"stream":null,"stream":true}"#,
            r#"{"max_tokens":16.0}"#,
            r#"{"max_tokens":1e2}"#,
            r#"{"max_tokens":-0}"#,
            r#"{"max_tokens":016}"#,
            r#"{"max_tokens":4294967296}"#,
            r#"{"model":5}"#,
            r#"{"prompt":[1,2]}"#,
            r#"{"prompt":"\ud800"}"#,
            r#"{"prompt":"\udc00x"}"#,
            r#"{"prompt":"\ud800\u0041"}"#,
            r#"{"prompt":"\x"}"#,
            "{\"prompt\":\"a\tb\"}",
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1,]}"#,
            r#"{"mod\u0065l":"m"}"#,
            r#"{"a":1} x"#,
            r#"{"messages":[{"role":"a","role":"b"}]}"#,
            r#"{"messages":[{"content":"a","content":"b"}]}"#,
            r#"{"messages":[{"content":[{"text":"a","text":"b"}]}]}"#,
            r#"{"messages":[{"r\u006fle":"a"}]}"#,
            r#"{"messages":[{"role":"a","x":1.5}]}"#,
            r#"{"messages":[{"role":"a","x":1e400}]}"#,
            r#"{"messages":[{"role":"a","x":"\ud800"}]}"#,
            r#"{"messages":[{"role":"a","\ud800":1}]}"#,
            r#"{"messages":[{"content":5}]}"#,
            r#"{"messages":[{"content":[5]}]}"#,
            r#"{"messages":[{"content":{"text":"a"}}]}"#,
            r#"{"messages":["hi"]}"#,
            r#"{"messages":{}}"#,
            r#"{"messages":[{"role":"a"},]}"#,
            r#"{"a":1"#,
            r#"["m"]"#,
            "",
        ] {
            assert!(!agrees(body.as_bytes()), "{body}");
        }
        assert!(!agrees(b"{\"model\":\"\xff\"}"));
        assert!(!agrees(b"{\"x\":\"\xff\"}"));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(!agrees(deep.as_bytes()));
    }

    /// Random bodies built from JSON fragments: where the scanner answers,
    /// serde_json must answer the same.
    #[test]
    fn random_bodies_agree_with_serde() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"",
            "\\",
            "\\\"",
            "\\n",
            "\\u00e9",
            "\\ud83d",
            "\\ude00",
            "\\u12",
            "\"model\"",
            "\"prompt\"",
            "\"input\"",
            "\"user\"",
            "\"stream\"",
            "\"max_tokens\"",
            "\"max_completion_tokens\"",
            "\"messages\"",
            "\"t\"",
            "\"x\"",
            "true",
            "false",
            "null",
            "0",
            "7",
            "-",
            ".",
            "e",
            "+",
            "12",
            "4294967295",
            "4294967296",
            "\t",
            "\u{1}",
            "é",
            "a",
            "\"a b\"",
        ];
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut answered = 0;
        for _ in 0..200_000 {
            let mut body = String::from("{");
            let n = next() % 12;
            for _ in 0..n {
                body.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            if next() % 2 == 0 {
                body.push('}');
            }
            if agrees(body.as_bytes()) {
                answered += 1;
            }
        }
        // Structured ones: valid field lists with random values.
        const VALUES: &[&str] = &[
            "\"s\"",
            "\"\\n\\\"\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "1",
            "0",
            "-1",
            "1.5",
            "2e3",
            "4294967295",
            "99999999999999999999",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            "[1,\"a\",[null]]",
            "{\"k\":[{}]}",
            "\"\u{7f}é\"",
        ];
        const KEYS: &[&str] = &[
            "model",
            "prompt",
            "input",
            "user",
            "stream",
            "max_tokens",
            "max_completion_tokens",
            "messages",
            "temperature",
            "stop",
        ];
        for _ in 0..100_000 {
            let n = next() % 5;
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    let k = KEYS[(next() % KEYS.len() as u64) as usize];
                    let v = VALUES[(next() % VALUES.len() as u64) as usize];
                    format!("\"{k}\":{v}")
                })
                .collect();
            let body = format!("{{{}}}", fields.join(","));
            if agrees(body.as_bytes()) {
                answered += 1;
            }
        }
        // Chat messages built from random parts.
        const ROLES: &[&str] = &[
            "\"user\"",
            "\"system\"",
            "\"a\\nb\"",
            "null",
            "7",
            "[]",
            "\"\\ud800\"",
        ];
        const CONTENTS: &[&str] = &[
            "\"hi\"",
            "\"x\\\"y\\u00e9\"",
            "null",
            "[]",
            "5",
            "{}",
            "\"\"",
            "[\"a\",{\"type\":\"text\",\"text\":\"b\"}]",
            "[{\"text\":1},{\"image\":{\"u\":[1.5]}}]",
            "[{\"text\":\"a\",\"text\":\"b\"}]",
            "[true]",
            "[\"\\ud83d\\ude00\"]",
        ];
        const EXTRAS: &[&str] = &[
            "\"name\":\"n\"",
            "\"tool_calls\":[{\"id\":\"1\",\"args\":\"{\\\"a\\\":1}\"}]",
            "\"n\":12",
            "\"n\":1e400",
            "\"n\":-0",
            "\"n\":123456789012345678901",
            "\"role\":\"dup\"",
            "\"x\":\"\\udc00\"",
        ];
        let mut chats = 0;
        for _ in 0..100_000 {
            let n = next() % 4;
            let messages: Vec<String> = (0..n)
                .map(|_| {
                    let mut fields = Vec::new();
                    if next() % 4 != 0 {
                        fields.push(format!(
                            "\"role\":{}",
                            ROLES[(next() % ROLES.len() as u64) as usize]
                        ));
                    }
                    if next() % 4 != 0 {
                        fields.push(format!(
                            "\"content\":{}",
                            CONTENTS[(next() % CONTENTS.len() as u64) as usize]
                        ));
                    }
                    if next() % 3 == 0 {
                        fields.push(EXTRAS[(next() % EXTRAS.len() as u64) as usize].to_string());
                    }
                    if next() % 2 == 0 {
                        fields.reverse();
                    }
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            let body = format!(r#"{{"model":"m","messages":[{}]}}"#, messages.join(","));
            if agrees(body.as_bytes()) {
                chats += 1;
            }
        }
        assert!(answered > 10_000, "{answered}");
        assert!(chats > 10_000, "{chats}");
    }

    #[test]
    fn special_offset_finds_the_first_special_byte() {
        let text = b"0123456789abcdef\"\\\x01 plain text";
        for start in 0..text.len() {
            let want = text[start..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            assert_eq!(special_offset(&text[start..]), want, "{start}");
        }
        let utf8 = "ééééé\u{7f}\u{1f600}\"".as_bytes();
        assert_eq!(special_offset(utf8), Some(utf8.len() - 1));
    }
}
