//! The queue's and the breakers' own Prometheus series. Its own test binary
//! (the recorder is global to a process). The queue and the breakers take
//! their metric handles when they are built, so `serve::start` must install
//! the recorder before building them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_server::config::Config;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Series recorded through metric handles that the queue and the breaker
/// take when they are built. `serve::start` builds them before it installs
/// the recorder, so today they never reach `/metrics`.
const EARLY_HANDLE_SERIES: [&str; 3] = [
    "llmgate_queue_depth",
    "llmgate_queue_wait_seconds",
    "llmgate_breaker_state",
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
async fn metrics_endpoint_has_queue_and_breaker_series() {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.sim.speedup = 50.0;
    let running = llmgate_server::serve::start(config, true).await.unwrap();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..3 {
        let s = post(
            &c,
            &format!("http://{}/v1/completions", running.addr),
            r#"{"model":"llama-3-8b","prompt":"hi","max_tokens":2}"#,
        )
        .await;
        assert_eq!(s, 200);
    }
    let url = format!("http://{}/metrics", running.metrics_addr.unwrap());
    let mut text = String::new();
    for _ in 0..500 {
        text = scrape(&c, &url).await;
        if EARLY_HANDLE_SERIES.iter().all(|s| has_series(&text, s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing: Vec<_> = EARLY_HANDLE_SERIES
        .iter()
        .filter(|s| !has_series(&text, s))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");
    running.shutdown().await;
}
