//! End to end: the gateway's behaviour under saturation, limits, faults and
//! shutdown, in process, in front of simulated replicas on ephemeral
//! localhost ports.
//!
//! Saturation is made deterministic rather than timed: a replica that admits
//! one request at a time (`max_concurrent = 1`) is given a *blocker*, a raw
//! TCP request sent while the replica hangs (the simulated replica never
//! answers it). Everything sent afterwards waits in the gateway's priority
//! queue, whose depth the test reads from the admin API; closing the
//! blocker's socket cancels it upstream and frees the slot.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use llmgate_server::config::{Config, ReplicaConfig};
use llmgate_server::serve::Running;
use llmgate_sim::{Faults, Profile, SimConfig, SimFleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::*;

/// One simulated replica that the gateway lets hold one request at a time.
async fn one_slot_gateway(mut config: Config) -> (Running, SimFleet) {
    let sim = SimFleet::spawn(vec![SimConfig::default()
        .with_profile(Profile::SMALL)
        .with_model(MODEL)
        .with_speedup(50.0)
        .with_id("solo")])
    .unwrap();
    config.replicas = vec![ReplicaConfig::new("solo", sim.urls()[0].clone())
        .models([MODEL])
        .max_concurrent(1)];
    // The blocker must stay the one request in flight until the test lets
    // it go: no retry, no health check or stall detection taking the
    // replica out while it hangs.
    config.retry.enabled = false;
    config.health.interval_secs = 60;
    config.health.unhealthy_threshold = 1000;
    config.timeouts.first_chunk_secs = 120;
    config.timeouts.attempt_base_secs = 120;
    config.server.drain_timeout_secs = 2;
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    (running, sim)
}

fn in_flight(running: &Running) -> usize {
    running
        .fleet
        .report()
        .iter()
        .map(|(r, _)| r.load.in_flight)
        .sum()
}

async fn queue_depth(c: &HttpClient, running: &Running) -> u64 {
    let (status, body) = get(
        c,
        &format!("http://{}/admin/queue", running.admin_addr),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["depth"].as_u64().unwrap()
}

/// Sends a request on a raw connection while the replica hangs, so that it
/// occupies the replica's only slot until the returned socket is dropped.
async fn blocker(running: &Running, sim: &SimFleet) -> TcpStream {
    sim.replicas()[0].set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let received = sim.replicas()[0].counters().requests_received;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: llmgate\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        SMALL_COMPLETION.len(),
        SMALL_COMPLETION
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // In flight at the gateway, and arrived at the replica while it hangs
    // (the gateway may count it before its bytes reach the replica).
    wait_for("the blocker to be in flight", || async {
        in_flight(running) == 1 && sim.replicas()[0].counters().requests_received > received
    })
    .await;
    // The blocker stays hung; requests released later are answered.
    sim.replicas()[0].set_faults(Faults::default());
    s
}

// The balancer's `call` takes the endpoint's slot at once, so the queue
// releases one request per free slot and priority order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_request_overtakes_queued_batch_requests() {
    let (running, sim) = one_slot_gateway(base_config()).await;
    let c = client();
    let url = format!("http://{}/v1/completions", running.addr);
    let blocker = blocker(&running, &sim).await;

    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    let send = |name: String, priority: &'static str| {
        let (c, url, done) = (c.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let (status, _, body) =
                post_bounded(&c, &url, SMALL_COMPLETION, &[("x-priority", priority)]).await;
            assert_eq!(status, 200, "{name}: {body:?}");
            done.lock().unwrap().push(name);
        })
    };
    const BATCH: u64 = 8;
    for i in 0..BATCH {
        tasks.push(send(format!("batch-{i}"), "batch"));
        // Queued one after the other, so FIFO alone would serve them first.
        wait_for("the batch request to be queued", || async {
            queue_depth(&c, &running).await == i + 1
        })
        .await;
    }
    tasks.push(send("critical".into(), "critical"));
    wait_for("the critical request to be queued", || async {
        queue_depth(&c, &running).await == BATCH + 1
    })
    .await;

    // Free the slot: requests now go one at a time, in the queue's order.
    drop(blocker);
    for t in tasks {
        t.await.unwrap();
    }
    let order = done.lock().unwrap().clone();
    assert_eq!(order.len(), BATCH as usize + 1);
    let pos = order.iter().position(|n| n == "critical").unwrap();
    assert!(
        pos <= 1,
        "the critical request, queued last, should complete before the batch \
         requests queued earlier: completion order {order:?}"
    );
    running.shutdown().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after_and_loses_nothing_queued() {
    let mut config = base_config();
    config.queue.capacity = 2;
    let (running, sim) = one_slot_gateway(config).await;
    let c = client();
    let url = format!("http://{}/v1/completions", running.addr);
    let blocker = blocker(&running, &sim).await;

    let mut queued = Vec::new();
    for i in 0..2 {
        let (c2, url) = (c.clone(), url.clone());
        queued.push(tokio::spawn(async move {
            post_bounded(&c2, &url, SMALL_COMPLETION, &[]).await
        }));
        wait_for("the request to be queued", || async {
            queue_depth(&c, &running).await == i + 1
        })
        .await;
    }

    let (status, headers, body) = post_bounded(&c, &url, SMALL_COMPLETION, &[]).await;
    assert_eq!(status, 503, "{body:?}");
    let err = openai_error(&body);
    assert_eq!(err["code"], "queue_full", "{err}");
    let retry_after: u64 = headers
        .get("retry-after")
        .expect("503 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        headers["content-type"], "application/json",
        "error bodies are JSON"
    );

    // The queued requests are served once the slot frees.
    drop(blocker);
    for q in queued {
        let (status, _, body) = q.await.unwrap();
        assert_eq!(status, 200, "{body:?}");
    }
    running.shutdown().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_deadline_answers_504() {
    let mut config = base_config();
    config.queue.deadline_secs = 1;
    let (running, sim) = one_slot_gateway(config).await;
    let c = client();
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let blocker = blocker(&running, &sim).await;

    let (status, headers, body) = post_bounded(
        &c,
        &url,
        r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
        &[],
    )
    .await;
    assert_eq!(status, 504, "{body:?}");
    let err = openai_error(&body);
    assert_eq!(err["code"], "queue_timeout", "{err}");
    assert_eq!(headers["content-type"], "application/json");

    // A request with its own, shorter timeout gets the same answer.
    let url = format!("http://{}/v1/completions", running.addr);
    let (status, _, body) =
        post_bounded(&c, &url, SMALL_COMPLETION, &[("x-request-timeout", "0.2")]).await;
    assert_eq!(status, 504, "{body:?}");
    openai_error(&body);

    drop(blocker);
    running.shutdown().await;
    sim.shutdown();
}

/// Every request to a fleet whose replicas all fail gets an OpenAI-shaped
/// 502, 503 or 504, never a hang.
async fn assert_clear_errors(running: &Running, rounds: usize) {
    let c = client();
    let base = format!("http://{}", running.addr);
    for round in 0..rounds {
        for (path, body) in [
            ("/v1/completions", SMALL_COMPLETION),
            (
                "/v1/chat/completions",
                r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}"#,
            ),
        ] {
            let (status, _, body) = post_bounded(&c, &format!("{base}{path}"), body, &[]).await;
            assert!(
                matches!(status, 502..=504),
                "round {round} {path}: status {status}: {body:?}"
            );
            openai_error(&body);
        }
    }
}

fn failing_fleet_config(retry: bool) -> Config {
    let mut config = base_config();
    config.timeouts.first_chunk_secs = 1;
    config.timeouts.attempt_base_secs = 1;
    config.timeouts.attempt_per_token_ms = 0;
    config.health.timeout_secs = 1;
    config.health.unhealthy_threshold = 1;
    config.queue.deadline_secs = 2;
    config.retry.enabled = retry;
    config.retry.backoff_cap_ms = 100;
    config
}

async fn hung_fleet(retry: bool) {
    let running = llmgate_server::serve::start(failing_fleet_config(retry), false)
        .await
        .unwrap();
    for r in running.sim.as_ref().unwrap().replicas() {
        r.set_faults(Faults {
            hang: true,
            ..Faults::default()
        });
    }
    // Before and after the health checks notice.
    assert_clear_errors(&running, 3).await;
    running.shutdown().await;
}

async fn killed_fleet(retry: bool) {
    let running = llmgate_server::serve::start(failing_fleet_config(retry), false)
        .await
        .unwrap();
    for r in running.sim.as_ref().unwrap().replicas() {
        r.kill();
    }
    assert_clear_errors(&running, 3).await;
    let c = client();
    wait_for("/ready to report no healthy replica", || async {
        get(&c, &format!("http://{}/ready", running.addr), &[])
            .await
            .0
            == 503
    })
    .await;
    assert_clear_errors(&running, 1).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_hung_get_a_clear_error_without_retries() {
    hung_fleet(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_killed_get_a_clear_error_without_retries() {
    killed_fleet(false).await;
}

// With retries on (the default): once no replica is healthy the balancer
// answers at once instead of letting retries wait for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_hung_get_a_clear_error() {
    hung_fleet(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn all_replicas_killed_get_a_clear_error() {
    killed_fleet(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_client_gets_429_with_headers_and_others_are_unaffected() {
    let mut config = base_config();
    config.ratelimit.enabled = true;
    config.ratelimit.requests_per_minute = 1;
    config.ratelimit.request_burst = 2;
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    let c = client();
    let url = format!("http://{}/v1/completions", running.addr);
    let alice = [("x-client-id", "alice")];

    for remaining in ["1", "0"] {
        let (status, headers, body) = post_bounded(&c, &url, SMALL_COMPLETION, &alice).await;
        assert_eq!(status, 200, "{body:?}");
        assert_eq!(
            headers["x-ratelimit-remaining-requests"], remaining,
            "{headers:?}"
        );
        assert!(headers.contains_key("x-ratelimit-limit-requests"));
    }
    let (status, headers, body) = post_bounded(&c, &url, SMALL_COMPLETION, &alice).await;
    assert_eq!(status, 429, "{body:?}");
    let err = openai_error(&body);
    assert_eq!(err["code"], "rate_limit_exceeded", "{err}");
    let retry_after: u64 = headers
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One request per minute: the next one is tens of seconds away.
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    for h in ["x-ratelimit-limit-requests", "x-ratelimit-reset-requests"] {
        assert!(headers.contains_key(h), "{h} missing: {headers:?}");
    }

    // Another client has its own bucket.
    let (status, headers, body) =
        post_bounded(&c, &url, SMALL_COMPLETION, &[("x-client-id", "bob")]).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "1");
    // And alice is still limited.
    let (status, _, _) = post_bounded(&c, &url, SMALL_COMPLETION, &alice).await;
    assert_eq!(status, 429);
    running.shutdown().await;
}

/// Reads an HTTP/1.1 response head from a raw socket; returns the head and
/// whatever body bytes came with it.
async fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            return (head, buf[end + 4..].to_vec());
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Decodes a chunked body from `rest` and the socket until its last chunk.
async fn read_chunked(s: &mut TcpStream, mut rest: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Parse every complete chunk in `rest`.
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_line = std::str::from_utf8(&rest[..line_end]).unwrap();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|e| panic!("bad chunk size {size_line:?}: {e}"));
            if size == 0 {
                return out;
            }
            let start = line_end + 2;
            if rest.len() < start + size + 2 {
                break;
            }
            out.extend_from_slice(&rest[start..start + size]);
            rest.drain(..start + size + 2);
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed mid-stream after {} bytes: {}",
            out.len(),
            String::from_utf8_lossy(&out)
        );
        rest.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_an_in_flight_stream() {
    let mut config = base_config();
    // Slow enough that the stream is still going when the shutdown starts.
    config.sim.speedup = 1.0;
    config.sim.replicas = vec!["small".into()];
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    let addr: SocketAddr = running.addr;

    const TOKENS: usize = 40;
    let body = format!(
        r#"{{"model":"llama-3-8b","prompt":"Once upon a time","max_tokens":{TOKENS},"stream":true}}"#
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/completions HTTP/1.1\r\nhost: llmgate\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, rest) = tokio::time::timeout(PATIENCE, read_head(&mut s))
        .await
        .expect("response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );

    // Shut down while the stream is in flight.
    let shutdown = tokio::spawn(running.shutdown());
    wait_for("new connections to be refused", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;

    let sse = tokio::time::timeout(PATIENCE, read_chunked(&mut s, rest))
        .await
        .expect("the stream finishes");
    let text = String::from_utf8(sse).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(
        events.last().map(|e| e.trim()),
        Some("data: [DONE]"),
        "{text}"
    );
    assert_eq!(events.len(), TOKENS + 1, "every token and [DONE]: {text}");

    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown completes once the stream is done")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "connections are refused after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_configured_token() {
    let mut config = base_config();
    config.server.admin_token = Some("s3cret".into());
    let running = llmgate_server::serve::start(config, false).await.unwrap();
    let c = client();
    let url = format!("http://{}/admin/replicas", running.admin_addr);

    let (status, body) = get(&c, &url, &[]).await;
    assert_eq!(status, 401, "{body:?}");
    let err = openai_error(&body);
    assert!(
        !err["message"].as_str().unwrap().contains("s3cret"),
        "the token never appears in an answer: {err}"
    );
    let (status, _) = get(&c, &url, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);
    let (status, body) = get(&c, &url, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(status, 200, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["replicas"].as_array().unwrap().len(), 3);

    // Writes need it too.
    let put = |auth: Option<&str>| {
        let mut b = http::Request::put(format!("http://{}/admin/strategy", running.admin_addr));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Full::new(Bytes::from(r#"{"strategy":"round_robin"}"#)))
            .unwrap()
    };
    assert_eq!(c.request(put(None)).await.unwrap().status(), 401);
    assert_ne!(running.fleet.strategy().as_str(), "round_robin");
    assert_eq!(
        c.request(put(Some("Bearer s3cret")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(running.fleet.strategy().as_str(), "round_robin");
    running.shutdown().await;
}
