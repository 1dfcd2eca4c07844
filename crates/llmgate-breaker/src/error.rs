//! [`BreakerOpen`]: the error of a call refused by an open breaker.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use llmgate_core::ErrorResponse;
use tokio::time::Instant;

use crate::state::BreakerState;

/// A call refused because the breaker is open (or half-open with every
/// probe slot taken). Carries when the breaker will let a probe through.
///
/// As an HTTP answer it is `503 Service Unavailable` with `Retry-After`
/// (whole seconds, at least 1) and code `circuit_open`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker {name} is {state}; retry in {}s", retry_after_secs(self.retry_at))]
pub struct BreakerOpen {
    name: Arc<str>,
    state: BreakerState,
    retry_at: Instant,
}

fn retry_after_secs(at: Instant) -> u64 {
    let d = at.saturating_duration_since(Instant::now());
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl BreakerOpen {
    pub(crate) fn new(name: Arc<str>, state: BreakerState, retry_at: Instant) -> Self {
        BreakerOpen {
            name,
            state,
            retry_at,
        }
    }

    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's state when it refused (open, or half-open and busy).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the breaker lets a probe through again (tokio clock).
    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }

    /// How long from now until [`retry_at`](Self::retry_at) (zero if past).
    pub fn retry_after(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }
}

impl ErrorResponse for BreakerOpen {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn code(&self) -> &'static str {
        "circuit_open"
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(self.retry_at)),
        );
        h
    }
}
