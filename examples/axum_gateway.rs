//! llmgate's layers inside an existing axum app, next to the app's own routes.
//!
//! The app keeps its routes (`GET /hello`, `GET /app/status`); only
//! `/v1/*` goes through the llmgate stack, in the order of the design:
//!
//! ```text
//! MetaLayer → RateLimitLayer → PriorityQueueLayer → RetryLayer → Fleet balancer
//! ```
//!
//! over three simulated replicas (`llmgate-sim`, in process). Errors of the
//! stack become OpenAI-shaped answers (`{"error": {...}}`, 429 with
//! `Retry-After`, 503, 504 ...) through `llmgate_server::errors::map_error`,
//! which renders each layer's error with `llmgate_core::error_response`.
//!
//! The example binds `127.0.0.1:0`, sends requests with a hyper-util
//! client to the app's routes and to `/v1/chat/completions` (one of them
//! streamed, one burst that the per-client rate limit cuts off), prints
//! what comes back and shuts down.
//!
//! ```text
//! cargo run --example axum_gateway
//! ```

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_balance::{EndpointSpec, Fleet, FleetConfig};
use llmgate_core::{BufferedBody, MetaLayer};
use llmgate_queue::PriorityQueueLayer;
use llmgate_ratelimit::{Limit, RateLimitLayer};
use llmgate_retry::RetryLayer;
use llmgate_server::errors::map_error;
use llmgate_sim::{SimConfig, SimFleet};
use tower::{BoxError, ServiceBuilder};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Three simulated replicas, 50× faster than real time.
    let sims = SimFleet::spawn(vec![SimConfig::default().with_speedup(50.0); 3])?;
    let specs = sims
        .replicas()
        .iter()
        .map(|r| EndpointSpec::new(r.id(), r.url()).models([r.config().model.clone()]))
        .collect();
    let fleet = Fleet::new(FleetConfig::default(), specs)?;

    // The llmgate stack, as one service that never fails (what axum asks
    // of a route): every error becomes an OpenAI-shaped answer.
    let llm = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(
            |e: BoxError| async move { map_error(&e) },
        ))
        .layer(MetaLayer::new().body_limit(1 << 20))
        .layer(
            // Per client (x-client-id, bearer token or peer address):
            // 3 requests at once, then one every 2 seconds.
            RateLimitLayer::builder()
                .requests(Limit::per_minute(30).burst(3))
                .build(),
        )
        .layer(
            PriorityQueueLayer::<Request<BufferedBody>>::builder()
                .capacity(256)
                .queue_timeout(Duration::from_secs(10))
                .build(),
        )
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .backoff(Duration::from_millis(20), Duration::from_millis(500))
                .build(),
        )
        .service(fleet.service());

    // The app: its own routes, and llmgate mounted on /v1/* only.
    // `route_service` keeps the full path (`nest_service` would strip `/v1`).
    let app_fleet = fleet.clone();
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the app\n" }))
        .route(
            "/app/status",
            get(move || {
                let fleet = app_fleet.clone();
                async move {
                    Json(serde_json::json!({
                        "app": "ok",
                        "healthy_replicas": fleet.healthy_count(),
                        "models": fleet.models(),
                    }))
                }
            }),
        )
        .route_service("/v1/{*path}", llm);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    println!("axum app with llmgate on /v1/* listening on http://{addr}\n");

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = format!("http://{addr}");

    // 1. The app's own routes never touch the llmgate layers.
    for path in ["/hello", "/app/status"] {
        let res = client.get(format!("{base}{path}").parse()?).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!(
            "GET {path} -> {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }

    // 2. Non-streamed chat completions through the stack.
    println!();
    for (i, priority) in ["high", "normal", "low"].into_iter().enumerate() {
        let req = chat(&base, "alice", priority, false, &format!("Question {i}"))?;
        let res = client.request(req).await?;
        let status = res.status();
        let replica = header(&res, "x-sim-replica");
        let remaining = header(&res, "x-ratelimit-remaining-requests");
        let body = res.into_body().collect().await?.to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        println!(
            "POST /v1/chat/completions (x-priority: {priority}) -> {status} from {replica}, \
             {} completion tokens, rate limit left {remaining}",
            json["usage"]["completion_tokens"]
        );
    }

    // 3. A streamed one: SSE chunks relayed as they come.
    println!();
    let res = client
        .request(chat(&base, "bob", "normal", true, "Tell me a story")?)
        .await?;
    println!(
        "POST /v1/chat/completions (stream) -> {} from {}, content-type {}",
        res.status(),
        header(&res, "x-sim-replica"),
        header(&res, "content-type")
    );
    let mut body = res.into_body();
    let (mut chunks, mut events, mut text, mut done) = (0u32, 0u32, String::new(), false);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            chunks += 1;
            for line in String::from_utf8_lossy(&data).lines() {
                let Some(payload) = line.strip_prefix("data: ") else {
                    continue;
                };
                events += 1;
                if payload == "[DONE]" {
                    done = true;
                } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) {
                    if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                        text.push_str(t);
                    }
                }
            }
        }
    }
    println!(
        "   {chunks} body chunks, {events} SSE events, ended with [DONE]: {done}; \
         text starts {:?}",
        text.chars().take(40).collect::<String>()
    );

    // 4. A burst from one client: the rate limit answers 429 in OpenAI's shape.
    println!();
    let mut limited = 0;
    for i in 0..5 {
        let res = client
            .request(chat(&base, "greedy", "normal", false, "Hi")?)
            .await?;
        let status = res.status();
        let retry_after = header(&res, "retry-after");
        let body = res.into_body().collect().await?.to_bytes();
        if status.is_success() {
            println!("greedy request {i} -> {status}");
        } else {
            limited += u32::from(status == http::StatusCode::TOO_MANY_REQUESTS);
            println!(
                "greedy request {i} -> {status}, retry-after {retry_after}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    // 5. A path nobody serves under /v1 reaches a replica and gets its 404.
    let res = client
        .request(
            Request::post(format!("{base}/v1/nope"))
                .header("x-client-id", "carol")
                .body(Full::new(Bytes::from_static(b"{}")))?,
        )
        .await?;
    println!("\nPOST /v1/nope -> {}", res.status());

    let _ = stop_tx.send(());
    server.await??;
    sims.shutdown();
    println!("server stopped");
    if !done || limited == 0 {
        return Err("expected a complete stream and a rate-limited request".into());
    }
    Ok(())
}

fn chat(
    base: &str,
    client: &str,
    priority: &str,
    stream: bool,
    prompt: &str,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let body = serde_json::json!({
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 24,
        "stream": stream,
    });
    Ok(Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-client-id", client)
        .header("x-priority", priority)
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?)
}

fn header<B>(res: &http::Response<B>, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example whole: it serves, calls, prints and
    /// checks what it showed, against its own embedded replicas.
    #[test]
    fn runs_to_the_end() {
        super::main().unwrap();
    }
}
