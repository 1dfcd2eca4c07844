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

/// "Not a candidate" in the slot table.
const NONE: u32 = u32::MAX;

/// Keeps a session (`RequestMeta::session`) on one endpoint: the session key
/// is placed on a hash ring of all known endpoints and goes to the first one
/// clockwise that is ready and under `bound × average` in-flight requests
/// ("consistent hashing with bounded loads", Mirrokni et al.). Adding an
/// endpoint moves only about 1/N of the sessions. Requests without a session
/// go by power of two choices.
///
/// A pick costs O(log ring) plus one pass over the candidates' in-flight
/// counts: endpoints are numbered, and the table from endpoint number to
/// candidate index is rebuilt only when the candidate slice changes (a
/// fingerprint of its ids' addresses), and checked against the ids on use.
#[derive(Debug)]
pub struct StickySessions {
    bound: f64,
    /// Ring point → endpoint number.
    ring: BTreeMap<u64, u32>,
    /// Endpoint number → id (`None`: free).
    names: Vec<Option<Box<str>>>,
    numbers: HashMap<Box<str>, u32>,
    free: Vec<u32>,
    /// Endpoint number → index in the candidate slice last seen, or [`NONE`].
    slots: Vec<u32>,
    /// Fingerprint of the candidate slice `slots` was built for.
    built_for: Option<u64>,
    rng: SmallRng,
}

impl StickySessions {
    /// `bound`: how far above the average in-flight count an endpoint may be
    /// and still keep its sessions (1.25 = 25% above).
    pub fn new(bound: f64, seed: u64) -> Self {
        StickySessions {
            bound: bound.max(1.0),
            ring: BTreeMap::new(),
            names: Vec::new(),
            numbers: HashMap::new(),
            free: Vec::new(),
            slots: Vec::new(),
            built_for: None,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The endpoint's number; a new endpoint is put on the ring.
    fn number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.numbers.get(id) {
            return n;
        }
        let n = match self.free.pop() {
            Some(n) => n,
            None => {
                self.names.push(None);
                self.slots.push(NONE);
                (self.names.len() - 1) as u32
            }
        };
        self.names[n as usize] = Some(id.into());
        self.numbers.insert(id.into(), n);
        for v in 0..VNODES {
            self.ring.insert(point(id, v), n);
        }
        n
    }

    fn rebuild(&mut self, c: &[Candidate<'_>]) {
        self.slots.fill(NONE);
        for (i, cand) in c.iter().enumerate() {
            let n = self.number(cand.id);
            self.slots[n as usize] = i as u32;
        }
        self.built_for = Some(fingerprint(c));
    }

    /// Walks the ring from `key`: the first candidate under `cap`, else the
    /// first candidate met. `None` when the slot table turns out stale.
    fn walk(&self, key: u64, cap: usize, c: &[Candidate<'_>]) -> Option<usize> {
        let mut first_ready = None;
        for (_, &n) in self.ring.range(key..).chain(self.ring.range(..key)) {
            let i = self.slots[n as usize];
            if i == NONE {
                continue;
            }
            let i = i as usize;
            if c.get(i).map(|x| x.id) != self.names[n as usize].as_deref() {
                return None;
            }
            first_ready.get_or_insert(i);
            if c[i].load.in_flight < cap {
                return Some(i);
            }
        }
        Some(first_ready.unwrap_or(0))
    }
}

fn point(id: &str, v: u32) -> u64 {
    chain_hash(u64::from(v), id.as_bytes())
}

/// Order-sensitive hash of the candidates' id addresses and lengths: equal
/// for the same slice of the same ids (the balancer hands the same `Arc<str>`
/// ids on every pick), almost surely different otherwise.
fn fingerprint(c: &[Candidate<'_>]) -> u64 {
    c.iter().fold(c.len() as u64, |h, x| {
        (h.rotate_left(7) ^ (x.id.as_ptr() as u64) ^ ((x.id.len() as u64) << 48))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    })
}

impl Strategy for StickySessions {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn pick(&mut self, meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        let Some(session) = meta.and_then(|m| m.session.as_deref()) else {
            return p2c(&mut self.rng, meta, c);
        };
        if self.built_for != Some(fingerprint(c)) {
            self.rebuild(c);
        }
        let total: usize = c.iter().map(|x| x.load.in_flight).sum();
        let cap = ((total + 1) as f64 / c.len() as f64 * self.bound).ceil() as usize;
        let key = chain_hash(0x5e55_1011, session.as_bytes());
        match self.walk(key, cap, c) {
            Some(i) => i,
            None => {
                // A fingerprint collision: rebuild, then the table is exact.
                self.rebuild(c);
                self.walk(key, cap, c).unwrap_or(0)
            }
        }
    }

    fn removed(&mut self, id: &str) {
        if let Some(n) = self.numbers.remove(id) {
            self.ring.retain(|_, x| *x != n);
            self.names[n as usize] = None;
            self.slots[n as usize] = NONE;
            self.free.push(n);
            self.built_for = None;
        }
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
    #[test]
    fn removed_endpoint_leaves_the_ring_and_a_stale_table_is_caught() {
        let ids4 = ids(4);
        let v = views(&[0; 4]);
        let c = cands(&ids4, &v);
        let mut s = StickySessions::new(1.25, 1);
        let homes: Vec<usize> = (0..200).map(|k| s.pick(Some(&sess(k)), &c)).collect();
        // r1 leaves: its sessions move, the others stay.
        s.removed("r1");
        assert_eq!(s.ring.len() as u32, 3 * VNODES);
        let ids3: Vec<String> = ["r0", "r2", "r3"].map(String::from).to_vec();
        let v3 = views(&[0; 3]);
        let c3 = cands(&ids3, &v3);
        for (k, &h) in homes.iter().enumerate() {
            let now = c3[s.pick(Some(&sess(k)), &c3)].id;
            assert_ne!(now, "r1");
            if ids4[h] != "r1" {
                assert_eq!(now, ids4[h], "session {k} moved");
            }
        }
        // A table built for another slice (as after a fingerprint
        // collision) is detected and rebuilt: same answers as a fresh one.
        let fresh: Vec<usize> = {
            let mut f = StickySessions::new(1.25, 1);
            (0..50).map(|k| f.pick(Some(&sess(k)), &c3)).collect()
        };
        let reversed: Vec<String> = ids3.iter().rev().cloned().collect();
        s.rebuild(&cands(&reversed, &v3));
        s.built_for = Some(fingerprint(&c3));
        for (k, &want) in fresh.iter().enumerate() {
            assert_eq!(c3[s.pick(Some(&sess(k)), &c3)].id, c3[want].id);
        }
    }
}
