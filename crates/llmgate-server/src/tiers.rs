//! API-key tiers: a tier gives its keys a default priority and their own
//! rate limits.

use std::collections::HashMap;
use std::sync::Arc;

use llmgate_core::{ClientKey, Priority};
use llmgate_ratelimit::{Limit, RateLimitLayer, Tier};

use crate::config::Config;

/// Client key (the keyed hash of an API key) → tier priority.
#[derive(Clone, Default)]
pub struct TierTable {
    priority: Arc<HashMap<ClientKey, Priority>>,
}

impl std::fmt::Debug for TierTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TierTable({} keys)", self.priority.len())
    }
}

impl TierTable {
    /// Hashes every configured API key the same way `ClientKey` does, so raw
    /// keys are not kept past start-up.
    pub fn from_config(config: &Config) -> TierTable {
        let mut map = HashMap::new();
        for t in &config.tiers {
            for key in &t.api_keys {
                map.insert(ClientKey::from_bearer(key), t.priority);
            }
        }
        TierTable {
            priority: Arc::new(map),
        }
    }

    /// The default priority of a client, if its API key is in a tier.
    pub fn priority_of(&self, client: &ClientKey) -> Option<Priority> {
        self.priority.get(client).copied()
    }
}

/// The rate-limit layer: the `[ratelimit]` defaults plus one override per
/// tier key.
pub fn rate_limit_layer(config: &Config) -> RateLimitLayer {
    let rl = &config.ratelimit;
    let mut b = RateLimitLayer::builder().requests(
        Limit::per_minute(u64::from(rl.requests_per_minute)).burst(u64::from(rl.request_burst)),
    );
    if let Some(t) = rl.tokens_per_minute {
        let mut limit = Limit::per_minute(t);
        if let Some(burst) = rl.token_burst {
            limit = limit.burst(burst);
        }
        b = b.tokens(limit);
    }
    for t in &config.tiers {
        let mut tier = Tier::new();
        if let Some(r) = t.requests_per_minute {
            tier = tier.requests(Limit::per_minute(u64::from(r)));
        }
        if let Some(tok) = t.tokens_per_minute {
            tier = tier.tokens(Limit::per_minute(tok));
        }
        for key in &t.api_keys {
            b = b.tier(ClientKey::from_bearer(key), tier);
        }
    }
    b.build()
}
