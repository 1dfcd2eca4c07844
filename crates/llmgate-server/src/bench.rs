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

/// Approximate width of `text` in pixels at `font` px (sans-serif), for
/// sizing the chart so that no label is cut off.
fn text_width(text: &str, font: f64) -> f64 {
    text.chars().count() as f64 * font * 0.6
}

/// `text` with the characters XML gives meaning to escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// One panel of the chart: a title, a value axis from 0, and per strategy
/// one bar per series (`(value, colour)`).
struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    bars: Vec<Vec<(f64, &'static str)>>,
}

const LIGHT: &str = "#8ab4f8";
const DARK: &str = "#1a56db";
const PANEL_H: f64 = 250.0;
const PLOT_TOP: f64 = 40.0;
const PLOT_H: f64 = 160.0;
const AXIS_W: f64 = 70.0;
const BAR_W: f64 = 38.0;

/// The comparison as an SVG chart, three panels stacked: time to first
/// token and end-to-end latency (p50 light, p99 dark) and throughput, all
/// in simulated time; every strategy's errors and cut-off requests under
/// its name.
pub fn svg(rows: &[(StrategyKind, LoadReport)], workload: &str) -> String {
    let scale = |r: &LoadReport| r.time_scale.max(f64::MIN_POSITIVE);
    // p50 (light) and p99 (dark) of a latency, in simulated seconds.
    let percentiles = |of: fn(&LoadReport) -> (f64, f64)| -> Vec<Vec<(f64, &'static str)>> {
        rows.iter()
            .map(|(_, r)| {
                let (p50, p99) = of(r);
                vec![(p50 * scale(r), LIGHT), (p99 * scale(r), DARK)]
            })
            .collect()
    };
    let panels = [
        Panel {
            title: "time to first token, p50 and p99",
            unit: "s",
            bars: percentiles(|r| (r.ttft_p50_s, r.ttft_p99_s)),
        },
        Panel {
            title: "end-to-end latency, p50 and p99",
            unit: "s",
            bars: percentiles(|r| (r.e2e_p50_s, r.e2e_p99_s)),
        },
        Panel {
            title: "throughput",
            unit: "req/s",
            bars: rows
                .iter()
                .map(|(_, r)| vec![(r.throughput_rps / scale(r), DARK)])
                .collect(),
        },
    ];
    let title = format!(
        "llmgate bench: {}, simulated time (light p50, dark p99)",
        xml_escape(workload)
    );
    let names: Vec<String> = rows.iter().map(|(k, _)| k.as_str().to_string()).collect();
    let notes: Vec<String> = rows
        .iter()
        .map(|(_, r)| format!("errors {}, cut off {}", r.errors, r.timed_out))
        .collect();
    let group_w = names
        .iter()
        .chain(&notes)
        .map(|t| text_width(t, 11.0) + 12.0)
        .fold(2.0 * BAR_W + 24.0, f64::max);
    let plots_w = AXIS_W + group_w * rows.len().max(1) as f64 + 20.0;
    let w = plots_w.max(text_width(&title, 14.0) + 20.0).ceil();
    let h = 40.0 + PANEL_H * panels.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"14\">{title}</text>\n"
    );
    for (p, panel) in panels.iter().enumerate() {
        let top = 40.0 + PANEL_H * p as f64;
        let base = top + PLOT_TOP + PLOT_H;
        let max = panel
            .bars
            .iter()
            .flatten()
            .map(|(v, _)| *v)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\" font-size=\"13\">{} ({})</text>",
            top + 20.0,
            panel.title,
            panel.unit
        );
        // Axis with gridlines at 0, half and the largest value.
        for f in [0.0, 0.5, 1.0] {
            let y = base - f * PLOT_H;
            let _ = writeln!(
                s,
                "<line x1=\"{AXIS_W}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                plots_w - 10.0,
                AXIS_W - 6.0,
                y + 4.0,
                tick(f * max)
            );
        }
        for (i, series) in panel.bars.iter().enumerate() {
            let x = AXIS_W + 10.0 + group_w * i as f64;
            for (j, (v, colour)) in series.iter().enumerate() {
                let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
                let bh = (v / max * PLOT_H).max(1.0);
                let bx = x + (BAR_W + 4.0) * j as f64;
                let _ = writeln!(
                    s,
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{BAR_W}\" height=\"{bh:.1}\" fill=\"{colour}\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    base - bh,
                    bx + BAR_W / 2.0,
                    base - bh - 4.0,
                    tick(v)
                );
            }
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\">{}</text><text x=\"{x:.1}\" y=\"{:.1}\" fill=\"#555\">{}</text>",
                base + 16.0,
                xml_escape(&names[i]),
                base + 30.0,
                notes[i]
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A value label with about three significant digits.
fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
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

    fn report(ttft: (f64, f64), e2e: (f64, f64), rps: f64, errors: usize) -> LoadReport {
        LoadReport {
            completed: 100,
            errors,
            time_scale: 2.0,
            ttft_p50_s: ttft.0,
            ttft_p99_s: ttft.1,
            e2e_p50_s: e2e.0,
            e2e_p99_s: e2e.1,
            throughput_rps: rps,
            ..LoadReport::default()
        }
    }

    /// Heights of the `<rect>` bars, in document order (the background
    /// first).
    fn bar_heights(svg: &str) -> Vec<f64> {
        svg.split("<rect ")
            .skip(1)
            .map(|r| {
                let h = r.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn chart_has_three_panels_scaled_to_their_largest_value() {
        let rows = [
            (
                StrategyKind::RoundRobin,
                report((0.01, 0.06), (1.0, 10.0), 20.0, 0),
            ),
            (
                StrategyKind::LeastConnections,
                report((0.01, 0.03), (0.5, 5.0), 40.0, 3),
            ),
        ];
        let svg = svg(&rows, "chat<short>");
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("chat&lt;short&gt;") && !svg.contains("chat<short>"));
        for needle in [
            "round_robin",
            "least_connections",
            "errors 0, cut off 0",
            "errors 3, cut off 0",
            "time to first token",
            "end-to-end latency",
            "throughput (req/s)",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        // Background, then per panel the bars strategy by strategy.
        let h = bar_heights(&svg);
        assert_eq!(h.len(), 1 + 4 + 4 + 2, "{h:?}");
        let (ttft, e2e, rps) = (&h[1..5], &h[5..9], &h[9..11]);
        assert_eq!(ttft[1], PLOT_H, "round robin's p99 is the tallest");
        assert_eq!(ttft[3], PLOT_H / 2.0);
        assert_eq!(e2e[1], PLOT_H);
        assert_eq!(e2e[3], PLOT_H / 2.0);
        // Throughput in simulated req/s: 20 / 2 and 40 / 2.
        assert_eq!(rps, [PLOT_H / 2.0, PLOT_H]);
        assert!(svg.contains(">10.0<") && svg.contains(">20.0<"), "{svg}");
        // Wide enough for the title.
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let title = "llmgate bench: chat&lt;short&gt;, simulated time (light p50, dark p99)";
        assert!(width >= text_width(title, 14.0), "{width}");
    }
}
