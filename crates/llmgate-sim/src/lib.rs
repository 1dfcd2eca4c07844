//! llmgate-sim: a simulated continuous-batching LLM replica, in-process
//! fleets, named workloads and a load runner.
//!
//! No GPU is needed: each [`SimReplica`] runs an [`engine::Engine`] (a
//! vLLM-V1-style scheduler on a virtual clock) behind a real HTTP server on
//! `127.0.0.1`, serving the OpenAI routes, vLLM/SGLang `/metrics`, `/gpu`
//! telemetry and an admin route for fault injection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use llmgate_sim::{Faults, Profile, SimConfig, SimFleet};
//!
//! let fleet = SimFleet::spawn(vec![
//!     SimConfig::default().with_profile(Profile::SMALL).with_speedup(100.0);
//!     2
//! ])
//! .unwrap();
//! assert!(fleet.urls()[0].starts_with("http://127.0.0.1:"));
//! fleet.replicas()[1].set_faults(Faults { error_rate: 1.0, ..Faults::default() });
//! assert_eq!(fleet.replicas()[0].counters().requests_received, 0);
//! fleet.shutdown();
//! # }
//! ```
//!
//! # Engine model
//!
//! See [`engine`]: decode first, then unfinished chunked prefills, then FCFS
//! admission under `max_num_batched_tokens` and `max_num_seqs`; 16-token KV
//! blocks of fixed capacity; recompute preemption of the newest running
//! request when blocks run out; a prefix cache over chained block hashes
//! ([`llmgate_core::prefix::chain_hash`]) of the prompt's token stand-ins
//! (4 characters each, so a block is the 64-character block the gateway's
//! `RequestMeta` hashes), full blocks only, LRU eviction of unreferenced
//! blocks (tail first). Step time `T = t0 + tp·P + td·D + tkv·K + ta·A` with
//! lognormal jitter σ = 0.05 ([`Profile`]).
//!
//! **Time.** The engine runs on a virtual clock; a driver task steps it and
//! sleeps so that virtual time runs `speedup` times faster than wall time
//! (sleeps are batched to ≥ 1 ms of wall time, so a high speedup costs no
//! per-token timers). Everything the replica reports (`/metrics`
//! histograms, the `x-sim-ttft-us` / `x-sim-e2e-us` headers of non-streamed
//! answers) is in **simulated** time. The [`load`] runner measures wall
//! time and prints the simulated equivalent (wall × speedup).
//!
//! An output length is the request's `max_tokens`; with
//! `"sim_output": "sampled"` in the body (or no `max_tokens`) it is a
//! LN(5.05, 0.9) sample capped by `max_tokens`, which gives a heavy tail.
//!
//! # Routes
//!
//! `POST /v1/completions`, `/v1/chat/completions` (JSON with `usage`
//! including `prompt_tokens_details.cached_tokens`, or SSE ending in
//! `data: [DONE]` with a usage chunk when `stream_options.include_usage`),
//! `/v1/embeddings`; `GET /health`, `/v1/models`, `/load`
//! (`{"server_load": N}`), `/get_load`, `/get_server_info`,
//! `/get_model_info`, `/metrics` ([`MetricsFlavor`]), `/gpu`
//! ([`llmgate_telemetry::GpuReport`]: utilization as a 1-s EWMA of busy
//! time, memory = weights + KV blocks in use, temperature relaxing toward
//! 32 + 50·util °C with a 30-s time constant); admin: `GET/POST
//! /admin/faults` ([`Faults`] JSON), `GET /admin/counters`. Every inference
//! answer carries `x-sim-replica: <id>` ([`REPLICA_HEADER`]).
//!
//! # Calibration (default profile `h100-8b`)
//!
//! Coefficients from `llm-serving-simulation.md` (BLIS β fits, vidur
//! profiles, vLLM defaults); numbers below are the engine's, jitter off,
//! checked by the `engine` unit tests (`lone_prompt_ttft_matches_formula_within_jitter`,
//! `itl_grows_with_batch_size`, `calibration_saturation_throughput`):
//!
//! | quantity | reference | simulator |
//! |---|---|---|
//! | idle TTFT, 1,000-token prompt | ≈ 26 ms + α0 (1–3 ms API) | 26.5 ms (α0 is the real HTTP stack's) |
//! | ITL, batch of 1 | ≈ 6 ms (BLIS β0) | 6.1 ms |
//! | ITL, 64 concurrent × 1k context | ≈ 10 ms | 10.0 ms |
//! | ITL, 256 concurrent × 1k context | ≈ 22 ms | 22.1 ms |
//! | one 8,192-token prefill chunk | ≈ 200 ms | 203 ms |
//! | tokens/s at saturation: 600 requests of 1k prompt / 1k output at once | llm-d 8B/H100 batched ITL 10–15 ms | ≈ 6,600 generated tok/s averaged over the whole run (prefill, preemption recompute and drain tail included); ≈ 13,000 tok/s at peak decode, KV-bound (464k tokens hold ≈ 290 such requests, step ≈ 25–35 ms) |
//!
//! The `h100-70b-tp4` profile is an extrapolation (≈ 3× t0/tp, 2.5× tkv),
//! not a fit.
//!
//! # Throughput of the simulator itself
//!
//! `cargo bench -p llmgate-sim --bench sim_throughput` (release) replays
//! short requests (≈ 32-token prompts, 8 output tokens, streamed) through
//! the [`load`] runner against one replica at speedup 1,000 in the same
//! process. Measured on the 2-core development machine (shared with other
//! builds): offered 5,000 req/s open loop, 20,000 requests, **4,999 req/s
//! completed, 0 errors**, both streamed and non-streamed (p99 wall e2e
//! ≈ 1 ms): the simulator kept up with the whole offered load, so at
//! speedup ≥ 1,000 it is not the bottleneck of a gateway benchmark.
#![warn(missing_docs)]

mod config;
pub mod engine;
mod http;
pub mod load;
mod metrics;
pub mod profile;
mod replica;
pub mod workload;

pub use config::{Faults, MetricsFlavor, SimConfig};
pub use http::{CHARS_PER_TOKEN, REPLICA_HEADER};
pub use profile::{Profile, UnknownProfile};
pub use replica::{SimCounters, SimFleet, SimReplica};
