//! How many short requests per second one simulated replica serves on this
//! machine (client and replica in one process, release build).
//!
//! `cargo bench -p llmgate-sim --bench sim_throughput [-- REQUESTS]`

use std::time::Duration;

use llmgate_sim::load::{run, LoadOptions};
use llmgate_sim::workload::WorkloadRequest;
use llmgate_sim::{SimConfig, SimReplica};
use serde_json::json;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let speedup = 1000.0;
        let sim = SimReplica::spawn(SimConfig::default().with_speedup(speedup)).expect("spawn");
        for (label, stream) in [("streamed", true), ("non-streamed", false)] {
            // Offered: 5,000 req/s wall, open loop.
            let reqs: Vec<WorkloadRequest> = (0..n)
                .map(|i| {
                    let mut body = json!({
                        "model": "llama-3-8b",
                        "prompt": format!("{i:08} ").repeat(14),
                        "max_tokens": 8,
                    });
                    if stream {
                        body["stream"] = json!(true);
                        body["stream_options"] = json!({"include_usage": true});
                    }
                    WorkloadRequest {
                        at: Duration::from_secs_f64(i as f64 / 5000.0 * speedup),
                        path: "/v1/completions".into(),
                        body,
                        priority: Default::default(),
                        client: "bench".into(),
                        session: None,
                        stream,
                        prompt_tokens: 32,
                        max_tokens: 8,
                    }
                })
                .collect();
            let opts = LoadOptions {
                concurrency: 512,
                max_wall: Duration::from_secs(120),
                time_scale: speedup,
            };
            let report = run(&sim.url(), &reqs, opts).await;
            println!(
                "== {label}: {n} requests, 32-token prompts, 8 output tokens, speedup {speedup}"
            );
            println!("{report}");
            println!(
                "RESULT {label}: {:.0} completed req/s (errors {})",
                report.throughput_rps, report.errors
            );
        }
    });
}
