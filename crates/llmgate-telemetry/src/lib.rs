//! GPU and engine telemetry for llmgate.
//!
//! What a balancer needs to know about a replica beyond what it sees itself:
//!
//! * **GPU**: [`GpuProbe`] reads the local GPUs ([`NvmlProbe`] through NVML,
//!   [`FakeProbe`] for tests); [`GpuSampler`] reads a probe on a blocking
//!   thread every interval. Since NVML is local, the [`agent`] serves a
//!   node's readings as `GET /gpu` ([`GpuReport`] JSON) and `GET /metrics`.
//! * **Engine**: [`prom`] parses the Prometheus text format (colons in names
//!   included: `vllm:num_requests_running`); [`EngineMetrics`] extracts
//!   running / waiting requests, KV-cache usage and prefix-cache counters
//!   from vLLM or SGLang samples.
//! * **Scraping**: [`Scraper::spawn`] scrapes a [`ScrapeTarget`] (an engine's
//!   `/metrics`, an agent's `/gpu`) every interval with a timeout, using one
//!   shared pooled hyper client, into a [`TelemetryCell`] that the routing path
//!   reads without blocking. Each part carries its own timestamp;
//!   [`TelemetryCell::fresh`] leaves out whatever is older than the caller's
//!   staleness bound, so stale telemetry is never trusted.
//!
//! Metrics recorded (through the `metrics` facade; no recorder installed here):
//! `llmgate_telemetry_scrape_errors_total{target,kind}` (target: the
//! [`ScrapeTarget::name`]; kind: `metrics` or `gpu`) and
//! `llmgate_telemetry_scrape_duration_seconds{kind}`.
//!
//! # Design notes
//!
//! * **Own parser.** `prometheus-parse` drops every sample whose name holds a
//!   colon (all of vLLM's and SGLang's); the one crate that parses them is
//!   LGPL. [`prom`] is a few hundred lines with a seeded fuzz test.
//! * **Per-part staleness.** An engine's `/metrics` and a node agent's `/gpu`
//!   fail independently, so the cell stamps each part; a broken agent makes
//!   only the GPU part stale. A failed scrape never overwrites a value; the
//!   old one ages out.
//! * **Hot-path reads.** [`TelemetryCell::engine`] and
//!   [`TelemetryCell::gpu_summary`] copy small `Copy` values under a
//!   `parking_lot` read lock held for nanoseconds; writers hold the write lock
//!   only to swap in an already-parsed value. No I/O, no await.
//! * **Blocking FFI off the runtime.** NVML calls run in `spawn_blocking`
//!   ([`GpuSampler`], the agent's handlers).
//! * **Fields an engine/GPU does not report** are 0 in [`EngineMetrics`] /
//!   [`GpuReading`] (whose field names are fixed by the `/gpu` JSON the
//!   simulator serves), and `None` for power.
//!
//! # Example
//!
//! A node agent serving a (fake) GPU, and a scraper reading it:
//!
//! ```
//! use std::time::Duration;
//! use llmgate_telemetry::{agent, scrape_client, FakeProbe, GpuReading, ScrapeTarget, Scraper};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let probe = FakeProbe::with(vec![GpuReading {
//!     index: 0, name: "NVIDIA H100 80GB HBM3".into(), utilization_pct: 87.0,
//!     memory_used_bytes: 60 << 30, memory_total_bytes: 80 << 30,
//!     temperature_c: 64.0, power_w: Some(540.0), power_limit_w: Some(700.0),
//! }]);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move { axum::serve(listener, agent::router(probe)).await });
//!
//! let target = ScrapeTarget::new("node-a")
//!     .gpu_url(format!("http://{addr}/gpu"))
//!     .interval(Duration::from_millis(50));
//! let (cell, _handle) = Scraper::spawn(target, scrape_client());
//! let max_age = Duration::from_secs(30);
//! let mut summary = None;
//! for _ in 0..200 {
//!     summary = cell.gpu_summary(max_age);
//!     if summary.is_some() { break; }
//!     tokio::time::sleep(Duration::from_millis(25)).await;
//! }
//! let summary = summary.expect("scraped");
//! assert_eq!(summary.max_utilization_pct, 87.0);
//! assert_eq!(summary.max_memory_fraction, 0.75);
//! # Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

pub mod agent;
mod engine;
mod probe;
pub mod prom;
mod reading;
mod sampler;
mod scrape;

pub use engine::{EngineFlavor, EngineMetrics};
pub use probe::{FakeProbe, GpuProbe, NvmlProbe};
pub use reading::{GpuReading, GpuReport, GpuSummary};
pub use sampler::{GpuSampler, DEFAULT_SAMPLE_INTERVAL};
pub use scrape::{
    scrape_client, ScrapeClient, ScrapeError, ScrapeHandle, ScrapeTarget, Scraper, Snapshot,
    TelemetryCell, DEFAULT_MAX_AGE, DEFAULT_SCRAPE_INTERVAL, DEFAULT_SCRAPE_TIMEOUT,
    MAX_BODY_BYTES,
};
