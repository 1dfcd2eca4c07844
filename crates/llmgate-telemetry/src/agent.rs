//! The node agent: serves this node's GPU readings over HTTP.
//!
//! NVML is local to a GPU node, so a balancer elsewhere cannot call it. The
//! agent runs on each GPU node (the gateway's `llmgate agent` subcommand
//! calls [`serve`]) and serves:
//!
//! * `GET /gpu`: a [`GpuReport`] as JSON (what [`crate::Scraper`] reads
//!   through [`ScrapeTarget::gpu_url`](crate::ScrapeTarget));
//! * `GET /metrics`: the same readings in the Prometheus text format
//!   (`llmgate_gpu_utilization_ratio{gpu}`, `llmgate_gpu_memory_used_bytes{gpu}`,
//!   `llmgate_gpu_memory_total_bytes{gpu}`, `llmgate_gpu_temperature_celsius{gpu}`,
//!   `llmgate_gpu_power_watts{gpu}`, `llmgate_gpu_power_limit_watts{gpu}`,
//!   `llmgate_gpu_info{gpu,name}`), for Prometheus itself;
//! * `GET /health`: `200 ok`.
//!
//! The `/metrics` text is rendered from the readings on each request (it is
//! an exposition of data, not of this process's own metrics, so it does not
//! go through the `metrics` facade or need a recorder).
//!
//! ```
//! use llmgate_telemetry::{agent, FakeProbe};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(agent::serve_listener(listener, FakeProbe::new(), async move {
//!     let _ = stopped.await;
//! }));
//! // ... scrape http://{addr}/gpu ...
//! # let _ = addr;
//! stop.send(()).unwrap();
//! server.await.unwrap()?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::prom::{escape_label_value, Sample};
use crate::{GpuProbe, GpuReading, GpuReport, GpuSampler, DEFAULT_SAMPLE_INTERVAL};

/// Content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type SharedProbe = Arc<dyn GpuProbe>;

/// The agent's routes over `probe`.
///
/// The probe is read on a blocking thread per request; pass a
/// [`GpuSampler`] to serve cached readings instead ([`serve`] does).
pub fn router(probe: impl GpuProbe) -> Router {
    let probe: SharedProbe = Arc::new(probe);
    Router::new()
        .route("/gpu", get(gpu))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(probe)
}

async fn read(probe: SharedProbe) -> Vec<GpuReading> {
    match tokio::task::spawn_blocking(move || probe.read()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "GPU probe read failed");
            Vec::new()
        }
    }
}

async fn gpu(State(probe): State<SharedProbe>) -> Json<GpuReport> {
    Json(GpuReport {
        gpus: read(probe).await,
    })
}

async fn metrics(State(probe): State<SharedProbe>) -> impl IntoResponse {
    let text = render_metrics(&read(probe).await);
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text)
}

/// Renders readings as a Prometheus text exposition.
///
/// ```
/// use llmgate_telemetry::{agent, prom, GpuReading};
/// let r = GpuReading { index: 0, name: "H100".into(), utilization_pct: 75.0,
///     memory_used_bytes: 10, memory_total_bytes: 80, temperature_c: 61.0,
///     power_w: Some(350.5), power_limit_w: Some(700.0) };
/// let text = agent::render_metrics(&[r.clone()]);
/// assert!(text.contains("llmgate_gpu_utilization_ratio{gpu=\"0\"} 0.75\n"));
/// assert_eq!(agent::gpus_from_samples(&prom::parse(&text)), vec![r]);
/// ```
pub fn render_metrics(gpus: &[GpuReading]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, value: &dyn Fn(&GpuReading) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for g in gpus {
            if let Some(v) = value(g) {
                let _ = writeln!(out, "{name}{{gpu=\"{}\"}} {}", g.index, fmt_value(v));
            }
        }
    };
    family(
        "llmgate_gpu_utilization_ratio",
        "GPU utilization over the driver's last sample period, 0-1.",
        &|g| Some(g.utilization_pct / 100.0),
    );
    family(
        "llmgate_gpu_memory_used_bytes",
        "GPU memory in use.",
        &|g| Some(g.memory_used_bytes as f64),
    );
    family(
        "llmgate_gpu_memory_total_bytes",
        "GPU memory in total.",
        &|g| Some(g.memory_total_bytes as f64),
    );
    family(
        "llmgate_gpu_temperature_celsius",
        "GPU core temperature.",
        &|g| Some(g.temperature_c),
    );
    family("llmgate_gpu_power_watts", "GPU power draw.", &|g| g.power_w);
    family(
        "llmgate_gpu_power_limit_watts",
        "GPU enforced power limit.",
        &|g| g.power_limit_w,
    );
    let _ = writeln!(out, "# HELP llmgate_gpu_info GPU identity (always 1).");
    let _ = writeln!(out, "# TYPE llmgate_gpu_info gauge");
    for g in gpus {
        let _ = writeln!(
            out,
            "llmgate_gpu_info{{gpu=\"{}\",name=\"{}\"}} 1",
            g.index,
            escape_label_value(&g.name)
        );
    }
    out
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Rebuilds readings from an agent's `/metrics` samples (the inverse of
/// [`render_metrics`]), for balancers that scrape agents' Prometheus text.
/// GPUs are ordered by index; a GPU appears when any `llmgate_gpu_*` sample
/// names it.
pub fn gpus_from_samples(samples: &[Sample]) -> Vec<GpuReading> {
    let mut by_index: std::collections::BTreeMap<u32, GpuReading> = Default::default();
    for s in samples {
        let Some(field) = s.name.strip_prefix("llmgate_gpu_") else {
            continue;
        };
        let Some(index) = s.label("gpu").and_then(|g| g.parse::<u32>().ok()) else {
            continue;
        };
        let g = by_index.entry(index).or_insert_with(|| GpuReading {
            index,
            name: String::new(),
            utilization_pct: 0.0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            temperature_c: 0.0,
            power_w: None,
            power_limit_w: None,
        });
        let v = s.value;
        let bytes = |v: f64| {
            if v.is_finite() && v > 0.0 {
                v as u64
            } else {
                0
            }
        };
        match field {
            "utilization_ratio" => g.utilization_pct = v * 100.0,
            "memory_used_bytes" => g.memory_used_bytes = bytes(v),
            "memory_total_bytes" => g.memory_total_bytes = bytes(v),
            "temperature_celsius" => g.temperature_c = v,
            "power_watts" => g.power_w = Some(v),
            "power_limit_watts" => g.power_limit_w = Some(v),
            "info" => g.name = s.label("name").unwrap_or_default().to_string(),
            _ => {}
        }
    }
    by_index.into_values().collect()
}

/// Serves the agent on an already-bound listener until `shutdown` completes.
///
/// The probe is sampled every [`DEFAULT_SAMPLE_INTERVAL`] on a blocking
/// thread; requests are answered from the latest sample.
pub async fn serve_listener(
    listener: TcpListener,
    probe: impl GpuProbe,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler = GpuSampler::spawn(probe, DEFAULT_SAMPLE_INTERVAL);
    sampler.wait_first().await;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, gpus = sampler.latest().len(), "llmgate agent serving /gpu and /metrics");
    }
    axum::serve(listener, router(sampler))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves the agent until `shutdown` completes.
///
/// Typical use: `agent::serve(addr, NvmlProbe::new(), ctrl_c)`.
pub async fn serve(
    addr: SocketAddr,
    probe: impl GpuProbe,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_listener(listener, probe, shutdown).await
}
