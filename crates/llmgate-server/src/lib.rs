//! The `llmgate` gateway: configuration, routes, admin API and metrics.
#![warn(missing_docs, rust_2018_idioms)]

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
