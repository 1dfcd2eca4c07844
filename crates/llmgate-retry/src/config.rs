//! [`RetryConfig`]: attempts, backoff, budget; the builder of
//! [`RetryLayer`](crate::RetryLayer).

use std::time::Duration;

use crate::classify::HttpRetry;
use crate::layer::RetryLayer;

/// The retry budget: over any `ttl`, retries may add at most `percent` of
/// the first attempts, plus `min_per_sec` retries per second as a floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a deposit counts (1–60 s).
    pub ttl: Duration,
    /// Retries per second always allowed.
    pub min_per_sec: u32,
    /// Retries allowed per first attempt (0.2 = 20%).
    pub percent: f32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_sec: 1,
            percent: 0.2,
        }
    }
}

/// Configuration of a [`RetryLayer`], and its builder.
///
/// Defaults: 3 attempts in total; backoff base 100 ms, cap 5 s, full jitter;
/// budget 20% of first attempts over 10 s plus 1 retry per second.
///
/// ```
/// use std::time::Duration;
/// use llmgate_retry::RetryLayer;
///
/// let layer = RetryLayer::builder()
///     .max_attempts(4)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .budget_percent(0.1)
///     .build();
/// assert_eq!(layer.config().get_max_attempts(), 4);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    pub(crate) budget: Option<BudgetConfig>,
    pub(crate) seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            budget: Some(BudgetConfig::default()),
            seed: None,
        }
    }
}

impl RetryConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in total, the first included (at least 1; 1 = no retry).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The backoff before retry *n* is uniform in
    /// `[0, min(cap, base × 2^(n-1))]`; a `Retry-After` is honoured up to
    /// `cap`.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap.max(base);
        self
    }

    /// The budget's fraction of first attempts (default 0.2). `0` allows
    /// only the per-second floor.
    pub fn budget_percent(mut self, percent: f32) -> Self {
        self.budget
            .get_or_insert_with(BudgetConfig::default)
            .percent = percent;
        self
    }

    /// The budget's floor, in retries per second (default 1).
    pub fn budget_min_per_sec(mut self, n: u32) -> Self {
        self.budget
            .get_or_insert_with(BudgetConfig::default)
            .min_per_sec = n;
        self
    }

    /// How long a first attempt counts toward the budget (1–60 s; default 10 s).
    pub fn budget_ttl(mut self, ttl: Duration) -> Self {
        self.budget.get_or_insert_with(BudgetConfig::default).ttl = ttl;
        self
    }

    /// No budget at all (tests, or an outer budget elsewhere).
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// A fixed jitter seed, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The configured attempts.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured backoff `(base, cap)`.
    pub fn get_backoff(&self) -> (Duration, Duration) {
        (self.base, self.cap)
    }

    /// The configured budget.
    pub fn get_budget(&self) -> Option<BudgetConfig> {
        self.budget
    }

    /// Builds the layer with the HTTP classifier.
    pub fn build(self) -> RetryLayer<HttpRetry> {
        RetryLayer::from_config(self)
    }
}
