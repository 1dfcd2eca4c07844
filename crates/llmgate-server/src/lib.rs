//! The `llmgate` gateway: configuration, the layer stack and routes, the
//! admin API, Prometheus metrics, graceful shutdown and the `bench` command.
//!
//! [`serve::start`] runs the gateway in process (tests, examples, `bench`);
//! the `llmgate` binary wraps it with a CLI.
#![warn(missing_docs, rust_2018_idioms)]

pub mod admin;
pub mod bench;
pub mod config;
pub mod errors;
pub mod gateway;
pub mod metered;
pub mod retry;
pub mod serve;
pub mod telemetry;
pub mod tiers;

pub mod defaults {
    //! Defaults the binary, the docs and the deployment files share.

    /// Port of the OpenAI-compatible API (`llmgate serve`).
    pub const LISTEN_PORT: u16 = 8080;
    /// Port of the Prometheus `/metrics` endpoint.
    pub const METRICS_PORT: u16 = 9090;
    /// Port of the admin API.
    pub const ADMIN_PORT: u16 = 8081;
    /// Liveness probe path, served on the API port.
    pub const HEALTH_PATH: &str = "/health";
    /// Readiness probe path (at least one healthy replica), on the API port.
    pub const READY_PATH: &str = "/ready";
    /// Metrics path, on the metrics port.
    pub const METRICS_PATH: &str = "/metrics";
}
