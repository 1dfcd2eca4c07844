//! The HTTP default (`RequestMeta`), error rendering, metrics, and a queue
//! built outside a runtime.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use llmgate_core::{error_response, BoxError, BufferedBody, ClientKey, EndpointKind, Priority};
use llmgate_core::{find_in_chain, RequestMeta};
use llmgate_queue::{PriorityQueue, PriorityQueueLayer, QueueError};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::{settle, Gate, Job};
use tower::{service_fn, Layer, Service, ServiceBuilder};

fn http_req(priority: Priority, client: &str) -> Request<BufferedBody> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
    req.extensions_mut().insert(
        RequestMeta::new(EndpointKind::Chat)
            .with_priority(priority)
            .with_client(ClientKey::from_id(client)),
    );
    req
}

#[tokio::test(start_paused = true)]
async fn http_requests_queue_by_request_meta_and_errors_render() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let inner = service_fn(move |req: Request<BufferedBody>| {
        let g = g.clone();
        async move {
            let meta = req.extensions().get::<RequestMeta>().unwrap();
            let p = meta.priority;
            g.acquire().await.unwrap().forget();
            Ok::<_, BoxError>(Response::new(p.to_string()))
        }
    });
    // Inner readiness: at most one request in flight.
    let inner = ServiceBuilder::new().concurrency_limit(1).service(inner);
    let layer = PriorityQueueLayer::builder().capacity(2).build();
    let admin = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(inner);

    let first = svc.call(http_req(Priority::Low, "x")); // takes the one slot
    settle().await;
    let low = svc.call(http_req(Priority::Low, "x"));
    let high = svc.call(http_req(Priority::High, "y"));
    assert_eq!(admin.total_depth(), 2);
    let refused = svc.call(http_req(Priority::Batch, "z"));
    let err = refused.now_or_never().unwrap().unwrap_err();
    let qe = find_in_chain::<QueueError>(&*err).expect("a queue error");
    let res = error_response(qe);
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "queue_full");

    gate.add_permits(3);
    assert_eq!(first.await.unwrap().into_body(), "low");
    assert_eq!(high.await.unwrap().into_body(), "high");
    assert_eq!(low.await.unwrap().into_body(), "low");
    assert_eq!(admin.snapshot().served, 3);
}

#[test]
fn built_outside_a_runtime_spawns_on_first_call() {
    let gate = Gate::new();
    let mut q: PriorityQueue<Gate, Job> = PriorityQueueLayer::builder()
        .build::<Job>()
        .layer(gate.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        gate.allow(1);
        assert_eq!(q.call(Job::new(7, Priority::Normal)).await.unwrap(), 7);
    });
}

#[test]
fn metrics_are_recorded_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let gate = Gate::new();
        let mut q = PriorityQueueLayer::builder()
            .capacity(2)
            .queue_timeout(Duration::from_secs(1))
            .build::<Job>()
            .layer(gate.clone());
        let f1 = q.call(Job::new(1, Priority::Normal));
        let f2 = q.call(Job::new(2, Priority::Normal));
        let f3 = q.call(Job::new(3, Priority::High)); // sheds 2
        assert!(f2.await.is_err());
        let f4 = q.call(Job::new(4, Priority::Low)); // full
        assert!(f4.await.is_err());
        drop(f1); // cancelled
        let f5 = q.call(Job::new(5, Priority::Normal));
        tokio::time::advance(Duration::from_millis(500)).await;
        gate.allow(1);
        assert_eq!(f3.await.unwrap(), 3);
        assert!(f5.await.is_err()); // times out at 1 s
    });

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].0, "priority");
        assert!(Priority::ALL.iter().any(|p| p.as_str() == labels[0].1));
        seen.insert((key.key().name().to_string(), labels[0].1.clone()), value);
    }
    let counter = |name: &str, p: &str| match seen.get(&(name.to_string(), p.to_string())) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}{{{p}}}: {other:?}"),
    };
    assert_eq!(counter("llmgate_queue_shed_total", "normal"), 1);
    assert_eq!(counter("llmgate_queue_rejected_total", "low"), 1);
    assert_eq!(counter("llmgate_queue_cancelled_total", "normal"), 1);
    assert_eq!(counter("llmgate_queue_timeouts_total", "normal"), 1);
    assert_eq!(counter("llmgate_queue_served_total", "high"), 1);
    match &seen[&("llmgate_queue_wait_seconds".to_string(), "high".to_string())] {
        DebugValue::Histogram(v) => {
            assert_eq!(v.len(), 1);
            assert!((v[0].0 - 0.5).abs() < 1e-6, "{v:?}");
        }
        other => panic!("{other:?}"),
    }
    for p in Priority::ALL {
        match &seen[&("llmgate_queue_depth".to_string(), p.as_str().to_string())] {
            DebugValue::Gauge(g) => assert_eq!(g.0, 0.0, "{p}"),
            other => panic!("{other:?}"),
        }
    }
}
