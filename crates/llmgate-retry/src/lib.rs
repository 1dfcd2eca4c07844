//! `RetryLayer`: retries with exponential backoff and full jitter,
//! `Retry-After`, a retry budget and request replay, built on tower's
//! [`retry::Policy`](tower::retry::Policy).
//!
//! * **Attempts**: at most `max_attempts` in total (default 3).
//! * **Backoff**: before retry *n*, a uniform wait in
//!   `[0, min(cap, base × 2^(n-1))]` (full jitter; default base 100 ms,
//!   cap 5 s). An answer's `Retry-After` (seconds or HTTP date), or a
//!   [`BreakerOpen`](llmgate_breaker::BreakerOpen)'s cool-down, raises the
//!   wait to at least that, up to the cap.
//! * **Budget**: tower's `TpsBudget`, shared by all requests of a layer:
//!   retries add at most 20% (default) of first attempts, plus a floor of
//!   1 retry per second, so an outage is not multiplied.
//! * **What is retried** ([`HttpRetry`]): errors (connection errors,
//!   per-attempt timeouts, `BreakerOpen` anywhere in the chain), 429, 502,
//!   503, 504; never another 4xx.
//! * **Never after the head**: the decision is made when the inner future
//!   resolves, at the response head. A response handed to the caller is
//!   final, so a stream that fails after its first bytes is never retried
//!   and never duplicated.
//! * **Replay**: buffered HTTP bodies ([`llmgate_core::BufferedBody`], the
//!   body `MetaLayer` produces) are cloned with the request's headers and
//!   extensions; a body that cannot be replayed is sent once.
//! * **Endpoint avoidance**: before a retry the endpoint that failed
//!   ([`llmgate_core::EndpointError`] or [`llmgate_core::ServedBy`]) is
//!   added to the request's [`llmgate_core::AvoidEndpoints`].
//! * **Per request**: the attempt count and jitter generator live in the
//!   policy clone of one request; nothing but the budget is shared.
//!
//! Metrics (no labels): `llmgate_retry_attempts_total`,
//! `llmgate_retry_retries_total`, `llmgate_retry_budget_exhausted_total`.
//! A layer keeps its attempts counter from its first request on, so install
//! the recorder before traffic starts (as for the queue and the breakers).
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use llmgate_core::{AvoidEndpoints, BufferedBody, ServedBy};
//! use llmgate_retry::RetryLayer;
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = service_fn({
//!     let calls = calls.clone();
//!     move |req: Request<BufferedBody>| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             if n == 0 {
//!                 // The first replica is overloaded.
//!                 let mut res = Response::new("busy".to_string());
//!                 *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!                 res.extensions_mut().insert(ServedBy("replica-a".into()));
//!                 return Ok::<_, BoxError>(res);
//!             }
//!             let avoid = req.extensions().get::<AvoidEndpoints>().unwrap();
//!             assert!(avoid.contains("replica-a"));
//!             Ok(Response::new("hello".to_string()))
//!         }
//!     }
//! });
//!
//! let svc = RetryLayer::new().layer(upstream);
//! let req = Request::post("/v1/completions").body(BufferedBody::new(Bytes::from("{}")))?;
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
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

mod classify;
mod config;
mod future;
mod layer;
mod policy;
mod service;

pub use classify::{retry_after, AsErrorChain, HttpRetry, RetryClassify, RetryErrors, Retryable};
pub use config::{BudgetConfig, RetryConfig};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::{backoff_ceiling, full_jitter, BackoffFuture, RetryPolicy};
pub use service::Retry;

#[cfg(test)]
mod tests;
