//! `CircuitBreakerLayer`: a closed → open → half-open → closed circuit
//! breaker for any [`tower::Service`], with a fail-fast mode (used alone)
//! and a not-ready mode (per endpoint inside a balancer).
//!
//! * **Closed**: calls pass and their outcomes are counted. The breaker
//!   opens after `consecutive_failures` failures in a row (default 5), or
//!   when at least `failure_rate` (default 50%) of at least `min_calls`
//!   (default 20) calls in the rolling `window` (default 10 s) failed.
//! * **Open** for `cool_down` (default 30 s; ×`cool_down_growth` on each
//!   repeated trip, capped at `cool_down_cap`). In [`Mode::FailFast`] a call
//!   fails at once with [`BreakerOpen`] (HTTP: 503 + `Retry-After`); in
//!   [`Mode::NotReady`] `poll_ready` is `Pending` and wakes itself when the
//!   cool-down ends, so a balancer skips the endpoint without failing
//!   requests and without evicting it.
//! * **Half-open**: at most `half_open_max_probes` calls in flight at once
//!   (default 1); `half_open_successes` successes (default 3) close the
//!   breaker; one failure opens it again.
//!
//! What a failure is comes from a [`Classify`] implementation over the inner
//! service's `Result<Response, Error>`. [`HttpClassifier`] (the default)
//! counts errors (connection errors, timeouts) and 5xx as failures and
//! 2xx–4xx (429 included) as successes; for a streamed body the outcome
//! follows the body ([`BreakerBody`]) to its end, and an error mid-stream is
//! a failure. [`GrpcClassifier`] reads `grpc-status`. Put a timeout *inside*
//! the breaker for timeouts to count: a call cancelled from outside (its
//! future dropped) is not an outcome.
//!
//! The state lives behind one `parking_lot` mutex shared by the layer, every
//! service and clone, the in-flight futures and bodies, and the
//! [`BreakerHandle`]. Outcomes of calls admitted in an earlier state are
//! counted in the totals but never move the state machine.
//!
//! Metrics: gauge `llmgate_breaker_state{name}` (0 closed, 1 half-open, 2
//! open), counters `llmgate_breaker_transitions_total{name,to}` and
//! `llmgate_breaker_rejected_total{name}`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use llmgate_breaker::{BreakerOpen, BreakerState, CircuitBreakerLayer};
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = CircuitBreakerLayer::builder()
//!     .name("upstream")
//!     .consecutive_failures(2)
//!     .cool_down(Duration::from_secs(30))
//!     .build();
//! let handle = layer.handle();
//! // An upstream that always answers 500.
//! let svc = layer.layer(service_fn(|_req: Request<String>| async {
//!     let mut res = Response::new(String::new());
//!     *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
//!     Ok::<_, BoxError>(res)
//! }));
//!
//! for _ in 0..2 {
//!     let res = svc.clone().oneshot(Request::new(String::new())).await?;
//!     assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
//! }
//! assert_eq!(handle.state(), BreakerState::Open);
//!
//! // Now calls fail fast, without reaching the upstream.
//! let err = svc.clone().oneshot(Request::new(String::new())).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().expect("refused by the breaker");
//! assert!(open.retry_after() <= Duration::from_secs(30));
//! let answer = llmgate_core::error_response(open);
//! assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(answer.headers()["retry-after"], "30");
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

mod body;
mod classify;
mod config;
mod error;
mod future;
mod layer;
mod service;
mod state;

pub use body::BreakerBody;
pub use classify::{Classify, ClassifyFn, ErrorClassifier, GrpcClassifier, HttpClassifier};
pub use config::{BreakerConfig, Mode};
pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{BreakerHandle, BreakerSnapshot, BreakerState, Outcome, Permit, Transition};

#[cfg(test)]
mod tests;
