//! [`BreakerBody`]: a response body that reports the call's outcome when
//! the stream ends.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::classify::grpc_code_is_failure;
use crate::state::Permit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyMode {
    /// End of stream = success; error = failure.
    Http,
    /// The trailers' `grpc-status` decides; no status = failure.
    Grpc,
}

pin_project! {
    /// A response body that holds the call's [`Permit`] until the stream
    /// ends: success at the end of stream, failure on an error frame. If it
    /// is dropped early (the client went away) the permit is released
    /// without an outcome.
    #[derive(Debug)]
    pub struct BreakerBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        mode: BodyMode,
    }
}

impl<B: Body> BreakerBody<B> {
    /// A body whose outcome was already recorded.
    pub(crate) fn done(inner: B) -> Self {
        BreakerBody {
            inner,
            permit: None,
            mode: BodyMode::Http,
        }
    }

    /// A body that records the outcome at its end. An already finished body
    /// records success at once.
    pub(crate) fn track(inner: B, permit: Permit, mode: BodyMode) -> Self {
        let permit = if mode == BodyMode::Http && inner.is_end_stream() {
            permit.success();
            None
        } else {
            Some(permit)
        };
        BreakerBody {
            inner,
            permit,
            mode,
        }
    }
}

impl<B> BreakerBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body; the outcome, if still pending, is dropped.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for BreakerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if *this.mode == BodyMode::Http && this.inner.is_end_stream() {
                    // Servers stop polling a body that says it has ended.
                    if let Some(p) = this.permit.take() {
                        p.success();
                    }
                } else if *this.mode == BodyMode::Grpc {
                    if let Some(t) = f.trailers_ref() {
                        if let Some(p) = this.permit.take() {
                            match t.get("grpc-status") {
                                Some(code) if !grpc_code_is_failure(code.as_bytes()) => p.success(),
                                _ => p.failure(),
                            }
                        }
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(p) = this.permit.take() {
                    p.failure();
                }
            }
            None => {
                if let Some(p) = this.permit.take() {
                    match this.mode {
                        BodyMode::Http => p.success(),
                        BodyMode::Grpc => p.failure(),
                    }
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
