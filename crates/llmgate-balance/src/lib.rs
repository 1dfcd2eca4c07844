//! `GpuAwareBalance`: balancing LLM requests over replicas by GPU and engine load.
#![warn(missing_docs, rust_2018_idioms)]

mod attempt;
mod balance;
mod endpoint;
mod error;
mod fleet;
mod load;
pub mod strategy;
mod tracked;

pub use attempt::{http_client, Attempt, AttemptTimeouts, BoxBody, HttpClient};
pub use balance::{BalanceConfig, EndpointReport, GpuAwareBalance, HasEndpointState, RouteInfo};
pub use endpoint::{Admission, EndpointSpec, EndpointState, Health};
pub use error::{AttemptTimeout, NoEndpoint, NoEndpointReason, UpstreamError};
pub use fleet::{
    parse_replicas_file, Fleet, FleetBalance, FleetConfig, FleetDiscover, FleetError, FleetHandle,
    HealthConfig,
};
pub use llmgate_breaker::BreakerConfig;
pub use load::{gpu_score, EndpointLoad, EngineView, GpuSummary, LoadView};
pub use strategy::{GpuThresholds, StrategyKind};
pub use tracked::{Endpoint, InnerService};
