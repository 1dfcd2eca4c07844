//! [`Retry`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::retry::Policy;
use tower::Service;

use crate::future::ResponseFuture;
use crate::policy::{RetryPolicy, Shared};

/// A service whose failed attempts are retried: tower's
/// `retry::Retry` with a [`RetryPolicy`], plus the attempts metric.
///
/// The inner service must be `Clone` (wrap it in `tower::buffer` if not).
/// The first attempt goes to the service made ready by `poll_ready`; each
/// retry goes to a clone of it, made ready first. Errors are the inner
/// service's: retrying adds no failure mode of its own.
#[derive(Debug, Clone)]
pub struct Retry<S, C> {
    inner: tower::retry::Retry<RetryPolicy<C>, S>,
    shared: Arc<Shared>,
}

impl<S, C> Retry<S, C> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Retry {
            shared: policy.shared().clone(),
            inner: tower::retry::Retry::new(policy, inner),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    S: Service<Req> + Clone,
    RetryPolicy<C>: Policy<Req, S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.count_attempt();
        ResponseFuture::new(self.inner.call(req))
    }
}
