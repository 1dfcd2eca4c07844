//! What happens to an allowed request's answer: [`OnResponse`], with the
//! HTTP default [`HttpSettle`] and the pass-through [`NoSettle`].

use std::hash::Hash;

use http::header::CONTENT_TYPE;

use crate::body::{ScanMode, SettleBody, DEFAULT_JSON_SCAN_LIMIT};
use crate::limiter::Grant;

/// Turns an allowed request's answer into what the caller gets, given the
/// [`Grant`] that admitted it (headers to add, usage to settle).
pub trait OnResponse<Res, K> {
    /// The answer handed to the caller.
    type Output;

    /// Handles `res`. Dropping `grant` keeps the estimate charged.
    fn on_response(&self, res: Res, grant: Grant<K>) -> Self::Output;

    /// The inner service failed: by default the token estimate is refunded
    /// (no tokens were generated); the request still counts.
    fn on_error(&self, grant: Grant<K>)
    where
        K: Hash + Eq + Clone,
    {
        grant.settle(0);
    }
}

/// For non-HTTP answers: passes them through; the estimate stays charged.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSettle;

impl<Res, K> OnResponse<Res, K> for NoSettle {
    type Output = Res;

    fn on_response(&self, res: Res, _grant: Grant<K>) -> Res {
        res
    }
}

/// The HTTP default: adds the `x-ratelimit-*` headers to the answer and
/// wraps its body in a [`SettleBody`] that settles the token estimate
/// against the OpenAI `usage` the answer reports (JSON bodies up to a size
/// cap, and SSE streams). A 5xx answer refunds the token estimate at once.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettle {
    json_scan_limit: usize,
}

impl HttpSettle {
    /// Scans JSON bodies of at most `json_scan_limit` bytes.
    pub const fn new(json_scan_limit: usize) -> HttpSettle {
        HttpSettle { json_scan_limit }
    }

    /// The JSON body size cap.
    pub const fn json_scan_limit(&self) -> usize {
        self.json_scan_limit
    }
}

impl Default for HttpSettle {
    fn default() -> Self {
        HttpSettle::new(DEFAULT_JSON_SCAN_LIMIT)
    }
}

fn scan_mode(headers: &http::HeaderMap, json_cap: usize) -> ScanMode {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return ScanMode::Off;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("text/event-stream") {
        ScanMode::Sse
    } else if essence.eq_ignore_ascii_case("application/json") {
        ScanMode::Json(json_cap)
    } else {
        ScanMode::Off
    }
}

impl<B, K> OnResponse<http::Response<B>, K> for HttpSettle
where
    K: Hash + Eq + Clone,
{
    type Output = http::Response<SettleBody<B, K>>;

    fn on_response(&self, res: http::Response<B>, grant: Grant<K>) -> Self::Output {
        let (mut parts, body) = res.into_parts();
        grant.state().write_headers(&mut parts.headers);
        if parts.status.is_server_error() {
            grant.settle(0);
            return http::Response::from_parts(parts, SettleBody::passthrough(body));
        }
        let mode = if grant.state().tokens.is_some() {
            scan_mode(&parts.headers, self.json_scan_limit)
        } else {
            ScanMode::Off
        };
        let grant = (mode != ScanMode::Off).then_some(grant);
        http::Response::from_parts(parts, SettleBody::new(body, mode, grant))
    }
}
