//! Outcome classification: [`Classify`] and the provided classifiers.

use http::Response;

use crate::body::{BodyMode, BreakerBody};
use crate::state::Permit;

/// Decides whether a call counted as a failure, and hands the caller its
/// response.
///
/// `classify` gets the inner service's `Result<Response, Error>` and the
/// call's [`Permit`]. It records the outcome at once
/// ([`Permit::success`]/[`Permit::failure`]) or keeps the permit in the
/// returned response (a wrapped body) so the outcome is recorded when the
/// stream ends. The permit must not outlive the call's answer for long: a
/// half-open probe slot is held until the outcome is known or the permit is
/// dropped.
///
/// Provided: [`HttpClassifier`] (the default), [`GrpcClassifier`],
/// [`ErrorClassifier`] (any response type: `Err` = failure) and
/// [`ClassifyFn`] (a closure over `&Result`).
pub trait Classify<Res, E> {
    /// What the caller receives on success.
    type Output;

    /// Classifies one result, consuming the call's permit.
    fn classify(&self, result: Result<Res, E>, permit: Permit) -> Result<Self::Output, E>;
}

/// HTTP classification: errors (connection errors, timeouts, anything the
/// inner service returns as `Err`) and 5xx are failures; 1xx–4xx (429
/// included) are not. For a non-5xx response the outcome follows the body:
/// success at its end, failure on an error mid-stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl<B, E> Classify<Response<B>, E> for HttpClassifier
where
    B: http_body::Body,
{
    type Output = Response<BreakerBody<B>>;

    fn classify(&self, result: Result<Response<B>, E>, permit: Permit) -> Result<Self::Output, E> {
        classify_http(result, permit, |res, permit| {
            res.map(|b| BreakerBody::track(b, permit, BodyMode::Http))
        })
    }
}

/// Errors and 5xx answers are failures at once; any other answer is left
/// to `answer`, with the permit.
fn classify_http<B, E>(
    result: Result<Response<B>, E>,
    permit: Permit,
    answer: impl FnOnce(Response<B>, Permit) -> Response<BreakerBody<B>>,
) -> Result<Response<BreakerBody<B>>, E>
where
    B: http_body::Body,
{
    match result {
        Err(e) => {
            permit.failure();
            Err(e)
        }
        Ok(res) if res.status().is_server_error() => {
            permit.failure();
            Ok(res.map(BreakerBody::done))
        }
        Ok(res) => Ok(answer(res, permit)),
    }
}

/// gRPC classification: errors, HTTP 5xx and a `grpc-status` of UNKNOWN
/// (2), DEADLINE_EXCEEDED (4), INTERNAL (13), UNAVAILABLE (14) or
/// DATA_LOSS (15) are failures; other statuses (including
/// RESOURCE_EXHAUSTED, the gRPC 429) are not. The status is read from the
/// headers of a trailers-only answer, otherwise from the trailers; a stream
/// that ends without a `grpc-status` counts as a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

/// Whether a `grpc-status` code counts against the endpoint.
pub(crate) fn grpc_code_is_failure(code: &[u8]) -> bool {
    matches!(code, b"2" | b"4" | b"13" | b"14" | b"15")
}

impl<B, E> Classify<Response<B>, E> for GrpcClassifier
where
    B: http_body::Body,
{
    type Output = Response<BreakerBody<B>>;

    fn classify(&self, result: Result<Response<B>, E>, permit: Permit) -> Result<Self::Output, E> {
        classify_http(result, permit, |res, permit| {
            // A trailers-only answer carries its status in the headers.
            match res.headers().get("grpc-status") {
                Some(code) => {
                    if grpc_code_is_failure(code.as_bytes()) {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                    res.map(BreakerBody::done)
                }
                None => res.map(|b| BreakerBody::track(b, permit, BodyMode::Grpc)),
            }
        })
    }
}

/// For any response type: `Err` is a failure, `Ok` a success, decided when
/// the response future completes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<Res, E> Classify<Res, E> for ErrorClassifier {
    type Output = Res;

    fn classify(&self, result: Result<Res, E>, permit: Permit) -> Result<Res, E> {
        if result.is_ok() {
            permit.success()
        } else {
            permit.failure()
        }
        result
    }
}

/// A classifier from a closure `Fn(&Result<Res, E>) -> bool` that returns
/// `true` for a failure; decided when the response future completes.
///
/// ```
/// use llmgate_breaker::{CircuitBreakerLayer, ClassifyFn};
///
/// // Count only errors and empty answers as failures.
/// let layer = CircuitBreakerLayer::new()
///     .with_classifier(ClassifyFn::new(|r: &Result<String, std::io::Error>| {
///         r.as_ref().map_or(true, |s| s.is_empty())
///     }));
/// # let _ = layer;
/// ```
#[derive(Clone, Copy)]
pub struct ClassifyFn<F>(F);

impl<F> ClassifyFn<F> {
    /// Wraps `f`, which returns `true` when the result is a failure.
    pub fn new(f: F) -> Self {
        ClassifyFn(f)
    }
}

impl<F> std::fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassifyFn")
    }
}

impl<F, Res, E> Classify<Res, E> for ClassifyFn<F>
where
    F: Fn(&Result<Res, E>) -> bool,
{
    type Output = Res;

    fn classify(&self, result: Result<Res, E>, permit: Permit) -> Result<Res, E> {
        if (self.0)(&result) {
            permit.failure()
        } else {
            permit.success()
        }
        result
    }
}
