//! Prometheus `/metrics` on its own port, and the fleet gauges behind it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use llmgate_balance::Fleet;
use llmgate_queue::QueueHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 5 ms to 2 minutes (chat to long reasoning).
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the global Prometheus recorder. Call it before building layers:
/// a layer that registers its metrics when built would otherwise register
/// them with no recorder, and they would never show up.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// Serves `handle` on `addr` and refreshes the fleet gauges every second.
/// Returns the bound address.
pub async fn start_metrics(
    handle: PrometheusHandle,
    addr: SocketAddr,
    fleet: Fleet,
    queue: Option<QueueHandle>,
) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("server.metrics_listen {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let render = handle.clone();
    let app = Router::new().route(
        crate::defaults::METRICS_PATH,
        get(move || std::future::ready(render.render())),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tokio::spawn(async move {
        loop {
            handle.run_upkeep();
            record_fleet(&fleet, queue.as_ref());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(bound)
}

/// Sets the per-replica gauges from the fleet's current state.
pub fn record_fleet(fleet: &Fleet, queue: Option<&QueueHandle>) {
    for (r, breaker) in fleet.report() {
        let id = r.state.id().to_string();
        metrics::gauge!("llmgate_replica_in_flight", "replica" => id.clone())
            .set(r.load.in_flight as f64);
        metrics::gauge!("llmgate_replica_ready", "replica" => id.clone()).set(if r.ready {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("llmgate_replica_load_cost", "replica" => id.clone()).set(r.load.cost());
        if let Some(e) = r.load.engine {
            metrics::gauge!("llmgate_replica_engine_waiting", "replica" => id.clone())
                .set(e.waiting);
            metrics::gauge!("llmgate_replica_kv_cache_usage_ratio", "replica" => id.clone())
                .set(e.kv_cache_usage);
        }
        if let Some(g) = r.load.gpu {
            metrics::gauge!("llmgate_gpu_utilization_ratio", "replica" => id.clone())
                .set(g.max_utilization_pct / 100.0);
            metrics::gauge!("llmgate_gpu_memory_used_ratio", "replica" => id.clone())
                .set(g.max_memory_fraction);
            metrics::gauge!("llmgate_gpu_temperature_celsius", "replica" => id.clone())
                .set(g.max_temperature_c);
        }
        if let Some(b) = breaker {
            let v = match b {
                llmgate_breaker::BreakerState::Closed => 0.0,
                llmgate_breaker::BreakerState::HalfOpen => 1.0,
                llmgate_breaker::BreakerState::Open => 2.0,
            };
            metrics::gauge!("llmgate_replica_breaker_state", "replica" => id.clone()).set(v);
        }
    }
    if let Some(q) = queue {
        metrics::gauge!("llmgate_queue_total_depth").set(q.total_depth() as f64);
    }
}
