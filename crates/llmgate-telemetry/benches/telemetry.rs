//! Cost of the telemetry pieces on the routing and scraping paths.
//!
//! `cargo bench -p llmgate-telemetry --bench telemetry`

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use llmgate_telemetry::{prom, EngineMetrics, GpuReading, TelemetryCell};

/// A vLLM-like exposition: the load gauges plus histograms for 2 engines
/// (about the size a real `/metrics` page has).
fn vllm_exposition() -> String {
    let mut s = String::new();
    for engine in 0..2 {
        let l = format!("engine=\"{engine}\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"");
        let _ = writeln!(
            s,
            "# HELP vllm:num_requests_running Running.\n# TYPE vllm:num_requests_running gauge"
        );
        let _ = writeln!(s, "vllm:num_requests_running{{{l}}} 12.0");
        let _ = writeln!(s, "vllm:num_requests_waiting{{{l}}} 3.0");
        let _ = writeln!(s, "vllm:kv_cache_usage_perc{{{l}}} 0.41");
        let _ = writeln!(s, "vllm:prefix_cache_queries_total{{{l}}} 1.9e+06");
        let _ = writeln!(s, "vllm:prefix_cache_hits_total{{{l}}} 1.1e+06");
        for h in [
            "time_to_first_token_seconds",
            "inter_token_latency_seconds",
            "e2e_request_latency_seconds",
            "request_queue_time_seconds",
            "request_prefill_time_seconds",
            "request_decode_time_seconds",
        ] {
            let _ = writeln!(s, "# TYPE vllm:{h} histogram");
            for le in [
                "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5",
                "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "20.0", "40.0", "80.0", "160.0",
                "640.0", "2560.0", "+Inf",
            ] {
                let _ = writeln!(s, "vllm:{h}_bucket{{{l},le=\"{le}\"}} 1234.0");
            }
            let _ = writeln!(s, "vllm:{h}_sum{{{l}}} 345.6");
            let _ = writeln!(s, "vllm:{h}_count{{{l}}} 1234.0");
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = vllm_exposition();
    let mut g = c.benchmark_group(format!("scrape_{}_bytes", text.len()));
    g.bench_function("prom_parse_all", |b| {
        b.iter(|| prom::parse(black_box(&text)))
    });
    g.bench_function("engine_metrics_from_text", |b| {
        b.iter(|| EngineMetrics::from_text(black_box(&text)))
    });
    g.finish();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let cell = TelemetryCell::new();
    cell.set_engine(EngineMetrics::from_text(&text).unwrap());
    cell.set_gpus(
        (0..8)
            .map(|i| GpuReading {
                index: i,
                name: "NVIDIA H100 80GB HBM3".into(),
                utilization_pct: 50.0,
                memory_used_bytes: 40 << 30,
                memory_total_bytes: 80 << 30,
                temperature_c: 60.0,
                power_w: Some(400.0),
                power_limit_w: Some(700.0),
            })
            .collect(),
    );
    let max_age = Duration::from_secs(30);
    let mut g = c.benchmark_group("cell_read");
    g.bench_function("engine", |b| b.iter(|| black_box(&cell).engine(max_age)));
    g.bench_function("gpu_summary", |b| {
        b.iter(|| black_box(&cell).gpu_summary(max_age))
    });
    g.bench_function("fresh_snapshot_8_gpus", |b| {
        b.iter(|| black_box(&cell).fresh(max_age))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
