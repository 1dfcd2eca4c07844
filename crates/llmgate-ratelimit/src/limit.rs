//! Limit configuration: [`Limit`] and [`Tier`].

use std::time::Duration;

/// A token-bucket limit: `amount` units per `period`, with a bucket holding
/// at most `burst` units.
///
/// The bucket refills continuously at `amount / period`; a full bucket lets
/// `burst` units through at once. `burst` defaults to `amount` (a client may
/// spend a whole period's allowance at once, like OpenAI's per-minute limits).
///
/// ```
/// use std::time::Duration;
/// use llmgate_ratelimit::Limit;
///
/// let rpm = Limit::per_minute(60).burst(10);
/// assert_eq!(rpm.amount(), 60);
/// assert_eq!(rpm.period(), Duration::from_secs(60));
/// assert_eq!(rpm.burst_size(), 10);
/// // One unit every second.
/// assert_eq!(rpm.refill_interval(), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    amount: u64,
    period_ns: u64,
    burst: u64,
}

impl Limit {
    /// `amount` units per `period`, burst `amount`.
    ///
    /// # Panics
    ///
    /// If `amount` is zero or `period` is zero or longer than ~584 years.
    pub fn new(amount: u64, period: Duration) -> Limit {
        assert!(amount > 0, "a rate limit needs a positive amount");
        let period_ns = u64::try_from(period.as_nanos()).expect("period too long");
        assert!(period_ns > 0, "a rate limit needs a positive period");
        Limit {
            amount,
            period_ns,
            burst: amount,
        }
    }

    /// `amount` units per second.
    pub fn per_second(amount: u64) -> Limit {
        Limit::new(amount, Duration::from_secs(1))
    }

    /// `amount` units per minute.
    pub fn per_minute(amount: u64) -> Limit {
        Limit::new(amount, Duration::from_secs(60))
    }

    /// Sets the bucket size (at least 1).
    pub fn burst(mut self, burst: u64) -> Limit {
        self.burst = burst.max(1);
        self
    }

    /// Units per period.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// The bucket size: the most units that pass at once.
    pub fn burst_size(&self) -> u64 {
        self.burst
    }

    /// Time to refill one unit.
    pub fn refill_interval(&self) -> Duration {
        Duration::from_nanos(self.cost_ns(1))
    }

    /// Nanoseconds of refill that `units` are worth (saturating).
    pub(crate) fn cost_ns(&self, units: u64) -> u64 {
        let ns = u128::from(units) * u128::from(self.period_ns) / u128::from(self.amount);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The bucket's depth in nanoseconds: `burst` units' worth.
    pub(crate) fn tau_ns(&self) -> u64 {
        self.cost_ns(self.burst)
    }

    /// Whole units that `ns` of refill are worth (rounded down).
    pub(crate) fn units_in(&self, ns: u64) -> u64 {
        let units = u128::from(ns) * u128::from(self.amount) / u128::from(self.period_ns);
        u64::try_from(units).unwrap_or(u64::MAX)
    }
}

/// The limits that apply to one key: a request limit and a token limit.
/// `None` means "no limit of that kind".
///
/// The layer's defaults are a `Tier`; per-key overrides (API-key tiers) are
/// `Tier`s looked up by key, replacing the defaults for that key entirely.
///
/// ```
/// use llmgate_ratelimit::{Limit, Tier};
///
/// let gold = Tier::new()
///     .requests(Limit::per_minute(600))
///     .tokens(Limit::per_minute(1_000_000));
/// assert!(gold.requests.is_some() && gold.tokens.is_some());
/// assert_eq!(Tier::unlimited(), Tier::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tier {
    /// Requests limit (each request costs 1).
    pub requests: Option<Limit>,
    /// Tokens limit (each request costs its estimated tokens, settled against
    /// actual usage when the answer reports it).
    pub tokens: Option<Limit>,
}

impl Tier {
    /// No limits at all.
    pub const fn new() -> Tier {
        Tier {
            requests: None,
            tokens: None,
        }
    }

    /// No limits at all (same as [`Tier::new`], reads better for overrides).
    pub const fn unlimited() -> Tier {
        Tier::new()
    }

    /// Sets the requests limit.
    pub fn requests(mut self, limit: Limit) -> Tier {
        self.requests = Some(limit);
        self
    }

    /// Sets the tokens limit.
    pub fn tokens(mut self, limit: Limit) -> Tier {
        self.tokens = Some(limit);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_and_units_are_exact_for_uneven_rates() {
        // 90k tokens per minute: 666_666.6 ns per token.
        let l = Limit::per_minute(90_000);
        assert_eq!(l.cost_ns(90_000), 60_000_000_000);
        assert_eq!(l.cost_ns(3), 2_000_000);
        assert_eq!(l.units_in(60_000_000_000), 90_000);
        assert_eq!(l.tau_ns(), 60_000_000_000);
        assert_eq!(Limit::per_second(10).burst(0).burst_size(), 1);
    }
}
