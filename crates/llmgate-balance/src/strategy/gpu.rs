//! Strategies that read GPU telemetry.

use serde::{Deserialize, Serialize};

use super::{argmin_by, Candidate, Strategy};
use crate::load::{gpu_score, LoadView};
use llmgate_core::RequestMeta;

/// Limits above which an endpoint's GPU counts as overloaded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuThresholds {
    /// GPU utilization, percent (default 95).
    pub max_utilization_pct: f64,
    /// Memory in use, fraction (default 0.95).
    pub max_memory_fraction: f64,
    /// Temperature, °C (default 85).
    pub max_temperature_c: f64,
}

impl Default for GpuThresholds {
    fn default() -> Self {
        GpuThresholds {
            max_utilization_pct: 95.0,
            max_memory_fraction: 0.95,
            max_temperature_c: 85.0,
        }
    }
}

impl GpuThresholds {
    /// Whether `load`'s GPU is over a threshold. No fresh GPU reading means
    /// nothing is known against it: not over.
    pub fn exceeded(&self, load: &LoadView) -> bool {
        load.gpu.as_ref().is_some_and(|g| {
            g.max_utilization_pct > self.max_utilization_pct
                || g.max_memory_fraction > self.max_memory_fraction
                || g.max_temperature_c > self.max_temperature_c
        })
    }
}

/// Excludes endpoints over the GPU thresholds, then picks the lowest GPU
/// score (in-flight requests break ties and stand in where no GPU reading is
/// fresh); when every endpoint is over, falls back to least loaded.
#[derive(Debug)]
pub struct GpuAware {
    thresholds: GpuThresholds,
}

impl GpuAware {
    /// With these thresholds.
    pub fn new(thresholds: GpuThresholds) -> Self {
        GpuAware { thresholds }
    }
}

impl Strategy for GpuAware {
    fn name(&self) -> &'static str {
        "gpu_aware"
    }

    fn pick(&mut self, _meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        let score = |x: &Candidate<'_>| {
            let gpu = x.load.gpu.as_ref().map(gpu_score).unwrap_or(0.5);
            // in-flight as a fraction of the cap breaks ties between equal GPUs
            gpu + 0.1 * (x.load.in_flight as f64 / x.load.max_concurrent.max(1) as f64)
        };
        let mut best: Option<(usize, f64)> = None;
        for (i, cand) in c.iter().enumerate() {
            if self.thresholds.exceeded(cand.load) {
                continue;
            }
            let s = score(cand);
            if best.is_none_or(|(_, b)| s < b) {
                best = Some((i, s));
            }
        }
        match best {
            Some((i, _)) => i,
            None => argmin_by(c, |x| x.load.least_loaded_score()),
        }
    }
}

/// Weights of the [`Adaptive`] composite score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveWeights {
    /// Queue depth (in flight and engine queue).
    pub load: f64,
    /// Peak-EWMA latency to first byte.
    pub latency: f64,
    /// Recent error rate.
    pub errors: f64,
    /// GPU score.
    pub gpu: f64,
}

impl Default for AdaptiveWeights {
    fn default() -> Self {
        AdaptiveWeights {
            load: 0.4,
            latency: 0.3,
            errors: 0.2,
            gpu: 0.1,
        }
    }
}

/// A weighted composite of load, latency, errors and GPU, each normalised
/// against the worst candidate so the weights mean what they say.
#[derive(Debug)]
pub struct Adaptive {
    w: AdaptiveWeights,
}

impl Adaptive {
    /// With these weights.
    pub fn new(w: AdaptiveWeights) -> Self {
        Adaptive { w }
    }
}

impl Strategy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn pick(&mut self, _meta: Option<&RequestMeta>, c: &[Candidate<'_>]) -> usize {
        let max_q = c
            .iter()
            .map(|x| x.load.queue_depth())
            .fold(0.0, f64::max)
            .max(1.0);
        let max_t = c
            .iter()
            .map(|x| x.load.ttft_s)
            .fold(0.0, f64::max)
            .max(1e-3);
        argmin_by(c, |x| {
            self.w.load * x.load.queue_depth() / max_q
                + self.w.latency * x.load.ttft_s / max_t
                + self.w.errors * x.load.error_rate
                + self.w.gpu * x.load.gpu.as_ref().map(gpu_score).unwrap_or(0.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use llmgate_telemetry::{GpuReading, GpuSummary};

    fn gpu(u: f64, m: f64, t: f64) -> Option<GpuSummary> {
        GpuSummary::from_readings(&[GpuReading {
            index: 0,
            name: "test".into(),
            utilization_pct: u,
            memory_used_bytes: (m * 1000.0) as u64,
            memory_total_bytes: 1000,
            temperature_c: t,
            power_w: None,
            power_limit_w: None,
        }])
    }

    #[test]
    fn gpu_aware_excludes_over_threshold_then_lowest_score() {
        let ids = ids(3);
        let mut v = views(&[0, 0, 0]);
        v[0].gpu = gpu(99.0, 0.1, 40.0); // over utilization
        v[1].gpu = gpu(60.0, 0.5, 60.0);
        v[2].gpu = gpu(30.0, 0.97, 50.0); // over memory
        let c = cands(&ids, &v);
        assert_eq!(GpuAware::new(GpuThresholds::default()).pick(None, &c), 1);
        v[2].gpu = gpu(30.0, 0.3, 50.0);
        let c = cands(&ids, &v);
        assert_eq!(GpuAware::new(GpuThresholds::default()).pick(None, &c), 2);
    }

    #[test]
    fn gpu_aware_falls_back_to_least_loaded_when_all_over() {
        let ids = ids(3);
        let mut v = views(&[9, 1, 5]);
        for x in v.iter_mut() {
            x.gpu = gpu(99.0, 0.99, 95.0);
        }
        let c = cands(&ids, &v);
        assert_eq!(GpuAware::new(GpuThresholds::default()).pick(None, &c), 1);
    }

    #[test]
    fn adaptive_weighs_errors_and_latency() {
        let ids = ids(2);
        let mut v = views(&[1, 1]);
        v[0].error_rate = 0.8;
        v[0].ttft_s = 0.1;
        v[1].ttft_s = 0.1;
        let c = cands(&ids, &v);
        assert_eq!(Adaptive::new(AdaptiveWeights::default()).pick(None, &c), 1);
        v[0].error_rate = 0.0;
        v[1].ttft_s = 2.0;
        let c = cands(&ids, &v);
        assert_eq!(Adaptive::new(AdaptiveWeights::default()).pick(None, &c), 0);
    }
}
