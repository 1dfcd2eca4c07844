//! The admin API: list replicas, add one, drain one, change the strategy.
//!
//! Bound to localhost by default; when a token is configured every call
//! needs `Authorization: Bearer <token>` (required by config validation
//! when bound elsewhere).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use llmgate_balance::{EndpointSpec, Fleet, StrategyKind};
use llmgate_queue::QueueHandle;
use serde::Deserialize;

#[derive(Clone)]
struct Admin {
    fleet: Fleet,
    queue: Option<QueueHandle>,
    token: Option<Arc<str>>,
}

/// The admin router.
pub fn router(fleet: Fleet, queue: Option<QueueHandle>, token: Option<String>) -> Router {
    let state = Admin {
        fleet,
        queue,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/admin/replicas", get(list).post(add))
        .route("/admin/replicas/{id}/drain", post(drain))
        .route("/admin/replicas/{id}", axum::routing::delete(remove))
        .route("/admin/strategy", get(get_strategy).put(set_strategy))
        .route("/admin/queue", get(queue_status))
        .with_state(state)
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = llmgate_core::error_body(
        &msg.into(),
        llmgate_core::default_error_type(status),
        "admin_error",
    );
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn authorized(a: &Admin, headers: &HeaderMap) -> Result<(), Box<Response>> {
    match &a.token {
        None => Ok(()),
        Some(t) if llmgate_core::bearer_token(headers) == Some(&**t) => Ok(()),
        Some(_) => Err(Box::new(err(
            StatusCode::UNAUTHORIZED,
            "admin API needs Authorization: Bearer <admin_token>",
        ))),
    }
}

async fn list(State(a): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let rows: Vec<_> = a
        .fleet
        .report()
        .into_iter()
        .map(|(r, breaker)| {
            let s = &r.state;
            let (served, failed) = s.totals();
            serde_json::json!({
                "id": &**s.id(),
                "url": s.spec().url,
                "models": s.spec().models,
                "weight": s.spec().weight,
                "max_concurrent": s.spec().max_concurrent,
                "labels": s.spec().labels,
                "health": s.health(),
                "draining": s.is_draining(),
                "ready": r.ready,
                "breaker": breaker.map(|b| format!("{b:?}").to_lowercase()),
                "in_flight": r.load.in_flight,
                "served": served,
                "failed": failed,
                "load_cost": r.load.cost(),
                "latency_ewma_s": r.load.latency_s,
                "ttft_ewma_s": r.load.ttft_s,
                "pending_prefill_tokens": r.load.pending_prefill_tokens,
                "prefill_pace_s_per_token": r.load.prefill_pace_s,
                "error_rate": r.load.error_rate,
                "engine": r.load.engine.map(|e| serde_json::json!({"running": e.running, "waiting": e.waiting, "kv_cache_usage": e.kv_cache_usage})),
                "gpu": r.load.gpu.map(|g| serde_json::json!({"utilization_pct": g.max_utilization_pct, "memory_fraction": g.max_memory_fraction, "temperature_c": g.max_temperature_c})),
            })
        })
        .collect();
    Json(serde_json::json!({"strategy": a.fleet.strategy().as_str(), "replicas": rows}))
        .into_response()
}

async fn add(State(a): State<Admin>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let spec: EndpointSpec = match crate::gateway::read_json(body).await {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    match a.fleet.handle().upsert(spec) {
        Ok(()) => (StatusCode::CREATED, "added").into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[derive(Deserialize)]
struct DrainQuery {
    within_secs: Option<u64>,
}

async fn drain(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DrainQuery>,
) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let within = Duration::from_secs(q.within_secs.unwrap_or(30));
    match a.fleet.handle().drain(&id, within) {
        Ok(()) => (StatusCode::ACCEPTED, format!("draining {id}")).into_response(),
        Err(e) => err(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn remove(State(a): State<Admin>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    match a.fleet.handle().remove(&id) {
        Ok(()) => (StatusCode::OK, format!("removed {id}")).into_response(),
        Err(e) => err(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn get_strategy(State(a): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    Json(serde_json::json!({"strategy": a.fleet.strategy().as_str()})).into_response()
}

#[derive(Deserialize)]
struct StrategyBody {
    strategy: String,
}

async fn set_strategy(State(a): State<Admin>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    let b: StrategyBody = match crate::gateway::read_json(body).await {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    match b.strategy.parse::<StrategyKind>() {
        Ok(k) => {
            a.fleet.set_strategy(k);
            Json(serde_json::json!({"strategy": k.as_str()})).into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn queue_status(State(a): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&a, &headers) {
        return *r;
    }
    match &a.queue {
        Some(q) => Json(serde_json::json!({"depth": q.total_depth(), "snapshot": format!("{:?}", q.snapshot())})).into_response(),
        None => err(StatusCode::NOT_FOUND, "the queue is disabled"),
    }
}
