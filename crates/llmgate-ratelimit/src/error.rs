//! [`RateLimited`], the rejection, and the header rendering it shares with
//! allowed answers.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use llmgate_core::ErrorResponse;

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The requests limit.
    Requests,
    /// The tokens limit.
    Tokens,
}

impl LimitKind {
    /// `"requests"` or `"tokens"`: bounded, fit for a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// The state of one bucket as reported to clients: OpenAI's
/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// The bucket size (the most units that pass at once).
    pub limit: u64,
    /// Units that would pass right now.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// The states of both buckets of a key (`None`: no limit of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitState {
    /// The requests bucket.
    pub requests: Option<BucketState>,
    /// The tokens bucket.
    pub tokens: Option<BucketState>,
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

impl RateLimitState {
    /// Writes the `x-ratelimit-*` headers (limit, remaining, reset) of the
    /// limits that apply, in OpenAI's formats (`reset` like `1s`, `6m0s`,
    /// `20ms`).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let sets = [
            (
                self.requests,
                [&LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS],
            ),
            (
                self.tokens,
                [&LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS],
            ),
        ];
        headers.reserve(3 * (self.requests.is_some() as usize + self.tokens.is_some() as usize));
        for (state, [limit, remaining, reset]) in sets {
            if let Some(s) = state {
                headers.insert(limit.clone(), HeaderValue::from(s.limit));
                headers.insert(remaining.clone(), HeaderValue::from(s.remaining));
                let text = HeaderValue::try_from(format_reset(s.reset)).expect("ASCII duration");
                headers.insert(reset.clone(), text);
            }
        }
    }
}

/// Formats a duration as OpenAI's `x-ratelimit-reset-*` values do (Go's
/// duration format): `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn format_reset(d: Duration) -> String {
    let ms_total = d.as_millis();
    if ms_total == 0 {
        // Round sub-millisecond resets up so "0s" only means "full now".
        return if d.is_zero() {
            "0s".to_owned()
        } else {
            "1ms".to_owned()
        };
    }
    if ms_total < 1000 {
        return format!("{ms_total}ms");
    }
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sec_text = if ms == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{ms:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{sec_text}")
    } else if m > 0 {
        format!("{m}m{sec_text}")
    } else {
        sec_text
    }
}

/// A request was refused by the rate limiter.
///
/// Renders (through [`llmgate_core::error_response`]) as HTTP 429 with
/// `Retry-After` (whole seconds, rounded up), `retry-after-ms`, and the
/// `x-ratelimit-*` headers of both limits. A request that can never pass
/// (its token cost exceeds the bucket size) gets code `request_too_large`
/// and no `Retry-After`, so well-behaved clients do not retry it forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    kind: LimitKind,
    retry_after: Option<Duration>,
    cost: u64,
    state: RateLimitState,
}

impl RateLimited {
    pub(crate) fn new(
        kind: LimitKind,
        retry_after: Option<Duration>,
        cost: u64,
        state: RateLimitState,
    ) -> RateLimited {
        RateLimited {
            kind,
            retry_after,
            cost,
            state,
        }
    }

    /// The limit that refused the request (requests first when both did).
    pub fn kind(&self) -> LimitKind {
        self.kind
    }

    /// How long until the same request would pass both limits; `None` when
    /// it never can (its cost exceeds the bucket size).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The request's cost on the refusing limit (1 for requests).
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The bucket states at the time of refusal (nothing was charged).
    pub fn state(&self) -> &RateLimitState {
        &self.state
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = match self.kind {
            LimitKind::Requests => self.state.requests,
            LimitKind::Tokens => self.state.tokens,
        }
        .map(|s| s.limit)
        .unwrap_or(0);
        match self.retry_after {
            Some(wait) => write!(
                f,
                "rate limit reached for {}: limit {}, requested {}; retry after {}",
                self.kind.as_str(),
                limit,
                self.cost,
                format_reset(wait)
            ),
            None => write!(
                f,
                "request too large for {}: limit {}, requested {}",
                self.kind.as_str(),
                limit,
                self.cost
            ),
        }
    }
}

impl std::error::Error for RateLimited {}

impl ErrorResponse for RateLimited {
    fn status(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }

    fn code(&self) -> &'static str {
        if self.retry_after.is_some() {
            "rate_limit_exceeded"
        } else {
            "request_too_large"
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
            let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
            h.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("digits"),
            );
            h.insert(
                RETRY_AFTER_MS,
                HeaderValue::from_str(&ms.to_string()).expect("digits"),
            );
        }
        self.state.write_headers(&mut h);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_format_matches_openai() {
        assert_eq!(format_reset(Duration::ZERO), "0s");
        assert_eq!(format_reset(Duration::from_micros(10)), "1ms");
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_millis(17_280)), "17.28s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
    }
}
