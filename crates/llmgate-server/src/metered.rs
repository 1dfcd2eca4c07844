//! Per-replica time to first token and total latency, measured on the
//! answer's body as it is relayed to the client (so queue time is included,
//! and a stream counts until its end).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame};
use tokio::time::Instant;

use llmgate_core::Priority;

pin_project_lite::pin_project! {
    /// A relayed body that records `llmgate_time_to_first_token_seconds` at its
    /// first data frame and `llmgate_request_duration_seconds` at its end.
    pub struct MeteredBody {
        #[pin]
        inner: Body,
        start: Instant,
        replica: Arc<str>,
        priority: Priority,
        first_seen: bool,
        done: bool,
    }
}

impl MeteredBody {
    /// Wraps `inner`, served by `replica`, for a request that arrived at `start`.
    pub fn new(inner: Body, start: Instant, replica: Arc<str>, priority: Priority) -> Self {
        MeteredBody {
            inner,
            start,
            replica,
            priority,
            first_seen: false,
            done: false,
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
        match &r {
            Poll::Ready(Some(Ok(f))) if f.is_data() && !*this.first_seen => {
                *this.first_seen = true;
                metrics::histogram!("llmgate_time_to_first_token_seconds", "replica" => this.replica.to_string())
                    .record(this.start.elapsed().as_secs_f64());
            }
            Poll::Ready(None) if !*this.done => {
                *this.done = true;
                metrics::histogram!(
                    "llmgate_request_duration_seconds",
                    "replica" => this.replica.to_string(),
                    "priority" => this.priority.as_str()
                )
                .record(this.start.elapsed().as_secs_f64());
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
