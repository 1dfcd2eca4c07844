//! `llmgate bench`: each chosen strategy against the same seeded workload on
//! a fresh heterogeneous simulated fleet, through the full gateway stack.
//! Prints a table and writes an SVG chart.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use llmgate_balance::StrategyKind;
use llmgate_sim::load::{LoadOptions, LoadReport};
use llmgate_sim::workload::{self, WorkloadOptions};

use crate::config::Config;

/// Arguments of `llmgate bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Workload name (chat-short, azure-conv, azure-code-burst, tenant-prefix, gsp, multiturn-sessions).
    #[arg(long, default_value = "chat-short")]
    pub workload: String,
    /// Comma-separated strategies.
    #[arg(long, default_value = "round_robin,least_loaded,p2c,cache_affinity")]
    pub strategies: String,
    /// Requests in the workload.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Arrival rate, requests per simulated second (default: the workload's).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 10.0)]
    pub speedup: f64,
    /// Fleet profiles, comma-separated.
    #[arg(long, default_value = "h100-8b,a100-8b,small")]
    pub fleet: String,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest wall time per strategy, seconds; requests still open then
    /// are reported as cut off.
    #[arg(long, default_value_t = 60)]
    pub max_wall_secs: u64,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "llmgate-bench.svg")]
    pub svg: PathBuf,
}

/// Runs the benchmark; returns the process exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let mut kinds = Vec::new();
    for s in args.strategies.split(',').filter(|s| !s.trim().is_empty()) {
        match s.parse::<StrategyKind>() {
            Ok(k) => kinds.push(k),
            Err(e) => {
                eprintln!("llmgate bench: --strategies: {e}");
                return 2;
            }
        }
    }
    let opts = WorkloadOptions {
        requests: args.requests,
        rate: args.rate,
        ..WorkloadOptions::default()
    };
    let requests = match workload::generate(&args.workload, args.seed, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("llmgate bench: --workload: {e}");
            return 2;
        }
    };
    let mut rows = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let label = format!("[{}/{}] {:<22}", i + 1, kinds.len(), kind.as_str());
        match run_one(&args, *kind, &requests, &label).await {
            Ok(report) => rows.push((*kind, report)),
            Err(e) => {
                eprintln!("\nllmgate bench: {kind}: {e}");
                return 1;
            }
        }
    }
    eprintln!("\r{:<90}", "done.");
    println!(
        "workload {} ({} requests, seed {}), fleet {}, speedup {}x; latencies in simulated seconds",
        args.workload, args.requests, args.seed, args.fleet, args.speedup
    );
    print!("{}", table(&rows));
    match std::fs::write(&args.svg, svg(&rows, &args.workload)) {
        Ok(()) => println!("chart written to {}", args.svg.display()),
        Err(e) => eprintln!("llmgate bench: cannot write {}: {e}", args.svg.display()),
    }
    0
}

async fn run_one(
    args: &BenchArgs,
    kind: StrategyKind,
    requests: &[llmgate_sim::workload::WorkloadRequest],
    label: &str,
) -> Result<LoadReport, String> {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.server.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.routing.strategy = kind.as_str().to_string();
    config.sim.replicas = args
        .fleet
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    config.sim.speedup = args.speedup;
    config.ratelimit.enabled = false;
    let running = crate::serve::start(config, false).await?;
    let base = format!("http://{}", running.addr);
    let run = llmgate_sim::load::run(
        &base,
        requests,
        LoadOptions {
            concurrency: 512,
            max_wall: Duration::from_secs(args.max_wall_secs),
            time_scale: args.speedup,
        },
    );
    tokio::pin!(run);
    // Progress from the replicas' own counters, redrawn on one line.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let report = loop {
        tokio::select! {
            report = &mut run => break report,
            _ = tick.tick() => {
                let done: u64 = running
                    .sim
                    .iter()
                    .flat_map(|s| s.replicas())
                    .map(|r| r.counters().requests_completed)
                    .sum();
                eprint!("\r{label} {}", bar(done as usize, requests.len()));
                let _ = std::io::stderr().flush();
            }
        }
    };
    running.shutdown().await;
    Ok(report)
}

/// A 30-character progress bar with a count.
fn bar(done: usize, total: usize) -> String {
    let total = total.max(1);
    let filled = (done.min(total) * 30) / total;
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled),
        "-".repeat(30 - filled)
    )
}

/// The comparison table; latencies converted to simulated seconds.
pub fn table(rows: &[(StrategyKind, LoadReport)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| strategy | completed | errors | cut off | throughput (req/s sim) | TTFT p50 | TTFT p90 | TTFT p99 | E2E p50 | E2E p99 | cache hit | per-replica share |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (k, r) in rows {
        let s = r.time_scale.max(f64::MIN_POSITIVE);
        let share: Vec<String> = r
            .per_replica_share
            .iter()
            .map(|(id, v)| format!("{id} {:.0}%", v * 100.0))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.0}% | {} |",
            k.as_str(),
            r.completed,
            r.errors,
            r.timed_out,
            r.throughput_rps / s,
            r.ttft_p50_s * s,
            r.ttft_p90_s * s,
            r.ttft_p99_s * s,
            r.e2e_p50_s * s,
            r.e2e_p99_s * s,
            r.cache_hit_rate * 100.0,
            share.join(", ")
        );
    }
    out
}

/// A grouped bar chart of TTFT p50/p99 per strategy (simulated seconds).
pub fn svg(rows: &[(StrategyKind, LoadReport)], workload: &str) -> String {
    let w = 160 * rows.len().max(1) + 120;
    let h = 360;
    let max = rows
        .iter()
        .map(|(_, r)| r.ttft_p99_s * r.time_scale)
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">llmgate bench: {workload}, time to first token (simulated s): p50 (light) and p99 (dark)</text>\n"
    );
    for (i, (k, r)) in rows.iter().enumerate() {
        let x = 80 + i * 160;
        for (j, (v, color)) in [
            (r.ttft_p50_s * r.time_scale, "#8ab4f8"),
            (r.ttft_p99_s * r.time_scale, "#1a56db"),
        ]
        .into_iter()
        .enumerate()
        {
            let bh = (v / max * 250.0).max(1.0);
            let bx = x + j * 50;
            let by = 300.0 - bh;
            let _ = writeln!(
                s,
                "<rect x=\"{bx}\" y=\"{by:.1}\" width=\"45\" height=\"{bh:.1}\" fill=\"{color}\"/><text x=\"{bx}\" y=\"{:.1}\">{v:.2}</text>",
                by - 4.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"320\">{}</text><text x=\"{x}\" y=\"336\">errors {}, cut off {}</text>",
            k.as_str(),
            r.errors,
            r.timed_out
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_reports_errors_and_cut_off_requests_apart() {
        let report = LoadReport {
            completed: 95,
            errors: 2,
            timed_out: 3,
            time_scale: 1.0,
            ..LoadReport::default()
        };
        let t = table(&[(StrategyKind::RoundRobin, report)]);
        let row = t.lines().nth(2).unwrap();
        assert!(row.starts_with("| round_robin | 95 | 2 | 3 | "), "{row}");
        assert!(t.lines().next().unwrap().contains("| errors | cut off |"));
    }
}
