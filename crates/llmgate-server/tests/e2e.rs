//! End to end: the gateway in process in front of a simulated fleet:
//! completions and SSE relay, `/v1/models`, error shapes, the admin API,
//! replicas killed, drained, added or read from a watched file, and client
//! disconnects.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_stream_models_errors_and_admin() {
    let running = llmgate_server::serve::start(base_config(), false)
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let c = client();

    // Non-streamed chat.
    let (status, headers, body) = post(
        &c,
        &format!("{base}/v1/chat/completions"),
        r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"Hello there"}],"max_tokens":8}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert!(
        headers.get("x-sim-replica").is_some(),
        "upstream headers preserved"
    );

    // Streamed completion: SSE relayed, ends with [DONE].
    let (status, _, body) = post(
        &c,
        &format!("{base}/v1/completions"),
        r#"{"model":"llama-3-8b","prompt":"Once upon a time","max_tokens":5,"stream":true}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.last().unwrap().trim(), "data: [DONE]");
    assert_eq!(events.len(), 6, "five token chunks and [DONE]: {text}");
    for e in &events[..5] {
        let json = e.trim().strip_prefix("data: ").unwrap();
        let _: serde_json::Value = serde_json::from_str(json).unwrap();
    }

    // /v1/models is the fleet's union.
    let res = c
        .get(format!("{base}/v1/models").parse().unwrap())
        .await
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["data"][0]["id"], "llama-3-8b");

    // Errors in OpenAI shape.
    let (status, _, body) =
        post(&c, &format!("{base}/v1/chat/completions"), "{bad json", &[]).await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    let (status, _, body) = post(
        &c,
        &format!("{base}/v1/chat/completions"),
        r#"{"model":"gpt-unknown","messages":[]}"#,
        &[],
    )
    .await;
    assert_eq!(status, 404, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    // Admin: list, switch strategy, drain one replica.
    let admin = format!("http://{}", running.admin_addr);
    let res = c
        .get(format!("{admin}/admin/replicas").parse().unwrap())
        .await
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let rows = v["replicas"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // Nothing in flight: no prompt waits for its first token anywhere; the
    // streamed completion above taught its replica a prefill pace.
    assert!(rows.iter().all(|r| r["pending_prefill_tokens"] == 0), "{v}");
    assert!(
        rows.iter()
            .any(|r| r["prefill_pace_s_per_token"].as_f64().unwrap() > 0.0),
        "{v}"
    );
    let req = http::Request::put(format!("{admin}/admin/strategy"))
        .body(Full::new(Bytes::from(r#"{"strategy":"round_robin"}"#)))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 200);
    assert_eq!(running.fleet.strategy().as_str(), "round_robin");
    let drained = v["replicas"][0]["id"].as_str().unwrap().to_string();
    let req = http::Request::post(format!(
        "{admin}/admin/replicas/{drained}/drain?within_secs=5"
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 202);
    // After the drain nothing new goes to the drained replica.
    for _ in 0..12 {
        let (status, headers, _) = post(
            &c,
            &format!("{base}/v1/completions"),
            r#"{"model":"llama-3-8b","prompt":"x","max_tokens":2}"#,
            &[],
        )
        .await;
        assert_eq!(status, 200);
        assert_ne!(headers["x-sim-replica"].to_str().unwrap(), drained);
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_loses_no_request() {
    let mut config = base_config();
    config.health.unhealthy_threshold = 1;
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    let base = format!("http://{}", running.addr);
    let c = client();
    let sim = running.sim.as_ref().unwrap();
    sim.replicas()[1].kill();
    let mut ok = 0;
    for _ in 0..30 {
        let (status, _, body) = post(
            &c,
            &format!("{base}/v1/completions"),
            r#"{"model":"llama-3-8b","prompt":"x","max_tokens":2}"#,
            &[],
        )
        .await;
        // Every request gets an answer: success, or a clear error.
        if status == 200 {
            ok += 1;
        } else {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"]["message"].is_string(), "{body:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ok >= 25,
        "{ok} of 30 succeeded with one of three replicas dead"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_file_is_watched_live() {
    use llmgate_sim::{SimConfig, SimFleet};
    let sim = SimFleet::spawn(vec![
        SimConfig::default().with_speedup(50.0).with_id("file-a"),
        SimConfig::default().with_speedup(50.0).with_id("file-b"),
    ])
    .unwrap();
    let urls = sim.urls();
    let dir = std::env::temp_dir().join(format!("llmgate-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("replicas.toml");
    let entry = |id: &str, url: &str| {
        format!("[[replicas]]\nid = \"{id}\"\nurl = \"{url}\"\nmodels = [\"llama-3-8b\"]\n")
    };
    std::fs::write(&path, entry("file-a", &urls[0])).unwrap();

    let mut config = base_config();
    config.server.replicas_file = Some(path.clone());
    config.server.replicas_watch_secs = 1;
    config.server.drain_timeout_secs = 5;
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    assert!(
        running.sim.is_none(),
        "a replicas file means no embedded fleet"
    );
    let base = format!("http://{}", running.addr);
    let c = client();
    let served_by = |c: HttpClient, base: String| async move {
        let (status, headers, _) = post(
            &c,
            &format!("{base}/v1/completions"),
            r#"{"model":"llama-3-8b","prompt":"x","max_tokens":2}"#,
            &[],
        )
        .await;
        assert_eq!(status, 200);
        headers["x-sim-replica"].to_str().unwrap().to_string()
    };
    for _ in 0..4 {
        assert_eq!(served_by(c.clone(), base.clone()).await, "file-a");
    }

    // Swap a for b in the file: b joins, a is drained and leaves.
    std::fs::write(&path, entry("file-b", &urls[1])).unwrap();
    let mut switched = false;
    for _ in 0..250 {
        if served_by(c.clone(), base.clone()).await == "file-b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        switched,
        "file-b never served a request after the file changed"
    );
    for _ in 0..4 {
        assert_eq!(served_by(c.clone(), base.clone()).await, "file-b");
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream_request() {
    let mut config = base_config();
    config.sim.speedup = 1.0;
    config.sim.replicas = vec!["h100-8b".into()];
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    let replica = &running.sim.as_ref().unwrap().replicas()[0];
    let c = client();
    let req = http::Request::post(format!("http://{}/v1/completions", running.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"model":"llama-3-8b","prompt":"tell me a long story","max_tokens":4000,"stream":true}"#,
        )))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    // The first chunk arrives: the replica is generating for us.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    assert_eq!(replica.counters().running, 1);
    // The client goes away mid-stream.
    drop(body);
    let mut cancelled = false;
    for _ in 0..500 {
        if replica.counters().running == 0 {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cancelled,
        "the replica kept generating for a client that left"
    );
    assert_eq!(
        replica.counters().requests_completed,
        0,
        "a 4,000-token answer at real time cannot have finished"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_adds_a_replica_that_then_takes_traffic() {
    use llmgate_sim::{SimConfig, SimFleet};
    let extra = SimFleet::spawn(vec![SimConfig::default()
        .with_speedup(50.0)
        .with_id("added")])
    .unwrap();
    let mut config = base_config();
    config.sim.replicas = vec!["h100-8b".into()];
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    let c = client();
    let admin = format!("http://{}", running.admin_addr);
    let spec = serde_json::json!({"id": "added", "url": extra.urls()[0], "models": ["llama-3-8b"]});
    let req = http::Request::post(format!("{admin}/admin/replicas"))
        .body(Full::new(Bytes::from(spec.to_string())))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 201);
    // A bad spec is refused with a reason.
    let req = http::Request::post(format!("{admin}/admin/replicas"))
        .body(Full::new(Bytes::from(r#"{"id":"x","url":"ftp://nope"}"#)))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.status(), 400);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("http://"),
        "{body:?}"
    );

    running.fleet.set_strategy("round_robin".parse().unwrap());
    let mut seen_added = false;
    for _ in 0..20 {
        let (status, headers, _) = post(
            &c,
            &format!("http://{}/v1/completions", running.addr),
            r#"{"model":"llama-3-8b","prompt":"x","max_tokens":2}"#,
            &[],
        )
        .await;
        assert_eq!(status, 200);
        seen_added |= headers["x-sim-replica"] == "added";
    }
    assert!(seen_added, "the added replica never served");
    running.shutdown().await;
}
