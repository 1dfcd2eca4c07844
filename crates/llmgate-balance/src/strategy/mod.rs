//! Routing strategies: each a small type behind [`Strategy`].
//!
//! The balancer filters endpoints first (ready, serving the model, not
//! avoided by a retry, optionally under GPU thresholds) and hands the rest to
//! the strategy as [`Candidate`]s; the strategy only chooses.

use std::fmt;
use std::str::FromStr;

use llmgate_core::RequestMeta;

use crate::load::LoadView;

mod affinity;
mod basic;
mod gpu;
mod sticky;

pub use affinity::{CacheAffinity, CacheAffinityConfig};
pub use basic::{LeastConnections, LeastLoaded, PowerOfTwoChoices, RoundRobin, WeightedRoundRobin};
pub use gpu::{Adaptive, AdaptiveWeights, GpuAware, GpuThresholds};
pub use sticky::StickySessions;

/// One endpoint the strategy may choose.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Endpoint id.
    pub id: &'a str,
    /// Its load right now.
    pub load: &'a LoadView,
}

/// A routing policy. `pick` is only called with at least one candidate.
pub trait Strategy: Send + Sync + 'static {
    /// Name, as in config and metric labels.
    fn name(&self) -> &'static str;

    /// Index into `candidates` of the chosen endpoint.
    fn pick(&mut self, meta: Option<&RequestMeta>, candidates: &[Candidate<'_>]) -> usize;

    /// Called once the request has been sent to `id` (strategies that learn,
    /// such as cache affinity, record it here).
    fn routed(&mut self, meta: Option<&RequestMeta>, id: &str) {
        let _ = (meta, id);
    }

    /// Called when an endpoint leaves the fleet.
    fn removed(&mut self, id: &str) {
        let _ = id;
    }
}

impl fmt::Debug for dyn Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Strategy({})", self.name())
    }
}

/// The strategies by name, for configuration and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// [`RoundRobin`]
    RoundRobin,
    /// [`WeightedRoundRobin`]
    WeightedRoundRobin,
    /// [`LeastConnections`]
    LeastConnections,
    /// [`LeastLoaded`]
    LeastLoaded,
    /// [`GpuAware`]
    GpuAware,
    /// [`Adaptive`]
    Adaptive,
    /// [`PowerOfTwoChoices`] (the default)
    P2c,
    /// [`CacheAffinity`]
    CacheAffinity,
    /// [`StickySessions`]
    Sticky,
}

impl StrategyKind {
    /// Every strategy, in table order.
    pub const ALL: [StrategyKind; 9] = [
        StrategyKind::RoundRobin,
        StrategyKind::WeightedRoundRobin,
        StrategyKind::LeastConnections,
        StrategyKind::LeastLoaded,
        StrategyKind::GpuAware,
        StrategyKind::Adaptive,
        StrategyKind::P2c,
        StrategyKind::CacheAffinity,
        StrategyKind::Sticky,
    ];

    /// Config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::WeightedRoundRobin => "weighted_round_robin",
            StrategyKind::LeastConnections => "least_connections",
            StrategyKind::LeastLoaded => "least_loaded",
            StrategyKind::GpuAware => "gpu_aware",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::P2c => "p2c",
            StrategyKind::CacheAffinity => "cache_affinity",
            StrategyKind::Sticky => "sticky",
        }
    }

    /// A fresh strategy of this kind with default settings; `seed` feeds the
    /// randomized ones.
    pub fn build(self, seed: u64) -> Box<dyn Strategy> {
        match self {
            StrategyKind::RoundRobin => Box::new(RoundRobin::default()),
            StrategyKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::default()),
            StrategyKind::LeastConnections => Box::new(LeastConnections::default()),
            StrategyKind::LeastLoaded => Box::new(LeastLoaded),
            StrategyKind::GpuAware => Box::new(GpuAware::new(GpuThresholds::default())),
            StrategyKind::Adaptive => Box::new(Adaptive::new(AdaptiveWeights::default())),
            StrategyKind::P2c => Box::new(PowerOfTwoChoices::seeded(seed)),
            StrategyKind::CacheAffinity => {
                Box::new(CacheAffinity::new(CacheAffinityConfig::default(), seed))
            }
            StrategyKind::Sticky => Box::new(StickySessions::new(1.25, seed)),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown routing strategy {0:?}: expected one of round_robin, weighted_round_robin, least_connections, least_loaded, gpu_aware, adaptive, p2c, cache_affinity, sticky")]
pub struct UnknownStrategy(pub String);

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match norm.as_str() {
            "rr" => "round_robin",
            "wrr" | "weighted" => "weighted_round_robin",
            "least_conn" => "least_connections",
            "power_of_two" | "power_of_two_choices" => "p2c",
            "prefix" | "cache_aware" | "affinity" => "cache_affinity",
            "sticky_sessions" | "session" => "sticky",
            other => other,
        };
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == alias)
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}

/// Index of the candidate with the smallest `key`, ties to the first.
pub(crate) fn argmin_by<F: Fn(&Candidate<'_>) -> f64>(c: &[Candidate<'_>], key: F) -> usize {
    let mut best = 0;
    let mut best_v = f64::INFINITY;
    for (i, cand) in c.iter().enumerate() {
        let v = key(cand);
        if v < best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn views(in_flight: &[usize]) -> Vec<LoadView> {
        in_flight
            .iter()
            .map(|&n| LoadView {
                in_flight: n,
                max_concurrent: 100,
                weight: 1,
                ..Default::default()
            })
            .collect()
    }

    pub(crate) fn cands<'a>(ids: &'a [String], views: &'a [LoadView]) -> Vec<Candidate<'a>> {
        ids.iter()
            .zip(views)
            .map(|(id, load)| Candidate { id, load })
            .collect()
    }

    pub(crate) fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for k in StrategyKind::ALL {
            assert_eq!(k.as_str().parse::<StrategyKind>().unwrap(), k);
            assert_eq!(k.build(1).name(), k.as_str());
        }
        assert_eq!(
            "Power-Of-Two".parse::<StrategyKind>().unwrap(),
            StrategyKind::P2c
        );
        let e = "fastest".parse::<StrategyKind>().unwrap_err();
        assert!(e.to_string().contains("p2c"));
    }
}
