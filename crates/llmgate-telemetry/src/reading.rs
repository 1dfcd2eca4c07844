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
