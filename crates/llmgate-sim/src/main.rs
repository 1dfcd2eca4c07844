//! `llmgate-sim`: run one simulated replica by hand.
//!
//! ```text
//! llmgate-sim --port 8001 --profile h100-8b --model llama-3-8b --speedup 1 --flavor vllm
//! ```

use std::net::IpAddr;

use clap::Parser;
use llmgate_sim::{Faults, MetricsFlavor, Profile, SimConfig, SimReplica};

/// A simulated continuous-batching LLM replica (OpenAI API, vLLM/SGLang metrics).
#[derive(Debug, Parser)]
#[command(name = "llmgate-sim", version)]
struct Args {
    /// Port to listen on (0 = ephemeral).
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Engine profile: h100-8b, a100-8b, small, h100-70b-tp4.
    #[arg(long, default_value = "h100-8b")]
    profile: Profile,
    /// Model name served.
    #[arg(long, default_value = "llama-3-8b")]
    model: String,
    /// Virtual seconds per wall second.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Metric names: vllm or sglang.
    #[arg(long, default_value = "vllm")]
    flavor: MetricsFlavor,
    /// Seed of jitter and fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replica id for the x-sim-replica header (default sim-<port>).
    #[arg(long)]
    id: Option<String>,
    /// Initial faults as JSON, e.g. '{"error_rate":0.1}'.
    #[arg(long)]
    faults: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let faults: Faults = match &args.faults {
        Some(s) => serde_json::from_str(s)?,
        None => Faults::default(),
    };
    let mut config = SimConfig::default()
        .with_profile(args.profile)
        .with_model(args.model)
        .with_speedup(args.speedup)
        .with_flavor(args.flavor)
        .with_seed(args.seed)
        .with_faults(faults)
        .with_port(args.port);
    config.host = args.host;
    if let Some(id) = args.id {
        config = config.with_id(id);
    }
    let sim = SimReplica::spawn(config)?;
    tracing::info!(url = %sim.url(), id = sim.id(), "llmgate-sim serving");
    println!("llmgate-sim {} serving on {}", sim.id(), sim.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
