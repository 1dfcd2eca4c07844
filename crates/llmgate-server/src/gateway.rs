//! The request path: axum routes in front of the layer stack
//! `MetaLayer → RateLimitLayer → PriorityQueueLayer → RetryLayer →
//! GpuAwareBalance`, in the order of DESIGN.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{HeaderMap, HeaderName, Request, StatusCode};
use http_body_util::BodyExt;
use llmgate_balance::Fleet;
use llmgate_core::headers::{hop_by_hop_index, HOP_BY_HOP, X_PRIORITY};
use llmgate_core::{
    BufferedBody, ClientKey, DeadlineLayer, MetaLayer, PeerAddr, Priority, ServedBy,
};

use crate::metered::{MeteredBody, RequestMetrics};
use llmgate_queue::{PriorityQueueLayer, QueueHandle};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, ServiceBuilder, ServiceExt};

use crate::config::Config;
use crate::errors::map_error;

/// The gateway stack as one cloneable service.
pub type GatewayService = BoxCloneSyncService<Request<Body>, Response, BoxError>;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The layer stack down to the replicas.
    pub gateway: GatewayService,
    /// The fleet (for `/ready`, `/v1/models`, admin).
    pub fleet: Fleet,
    /// The queue's handle, if the queue is on.
    pub queue: Option<QueueHandle>,
    /// API-key tiers, for the priority label of request metrics.
    pub tiers: crate::tiers::TierTable,
    /// Per-request series.
    pub metrics: Arc<RequestMetrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Builds the layer stack over `fleet` as `config` says.
pub fn build_stack(config: &Config, fleet: &Fleet) -> (GatewayService, Option<QueueHandle>) {
    let balance = fleet.service();

    let retry = crate::retry::retry_layer(config);

    let queue_layer: Option<PriorityQueueLayer<Request<BufferedBody>>> =
        config.queue.enabled.then(|| {
            let mut b = PriorityQueueLayer::builder()
                .capacity(config.queue.capacity)
                .queue_timeout(Duration::from_secs(config.queue.deadline_secs));
            if let Some(a) = config.queue.aging_secs {
                b = b.aging(Duration::from_secs(a));
            }
            b.build()
        });
    let queue_handle = queue_layer.as_ref().map(|q| q.handle());

    let ratelimit = config
        .ratelimit
        .enabled
        .then(|| crate::tiers::rate_limit_layer(config));

    // One concrete stack, boxed once at the top: optional layers are
    // `Either`s (an `Identity` when off), so a request clones and boxes the
    // stack once rather than once per layer.
    let ratelimit = ratelimit.map(|rl| {
        ServiceBuilder::new()
            .map_response(|r: http::Response<_>| r.map(Body::new))
            .layer(rl)
            .into_inner()
    });
    let inner = ServiceBuilder::new()
        // The request deadline covers queueing, retries and waiting for a
        // replica, up to the answer's head.
        .layer(DeadlineLayer)
        .option_layer(ratelimit)
        .option_layer(queue_layer)
        .option_layer(retry)
        .map_response(|r: http::Response<llmgate_balance::BoxBody>| r.map(Body::new))
        .service(balance);

    let tiers = crate::tiers::TierTable::from_config(config);
    let meta = MetaLayer::new()
        .body_limit(config.server.max_body_bytes)
        .default_timeout(Duration::from_secs(config.server.request_timeout_secs))
        .default_priority(move |client: &ClientKey, _: &HeaderMap| tiers.priority_of(client));
    let svc = meta.layer(inner);
    (
        BoxCloneSyncService::<Request<Body>, Response, BoxError>::new(svc),
        queue_handle,
    )
}

/// The main router: `/health`, `/ready`, `/v1/models`, and every other
/// `/v1/` path proxied through the stack.
pub fn router(state: AppState) -> Router {
    shared_router(Arc::new(state))
}

/// [`router`] over state shared with a [`ConnectionService`].
pub(crate) fn shared_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(crate::defaults::HEALTH_PATH, get(|| async { "ok" }))
        .route(crate::defaults::READY_PATH, get(ready))
        .route("/v1/models", get(models))
        .fallback(proxy)
        .with_state(state)
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let n = app.fleet.healthy_count();
    if n > 0 {
        (StatusCode::OK, format!("ready: {n} healthy replica(s)")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no healthy replica",
        )
            .into_response()
    }
}

async fn models(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<_> = app
        .fleet
        .models()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "llmgate"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// Where `Connection` sits in [`HOP_BY_HOP`].
const CONNECTION_INDEX: usize = 0;

/// Removes the hop-by-hop headers, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (most messages carry none of these,
    // or only `connection: keep-alive`), then removals of just those.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[CONNECTION_INDEX] {
        // Headers that `Connection` names are hop-by-hop too; `close` and
        // `keep-alive` are options, not header names (and `keep-alive` goes
        // anyway).
        // Over bytes: a value that passed `to_str` holds only visible ASCII
        // and tabs, so `trim_ascii` trims what `str::trim` would, without
        // decoding chars.
        let mut listed: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(http::header::CONNECTION) {
            if v.to_str().is_err() {
                continue;
            }
            for t in v.as_bytes().split(|b| *b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(t) {
                    listed.push(name);
                }
            }
        }
        for n in listed {
            headers.remove(n);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

async fn proxy(State(app): State<Arc<AppState>>, mut req: Request<Body>) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        let msg = NotFound(req.uri().path().to_string()).to_string();
        let body = llmgate_core::error_body(&msg, "not_found_error", "not_found");
        return (
            StatusCode::NOT_FOUND,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned() {
        req.extensions_mut().insert(PeerAddr(addr));
    }
    let priority = prepare(&app, &mut req);
    let start = tokio::time::Instant::now();
    let result = app.gateway.clone().oneshot(req).await;
    finish(&app, result, priority, start).map(Body::new)
}

/// Readies a proxied request for the stack; returns its priority label.
fn prepare(app: &AppState, req: &mut Request<Body>) -> Priority {
    strip_hop_by_hop(req.headers_mut());
    label_priority(app, req)
}

/// The client's answer from the stack's, with request metrics recorded.
fn finish(
    app: &AppState,
    result: Result<Response, BoxError>,
    priority: Priority,
    start: tokio::time::Instant,
) -> Response<MeteredBody> {
    match result {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            // The upstream client's answers come without hop-by-hop fields
            // (`parse_response_head` leaves them out), so for those this is
            // one pass over the names that finds nothing; the stack is any
            // service, though, and what another composes may carry some.
            strip_hop_by_hop(&mut parts.headers);
            let outcome = if parts.status.is_success() {
                "success"
            } else {
                "upstream_error"
            };
            app.metrics.request(priority, outcome);
            let body = match parts.extensions.get::<ServedBy>() {
                Some(ServedBy(replica)) => {
                    MeteredBody::new(body, start, app.metrics.replica(replica), priority)
                }
                None => MeteredBody::plain(body),
            };
            Response::from_parts(parts, body)
        }
        Err(e) => {
            let res = map_error(&e);
            let outcome = match res.status().as_u16() {
                429 => "rate_limited",
                503 => "unavailable",
                504 => "timeout",
                400..=499 => "bad_request",
                _ => "error",
            };
            app.metrics.request(priority, outcome);
            res.map(MeteredBody::plain)
        }
    }
}

/// The main port's service for one client connection. API paths under
/// `/v1/` (but `/v1/models`) go straight into the layer stack, through a
/// copy of it made once per connection rather than once per request;
/// everything else goes through [`router`], which answers those.
pub struct ConnectionService {
    app: Arc<AppState>,
    gateway: GatewayService,
    router: Router,
    peer: SocketAddr,
}

impl ConnectionService {
    /// The service for a connection from `peer`, over `router` built from
    /// the same `app`.
    pub fn new(app: Arc<AppState>, router: Router, peer: SocketAddr) -> Self {
        ConnectionService {
            gateway: app.gateway.clone(),
            app,
            router,
            peer,
        }
    }
}

impl<B> tower::Service<Request<B>> for ConnectionService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeteredBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Response<MeteredBody>, std::convert::Infallible>,
                > + Send,
        >,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Always ready: `/health` and `/ready` must answer even while the
        // stack is saturated; a proxied request waits for the stack in its
        // own future, where a client that leaves or a shutdown cancels it.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if !path.starts_with("/v1/") || path == "/v1/models" {
            let fut = tower::Service::call(&mut self.router, req.map(Body::new));
            return Box::pin(async move { Ok(fut.await?.map(MeteredBody::plain)) });
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(PeerAddr(self.peer));
        let priority = prepare(&self.app, &mut req);
        let start = tokio::time::Instant::now();
        let app = self.app.clone();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self.gateway.poll_ready(&mut cx) {
            // The common case: the connection's copy of the stack serves
            // the request at once, with no copy per request.
            std::task::Poll::Ready(Ok(())) => {
                let fut = self.gateway.call(req);
                Box::pin(async move { Ok(finish(&app, fut.await, priority, start)) })
            }
            std::task::Poll::Ready(Err(e)) => {
                Box::pin(async move { Ok(finish(&app, Err(e), priority, start)) })
            }
            // Not ready: a copy of the stack waits with this request, and
            // the connection's own stays free for the next.
            std::task::Poll::Pending => {
                let stack = self.app.gateway.clone();
                Box::pin(async move {
                    let result = stack.oneshot(req).await;
                    Ok(finish(&app, result, priority, start))
                })
            }
        }
    }
}

/// The priority a request will get, for metric labels only (the stack's
/// MetaLayer decides for routing; a bad header is rejected there).
fn label_priority(app: &AppState, req: &Request<Body>) -> Priority {
    match req.headers().get(&X_PRIORITY) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default(),
        None if app.tiers.is_empty() => Priority::default(),
        None => app
            .tiers
            .priority_of(&ClientKey::from_parts(req.headers(), req.extensions()))
            .unwrap_or_default(),
    }
}

/// A path outside the proxied API.
#[derive(Debug, thiserror::Error)]
#[error("no route for {0}: llmgate proxies /v1/ paths")]
struct NotFound(String);

/// Reads a whole body (admin API helper).
pub async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, String> {
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::Service;

    /// A connection service whose stack answers with the client key it
    /// saw, over an empty fleet.
    fn connection_service(peer: SocketAddr) -> ConnectionService {
        let gateway = GatewayService::new(tower::service_fn(|req: Request<Body>| async move {
            let key = ClientKey::from_parts(req.headers(), req.extensions());
            let res: Response = (StatusCode::OK, key.as_str().to_string()).into_response();
            Ok::<_, BoxError>(res)
        }));
        connection_service_over(gateway, peer)
    }

    fn connection_service_over(gateway: GatewayService, peer: SocketAddr) -> ConnectionService {
        let fleet = Fleet::new(llmgate_balance::FleetConfig::default(), Vec::new()).unwrap();
        let app = Arc::new(AppState {
            gateway,
            fleet,
            queue: None,
            tiers: crate::tiers::TierTable::from_config(&Config::default()),
            metrics: Arc::new(RequestMetrics::new()),
        });
        ConnectionService::new(app.clone(), shared_router(app), peer)
    }

    async fn call(svc: &mut ConnectionService, method: &str, path: &str) -> (StatusCode, String) {
        std::future::poll_fn(|cx| {
            Service::<Request<http_body_util::Full<bytes::Bytes>>>::poll_ready(svc, cx)
        })
        .await
        .unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let res = svc.call(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A stack that is never ready, like a balancer whose replicas are
    /// all at their cap with the queue off.
    #[derive(Clone)]
    struct NeverReady;

    impl Service<Request<Body>> for NeverReady {
        type Response = Response;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Pending
        }
        fn call(&mut self, _: Request<Body>) -> Self::Future {
            unreachable!("called while not ready")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn health_answers_while_the_stack_is_not_ready_and_api_requests_wait() {
        let peer: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let mut svc = connection_service_over(GatewayService::new(NeverReady), peer);
        // On the paused clock a service that waits fails this at once.
        let health = tokio::time::timeout(Duration::from_secs(5), call(&mut svc, "GET", "/health"));
        assert_eq!(
            health.await.expect("/health waited for the stack"),
            (StatusCode::OK, "ok".into())
        );
        let req = Request::builder()
            .method("POST")
            .uri("/v1/completions")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let mut waiting = svc.call(req);
        for _ in 0..3 {
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx))).await;
            assert!(
                polled.is_pending(),
                "answered while the stack was not ready"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            call(&mut svc, "GET", "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn connection_service_sends_api_paths_to_the_stack_with_the_peer_and_the_rest_to_the_router(
    ) {
        let peer: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let mut svc = connection_service(peer);
        let (status, body) = call(&mut svc, "POST", "/v1/completions").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            ClientKey::from_peer(peer).as_str(),
            "keyed by the peer"
        );
        assert_eq!(call(&mut svc, "GET", "/v1/anything/else").await.0, 200);
        assert_eq!(
            call(&mut svc, "GET", "/health").await,
            (StatusCode::OK, "ok".into())
        );
        let (status, body) = call(&mut svc, "GET", "/v1/models").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"object\":\"list\""), "{body}");
        assert_eq!(
            call(&mut svc, "POST", "/v1/models").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (status, body) = call(&mut svc, "GET", "/metrics").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("llmgate proxies /v1/ paths"), "{body}");
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_stripped() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Trace"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-trace", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("content-type", "application/json"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn connection_tokens_are_trimmed_and_matched_without_case() {
        let mut h = map(&[
            ("connection", "\tKeep-Alive ,  X-A\t, ,CLOSE,x-b"),
            ("connection", "Upgrade"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
            ("close", "not named: an option"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["close", "x-c"]);
    }

    #[test]
    fn a_connection_value_that_is_not_visible_ascii_names_nothing() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::CONNECTION,
            http::HeaderValue::from_bytes(b"x-a, caf\xc3\xa9").unwrap(),
        );
        h.append("x-a", http::HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-a"]);
    }

    #[test]
    fn connection_index_names_connection() {
        assert_eq!(HOP_BY_HOP[CONNECTION_INDEX], http::header::CONNECTION);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_stripped() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.append(name.clone(), http::HeaderValue::from_static("x-named"));
            h.append("x-named", http::HeaderValue::from_static("1"));
            h.append("content-type", http::HeaderValue::from_static("text/plain"));
            strip_hop_by_hop(&mut h);
            let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            left.sort();
            // Only `Connection` makes the header it names hop-by-hop.
            if name == http::header::CONNECTION {
                assert_eq!(left, ["content-type"], "{name}");
            } else {
                assert_eq!(left, ["content-type", "x-named"], "{name}");
            }
        }
    }

    #[test]
    fn end_to_end_headers_are_left_alone() {
        let mut h = map(&[("content-type", "text/event-stream"), ("x-request-id", "7")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
