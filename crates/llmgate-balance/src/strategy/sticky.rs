//! Sticky sessions: consistent hashing with bounded load.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::basic::p2c;
use super::{Candidate, Strategy};
use llmgate_core::prefix::chain_hash;
use llmgate_core::RequestMeta;

/// Points per endpoint on the ring: enough for an even split.
const VNODES: u32 = 128;

/// Keeps a session (`RequestMeta::session`) on one endpoint: the session key
/// is placed on a hash ring of all known endpoints and goes to the first one
/// clockwise that is ready and under `bound × average` in-flight requests
/// ("consistent hashing with bounded loads", Mirrokni et al.). Adding an
/// endpoint moves only about 1/N of the sessions. Requests without a session
/// go by power of two choices.
#[derive(Debug)]
pub struct StickySessions {
    bound: f64,
    ring: BTreeMap<u64, String>,
    rng: SmallRng,
}

impl StickySessions {
    /// `bound`: how far above the average in-flight count an endpoint may be
    /// and still keep its sessions (1.25 = 25% above).
    pub fn new(bound: f64, seed: u64) -> Self {
        StickySessions {
            bound: bound.max(1.0),
            ring: BTreeMap::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn ensure_on_ring(&mut self, id: &str) {
        let h0 = point(id, 0);
        if self.ring.get(&h0).is_some_and(|x| x == id) {
            return;
        }
        for v in 0..VNODES {
            self.ring.insert(point(id, v), id.to_string());
        }
    }
}

fn point(id: &str, v: u32) -> u64 {
    chain_hash(u64::from(v), id.as_bytes())
}

impl Strategy for StickySessions {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn pick(&mut self, meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        let Some(session) = meta.and_then(|m| m.session.as_deref()) else {
            return p2c(&mut self.rng, c);
        };
        for cand in c {
            self.ensure_on_ring(cand.id);
        }
        let index: HashMap<&str, usize> = c.iter().enumerate().map(|(i, x)| (x.id, i)).collect();
        let total: usize = c.iter().map(|x| x.load.in_flight).sum();
        let cap = ((total + 1) as f64 / c.len() as f64 * self.bound).ceil() as usize;
        let key = chain_hash(0x5e55_1011, session.as_bytes());
        let walk = self.ring.range(key..).chain(self.ring.range(..key));
        let mut first_ready = None;
        for (_, id) in walk {
            if let Some(&i) = index.get(id.as_str()) {
                first_ready.get_or_insert(i);
                if c[i].load.in_flight < cap {
                    return i;
                }
            }
        }
        first_ready.unwrap_or(0)
    }

    fn removed(&mut self, id: &str) {
        self.ring.retain(|_, x| x != id);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use llmgate_core::EndpointKind;

    fn sess(k: usize) -> RequestMeta {
        let mut m = RequestMeta::new(EndpointKind::Chat);
        m.session = Some(format!("session-{k}").into());
        m
    }

    #[test]
    fn sessions_stay_put_and_about_one_nth_move_on_addition() {
        let ids8 = ids(8);
        let v8 = views(&[0; 8]);
        let c8 = cands(&ids8, &v8);
        let mut s = StickySessions::new(1.25, 1);
        let before: Vec<_> = (0..2000)
            .map(|k| c8[s.pick(Some(&sess(k)), &c8)].id)
            .collect();
        let again: Vec<_> = (0..2000)
            .map(|k| c8[s.pick(Some(&sess(k)), &c8)].id)
            .collect();
        assert_eq!(before, again, "stable");
        let ids9 = ids(9);
        let v9 = views(&[0; 9]);
        let c9 = cands(&ids9, &v9);
        let after: Vec<_> = (0..2000)
            .map(|k| c9[s.pick(Some(&sess(k)), &c9)].id)
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Ideal: 1/9 ≈ 222 of 2000.
        assert!((120..=360).contains(&moved), "moved {moved}");
        assert!(
            after.iter().zip(&before).all(|(a, b)| a == b || *a == "r8"),
            "only to the new one"
        );
        // Balanced spread over 9.
        let on_new = after.iter().filter(|x| **x == "r8").count();
        assert!(on_new > 100, "{on_new}");
    }

    #[test]
    fn overloaded_home_spills_to_next_on_ring() {
        let ids = ids(4);
        let v = views(&[0; 4]);
        let c = cands(&ids, &v);
        let mut s = StickySessions::new(1.25, 1);
        let home = s.pick(Some(&sess(7)), &c);
        let mut v2 = views(&[2; 4]);
        v2[home].in_flight = 30;
        let c2 = cands(&ids, &v2);
        let spill = s.pick(Some(&sess(7)), &c2);
        assert_ne!(spill, home);
        assert_eq!(
            s.pick(Some(&sess(7)), &c),
            home,
            "returns home when load allows"
        );
    }
}
