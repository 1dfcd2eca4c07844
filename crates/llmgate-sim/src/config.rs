//! Replica configuration and fault settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// Which engine's Prometheus names `/metrics` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFlavor {
    /// `vllm:num_requests_running`, … (default).
    #[default]
    Vllm,
    /// `sglang:num_running_reqs`, …
    Sglang,
}

impl FromStr for MetricsFlavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vllm" => Ok(MetricsFlavor::Vllm),
            "sglang" => Ok(MetricsFlavor::Sglang),
            other => Err(format!("unknown metrics flavor {other:?} (vllm, sglang)")),
        }
    }
}

impl fmt::Display for MetricsFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricsFlavor::Vllm => "vllm",
            MetricsFlavor::Sglang => "sglang",
        })
    }
}

/// Faults to inject; settable at start ([`SimConfig::faults`]), through
/// [`SimReplica::set_faults`](crate::SimReplica::set_faults) or with
/// `POST /admin/faults` (this struct as JSON; missing fields take their
/// defaults, i.e. "no fault").
///
/// ```
/// let f: llmgate_sim::Faults =
///     serde_json::from_str(r#"{"error_rate": 0.5, "slow_start": 2.0}"#).unwrap();
/// assert_eq!(f.error_rate, 0.5);
/// assert_eq!(f.slow_start, Some(std::time::Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Probability (0–1) that an inference request fails with 500.
    pub error_rate: f64,
    /// Probability (0–1) that an inference request gets 429 with
    /// `Retry-After: 1`.
    pub rate_limit_rate: f64,
    /// Accept requests (and health probes) and never answer them.
    pub hang: bool,
    /// For this long (wall time) after the faults are set or the replica
    /// (re)starts, `/health` answers 503 and every engine step takes ten
    /// times as long (a warming-up engine). JSON: seconds as a number.
    #[serde(with = "opt_secs")]
    pub slow_start: Option<Duration>,
    /// Crash: close the listener and every connection. The handle's
    /// [`restart`](crate::SimReplica::restart) brings the replica back.
    pub crash: bool,
    /// Close the connection abruptly after this many SSE chunks of a
    /// streamed answer.
    pub reset_after_chunks: Option<u32>,
    /// `/health` alternates between 200 and 503 on successive probes.
    pub flapping_health: bool,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        Ok(v.filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64))
    }
}

/// Configuration of one simulated replica.
///
/// ```
/// use llmgate_sim::{MetricsFlavor, Profile, SimConfig};
/// let c = SimConfig::default()
///     .with_profile(Profile::SMALL)
///     .with_speedup(100.0)
///     .with_flavor(MetricsFlavor::Sglang);
/// assert_eq!(c.model, "llama-3-8b");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Replica id reported in the `x-sim-replica` header; `None`: the
    /// fleet index (`sim-0`, …) or `sim-<port>`.
    pub id: Option<String>,
    /// Engine profile.
    pub profile: Profile,
    /// Model name served.
    pub model: String,
    /// Virtual seconds per wall second (1.0 = real time).
    pub speedup: f64,
    /// Prometheus names.
    pub flavor: MetricsFlavor,
    /// Seed of jitter and fault draws.
    pub seed: u64,
    /// Faults active from the start.
    pub faults: Faults,
    /// Port on 127.0.0.1 (0 = ephemeral).
    pub port: u16,
    /// Host to bind (default 127.0.0.1).
    pub host: std::net::IpAddr,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            id: None,
            profile: Profile::H100_8B,
            model: "llama-3-8b".to_string(),
            speedup: 1.0,
            flavor: MetricsFlavor::Vllm,
            seed: 0,
            faults: Faults::default(),
            port: 0,
            host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }
}

impl SimConfig {
    /// Sets the profile.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }
    /// Sets the model name.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }
    /// Sets the speedup (clamped to at least 1e-3).
    pub fn with_speedup(mut self, speedup: f64) -> Self {
        self.speedup = speedup;
        self
    }
    /// Sets the metrics flavor.
    pub fn with_flavor(mut self, flavor: MetricsFlavor) -> Self {
        self.flavor = flavor;
        self
    }
    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets the initial faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
    /// Sets the replica id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}
