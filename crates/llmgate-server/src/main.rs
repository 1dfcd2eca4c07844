//! The `llmgate` binary: `serve` (the gateway), `agent` (a GPU node's NVML
//! readings over HTTP) and `bench` (strategies compared on a simulated fleet).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use llmgate_server::config::Config;

mod alloc;

// Per-thread heaps suit the gateway's thread-per-core I/O: a request's
// allocations are made and freed on one thread, cheaply.
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

#[derive(Parser)]
#[command(
    name = "llmgate",
    version,
    about = "GPU-aware load balancer for LLM inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible gateway. With no replicas configured, in
    /// front of an embedded simulated fleet.
    Serve {
        /// TOML config file (see examples/llmgate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// API listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Prometheus listen address (overrides server.metrics_listen).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Admin API listen address (overrides server.admin_listen).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Serve this node's GPU readings (NVML) at /gpu and /metrics.
    Agent {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9400")]
        listen: SocketAddr,
    },
    /// Compare routing strategies on a named workload over a simulated fleet.
    Bench(llmgate_server::bench::BenchArgs),
}

/// Whether log lines are coloured: stderr is a terminal and `NO_COLOR`
/// (<https://no-color.org>) is unset or empty.
fn log_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the log subscriber: `RUST_LOG` filters (else `default_level`),
/// `LLMGATE_LOG_FORMAT` picks `text` (the default) or `json`, one object
/// per line with the event's fields at the top level, for log collectors.
fn init_logging(default_level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var_os("LLMGATE_LOG_FORMAT").unwrap_or_default();
    match format.to_string_lossy().trim() {
        // Colour only for a person at a terminal: a pipe, a file or a
        // container's log collector would keep the escape codes as text.
        "" | "text" => logs.with_ansi(log_colour()).init(),
        "json" => logs.json().flatten_event(true).with_ansi(false).init(),
        other => {
            return Err(format!(
                "LLMGATE_LOG_FORMAT: expected \"text\" or \"json\", got {other:?}"
            ))
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // The bench draws a progress line; per-request logs would break it.
    let default_level = match cli.command {
        Command::Bench(_) => "warn",
        _ => "info",
    };
    if let Err(e) = init_logging(default_level) {
        eprintln!("llmgate: config error: {e}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                listen,
                metrics_listen,
                admin_listen,
            } => serve(config, listen, metrics_listen, admin_listen).await,
            Command::Agent { listen } => agent(listen).await,
            Command::Bench(args) => llmgate_server::bench::run(args).await,
        }
    });
    std::process::exit(code);
}

async fn serve(
    path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> i32 {
    let mut config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("llmgate: config error: {e}");
            return 2;
        }
    };
    if let Err(e) = config.apply_env(|k| std::env::var(k).ok()) {
        eprintln!("llmgate: config error: {e}");
        return 2;
    }
    if let Some(a) = listen {
        config.server.listen = a;
    }
    if let Some(a) = metrics_listen {
        config.server.metrics_listen = a;
    }
    if let Some(a) = admin_listen {
        config.server.admin_listen = a;
    }
    if let Err(e) = config.validate() {
        eprintln!("llmgate: config error: {e}");
        return 2;
    }
    let simulated = config.uses_sim();
    let running = match llmgate_server::serve::start(config, true).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("llmgate: {e}");
            return 1;
        }
    };
    if simulated {
        println!(
            "llmgate: no replicas configured; serving in front of an embedded simulated fleet:"
        );
        if let Some(sim) = &running.sim {
            for r in sim.replicas() {
                println!("  {} at {}", r.id(), r.url());
            }
        }
    }
    let metrics = match running.metrics_addr {
        Some(a) => format!("http://{a}/metrics"),
        None => "off".to_string(),
    };
    println!(
        "llmgate: serving on http://{} (metrics on {metrics}, admin on http://{})",
        running.addr, running.admin_addr
    );
    println!("try:\n  curl -s http://{}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"llama-3-8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}],\"max_tokens\":32}}'", running.addr);
    running.wait().await;
    0
}

async fn agent(listen: SocketAddr) -> i32 {
    let probe = llmgate_telemetry::NvmlProbe::new();
    println!("llmgate agent: serving GPU readings on http://{listen}/gpu and /metrics");
    match llmgate_telemetry::agent::serve(listen, probe, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("llmgate agent: {e}");
            1
        }
    }
}
