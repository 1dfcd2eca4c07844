//! [`ResponseFuture`] of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::retry::Policy;
use tower::Service;

use crate::policy::RetryPolicy;

pin_project! {
    /// The response future of [`Retry`](crate::Retry): attempts, backoff
    /// waits and retries until an answer is final. It resolves at the
    /// response head; the body is never retried.
    pub struct ResponseFuture<S, C, Req>
    where
        S: Service<Req>,
        RetryPolicy<C>: Policy<Req, S::Response, S::Error>,
    {
        #[pin]
        inner: tower::retry::future::ResponseFuture<RetryPolicy<C>, S, Req>,
    }
}

impl<S, C, Req> ResponseFuture<S, C, Req>
where
    S: Service<Req>,
    RetryPolicy<C>: Policy<Req, S::Response, S::Error>,
{
    pub(crate) fn new(inner: tower::retry::future::ResponseFuture<RetryPolicy<C>, S, Req>) -> Self {
        ResponseFuture { inner }
    }
}

impl<S, C, Req> fmt::Debug for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
    RetryPolicy<C>: Policy<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, C, Req> Future for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
    RetryPolicy<C>: Policy<Req, S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
