//! Replicas over real HTTP on 127.0.0.1 (high speedup, no timing asserts).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_sim::load::{run, LoadOptions};
use llmgate_sim::workload::{generate, WorkloadOptions};
use llmgate_sim::{Faults, MetricsFlavor, Profile, SimConfig, SimFleet, SimReplica};
use llmgate_telemetry::GpuReport;
use serde_json::{json, Value};

type C = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Res {
    status: u16,
    headers: http::HeaderMap,
    body: String,
    broken: bool,
}

async fn send(c: &C, method: &str, url: String, body: Option<Value>) -> Result<Res, String> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let res = c.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let mut b = res.into_body();
    let mut buf = Vec::new();
    let mut broken = false;
    while let Some(f) = b.frame().await {
        match f {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    Ok(Res {
        status,
        headers,
        body: String::from_utf8_lossy(&buf).into_owned(),
        broken,
    })
}

fn fast() -> SimConfig {
    SimConfig::default().with_speedup(1000.0)
}

fn chat(prompt: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

#[tokio::test]
async fn sse_stream_parses_and_ends_with_done() {
    let sim = SimReplica::spawn(fast().with_id("r-a")).unwrap();
    let c = client();
    let r = send(
        &c,
        "POST",
        format!("{}/v1/chat/completions", sim.url()),
        Some(chat("hello there, simulated model", 5, true)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-sim-replica"], "r-a");
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let events: Vec<&str> = r
        .body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("SSE data line"))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect();
    // 5 token chunks + 1 usage chunk.
    assert_eq!(chunks.len(), 6);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 5);
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], 7); // 28 chars / 4
                                                        // Completions, non-streamed.
    let r = send(
        &c,
        "POST",
        format!("{}/v1/completions", sim.url()),
        Some(json!({"prompt": "abcd".repeat(10), "max_tokens": 3})),
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert!(r.headers.contains_key("x-sim-ttft-us"));
    let c2 = sim.counters();
    assert_eq!(c2.requests_completed, 2);
    assert_eq!(c2.generation_tokens, 8);
}

#[tokio::test]
async fn repeated_long_prompt_hits_cache_and_metrics_move() {
    // Real time: TTFT counts from the request's arrival, so a wall-clock
    // delay before the driver steps (a loaded CI machine) lands in it
    // multiplied by the speedup; at 1,000, 25 µs of it made a warm TTFT
    // look cold. At 1 it would take milliseconds, for ≈ 40 ms more test.
    let sim = SimReplica::spawn(SimConfig::default().with_speedup(1.0)).unwrap();
    let c = client();
    let prompt = "lorem ipsum dolor sit amet ".repeat(160); // ≈ 1,080 tokens
    let mut ttfts = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..2 {
        let r = send(
            &c,
            "POST",
            format!("{}/v1/chat/completions", sim.url()),
            Some(chat(&prompt, 2, false)),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        cached.push(
            v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        );
        ttfts.push(
            r.headers["x-sim-ttft-us"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(cached[0], 0);
    assert!(cached[1] >= 1000, "{cached:?}");
    // Simulated TTFT: ≈ 28 ms cold, ≈ 6 ms warm (headers are virtual µs).
    assert!(ttfts[1] * 2 < ttfts[0], "{ttfts:?}");
    let m = send(&c, "GET", format!("{}/metrics", sim.url()), None)
        .await
        .unwrap()
        .body;
    assert!(metric(&m, "vllm:prefix_cache_hits_total") >= 1000.0);
    assert!(metric(&m, "vllm:prefix_cache_queries_total") >= 2000.0);
    assert_eq!(metric(&m, "vllm:num_requests_running"), 0.0);
    assert!(m.contains("vllm:time_to_first_token_seconds_bucket"));
    assert!(m.contains("vllm:cache_config_info{"));
    let counters = sim.counters();
    assert!(counters.prefix_hits >= 1000);
}

#[tokio::test]
async fn kv_pressure_shows_waiting_and_preemptions_over_http() {
    let sim = SimReplica::spawn(
        SimConfig::default()
            .with_profile(Profile::SMALL)
            .with_speedup(200.0),
    )
    .unwrap();
    let reqs = generate(
        "tenant-prefix",
        3,
        &WorkloadOptions {
            requests: 60,
            rate: Some(1000.0),
            stream: false,
            ..Default::default()
        },
    )
    .unwrap();
    let url = sim.url();
    let handle = tokio::spawn(async move {
        run(
            &url,
            &reqs,
            LoadOptions {
                time_scale: 200.0,
                max_wall: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
    });
    let c = client();
    let mut saw_waiting = false;
    for _ in 0..400 {
        let m = send(&c, "GET", format!("{}/metrics", sim.url()), None)
            .await
            .unwrap()
            .body;
        if metric(&m, "vllm:num_requests_waiting") > 0.0 {
            saw_waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = handle.await.unwrap();
    assert!(saw_waiting);
    assert_eq!(report.completed, 60, "{report}");
    assert!(report.cache_hit_rate > 0.0, "{report}");
}

#[tokio::test]
async fn fault_modes() {
    let fleet = SimFleet::spawn(vec![fast(); 1]).unwrap();
    let sim = &fleet.replicas()[0];
    let c = client();
    let url = |p: &str| format!("{}{p}", sim.url());

    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let r = send(
        &c,
        "POST",
        url("/v1/completions"),
        Some(json!({"prompt": "x", "max_tokens": 1})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 500);
    assert!(r.body.contains("\"error\""));

    // Over the admin route.
    let r = send(
        &c,
        "POST",
        url("/admin/faults"),
        Some(json!({"rate_limit_rate": 1.0})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let r = send(
        &c,
        "POST",
        url("/v1/completions"),
        Some(json!({"prompt": "x", "max_tokens": 1})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");

    sim.set_faults(Faults {
        reset_after_chunks: Some(2),
        ..Faults::default()
    });
    let r = send(
        &c,
        "POST",
        url("/v1/chat/completions"),
        Some(chat("hi", 50, true)),
    )
    .await;
    // An error before the headers were read is also a reset.
    if let Ok(r) = r {
        assert!(r.broken, "stream should be cut");
        assert!(!r.body.contains("[DONE]"));
        assert!(r.body.matches("data: ").count() <= 2);
    }

    sim.set_faults(Faults {
        flapping_health: true,
        ..Faults::default()
    });
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(send(&c, "GET", url("/health"), None).await.unwrap().status);
    }
    assert_eq!(codes, vec![200, 503, 200, 503]);

    sim.set_faults(Faults {
        slow_start: Some(Duration::from_secs(30)),
        ..Faults::default()
    });
    assert_eq!(
        send(&c, "GET", url("/health"), None).await.unwrap().status,
        503
    );

    sim.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        send(
            &c,
            "POST",
            url("/v1/completions"),
            Some(json!({"prompt": "x", "max_tokens": 1})),
        ),
    )
    .await;
    assert!(hung.is_err(), "hang must never answer");

    sim.set_faults(Faults {
        crash: true,
        ..Faults::default()
    });
    assert!(!sim.is_running());
    let fresh = client();
    assert!(send(&fresh, "GET", url("/health"), None).await.is_err());
    let port = sim.addr().port();
    sim.restart().unwrap();
    assert_eq!(sim.addr().port(), port);
    let r = send(&fresh, "GET", url("/health"), None).await.unwrap();
    assert_eq!(r.status, 200);
    let got: Faults = serde_json::from_str(
        &send(&fresh, "GET", url("/admin/faults"), None)
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(!got.crash);
    assert!(sim.counters().requests_errored >= 2);
}

#[tokio::test]
async fn gpu_and_info_routes_and_sglang_flavor() {
    let sim = SimReplica::spawn(fast().with_flavor(MetricsFlavor::Sglang)).unwrap();
    let c = client();
    let idle: GpuReport = serde_json::from_str(
        &send(&c, "GET", format!("{}/gpu", sim.url()), None)
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(idle.gpus.len(), 1);
    let reqs = generate(
        "chat-short",
        5,
        &WorkloadOptions {
            requests: 100,
            rate: Some(200.0),
            ..Default::default()
        },
    )
    .unwrap();
    let report = run(
        &sim.url(),
        &reqs,
        LoadOptions {
            time_scale: 1000.0,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(report.completed, 100, "{report}");
    let busy: GpuReport = serde_json::from_str(
        &send(&c, "GET", format!("{}/gpu", sim.url()), None)
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(busy.gpus[0].utilization_pct > idle.gpus[0].utilization_pct);
    assert!(busy.gpus[0].temperature_c > idle.gpus[0].temperature_c);
    assert!(busy.gpus[0].memory_used_bytes <= busy.gpus[0].memory_total_bytes);
    let m = send(&c, "GET", format!("{}/metrics", sim.url()), None)
        .await
        .unwrap()
        .body;
    assert_eq!(metric(&m, "sglang:num_queue_reqs"), 0.0);
    assert!(metric(&m, "sglang:generation_tokens_total") > 0.0);
    assert!(m.contains("sglang:cache_config_info{"));
    let load: Value = serde_json::from_str(
        &send(&c, "GET", format!("{}/load", sim.url()), None)
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(load["server_load"], 0);
    for p in ["/v1/models", "/get_server_info", "/get_model_info"] {
        let r = send(&c, "GET", format!("{}{p}", sim.url()), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{p}");
        assert!(r.body.contains("llama-3-8b"), "{p}: {}", r.body);
    }
    let r = send(
        &c,
        "POST",
        format!("{}/v1/embeddings", sim.url()),
        Some(json!({"input": ["a b c d", "e"]})),
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn load_runner_spreads_over_fleet_via_replica_header() {
    let fleet = SimFleet::spawn(vec![fast(); 2]).unwrap();
    let reqs = generate(
        "gsp",
        1,
        &WorkloadOptions {
            requests: 40,
            rate: Some(500.0),
            ..Default::default()
        },
    )
    .unwrap();
    let mut total = llmgate_sim::load::LoadReport::default();
    for url in fleet.urls() {
        let half: Vec<_> = reqs.iter().take(20).cloned().collect();
        let r = run(
            &url,
            &half,
            LoadOptions {
                time_scale: 1000.0,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(r.completed, 20, "{r}");
        assert_eq!(r.per_replica_share.len(), 1);
        assert!(r.ttft_p50_s > 0.0 && r.ttft_p50_s <= r.e2e_p50_s);
        total.completed += r.completed;
    }
    assert_eq!(total.completed, 40);
    assert_eq!(fleet.replicas()[0].counters().requests_completed, 20);
    assert_eq!(fleet.replicas()[1].counters().requests_completed, 20);
}
