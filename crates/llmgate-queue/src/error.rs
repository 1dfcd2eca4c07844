//! [`QueueError`]: why the queue answered a request itself.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use llmgate_core::ErrorResponse;

/// Why a request left the [`PriorityQueue`](crate::PriorityQueue) without
/// reaching the service behind it.
///
/// The queue's response futures fail with a [`BoxError`](llmgate_core::BoxError);
/// find this type in it with `err.downcast_ref::<QueueError>()` or
/// [`llmgate_core::find_in_chain`]. Errors of the inner service pass through
/// unchanged.
///
/// ```
/// use http::StatusCode;
/// use llmgate_core::ErrorResponse;
/// use llmgate_queue::QueueError;
/// use std::time::Duration;
///
/// let full = QueueError::Full { retry_after: Duration::from_millis(1500) };
/// assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(full.headers()["retry-after"], "2");
/// let late = QueueError::Timeout { waited: Duration::from_secs(30) };
/// assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue was full of requests at least as urgent; the arrival was
    /// refused at once. HTTP 503 with `Retry-After`.
    #[error("the request queue is full; retry later")]
    Full {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The request's priority is at its own queue cap. HTTP 503 with
    /// `Retry-After`.
    #[error("the request queue for this priority is full; retry later")]
    PriorityFull {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The request was queued, then displaced by a more urgent arrival when
    /// the queue was full. HTTP 503 with `Retry-After`.
    #[error("the request was shed from the queue in favour of a more urgent request; retry later")]
    Shed {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The request's deadline passed while it waited. HTTP 504.
    #[error("the request waited {waited:?} in the queue and passed its deadline")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The service behind the queue failed while becoming ready; every
    /// queued request and every later one fails with this. HTTP 503.
    #[error("the service behind the queue failed: {source}")]
    InnerFailed {
        /// The inner service's `poll_ready` error.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The queue's worker is gone (runtime shut down, or the worker future
    /// of [`PriorityQueue::pair`](crate::PriorityQueue::pair) was dropped).
    /// HTTP 503.
    #[error("the request queue is closed")]
    Closed,
}

impl QueueError {
    /// The suggested wait before retrying, for full and shed answers.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            QueueError::Full { retry_after }
            | QueueError::PriorityFull { retry_after }
            | QueueError::Shed { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl ErrorResponse for QueueError {
    fn status(&self) -> StatusCode {
        match self {
            QueueError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            QueueError::Full { .. } => "queue_full",
            QueueError::PriorityFull { .. } => "queue_priority_full",
            QueueError::Shed { .. } => "queue_shed",
            QueueError::Timeout { .. } => "queue_timeout",
            QueueError::InnerFailed { .. } => "upstream_unavailable",
            QueueError::Closed => "queue_closed",
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(d) = self.retry_after() {
            // Whole seconds, rounded up, at least 1.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_codes_and_headers() {
        let d = Duration::from_secs(3);
        for (e, status, code) in [
            (QueueError::Full { retry_after: d }, 503, "queue_full"),
            (
                QueueError::PriorityFull { retry_after: d },
                503,
                "queue_priority_full",
            ),
            (QueueError::Shed { retry_after: d }, 503, "queue_shed"),
        ] {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.code(), code);
            assert_eq!(e.headers()[header::RETRY_AFTER], "3");
        }
        let t = QueueError::Timeout { waited: d };
        assert_eq!(t.status().as_u16(), 504);
        assert!(t.headers().is_empty());
        let inner = QueueError::InnerFailed {
            source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from("boom")),
        };
        assert_eq!(inner.status().as_u16(), 503);
        assert!(inner.to_string().contains("boom"));
        assert!(std::error::Error::source(&inner).is_some());
        let zero = QueueError::Full {
            retry_after: Duration::ZERO,
        };
        assert_eq!(zero.headers()[header::RETRY_AFTER], "1");
    }
}
