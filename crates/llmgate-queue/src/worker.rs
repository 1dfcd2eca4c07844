//! [`Worker`]: owns the inner service and releases queued requests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use llmgate_core::BoxError;
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::service::{Shared, Slot};
use crate::QueueError;

/// Releases per poll before the worker yields to other tasks.
const RELEASE_BUDGET: usize = 128;

/// The task that owns the inner service of a [`PriorityQueue`](crate::PriorityQueue).
///
/// Event driven, with no polling loop: it wakes when a request arrives (the
/// caller wakes it), when the inner service becomes ready (`poll_ready`
/// registered its waker), or when its single timer fires — set to the
/// earliest deadline or aging time of all queued requests. On each wake it
/// times out expired requests, applies aging, then releases requests while
/// the inner service is ready. An inner `poll_ready` error fails every
/// queued request (and every later one) with [`QueueError::InnerFailed`].
/// It finishes when every `PriorityQueue` clone is dropped and the queue
/// is empty; dropping it early fails the queued requests with
/// [`QueueError::Closed`].
pub struct Worker<S, Req>
where
    S: Service<Req>,
{
    /// Shared with the queue's callers, who use it directly while nothing
    /// waits (see `PriorityQueue::call`).
    inner: Arc<Mutex<S>>,
    shared: Arc<Shared<Req, S::Future>>,
    /// Created on first use, so a worker can be built outside a runtime.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
    finished: bool,
}

impl<S, Req> Worker<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    pub(crate) fn new(inner: Arc<Mutex<S>>, shared: Arc<Shared<Req, S::Future>>) -> Self {
        Worker {
            inner,
            shared,
            sleep: None,
            armed: None,
            finished: false,
        }
    }

    /// Sets the timer to `at`; true if it has already fired.
    fn arm(&mut self, at: Option<Instant>, cx: &mut Context<'_>) -> bool {
        let Some(at) = at else {
            return false;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if self.armed != Some(at) {
            sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.armed = None;
            return true;
        }
        false
    }
}

impl<S, Req> Unpin for Worker<S, Req> where S: Service<Req> {}

impl<S, Req> Future for Worker<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(());
        }
        let mut expired = Vec::new();
        for _ in 0..RELEASE_BUDGET {
            let now = Instant::now();
            let shared = &*this.shared;
            let (work, next, exit) = {
                let mut g = shared.locked.lock();
                g.queue.expire(now, &mut expired);
                let aged = g.queue.age(now);
                if !expired.is_empty() || aged > 0 {
                    shared.publish(&g);
                }
                if !g.worker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    g.worker = Some(cx.waker().clone());
                }
                let empty = g.queue.is_empty();
                let orphaned = shared.handles.load(Ordering::Acquire) == 0;
                (!empty, g.queue.next_timer(), empty && orphaned)
            };
            for e in expired.drain(..) {
                shared.recorder.timed_out(e.original);
                let waited = now.saturating_duration_since(e.enqueued);
                let _ = e.payload.tx.send(Err(QueueError::Timeout { waited }));
            }
            if exit {
                this.finished = true;
                shared.close(QueueError::Closed);
                return Poll::Ready(());
            }
            if !work {
                // The next arrival wakes us through the stored waker.
                return Poll::Pending;
            }
            let mut inner = this.inner.lock();
            match inner.poll_ready(cx) {
                Poll::Pending => {
                    drop(inner);
                    if this.arm(next, cx) {
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    drop(inner);
                    let source: BoxError = e.into();
                    this.finished = true;
                    this.shared.close(QueueError::InnerFailed {
                        source: Arc::from(source),
                    });
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {
                    let popped = {
                        let mut g = shared.locked.lock();
                        let p = g.queue.pop();
                        if p.is_some() {
                            shared.publish(&g);
                        }
                        p
                    };
                    // Emptied by a cancellation since we looked: the inner
                    // service stays ready for the next arrival.
                    let Some((_, e)) = popped else { continue };
                    let Slot { req, tx } = e.payload;
                    if tx.is_closed() {
                        // The caller dropped its future just now.
                        shared.recorder.cancelled(e.original);
                        continue;
                    }
                    let fut = inner.call(req);
                    drop(inner);
                    match tx.send(Ok(fut)) {
                        Ok(()) => shared
                            .recorder
                            .served(e.original, now.saturating_duration_since(e.enqueued)),
                        Err(_) => shared.recorder.cancelled(e.original),
                    }
                }
            }
        }
        // Budget spent: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S, Req> Drop for Worker<S, Req>
where
    S: Service<Req>,
{
    fn drop(&mut self) {
        if !self.finished {
            self.shared.close(QueueError::Closed);
        }
    }
}

impl<S, Req> fmt::Debug for Worker<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("armed", &self.armed)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
