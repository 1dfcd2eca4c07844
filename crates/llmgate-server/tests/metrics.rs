//! Prometheus `/metrics` carries the series the design names. The recorder
//! is global to the process, so this test binary starts exactly one gateway
//! with `install_metrics = true`.

use std::time::Duration;

use http_body_util::BodyExt;

mod common;
use common::*;

/// Series that must appear once some traffic went through, with the layer
/// that records each.
const SERIES: [&str; 14] = [
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
    // per-replica total latency (queue time included)
    "llmgate_request_duration_seconds",
    // the queue and the breakers take their handles when built, so these
    // prove the recorder is installed before the stack is built
    "llmgate_queue_depth",
    "llmgate_queue_wait_seconds",
    "llmgate_breaker_state",
];

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
    let mut config = base_config();
    config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.ratelimit.enabled = true;
    let running = llmgate_server::serve::start(config, true).await.unwrap();
    let metrics_addr = running.metrics_addr.expect("metrics listener");
    let c = client();
    let me = [("x-client-id", "metrics-test")];
    let base = format!("http://{}", running.addr);

    for _ in 0..3 {
        let s = post(
            &c,
            &format!("{base}/v1/chat/completions"),
            r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
            &me,
        )
        .await
        .0;
        assert_eq!(s, 200);
        let s = post(
            &c,
            &format!("{base}/v1/completions"),
            r#"{"model":"llama-3-8b","prompt":"hi","max_tokens":4,"stream":true}"#,
            &me,
        )
        .await
        .0;
        assert_eq!(s, 200);
    }
    // An error outcome too.
    assert_eq!(
        post(&c, &format!("{base}/v1/completions"), "{not json", &me)
            .await
            .0,
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
