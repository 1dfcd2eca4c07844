//! Load-blind and simple load-aware strategies.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{argmin_by, Candidate, Strategy};
use llmgate_core::RequestMeta;

/// Each endpoint in turn, in id order, whatever the set of ready endpoints
/// is at the moment.
#[derive(Debug, Default)]
pub struct RoundRobin {
    last: Option<String>,
}

impl Strategy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn pick(&mut self, _meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        // The next id after the last one picked, wrapping to the smallest:
        // stays fair while endpoints come and go.
        let mut next: Option<usize> = None;
        let mut first = 0;
        for (i, cand) in c.iter().enumerate() {
            if cand.id < c[first].id {
                first = i;
            }
            let after_last = self.last.as_deref().is_none_or(|l| cand.id > l);
            if after_last && next.is_none_or(|n| cand.id < c[n].id) {
                next = Some(i);
            }
        }
        let i = next.unwrap_or(first);
        let last = self.last.get_or_insert_with(String::new);
        last.clear();
        last.push_str(c[i].id);
        i
    }
}

/// Smooth weighted round robin (nginx's): over a cycle each endpoint gets
/// picks in proportion to its weight, interleaved rather than in bursts.
///
/// The current weights of the candidate slice last seen are kept in a vector
/// aligned with it, so that a pick over the same candidates hashes nothing;
/// the others wait in a map.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Current weights of endpoints not in `aligned`.
    current: HashMap<String, i64>,
    /// (id, current weight) of the candidate slice last seen, in its order.
    aligned: Vec<(Box<str>, i64)>,
}

impl WeightedRoundRobin {
    /// Aligns `aligned` with `c`, parking the weights of the others.
    fn align(&mut self, c: &[Candidate<'_>]) {
        let same = self.aligned.len() == c.len()
            && self.aligned.iter().zip(c).all(|((id, _), x)| **id == *x.id);
        if same {
            return;
        }
        for (id, cw) in self.aligned.drain(..) {
            self.current.insert(id.into(), cw);
        }
        self.aligned.extend(
            c.iter()
                .map(|x| (Box::from(x.id), self.current.remove(x.id).unwrap_or(0))),
        );
    }
}

impl Strategy for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }

    fn pick(&mut self, _meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        self.align(c);
        let mut total = 0i64;
        let mut best = 0usize;
        let mut best_cw = i64::MIN;
        for (i, (cand, (_, cw))) in c.iter().zip(self.aligned.iter_mut()).enumerate() {
            let w = i64::from(cand.load.weight.max(1));
            total += w;
            *cw += w;
            if *cw > best_cw {
                best_cw = *cw;
                best = i;
            }
        }
        self.aligned[best].1 -= total;
        best
    }

    fn removed(&mut self, id: &str) {
        self.current.remove(id);
        self.aligned.retain(|(x, _)| &**x != id);
    }
}

/// Fewest requests in flight from this balancer; ties rotate.
#[derive(Debug, Default)]
pub struct LeastConnections {
    tie: usize,
}

impl Strategy for LeastConnections {
    fn name(&self) -> &'static str {
        "least_connections"
    }

    fn pick(&mut self, _meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        self.tie = self.tie.wrapping_add(1);
        let start = self.tie % c.len();
        let mut best = start;
        for k in 0..c.len() {
            let i = (start + k) % c.len();
            if c[i].load.in_flight < c[best].load.in_flight {
                best = i;
            }
        }
        best
    }
}

/// The seed design's score: lowest `0.7 × in-flight + 0.3 × engine queue`.
#[derive(Debug, Default)]
pub struct LeastLoaded;

impl Strategy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least_loaded"
    }

    fn pick(&mut self, _meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        argmin_by(c, |x| x.load.least_loaded_score())
    }
}

/// Power of two choices over [`EndpointLoad`](crate::EndpointLoad), a
/// predicted time to first token: two distinct endpoints at random, the one
/// that would answer this request's first token sooner wins. Near
/// least-loaded quality at O(1) cost, and without a full scan's herding
/// onto whichever endpoint an imperfect prediction favours (in an offline
/// model of the bench's heterogeneous fleet at 80% load, a scan's TTFT p99
/// was up to 1.5 times p2c's).
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    rng: SmallRng,
}

impl PowerOfTwoChoices {
    /// With a seeded generator (deterministic in tests).
    pub fn seeded(seed: u64) -> Self {
        PowerOfTwoChoices {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Strategy for PowerOfTwoChoices {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick(&mut self, meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        p2c(&mut self.rng, meta, c)
    }
}

/// Two distinct random candidates, the one with the lower predicted time to
/// first token for this request ([`LoadView::cost_for`] its prompt).
pub(crate) fn p2c(rng: &mut SmallRng, meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
    let prompt = meta.map_or(0, |m| m.prompt_tokens);
    match c.len() {
        0 | 1 => 0,
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            if c[b].load.cost_for(prompt) < c[a].load.cost_for(prompt) {
                b
            } else {
                a
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn round_robin_cycles_in_id_order_and_survives_set_changes() {
        let ids = ids(3);
        let v = views(&[0, 0, 0]);
        let c = cands(&ids, &v);
        let mut rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| c[rr.pick(None, &c)].id).collect();
        assert_eq!(picks, ["r0", "r1", "r2", "r0", "r1", "r2"]);
        // r1 drops out: r0 -> r2 -> r0
        let c2 = vec![c[0], c[2]];
        let picks: Vec<_> = (0..3).map(|_| c2[rr.pick(None, &c2)].id).collect();
        assert_eq!(picks, ["r0", "r2", "r0"]);
    }

    #[test]
    fn weighted_round_robin_is_proportional_and_smooth() {
        let ids = ids(3);
        let mut v = views(&[0, 0, 0]);
        v[0].weight = 5;
        v[1].weight = 1;
        v[2].weight = 1;
        let c = cands(&ids, &v);
        let mut wrr = WeightedRoundRobin::default();
        let picks: Vec<_> = (0..7).map(|_| c[wrr.pick(None, &c)].id).collect();
        // nginx's documented sequence for weights 5,1,1.
        assert_eq!(picks, ["r0", "r0", "r1", "r0", "r2", "r0", "r0"]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[wrr.pick(None, &c)] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
        // A pick over another candidate set (r1, r2) in between leaves r0's
        // weight alone: r0 still gets 5 of the 7 picks of the full cycle.
        let mut wrr = WeightedRoundRobin::default();
        let sub = cands(&ids[1..], &v[1..]);
        let mut got = Vec::new();
        for k in 0..7 {
            got.push(c[wrr.pick(None, &c)].id);
            if k == 2 {
                let _ = wrr.pick(None, &sub);
            }
        }
        assert_eq!(got[..3], ["r0", "r0", "r1"]);
        assert_eq!(got.iter().filter(|x| **x == "r0").count(), 5, "{got:?}");
        // A removed endpoint is forgotten; the rest keep their proportions.
        wrr.removed("r1");
        let c02 = [c[0], c[2]];
        let picks: Vec<_> = (0..12).map(|_| c02[wrr.pick(None, &c02)].id).collect();
        assert_eq!(
            picks.iter().filter(|x| **x == "r0").count(),
            10,
            "{picks:?}"
        );
    }

    #[test]
    fn least_connections_and_least_loaded_take_the_minimum() {
        let ids = ids(3);
        let v = views(&[5, 2, 7]);
        let c = cands(&ids, &v);
        assert_eq!(LeastConnections::default().pick(None, &c), 1);
        let mut v2 = views(&[2, 2, 3]);
        v2[0].engine = Some(crate::load::EngineView {
            running: 0.0,
            waiting: 10.0,
            kv_cache_usage: 0.0,
        });
        let c2 = cands(&ids, &v2);
        // r0: 1.4 + 3 = 4.4, r1: 1.4, r2: 2.1
        assert_eq!(LeastLoaded.pick(None, &c2), 1);
    }

    #[test]
    fn p2c_never_picks_the_worst_of_two_and_is_seeded() {
        let ids2 = ids(2);
        let v = views(&[0, 50]);
        let c = cands(&ids2, &v);
        let mut p = PowerOfTwoChoices::seeded(7);
        for _ in 0..100 {
            assert_eq!(p.pick(None, &c), 0);
        }
        let ids = ids(8);
        let v = views(&[3, 1, 4, 1, 5, 9, 2, 6]);
        let c = cands(&ids, &v);
        let a: Vec<_> = {
            let mut p = PowerOfTwoChoices::seeded(42);
            (0..50).map(|_| p.pick(None, &c)).collect()
        };
        let b: Vec<_> = {
            let mut p = PowerOfTwoChoices::seeded(42);
            (0..50).map(|_| p.pick(None, &c)).collect()
        };
        assert_eq!(a, b, "same seed, same picks");
        // The most loaded endpoint (index 5) can never win a pair.
        assert!(!a.contains(&5));
    }
}
