//! [`QueueHandle`]: live counters for an admin API, and the metrics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use llmgate_core::Priority;
use metrics::{Counter, Gauge, Histogram};

use crate::state::LEVELS;

/// Counters shared by a layer and every queue it builds.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    depth: [AtomicUsize; LEVELS],
    accepted: AtomicU64,
    served: AtomicU64,
    shed: AtomicU64,
    full: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
}

/// A cheap, cloneable view of a queue's depth and counters, for an admin
/// API. Obtain it with [`PriorityQueueLayer::handle`](crate::PriorityQueueLayer::handle)
/// or [`PriorityQueue::handle`](crate::PriorityQueue::handle). All queues
/// built from one layer share one handle (their figures add up).
///
/// Every request that reaches `call` ends in exactly one of: refused
/// (`full`), `served`, `shed`, `timed_out`, `cancelled` or `failed`; while
/// it waits it counts in the depth. So
/// `accepted == served + shed + timed_out + cancelled + failed + depth`
/// once no call is in progress.
#[derive(Debug, Clone, Default)]
pub struct QueueHandle {
    pub(crate) stats: Arc<Stats>,
}

/// A point-in-time copy of a [`QueueHandle`]'s figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueSnapshot {
    /// Requests waiting, per priority level (index = [`Priority::rank`]).
    /// An aged request counts at the level it was promoted to.
    pub depth: [usize; LEVELS],
    /// Requests admitted to the queue.
    pub accepted: u64,
    /// Requests released to the inner service.
    pub served: u64,
    /// Requests displaced by a more urgent arrival.
    pub shed: u64,
    /// Requests refused on arrival because the queue (or their priority's
    /// share of it) was full.
    pub full: u64,
    /// Requests whose deadline passed while queued.
    pub timed_out: u64,
    /// Requests whose caller went away while queued (or at release).
    pub cancelled: u64,
    /// Requests failed because the inner service failed or the queue closed.
    pub failed: u64,
}

impl QueueSnapshot {
    /// Requests waiting, all priorities together.
    pub fn total_depth(&self) -> usize {
        self.depth.iter().sum()
    }
}

impl QueueHandle {
    /// Requests waiting at `priority`.
    pub fn depth(&self, priority: Priority) -> usize {
        self.stats.depth[priority.rank()].load(Relaxed)
    }

    /// Requests waiting, all priorities together.
    pub fn total_depth(&self) -> usize {
        self.stats.depth.iter().map(|d| d.load(Relaxed)).sum()
    }

    /// A copy of every figure.
    pub fn snapshot(&self) -> QueueSnapshot {
        let s = &self.stats;
        QueueSnapshot {
            depth: std::array::from_fn(|i| s.depth[i].load(Relaxed)),
            accepted: s.accepted.load(Relaxed),
            served: s.served.load(Relaxed),
            shed: s.shed.load(Relaxed),
            full: s.full.load(Relaxed),
            timed_out: s.timed_out.load(Relaxed),
            cancelled: s.cancelled.load(Relaxed),
            failed: s.failed.load(Relaxed),
        }
    }
}

/// Metric handles of one queue, bound to the recorder that was current when
/// the queue was built.
#[derive(Debug)]
struct Metrics {
    depth: [Gauge; LEVELS],
    wait: [Histogram; LEVELS],
    served: [Counter; LEVELS],
    shed: [Counter; LEVELS],
    rejected: [Counter; LEVELS],
    timeouts: [Counter; LEVELS],
    cancelled: [Counter; LEVELS],
    failed: [Counter; LEVELS],
}

impl Metrics {
    fn new() -> Self {
        fn label(i: usize) -> &'static str {
            Priority::ALL[i].as_str()
        }
        Metrics {
            depth: std::array::from_fn(
                |i| metrics::gauge!("llmgate_queue_depth", "priority" => label(i)),
            ),
            wait: std::array::from_fn(
                |i| metrics::histogram!("llmgate_queue_wait_seconds", "priority" => label(i)),
            ),
            served: std::array::from_fn(
                |i| metrics::counter!("llmgate_queue_served_total", "priority" => label(i)),
            ),
            shed: std::array::from_fn(
                |i| metrics::counter!("llmgate_queue_shed_total", "priority" => label(i)),
            ),
            rejected: std::array::from_fn(
                |i| metrics::counter!("llmgate_queue_rejected_total", "priority" => label(i)),
            ),
            timeouts: std::array::from_fn(
                |i| metrics::counter!("llmgate_queue_timeouts_total", "priority" => label(i)),
            ),
            cancelled: std::array::from_fn(
                |i| metrics::counter!("llmgate_queue_cancelled_total", "priority" => label(i)),
            ),
            failed: std::array::from_fn(
                |i| metrics::counter!("llmgate_queue_failed_total", "priority" => label(i)),
            ),
        }
    }
}

/// Updates the shared counters and this queue's metrics together.
#[derive(Debug)]
pub(crate) struct Recorder {
    stats: Arc<Stats>,
    metrics: Metrics,
    /// Depth per level last published by this queue.
    published: [AtomicUsize; LEVELS],
}

impl Recorder {
    pub(crate) fn new(handle: &QueueHandle) -> Self {
        Recorder {
            stats: handle.stats.clone(),
            metrics: Metrics::new(),
            published: Default::default(),
        }
    }

    /// Publishes this queue's depth per level (call under the queue lock).
    pub(crate) fn depths(&self, len: impl Fn(usize) -> usize) {
        for i in 0..LEVELS {
            let now = len(i);
            let before = self.published[i].swap(now, Relaxed);
            if now > before {
                self.stats.depth[i].fetch_add(now - before, Relaxed);
                self.metrics.depth[i].increment((now - before) as f64);
            } else if now < before {
                self.stats.depth[i].fetch_sub(before - now, Relaxed);
                self.metrics.depth[i].decrement((before - now) as f64);
            }
        }
    }

    pub(crate) fn accepted(&self) {
        self.stats.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn served(&self, p: Priority, waited: Duration) {
        self.stats.served.fetch_add(1, Relaxed);
        self.metrics.served[p.rank()].increment(1);
        self.metrics.wait[p.rank()].record(waited.as_secs_f64());
    }

    pub(crate) fn shed(&self, p: Priority) {
        self.stats.shed.fetch_add(1, Relaxed);
        self.metrics.shed[p.rank()].increment(1);
    }

    pub(crate) fn full(&self, p: Priority) {
        self.stats.full.fetch_add(1, Relaxed);
        self.metrics.rejected[p.rank()].increment(1);
    }

    pub(crate) fn timed_out(&self, p: Priority) {
        self.stats.timed_out.fetch_add(1, Relaxed);
        self.metrics.timeouts[p.rank()].increment(1);
    }

    pub(crate) fn cancelled(&self, p: Priority) {
        self.stats.cancelled.fetch_add(1, Relaxed);
        self.metrics.cancelled[p.rank()].increment(1);
    }

    pub(crate) fn failed(&self, p: Priority) {
        self.stats.failed.fetch_add(1, Relaxed);
        self.metrics.failed[p.rank()].increment(1);
    }
}
