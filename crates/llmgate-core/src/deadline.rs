//! [`DeadlineLayer`]: fail a request whose [`RequestMeta`] deadline passes
//! before its answer's head arrives, wherever it is waiting (queue, retry
//! backoff, a balancer with nothing ready).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, StatusCode};
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Layer, Service};

use crate::{ErrorResponse, RequestMeta};

/// The request's deadline passed before an answer started.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request timed out after {waited:?} without an answer (x-request-timeout or the default request timeout)")]
pub struct RequestTimeout {
    /// How long the request had been waiting.
    pub waited: Duration,
}

impl ErrorResponse for RequestTimeout {
    fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
    fn code(&self) -> &'static str {
        "request_timeout"
    }
}

/// Enforces `RequestMeta::deadline` up to the answer's head (a streamed body
/// is not cut). Requests without a `RequestMeta` pass untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (arrival, sleep) = match req.extensions().get::<RequestMeta>() {
            Some(m) => (Some(m.arrival), Some(tokio::time::sleep_until(m.deadline))),
            None => (None, None),
        };
        DeadlineFuture {
            inner: self.inner.call(req),
            sleep,
            arrival,
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Deadline`].
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Inline rather than boxed: one allocation less per request.
        #[pin]
        sleep: Option<Sleep>,
        arrival: Option<Instant>,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(r.map_err(Into::into));
        }
        if let (Some(sleep), Some(arrival)) = (this.sleep.as_pin_mut(), *this.arrival) {
            if sleep.poll(cx).is_ready() {
                let waited = Instant::now().saturating_duration_since(arrival);
                return Poll::Ready(Err(RequestTimeout { waited }.into()));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointKind;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn times_out_at_the_meta_deadline_and_passes_others() {
        let slow = service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, BoxError>("done")
        });
        let svc = DeadlineLayer.layer(slow);
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(RequestMeta::new(EndpointKind::Chat).with_timeout(Duration::from_secs(2)));
        let err = svc.clone().oneshot(req).await.unwrap_err();
        let t = err
            .downcast_ref::<RequestTimeout>()
            .expect("RequestTimeout");
        assert_eq!(t.waited, Duration::from_secs(2));
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);

        let mut req = Request::new(());
        req.extensions_mut()
            .insert(RequestMeta::new(EndpointKind::Chat).with_timeout(Duration::from_secs(20)));
        assert_eq!(svc.clone().oneshot(req).await.unwrap(), "done");
        // No RequestMeta: no deadline.
        assert_eq!(svc.oneshot(Request::new(())).await.unwrap(), "done");
    }
}
