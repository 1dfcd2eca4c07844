//! Periodic GPU sampling off the async threads.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{GpuProbe, GpuReading};

/// Default period between two probe reads.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Latest {
    readings: Vec<GpuReading>,
    at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    latest: Arc<RwLock<Latest>>,
    /// Number of samples stored so far (lets [`GpuSampler::wait_first`] wait without polling).
    samples: watch::Receiver<u64>,
    task: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a [`GpuProbe`] on a blocking thread every interval and keeps the
/// latest readings in a shared cell.
///
/// Cheap to clone; reading the latest value takes a read lock and never
/// touches the probe. The sampling task stops when the last clone is dropped.
/// A `GpuSampler` is itself a [`GpuProbe`] (returning the cached readings),
/// so it can stand in for a slow probe anywhere, e.g. in [`crate::agent::router`].
///
/// ```
/// use std::time::Duration;
/// use llmgate_telemetry::{FakeProbe, GpuProbe, GpuSampler};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let probe = FakeProbe::new();
/// let sampler = GpuSampler::spawn(probe.clone(), Duration::from_millis(10));
/// sampler.wait_first().await;
/// assert!(sampler.read().is_empty());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GpuSampler {
    inner: Arc<Inner>,
}

impl GpuSampler {
    /// Starts sampling `probe` every `interval` (first read at once).
    ///
    /// Must be called inside a tokio runtime. A zero interval is raised to 1 ms.
    pub fn spawn(probe: impl GpuProbe, interval: Duration) -> GpuSampler {
        let probe: Arc<dyn GpuProbe> = Arc::new(probe);
        let latest = Arc::new(RwLock::new(Latest::default()));
        let cell = latest.clone();
        let (count_tx, samples) = watch::channel(0u64);
        let interval = interval.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let p = probe.clone();
                match tokio::task::spawn_blocking(move || p.read()).await {
                    Ok(readings) => {
                        let mut l = cell.write();
                        l.readings = readings;
                        l.at = Some(Instant::now());
                        drop(l);
                        count_tx.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "GPU probe read failed");
                    }
                }
            }
        })
        .abort_handle();
        GpuSampler {
            inner: Arc::new(Inner {
                latest,
                samples,
                task,
            }),
        }
    }

    /// The latest readings (empty before the first sample completes).
    pub fn latest(&self) -> Vec<GpuReading> {
        self.inner.latest.read().readings.clone()
    }

    /// When the latest sample was taken (`None` before the first).
    pub fn sampled_at(&self) -> Option<Instant> {
        self.inner.latest.read().at
    }

    /// Waits until the first sample has been stored (start-up, tests).
    pub async fn wait_first(&self) {
        let mut rx = self.inner.samples.clone();
        // Err only if the task is gone; then there is nothing to wait for.
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// How many samples have been stored so far.
    pub fn samples(&self) -> u64 {
        *self.inner.samples.borrow()
    }
}

impl GpuProbe for GpuSampler {
    fn read(&self) -> Vec<GpuReading> {
        self.latest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::tests_support::reading;
    use crate::FakeProbe;

    #[tokio::test(start_paused = true)]
    async fn samples_every_interval_and_stops_on_drop() {
        let probe = FakeProbe::with(vec![reading(0, 10.0)]);
        let sampler = GpuSampler::spawn(probe.clone(), Duration::from_secs(1));
        assert_eq!(sampler.samples(), 0);
        sampler.wait_first().await;
        assert_eq!(sampler.samples(), 1);
        assert_eq!(sampler.read()[0].utilization_pct, 10.0);
        let first = sampler.sampled_at().unwrap();

        probe.update(|v| v[0].utilization_pct = 70.0);
        // Before the next tick the cached value is unchanged.
        assert_eq!(sampler.latest()[0].utilization_pct, 10.0);
        let mut waited = 0;
        while sampler.latest()[0].utilization_pct != 70.0 && waited < 100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
        assert_eq!(sampler.latest()[0].utilization_pct, 70.0);
        assert!(sampler.sampled_at().unwrap() >= first + Duration::from_secs(1));

        let reads = probe.reads();
        let clone = sampler.clone();
        drop(sampler);
        // A clone keeps it alive.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(probe.reads() > reads);
        drop(clone);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let after_drop = probe.reads();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(probe.reads(), after_drop);
    }
}
