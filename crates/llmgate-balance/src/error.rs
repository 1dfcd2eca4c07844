//! Errors of the balancer.

use http::StatusCode;
use llmgate_core::ErrorResponse;

/// Why no endpoint could take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoEndpointReason {
    /// The fleet is empty.
    NoEndpoints,
    /// No endpoint serves the requested model.
    ModelNotServed(String),
    /// Every endpoint serving the model failed its health checks.
    NoHealthy,
}

/// No endpoint can serve the request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", match &self.reason {
    NoEndpointReason::NoEndpoints => "no replica is configured".to_string(),
    NoEndpointReason::ModelNotServed(m) => format!("no replica serves model {m:?}"),
    NoEndpointReason::NoHealthy => "no healthy replica: every replica serving this model fails its health checks".to_string(),
})]
pub struct NoEndpoint {
    /// Why.
    pub reason: NoEndpointReason,
}

impl ErrorResponse for NoEndpoint {
    fn status(&self) -> StatusCode {
        match self.reason {
            NoEndpointReason::NoEndpoints | NoEndpointReason::NoHealthy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            NoEndpointReason::ModelNotServed(_) => StatusCode::NOT_FOUND,
        }
    }
    fn code(&self) -> &'static str {
        match self.reason {
            NoEndpointReason::NoEndpoints => "no_replica",
            NoEndpointReason::ModelNotServed(_) => "model_not_found",
            NoEndpointReason::NoHealthy => "no_healthy_replica",
        }
    }
}

/// An attempt at one endpoint took too long.
#[derive(Debug, Clone, thiserror::Error)]
#[error("replica did not {what} within {timeout:?}")]
pub struct AttemptTimeout {
    /// What it failed to do ("send response headers", "send the first chunk").
    pub what: &'static str,
    /// The limit.
    pub timeout: std::time::Duration,
}

impl ErrorResponse for AttemptTimeout {
    fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
    fn code(&self) -> &'static str {
        "upstream_timeout"
    }
}

/// A transport failure talking to a replica (connect refused, reset).
#[derive(Debug, thiserror::Error)]
#[error("upstream request failed: {0}")]
pub struct UpstreamError(#[source] pub tower::BoxError);

impl ErrorResponse for UpstreamError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn code(&self) -> &'static str {
        "upstream_error"
    }
}
