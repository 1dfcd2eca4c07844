//! Overhead per call of `Retry` against a no-op service (no retry taken:
//! the cost of the policy clone, the request replay copy and the wrapper).
//!
//! `cargo bench -p llmgate-retry --bench retry_overhead`

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use llmgate_core::BufferedBody;
use llmgate_retry::RetryLayer;
use tower::{service_fn, Layer, ServiceExt};

fn request() -> Request<BufferedBody> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(BufferedBody::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#,
        )))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let noop =
        service_fn(|_req: Request<BufferedBody>| async { Ok::<_, Infallible>(Response::new(())) });
    let mut g = c.benchmark_group("retry_overhead");
    g.bench_function("bare_http_oneshot", |b| {
        b.to_async(&rt).iter(|| noop.oneshot(request()))
    });
    let svc = RetryLayer::new().layer(noop);
    g.bench_function("retry_http_oneshot", |b| {
        b.to_async(&rt).iter(|| svc.clone().oneshot(request()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
