//! [`SettleBody`]: passes an answer's bytes through untouched, finds the
//! OpenAI `usage` in it and settles the token estimate at the end.
//!
//! The scan is cheap by construction:
//!
//! * **JSON answers** (`application/json`) are collected up to a size cap
//!   (default 256 KiB; larger bodies are not settled). At the end the last
//!   `"usage"` key is located from the back and only its object is parsed;
//!   only if that fails is the whole body parsed.
//! * **SSE answers** (`text/event-stream`) are split into lines; only `data:`
//!   lines that mention `"usage"` with a non-null value are kept (the last
//!   one, which is the final usage chunk OpenAI and vLLM send before
//!   `data: [DONE]` when `stream_options.include_usage` is set). It is parsed
//!   once, at `[DONE]` or at the end of the stream.
//! * Anything else is passed through without looking at it.
//!
//! A body that ends early (the client went away) settles with the usage it
//! saw, if any; otherwise the estimate stays charged. Settlement happens at
//! the last frame when the inner body reports `is_end_stream`, at the final
//! `None`, or on drop, whichever comes first (once).

use std::fmt;
use std::hash::Hash;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Deserialize;

use crate::limiter::Grant;

/// What a rate-limit key must be: hashable, comparable, cheap to clone.
/// Implemented for every such type.
pub trait RateLimitKey: Hash + Eq + Clone {}

impl<T: Hash + Eq + Clone> RateLimitKey for T {}

/// Default cap on JSON bodies scanned for `usage`.
pub const DEFAULT_JSON_SCAN_LIMIT: usize = 256 * 1024;

/// Longest SSE line kept while looking for `usage`.
const MAX_SSE_LINE: usize = 64 * 1024;

/// OpenAI's `usage` object.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Usage {
    total_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl Usage {
    fn total(&self) -> Option<u64> {
        self.total_tokens
            .or(match (self.prompt_tokens, self.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
            })
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
}

/// Total tokens of the last top-level-looking `usage` object in a JSON body.
pub(crate) fn usage_in_json(body: &[u8]) -> Option<u64> {
    const NEEDLE: &[u8] = b"\"usage\"";
    // Fast path: the last `"usage"` key (OpenAI puts it at the end).
    if let Some(pos) = memchr::memmem::rfind(body, NEEDLE) {
        let escaped = pos > 0 && body[pos - 1] == b'\\';
        if !escaped {
            let rest = &body[pos + NEEDLE.len()..];
            let rest = trim_start(rest);
            if let Some(rest) = rest.strip_prefix(b":") {
                let mut it = serde_json::Deserializer::from_slice(rest).into_iter::<Usage>();
                if let Some(Ok(u)) = it.next() {
                    return u.total();
                }
            }
        }
    } else {
        return None;
    }
    serde_json::from_slice::<WithUsage>(body)
        .ok()?
        .usage?
        .total()
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn trim(s: &[u8]) -> &[u8] {
    let mut s = trim_start(s);
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// What the scanner looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanMode {
    /// Don't look; the estimate stays.
    Off,
    /// A whole JSON body up to this many bytes.
    Json(usize),
    /// Server-sent events.
    Sse,
}

enum Scan {
    Off,
    Json {
        buf: Vec<u8>,
        cap: usize,
        overflow: bool,
    },
    Sse {
        line: Vec<u8>,
        line_overflow: bool,
        candidate: Vec<u8>,
    },
}

struct Scanner<K: Hash + Eq + Clone> {
    scan: Scan,
    grant: Option<Grant<K>>,
}

impl<K: Hash + Eq + Clone> Scanner<K> {
    fn feed(&mut self, bytes: &[u8]) {
        if self.grant.is_none() {
            return;
        }
        match &mut self.scan {
            Scan::Off => {}
            Scan::Json { buf, cap, overflow } => {
                if *overflow || buf.len() + bytes.len() > *cap {
                    *overflow = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(bytes);
                }
            }
            Scan::Sse { .. } => {
                let mut rest = bytes;
                while let Some(nl) = memchr::memchr(b'\n', rest) {
                    self.push_line_part(&rest[..nl]);
                    if self.end_line() {
                        return;
                    }
                    rest = &rest[nl + 1..];
                }
                self.push_line_part(rest);
            }
        }
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if let Scan::Sse {
            line,
            line_overflow,
            ..
        } = &mut self.scan
        {
            if *line_overflow || line.len() + part.len() > MAX_SSE_LINE {
                *line_overflow = true;
                line.clear();
            } else {
                line.extend_from_slice(part);
            }
        }
    }

    /// Handles a complete SSE line; true once `[DONE]` settled the grant.
    fn end_line(&mut self) -> bool {
        let Scan::Sse {
            line,
            line_overflow,
            candidate,
        } = &mut self.scan
        else {
            return false;
        };
        let overflowed = std::mem::replace(line_overflow, false);
        if !overflowed {
            if let Some(payload) = line.strip_prefix(b"data:") {
                let payload = trim(payload);
                if payload == b"[DONE]" {
                    line.clear();
                    self.finish(true);
                    return true;
                }
                if mentions_usage(payload) {
                    candidate.clear();
                    candidate.extend_from_slice(payload);
                }
            }
        }
        line.clear();
        false
    }

    /// Parses what was seen and settles. `complete`: the body ended normally.
    fn finish(&mut self, complete: bool) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        let actual = match &mut self.scan {
            Scan::Off => None,
            // A cut-off body rarely parses, but a complete `usage` object
            // seen before the cut is still the truth.
            Scan::Json { buf, overflow, .. } => (!*overflow).then(|| usage_in_json(buf)).flatten(),
            Scan::Sse {
                line,
                line_overflow,
                candidate,
            } => {
                // A last line without a trailing newline still counts.
                if complete && !*line_overflow {
                    if let Some(payload) = line.strip_prefix(b"data:") {
                        let payload = trim(payload);
                        if payload != b"[DONE]" && mentions_usage(payload) {
                            *candidate = payload.to_vec();
                        }
                    }
                }
                serde_json::from_slice::<WithUsage>(candidate)
                    .ok()
                    .and_then(|w| w.usage)
                    .and_then(|u| u.total())
            }
        };
        self.scan = Scan::Off;
        if let Some(actual) = actual {
            grant.settle(actual);
        }
    }
}

/// Whether an SSE payload carries a non-null `usage`.
fn mentions_usage(payload: &[u8]) -> bool {
    let Some(pos) = memchr::memmem::find(payload, b"\"usage\"") else {
        return false;
    };
    let rest = trim_start(&payload[pos + 7..]);
    let rest = rest.strip_prefix(b":").map(trim_start).unwrap_or(rest);
    !rest.starts_with(b"null")
}

impl<K: Hash + Eq + Clone> Drop for Scanner<K> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

pin_project! {
    /// A response body that settles the token estimate against the `usage`
    /// the answer reports; bytes pass through untouched.
    pub struct SettleBody<B, K: RateLimitKey> {
        #[pin]
        inner: B,
        scanner: Scanner<K>,
    }
}

impl<B, K: Hash + Eq + Clone> SettleBody<B, K> {
    pub(crate) fn new(inner: B, mode: ScanMode, grant: Option<Grant<K>>) -> SettleBody<B, K> {
        let scan = match mode {
            ScanMode::Off => Scan::Off,
            ScanMode::Json(cap) => Scan::Json {
                buf: Vec::new(),
                cap,
                overflow: false,
            },
            ScanMode::Sse => Scan::Sse {
                line: Vec::new(),
                line_overflow: false,
                candidate: Vec::new(),
            },
        };
        SettleBody {
            inner,
            scanner: Scanner { scan, grant },
        }
    }

    /// A body that settles nothing.
    pub(crate) fn passthrough(inner: B) -> SettleBody<B, K> {
        SettleBody::new(inner, ScanMode::Off, None)
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug, K: Hash + Eq + Clone> fmt::Debug for SettleBody<B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleBody")
            .field("inner", &self.inner)
            .field("settling", &self.scanner.grant.is_some())
            .finish()
    }
}

impl<B, K> Body for SettleBody<B, K>
where
    B: Body,
    B::Data: Buf,
    K: Hash + Eq + Clone,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.scanner.grant.is_some() {
                        let mut slices = [IoSlice::new(&[]); 16];
                        let n = data.chunks_vectored(&mut slices);
                        for s in &slices[..n] {
                            this.scanner.feed(s);
                        }
                    }
                }
                // hyper stops polling once a body says it has ended, so the
                // final `None` may never come: settle on the last frame.
                if this.inner.is_end_stream() {
                    this.scanner.finish(true);
                }
            }
            Poll::Ready(None) => this.scanner.finish(true),
            Poll::Ready(Some(Err(_))) => this.scanner.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_usage_fast_path_and_fallback() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": 5"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;
        assert_eq!(usage_in_json(body), Some(15));
        // No total: prompt + completion.
        assert_eq!(
            usage_in_json(br#"{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}"#),
            Some(7)
        );
        // The last "usage" text is escaped inside a string: full parse.
        let tricky = br#"{"usage":{"total_tokens":9},"choices":[{"text":"\"usage\""}]}"#;
        assert_eq!(usage_in_json(tricky), Some(9));
        assert_eq!(usage_in_json(br#"{"usage":null}"#), None);
        assert_eq!(usage_in_json(br#"{"choices":[]}"#), None);
        assert_eq!(usage_in_json(b"not json"), None);
    }

    #[test]
    fn sse_usage_detection() {
        assert!(!mentions_usage(br#"{"choices":[],"usage":null}"#));
        assert!(!mentions_usage(br#"{"choices":[]}"#));
        assert!(mentions_usage(
            br#"{"choices":[],"usage": {"total_tokens":1}}"#
        ));
    }
}
