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

    /// No API key has a tier.
    pub fn is_empty(&self) -> bool {
        self.priority.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TierConfig;

    fn config() -> Config {
        let mut c = Config::default();
        c.ratelimit.requests_per_minute = 600;
        c.ratelimit.request_burst = 60;
        c.ratelimit.tokens_per_minute = Some(100_000);
        c.tiers = vec![TierConfig {
            name: "gold".into(),
            api_keys: vec!["sk-gold".into()],
            priority: Priority::High,
            requests_per_minute: Some(6_000),
            tokens_per_minute: None,
        }];
        c
    }

    #[test]
    fn tier_keys_get_their_priority_by_hash() {
        let t = TierTable::from_config(&config());
        assert_eq!(
            t.priority_of(&ClientKey::from_bearer("sk-gold")),
            Some(Priority::High)
        );
        assert_eq!(t.priority_of(&ClientKey::from_bearer("sk-other")), None);
        assert!(!format!("{t:?}").contains("sk-gold"));
    }

    #[test]
    fn a_tier_inherits_the_limits_it_does_not_set() {
        let layer = rate_limit_layer(&config());
        let tier = layer.limiter().tier_of(&ClientKey::from_bearer("sk-gold"));
        assert_eq!(tier.requests.map(|l| l.amount()), Some(6_000));
        assert_eq!(
            tier.tokens.map(|l| l.amount()),
            Some(100_000),
            "tokens_per_minute unset in the tier: [ratelimit]'s"
        );
        let default = layer.limiter().tier_of(&ClientKey::from_id("someone"));
        assert_eq!(default.requests.map(|l| l.amount()), Some(600));
    }
}
