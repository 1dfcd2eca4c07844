//! `GpuAwareBalance`: balancing LLM requests over replicas by GPU and engine
//! load, with the routing strategies users choose between.
//!
//! # Shape
//!
//! * [`GpuAwareBalance`] is a `tower::Service` over any
//!   `tower::discover::Discover` whose endpoints report
//!   `tower::load::Load<Metric = EndpointLoad>` and expose their
//!   [`EndpointState`]. Endpoints that are not ready (at their cap, breaker
//!   open, unhealthy, draining, ejected) wait in a pending set and are
//!   never picked, and an endpoint never reports an error for a transient
//!   reason (a failed one is dropped for good). Unlike tower's `ReadyCache`,
//!   a called endpoint stays in the ready set and is polled again just
//!   before its next call, which spares two allocations and a round of
//!   wake-ups per request.
//! * It departs from tower's `p2c::Balance` in three ways, each for a reason:
//!   the choice is made in `call`, because model, prefix and session decide
//!   it and those are in the request; the choice is a pluggable [`strategy`];
//!   and the pool is shared by cheap clones (behind one mutex, with a waker
//!   that fans out to every waiting task), so it can sit below a retry layer
//!   and a priority queue at once. `call` takes the chosen endpoint's slot
//!   at once, so a queue above releases one request per free slot.
//! * [`Fleet`] is the ready-made pool of HTTP replicas: one [`Upstream`]
//!   client (an HTTP/1.1 keep-alive pool whose connections are driven by
//!   the request's own task, see [`upstream`]; hyper-util's client for h2c
//!   replicas and telemetry scrapes), a per-endpoint stack of [`Endpoint`]
//!   (admission gate, load
//!   tracked to the end of the stream) → circuit breaker in not-ready mode →
//!   [`Attempt`] (per-attempt timeouts that answer only once the first
//!   chunk is in, so a replica that hangs is retried elsewhere), plus active
//!   health checks, outlier ejection, telemetry scraping (engine
//!   `/metrics`, GPU `/gpu`), and run-time changes through [`FleetHandle`]
//!   (admin API, watched file).
//!
//! # Load
//!
//! [`LoadView::cost`] is the [`EndpointLoad`]: the endpoint's predicted
//! time to first token, `pace × work`, inflated by KV-cache pressure and
//! recent errors, divided by weight. `work` ([`work_tokens`]) is the prefill
//! a new request would wait for, in tokens: the prompts this balancer has
//! sent there that have not had their first byte yet, plus a step's fixed
//! cost ([`STEP_TOKENS`], growing with the requests in flight, the decodes
//! of every step); `pace` is the endpoint's seconds per work token, learned
//! from each streamed first byte (its time over the work it found). Both
//! move with every request sent and answered: a slow GPU that looks idle
//! stops looking so after a few prompts, before any answer, and one three
//! times slower at prefill is used only once the fast ones have three times
//! as much queued. p2c compares two endpoints by [`LoadView::cost_for`] the
//! request's prompt, whose own prefill is part of the work.
//!
//! # Strategies
//!
//! | name | picks |
//! |---|---|
//! | `round_robin` | each endpoint in turn |
//! | `weighted_round_robin` | smooth WRR by weight |
//! | `least_connections` | fewest in flight |
//! | `least_loaded` | lowest `0.7 × in-flight + 0.3 × engine queue` |
//! | `gpu_aware` | under GPU thresholds, lowest GPU score; else least loaded |
//! | `adaptive` | weighted composite of load, latency, errors, GPU |
//! | `p2c` (default) | of two random endpoints, the one with the earlier predicted first token for the prompt |
//! | `cache_affinity` | the longest cached prefix, unless overloaded |
//! | `sticky` | consistent hashing of the session with bounded load |
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use llmgate_balance::{EndpointSpec, Fleet, FleetConfig, StrategyKind};
//! use llmgate_core::{EndpointKind, RequestMeta};
//! use llmgate_sim::{SimConfig, SimFleet};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let sim = SimFleet::spawn(vec![SimConfig::default().with_speedup(100.0); 2])?;
//! let specs = sim
//!     .replicas()
//!     .iter()
//!     .map(|r| EndpointSpec::new(r.id(), r.url()).models(["llama-3-8b"]))
//!     .collect();
//! let mut config = FleetConfig::default();
//! config.balance.strategy = StrategyKind::LeastConnections;
//! let fleet = Fleet::new(config, specs)?;
//!
//! let mut req = Request::post("/v1/completions")
//!     .body(Full::new(Bytes::from(r#"{"model":"llama-3-8b","prompt":"Hi","max_tokens":4}"#)))?;
//! req.extensions_mut()
//!     .insert(RequestMeta::new(EndpointKind::Completions).with_model("llama-3-8b"));
//! let res = fleet.service().oneshot(req).await?;
//! assert!(res.status().is_success());
//! let body = res.into_body().collect().await?.to_bytes();
//! assert!(String::from_utf8_lossy(&body).contains("usage"));
//! # sim.shutdown();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, rust_2018_idioms)]

mod attempt;
mod balance;
mod endpoint;
mod error;
mod fleet;
mod keyhash;
mod load;
mod ready;
pub mod strategy;
mod tracked;
pub mod upstream;

pub use attempt::{http_client, Attempt, AttemptTimeouts, BoxBody, HttpClient};
pub use balance::{BalanceConfig, EndpointReport, GpuAwareBalance, HasEndpointState, RouteInfo};
pub use endpoint::{Admission, EndpointSpec, EndpointState, Health};
pub use error::{AttemptTimeout, NoEndpoint, NoEndpointReason, UpstreamError};
pub use fleet::{
    parse_replicas_file, Fleet, FleetBalance, FleetConfig, FleetDiscover, FleetError, FleetHandle,
    HealthConfig,
};
pub use llmgate_breaker::BreakerConfig;
pub use load::{
    gpu_score, work_tokens, EndpointLoad, EngineView, GpuSummary, LoadView, DEFAULT_TTFT_S,
    QUEUE_DOUBLING, STEP_TOKENS,
};
pub use strategy::{GpuThresholds, StrategyKind};
pub use tracked::{Endpoint, InnerService};
pub use upstream::{Target, Upstream, UpstreamBody, UpstreamConfig};
