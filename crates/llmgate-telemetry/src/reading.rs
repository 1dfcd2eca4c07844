//! The GPU reading shared by probes, agents and the simulator.

use serde::{Deserialize, Serialize};

/// One GPU at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    /// Device index on its node.
    pub index: u32,
    /// Device name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// GPU utilization over the driver's last sample period, 0–100.
    pub utilization_pct: f64,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory in total, bytes.
    pub memory_total_bytes: u64,
    /// Core temperature, °C.
    pub temperature_c: f64,
    /// Power draw, watts (absent where the driver does not report it).
    #[serde(default)]
    pub power_w: Option<f64>,
    /// Enforced power limit, watts.
    #[serde(default)]
    pub power_limit_w: Option<f64>,
}

impl GpuReading {
    /// Memory in use as a fraction 0–1 (0 when the total is unknown).
    pub fn memory_fraction(&self) -> f64 {
        if self.memory_total_bytes == 0 {
            0.0
        } else {
            self.memory_used_bytes as f64 / self.memory_total_bytes as f64
        }
    }
}

/// What `GET /gpu` returns: every GPU of a node (or of a replica).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// The readings, one per GPU.
    pub gpus: Vec<GpuReading>,
}

/// A node's GPUs condensed to the few numbers a load score needs.
///
/// ```
/// use llmgate_telemetry::{GpuReading, GpuSummary};
/// let r = |i, util: f64, used| GpuReading { index: i, name: "g".into(), utilization_pct: util,
///     memory_used_bytes: used, memory_total_bytes: 100, temperature_c: 50.0 + util / 10.0,
///     power_w: Some(100.0), power_limit_w: Some(400.0) };
/// let s = GpuSummary::from_readings(&[r(0, 20.0, 10), r(1, 80.0, 90)]).unwrap();
/// assert_eq!(s.count, 2);
/// assert_eq!(s.mean_utilization_pct, 50.0);
/// assert_eq!(s.max_utilization_pct, 80.0);
/// assert_eq!(s.max_memory_fraction, 0.9);
/// assert_eq!(s.max_temperature_c, 58.0);
/// assert_eq!(s.power_fraction(), Some(0.25));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSummary {
    /// Number of GPUs summarised.
    pub count: u32,
    /// Mean utilization over the GPUs, 0–100.
    pub mean_utilization_pct: f64,
    /// Highest utilization, 0–100.
    pub max_utilization_pct: f64,
    /// Highest memory-used fraction, 0–1.
    pub max_memory_fraction: f64,
    /// Memory in use over all GPUs, bytes.
    pub memory_used_bytes: u64,
    /// Memory in total over all GPUs, bytes.
    pub memory_total_bytes: u64,
    /// Hottest GPU, °C.
    pub max_temperature_c: f64,
    /// Power draw summed over the GPUs that report it, watts.
    pub power_w: Option<f64>,
    /// Power limits summed over the GPUs that report both draw and limit, watts.
    pub power_limit_w: Option<f64>,
}

impl GpuSummary {
    /// Summarises readings; `None` when there are none.
    pub fn from_readings(readings: &[GpuReading]) -> Option<GpuSummary> {
        if readings.is_empty() {
            return None;
        }
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let mut s = GpuSummary {
            count: readings.len() as u32,
            mean_utilization_pct: 0.0,
            max_utilization_pct: 0.0,
            max_memory_fraction: 0.0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            max_temperature_c: 0.0,
            power_w: None,
            power_limit_w: None,
        };
        let mut util_sum = 0.0;
        for r in readings {
            let u = finite(r.utilization_pct).clamp(0.0, 100.0);
            util_sum += u;
            s.max_utilization_pct = s.max_utilization_pct.max(u);
            s.max_memory_fraction = s.max_memory_fraction.max(r.memory_fraction());
            s.memory_used_bytes = s.memory_used_bytes.saturating_add(r.memory_used_bytes);
            s.memory_total_bytes = s.memory_total_bytes.saturating_add(r.memory_total_bytes);
            s.max_temperature_c = s.max_temperature_c.max(finite(r.temperature_c));
            if let Some(p) = r.power_w.filter(|p| p.is_finite()) {
                s.power_w = Some(s.power_w.unwrap_or(0.0) + p);
                if let Some(l) = r.power_limit_w.filter(|l| l.is_finite()) {
                    s.power_limit_w = Some(s.power_limit_w.unwrap_or(0.0) + l);
                }
            }
        }
        s.mean_utilization_pct = util_sum / readings.len() as f64;
        Some(s)
    }

    /// Power draw as a fraction of the limit (`None` when either is unknown).
    pub fn power_fraction(&self) -> Option<f64> {
        match (self.power_w, self.power_limit_w) {
            (Some(p), Some(l)) if l > 0.0 => Some(p / l),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::GpuReading;

    /// An 80 GB GPU at `util` percent, half its memory used.
    pub(crate) fn reading(index: u32, util: f64) -> GpuReading {
        GpuReading {
            index,
            name: format!("Fake GPU {index}"),
            utilization_pct: util,
            memory_used_bytes: 40 << 30,
            memory_total_bytes: 80 << 30,
            temperature_c: 55.0,
            power_w: Some(300.0),
            power_limit_w: Some(700.0),
        }
    }
}
