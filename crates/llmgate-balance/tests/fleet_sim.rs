//! A [`Fleet`] over `llmgate-sim` replicas on real sockets (127.0.0.1,
//! ephemeral ports) and real time: hung and killed replicas, draining, stale
//! telemetry and file-watch discovery.
//!
//! The simulated replicas run 50–100× faster than real time and the fleet's
//! timeouts and check intervals are tens to hundreds of milliseconds, so
//! each test takes about a second. Nothing asserts how long anything took:
//! asynchronous changes (a health verdict, a drain) are awaited with bounded
//! polling loops, and a generous client-side timeout only guards against a
//! request being held hostage.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use llmgate_balance::{
    AttemptTimeout, AttemptTimeouts, BalanceConfig, BoxBody, BreakerConfig, EndpointSpec,
    EndpointState, Fleet, FleetBalance, FleetConfig, Health, HealthConfig, StrategyKind,
};
use llmgate_core::{
    find_in_chain, AvoidEndpoints, BufferedBody, EndpointError, EndpointKind, RequestMeta,
};
use llmgate_retry::{HttpRetry, Retry, RetryLayer};
use llmgate_sim::{Faults, Profile, SimConfig, SimFleet, SimReplica};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};

const MODEL: &str = "llama-3-8b";
const FIRST_CHUNK: Duration = Duration::from_millis(300);
/// Far above anything a request should take here; hitting it means a
/// request was held hostage.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

fn sim(id: &str, speedup: f64) -> SimConfig {
    SimConfig::default()
        .with_profile(Profile::SMALL)
        .with_id(id)
        .with_speedup(speedup)
}

fn spec(r: &SimReplica) -> EndpointSpec {
    EndpointSpec::new(r.id(), r.url()).models([MODEL])
}

fn timeouts() -> AttemptTimeouts {
    AttemptTimeouts {
        first_chunk: FIRST_CHUNK,
        idle: Duration::from_secs(5),
        base: Duration::from_secs(2),
        per_token: Duration::from_millis(1),
        default_max_tokens: 256,
    }
}

fn health(interval_ms: u64, timeout_ms: u64, unhealthy_threshold: u32) -> HealthConfig {
    HealthConfig {
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        unhealthy_threshold,
        healthy_threshold: 1,
        stall_after: Duration::from_secs(1),
        ejection: Duration::from_secs(60),
    }
}

/// Round robin, so that a bad replica keeps getting its share until it
/// leaves rotation; no health checks, breaker or scraping unless set.
fn config() -> FleetConfig {
    FleetConfig {
        balance: BalanceConfig {
            strategy: StrategyKind::RoundRobin,
            ..BalanceConfig::default()
        },
        timeouts: timeouts(),
        health: None,
        breaker: None,
        scrape: None,
        h2c: false,
    }
}

fn chat(stream: bool, max_tokens: u32) -> Request<BufferedBody> {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something about load balancing."}],
        "max_tokens": max_tokens,
        "stream": stream,
    });
    let mut req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(BufferedBody::new(Bytes::from(body.to_string())))
        .unwrap();
    let mut meta = RequestMeta::new(EndpointKind::Chat);
    meta.model = Some(Arc::from(MODEL));
    meta.stream = stream;
    meta.max_tokens = Some(max_tokens);
    req.extensions_mut().insert(meta);
    req
}

/// A finished answer.
#[derive(Debug)]
struct Done {
    status: StatusCode,
    replica: String,
    body: String,
}

fn replica_of(res: &Response<BoxBody>) -> String {
    res.headers()
        .get("x-sim-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Reads a response to its end.
async fn finish(res: Response<BoxBody>) -> Result<Done, BoxError> {
    let status = res.status();
    let replica = replica_of(&res);
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Done {
        status,
        replica,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Sends one request and reads the answer, under the client-side timeout
/// (which must never fire: a hung replica must not hold a request).
async fn send<S>(svc: &S, req: Request<BufferedBody>) -> Result<Done, BoxError>
where
    S: Service<Request<BufferedBody>, Response = Response<BoxBody>, Error = BoxError> + Clone,
{
    let fut = async { finish(svc.clone().oneshot(req).await?).await };
    tokio::time::timeout(CLIENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            panic!("request held longer than the client timeout {CLIENT_TIMEOUT:?}")
        })
}

/// A successful answer that ran to its end.
fn assert_ok(d: &Done, stream: bool) {
    assert_eq!(d.status, StatusCode::OK, "{d:?}");
    assert!(!d.replica.is_empty(), "no x-sim-replica: {d:?}");
    if stream {
        assert!(d.body.contains("[DONE]"), "stream not finished: {d:?}");
    } else {
        assert!(d.body.contains("\"choices\""), "{d:?}");
    }
}

/// Polls `cond` every 20 ms for up to 10 s.
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn state(fleet: &Fleet, id: &str) -> Option<Arc<EndpointState>> {
    fleet
        .handle()
        .states()
        .into_iter()
        .find(|s| &**s.id() == id)
}

fn out_of_rotation(s: &EndpointState) -> bool {
    s.health() == Health::Unhealthy || s.ejected_until(Instant::now()).is_some()
}

/// The fleet behind a retry layer: three attempts, a short backoff, no budget.
fn retrying(fleet: &Fleet) -> Retry<FleetBalance, HttpRetry> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
        .no_budget()
        .build()
        .layer(fleet.service())
}

// ------------------------------------------------------------ hung replica

/// A request that lands on a hung replica fails at the first-chunk timeout
/// (an `AttemptTimeout` from that endpoint), not at the client's.
#[tokio::test]
async fn hung_replica_fails_a_streamed_attempt_at_the_first_chunk_timeout() {
    let sims = SimFleet::spawn(vec![
        sim("r0", 100.0),
        sim("r1", 100.0).with_faults(Faults {
            hang: true,
            ..Faults::default()
        }),
    ])
    .unwrap();
    let fleet = Fleet::new(config(), sims.replicas().iter().map(spec).collect()).unwrap();
    let svc = fleet.service();
    // Pin the attempt to the hung replica by avoiding the healthy one.
    let mut req = chat(true, 16);
    req.extensions_mut()
        .insert(AvoidEndpoints(vec![Arc::from("r0")]));
    let err = send(&svc, req)
        .await
        .expect_err("the hung replica never answers");
    let timeout = find_in_chain::<AttemptTimeout>(err.as_ref()).expect("an AttemptTimeout");
    assert_eq!(timeout.timeout, FIRST_CHUNK);
    assert_eq!(
        EndpointError::endpoint_of(err.as_ref()).as_deref(),
        Some("r1")
    );
    assert_eq!(sims.replicas()[1].counters().requests_received, 1);
    let r1 = state(&fleet, "r1").unwrap();
    assert_eq!(r1.totals(), (0, 1), "counted as a failure of r1");
    assert_eq!(r1.in_flight(), 0, "the attempt was released");
    // The healthy replica still answers.
    assert_ok(&send(&svc, chat(true, 16)).await.unwrap(), true);
    sims.shutdown();
}

/// With a retry layer above the fleet, every streamed request succeeds on
/// another replica, and the hung one leaves rotation.
#[tokio::test]
async fn hung_replica_costs_no_request_and_leaves_rotation() {
    let sims = SimFleet::spawn(vec![
        sim("r0", 100.0),
        sim("r1", 100.0).with_faults(Faults {
            hang: true,
            ..Faults::default()
        }),
        sim("r2", 100.0),
    ])
    .unwrap();
    let cfg = FleetConfig {
        // Detection takes several probe timeouts, long after the burst below
        // is dispatched, so round robin does send some of it to r1.
        health: Some(health(100, 250, 3)),
        breaker: Some(BreakerConfig::new()),
        ..config()
    };
    let fleet = Fleet::new(cfg, sims.replicas().iter().map(spec).collect()).unwrap();
    let svc = retrying(&fleet);
    let burst: Vec<_> = (0..9)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, chat(true, 16)).await })
        })
        .collect();
    for h in burst {
        let d = h.await.unwrap().expect("retried on another replica");
        assert_ok(&d, true);
        assert_ne!(d.replica, "r1", "{d:?}");
    }
    let tried = sims.replicas()[1].counters().requests_received;
    assert!(tried >= 1, "round robin sent part of the burst to r1");
    let r1 = state(&fleet, "r1").unwrap();
    assert!(r1.totals().1 >= 1, "{:?}", r1.totals());
    assert_eq!(r1.totals().0, 0);

    wait_for("r1 to leave rotation", || {
        let r1 = r1.clone();
        async move { out_of_rotation(&r1) }
    })
    .await;
    let report = fleet.report();
    let (r1_report, _) = report
        .iter()
        .find(|(r, _)| &**r.state.id() == "r1")
        .unwrap();
    assert!(!r1_report.ready, "r1 is not in the ready set");
    assert!(report
        .iter()
        .filter(|(r, _)| &**r.state.id() != "r1")
        .all(|(r, _)| r.state.health() != Health::Unhealthy));
    // Out of rotation: new requests never reach it.
    for _ in 0..6 {
        let d = send(&svc, chat(true, 16)).await.unwrap();
        assert_ok(&d, true);
        assert_ne!(d.replica, "r1");
    }
    assert_eq!(sims.replicas()[1].counters().requests_received, tried);
    sims.shutdown();
}

// ---------------------------------------------------------- killed replica

/// A replica killed mid-run: requests in flight there and those sent before
/// the health checks notice fail over to the others; none is lost; after
/// the threshold it is unhealthy and gets no more attempts.
#[tokio::test]
async fn killed_replica_leaves_rotation_and_no_request_is_lost() {
    let sims = SimFleet::spawn(vec![sim("r0", 50.0), sim("r1", 50.0), sim("r2", 50.0)]).unwrap();
    let cfg = FleetConfig {
        health: Some(health(50, 200, 2)),
        breaker: Some(BreakerConfig::new()),
        ..config()
    };
    let fleet = Fleet::new(cfg, sims.replicas().iter().map(spec).collect()).unwrap();
    let svc = retrying(&fleet);
    const TOTAL: usize = 120;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (svc, next, done) = (svc.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < TOTAL {
                    // Non-streamed: the answer's head comes with its end, so a
                    // request cut by the crash fails before anything reached
                    // the client and is retried.
                    let d = send(&svc, chat(false, 48)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    out.push(d);
                }
                out
            })
        })
        .collect();
    let d = done.clone();
    wait_for("a quarter of the run", || {
        let d = d.clone();
        async move { d.load(Ordering::SeqCst) >= TOTAL / 4 }
    })
    .await;
    let served_before_kill = sims.replicas()[1].counters().requests_received;
    sims.replicas()[1].kill();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    assert_eq!(results.len(), TOTAL);
    for r in &results {
        let d = r.as_ref().expect("no request lost");
        assert_ok(d, false);
    }
    assert!(served_before_kill >= 1, "r1 took part before the kill");

    let r1 = state(&fleet, "r1").unwrap();
    wait_for("r1 unhealthy", || {
        let r1 = r1.clone();
        async move { r1.health() == Health::Unhealthy }
    })
    .await;
    assert!(["r0", "r2"]
        .iter()
        .all(|id| state(&fleet, id).unwrap().health() != Health::Unhealthy));
    assert_eq!(fleet.healthy_count(), 2);
    let report = fleet.report();
    let (r1_report, _) = report
        .iter()
        .find(|(r, _)| &**r.state.id() == "r1")
        .unwrap();
    assert!(!r1_report.ready);
    // Out of rotation: no further attempts at r1 at all.
    let attempts_at_r1 = r1.totals();
    for _ in 0..12 {
        let d = send(&svc, chat(false, 16)).await.unwrap();
        assert_ok(&d, false);
        assert_ne!(d.replica, "r1");
    }
    assert_eq!(r1.totals(), attempts_at_r1);
    sims.shutdown();
}

// -------------------------------------------------------------- draining

/// A draining endpoint finishes its in-flight streams, gets no new request,
/// and leaves the fleet once idle.
#[tokio::test]
async fn draining_endpoint_finishes_in_flight_and_takes_no_new_requests() {
    let sims = SimFleet::spawn(vec![sim("a", 50.0), sim("b", 50.0)]).unwrap();
    let (a, b) = (&sims.replicas()[0], &sims.replicas()[1]);
    // Only `a` at first, so the long streams start there.
    let fleet = Fleet::new(config(), vec![spec(a)]).unwrap();
    let svc = fleet.service();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let res = tokio::time::timeout(CLIENT_TIMEOUT, svc.clone().oneshot(chat(true, 3000)))
            .await
            .expect("head within the client timeout")
            .expect("stream started");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(replica_of(&res), "a");
        streams.push(res);
    }
    let a_state = state(&fleet, "a").unwrap();
    assert_eq!(a_state.in_flight(), 3, "streams open until read to the end");

    fleet.handle().upsert(spec(b)).unwrap();
    fleet.handle().drain("a", Duration::from_secs(30)).unwrap();
    assert!(a_state.is_draining());
    for _ in 0..6 {
        let d = send(&svc, chat(false, 16)).await.unwrap();
        assert_ok(&d, false);
        assert_eq!(d.replica, "b", "no new request to the draining endpoint");
    }
    // Still a member while its streams run.
    assert!(state(&fleet, "a").is_some());
    let report = fleet.report();
    let (a_report, _) = report.iter().find(|(r, _)| &**r.state.id() == "a").unwrap();
    assert!(!a_report.ready);
    assert_eq!(fleet.healthy_count(), 1);

    for res in streams {
        let d = tokio::time::timeout(CLIENT_TIMEOUT, finish(res))
            .await
            .expect("stream ends")
            .expect("stream completes undisturbed by the drain");
        assert_ok(&d, true);
        assert_eq!(d.replica, "a");
    }
    wait_for("a removed after its drain", || {
        let fleet = fleet.clone();
        async move {
            state(&fleet, "a").is_none()
                && fleet.report().iter().all(|(r, _)| &**r.state.id() != "a")
        }
    })
    .await;
    assert_eq!(a_state.in_flight(), 0);
    assert_eq!(a_state.totals(), (3, 0));
    assert_eq!(a.counters().requests_received, 3, "nothing new reached a");
    assert_eq!(b.counters().requests_received, 6);
    sims.shutdown();
}

// ------------------------------------------------------- stale telemetry

/// Fresh engine metrics appear in the load view; once a replica's metrics
/// stop, its engine view is dropped after the staleness bound while the
/// others' stays.
#[tokio::test]
async fn stale_metrics_are_not_trusted() {
    let sims = SimFleet::spawn(vec![sim("r0", 100.0), sim("r1", 100.0)]).unwrap();
    let staleness = Duration::from_millis(400);
    let cfg = FleetConfig {
        balance: BalanceConfig {
            staleness,
            ..config().balance
        },
        scrape: Some((Duration::from_millis(50), Duration::from_millis(200))),
        ..config()
    };
    let fleet = Fleet::new(cfg, sims.replicas().iter().map(spec).collect()).unwrap();
    let engine_of = |fleet: &Fleet, id: &str| {
        fleet
            .report()
            .into_iter()
            .find(|(r, _)| &**r.state.id() == id)
            .and_then(|(r, _)| r.load.engine)
    };
    wait_for("fresh engine metrics from both replicas", || {
        let fleet = fleet.clone();
        async move { engine_of(&fleet, "r0").is_some() && engine_of(&fleet, "r1").is_some() }
    })
    .await;
    let r1 = state(&fleet, "r1").unwrap();
    let fresh = r1.load_view(staleness).engine.expect("fresh engine view");
    assert!((0.0..=1.0).contains(&fresh.kv_cache_usage), "{fresh:?}");

    // r1's metrics stop.
    sims.replicas()[1].kill();
    wait_for("r1's engine view to go stale", || {
        let fleet = fleet.clone();
        async move { engine_of(&fleet, "r1").is_none() }
    })
    .await;
    assert!(r1.load_view(staleness).engine.is_none());
    // The old reading is still held, just not trusted.
    assert!(r1.load_view(Duration::from_secs(3600)).engine.is_some());
    // r0 keeps being scraped.
    assert!(engine_of(&fleet, "r0").is_some());
    assert!(state(&fleet, "r0")
        .unwrap()
        .load_view(staleness)
        .engine
        .is_some());
    sims.shutdown();
}

// ------------------------------------------------------------ file watch

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "llmgate-balance-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the replicas file atomically (write, then rename).
fn write_replicas(path: &Path, replicas: &[&SimReplica]) {
    let mut text = String::new();
    for r in replicas {
        text.push_str(&format!(
            "[[replicas]]\nid = \"{}\"\nurl = \"{}\"\nmodels = [\"{MODEL}\"]\n\n",
            r.id(),
            r.url()
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn ids(fleet: &Fleet) -> Vec<String> {
    let mut v: Vec<String> = fleet
        .handle()
        .states()
        .iter()
        .filter(|s| !s.is_draining())
        .map(|s| s.id().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn file_watch_adds_and_removes_replicas_live() {
    let sims = SimFleet::spawn(vec![sim("a", 100.0), sim("b", 100.0)]).unwrap();
    let (a, b) = (&sims.replicas()[0], &sims.replicas()[1]);
    let dir = TempDir::new("watch");
    let path = dir.0.join("replicas.toml");
    write_replicas(&path, &[a]);

    let fleet = Fleet::new(config(), Vec::new()).unwrap();
    let svc = fleet.service();
    let watch = fleet.handle().watch_file(
        path.clone(),
        Duration::from_millis(50),
        Duration::from_secs(30),
    );
    wait_for("a from the file", || {
        let fleet = fleet.clone();
        async move { ids(&fleet) == ["a"] }
    })
    .await;
    for _ in 0..3 {
        let d = send(&svc, chat(false, 16)).await.unwrap();
        assert_ok(&d, false);
        assert_eq!(d.replica, "a");
    }

    // b added.
    write_replicas(&path, &[a, b]);
    wait_for("b added", || {
        let fleet = fleet.clone();
        async move { ids(&fleet) == ["a", "b"] }
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let d = send(&svc, chat(false, 16)).await.unwrap();
        assert_ok(&d, false);
        seen.push(d.replica);
    }
    assert!(
        seen.iter().any(|r| r == "b"),
        "requests reach the new replica: {seen:?}"
    );
    assert!(seen.iter().any(|r| r == "a"), "{seen:?}");

    // a removed (drained, then gone: nothing in flight).
    write_replicas(&path, &[b]);
    wait_for("a removed", || {
        let fleet = fleet.clone();
        async move {
            fleet.handle().states().len() == 1
                && ids(&fleet) == ["b"]
                && fleet.report().iter().all(|(r, _)| &**r.state.id() == "b")
        }
    })
    .await;
    let a_before = a.counters().requests_received;
    for _ in 0..4 {
        let d = send(&svc, chat(false, 16)).await.unwrap();
        assert_ok(&d, false);
        assert_eq!(d.replica, "b");
    }
    assert_eq!(a.counters().requests_received, a_before);

    // A file that does not parse is ignored (b stays, undrained); the next
    // valid version is applied.
    let b_state = state(&fleet, "b").unwrap();
    std::fs::write(&path, "[[replicas]]\nid = 3\n").unwrap();
    // Give the watcher a few intervals to read the broken file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_replicas(&path, &[b, a]);
    wait_for("a back", || {
        let fleet = fleet.clone();
        async move { ids(&fleet) == ["a", "b"] }
    })
    .await;
    assert!(Arc::ptr_eq(&state(&fleet, "b").unwrap(), &b_state));
    assert!(!b_state.is_draining());

    watch.abort();
    drop(dir);
    assert!(!path.exists());
    sims.shutdown();
}
