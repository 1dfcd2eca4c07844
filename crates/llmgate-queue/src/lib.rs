//! `PriorityQueueLayer`: a priority admission queue with deadlines,
//! shedding and per-client fairness, in front of any `tower::Service`.
//!
//! The queue holds requests while the service behind it (in the gateway:
//! the balancer) is not ready, and releases them in priority order as it
//! becomes ready. It has the shape of `tower::buffer` with a priority queue
//! instead of a channel:
//!
//! - [`PriorityQueue`] is always ready and enqueues in `call` (servers such
//!   as axum and hyper-util treat services as ready, so waiting in
//!   `poll_ready` would hold nobody back). Clones share one queue.
//! - A [`Worker`] task owns the inner service, drives its `poll_ready` and
//!   releases requests: strict priority `Critical > High > Normal > Low >
//!   Batch`, and inside a level round robin (or deficit round robin by
//!   estimated tokens, or plain FIFO, see [`Fairness`]) between client keys,
//!   FIFO per client. It hands the inner response future to the caller's
//!   [`ResponseFuture`] and never waits on a response.
//! - While nothing is queued and the inner service is ready, `call` uses it
//!   directly from the caller's task (no hand-off to the worker and back);
//!   a request never passes one that is already waiting.
//! - Bounded: a total capacity and optional per-priority caps. When full,
//!   an arrival more urgent than the least urgent queued request displaces
//!   the newest request of the least urgent level ([`QueueError::Shed`]);
//!   otherwise the arrival is refused at once ([`QueueError::Full`]). Both
//!   are HTTP 503 with `Retry-After`.
//! - Deadlines: each request leaves the queue at the earlier of its own
//!   deadline ([`PriorityOf::deadline`], `RequestMeta::deadline` for HTTP)
//!   and the layer's queue timeout, with [`QueueError::Timeout`] (HTTP 504).
//!   The worker keeps one timer, on the earliest deadline.
//! - Cancellation: dropping a [`ResponseFuture`] removes its request from
//!   the queue at once, under the queue lock, so its slot is free for the
//!   next arrival and the worker never releases it.
//! - Optional aging ([`PriorityQueueBuilder::aging`], off by default).
//! - An inner `poll_ready` error fails every queued request with
//!   [`QueueError::InnerFailed`]; later calls fail the same way.
//! - Metrics (facade only): gauge `llmgate_queue_depth{priority}`,
//!   histogram `llmgate_queue_wait_seconds{priority}`, counters
//!   `llmgate_queue_{served,shed,rejected,timeouts,cancelled,failed}_total{priority}`.
//!   A [`QueueHandle`] reports the same figures for an admin API.
//!
//! Every request ends in exactly one of: released to the inner service,
//! shed, refused (full), timed out, cancelled, or failed (inner failure or
//! closed queue); none waits forever.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use llmgate_core::{BufferedBody, EndpointKind, Priority, RequestMeta};
//! use llmgate_queue::PriorityQueueLayer;
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = PriorityQueueLayer::builder()
//!     .capacity(1_000)
//!     .priority_capacity(Priority::Batch, 100)
//!     .queue_timeout(Duration::from_secs(10))
//!     .build();
//! let admin = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: Request<BufferedBody>| async move {
//!         let meta = req.extensions().get::<RequestMeta>().expect("set below");
//!         Ok::<_, BoxError>(Response::new(format!("served {}", meta.priority)))
//!     }));
//!
//! let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
//! req.extensions_mut()
//!     .insert(RequestMeta::new(EndpointKind::Chat).with_priority(Priority::High));
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.body(), "served high");
//! assert_eq!(admin.snapshot().served, 1);
//! assert_eq!(admin.total_depth(), 0);
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod error;
mod future;
mod handle;
mod layer;
mod priority_of;
mod service;
mod state;
mod worker;

pub use error::QueueError;
pub use future::ResponseFuture;
pub use handle::{QueueHandle, QueueSnapshot};
pub use layer::{
    Fairness, PriorityQueueBuilder, PriorityQueueLayer, DEFAULT_CAPACITY, DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_RETRY_AFTER,
};
pub use priority_of::{PriorityOf, DEFAULT_MAX_TOKENS_ESTIMATE};
pub use service::PriorityQueue;
pub use worker::Worker;
