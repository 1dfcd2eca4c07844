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
    let requests =
        Limit::per_minute(u64::from(rl.requests_per_minute)).burst(u64::from(rl.request_burst));
    let tokens = rl.tokens_per_minute.map(|t| {
        let limit = Limit::per_minute(t);
        match rl.token_burst {
            Some(burst) => limit.burst(burst),
            None => limit,
        }
    });
    let mut b = RateLimitLayer::builder().requests(requests);
    if let Some(t) = tokens {
        b = b.tokens(t);
    }
    for t in &config.tiers {
        // A tier replaces the defaults in the limiter; a limit the tier does
        // not set is `[ratelimit]`'s, as the config documents.
        let mut tier = Tier::new().requests(
            t.requests_per_minute
                .map(|r| Limit::per_minute(u64::from(r)))
                .unwrap_or(requests),
        );
        if let Some(tok) = t.tokens_per_minute.map(Limit::per_minute).or(tokens) {
            tier = tier.tokens(tok);
        }
        for key in &t.api_keys {
            b = b.tier(ClientKey::from_bearer(key), tier);
        }
    }
    b.build()
}
