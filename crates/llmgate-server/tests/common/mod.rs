//! Helpers shared by the gateway's end-to-end test binaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_server::config::Config;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub const MODEL: &str = "llama-3-8b";
pub const SMALL_COMPLETION: &str = r#"{"model":"llama-3-8b","prompt":"hi","max_tokens":2}"#;
/// Upper bound on anything the tests wait for; never reached when all is well.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn post(
    c: &HttpClient,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    let mut b = http::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c
        .request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// `post`, failing the test instead of hanging.
pub async fn post_bounded(
    c: &HttpClient,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Bytes) {
    tokio::time::timeout(PATIENCE, post(c, url, body, headers))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {PATIENCE:?}"))
}

pub async fn get(c: &HttpClient, url: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
    let mut b = http::Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

/// Asserts an OpenAI-shaped error body and returns its `error` object.
pub fn openai_error(body: &Bytes) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    let err = &v["error"];
    for field in ["message", "type", "code"] {
        assert!(
            err[field].as_str().is_some_and(|s| !s.is_empty()),
            "error.{field} missing in {v}"
        );
    }
    err.clone()
}

/// Polls `cond` every 20 ms for up to 10 s.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn base_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.sim.speedup = 50.0;
    config.health.interval_secs = 1;
    config
}
