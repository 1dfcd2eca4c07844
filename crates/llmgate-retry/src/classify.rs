//! What is retryable, how a request is replayed: [`RetryClassify`] and the
//! HTTP default [`HttpRetry`].

use std::any::Any;
use std::error::Error;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use llmgate_breaker::BreakerOpen;
use llmgate_core::{find_in_chain, AvoidEndpoints, EndpointError, MetaError, ServedBy};

/// The verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// Final: hand the result to the caller.
    No,
    /// Worth another attempt, no sooner than `after` if the answer said so
    /// (`Retry-After`, a breaker's cool-down).
    Yes {
        /// The wait the answer asked for, if any.
        after: Option<Duration>,
    },
}

/// What [`RetryLayer`](crate::RetryLayer) must know about a request type
/// and its results.
pub trait RetryClassify<Req, Res, E> {
    /// Whether `result` is worth retrying. Decided at the response head: a
    /// response returned to the caller is never retried.
    fn classify(&self, result: &Result<Res, E>) -> Retryable;

    /// A copy of `req` for another attempt, or `None` if it cannot be
    /// replayed (then the request is sent once).
    fn replay(&self, req: &Req) -> Option<Req>;

    /// Adjusts the request before a retry (e.g. records the endpoint that
    /// failed). Does nothing by default.
    fn before_retry(&self, req: &mut Req, result: &Result<Res, E>) {
        let _ = (req, result);
    }
}

/// An error type whose source chain [`HttpRetry`] can walk.
///
/// Implemented for tower's `BoxError` (what every llmgate layer and most
/// tower middleware return) and a few concrete errors; map other error
/// types into `BoxError` (`MapErrLayer::new(Into::into)`).
pub trait AsErrorChain {
    /// The error as a `dyn Error`.
    fn as_error_chain(&self) -> &(dyn Error + 'static);
}

impl AsErrorChain for tower::BoxError {
    fn as_error_chain(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsErrorChain for Box<dyn Error + Send + 'static> {
    fn as_error_chain(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsErrorChain for Box<dyn Error + 'static> {
    fn as_error_chain(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

macro_rules! concrete_error_chain {
    ($($t:ty),*) => {$(
        impl AsErrorChain for $t {
            fn as_error_chain(&self) -> &(dyn Error + 'static) {
                self
            }
        }
    )*};
}

concrete_error_chain!(
    std::io::Error,
    std::convert::Infallible,
    BreakerOpen,
    EndpointError,
    MetaError
);

/// The HTTP default for `http::Request<B>` → `http::Response<RB>`.
///
/// * Retryable: every error (connection errors, per-attempt timeouts,
///   [`BreakerOpen`] anywhere in the chain, whose cool-down is taken as
///   the wait) except a [`MetaError`] (a bad request stays bad); responses
///   429, 502, 503 and 504, honouring their `Retry-After` (seconds or an
///   HTTP date).
/// * Never: any other status, 4xx included.
/// * Replay: the request's method, URI, version, headers and extensions are
///   copied, and its body is cloned when it is a buffered body
///   ([`llmgate_core::BufferedBody`] = `Full<Bytes>`, `Empty<Bytes>`,
///   `Bytes`, `String`, `Vec<u8>` or `()`); any other body type (a
///   streaming `Incoming`) cannot be replayed, so the request is sent once.
/// * Before a retry the endpoint that failed ([`EndpointError`] in the
///   error chain, or the [`ServedBy`] response extension) is added to the
///   request's [`AvoidEndpoints`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRetry;

impl<B, RB, E> RetryClassify<Request<B>, Response<RB>, E> for HttpRetry
where
    B: 'static,
    E: AsErrorChain,
{
    fn classify(&self, result: &Result<Response<RB>, E>) -> Retryable {
        match result {
            Ok(res) => match res.status() {
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Retryable::Yes {
                    after: retry_after(res.headers(), SystemTime::now()),
                },
                _ => Retryable::No,
            },
            Err(e) => {
                let e = e.as_error_chain();
                if find_in_chain::<MetaError>(e).is_some() {
                    return Retryable::No;
                }
                Retryable::Yes {
                    after: find_in_chain::<BreakerOpen>(e).map(BreakerOpen::retry_after),
                }
            }
        }
    }

    fn replay(&self, req: &Request<B>) -> Option<Request<B>> {
        let body = replay_body(req.body())?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }

    fn before_retry(&self, req: &mut Request<B>, result: &Result<Response<RB>, E>) {
        let failed = match result {
            Ok(res) => res.extensions().get::<ServedBy>().map(|s| s.0.clone()),
            Err(e) => EndpointError::endpoint_of(e.as_error_chain()),
        };
        if let Some(endpoint) = failed {
            req.extensions_mut()
                .get_or_insert_default::<AvoidEndpoints>()
                .push(endpoint);
        }
    }
}

/// Moves `value` into a `U` when `T` and `U` are the same type.
fn cast<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

/// Clones a body if its type is one of the buffered ones.
fn replay_body<B: 'static>(body: &B) -> Option<B> {
    let any = body as &dyn Any;
    if let Some(b) = any.downcast_ref::<Full<Bytes>>() {
        return cast(b.clone());
    }
    if let Some(b) = any.downcast_ref::<Empty<Bytes>>() {
        return cast(*b);
    }
    if let Some(b) = any.downcast_ref::<Bytes>() {
        return cast(b.clone());
    }
    if let Some(b) = any.downcast_ref::<String>() {
        return cast(b.clone());
    }
    if let Some(b) = any.downcast_ref::<Vec<u8>>() {
        return cast(b.clone());
    }
    if any.is::<()>() {
        return cast(());
    }
    None
}

/// Parses `Retry-After`: delta-seconds or an HTTP date (relative to `now`).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// For any request type that is `Clone`: every error is retryable, every
/// response final. A starting point for non-HTTP services.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryErrors;

impl<Req: Clone, Res, E> RetryClassify<Req, Res, E> for RetryErrors {
    fn classify(&self, result: &Result<Res, E>) -> Retryable {
        match result {
            Ok(_) => Retryable::No,
            Err(_) => Retryable::Yes { after: None },
        }
    }

    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        h.insert(header::RETRY_AFTER, date.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(42)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        h.insert(header::RETRY_AFTER, past.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn only_buffered_bodies_replay() {
        assert!(replay_body(&Full::new(Bytes::from_static(b"x"))).is_some());
        assert!(replay_body(&String::from("x")).is_some());
        assert!(replay_body(&()).is_some());
        struct Streaming;
        assert!(replay_body(&Streaming).is_none());
    }
}
