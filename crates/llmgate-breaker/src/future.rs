//! [`ResponseFuture`] of [`CircuitBreaker`](crate::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::classify::Classify;
use crate::error::BreakerOpen;
use crate::state::Permit;

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker):
    /// the inner call, classified when it completes, or an immediate
    /// [`BreakerOpen`]. Dropping it before completion releases the call's
    /// permit without an outcome.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        permit: Option<Permit>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] fut: F },
        Refused { err: Option<BreakerOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(fut: F, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called { fut },
            permit: Some(permit),
            classifier,
        }
    }

    pub(crate) fn refused(err: BreakerOpen, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Refused { err: Some(err) },
            permit: None,
            classifier,
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
    E: Into<BoxError>,
{
    type Output = Result<C::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { fut } => {
                let result = ready!(fut.poll(cx));
                let permit = this
                    .permit
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(this.classifier.classify(result, permit).map_err(Into::into))
            }
            KindProj::Refused { err } => Poll::Ready(Err(err
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
