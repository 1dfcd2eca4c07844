//! The one place where errors become HTTP answers.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use llmgate_core::{error_body, error_response, find_in_chain, ErrorResponse, MetaError};
use tower::BoxError;

fn render<E: ErrorResponse>(e: &E) -> Response {
    error_response(e).map(Body::new)
}

/// Maps any error of the gateway stack to an OpenAI-shaped answer: rate
/// limited → 429, queue full or shed → 503, queue deadline → 504, breaker
/// open or no replica → 503, unknown model → 404, upstream timeout → 504,
/// upstream failure → 502.
pub fn map_error(err: &BoxError) -> Response {
    let e: &(dyn std::error::Error + 'static) = err.as_ref();
    if let Some(x) = find_in_chain::<MetaError>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_core::RequestTimeout>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_ratelimit::RateLimited>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_queue::QueueError>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_breaker::BreakerOpen>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_balance::NoEndpoint>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_balance::AttemptTimeout>(e) {
        return render(x);
    }
    if let Some(x) = find_in_chain::<llmgate_balance::UpstreamError>(e) {
        return render(x);
    }
    let mut res = Response::new(Body::from(error_body(
        &format!("upstream failure: {err}"),
        "server_error",
        "upstream_error",
    )));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}
