//! [`PriorityQueueLayer`] and its builder.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use llmgate_core::{BoxError, BufferedBody, Priority};
use tower::{Layer, Service};

use crate::handle::QueueHandle;
use crate::state::{Limits, LEVELS};
use crate::{PriorityOf, PriorityQueue};

/// Default total capacity.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Default longest wait in the queue.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `Retry-After` of full and shed answers.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How requests of one priority level share the releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fairness {
    /// Plain arrival order; one client's burst is served before a later
    /// client's request.
    Fifo,
    /// Round robin between client keys, one request per turn (the default).
    #[default]
    RoundRobin,
    /// Deficit round robin between client keys by request cost
    /// ([`PriorityOf::cost`], estimated tokens for HTTP): each turn a client
    /// earns `quantum` and spends the cost of what it sends, so clients get
    /// equal shares of tokens rather than of requests.
    DeficitRoundRobin {
        /// Credit per turn (e.g. 1024 tokens); at least 1.
        quantum: u64,
    },
}

/// Queue configuration, shared by every queue a layer builds.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) limits: Limits,
    pub(crate) timeout: Duration,
    pub(crate) retry_after: Duration,
}

/// Builds a [`PriorityQueueLayer`].
///
/// ```
/// use std::time::Duration;
/// use llmgate_core::Priority;
/// use llmgate_queue::{Fairness, PriorityQueueLayer};
///
/// let layer: PriorityQueueLayer = PriorityQueueLayer::builder()
///     .capacity(10_000)
///     .priority_capacity(Priority::Batch, 2_000)
///     .queue_timeout(Duration::from_secs(20))
///     .aging(Duration::from_secs(10))
///     .fairness(Fairness::DeficitRoundRobin { quantum: 1024 })
///     .retry_after(Duration::from_secs(2))
///     .build();
/// assert_eq!(layer.handle().total_depth(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct PriorityQueueBuilder {
    capacity: usize,
    caps: [usize; LEVELS],
    timeout: Duration,
    aging: Option<Duration>,
    fairness: Fairness,
    retry_after: Duration,
}

impl Default for PriorityQueueBuilder {
    fn default() -> Self {
        PriorityQueueBuilder {
            capacity: DEFAULT_CAPACITY,
            caps: [usize::MAX; LEVELS],
            timeout: DEFAULT_QUEUE_TIMEOUT,
            aging: None,
            fairness: Fairness::default(),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl PriorityQueueBuilder {
    /// Total number of waiting requests (default [`DEFAULT_CAPACITY`]).
    /// `0` refuses every request.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Most requests of `priority` waiting at once (default: only the total
    /// capacity). Checked on arrival; aging may carry a level above its cap.
    pub fn priority_capacity(mut self, priority: Priority, capacity: usize) -> Self {
        self.caps[priority.rank()] = capacity;
        self
    }

    /// Longest wait of a request in the queue (default
    /// [`DEFAULT_QUEUE_TIMEOUT`]). A request whose own deadline
    /// ([`PriorityOf::deadline`]) is earlier leaves at that deadline.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Enables aging: a request that waited `after` at its level is
    /// promoted one level, and again after each further `after`, up to
    /// `High` (never into `Critical`). So `Batch` is not starved forever
    /// under sustained `High` load. Off by default: strict priority.
    pub fn aging(mut self, after: Duration) -> Self {
        self.aging = Some(after);
        self
    }

    /// How requests of one level share releases (default round robin).
    pub fn fairness(mut self, fairness: Fairness) -> Self {
        self.fairness = fairness;
        self
    }

    /// `Retry-After` suggested by full and shed answers (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The layer, for requests of type `Req` (HTTP by default).
    pub fn build<Req>(self) -> PriorityQueueLayer<Req> {
        PriorityQueueLayer {
            config: Arc::new(Config {
                limits: Limits {
                    capacity: self.capacity,
                    caps: self.caps,
                    fairness: self.fairness,
                    aging: self.aging.filter(|d| !d.is_zero()),
                },
                timeout: self.timeout,
                retry_after: self.retry_after,
            }),
            handle: QueueHandle::default(),
            _req: PhantomData,
        }
    }
}

/// Wraps a service in a [`PriorityQueue`].
///
/// Each service it wraps gets its own queue and worker; they share one
/// [`QueueHandle`] (see [`handle`](Self::handle)).
pub struct PriorityQueueLayer<Req = http::Request<BufferedBody>> {
    config: Arc<Config>,
    handle: QueueHandle,
    _req: PhantomData<fn(Req)>,
}

impl PriorityQueueLayer {
    /// A builder with the defaults.
    pub fn builder() -> PriorityQueueBuilder {
        PriorityQueueBuilder::default()
    }
}

impl<Req> PriorityQueueLayer<Req> {
    /// A layer with `capacity` and every other setting at its default.
    pub fn new(capacity: usize) -> Self {
        PriorityQueueBuilder::default().capacity(capacity).build()
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// Depth and counters of the queues this layer builds, for an admin API.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }
}

impl<Req> Clone for PriorityQueueLayer<Req> {
    fn clone(&self) -> Self {
        PriorityQueueLayer {
            config: self.config.clone(),
            handle: self.handle.clone(),
            _req: PhantomData,
        }
    }
}

impl<Req> fmt::Debug for PriorityQueueLayer<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueueLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Layer<S> for PriorityQueueLayer<Req>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: PriorityOf + Send + 'static,
{
    type Service = PriorityQueue<S, Req>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityQueue::with_config(inner, self.config.clone(), &self.handle)
    }
}
