//! [`ResponseFuture`]: waits in the queue, then for the inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use llmgate_core::BoxError;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use crate::state::Id;
use crate::QueueError;

/// What a queued caller is eventually sent: the inner service's response
/// future, or the reason it left the queue.
pub(crate) type Reply<F> = Result<F, QueueError>;

/// Removes a queued entry when its caller goes away.
pub(crate) trait Cancel: Send + Sync {
    fn cancel(&self, id: Id);
}

/// Held by a waiting [`ResponseFuture`]; its drop frees the queue slot.
pub(crate) struct CancelGuard {
    queue: Arc<dyn Cancel>,
    id: Id,
    armed: bool,
}

impl CancelGuard {
    pub(crate) fn new(queue: Arc<dyn Cancel>, id: Id) -> Self {
        CancelGuard {
            queue,
            id,
            armed: true,
        }
    }

    /// The entry already left the queue: dropping need not take the lock.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.queue.cancel(self.id);
        }
    }
}

impl std::fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelGuard").field("id", &self.id).finish()
    }
}

pin_project! {
    /// The response future of [`PriorityQueue`](crate::PriorityQueue).
    ///
    /// While the request waits, the future holds the receiving end of its
    /// reply channel and a guard: dropping the future removes the request
    /// from the queue under the queue lock, so its slot is free at once and
    /// the worker never sees it again. Once released, the future drives the
    /// inner service's response future, which the worker handed over
    /// without awaiting it.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Queued {
            rx: oneshot::Receiver<Reply<F>>,
            guard: Option<CancelGuard>,
        },
        Called {
            #[pin]
            fut: F,
        },
        Failed {
            err: Option<QueueError>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn queued(rx: oneshot::Receiver<Reply<F>>, guard: CancelGuard) -> Self {
        ResponseFuture {
            state: State::Queued {
                rx,
                guard: Some(guard),
            },
        }
    }

    /// Sent to the inner service without queueing.
    pub(crate) fn called(fut: F) -> Self {
        ResponseFuture {
            state: State::Called { fut },
        }
    }

    pub(crate) fn failed(err: QueueError) -> Self {
        ResponseFuture {
            state: State::Failed { err: Some(err) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Queued { rx, guard } => {
                    let reply = ready!(Pin::new(rx).poll(cx));
                    // The entry has left the queue: nothing to cancel.
                    if let Some(g) = guard.take() {
                        g.disarm();
                    }
                    match reply {
                        Ok(Ok(fut)) => this.state.set(State::Called { fut }),
                        Ok(Err(e)) => return Poll::Ready(Err(e.into())),
                        Err(_) => return Poll::Ready(Err(QueueError::Closed.into())),
                    }
                }
                StateProj::Called { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Failed { err } => {
                    let e = err.take().unwrap_or(QueueError::Closed);
                    return Poll::Ready(Err(e.into()));
                }
            }
        }
    }
}
