use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_test::mock;

use crate::*;

type Req = Request<()>;
type Res = Response<Full<Bytes>>;

fn status(code: u16) -> Res {
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

/// A service answering each request with the status in its `x-status`
/// header (200 if absent).
fn by_header() -> impl Service<Req, Response = Res, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|req: Req| async move {
        let code = req
            .headers()
            .get("x-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(200);
        if code == 0 {
            return Err::<Res, BoxError>("connection refused".into());
        }
        Ok(status(code))
    })
}

fn req(code: u16) -> Req {
    Request::builder()
        .header("x-status", code)
        .body(())
        .unwrap()
}

async fn drain<B: http_body::Body>(res: Response<B>) -> Result<(), B::Error> {
    res.into_body().collect().await.map(|_| ())
}

async fn hit<S>(svc: &S, code: u16) -> Result<StatusCode, BoxError>
where
    S: Service<Req, Response = Response<BreakerBody<Full<Bytes>>>, Error = BoxError> + Clone,
{
    let res = svc.clone().oneshot(req(code)).await?;
    let st = res.status();
    drain(res).await.unwrap();
    Ok(st)
}

#[tokio::test(start_paused = true)]
async fn opens_on_consecutive_failures() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .failure_rate(0.0)
        .build();
    let h = layer.handle();
    let svc = layer.layer(by_header());

    // Interleaved successes reset the count; 4xx and 429 are not failures.
    for code in [500, 500, 200, 500, 429, 404, 500, 503] {
        hit(&svc, code).await.unwrap();
        assert_eq!(h.state(), BreakerState::Closed, "after {code}");
    }
    // Connection error is the third failure in a row.
    assert!(hit(&svc, 0).await.is_err());
    assert_eq!(h.state(), BreakerState::Open);
    let snap = h.snapshot();
    assert_eq!(snap.failures_total, 6);
    assert_eq!(snap.successes_total, 3);
    let t = snap.last_transition.unwrap();
    assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));

    // Fail fast: BreakerOpen, inner not called.
    let err = hit(&svc, 200).await.unwrap_err();
    let open = err.downcast_ref::<BreakerOpen>().unwrap();
    assert_eq!(open.state(), BreakerState::Open);
    assert_eq!(open.retry_after(), Duration::from_secs(30));
    let answer = llmgate_core::error_response(open);
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["retry-after"], "30");
    assert_eq!(h.snapshot().rejected_total, 1);
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_with_min_calls() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .min_calls(10)
        .window(Duration::from_secs(10))
        .build();
    let h = layer.handle();
    let svc = layer.layer(by_header());

    // 4 failures out of 9: below min_calls, stays closed however bad.
    for i in 0..9 {
        hit(&svc, if i % 2 == 0 { 500 } else { 200 }).await.unwrap();
    }
    assert_eq!(h.snapshot().window_calls, 9);
    assert_eq!(h.state(), BreakerState::Closed);
    // Tenth call: 5/10 failed = 50% → open.
    hit(&svc, 200).await.unwrap();
    assert_eq!(h.state(), BreakerState::Closed, "success never trips");
    hit(&svc, 502).await.unwrap();
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_failures_leave_the_window() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .min_calls(4)
        .window(Duration::from_secs(10))
        .build();
    let h = layer.handle();
    let svc = layer.layer(by_header());
    for _ in 0..3 {
        hit(&svc, 500).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The three failures have aged out: 1 failure + 3 successes = 25%.
    for code in [200, 200, 200, 500] {
        hit(&svc, code).await.unwrap();
    }
    assert_eq!(h.snapshot().window_calls, 4);
    assert_eq!(h.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_recovers_after_successes_and_reopens_on_failure() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .cool_down(Duration::from_secs(10))
        .cool_down_growth(2.0)
        .cool_down_cap(Duration::from_secs(15))
        .half_open_successes(2)
        .build();
    let h = layer.handle();
    let svc = layer.layer(by_header());

    hit(&svc, 500).await.unwrap();
    assert_eq!(h.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(hit(&svc, 200).await.is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.state(), BreakerState::HalfOpen);

    // A failed probe reopens, with a grown (capped) cool-down.
    hit(&svc, 503).await.unwrap();
    assert_eq!(h.state(), BreakerState::Open);
    let snap = h.snapshot();
    assert_eq!(snap.trips, 2);
    assert_eq!(
        snap.retry_at,
        Some(Instant::now() + Duration::from_secs(15))
    );
    tokio::time::advance(Duration::from_secs(15)).await;

    hit(&svc, 200).await.unwrap();
    assert_eq!(h.state(), BreakerState::HalfOpen);
    hit(&svc, 200).await.unwrap();
    assert_eq!(h.state(), BreakerState::Closed);
    let snap = h.snapshot();
    assert_eq!(snap.trips, 0);
    assert_eq!(snap.transitions_total, 5);
}

#[tokio::test(start_paused = true)]
async fn not_ready_mode_is_pending_while_open_and_wakes_itself() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .cool_down(Duration::from_secs(5))
        .half_open_successes(1)
        .mode(Mode::NotReady)
        .build();
    let h = layer.handle();
    let (mock, mut handle) = mock::pair::<Req, Res>();
    let mut svc = mock::Spawn::new(layer.layer(mock));

    handle.allow(1);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req(500));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(500));
    let res = fut.await.unwrap();
    drain(res).await.unwrap();
    assert_eq!(h.state(), BreakerState::Open);

    // Pending, never Err, while open.
    handle.allow(1);
    tokio_test::assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(!svc.is_woken());
    tokio_test::assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_secs(1)).await;
    // The timer registered by poll_ready woke the task.
    assert!(svc.is_woken());
    tokio_test::assert_ready_ok!(svc.poll_ready());
    assert_eq!(h.state(), BreakerState::HalfOpen);

    let fut = svc.call(req(200));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(200));
    drain(fut.await.unwrap()).await.unwrap();
    assert_eq!(h.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_mode_is_ready_and_refuses_in_call() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build();
    let h = layer.handle();
    let (mock, mut handle) = mock::pair::<Req, Res>();
    let mut svc = mock::Spawn::new(layer.layer(mock));
    handle.allow(0);
    h.force_open();
    // Ready although the inner service is not: the call will be refused.
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req(200)).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
}

/// An inner service that holds every call until released and tracks the
/// largest number in flight at once.
#[derive(Clone)]
struct Gate {
    in_flight: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            in_flight: Arc::default(),
            max: Arc::default(),
            calls: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl Service<Req> for Gate {
    type Response = Res;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Res, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let g = self.clone();
        Box::pin(async move {
            g.calls.fetch_add(1, Ordering::SeqCst);
            let now = g.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            g.max.fetch_max(now, Ordering::SeqCst);
            g.release.acquire().await.unwrap().forget();
            g.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(status(200))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_limit_holds_with_50_concurrent_callers_not_ready() {
    let layer = CircuitBreakerLayer::builder()
        .half_open_max_probes(2)
        .half_open_successes(50)
        .cool_down(Duration::from_secs(1))
        .mode(Mode::NotReady)
        .build();
    let h = layer.handle();
    h.force_open();
    tokio::time::advance(Duration::from_secs(1)).await;
    let gate = Gate::new();
    let svc = layer.layer(gate.clone());

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(req(200)).await.unwrap();
                drain(res).await.unwrap();
            })
        })
        .collect();
    // Release calls one at a time; the limit must hold throughout.
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(gate.in_flight.load(Ordering::SeqCst) <= 2);
        gate.release.add_permits(1);
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 50);
    assert_eq!(gate.max.load(Ordering::SeqCst), 2);
    assert_eq!(h.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_limit_holds_with_50_concurrent_callers_fail_fast() {
    let layer = CircuitBreakerLayer::builder()
        .half_open_max_probes(1)
        .half_open_successes(1)
        .cool_down(Duration::from_secs(1))
        .build();
    let h = layer.handle();
    h.force_open();
    tokio::time::advance(Duration::from_secs(1)).await;
    let gate = Gate::new();
    let svc = layer.layer(gate.clone());

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                match svc.oneshot(req(200)).await {
                    Ok(res) => {
                        drain(res).await.unwrap();
                        true
                    }
                    Err(e) => {
                        assert_eq!(
                            e.downcast_ref::<BreakerOpen>().unwrap().state(),
                            BreakerState::HalfOpen
                        );
                        false
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.release.add_permits(50);
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 1);
    assert_eq!(gate.max.load(Ordering::SeqCst), 1);
    assert_eq!(h.snapshot().rejected_total, 49);
    assert_eq!(h.state(), BreakerState::Closed);
}

type ChunkStream =
    futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, BoxError>>>;

fn streamed(
    frames: Vec<Result<http_body::Frame<Bytes>, BoxError>>,
) -> Response<StreamBody<ChunkStream>> {
    Response::new(StreamBody::new(futures_util::stream::iter(frames)))
}

#[tokio::test(start_paused = true)]
async fn outcome_follows_the_body_and_probe_slot_is_held_until_then() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .half_open_successes(1)
        .cool_down(Duration::from_secs(1))
        .build();
    let h = layer.handle();
    let (mock, mut handle) = mock::pair::<Req, Response<StreamBody<ChunkStream>>>();
    handle.allow(10);
    let svc = layer.layer(mock);

    // A 200 whose stream breaks after the first chunk is a failure.
    let fut = tokio::spawn(svc.clone().oneshot(req(200)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(streamed(vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"tok"))),
        Err("reset mid-stream".into()),
    ]));
    let res = fut.await.unwrap().unwrap();
    assert_eq!(
        h.state(),
        BreakerState::Closed,
        "head alone is not the outcome"
    );
    assert!(drain(res).await.is_err());
    assert_eq!(h.state(), BreakerState::Open);

    // Half-open: the probe slot stays taken while the probe's body streams.
    tokio::time::advance(Duration::from_secs(1)).await;
    let fut = tokio::spawn(svc.clone().oneshot(req(200)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(streamed(vec![Ok(http_body::Frame::data(
        Bytes::from_static(b"a"),
    ))]));
    let res = fut.await.unwrap().unwrap();
    assert_eq!(h.snapshot().probes_in_flight, 1);
    let err = svc.clone().oneshot(req(200)).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
    drain(res).await.unwrap();
    assert_eq!(h.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_releases_its_slot_without_outcome() {
    let layer = CircuitBreakerLayer::builder()
        .half_open_successes(1)
        .cool_down(Duration::from_secs(1))
        .build();
    let h = layer.handle();
    h.force_open();
    tokio::time::advance(Duration::from_secs(1)).await;
    let (mock, mut handle) = mock::pair::<Req, Res>();
    handle.allow(10);
    let svc = layer.layer(mock);
    let fut = svc.clone().oneshot(req(200));
    let mut fut = tokio_test::task::spawn(fut);
    tokio_test::assert_pending!(fut.poll());
    assert_eq!(h.snapshot().probes_in_flight, 1);
    drop(fut);
    assert_eq!(h.snapshot().probes_in_flight, 0);
    assert_eq!(h.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn grpc_status_in_trailers_decides() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .build()
        .with_classifier(GrpcClassifier);
    let h = layer.handle();
    let svc = layer.layer(service_fn(|code: &'static str| async move {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        Ok::<_, BoxError>(streamed(vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"msg"))),
            Ok(http_body::Frame::trailers(trailers)),
        ]))
    }));
    for code in ["8", "0", "14"] {
        drain(svc.clone().oneshot(code).await.unwrap())
            .await
            .unwrap();
    }
    assert_eq!(h.snapshot().failures_total, 1);
    drain(svc.clone().oneshot("13").await.unwrap())
        .await
        .unwrap();
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_an_earlier_state_do_not_move_the_machine() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .half_open_successes(1)
        .cool_down(Duration::from_secs(1))
        .build()
        .with_classifier(ErrorClassifier);
    let h = layer.handle();
    let (mock, mut handle) = mock::pair::<(), ()>();
    handle.allow(10);
    let svc = layer.layer(mock);
    // Two calls admitted while closed.
    let a = tokio::spawn(svc.clone().oneshot(()));
    let b = tokio::spawn(svc.clone().oneshot(()));
    let (_, sa) = handle.next_request().await.unwrap();
    let (_, sb) = handle.next_request().await.unwrap();
    sa.send_error("boom");
    assert!(a.await.unwrap().is_err());
    assert_eq!(h.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.state(), BreakerState::HalfOpen);
    // A late success from the closed period is not a probe success.
    sb.send_response(());
    b.await.unwrap().unwrap();
    assert_eq!(h.state(), BreakerState::HalfOpen);
}

#[test]
fn metrics_report_state_and_transitions() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let layer = CircuitBreakerLayer::builder().name("r1").build();
            let h = layer.handle();
            h.force_open();
        });
    });
    let snap = snapshotter.snapshot().into_vec();
    let mut state = None;
    let mut opened = None;
    for (key, _, _, value) in snap {
        let k = key.key();
        let labels: Vec<_> = k
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        match (k.name(), value) {
            ("llmgate_breaker_state", DebugValue::Gauge(v)) => {
                assert_eq!(labels, vec![("name".into(), "r1".into())]);
                state = Some(v.into_inner());
            }
            ("llmgate_breaker_transitions_total", DebugValue::Counter(n)) => {
                assert!(labels.contains(&("to".into(), "open".into())));
                opened = Some(n);
            }
            _ => {}
        }
    }
    assert_eq!(state, Some(2.0));
    assert_eq!(opened, Some(1));
}
