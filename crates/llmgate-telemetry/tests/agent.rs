//! The node agent's routes, with a fake probe.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use llmgate_telemetry::{
    agent, prom, FakeProbe, GpuProbe, GpuReading, GpuReport, NvmlProbe, Scraper,
};
use tower::ServiceExt;

fn gpu(index: u32, util: f64, name: &str) -> GpuReading {
    GpuReading {
        index,
        name: name.into(),
        utilization_pct: util,
        memory_used_bytes: 30 << 30,
        memory_total_bytes: 80 << 30,
        temperature_c: 66.5,
        power_w: if index == 0 { Some(512.25) } else { None },
        power_limit_w: if index == 0 { Some(700.0) } else { None },
    }
}

async fn get(app: &axum::Router, path: &str) -> (http::StatusCode, Option<String>, String) {
    let req = http::Request::get(path).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn gpu_json_follows_the_probe() {
    let probe = FakeProbe::with(vec![gpu(0, 42.0, "H100"), gpu(1, 7.0, "H100")]);
    let app = agent::router(probe.clone());
    let (status, ct, body) = get(&app, "/gpu").await;
    assert_eq!(status, 200);
    assert_eq!(ct.as_deref(), Some("application/json"));
    let report: GpuReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.gpus, probe.read());
    // Field names are part of the contract (the simulator serves the same JSON).
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for field in [
        "index",
        "name",
        "utilization_pct",
        "memory_used_bytes",
        "memory_total_bytes",
        "temperature_c",
        "power_w",
        "power_limit_w",
    ] {
        assert!(v["gpus"][0].get(field).is_some(), "missing {field}");
    }

    probe.set(vec![gpu(0, 99.0, "H100")]);
    let (_, _, body) = get(&app, "/gpu").await;
    let report: GpuReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.gpus.len(), 1);
    assert_eq!(report.gpus[0].utilization_pct, 99.0);
}

#[tokio::test]
async fn prometheus_metrics_render_and_parse_back() {
    let readings = vec![gpu(0, 42.0, "NVIDIA \"H100\" 80GB"), gpu(1, 7.0, "A100")];
    let app = agent::router(FakeProbe::with(readings.clone()));
    let (status, ct, text) = get(&app, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(ct.as_deref(), Some(agent::PROMETHEUS_CONTENT_TYPE));
    let (samples, errors) = prom::parse_with_errors(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let find = |name: &str, gpu: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.label("gpu") == Some(gpu))
            .map(|s| s.value)
    };
    assert_eq!(find("llmgate_gpu_utilization_ratio", "0"), Some(0.42));
    assert_eq!(find("llmgate_gpu_utilization_ratio", "1"), Some(0.07));
    assert_eq!(
        find("llmgate_gpu_memory_used_bytes", "0"),
        Some((30u64 << 30) as f64)
    );
    assert_eq!(
        find("llmgate_gpu_memory_total_bytes", "1"),
        Some((80u64 << 30) as f64)
    );
    assert_eq!(find("llmgate_gpu_temperature_celsius", "1"), Some(66.5));
    assert_eq!(find("llmgate_gpu_power_watts", "0"), Some(512.25));
    // GPU 1 reports no power: no sample rather than a fake 0.
    assert_eq!(find("llmgate_gpu_power_watts", "1"), None);
    assert!(text.contains("# TYPE llmgate_gpu_utilization_ratio gauge"));
    // Round trip, escaped name included.
    let mut back = agent::gpus_from_samples(&samples);
    back[0].utilization_pct = (back[0].utilization_pct * 1e9).round() / 1e9;
    back[1].utilization_pct = (back[1].utilization_pct * 1e9).round() / 1e9;
    assert_eq!(back, readings);

    let (status, _, body) = get(&app, "/health").await;
    assert_eq!((status, body.as_str()), (http::StatusCode::OK, "ok"));
    let (status, _, _) = get(&app, "/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn nvml_agent_on_a_gpu_less_machine_serves_empty() {
    // On this machine there is no NVIDIA driver: the agent still serves, with no GPU.
    let probe = NvmlProbe::new();
    let n = probe.read().len();
    let app = agent::router(probe);
    let (status, _, body) = get(&app, "/gpu").await;
    assert_eq!(status, 200);
    let report: GpuReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.gpus.len(), n);
}

#[tokio::test]
async fn serve_listener_serves_until_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let probe = FakeProbe::with(vec![gpu(0, 12.0, "L4")]);
    let server = tokio::spawn(agent::serve_listener(listener, probe, async move {
        let _ = stopped.await;
    }));
    let client = llmgate_telemetry::scrape_client();
    let gpus = Scraper::scrape_gpus(
        &client,
        &format!("http://{addr}/gpu"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].name, "L4");
    drop(client); // close the pooled keep-alive connection so shutdown completes
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}
