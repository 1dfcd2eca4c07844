//! Cache affinity: send a request where its prompt prefix is likely cached.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::basic::p2c;
use super::{argmin_by, Candidate, Strategy};
use llmgate_core::RequestMeta;

/// Settings of [`CacheAffinity`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheAffinityConfig {
    /// Affinity holds while the matched endpoint's queue exceeds the least
    /// loaded one's by at most this many requests... (default 8)
    pub max_queue_excess: f64,
    /// ...or by at most this ratio (default 1.5). Exceeding both breaks
    /// affinity and the request is balanced instead.
    pub max_queue_ratio: f64,
    /// Prefix blocks remembered (default 1,000,000; about 40 MB).
    pub max_blocks: usize,
}

impl Default for CacheAffinityConfig {
    fn default() -> Self {
        CacheAffinityConfig {
            max_queue_excess: 8.0,
            max_queue_ratio: 1.5,
            max_blocks: 1_000_000,
        }
    }
}

/// Routes a request to the endpoint that most recently served the longest
/// matching prefix of its block hashes (see `llmgate_core::prefix`), unless
/// that endpoint is overloaded compared to the least-loaded one; requests with
/// no match go by power of two choices. The table is an approximation of the
/// replicas' prefix caches (like SGLang's router's radix tree, without the
/// tree: block hashes are already chained, so each one stands for its whole
/// prefix).
#[derive(Debug)]
pub struct CacheAffinity {
    cfg: CacheAffinityConfig,
    /// block hash → (endpoint, tick of last use)
    table: HashMap<u64, (Arc<str>, u64)>,
    tick: u64,
    rng: SmallRng,
}

impl CacheAffinity {
    /// With `cfg`; `seed` feeds the fallback's randomness.
    pub fn new(cfg: CacheAffinityConfig, seed: u64) -> Self {
        CacheAffinity {
            cfg,
            table: HashMap::new(),
            tick: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Blocks remembered.
    pub fn remembered_blocks(&self) -> usize {
        self.table.len()
    }

    fn evict_oldest_half(&mut self) {
        let mut ticks: Vec<u64> = self.table.values().map(|(_, t)| *t).collect();
        let mid = ticks.len() / 2;
        let (_, cut, _) = ticks.select_nth_unstable(mid);
        let cut = *cut;
        self.table.retain(|_, (_, t)| *t > cut);
    }
}

impl Strategy for CacheAffinity {
    fn name(&self) -> &'static str {
        "cache_affinity"
    }

    fn pick(&mut self, meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        let hashes = meta.map(|m| &m.prefix_hashes[..]).unwrap_or(&[]);
        // Longest matching prefix whose endpoint is a candidate now.
        let matched = hashes.iter().rev().find_map(|h| {
            let (ep, _) = self.table.get(h)?;
            c.iter().position(|x| x.id == &**ep)
        });
        let Some(i) = matched else {
            return p2c(&mut self.rng, meta, c);
        };
        let least = argmin_by(c, |x| x.load.queue_depth());
        let q = c[i].load.queue_depth();
        let q_min = c[least].load.queue_depth();
        let overloaded =
            q - q_min > self.cfg.max_queue_excess && q > q_min * self.cfg.max_queue_ratio;
        if overloaded {
            least
        } else {
            i
        }
    }

    fn routed(&mut self, meta: Option<&RequestMeta>, id: &str) {
        let Some(meta) = meta else { return };
        if meta.prefix_hashes.is_empty() {
            return;
        }
        self.tick += 1;
        let ep: Arc<str> = Arc::from(id);
        for h in meta.prefix_hashes.iter() {
            self.table.insert(*h, (ep.clone(), self.tick));
        }
        if self.table.len() > self.cfg.max_blocks {
            self.evict_oldest_half();
        }
    }

    fn removed(&mut self, id: &str) {
        self.table.retain(|_, (ep, _)| &**ep != id);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use llmgate_core::{EndpointKind, RequestMeta};

    fn req(hashes: &[u64]) -> RequestMeta {
        let mut m = RequestMeta::new(EndpointKind::Chat);
        m.prefix_hashes = Arc::from(hashes.to_vec());
        m
    }

    #[test]
    fn affinity_kept_for_shared_prefix_and_broken_by_load_margin() {
        let ids = ids(4);
        let v = views(&[3, 3, 3, 3]);
        let c = cands(&ids, &v);
        let mut s = CacheAffinity::new(CacheAffinityConfig::default(), 1);
        let first = req(&[10, 11, 12]);
        let i = s.pick(Some(&first), &c);
        s.routed(Some(&first), c[i].id);
        // Shares blocks 10 and 11: same endpoint, every time.
        for _ in 0..20 {
            assert_eq!(s.pick(Some(&req(&[10, 11, 99])), &c), i);
        }
        // The matched endpoint is now far busier than the least loaded: balance.
        let mut v2 = views(&[3, 3, 3, 3]);
        v2[i].in_flight = 40;
        let c2 = cands(&ids, &v2);
        let j = s.pick(Some(&req(&[10, 11, 99])), &c2);
        assert_ne!(j, i);
        // Within the margin (excess 5 < 8): affinity holds.
        v2[i].in_flight = 8;
        let c3 = cands(&ids, &v2);
        assert_eq!(s.pick(Some(&req(&[10, 11, 99])), &c3), i);
    }

    #[test]
    fn longest_match_wins_and_removed_endpoint_forgotten() {
        let ids = ids(3);
        let v = views(&[0, 0, 0]);
        let c = cands(&ids, &v);
        let mut s = CacheAffinity::new(CacheAffinityConfig::default(), 1);
        s.routed(Some(&req(&[1])), "r0");
        s.routed(Some(&req(&[1, 2, 3])), "r2");
        // Block 1 was last served by r2, and r2 has the longest match.
        assert_eq!(s.pick(Some(&req(&[1, 2, 3, 4])), &c), 2);
        s.routed(Some(&req(&[7])), "r0");
        s.routed(Some(&req(&[7, 8])), "r1");
        s.routed(Some(&req(&[7])), "r0");
        // Block 8 is on r1 even though block 7 was re-routed to r0 since.
        assert_eq!(s.pick(Some(&req(&[7, 8, 9])), &c), 1);
        assert_eq!(s.pick(Some(&req(&[7, 5])), &c), 0);
        s.removed("r2");
        assert_eq!(s.remembered_blocks(), 2, "r2's blocks 1-3 are forgotten");
    }

    #[test]
    fn table_stays_bounded() {
        let cfg = CacheAffinityConfig {
            max_blocks: 1000,
            ..Default::default()
        };
        let mut s = CacheAffinity::new(cfg, 1);
        for k in 0..10_000u64 {
            s.routed(Some(&req(&[k * 3, k * 3 + 1, k * 3 + 2])), "r0");
            assert!(s.remembered_blocks() <= 1000);
        }
        assert!(s.remembered_blocks() >= 400);
    }
}
