//! `llmgate serve`: the gateway with its metrics and admin listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use llmgate_balance::{
    AttemptTimeouts, BalanceConfig, BreakerConfig, EndpointSpec, Fleet, FleetConfig, GpuThresholds,
    HealthConfig, StrategyKind,
};
use llmgate_sim::{SimConfig, SimFleet};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::gateway::{build_stack, shared_router, AppState, ConnectionService};

/// A running gateway: its addresses, the fleet, and (with no replicas
/// configured) the embedded simulated fleet.
pub struct Running {
    /// Address of the OpenAI-compatible API.
    pub addr: SocketAddr,
    /// Address of Prometheus `/metrics` (when a recorder was installed).
    pub metrics_addr: Option<SocketAddr>,
    /// Address of the admin API.
    pub admin_addr: SocketAddr,
    /// The fleet.
    pub fleet: Fleet,
    /// The simulated fleet, when serving in front of one.
    pub sim: Option<SimFleet>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Starts a graceful shutdown and waits for it: listeners close,
    /// in-flight and queued requests finish up to the drain deadline.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
        if let Some(sim) = self.sim {
            sim.shutdown();
        }
    }

    /// Waits until the server stops on its own (signal).
    pub async fn wait(self) {
        let _ = self.done.await;
        if let Some(sim) = self.sim {
            sim.shutdown();
        }
    }
}

/// The fleet settings a config asks for.
pub fn fleet_config(config: &Config) -> Result<FleetConfig, String> {
    let strategy: StrategyKind = config
        .routing
        .strategy
        .parse()
        .map_err(|e| format!("routing.strategy: {e}"))?;
    let r = &config.routing;
    let gpu = GpuThresholds {
        max_utilization_pct: r.gpu_max_utilization_pct,
        max_memory_fraction: r.gpu_max_memory_fraction,
        max_temperature_c: r.gpu_max_temperature_c,
    };
    let b = &config.breaker;
    let t = &config.timeouts;
    let h = &config.health;
    Ok(FleetConfig {
        balance: BalanceConfig {
            strategy,
            gpu_filter: r.enable_gpu_aware.then_some(gpu),
            staleness: Duration::from_secs(r.telemetry_staleness_secs),
            ..BalanceConfig::default()
        },
        timeouts: AttemptTimeouts {
            first_chunk: Duration::from_secs(t.first_chunk_secs),
            idle: Duration::from_secs(t.idle_secs),
            base: Duration::from_secs(t.attempt_base_secs),
            per_token: Duration::from_millis(t.attempt_per_token_ms),
            ..AttemptTimeouts::default()
        },
        health: Some(HealthConfig {
            interval: Duration::from_secs(h.interval_secs),
            timeout: Duration::from_secs(h.timeout_secs),
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
            stall_after: Duration::from_secs(t.first_chunk_secs),
            ejection: Duration::from_secs(b.cooldown_secs.max(1)),
        }),
        breaker: b.enabled.then(|| {
            BreakerConfig::new()
                .consecutive_failures(b.failure_threshold)
                .failure_rate(b.failure_rate)
                .min_calls(b.min_calls)
                .window(Duration::from_secs(b.window_secs))
                .cool_down(Duration::from_secs(b.cooldown_secs))
                .half_open_max_probes(b.half_open_probes)
                .half_open_successes(b.half_open_successes)
        }),
        scrape: Some((
            Duration::from_secs(r.scrape_interval_secs),
            Duration::from_secs(r.scrape_timeout_secs),
        )),
        h2c: false,
    })
}

/// Starts the gateway as `config` says. With no replicas configured it
/// starts the embedded simulated fleet first. `install_metrics`: install the
/// global Prometheus recorder (only once per process).
pub async fn start(config: Config, install_metrics: bool) -> Result<Running, String> {
    let fleet_cfg = fleet_config(&config)?;
    let recorder = if install_metrics {
        Some(crate::telemetry::install_recorder()?)
    } else {
        None
    };
    let (specs, sim) = if config.uses_sim() {
        let mut configs = Vec::new();
        for (i, p) in config.sim.replicas.iter().enumerate() {
            let profile = p.parse().map_err(|e| format!("sim.replicas[{i}]: {e}"))?;
            configs.push(
                SimConfig::default()
                    .with_profile(profile)
                    .with_model(config.sim.model.clone())
                    .with_speedup(config.sim.speedup)
                    .with_seed(i as u64 + 1)
                    .with_id(format!("sim-{i}-{p}")),
            );
        }
        let sim = SimFleet::spawn(configs)
            .map_err(|e| format!("cannot start the simulated fleet: {e}"))?;
        let specs = sim
            .replicas()
            .iter()
            .map(|r| EndpointSpec::new(r.id(), r.url()).models([config.sim.model.clone()]))
            .collect();
        (specs, Some(sim))
    } else {
        let specs = config.replicas.clone();
        (specs, None)
    };
    let fleet = Fleet::new(fleet_cfg, specs).map_err(|e| e.to_string())?;
    if let Some(path) = &config.server.replicas_file {
        // Read once now so a broken file stops start-up with a clear error.
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("server.replicas_file {}: {e}", path.display()))?;
        let specs = llmgate_balance::parse_replicas_file(&text)
            .map_err(|e| format!("server.replicas_file {}: {e}", path.display()))?;
        fleet
            .handle()
            .sync(specs, config.server.drain_timeout())
            .map_err(|e| format!("server.replicas_file {}: {e}", path.display()))?;
        fleet.handle().watch_file(
            path.clone(),
            Duration::from_secs(config.server.replicas_watch_secs),
            config.server.drain_timeout(),
        );
    }
    let (gateway, queue) = build_stack(&config, &fleet);
    let state = AppState {
        gateway,
        fleet: fleet.clone(),
        queue: queue.clone(),
        tiers: crate::tiers::TierTable::from_config(&config),
        metrics: Arc::new(crate::metered::RequestMetrics::new()),
    };

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("server.listen {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin_listener = TcpListener::bind(config.server.admin_listen)
        .await
        .map_err(|e| format!("server.admin_listen {}: {e}", config.server.admin_listen))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;

    let metrics_addr = match recorder {
        Some(handle) => Some(
            crate::telemetry::start_metrics(
                handle,
                config.server.metrics_listen,
                fleet.clone(),
                queue.clone(),
            )
            .await?,
        ),
        None => None,
    };

    let (tx, rx) = watch::channel(false);
    let drain = Duration::from_secs(config.server.drain_timeout_secs);
    let app_state = Arc::new(state);
    let app = shared_router(app_state.clone());
    let server_config = llmgate_http1::ServerConfig {
        max_body_bytes: config.server.max_body_bytes,
        idle_timeout: config.server.idle_timeout(),
        io_threads: Some(config.server.io_threads()),
        ..llmgate_http1::ServerConfig::default()
    };
    let admin = crate::admin::router(fleet.clone(), queue, config.server.admin_token.clone())
        .into_make_service();
    let mut rx_admin = rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(admin_listener, admin)
            .with_graceful_shutdown(async move {
                let _ = rx_admin.wait_for(|s| *s).await;
            })
            .await;
    });
    let done = tokio::spawn(async move {
        let mut rx_sig = rx.clone();
        let stop = async move {
            tokio::select! {
                _ = rx_sig.wait_for(|s| *s) => {}
                _ = shutdown_signal() => {}
            }
        };
        let (stopping_tx, mut stopping_rx) = watch::channel(false);
        let server = llmgate_http1::serve(
            listener,
            server_config,
            move |peer: SocketAddr| ConnectionService::new(app_state.clone(), app.clone(), peer),
            async move {
                stop.await;
                tracing::info!("shutting down: no new connections; finishing in-flight requests");
                let _ = stopping_tx.send(true);
            },
        );
        tokio::pin!(server);
        tokio::select! {
            _ = &mut server => {}
            _ = async {
                let _ = stopping_rx.wait_for(|s| *s).await;
                tokio::time::sleep(drain).await;
            } => {
                tracing::warn!("drain deadline passed with requests still in flight");
            }
        }
    });
    Ok(Running {
        addr,
        metrics_addr,
        admin_addr,
        fleet,
        sim,
        shutdown: tx,
        done,
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
