//! GPU probes: where [`GpuReading`]s come from.

use std::fmt;
use std::sync::Arc;

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use parking_lot::Mutex;

use crate::GpuReading;

/// A source of GPU readings for this node.
///
/// `read` is synchronous and may block briefly (NVML is FFI); call it from a
/// blocking thread ([`crate::GpuSampler`] does), never from the routing path.
pub trait GpuProbe: Send + Sync + 'static {
    /// Reads every GPU now. An empty vector means "no GPU information".
    fn read(&self) -> Vec<GpuReading>;
}

impl<P: GpuProbe + ?Sized> GpuProbe for Arc<P> {
    fn read(&self) -> Vec<GpuReading> {
        (**self).read()
    }
}

impl<P: GpuProbe + ?Sized> GpuProbe for Box<P> {
    fn read(&self) -> Vec<GpuReading> {
        (**self).read()
    }
}

/// Reads the local GPUs through NVML (`libnvidia-ml`).
///
/// NVML is initialised once, in [`NvmlProbe::new`]; devices are re-acquired
/// on every read so that a GPU that falls off the bus is simply skipped.
/// A field the device does not support (`NotSupported`) or that fails is
/// left at its zero value (`power_w` / `power_limit_w`: `None`); a device
/// whose handle cannot be acquired is left out.
///
/// Without `libnvidia-ml`, or with the driver not loaded, `new` logs one
/// warning and the probe yields nothing, forever. Nothing here panics.
pub struct NvmlProbe {
    nvml: Option<Nvml>,
    /// Logged once per failing (device, field) so a broken sensor doesn't flood logs.
    warned: Mutex<std::collections::HashSet<(u32, &'static str)>>,
}

impl fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlProbe")
            .field("available", &self.nvml.is_some())
            .finish()
    }
}

impl Default for NvmlProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl NvmlProbe {
    /// Initialises NVML; on failure logs one warning and returns a probe that yields nothing.
    pub fn new() -> Self {
        let nvml = match Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                // One warning per process, however many probes are built.
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "NVML unavailable ({}); GPU telemetry disabled, load falls back to queue depth",
                        describe_init_error(&e)
                    );
                }
                None
            }
        };
        NvmlProbe {
            nvml,
            warned: Mutex::new(Default::default()),
        }
    }

    /// Whether NVML was initialised (a GPU driver and library are present).
    pub fn is_available(&self) -> bool {
        self.nvml.is_some()
    }

    fn field<T>(&self, index: u32, field: &'static str, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                if self.warned.lock().insert((index, field)) {
                    tracing::warn!(gpu = index, field, error = %e, "NVML read failed");
                }
                None
            }
        }
    }
}

fn describe_init_error(e: &NvmlError) -> &'static str {
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "libnvidia-ml could not be loaded: no NVIDIA driver installed"
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded",
        NvmlError::NoPermission => "no permission to use NVML",
        _ => "NVML initialisation failed",
    }
}

impl GpuProbe for NvmlProbe {
    fn read(&self) -> Vec<GpuReading> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let Some(count) = self.field(u32::MAX, "device_count", nvml.device_count()) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let Some(dev) = self.field(index, "device", nvml.device_by_index(index)) else {
                continue;
            };
            let name = self.field(index, "name", dev.name()).unwrap_or_default();
            let util = self.field(index, "utilization", dev.utilization_rates());
            let mem = self.field(index, "memory", dev.memory_info());
            let temp = self.field(
                index,
                "temperature",
                dev.temperature(TemperatureSensor::Gpu),
            );
            let power = self.field(index, "power", dev.power_usage());
            let limit = self.field(index, "power_limit", dev.enforced_power_limit());
            out.push(GpuReading {
                index,
                name,
                utilization_pct: util.map_or(0.0, |u| f64::from(u.gpu)),
                memory_used_bytes: mem.as_ref().map_or(0, |m| m.used),
                memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
                temperature_c: temp.map_or(0.0, f64::from),
                power_w: power.map(|mw| f64::from(mw) / 1000.0),
                power_limit_w: limit.map(|mw| f64::from(mw) / 1000.0),
            });
        }
        out
    }
}

/// A probe whose readings a test sets: cheap to clone, all clones share them.
///
/// ```
/// use llmgate_telemetry::{FakeProbe, GpuProbe, GpuReading};
/// let probe = FakeProbe::new();
/// assert!(probe.read().is_empty());
/// probe.set(vec![GpuReading { index: 0, name: "fake".into(), utilization_pct: 50.0,
///     memory_used_bytes: 1, memory_total_bytes: 2, temperature_c: 60.0,
///     power_w: None, power_limit_w: None }]);
/// assert_eq!(probe.read()[0].utilization_pct, 50.0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeProbe {
    readings: Arc<Mutex<Vec<GpuReading>>>,
    reads: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeProbe {
    /// A probe with no GPU.
    pub fn new() -> Self {
        Self::default()
    }

    /// A probe that reports `readings`.
    pub fn with(readings: Vec<GpuReading>) -> Self {
        let p = Self::default();
        p.set(readings);
        p
    }

    /// Replaces what every later read returns.
    pub fn set(&self, readings: Vec<GpuReading>) {
        *self.readings.lock() = readings;
    }

    /// Changes readings in place.
    pub fn update(&self, f: impl FnOnce(&mut Vec<GpuReading>)) {
        f(&mut self.readings.lock());
    }

    /// How many times `read` has been called (across clones).
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl GpuProbe for FakeProbe {
    fn read(&self) -> Vec<GpuReading> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.readings.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no NVIDIA driver: the probe must come up empty, not panic.
    /// On a GPU node the same test checks the readings are plausible.
    #[test]
    fn nvml_probe_never_panics() {
        let probe = NvmlProbe::new();
        let readings = probe.read();
        if !probe.is_available() {
            assert!(readings.is_empty());
        }
        for r in &readings {
            assert!((0.0..=100.0).contains(&r.utilization_pct), "{r:?}");
            assert!(r.memory_used_bytes <= r.memory_total_bytes, "{r:?}");
            println!("NVML read: {r:?}");
        }
        // A second read re-acquires devices and still works.
        assert_eq!(probe.read().len(), readings.len());
        assert!(format!("{probe:?}").contains("available"));
    }

    #[test]
    fn fake_probe_shares_state_between_clones() {
        let a = FakeProbe::new();
        let b = a.clone();
        b.set(vec![crate::reading::tests_support::reading(0, 10.0)]);
        assert_eq!(a.read().len(), 1);
        a.update(|v| v[0].utilization_pct = 90.0);
        assert_eq!(b.read()[0].utilization_pct, 90.0);
        assert_eq!(a.reads(), 2);
        let boxed: Box<dyn GpuProbe> = Box::new(a.clone());
        assert_eq!(boxed.read().len(), 1);
        let arc: Arc<dyn GpuProbe> = Arc::new(a);
        assert_eq!(arc.read().len(), 1);
    }
}
