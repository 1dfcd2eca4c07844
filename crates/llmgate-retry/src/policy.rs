//! [`RetryPolicy`]: tower's `retry::Policy` with attempts, full-jitter
//! backoff, `Retry-After` and a shared retry budget.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::time::Sleep;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;

use crate::classify::{RetryClassify, Retryable};
use crate::config::RetryConfig;

/// State shared by every request of one layer: the configuration, the
/// budget and the seed sequence of the per-request jitter generators.
pub(crate) struct Shared {
    pub(crate) config: RetryConfig,
    pub(crate) budget: Option<TpsBudget>,
    seeds: AtomicU64,
    /// `llmgate_retry_attempts_total`, registered on the first attempt: a
    /// lookup by name on every request costs more than the increment.
    attempts: OnceLock<Counter>,
}

impl Shared {
    pub(crate) fn new(config: RetryConfig) -> Arc<Self> {
        let budget = config.budget.map(|b| {
            TpsBudget::new(
                b.ttl.clamp(Duration::from_secs(1), Duration::from_secs(60)),
                b.min_per_sec.min(i32::MAX as u32 - 1),
                b.percent.clamp(0.0, 1000.0),
            )
        });
        let seed = config.seed.unwrap_or_else(|| {
            // Different across processes without an RNG dependency.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        Arc::new(Shared {
            config,
            budget,
            seeds: AtomicU64::new(seed),
            attempts: OnceLock::new(),
        })
    }

    /// Counts one attempt in `llmgate_retry_attempts_total`.
    pub(crate) fn count_attempt(&self) {
        self.attempts
            .get_or_init(|| metrics::counter!("llmgate_retry_attempts_total"))
            .increment(1);
    }
}

/// SplitMix64: a tiny, good-enough generator for jitter.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ceiling of the backoff before retry number `retry` (1-based):
/// `min(cap, base × 2^(retry-1))`.
pub fn backoff_ceiling(base: Duration, cap: Duration, retry: u32) -> Duration {
    let factor = 1u32 << retry.saturating_sub(1).min(30);
    base.saturating_mul(factor).min(cap)
}

/// Full jitter: a uniform draw in `[0, ceiling]` from `unit` in `[0, 1)`.
pub fn full_jitter(ceiling: Duration, unit: f64) -> Duration {
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// tower's [`Policy`] for [`RetryLayer`](crate::RetryLayer).
///
/// tower clones the policy for each request session, so the attempt count
/// and the jitter generator here belong to one request and are never
/// shared; the budget (an [`Arc`]) is shared by all requests of the layer.
pub struct RetryPolicy<C> {
    shared: Arc<Shared>,
    classifier: C,
    /// Attempts finished in this request session.
    attempts: u32,
    rng: u64,
}

impl<C: Clone> Clone for RetryPolicy<C> {
    fn clone(&self) -> Self {
        // A fresh generator per session so requests do not jitter in step.
        let mut seed = self.shared.seeds.fetch_add(1, Ordering::Relaxed);
        RetryPolicy {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            attempts: self.attempts,
            rng: splitmix(&mut seed),
        }
    }
}

impl<C> fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.shared.config)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl<C> RetryPolicy<C> {
    pub(crate) fn new(shared: Arc<Shared>, classifier: C) -> Self {
        let mut seed = shared.seeds.fetch_add(1, Ordering::Relaxed);
        RetryPolicy {
            shared,
            classifier,
            attempts: 0,
            rng: splitmix(&mut seed),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The delay before retry number `retry` (1-based): full jitter over
    /// the exponential ceiling, but at least what the answer asked for
    /// (`after`), itself capped at the backoff cap.
    fn delay(&mut self, retry: u32, after: Option<Duration>) -> Duration {
        let c = &self.shared.config;
        let unit = (splitmix(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        let jittered = full_jitter(backoff_ceiling(c.base, c.cap, retry), unit);
        match after {
            Some(a) => jittered.max(a.min(c.cap)),
            None => jittered,
        }
    }
}

impl<C, Req, Res, E> Policy<Req, Res, E> for RetryPolicy<C>
where
    C: RetryClassify<Req, Res, E>,
{
    type Future = BackoffFuture;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        self.attempts += 1;
        if self.attempts == 1 {
            if let Some(b) = &self.shared.budget {
                b.deposit();
            }
        }
        let after = match self.classifier.classify(result) {
            Retryable::No => return None,
            Retryable::Yes { after } => after,
        };
        if self.attempts >= self.shared.config.max_attempts {
            return None;
        }
        if let Some(b) = &self.shared.budget {
            if !b.withdraw() {
                metrics::counter!("llmgate_retry_budget_exhausted_total").increment(1);
                return None;
            }
        }
        self.classifier.before_retry(req, result);
        metrics::counter!("llmgate_retry_retries_total").increment(1);
        self.shared.count_attempt();
        let delay = self.delay(self.attempts, after);
        Some(BackoffFuture::new(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if self.attempts + 1 >= self.shared.config.max_attempts {
            // No attempt will follow: do not copy the body for nothing.
            return None;
        }
        self.classifier.replay(req)
    }
}

/// The wait before a retry: ready at once for a zero delay, otherwise a
/// tokio timer (paused-clock friendly).
pub struct BackoffFuture {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl BackoffFuture {
    fn new(delay: Duration) -> Self {
        BackoffFuture {
            sleep: (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay))),
        }
    }
}

impl fmt::Debug for BackoffFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffFuture")
            .field("deadline", &self.sleep.as_ref().map(|s| s.deadline()))
            .finish()
    }
}

impl Future for BackoffFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_millis(1000);
        let got: Vec<_> = (1..=6)
            .map(|r| backoff_ceiling(base, cap, r).as_millis())
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(base, cap, 500), cap);
        assert_eq!(full_jitter(cap, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(cap, 0.5), Duration::from_millis(500));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let shared = Shared::new(
            RetryConfig::default()
                .backoff(Duration::from_millis(100), Duration::from_secs(10))
                .seed(7),
        );
        let mut p = RetryPolicy::new(shared, crate::HttpRetry);
        let draws: Vec<_> = (0..1000).map(|_| p.delay(3, None)).collect();
        let ceiling = Duration::from_millis(400);
        assert!(draws.iter().all(|d| *d <= ceiling));
        // Full jitter, not "base + jitter": both ends of the range are hit.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(40)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(360)));
        // Retry-After raises the floor, capped at the backoff cap.
        assert!(p.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn clones_jitter_independently() {
        let shared = Shared::new(RetryConfig::default().seed(1));
        let p = RetryPolicy::new(shared, crate::HttpRetry);
        let mut a = p.clone();
        let mut b = p.clone();
        let da: Vec<_> = (0..8).map(|_| a.delay(4, None)).collect();
        let db: Vec<_> = (0..8).map(|_| b.delay(4, None)).collect();
        assert_ne!(da, db);
    }
}
