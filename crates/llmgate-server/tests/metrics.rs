//! Prometheus `/metrics` carries the series the design names. The recorder
//! is global to the process, so this test binary starts exactly one gateway
//! with `install_metrics = true`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_server::config::Config;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Series that must appear once some traffic went through, with the layer
/// that records each.
const SERIES: [&str; 10] = [
    // gateway
    "llmgate_requests_total",
    // fleet gauges, refreshed every second
    "llmgate_replica_in_flight",
    "llmgate_replica_ready",
    "llmgate_replica_breaker_state",
    "llmgate_queue_total_depth",
    // health checks
    "llmgate_replica_healthy",
    // balancer
    "llmgate_balance_picks_total",
    // retry layer
    "llmgate_retry_attempts_total",
    // per-replica time to first token
    "llmgate_time_to_first_token_seconds",
    // rate limiter
    "llmgate_ratelimit_allowed_total",
];

async fn post(c: &HttpClient, url: &str, body: &'static str) -> u16 {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .header("x-client-id", "metrics-test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await.unwrap();
    status
}

async fn scrape(c: &HttpClient, url: &str) -> String {
    let res = c.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Whether `text` has a sample line for the series `name` (a histogram's
/// `_bucket`/`_sum`/`_count` lines count).
fn has_series(text: &str, name: &str) -> bool {
    text.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with(['{', ' ']) || rest.starts_with("_bucket") || rest.starts_with("_sum")
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_has_the_named_series() {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.sim.speedup = 50.0;
    config.health.interval_secs = 1;
    config.ratelimit.enabled = true;
    let running = llmgate_server::serve::start(config, true).await.unwrap();
    let metrics_addr = running.metrics_addr.expect("metrics listener");
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{}", running.addr);

    for _ in 0..3 {
        let s = post(
            &c,
            &format!("{base}/v1/chat/completions"),
            r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
        )
        .await;
        assert_eq!(s, 200);
        let s = post(
            &c,
            &format!("{base}/v1/completions"),
            r#"{"model":"llama-3-8b","prompt":"hi","max_tokens":4,"stream":true}"#,
        )
        .await;
        assert_eq!(s, 200);
    }
    // An error outcome too.
    assert_eq!(
        post(&c, &format!("{base}/v1/completions"), "{not json").await,
        400
    );

    let url = format!("http://{metrics_addr}/metrics");
    let mut text = String::new();
    // The fleet gauges refresh every second: wait up to 10 s for all.
    for _ in 0..500 {
        text = scrape(&c, &url).await;
        if SERIES.iter().all(|s| has_series(&text, s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing: Vec<_> = SERIES.iter().filter(|s| !has_series(&text, s)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");

    // Bounded labels: outcome and priority, never a client id.
    assert!(
        text.lines()
            .any(|l| l.starts_with("llmgate_requests_total{") && l.contains("outcome=\"success\"")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("llmgate_requests_total{")
                && l.contains("outcome=\"bad_request\"")),
        "{text}"
    );
    assert!(!text.contains("metrics-test"), "a client id became a label");
    // Every replica of the embedded fleet has its gauges.
    for r in running.sim.as_ref().unwrap().replicas() {
        assert!(
            text.lines()
                .any(|l| l.starts_with("llmgate_replica_in_flight{") && l.contains(r.id())),
            "no in-flight gauge for {}:\n{text}",
            r.id()
        );
    }
    // The queue's and the breakers' own series: see metrics_early_handles.rs.
    // Latency histograms carry seconds buckets.
    assert!(
        text.contains("llmgate_time_to_first_token_seconds_bucket"),
        "{text}"
    );
    running.shutdown().await;
}
