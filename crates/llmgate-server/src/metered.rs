//! Per-replica time to first token and total latency, measured on the
//! answer's body as it is relayed to the client (so queue time is included,
//! and a stream counts until its end).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame};
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use tokio::time::Instant;

use llmgate_core::Priority;

/// Outcome labels of `llmgate_requests_total`.
pub const OUTCOMES: [&str; 7] = [
    "success",
    "upstream_error",
    "rate_limited",
    "unavailable",
    "timeout",
    "bad_request",
    "error",
];

/// Handles of the per-request series, resolved once per label set (the
/// labels are bounded: priorities, outcomes, replicas), so that a request
/// does no registry look-up and formats no label. Build it after the
/// metrics recorder is installed.
pub struct RequestMetrics {
    requests: Vec<Counter>,
    replicas: RwLock<HashMap<Arc<str>, Arc<ReplicaSeries>>>,
}

/// One replica's latency histograms.
pub struct ReplicaSeries {
    ttft: Histogram,
    duration: Vec<Histogram>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    /// Registers the request counters with the installed recorder.
    pub fn new() -> Self {
        let mut requests = Vec::with_capacity(Priority::ALL.len() * OUTCOMES.len());
        for p in Priority::ALL {
            for o in OUTCOMES {
                requests.push(metrics::counter!("llmgate_requests_total", "priority" => p.as_str(), "outcome" => o));
            }
        }
        RequestMetrics {
            requests,
            replicas: RwLock::new(HashMap::new()),
        }
    }

    /// Counts one request; `outcome` is one of [`OUTCOMES`].
    pub fn request(&self, priority: Priority, outcome: &str) {
        let o = OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.requests[priority.rank() * OUTCOMES.len() + o].increment(1);
    }

    /// The histograms of `replica`.
    pub fn replica(&self, replica: &Arc<str>) -> Arc<ReplicaSeries> {
        if let Some(s) = self.replicas.read().get(replica) {
            return s.clone();
        }
        let series = Arc::new(ReplicaSeries {
            ttft: metrics::histogram!("llmgate_time_to_first_token_seconds", "replica" => replica.to_string()),
            duration: Priority::ALL
                .iter()
                .map(|p| {
                    metrics::histogram!(
                        "llmgate_request_duration_seconds",
                        "replica" => replica.to_string(),
                        "priority" => p.as_str()
                    )
                })
                .collect(),
        });
        self.replicas
            .write()
            .entry(replica.clone())
            .or_insert(series)
            .clone()
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pin_project_lite::pin_project! {
    /// A relayed body that records `llmgate_time_to_first_token_seconds` at its
    /// first data frame and `llmgate_request_duration_seconds` at its end;
    /// or, [`plain`](Self::plain), a body passed through as it is (one body
    /// type for every answer, so none is boxed again on its way out).
    pub struct MeteredBody {
        #[pin]
        inner: Body,
        // The replica's series and when the request arrived; none for a
        // plain body.
        meter: Option<(Arc<ReplicaSeries>, Instant)>,
        priority: Priority,
        first_seen: bool,
        done: bool,
    }
}

impl MeteredBody {
    /// Wraps `inner`, served by the replica of `series`, for a request that
    /// arrived at `start`.
    pub fn new(
        inner: Body,
        start: Instant,
        series: Arc<ReplicaSeries>,
        priority: Priority,
    ) -> Self {
        MeteredBody {
            inner,
            meter: Some((series, start)),
            priority,
            first_seen: false,
            done: false,
        }
    }

    /// `inner` as it is, recording nothing.
    pub fn plain(inner: Body) -> Self {
        MeteredBody {
            inner,
            meter: None,
            priority: Priority::default(),
            first_seen: true,
            done: true,
        }
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        let Some((series, start)) = this.meter else {
            return r;
        };
        match &r {
            Poll::Ready(Some(Ok(f))) if f.is_data() && !*this.first_seen => {
                *this.first_seen = true;
                series.ttft.record(start.elapsed().as_secs_f64());
            }
            Poll::Ready(None) if !*this.done => {
                *this.done = true;
                series.duration[this.priority.rank()].record(start.elapsed().as_secs_f64());
            }
            _ => {}
        }
        r
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
