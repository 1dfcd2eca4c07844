//! Per-check cost and memory of the keyed limiter, and per-call overhead of
//! `RateLimit` against a no-op service.
//!
//! Run: `cargo bench -p llmgate-ratelimit --bench ratelimit`
//! (memory figures are printed before the criterion output).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use llmgate_core::{ClientKey, EndpointKind, RequestMeta};
use llmgate_ratelimit::{Limit, Limiter, RateLimitLayer, Tier};
use tower::{service_fn, BoxError, Layer, Service};

const KEYS: usize = 1_000_000;

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn tier() -> Tier {
    Tier::new()
        .requests(Limit::per_minute(1_000_000_000))
        .tokens(Limit::per_minute(u64::MAX / 1_000_000))
}

fn key(i: usize) -> ClientKey {
    ClientKey::from_id(&format!("user-{i:07}"))
}

/// Polls a future that is ready at once (the no-op service's).
fn poll_now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("no-op service pended"),
    }
}

fn million_keys(c: &mut Criterion) {
    let limiter = Limiter::<ClientKey>::new(tier());
    let before = rss_bytes();
    for i in 0..KEYS {
        limiter.check(&key(i), 100).expect("limits are huge");
    }
    let after = rss_bytes();
    assert_eq!(limiter.live_keys(), KEYS);
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "memory: {} keys use {:.1} MiB RSS, {:.0} bytes per key (key text of 13 bytes included)",
            KEYS,
            (a.saturating_sub(b)) as f64 / (1 << 20) as f64,
            a.saturating_sub(b) as f64 / KEYS as f64
        );
    }
    let keys: Vec<ClientKey> = (0..KEYS).map(key).collect();

    let mut group = c.benchmark_group("limiter");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let mut i = 0usize;
    group.bench_function("check_1M_keys_existing", |b| {
        b.iter(|| {
            // A stride through the keys so consecutive checks hit other
            // shards and cache lines.
            i = (i + 7_919) % KEYS;
            black_box(limiter.check(&keys[i], 100).is_ok())
        })
    });
    let hot = key(1);
    group.bench_function("check_single_hot_key", |b| {
        b.iter(|| black_box(limiter.check(&hot, 100).is_ok()))
    });
    let sweep_limiter = Limiter::<ClientKey>::new(tier());
    for k in keys.iter().take(100_000) {
        sweep_limiter.check(k, 1).unwrap();
    }
    group.sample_size(10);
    group.bench_function("sweep_100k_live_keys", |b| {
        b.iter(|| black_box(sweep_limiter.sweep()))
    });
    group.finish();
}

fn layer_overhead(c: &mut Criterion) {
    let mut meta = RequestMeta::new(EndpointKind::Chat).with_client(ClientKey::from_id("bench"));
    meta.prompt_tokens = 100;
    meta.max_tokens = Some(100);
    let make_req = move || {
        let mut req = Request::new(());
        req.extensions_mut().insert(meta.clone());
        req
    };
    let noop = service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(Response::new(())) });

    let mut group = c.benchmark_group("layer");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    let mut bare = noop;
    group.bench_function("noop_service", |b| {
        b.iter_batched(
            &make_req,
            |req| poll_now(bare.call(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let layer = RateLimitLayer::builder().defaults(tier()).build();
    let mut limited = layer.layer(noop);
    group.bench_function("ratelimit_over_noop", |b| {
        b.iter_batched(
            &make_req,
            |req| poll_now(limited.call(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // Rejections: the limiter answers without calling the inner service.
    let tight = RateLimitLayer::builder()
        .requests(Limit::new(1, Duration::from_secs(86_400)))
        .build();
    let mut refusing = tight.layer(noop);
    let _ = poll_now(refusing.call(make_req()));
    group.bench_function("ratelimit_rejecting", |b| {
        b.iter_batched(
            &make_req,
            |req| poll_now(refusing.call(req)).unwrap_err(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, million_keys, layer_overhead);
criterion_main!(benches);
