//! llmgate's layers on a typed, non-HTTP service: the shape of a gRPC
//! (tonic) handler, with nothing HTTP-specific in user code.
//!
//! A `Generate` RPC takes a `GenerateRequest { tenant, prompt, max_tokens,
//! priority }` and returns a `GenerateReply`. Its backend is a simulated
//! model replica (`llmgate-sim`, in process). The handler calls the backend
//! through this stack:
//!
//! ```text
//! RateLimitLayer (key = tenant, cost = prompt/4 + max_tokens, NoSettle)
//!   → PriorityQueueLayer (GenerateRequest: PriorityOf)
//!   → ConcurrencyLimit(1)
//!   → CircuitBreakerLayer (ErrorClassifier: Err = failure, fail fast)
//!   → backend
//! ```
//!
//! and maps the layers' errors to gRPC status codes as a tonic handler
//! would (`RateLimited` → RESOURCE_EXHAUSTED, `BreakerOpen` → UNAVAILABLE,
//! queue timeout → DEADLINE_EXCEEDED, backend errors → INTERNAL). It prints:
//! a burst with mixed priorities: the first call finds the backend idle and
//! goes straight to it, the five that wait leave the queue in priority order; a
//! free-tier tenant limited by requests and by tokens; the backend failing,
//! the breaker opening and refusing calls without touching the backend,
//! then closing again once the backend heals.
//!
//! ```text
//! cargo run --example grpc_style
//! ```
//!
//! # With tonic
//!
//! tonic needs `protoc` for its code generation, so this example stops at
//! the handler's inner service. In a tonic server the same layers go in one
//! of two places:
//!
//! * **Inside the handler**, as here: keep the stack in the struct that
//!   implements the generated service trait and call it from the RPC method
//!   (`self.stack.clone().oneshot(req.into_inner()).await.map_err(to_status)`;
//!   keep the stack boxed as a `BoxCloneSyncService`, see below for why),
//!   with `to_status` returning `tonic::Status::resource_exhausted(..)`,
//!   `Status::unavailable(..)` and so on, as `grpc_status` below does.
//! * **On the transport**, around every RPC:
//!   `Server::builder().layer(rate_limit).layer(breaker).add_service(GeneratorServer::new(svc))`.
//!   There requests are `http::Request<tonic::body::Body>`: give the rate
//!   limit a key extractor over the request's headers (gRPC metadata), e.g.
//!   `RateLimitLayer::builder().key_extractor(|r: &http::Request<_>| tenant_of(r.headers()))
//!   .on_response(NoSettle)` (or insert a `llmgate_core::RequestMeta` in an
//!   interceptor and keep the default `MetaClientKey`), and give the breaker
//!   `llmgate_breaker::GrpcClassifier`, which reads `grpc-status`. tonic
//!   turns a layer's error into a gRPC answer only when the error is a
//!   `tonic::Status` (otherwise the stream is reset), so put a `map_err`
//!   above the layers that turns `RateLimited` and `BreakerOpen` into
//!   `Status::resource_exhausted(..)` / `Status::unavailable(..)`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_breaker::{BreakerOpen, BreakerState, CircuitBreakerLayer, ErrorClassifier};
use llmgate_core::{find_in_chain, ClientKey, Priority};
use llmgate_queue::{PriorityOf, PriorityQueueLayer, QueueError};
use llmgate_ratelimit::{Builder, Limit, NoSettle, RateLimitLayer, RateLimited, Tier};
use llmgate_sim::{Faults, SimConfig, SimFleet};
use tower::limit::ConcurrencyLimitLayer;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};

/// The RPC's request message (what tonic would generate from a `.proto`).
#[derive(Debug, Clone)]
struct GenerateRequest {
    tenant: String,
    prompt: String,
    max_tokens: u32,
    priority: Priority,
}

/// The RPC's reply message.
#[derive(Debug)]
struct GenerateReply {
    text: String,
    completion_tokens: u64,
}

/// What the queue learns from a request.
impl PriorityOf for GenerateRequest {
    fn priority(&self) -> Priority {
        self.priority
    }
    fn client_key(&self) -> Option<ClientKey> {
        Some(ClientKey::from_id(&self.tenant))
    }
}

/// The backend failed (what the breaker counts).
#[derive(Debug)]
struct BackendError(String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend failed: {}", self.0)
    }
}

impl std::error::Error for BackendError {}

/// A gRPC status code and message, as a tonic handler would return.
fn grpc_status(e: &BoxError) -> (&'static str, String) {
    let err: &(dyn std::error::Error + 'static) = e.as_ref();
    if let Some(r) = find_in_chain::<RateLimited>(err) {
        let when = match r.retry_after() {
            Some(wait) => format!("retry in {wait:.1?}"),
            None => format!("cost {} can never fit this limit", r.cost()),
        };
        return (
            "RESOURCE_EXHAUSTED",
            format!("{} limit, {when}", r.kind().as_str()),
        );
    }
    if let Some(b) = find_in_chain::<BreakerOpen>(err) {
        return (
            "UNAVAILABLE",
            format!(
                "breaker {} open, retry in {:.1?}",
                b.name(),
                b.retry_after()
            ),
        );
    }
    if let Some(q) = find_in_chain::<QueueError>(err) {
        return match q {
            QueueError::Timeout { .. } => ("DEADLINE_EXCEEDED", q.to_string()),
            _ => ("UNAVAILABLE", q.to_string()),
        };
    }
    ("INTERNAL", e.to_string())
}

fn request(tenant: &str, priority: Priority, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        tenant: tenant.to_string(),
        prompt: "Write a haiku about load balancers".to_string(),
        max_tokens,
        priority,
    }
}

/// The stack as the handler keeps it.
type GenerateService = BoxCloneSyncService<GenerateRequest, GenerateReply, BoxError>;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One call to the model replica's completions route.
async fn call_backend(
    client: &HttpClient,
    url: &str,
    req: GenerateRequest,
) -> Result<GenerateReply, BoxError> {
    let body = serde_json::json!({
        "model": "llama-3-8b",
        "prompt": req.prompt,
        "max_tokens": req.max_tokens,
    });
    let http_req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let res = client.request(http_req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(BackendError(format!("status {status}")).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(GenerateReply {
        text: v["choices"][0]["text"].as_str().unwrap_or("").to_string(),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let sims = SimFleet::spawn(vec![SimConfig::default().with_speedup(50.0)])?;
    let replica = &sims.replicas()[0];

    // The backend: a typed service over the replica's completions route.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url: Arc<str> = format!("{}/v1/completions", replica.url()).into();
    let backend = service_fn(move |req: GenerateRequest| {
        let (client, url) = (client.clone(), url.clone());
        async move { call_backend(&client, &url, req).await }
    });

    // Rate limits per tenant, from the typed request: no headers, no
    // RequestMeta. Free tenants get 3 requests at once then 1 per second,
    // and 1,000 tokens; "acme" pays for more.
    let rate_limit = Builder::<String, _, _, _>::with_parts(
        |r: &GenerateRequest| r.tenant.clone(),
        |r: &GenerateRequest| (r.prompt.len() / 4) as u64 + u64::from(r.max_tokens),
        NoSettle,
    )
    .requests(Limit::per_second(1).burst(3))
    .tokens(Limit::per_minute(1_000))
    .tier(
        "acme".to_string(),
        Tier::new()
            .requests(Limit::per_second(100).burst(100))
            .tokens(Limit::per_minute(1_000_000)),
    )
    .build();
    let limiter: RateLimitLayer<String, _, _, _> = rate_limit.clone();

    let breaker = CircuitBreakerLayer::builder()
        .name("model-backend")
        .consecutive_failures(3)
        .cool_down(Duration::from_millis(300))
        .half_open_successes(1)
        .build()
        .with_classifier(ErrorClassifier);
    let breaker_handle = breaker.handle();

    // Boxed, as a handler would store it: the boxed future is `Send` by
    // construction. (Awaiting the unboxed stack inside an `async` block that
    // must be `Send`, e.g. `tokio::spawn(async move { stack.oneshot(r).await })`
    // or an `#[async_trait]` tonic method, trips a rustc limitation with
    // `E: Into<BoxError>` bounds over `BoxError` itself, "implementation of
    // `From` is not general enough", rust-lang/rust#64552; tower's own
    // `Timeout` does the same.)
    let stack: GenerateService = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(rate_limit)
            .layer(
                PriorityQueueLayer::builder()
                    .capacity(64)
                    .queue_timeout(Duration::from_secs(5))
                    .build::<GenerateRequest>(),
            )
            .layer(ConcurrencyLimitLayer::new(1))
            .layer(breaker)
            .service(backend),
    );

    // The RPC handler: call the stack, map errors to a gRPC status.
    let generate = |req: GenerateRequest| {
        let stack = stack.clone();
        async move { stack.oneshot(req).await.map_err(|e| grpc_status(&e)) }
    };

    println!("1. a burst from acme with mixed priorities (one call at a time to the backend)");
    let mut tasks = Vec::new();
    for (i, p) in [
        Priority::Batch,
        Priority::Low,
        Priority::Normal,
        Priority::Batch,
        Priority::Critical,
        Priority::High,
    ]
    .into_iter()
    .enumerate()
    {
        let call = generate(request("acme", p, 16));
        tasks.push(tokio::spawn(async move { (i, p, call.await) }));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for t in tasks {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(t.await);
        });
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some(done) = rx.recv().await {
        let (i, p, r) = done?;
        match r {
            Ok(reply) => println!(
                "   finished: request {i} ({p}), {} tokens: {:?}",
                reply.completion_tokens,
                reply.text.chars().take(30).collect::<String>()
            ),
            Err((code, msg)) => println!("   finished: request {i} ({p}): {code}: {msg}"),
        }
        order.push(p);
    }
    // The tasks run in spawn order on this one-thread runtime: request 0
    // finds the backend idle and goes straight to it (a queue never holds
    // back an idle backend); the other five find it busy and queue.
    println!(
        "   completion order: {order:?} (the first went straight to the idle backend; \
         the five that waited left in priority order)"
    );

    println!("\n2. free-tier tenants: limited by requests, then by tokens");
    for i in 0..5 {
        match generate(request("hobbyist", Priority::Normal, 16)).await {
            Ok(reply) => println!(
                "   hobbyist call {i}: OK ({} tokens)",
                reply.completion_tokens
            ),
            Err((code, msg)) => println!("   hobbyist call {i}: {code}: {msg}"),
        }
    }
    match generate(request("student", Priority::Normal, 4_000)).await {
        Ok(_) => println!("   student asking for 4,000 tokens: OK"),
        Err((code, msg)) => println!("   student asking for 4,000 tokens: {code}: {msg}"),
    }
    println!(
        "   the limiter tracks {} tenant buckets",
        limiter.limiter().live_keys()
    );

    println!("\n3. the backend fails: the breaker opens, then recovers");
    replica.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for i in 0..6 {
        let before = replica.counters().requests_received;
        let r = generate(request("acme", Priority::High, 8)).await;
        let reached = replica.counters().requests_received > before;
        let reached = if reached {
            "reached the backend"
        } else {
            "backend untouched"
        };
        match r {
            Ok(_) => println!("   call {i}: OK ({reached})"),
            Err((code, msg)) => println!("   call {i}: {code}: {msg} ({reached})"),
        }
    }
    println!(
        "   breaker is {}; the backend heals",
        breaker_handle.state()
    );
    replica.set_faults(Faults::default());
    // Wait out the cool-down (the example's only fixed wait).
    tokio::time::sleep(Duration::from_millis(350)).await;
    for i in 0..3 {
        match generate(request("acme", Priority::High, 8)).await {
            Ok(reply) => println!(
                "   call {i}: OK ({} tokens), breaker {}",
                reply.completion_tokens,
                breaker_handle.state()
            ),
            Err((code, msg)) => println!("   call {i}: {code}: {msg}"),
        }
    }
    let snap = breaker_handle.snapshot();
    println!(
        "   breaker: {} failures, {} calls refused, {} transitions, now {}",
        snap.failures_total, snap.rejected_total, snap.transitions_total, snap.state
    );

    sims.shutdown();
    let waited = &order[1..];
    let mut sorted = waited.to_vec();
    sorted.sort_by(|a, b| b.cmp(a)); // most urgent first
    if order[0] != Priority::Batch
        || waited != sorted
        || snap.rejected_total == 0
        || snap.state != BreakerState::Closed
    {
        return Err(
            "expected the first call straight through, the rest in priority order, \
             refused calls and a closed breaker"
                .into(),
        );
    }
    Ok(())
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
