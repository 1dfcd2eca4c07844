//! [`BreakerConfig`]: thresholds, cool-down and mode, with a builder.

use std::sync::Arc;
use std::time::Duration;

use crate::classify::HttpClassifier;
use crate::layer::CircuitBreakerLayer;

/// What an open breaker does to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `poll_ready` is always ready; a call while open fails at once with
    /// [`BreakerOpen`](crate::BreakerOpen). The default, for a breaker used
    /// alone.
    #[default]
    FailFast,
    /// `poll_ready` stays `Pending` while open (and while half-open with
    /// every probe slot taken) and wakes itself when the cool-down ends or a
    /// slot frees. It never returns an error for an open breaker, so a
    /// balancer (tower's `ReadyCache`) skips the endpoint instead of
    /// evicting it.
    NotReady,
}

/// Configuration of one circuit breaker, and its builder.
///
/// Defaults: open after 5 consecutive failures, or when at least 50% of at
/// least 20 calls in the last 10 s failed; stay open 30 s (growing ×2 per
/// repeated trip, capped at 5 min); half-open lets 1 probe through at a
/// time and closes after 3 successes; fail-fast mode; name `"default"`.
///
/// ```
/// use std::time::Duration;
/// use llmgate_breaker::{CircuitBreakerLayer, Mode};
///
/// let layer = CircuitBreakerLayer::builder()
///     .name("replica-1")
///     .consecutive_failures(3)
///     .failure_rate(0.25)
///     .min_calls(10)
///     .window(Duration::from_secs(30))
///     .cool_down(Duration::from_secs(5))
///     .cool_down_growth(2.0)
///     .cool_down_cap(Duration::from_secs(60))
///     .half_open_max_probes(2)
///     .half_open_successes(2)
///     .mode(Mode::NotReady)
///     .build();
/// assert_eq!(layer.handle().name(), "replica-1");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) min_calls: u32,
    pub(crate) window: Duration,
    pub(crate) cool_down: Duration,
    pub(crate) cool_down_growth: f64,
    pub(crate) cool_down_cap: Duration,
    pub(crate) half_open_max_probes: u32,
    pub(crate) half_open_successes: u32,
    pub(crate) mode: Mode,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            name: Arc::from("default"),
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            min_calls: 20,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
            cool_down_growth: 2.0,
            cool_down_cap: Duration::from_secs(300),
            half_open_max_probes: 1,
            half_open_successes: 3,
            mode: Mode::FailFast,
        }
    }
}

impl BreakerConfig {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// The breaker's name: the `name` label of its metrics and the name in
    /// its errors. Use the endpoint id for per-endpoint breakers.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Open after this many failures in a row (0 disables the count rule).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Open when at least this fraction (0 < rate ≤ 1) of the calls in the
    /// window failed. Values outside (0, 1] disable the rate rule.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = (rate > 0.0 && rate <= 1.0).then_some(rate);
        self
    }

    /// The rate rule applies only once the window holds this many calls.
    pub fn min_calls(mut self, n: u32) -> Self {
        self.min_calls = n;
        self
    }

    /// Length of the rolling window of the rate rule (10 buckets).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(10));
        self
    }

    /// How long the breaker stays open after its first trip.
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = d;
        self
    }

    /// Factor applied to the cool-down on each trip that follows a failed
    /// half-open period (1.0: constant). Values below 1 are taken as 1.
    pub fn cool_down_growth(mut self, factor: f64) -> Self {
        self.cool_down_growth = if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        };
        self
    }

    /// The longest cool-down, however many trips.
    pub fn cool_down_cap(mut self, cap: Duration) -> Self {
        self.cool_down_cap = cap;
        self
    }

    /// Probes allowed in flight at once while half-open (at least 1).
    pub fn half_open_max_probes(mut self, n: u32) -> Self {
        self.half_open_max_probes = n.max(1);
        self
    }

    /// Probe successes that close a half-open breaker (at least 1).
    pub fn half_open_successes(mut self, n: u32) -> Self {
        self.half_open_successes = n.max(1);
        self
    }

    /// Fail-fast (default) or not-ready.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The configured mode.
    pub fn get_mode(&self) -> Mode {
        self.mode
    }

    /// The configured name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Builds a layer with the HTTP classifier. Each call creates a new,
    /// independent breaker.
    pub fn build(self) -> CircuitBreakerLayer<HttpClassifier> {
        CircuitBreakerLayer::from_config(self)
    }

    /// The cool-down after the `trip`-th trip in a row (1-based).
    pub(crate) fn cool_down_for_trip(&self, trip: u32) -> Duration {
        let exp = trip.saturating_sub(1).min(64) as i32;
        let secs = self.cool_down.as_secs_f64() * self.cool_down_growth.powi(exp);
        let cap = self.cool_down_cap.max(self.cool_down);
        if !secs.is_finite() || secs >= cap.as_secs_f64() {
            cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cool_down_grows_and_caps() {
        let c = BreakerConfig::new()
            .cool_down(Duration::from_secs(10))
            .cool_down_growth(2.0)
            .cool_down_cap(Duration::from_secs(35));
        assert_eq!(c.cool_down_for_trip(1), Duration::from_secs(10));
        assert_eq!(c.cool_down_for_trip(2), Duration::from_secs(20));
        assert_eq!(c.cool_down_for_trip(3), Duration::from_secs(35));
        assert_eq!(c.cool_down_for_trip(60), Duration::from_secs(35));
        let flat = c.clone().cool_down_growth(0.5);
        assert_eq!(flat.cool_down_for_trip(4), Duration::from_secs(10));
    }
}
