//! The scraper against small axum servers on 127.0.0.1 (real sockets, so real
//! time; every wait is a bounded loop on an observable state, never a timing
//! assertion).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use llmgate_telemetry::{
    agent, scrape_client, EngineFlavor, FakeProbe, GpuReading, ScrapeError, ScrapeTarget, Scraper,
    TelemetryCell,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

#[derive(Default)]
struct Fake {
    waiting: AtomicU64,
    hang: AtomicBool,
    fail: AtomicBool,
    hits: AtomicUsize,
}

async fn metrics(State(f): State<Arc<Fake>>) -> (axum::http::StatusCode, String) {
    f.hits.fetch_add(1, Ordering::SeqCst);
    if f.hang.load(Ordering::SeqCst) {
        // A hung replica: accepts the request, never answers.
        std::future::pending::<()>().await;
    }
    if f.fail.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom".into());
    }
    let w = f.waiting.load(Ordering::SeqCst);
    let body = format!(
        "# HELP vllm:num_requests_waiting Waiting.\n\
         # TYPE vllm:num_requests_waiting gauge\n\
         vllm:num_requests_waiting{{engine=\"0\",model_name=\"m\"}} {w}\n\
         vllm:num_requests_running{{engine=\"0\",model_name=\"m\"}} 2\n\
         vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} 0.5\n\
         vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"m\"}} 4\n"
    );
    (axum::http::StatusCode::OK, body)
}

async fn spawn_server(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn fake_engine() -> (Arc<Fake>, std::net::SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(fake.clone());
    (fake, spawn_server(app).await)
}

/// Polls `cond` every 10 ms for at most 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Counter totals, accumulated (the debugging recorder resets counters on snapshot).
struct Counters {
    snap: Snapshotter,
    total: std::collections::HashMap<String, u64>,
}

impl Counters {
    fn get(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        for (ck, _, _, v) in self.snap.snapshot().into_vec() {
            if let DebugValue::Counter(n) = v {
                let mut key = ck.key().name().to_string();
                let mut ls: Vec<String> = ck
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                ls.sort();
                key.push_str(&ls.join(","));
                *self.total.entry(key).or_default() += n;
            }
        }
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        want.sort();
        let key = format!("{name}{}", want.join(","));
        self.total.get(&key).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn scraper_follows_changing_metrics() {
    let (fake, addr) = fake_engine().await;
    fake.waiting.store(3, Ordering::SeqCst);
    let target = ScrapeTarget::new("r1")
        .metrics_url(format!("http://{addr}/metrics"))
        .interval(Duration::from_millis(20))
        .timeout(Duration::from_secs(2));
    let (cell, handle) = Scraper::spawn(target, scrape_client());
    let max_age = Duration::from_secs(30);

    eventually("first scrape", || cell.engine(max_age).is_some()).await;
    let m = cell.engine(max_age).unwrap();
    assert_eq!(m.flavor, EngineFlavor::Vllm);
    assert_eq!((m.waiting, m.running, m.kv_cache_usage), (3.0, 2.0, 0.5));
    let snap = cell.fresh(max_age).unwrap();
    assert!(snap.gpus.is_empty(), "no gpu_url: no GPU part");

    fake.waiting.store(11, Ordering::SeqCst);
    eventually("changed value", || {
        cell.engine(max_age).map(|m| m.waiting) == Some(11.0)
    })
    .await;

    // Dropping the handle stops scraping.
    drop(handle);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let hits = fake.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.hits.load(Ordering::SeqCst), hits);
}

#[tokio::test]
async fn hung_target_times_out_and_goes_stale() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters {
        snap: recorder.snapshotter(),
        total: Default::default(),
    };
    // current-thread test runtime: every task runs on this thread and sees the recorder.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (fake, addr) = fake_engine().await;
    fake.waiting.store(4, Ordering::SeqCst);
    let target = ScrapeTarget::new("hung")
        .metrics_url(format!("http://{addr}/metrics"))
        .interval(Duration::from_millis(20))
        .timeout(Duration::from_millis(100));
    let (cell, _handle) = Scraper::spawn(target, scrape_client());
    let max_age = Duration::from_millis(300);
    eventually("first scrape", || cell.engine(max_age).is_some()).await;

    fake.hang.store(true, Ordering::SeqCst);
    let errors = |c: &mut Counters| {
        c.get(
            "llmgate_telemetry_scrape_errors_total",
            &[("target", "hung"), ("kind", "metrics")],
        )
    };
    eventually("scrape timeouts counted", || errors(&mut counters) >= 2).await;
    eventually("snapshot goes stale", || cell.fresh(max_age).is_none()).await;
    // The old value is kept (for display) but no longer trusted.
    assert_eq!(cell.latest().unwrap().engine.unwrap().waiting, 4.0);
    assert!(cell.engine(max_age).is_none());

    // Recovery: the replica answers again and the cell is fresh again.
    fake.hang.store(false, Ordering::SeqCst);
    fake.waiting.store(1, Ordering::SeqCst);
    eventually("fresh after recovery", || {
        cell.engine(max_age).map(|m| m.waiting) == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn error_status_and_unreachable_are_counted_not_trusted() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters {
        snap: recorder.snapshotter(),
        total: Default::default(),
    };
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (fake, addr) = fake_engine().await;
    fake.fail.store(true, Ordering::SeqCst);
    let client = scrape_client();
    let err = Scraper::scrape_engine(
        &client,
        &format!("http://{addr}/metrics"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ScrapeError::Status(s) if s.as_u16() == 500),
        "{err}"
    );

    // A port nobody listens on (bound then released).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let target = ScrapeTarget::new("dead")
        .metrics_url(format!("http://{dead}/metrics"))
        .gpu_url("not a url")
        .interval(Duration::from_millis(20))
        .timeout(Duration::from_millis(200));
    let (cell, _h) = Scraper::spawn(target, client.clone());
    eventually("transport errors counted", || {
        counters.get(
            "llmgate_telemetry_scrape_errors_total",
            &[("target", "dead"), ("kind", "metrics")],
        ) >= 2
    })
    .await;
    assert!(
        counters.get(
            "llmgate_telemetry_scrape_errors_total",
            &[("target", "dead"), ("kind", "gpu")],
        ) >= 1
    );
    assert!(cell.latest().is_none());

    // A target answering 200 without engine metrics yields no engine part.
    let app = Router::new().route(
        "/metrics",
        get(|| async { "process_cpu_seconds_total 1\n" }),
    );
    let other = spawn_server(app).await;
    let m = Scraper::scrape_engine(
        &client,
        &format!("http://{other}/metrics"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(m, None);
}

fn gpu(index: u32, util: f64) -> GpuReading {
    GpuReading {
        index,
        name: format!("NVIDIA H100 {index}"),
        utilization_pct: util,
        memory_used_bytes: 20 << 30,
        memory_total_bytes: 80 << 30,
        temperature_c: 60.0,
        power_w: Some(400.0),
        power_limit_w: Some(700.0),
    }
}

#[tokio::test]
async fn scrapes_an_agent_and_an_engine_together() {
    let probe = FakeProbe::with(vec![gpu(0, 30.0), gpu(1, 50.0)]);
    let agent_addr = spawn_server(agent::router(probe.clone())).await;
    let (fake, engine_addr) = fake_engine().await;
    fake.waiting.store(6, Ordering::SeqCst);

    let cell = TelemetryCell::new();
    let target = ScrapeTarget::new("r2")
        .metrics_url(format!("http://{engine_addr}/metrics"))
        .gpu_url(format!("http://{agent_addr}/gpu"))
        .interval(Duration::from_millis(20));
    let _h = Scraper::spawn_into(target, scrape_client(), cell.clone());
    let max_age = Duration::from_secs(30);
    eventually("both parts", || {
        cell.fresh(max_age)
            .is_some_and(|s| s.engine.is_some() && s.gpus.len() == 2)
    })
    .await;
    let s = cell.gpu_summary(max_age).unwrap();
    assert_eq!(s.count, 2);
    assert_eq!(s.mean_utilization_pct, 40.0);
    assert_eq!(s.power_fraction(), Some(800.0 / 1400.0));

    probe.update(|g| g[1].utilization_pct = 95.0);
    eventually("gpu change seen", || {
        cell.gpu_summary(max_age).map(|s| s.max_utilization_pct) == Some(95.0)
    })
    .await;
    assert_eq!(cell.engine(max_age).unwrap().waiting, 6.0);
}
