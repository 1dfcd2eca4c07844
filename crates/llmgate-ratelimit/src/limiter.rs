//! [`Limiter`]: sharded, lazily refilled token buckets keyed by client.
//!
//! # Representation
//!
//! Each bucket is stored as GCRA's *theoretical arrival time* (TAT): the
//! instant at which the bucket would be full again, in nanoseconds since the
//! limiter was created (tokio's [`Instant`], so a paused test clock drives
//! it). Charging `n` units moves the TAT `n × interval` into the future; a
//! request passes when the TAT after charging is at most `burst × interval`
//! ahead of now. Refill is never computed in a loop or a timer: it is the
//! passage of time itself. A key costs one `u64` per limit plus the key.
//!
//! Settlement after the answer moves the TAT back (refund, never below now)
//! or forward (extra charge, possibly into debt: later requests then wait).
//!
//! # Concurrency and memory
//!
//! Keys are spread over `N` shards (a power of two, default 64), each a
//! cache-line aligned `parking_lot::Mutex<HashMap>`; a check locks one shard
//! for a hash lookup and a few integer operations: O(1).
//!
//! A bucket whose TAT lies more than the idle TTL in the past is full and
//! has been untouched for at least the TTL: it carries no information and is
//! dropped. Sweeping is amortised on the hot path: a check that finds its
//! shard's sweep due (once per `ttl / 2` per shard) retains the live entries
//! of that shard only. The work of a sweep is bounded by the keys touched in
//! the last ~1.5 TTL, i.e. by the checks that created them, so the cost per
//! check stays O(1) amortised and the map holds only keys seen within about
//! 1.5 TTL (plus those still refilling). [`Limiter::sweep`] sweeps every
//! shard at once for callers that prefer a background task.
//! Rejected requests of unknown keys never insert a bucket.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::error::{BucketState, LimitKind, RateLimitState, RateLimited};
use crate::limit::{Limit, Tier};

/// Default idle time after which a full bucket is dropped.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(600);

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;

/// Metric: requests let through.
const ALLOWED: &str = "llmgate_ratelimit_allowed_total";
/// Metric: requests refused, by `limit`.
const REJECTED: &str = "llmgate_ratelimit_rejected_total";
/// Metric: keys with a live bucket.
const KEYS: &str = "llmgate_ratelimit_keys";
/// Metric: tokens settled after the answer, by `direction`.
const SETTLED: &str = "llmgate_ratelimit_settled_tokens_total";

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// TAT of the requests bucket (ns since `base`); `<= now` means full.
    requests: u64,
    /// TAT of the tokens bucket.
    tokens: u64,
}

impl Bucket {
    fn latest(&self) -> u64 {
        self.requests.max(self.tokens)
    }
}

#[derive(Debug)]
struct ShardState<K> {
    map: HashMap<K, Bucket>,
    next_sweep: u64,
}

#[repr(align(64))]
#[derive(Debug)]
struct Shard<K>(Mutex<ShardState<K>>);

/// Configuration of a [`Limiter`]; see [`crate::RateLimitLayer::builder`].
#[derive(Debug, Clone)]
pub(crate) struct LimiterConfig<K> {
    pub(crate) defaults: Tier,
    pub(crate) tiers: HashMap<K, Tier>,
    pub(crate) idle_ttl: Duration,
    pub(crate) shards: usize,
    pub(crate) sweep_on_access: bool,
}

impl<K> Default for LimiterConfig<K> {
    fn default() -> Self {
        LimiterConfig {
            defaults: Tier::new(),
            tiers: HashMap::new(),
            idle_ttl: DEFAULT_IDLE_TTL,
            shards: DEFAULT_SHARDS,
            sweep_on_access: true,
        }
    }
}

/// Keyed token buckets for a requests limit and a tokens limit.
///
/// Shared (behind an `Arc`) by every clone of a [`crate::RateLimit`]
/// service; usable alone for non-tower code.
///
/// ```
/// use std::time::Duration;
/// use llmgate_ratelimit::{Limit, Limiter, Tier};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = Limiter::<String>::new(Tier::new().requests(Limit::per_second(1).burst(2)));
/// assert!(limiter.check(&"a".to_owned(), 0).is_ok());
/// assert!(limiter.check(&"a".to_owned(), 0).is_ok());
/// let refused = limiter.check(&"a".to_owned(), 0).unwrap_err();
/// assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
/// // Another key has its own bucket.
/// assert!(limiter.check(&"b".to_owned(), 0).is_ok());
/// # }
/// ```
pub struct Limiter<K> {
    shards: Box<[Shard<K>]>,
    mask: usize,
    hasher: RandomState,
    base: Instant,
    defaults: Tier,
    tiers: HashMap<K, Tier>,
    ttl_ns: u64,
    sweep_on_access: bool,
    live: AtomicUsize,
}

impl<K> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("shards", &self.shards.len())
            .field("defaults", &self.defaults)
            .field("tiers", &self.tiers.len())
            .field("idle_ttl", &Duration::from_nanos(self.ttl_ns))
            .field("live_keys", &self.live.load(Ordering::Relaxed))
            .finish()
    }
}

/// The outcome of charging one bucket.
struct Charge {
    /// TAT after the charge.
    tat: u64,
    /// Wait until it would pass, when it does not; `Some(None)`: never.
    refused: Option<Option<u64>>,
}

fn charge(limit: &Limit, tat: u64, now: u64, units: u64) -> Charge {
    let start = tat.max(now);
    let tau = limit.tau_ns();
    if units > limit.burst_size() {
        return Charge {
            tat,
            refused: Some(None),
        };
    }
    let new_tat = start.saturating_add(limit.cost_ns(units));
    let ahead = new_tat - now;
    if ahead > tau {
        Charge {
            tat,
            refused: Some(Some(ahead - tau)),
        }
    } else {
        Charge {
            tat: new_tat,
            refused: None,
        }
    }
}

fn state_of(limit: &Limit, tat: u64, now: u64) -> BucketState {
    let ahead = tat.saturating_sub(now);
    let tau = limit.tau_ns();
    BucketState {
        limit: limit.burst_size(),
        remaining: limit.units_in(tau.saturating_sub(ahead)),
        reset: Duration::from_nanos(ahead),
    }
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter applying `defaults` to every key, with the default idle TTL
    /// and shard count.
    pub fn new(defaults: Tier) -> Limiter<K> {
        Limiter::from_config(LimiterConfig {
            defaults,
            ..LimiterConfig::default()
        })
    }

    pub(crate) fn from_config(config: LimiterConfig<K>) -> Limiter<K> {
        let n = config.shards.clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..n)
            .map(|_| {
                Shard(Mutex::new(ShardState {
                    map: HashMap::new(),
                    next_sweep: 0,
                }))
            })
            .collect();
        Limiter {
            shards,
            mask: n - 1,
            hasher: RandomState::new(),
            base: Instant::now(),
            defaults: config.defaults,
            tiers: config.tiers,
            ttl_ns: u64::try_from(config.idle_ttl.as_nanos()).unwrap_or(u64::MAX),
            sweep_on_access: config.sweep_on_access,
            live: AtomicUsize::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
        // 0 is "never charged": keep real times strictly positive.
        .saturating_add(1)
    }

    fn shard(&self, key: &K) -> &Mutex<ShardState<K>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h & self.mask].0
    }

    /// The limits that apply to `key`: its tier, else the defaults.
    pub fn tier_of(&self, key: &K) -> &Tier {
        if self.tiers.is_empty() {
            return &self.defaults;
        }
        self.tiers.get(key).unwrap_or(&self.defaults)
    }

    /// Charges one request and `tokens` tokens to `key`'s buckets, both or
    /// neither. On success returns the bucket states after the charge; on
    /// refusal, how long until the same request would pass.
    pub fn check(&self, key: &K, tokens: u64) -> Result<RateLimitState, RateLimited> {
        let tier = *self.tier_of(key);
        if tier.requests.is_none() && tier.tokens.is_none() {
            metrics::counter!(ALLOWED).increment(1);
            return Ok(RateLimitState::default());
        }
        let now = self.now_ns();
        let mut shard = self.shard(key).lock();
        if self.sweep_on_access && now >= shard.next_sweep {
            self.sweep_shard(&mut shard, now);
        }
        let bucket = shard.map.get(key).copied().unwrap_or_default();
        let req = tier
            .requests
            .map(|l| (l, charge(&l, bucket.requests, now, 1)));
        let tok = tier
            .tokens
            .map(|l| (l, charge(&l, bucket.tokens, now, tokens)));
        let refused_req = req.as_ref().and_then(|(_, c)| c.refused);
        let refused_tok = tok.as_ref().and_then(|(_, c)| c.refused);
        if refused_req.is_some() || refused_tok.is_some() {
            drop(shard);
            let (kind, cost) = if refused_req.is_some() {
                (LimitKind::Requests, 1)
            } else {
                (LimitKind::Tokens, tokens)
            };
            // Never passes if either never does; else the longer wait.
            let wait = match (refused_req, refused_tok) {
                (Some(None), _) | (_, Some(None)) => None,
                (a, b) => Some(a.flatten().unwrap_or(0).max(b.flatten().unwrap_or(0))),
            };
            let state = RateLimitState {
                requests: req.map(|(l, _)| state_of(&l, bucket.requests, now)),
                tokens: tok.map(|(l, _)| state_of(&l, bucket.tokens, now)),
            };
            metrics::counter!(REJECTED, "limit" => kind.as_str()).increment(1);
            return Err(RateLimited::new(
                kind,
                wait.map(Duration::from_nanos),
                cost,
                state,
            ));
        }
        let updated = Bucket {
            requests: req.as_ref().map_or(0, |(_, c)| c.tat),
            tokens: tok.as_ref().map_or(0, |(_, c)| c.tat),
        };
        match shard.map.get_mut(key) {
            Some(b) => *b = updated,
            None => {
                shard.map.insert(key.clone(), updated);
                let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!(KEYS).set(live as f64);
            }
        }
        drop(shard);
        metrics::counter!(ALLOWED).increment(1);
        Ok(RateLimitState {
            requests: req.map(|(l, c)| state_of(&l, c.tat, now)),
            tokens: tok.map(|(l, c)| state_of(&l, c.tat, now)),
        })
    }

    /// Settles a request that was charged `charged` tokens but used
    /// `actual`: refunds the difference (never beyond a full bucket) or
    /// charges the excess (possibly into debt, delaying later requests).
    pub fn settle_tokens(&self, key: &K, charged: u64, actual: u64) {
        if charged == actual {
            return;
        }
        let Some(limit) = self.tier_of(key).tokens else {
            return;
        };
        let now = self.now_ns();
        let mut shard = self.shard(key).lock();
        if actual < charged {
            let refund = charged - actual;
            metrics::counter!(SETTLED, "direction" => "refund").increment(refund);
            // A missing bucket is full: nothing to refund into.
            if let Some(b) = shard.map.get_mut(key) {
                if b.tokens > now {
                    b.tokens = b.tokens.saturating_sub(limit.cost_ns(refund)).max(now);
                }
            }
        } else {
            let extra = actual - charged;
            metrics::counter!(SETTLED, "direction" => "charge").increment(extra);
            let cost = limit.cost_ns(extra);
            match shard.map.get_mut(key) {
                Some(b) => b.tokens = b.tokens.max(now).saturating_add(cost),
                None => {
                    shard.map.insert(
                        key.clone(),
                        Bucket {
                            requests: 0,
                            tokens: now.saturating_add(cost),
                        },
                    );
                    let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
                    metrics::gauge!(KEYS).set(live as f64);
                }
            }
        }
    }

    /// The current bucket states of `key`, without charging anything.
    pub fn state(&self, key: &K) -> RateLimitState {
        let tier = *self.tier_of(key);
        let now = self.now_ns();
        let bucket = self
            .shard(key)
            .lock()
            .map
            .get(key)
            .copied()
            .unwrap_or_default();
        RateLimitState {
            requests: tier.requests.map(|l| state_of(&l, bucket.requests, now)),
            tokens: tier.tokens.map(|l| state_of(&l, bucket.tokens, now)),
        }
    }

    fn sweep_shard(&self, shard: &mut ShardState<K>, now: u64) {
        let before = shard.map.len();
        let cutoff = now.saturating_sub(self.ttl_ns);
        shard.map.retain(|_, b| b.latest() > cutoff);
        let removed = before - shard.map.len();
        // Shrink a map that has emptied out a lot, so memory follows the
        // live key count down, not only up.
        if shard.map.capacity() > 64 && shard.map.len() * 4 < shard.map.capacity() {
            shard.map.shrink_to(shard.map.len() * 2);
        }
        shard.next_sweep = now.saturating_add((self.ttl_ns / 2).max(1));
        if removed > 0 {
            let live = self.live.fetch_sub(removed, Ordering::Relaxed) - removed;
            metrics::gauge!(KEYS).set(live as f64);
        }
    }

    /// Drops every idle, full bucket now (all shards). Returns how many were
    /// dropped. Not needed when sweeping on access is on (the default).
    pub fn sweep(&self) -> usize {
        let now = self.now_ns();
        let before = self.live_keys();
        for shard in self.shards.iter() {
            self.sweep_shard(&mut shard.0.lock(), now);
        }
        before.saturating_sub(self.live_keys())
    }

    /// Keys that currently have a bucket.
    pub fn live_keys(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The idle TTL after which a full bucket is dropped.
    pub fn idle_ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_ns)
    }
}

/// A charge that may still be settled against actual usage.
///
/// Produced by the [`crate::RateLimit`] service for each allowed request and
/// handed to the response hook ([`crate::OnResponse`]). Dropping it keeps
/// the estimate charged.
pub struct Grant<K> {
    limiter: Arc<Limiter<K>>,
    key: K,
    charged_tokens: u64,
    state: RateLimitState,
}

impl<K> fmt::Debug for Grant<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is deliberately left out: it may identify a client.
        f.debug_struct("Grant")
            .field("charged_tokens", &self.charged_tokens)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Grant<K> {
    pub(crate) fn new(
        limiter: Arc<Limiter<K>>,
        key: K,
        charged_tokens: u64,
        state: RateLimitState,
    ) -> Grant<K> {
        Grant {
            limiter,
            key,
            charged_tokens,
            state,
        }
    }

    /// Bucket states right after admission (for response headers).
    pub fn state(&self) -> &RateLimitState {
        &self.state
    }

    /// Tokens charged at admission (the estimate).
    pub fn charged_tokens(&self) -> u64 {
        self.charged_tokens
    }

    /// Settles the estimate against the `actual` total tokens used.
    pub fn settle(self, actual: u64) {
        self.limiter
            .settle_tokens(&self.key, self.charged_tokens, actual);
    }
}
