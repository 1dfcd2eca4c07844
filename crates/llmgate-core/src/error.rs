//! The shared error-to-response mapping.
//!
//! Every llmgate error that can reach a client implements [`ErrorResponse`]:
//! its HTTP status, OpenAI error `type` and `code`, and extra headers such as
//! `Retry-After`. [`error_response`] renders any of them as the OpenAI-shaped
//! body `{"error": {"message", "type", "param", "code"}}`, so the server maps
//! errors to answers in one place.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::priority::ParsePriorityError;

/// An error that knows how to answer an HTTP client.
pub trait ErrorResponse: std::error::Error {
    /// The HTTP status of the answer.
    fn status(&self) -> StatusCode;

    /// OpenAI's error `type` (`invalid_request_error`, `rate_limit_error`,
    /// `server_error`, …). Defaults from the status class.
    fn error_type(&self) -> &'static str {
        default_error_type(self.status())
    }

    /// A short machine-readable code, e.g. `queue_full`.
    fn code(&self) -> &'static str;

    /// Extra headers of the answer (`Retry-After`, `x-ratelimit-*`).
    fn headers(&self) -> HeaderMap {
        HeaderMap::new()
    }
}

/// OpenAI's error type for a status.
pub fn default_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// An OpenAI-shaped error body.
pub fn error_body(message: &str, error_type: &str, code: &str) -> Bytes {
    let v = serde_json::json!({
        "error": { "message": message, "type": error_type, "param": null, "code": code }
    });
    Bytes::from(v.to_string())
}

/// Renders `err` as a complete HTTP answer.
pub fn error_response<E: ErrorResponse + ?Sized>(err: &E) -> Response<Full<Bytes>> {
    let body = error_body(&err.to_string(), err.error_type(), err.code());
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = err.status();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in err.headers().iter() {
        res.headers_mut().append(k.clone(), v.clone());
    }
    res
}

/// Why [`MetaLayer`](crate::MetaLayer) refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The JSON body is malformed or has fields of the wrong shape.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// The `x-priority` header is not an accepted spelling.
    #[error(transparent)]
    BadPriority(#[from] ParsePriorityError),
    /// The `x-request-timeout` header is not a positive number of seconds.
    #[error("invalid x-request-timeout {0:?}: expected a positive number of seconds")]
    BadTimeout(String),
}

impl ErrorResponse for MetaError {
    fn status(&self) -> StatusCode {
        match self {
            MetaError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            MetaError::BodyTooLarge { .. } => "body_too_large",
            MetaError::BodyRead(_) => "body_read_error",
            MetaError::InvalidJson(_) => "invalid_json",
            MetaError::BadPriority(_) => "invalid_priority",
            MetaError::BadTimeout(_) => "invalid_request_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_openai_shape() {
        let err = MetaError::BodyTooLarge { limit: 10 };
        let res = error_response(&err);
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "body_too_large");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("10 bytes"));
    }
}
