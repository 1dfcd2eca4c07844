use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use llmgate_core::{AvoidEndpoints, BufferedBody, EndpointError, ServedBy};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

use crate::*;

#[derive(Clone, Debug, PartialEq)]
struct Tag(&'static str);

enum Step {
    Status(u16, Option<&'static str>, Option<&'static str>),
    Fail(Option<&'static str>),
}

#[derive(Default)]
struct Log {
    at: Vec<Instant>,
    bodies: Vec<Bytes>,
    avoid: Vec<Vec<String>>,
    tags: Vec<Option<Tag>>,
}

type Res = Response<Full<Bytes>>;

/// A service that plays `steps` in order (then answers 200) and logs what
/// it received.
fn scripted(
    steps: Vec<Step>,
) -> (
    impl Service<Request<BufferedBody>, Response = Res, Error = BoxError, Future = impl Send> + Clone,
    Arc<Mutex<Log>>,
) {
    let steps = Arc::new(Mutex::new(VecDeque::from(steps)));
    let log = Arc::new(Mutex::new(Log::default()));
    let l = log.clone();
    let svc = service_fn(move |req: Request<BufferedBody>| {
        let steps = steps.clone();
        let log = l.clone();
        async move {
            let body = req.into_parts();
            let bytes = body.1.collect().await.unwrap().to_bytes();
            {
                let mut g = log.lock().unwrap();
                g.at.push(Instant::now());
                g.bodies.push(bytes);
                g.avoid.push(
                    body.0
                        .extensions
                        .get::<AvoidEndpoints>()
                        .map(|a| a.0.iter().map(|e| e.to_string()).collect())
                        .unwrap_or_default(),
                );
                g.tags.push(body.0.extensions.get::<Tag>().cloned());
            }
            let step = steps.lock().unwrap().pop_front();
            match step {
                None => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
                Some(Step::Status(code, retry_after, served_by)) => {
                    let mut res = Response::new(Full::new(Bytes::new()));
                    *res.status_mut() = StatusCode::from_u16(code).unwrap();
                    if let Some(ra) = retry_after {
                        res.headers_mut()
                            .insert(http::header::RETRY_AFTER, ra.parse().unwrap());
                    }
                    if let Some(ep) = served_by {
                        res.extensions_mut().insert(ServedBy(ep.into()));
                    }
                    Ok(res)
                }
                Some(Step::Fail(endpoint)) => {
                    let e: BoxError = "connection refused".into();
                    Err(match endpoint {
                        Some(ep) => Box::new(EndpointError::new(ep.into(), e)) as BoxError,
                        None => e,
                    })
                }
            }
        }
    });
    (svc, log)
}

fn request() -> Request<BufferedBody> {
    let mut req = Request::post("/v1/chat/completions")
        .header("x-priority", "high")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    req.extensions_mut().insert(Tag("kept"));
    req
}

fn layer() -> RetryConfig {
    RetryLayer::builder().no_budget().seed(42)
}

#[tokio::test(start_paused = true)]
async fn replays_body_byte_identical_and_fills_avoid_endpoints() {
    let (svc, log) = scripted(vec![
        Step::Status(503, None, Some("r1")),
        Step::Fail(Some("r2")),
    ]);
    let svc = layer().build().layer(svc);
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let sent = request().body().clone().collect().await.unwrap().to_bytes();
    let log = log.lock().unwrap();
    assert_eq!(log.bodies.len(), 3);
    assert!(log.bodies.iter().all(|b| *b == log.bodies[0]));
    assert_eq!(log.bodies[0], sent);
    assert_eq!(log.avoid[0], Vec::<String>::new());
    assert_eq!(log.avoid[1], vec!["r1"]);
    assert_eq!(log.avoid[2], vec!["r1", "r2"]);
    assert!(log.tags.iter().all(|t| *t == Some(Tag("kept"))));
}

#[tokio::test(start_paused = true)]
async fn retryable_statuses_only() {
    for (code, calls) in [
        (400, 1),
        (401, 1),
        (404, 1),
        (500, 1),
        (200, 1),
        (429, 2),
        (502, 2),
        (503, 2),
        (504, 2),
    ] {
        let (svc, log) = scripted(vec![Step::Status(code, None, None)]);
        let res = layer().build().layer(svc).oneshot(request()).await.unwrap();
        assert_eq!(log.lock().unwrap().at.len(), calls, "status {code}");
        let want = if calls == 1 { code } else { 200 };
        assert_eq!(res.status().as_u16(), want);
    }
}

#[tokio::test(start_paused = true)]
async fn stops_at_max_attempts() {
    let (svc, log) = scripted((0..10).map(|_| Step::Status(503, None, None)).collect());
    let res = layer()
        .max_attempts(4)
        .build()
        .layer(svc)
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(log.lock().unwrap().at.len(), 4);

    let (svc, log) = scripted(vec![Step::Fail(None), Step::Fail(None)]);
    let err = layer()
        .max_attempts(2)
        .build()
        .layer(svc)
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "connection refused");
    assert_eq!(log.lock().unwrap().at.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_within_full_jitter_bounds() {
    let base = Duration::from_millis(100);
    let cap = Duration::from_millis(1000);
    let retry = layer().max_attempts(6).backoff(base, cap).build();
    let ms = Duration::from_millis(1); // tokio timer granularity
    let mut max_gap = [Duration::ZERO; 5];
    let mut min_gap = [Duration::MAX; 5];
    for _ in 0..200 {
        let (svc, log) = scripted((0..5).map(|_| Step::Status(503, None, None)).collect());
        retry.layer(svc).oneshot(request()).await.unwrap();
        let at = log.lock().unwrap().at.clone();
        assert_eq!(at.len(), 6);
        for k in 0..5 {
            let gap = at[k + 1] - at[k];
            let ceiling = backoff_ceiling(base, cap, k as u32 + 1);
            assert!(
                gap <= ceiling + ms,
                "retry {} waited {gap:?} > {ceiling:?}",
                k + 1
            );
            max_gap[k] = max_gap[k].max(gap);
            min_gap[k] = min_gap[k].min(gap);
        }
    }
    // Growth: the waits reach far past the first ceiling as retries go on.
    assert!(max_gap[0] <= base + ms);
    assert!(max_gap[2] > Duration::from_millis(300));
    assert!(max_gap[4] > Duration::from_millis(800));
    // Full jitter: short waits happen at every step.
    assert!(min_gap.iter().all(|g| *g < Duration::from_millis(100)));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_the_cap() {
    let cap = Duration::from_secs(10);
    let retry = layer().backoff(Duration::from_millis(1), cap).build();

    let (svc, log) = scripted(vec![Step::Status(429, Some("3"), None)]);
    retry.layer(svc).oneshot(request()).await.unwrap();
    let at = log.lock().unwrap().at.clone();
    let gap = at[1] - at[0];
    assert!(
        gap >= Duration::from_secs(3) && gap <= Duration::from_millis(3002),
        "{gap:?}"
    );

    let (svc, log) = scripted(vec![Step::Status(503, Some("600"), None)]);
    retry.layer(svc).oneshot(request()).await.unwrap();
    let at = log.lock().unwrap().at.clone();
    let gap = at[1] - at[0];
    assert!(
        gap >= cap && gap <= cap + Duration::from_millis(2),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn budget_stops_a_retry_storm() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let failing = service_fn(move |_req: Request<BufferedBody>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, BoxError>(res)
        }
    });
    // Default budget: 20% of first attempts + 1/s over 10 s (10 retries).
    let svc = RetryLayer::builder()
        .max_attempts(5)
        .seed(1)
        .build()
        .layer(failing);
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(svc.clone().oneshot(request())))
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let n = calls.load(Ordering::SeqCst);
    assert!(n > 1000, "some retries happen: {n}");
    assert!(n <= 1210, "budget caps retries at ~20%: {n}");
}

type Frames =
    futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, BoxError>>>;

#[tokio::test(start_paused = true)]
async fn no_retry_after_streamed_first_byte() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let streaming = service_fn(move |_req: Request<BufferedBody>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"data: tok\n\n"))),
                Err("upstream reset".into()),
            ];
            Ok::<_, BoxError>(Response::new(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
        }
    });
    let svc = layer().build().layer(streaming);
    let res: Response<StreamBody<Frames>> = svc.oneshot(request()).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: tok\n\n");
    assert!(body.frame().await.unwrap().is_err());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the failed stream is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn unreplayable_body_is_sent_once() {
    struct Opaque;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: Request<Opaque>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, BoxError>(res)
        }
    });
    let res = layer()
        .build()
        .layer(svc)
        .oneshot(Request::new(Opaque))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn breaker_open_is_retried_after_its_cool_down() {
    use llmgate_breaker::{BreakerState, CircuitBreakerLayer};
    let breaker = CircuitBreakerLayer::builder()
        .cool_down(Duration::from_secs(2))
        .half_open_successes(1)
        .build();
    let h = breaker.handle();
    h.force_open();
    let (svc, log) = scripted(vec![]);
    let svc = layer()
        .backoff(Duration::from_millis(1), Duration::from_secs(5))
        .build()
        .layer(breaker.layer(svc));
    let start = Instant::now();
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(Instant::now() - start >= Duration::from_secs(2));
    assert_eq!(
        log.lock().unwrap().at.len(),
        1,
        "the refused attempt never reached upstream"
    );
    // The probe's outcome follows its body to the end.
    assert_eq!(h.state(), BreakerState::HalfOpen);
    res.into_body().collect().await.unwrap();
    assert_eq!(h.state(), BreakerState::Closed);
}

#[test]
fn metrics_count_attempts_retries_and_exhaustion() {
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
            // Budget: floor only (1/s × 1 s = 1 retry), no percentage.
            let retry = RetryLayer::builder()
                .budget_percent(0.0)
                .budget_min_per_sec(1)
                .budget_ttl(Duration::from_secs(1))
                .seed(3)
                .build();
            let (svc, _log) = scripted((0..10).map(|_| Step::Status(503, None, None)).collect());
            let svc = retry.layer(svc);
            svc.clone().oneshot(request()).await.unwrap(); // 2 attempts, then exhausted
            svc.clone().oneshot(request()).await.unwrap(); // exhausted at once
        });
    });
    let mut got = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            got.insert(key.key().name().to_string(), n);
        }
    }
    assert_eq!(got.get("llmgate_retry_attempts_total"), Some(&3));
    assert_eq!(got.get("llmgate_retry_retries_total"), Some(&1));
    assert_eq!(got.get("llmgate_retry_budget_exhausted_total"), Some(&2));
}
