//! GPU/model profiles: the step-time coefficients and engine limits.

use std::fmt;
use std::str::FromStr;

/// One simulated GPU + model pairing: step-time coefficients, KV capacity
/// and vLLM batch limits.
///
/// Step time in microseconds is
/// `T = t0 + tp·P + td·D + tkv·K + ta·A`, where `P` is the uncached prefill
/// tokens of the step, `D` the decode requests, `K` the summed context length
/// of those decode requests and `A` the prefill attention pairs
/// (`Σ chunk·(ctx_before + chunk/2)`), multiplied by lognormal jitter of
/// `jitter_sigma`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Short name (`h100-8b`, …).
    pub name: &'static str,
    /// GPU name reported at `/gpu`.
    pub gpu_name: &'static str,
    /// Fixed cost per step, µs.
    pub t0_us: f64,
    /// Cost per uncached prefill token, µs.
    pub tp_us: f64,
    /// Cost per decode request, µs.
    pub td_us: f64,
    /// Cost per KV token read by a decode request, µs.
    pub tkv_us: f64,
    /// Cost per prefill attention token pair, µs.
    pub ta_us: f64,
    /// KV blocks of the engine.
    pub num_gpu_blocks: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// vLLM `max_num_seqs`.
    pub max_num_seqs: u32,
    /// vLLM `max_num_batched_tokens` (the per-step token budget).
    pub max_num_batched_tokens: u32,
    /// Longest prompt + output accepted.
    pub max_model_len: u32,
    /// σ of the multiplicative lognormal step-time jitter.
    pub jitter_sigma: f64,
    /// Memory of one GPU, bytes (all GPUs of a TP group are reported as one).
    pub gpu_memory_bytes: u64,
    /// Bytes taken by weights and activations.
    pub weights_bytes: u64,
    /// KV bytes per token.
    pub kv_bytes_per_token: u64,
}

const GIB: u64 = 1 << 30;

impl Profile {
    /// Llama-3-8B bf16 on one H100-80G (the default; BLIS/vidur-derived).
    pub const H100_8B: Profile = Profile {
        name: "h100-8b",
        gpu_name: "NVIDIA H100 80GB HBM3 (simulated)",
        t0_us: 6000.0,
        tp_us: 20.0,
        td_us: 3.0,
        tkv_us: 0.06,
        ta_us: 0.001,
        num_gpu_blocks: 29_000,
        block_size: 16,
        max_num_seqs: 1024,
        max_num_batched_tokens: 8192,
        max_model_len: 131_072,
        jitter_sigma: 0.05,
        gpu_memory_bytes: 80 * GIB,
        weights_bytes: 18 * GIB,
        kv_bytes_per_token: 128 * 1024,
    };

    /// Llama-3-8B bf16 on one A100-80G.
    pub const A100_8B: Profile = Profile {
        name: "a100-8b",
        gpu_name: "NVIDIA A100-SXM4-80GB (simulated)",
        t0_us: 12000.0,
        tp_us: 60.0,
        td_us: 8.0,
        tkv_us: 0.10,
        ta_us: 0.003,
        num_gpu_blocks: 29_000,
        block_size: 16,
        max_num_seqs: 256,
        max_num_batched_tokens: 2048,
        max_model_len: 131_072,
        jitter_sigma: 0.05,
        gpu_memory_bytes: 80 * GIB,
        weights_bytes: 18 * GIB,
        kv_bytes_per_token: 128 * 1024,
    };

    /// H100 coefficients with little KV (4,096 blocks ≈ 65k tokens) and 128
    /// sequences, so cache pressure and preemption show with few requests.
    pub const SMALL: Profile = Profile {
        name: "small",
        gpu_name: "NVIDIA H100 80GB HBM3 (simulated, small KV)",
        t0_us: 6000.0,
        tp_us: 20.0,
        td_us: 3.0,
        tkv_us: 0.06,
        ta_us: 0.001,
        num_gpu_blocks: 4096,
        block_size: 16,
        max_num_seqs: 128,
        max_num_batched_tokens: 8192,
        max_model_len: 32_768,
        jitter_sigma: 0.05,
        gpu_memory_bytes: 80 * GIB,
        weights_bytes: 70 * GIB,
        kv_bytes_per_token: 128 * 1024,
    };

    /// Llama-3-70B on four H100s with tensor parallelism. **An
    /// extrapolation**, not a fit: about 3× `t0` and `tp`, 2.5× `tkv` of the
    /// 8B profile and 40,000 blocks.
    pub const H100_70B_TP4: Profile = Profile {
        name: "h100-70b-tp4",
        gpu_name: "4x NVIDIA H100 80GB HBM3 TP4 (simulated)",
        t0_us: 18000.0,
        tp_us: 60.0,
        td_us: 8.0,
        tkv_us: 0.15,
        ta_us: 0.003,
        num_gpu_blocks: 40_000,
        block_size: 16,
        max_num_seqs: 1024,
        max_num_batched_tokens: 8192,
        max_model_len: 131_072,
        jitter_sigma: 0.05,
        gpu_memory_bytes: 320 * GIB,
        weights_bytes: 150 * GIB,
        kv_bytes_per_token: 320 * 1024,
    };

    /// Every named profile.
    pub const ALL: [Profile; 4] = [
        Profile::H100_8B,
        Profile::A100_8B,
        Profile::SMALL,
        Profile::H100_70B_TP4,
    ];

    /// Step time in µs before jitter.
    pub fn step_us(&self, prefill: u64, decode: u64, kv: u64, attn: f64) -> f64 {
        self.t0_us
            + self.tp_us * prefill as f64
            + self.td_us * decode as f64
            + self.tkv_us * kv as f64
            + self.ta_us * attn
    }

    /// KV capacity in tokens.
    pub fn kv_tokens(&self) -> u64 {
        u64::from(self.num_gpu_blocks) * u64::from(self.block_size)
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::H100_8B
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A profile name that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProfile(pub String);

impl fmt::Display for UnknownProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown profile {:?} (known: h100-8b, a100-8b, small, h100-70b-tp4)",
            self.0
        )
    }
}

impl std::error::Error for UnknownProfile {}

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Profile::ALL
            .into_iter()
            .find(|p| p.name == norm)
            .ok_or_else(|| UnknownProfile(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("h100-8b".parse::<Profile>().unwrap(), Profile::H100_8B);
        assert_eq!(
            "H100_70B_TP4".parse::<Profile>().unwrap().name,
            "h100-70b-tp4"
        );
        assert!("tpu".parse::<Profile>().is_err());
    }
}
