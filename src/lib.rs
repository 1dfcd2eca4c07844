//! llmgate: GPU-aware load balancing for LLM inference, as `tower` layers.
//!
//! This facade re-exports the layer crates behind features (all on by
//! default), so `llmgate = "0.1"` gives the whole toolkit and
//! `default-features = false, features = ["breaker"]` just the circuit
//! breaker. Each crate can also be depended on alone.
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`core`] | `llmgate-core` | `RequestMeta`, `Priority`, `ClientKey`, `MetaLayer`, error mapping |
//! | `queue` | `llmgate-queue` | `PriorityQueueLayer` |
//! | `ratelimit` | `llmgate-ratelimit` | `RateLimitLayer` |
//! | `breaker` | `llmgate-breaker` | `CircuitBreakerLayer` |
//! | `retry` | `llmgate-retry` | `RetryLayer` |
//! | `balance` | `llmgate-balance` | `GpuAwareBalance`, `Fleet`, strategies |
//! | `telemetry` | `llmgate-telemetry` | NVML probe, node agent, Prometheus scraper |
//!
//! # Example
//!
//! ```
//! use llmgate::core::{MetaLayer, Priority};
//! use llmgate::queue::PriorityQueueLayer;
//! use tower::ServiceBuilder;
//!
//! let _stack = ServiceBuilder::new()
//!     .layer(MetaLayer::new())
//!     .layer(PriorityQueueLayer::builder().capacity(100).build::<http::Request<llmgate::core::BufferedBody>>());
//! assert!(Priority::Critical > Priority::Batch);
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use llmgate_core as core;

#[cfg(feature = "balance")]
pub use llmgate_balance as balance;
#[cfg(feature = "breaker")]
pub use llmgate_breaker as breaker;
#[cfg(feature = "queue")]
pub use llmgate_queue as queue;
#[cfg(feature = "ratelimit")]
pub use llmgate_ratelimit as ratelimit;
#[cfg(feature = "retry")]
pub use llmgate_retry as retry;
#[cfg(feature = "telemetry")]
pub use llmgate_telemetry as telemetry;

/// The README's code, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
