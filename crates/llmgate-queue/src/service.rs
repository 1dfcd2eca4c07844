//! [`PriorityQueue`]: the always-ready service that enqueues in `call`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use llmgate_core::{BoxError, BufferedBody, Priority};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::Service;

use crate::future::{Cancel, CancelGuard, Reply};
use crate::handle::{QueueHandle, Recorder};
use crate::layer::Config;
use crate::state::{Id, Refused, State};
use crate::{PriorityOf, PriorityQueueLayer, QueueError, ResponseFuture, Worker};

/// A far-away instant standing in for "no deadline".
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What the queue holds for one waiting caller.
pub(crate) struct Slot<Req, F> {
    pub(crate) req: Req,
    pub(crate) tx: oneshot::Sender<Reply<F>>,
}

/// State behind the lock.
pub(crate) struct Locked<Req, F> {
    pub(crate) queue: State<Slot<Req, F>>,
    /// The worker's waker while it waits for work.
    pub(crate) worker: Option<Waker>,
    /// Set once the queue accepts nothing more (inner failure, worker gone).
    pub(crate) closed: Option<QueueError>,
}

/// Shared by the service clones, their futures and the worker.
pub(crate) struct Shared<Req, F> {
    pub(crate) locked: Mutex<Locked<Req, F>>,
    pub(crate) recorder: Recorder,
    pub(crate) config: Arc<Config>,
    /// Live `PriorityQueue` clones; the worker exits at zero once drained.
    /// Outside the lock because the stack is cloned for every request: the
    /// last drop takes the lock to wake the worker, and the worker reads
    /// the count under the lock, so it either sees zero or is woken after.
    pub(crate) handles: AtomicUsize,
    /// Whether anything is queued or the queue is closed, as of the last
    /// change under the lock: the direct path of every request reads it
    /// instead of taking the lock, which the I/O threads would otherwise
    /// pass between them on every request.
    pub(crate) waiting: AtomicBool,
}

impl<Req, F> Shared<Req, F> {
    /// Publishes the depth gauges and the `waiting` flag; call with the
    /// lock held, after every change to the queue or to `closed`.
    pub(crate) fn publish(&self, g: &Locked<Req, F>) {
        self.recorder.depths(|l| g.queue.level_len(l));
        self.waiting
            .store(!g.queue.is_empty() || g.closed.is_some(), Ordering::Release);
    }

    /// Fails every queued request with `err` and refuses later ones.
    pub(crate) fn close(&self, err: QueueError) {
        let drained = {
            let mut g = self.locked.lock();
            g.closed.get_or_insert_with(|| err.clone());
            let drained = g.queue.drain();
            self.publish(&g);
            drained
        };
        for e in drained {
            self.recorder.failed(e.original);
            let _ = e.payload.tx.send(Err(err.clone()));
        }
    }
}

impl<Req: Send, F: Send> Cancel for Shared<Req, F> {
    fn cancel(&self, id: Id) {
        let removed = {
            let mut g = self.locked.lock();
            let e = g.queue.remove(id);
            if e.is_some() {
                self.publish(&g);
            }
            e
        };
        if let Some(e) = removed {
            self.recorder.cancelled(e.original);
        }
    }
}

/// A worker not spawned yet (the queue was built outside a runtime).
type LazyWorker<S, Req> = Arc<Mutex<Option<Worker<S, Req>>>>;

/// A service that queues requests by priority in front of `S`.
///
/// Always ready: `call` enqueues (or refuses at once with
/// [`QueueError::Full`], or answers [`QueueError::Timeout`] for a request
/// already past its deadline). A worker task drives `S`'s `poll_ready` and
/// releases queued requests in priority order, fair between clients inside
/// a level; it hands the inner response future to the caller's
/// [`ResponseFuture`] and never waits on a response. While the queue is
/// empty and `S` is ready, `call` calls `S` itself. Clones share one queue
/// and one worker.
///
/// The worker is spawned on the current tokio runtime when the queue is
/// built, or on the first `call` when it was built outside one. Use
/// [`pair`](Self::pair) to run it yourself.
pub struct PriorityQueue<S, Req = http::Request<BufferedBody>>
where
    S: Service<Req>,
{
    shared: Arc<Shared<Req, S::Future>>,
    inner: Arc<Mutex<S>>,
    lazy: Option<LazyWorker<S, Req>>,
    handle: QueueHandle,
}

impl<S, Req> PriorityQueue<S, Req>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: PriorityOf + Send + 'static,
{
    /// A queue of `capacity` in front of `inner`, other settings at their
    /// defaults (see [`PriorityQueueLayer::builder`]).
    pub fn new(inner: S, capacity: usize) -> Self {
        let layer: PriorityQueueLayer<Req> = PriorityQueueLayer::new(capacity);
        Self::with_config(inner, layer.config(), &layer.handle())
    }

    /// The queue and its worker future, configured by `layer`; spawn the
    /// worker on the executor of your choice. Dropping the worker fails
    /// every queued request with [`QueueError::Closed`].
    pub fn pair(inner: S, layer: &PriorityQueueLayer<Req>) -> (Self, Worker<S, Req>) {
        Self::build(inner, layer.config(), &layer.handle())
    }

    pub(crate) fn with_config(inner: S, config: Arc<Config>, handle: &QueueHandle) -> Self {
        let (mut svc, worker) = Self::build(inner, config, handle);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(worker);
            }
            Err(_) => svc.lazy = Some(Arc::new(Mutex::new(Some(worker)))),
        }
        svc
    }

    fn build(inner: S, config: Arc<Config>, handle: &QueueHandle) -> (Self, Worker<S, Req>) {
        let shared = Arc::new(Shared {
            locked: Mutex::new(Locked {
                queue: State::new(config.limits.clone()),
                worker: None,
                closed: None,
            }),
            recorder: Recorder::new(handle),
            config,
            handles: AtomicUsize::new(1),
            waiting: AtomicBool::new(false),
        });
        let inner = Arc::new(Mutex::new(inner));
        let worker = Worker::new(inner.clone(), shared.clone());
        let svc = PriorityQueue {
            shared,
            inner,
            lazy: None,
            handle: handle.clone(),
        };
        (svc, worker)
    }

    /// Whether a new request must queue (or be refused) rather than take
    /// the direct path.
    fn queued_or_closed(&self) -> bool {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// With nothing queued and the inner service free and ready, calls it
    /// from the caller's task: no hand-off to the worker and back, which
    /// is most of what a queue costs while it is empty. Order holds: the
    /// request would have been released first anyway. Otherwise gives the
    /// request back to be queued (a `Pending` here was seen with a no-op
    /// waker, so the queued path wakes the worker, whose own `poll_ready`
    /// registers for readiness).
    fn try_direct(&self, req: Req, priority: Priority) -> Result<ResponseFuture<S::Future>, Req> {
        // A request that would queue anyway does not wait for the lock.
        if self.queued_or_closed() {
            return Err(req);
        }
        // Waiting for the lock is shorter than a trip through the worker:
        // whoever holds it only polls and calls the inner service. The
        // queue is checked again once it is held, as the holder may have
        // queued meanwhile.
        let mut inner = self.inner.lock();
        if self.queued_or_closed() {
            return Err(req);
        }
        let mut cx = Context::from_waker(Waker::noop());
        match inner.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                let fut = inner.call(req);
                drop(inner);
                let rec = &self.shared.recorder;
                rec.accepted();
                rec.served(priority, Duration::ZERO);
                Ok(ResponseFuture::called(fut))
            }
            Poll::Pending => Err(req),
            Poll::Ready(Err(e)) => {
                drop(inner);
                let source: BoxError = e.into();
                self.shared.close(QueueError::InnerFailed {
                    source: Arc::from(source),
                });
                Err(req)
            }
        }
    }
}

impl<S, Req> PriorityQueue<S, Req>
where
    S: Service<Req>,
{
    /// Depth and counters of this queue (shared with the layer's handle).
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }
}

impl<S, Req> Service<Req> for PriorityQueue<S, Req>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: PriorityOf + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(lazy) = &self.lazy {
            if let Some(worker) = lazy.lock().take() {
                tokio::spawn(worker);
            }
        }
        let rec = &self.shared.recorder;
        let config = &self.shared.config;
        let (priority, own_deadline) = req.priority_and_deadline();
        let now = Instant::now();
        let limit = now.checked_add(config.timeout).unwrap_or_else(|| now + FAR);
        let deadline = own_deadline.map_or(limit, |d| d.min(limit));
        if deadline <= now {
            rec.accepted();
            rec.timed_out(priority);
            return ResponseFuture::failed(QueueError::Timeout {
                waited: Duration::ZERO,
            });
        }
        let req = match self.try_direct(req, priority) {
            Ok(fut) => return fut,
            Err(req) => req,
        };
        let client = req.client_key().unwrap_or_default();
        let cost = req.cost();
        let (tx, rx) = oneshot::channel();

        let mut g = self.shared.locked.lock();
        if let Some(err) = &g.closed {
            let err = err.clone();
            drop(g);
            rec.accepted();
            rec.failed(priority);
            return ResponseFuture::failed(err);
        }
        match g
            .queue
            .push(Slot { req, tx }, priority, client, cost, deadline, now)
        {
            Err((why, slot)) => {
                drop(g);
                drop(slot);
                rec.full(priority);
                let retry_after = config.retry_after;
                ResponseFuture::failed(match why {
                    Refused::Full => QueueError::Full { retry_after },
                    Refused::LevelFull => QueueError::PriorityFull { retry_after },
                })
            }
            Ok((id, displaced)) => {
                rec.accepted();
                self.shared.publish(&g);
                let waker = g.worker.take();
                drop(g);
                if let Some(victim) = displaced {
                    rec.shed(victim.original);
                    let _ = victim.payload.tx.send(Err(QueueError::Shed {
                        retry_after: config.retry_after,
                    }));
                }
                if let Some(w) = waker {
                    w.wake();
                }
                let cancel: Arc<dyn Cancel> = self.shared.clone();
                ResponseFuture::queued(rx, CancelGuard::new(cancel, id))
            }
        }
    }
}

impl<S, Req> Clone for PriorityQueue<S, Req>
where
    S: Service<Req>,
{
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        PriorityQueue {
            shared: self.shared.clone(),
            inner: self.inner.clone(),
            lazy: self.lazy.clone(),
            handle: self.handle.clone(),
        }
    }
}

impl<S, Req> Drop for PriorityQueue<S, Req>
where
    S: Service<Req>,
{
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let waker = self.shared.locked.lock().worker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<S, Req> fmt::Debug for PriorityQueue<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueue")
            .field("depth", &self.handle.total_depth())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
