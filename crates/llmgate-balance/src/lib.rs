//! `GpuAwareBalance`: balancing LLM requests over replicas by GPU and engine load.
#![warn(missing_docs, rust_2018_idioms)]

mod balance;
mod endpoint;
mod error;
mod load;
pub mod strategy;

pub use balance::{BalanceConfig, EndpointReport, GpuAwareBalance, HasEndpointState, RouteInfo};
pub use endpoint::{Admission, EndpointSpec, EndpointState, Health};
pub use error::{AttemptTimeout, NoEndpoint, NoEndpointReason, UpstreamError};
pub use load::{gpu_score, EndpointLoad, EngineView, GpuSummary, LoadView};
