//! Overhead per call of `CircuitBreaker` against a no-op service.
//!
//! `cargo bench -p llmgate-breaker --bench breaker_overhead`

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use llmgate_breaker::{CircuitBreakerLayer, ErrorClassifier};
use tower::{service_fn, Layer, Service, ServiceExt};

fn noop_http() -> impl Service<
    Request<()>,
    Response = Response<http_body_util::Empty<bytes::Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|_req: Request<()>| async { Ok(Response::new(http_body_util::Empty::new())) })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("breaker_overhead");

    g.bench_function("bare_noop", |b| {
        let mut svc = service_fn(|()| async { Ok::<_, Infallible>(()) });
        b.to_async(&rt).iter(|| {
            let fut = svc.call(());
            async move { fut.await.unwrap() }
        })
    });
    g.bench_function("breaker_noop", |b| {
        let mut svc = CircuitBreakerLayer::new()
            .with_classifier(ErrorClassifier)
            .layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
        b.to_async(&rt).iter(|| {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).now_or_never_ready();
            let fut = svc.call(());
            async move { fut.await.unwrap() }
        })
    });
    g.bench_function("bare_http_oneshot", |b| {
        let svc = noop_http();
        b.to_async(&rt)
            .iter(|| svc.clone().oneshot(Request::new(())))
    });
    g.bench_function("breaker_http_oneshot", |b| {
        let svc = CircuitBreakerLayer::new().layer(noop_http());
        b.to_async(&rt).iter(|| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(Request::new(())).await.unwrap();
                // The outcome follows the body; an empty body records it at once.
                drop(res);
            }
        })
    });
    g.finish();
}

trait NowOrNever {
    fn now_or_never_ready(self);
}

impl<F: std::future::Future<Output = Result<(), tower::BoxError>>> NowOrNever for F {
    fn now_or_never_ready(self) {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(self);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r.expect("breaker stays closed"),
            std::task::Poll::Pending => panic!("no-op service is always ready"),
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
