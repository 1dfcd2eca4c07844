//! [`ResponseFuture`] of [`crate::RateLimit`].

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::error::RateLimited;
use crate::limiter::Grant;
use crate::response::OnResponse;

pin_project! {
    #[project = KindProj]
    enum Kind<F, H, K> {
        Allowed {
            #[pin]
            future: F,
            grant: Option<Grant<K>>,
            on_response: H,
        },
        Refused {
            error: Option<RateLimited>,
        },
    }
}

pin_project! {
    /// The answer of [`crate::RateLimit`]: the inner future with the grant
    /// that admitted it, or an immediate refusal.
    pub struct ResponseFuture<F, H, K> {
        #[pin]
        kind: Kind<F, H, K>,
    }
}

impl<F, H, K> ResponseFuture<F, H, K> {
    pub(crate) fn allowed(future: F, grant: Grant<K>, on_response: H) -> Self {
        ResponseFuture {
            kind: Kind::Allowed {
                future,
                grant: Some(grant),
                on_response,
            },
        }
    }

    pub(crate) fn refused(error: RateLimited) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, H, K> fmt::Debug for ResponseFuture<F, H, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Allowed { .. } => "allowed",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, H, K, Res, E> Future for ResponseFuture<F, H, K>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    H: OnResponse<Res, K>,
    K: Hash + Eq + Clone,
{
    type Output = Result<H::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Allowed {
                future,
                grant,
                on_response,
            } => {
                let result = ready!(future.poll(cx));
                let grant = grant.take().expect("polled after completion");
                Poll::Ready(match result {
                    Ok(res) => Ok(on_response.on_response(res, grant)),
                    Err(e) => {
                        on_response.on_error(grant);
                        Err(e.into())
                    }
                })
            }
            KindProj::Refused { error } => Poll::Ready(Err(Box::new(
                error.take().expect("polled after completion"),
            ))),
        }
    }
}
