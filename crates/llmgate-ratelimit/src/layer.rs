//! [`RateLimitLayer`] and its [`Builder`].

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use llmgate_core::ClientKey;
use tower::Layer;

use crate::key::{MetaClientKey, MetaTokenCost};
use crate::limit::{Limit, Tier};
use crate::limiter::{Limiter, LimiterConfig};
use crate::response::HttpSettle;
use crate::service::RateLimit;

/// Applies keyed request and token limits to a service; see the crate docs.
///
/// Clones share the same buckets.
pub struct RateLimitLayer<K = ClientKey, E = MetaClientKey, C = MetaTokenCost, H = HttpSettle> {
    limiter: Arc<Limiter<K>>,
    extractor: E,
    cost: C,
    on_response: H,
}

impl<K, E: Clone, C: Clone, H: Clone> Clone for RateLimitLayer<K, E, C, H> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
            cost: self.cost.clone(),
            on_response: self.on_response.clone(),
        }
    }
}

impl<K, E: fmt::Debug, C: fmt::Debug, H: fmt::Debug> fmt::Debug for RateLimitLayer<K, E, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("extractor", &self.extractor)
            .field("cost", &self.cost)
            .field("on_response", &self.on_response)
            .finish()
    }
}

impl RateLimitLayer {
    /// A builder for HTTP services: keys from `RequestMeta.client`, cost
    /// from `RequestMeta` tokens, `x-ratelimit-*` headers and usage
    /// settlement on answers. No limits until set.
    pub fn builder() -> Builder {
        Builder::with_parts(
            MetaClientKey,
            MetaTokenCost::default(),
            HttpSettle::default(),
        )
    }
}

impl<K: Hash + Eq + Clone, E, C, H> RateLimitLayer<K, E, C, H> {
    /// The shared buckets (live key count, manual sweep, state of a key).
    pub fn limiter(&self) -> &Arc<Limiter<K>> {
        &self.limiter
    }
}

impl<S, K, E: Clone, C: Clone, H: Clone> Layer<S> for RateLimitLayer<K, E, C, H> {
    type Service = RateLimit<S, K, E, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(
            inner,
            self.limiter.clone(),
            self.extractor.clone(),
            self.cost.clone(),
            self.on_response.clone(),
        )
    }
}

/// Configures a [`RateLimitLayer`].
///
/// ```
/// use std::time::Duration;
/// use llmgate_core::ClientKey;
/// use llmgate_ratelimit::{Limit, RateLimitLayer, Tier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = RateLimitLayer::builder()
///     .requests(Limit::per_minute(60).burst(10))
///     .tokens(Limit::per_minute(90_000))
///     .tier(
///         ClientKey::from_id("gold"),
///         Tier::new().requests(Limit::per_minute(600)).tokens(Limit::per_minute(1_000_000)),
///     )
///     .default_max_tokens(512)
///     .idle_ttl(Duration::from_secs(300))
///     .build();
/// assert_eq!(layer.limiter().live_keys(), 0);
/// # }
/// ```
pub struct Builder<K = ClientKey, E = MetaClientKey, C = MetaTokenCost, H = HttpSettle> {
    config: LimiterConfig<K>,
    extractor: E,
    cost: C,
    on_response: H,
}

impl<K, E: fmt::Debug, C: fmt::Debug, H: fmt::Debug> fmt::Debug for Builder<K, E, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("defaults", &self.config.defaults)
            .field("tiers", &self.config.tiers.len())
            .field("idle_ttl", &self.config.idle_ttl)
            .field("shards", &self.config.shards)
            .field("extractor", &self.extractor)
            .field("cost", &self.cost)
            .field("on_response", &self.on_response)
            .finish()
    }
}

impl<K, E, C, H> Builder<K, E, C, H> {
    /// A builder for any request type: `extractor` picks the key, `cost`
    /// estimates tokens, `on_response` handles allowed answers
    /// ([`crate::NoSettle`] for non-HTTP answers).
    pub fn with_parts(extractor: E, cost: C, on_response: H) -> Builder<K, E, C, H> {
        Builder {
            config: LimiterConfig::default(),
            extractor,
            cost,
            on_response,
        }
    }

    /// Default requests limit (each request costs 1).
    pub fn requests(mut self, limit: Limit) -> Self {
        self.config.defaults.requests = Some(limit);
        self
    }

    /// Default tokens limit (each request costs its estimated tokens).
    pub fn tokens(mut self, limit: Limit) -> Self {
        self.config.defaults.tokens = Some(limit);
        self
    }

    /// Sets both default limits at once.
    pub fn defaults(mut self, tier: Tier) -> Self {
        self.config.defaults = tier;
        self
    }

    /// Time after which a full, untouched bucket is dropped (default 600 s).
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.config.idle_ttl = ttl;
        self
    }

    /// Number of lock shards (rounded up to a power of two; default 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// Whether checks sweep idle buckets of their shard when due (default
    /// on). Turn off only if something calls [`Limiter::sweep`] regularly.
    pub fn sweep_on_access(mut self, on: bool) -> Self {
        self.config.sweep_on_access = on;
        self
    }

    /// Replaces the response hook.
    pub fn on_response<H2>(self, on_response: H2) -> Builder<K, E, C, H2> {
        Builder {
            config: self.config,
            extractor: self.extractor,
            cost: self.cost,
            on_response,
        }
    }

    /// Replaces the token cost.
    pub fn token_cost<C2>(self, cost: C2) -> Builder<K, E, C2, H> {
        Builder {
            config: self.config,
            extractor: self.extractor,
            cost,
            on_response: self.on_response,
        }
    }
}

impl<K: Hash + Eq, E, C, H> Builder<K, E, C, H> {
    /// Per-key override: `key` gets `tier` instead of the defaults.
    pub fn tier(mut self, key: K, tier: Tier) -> Self {
        self.config.tiers.insert(key, tier);
        self
    }

    /// Per-key overrides from a map.
    pub fn tiers(mut self, tiers: impl IntoIterator<Item = (K, Tier)>) -> Self {
        self.config.tiers.extend(tiers);
        self
    }

    /// Replaces the key extractor (and the key type; tiers set so far must
    /// be of the new key type, so set the extractor first).
    pub fn key_extractor<K2, E2>(self, extractor: E2) -> Builder<K2, E2, C, H> {
        Builder {
            config: LimiterConfig {
                defaults: self.config.defaults,
                tiers: HashMap::new(),
                idle_ttl: self.config.idle_ttl,
                shards: self.config.shards,
                sweep_on_access: self.config.sweep_on_access,
            },
            extractor,
            cost: self.cost,
            on_response: self.on_response,
        }
    }
}

impl<K: Hash + Eq + Clone, E, C, H> Builder<K, E, C, H> {
    /// Builds the layer.
    pub fn build(self) -> RateLimitLayer<K, E, C, H> {
        RateLimitLayer {
            limiter: Arc::new(Limiter::from_config(self.config)),
            extractor: self.extractor,
            cost: self.cost,
            on_response: self.on_response,
        }
    }
}

impl<K, E, H> Builder<K, E, MetaTokenCost, H> {
    /// `max_tokens` assumed for requests that name none (default 256).
    pub fn default_max_tokens(mut self, tokens: u32) -> Self {
        self.cost = MetaTokenCost::new(tokens);
        self
    }
}

impl<K, E, C> Builder<K, E, C, HttpSettle> {
    /// Largest JSON answer scanned for `usage` (default 256 KiB).
    pub fn json_scan_limit(mut self, bytes: usize) -> Self {
        self.on_response = HttpSettle::new(bytes);
        self
    }
}
