//! Pick cost per strategy against fleet size (4, 64, 1,024 endpoints).
//!
//! `cargo bench -p llmgate-balance --bench pick`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use llmgate_balance::strategy::{Candidate, StrategyKind};
use llmgate_balance::LoadView;
use llmgate_core::{EndpointKind, RequestMeta};

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [4usize, 64, 1024] {
        let ids: Vec<String> = (0..n).map(|i| format!("replica-{i}")).collect();
        let views: Vec<LoadView> = (0..n)
            .map(|i| LoadView {
                in_flight: (i * 7919) % 50,
                max_concurrent: 256,
                weight: 1 + (i % 3) as u32,
                ttft_s: 0.05 + (i % 5) as f64 * 0.01,
                pending_prefill_tokens: ((i * 7919) % 4000) as u64,
                prefill_pace_s: 20e-6 * (1 + i % 3) as f64,
                ..Default::default()
            })
            .collect();
        let cands: Vec<Candidate<'_>> = ids
            .iter()
            .zip(&views)
            .map(|(id, load)| Candidate { id, load })
            .collect();
        let mut meta = RequestMeta::new(EndpointKind::Chat);
        meta.session = Some(Arc::from("session-42"));
        meta.prefix_hashes = Arc::from((0..32u64).collect::<Vec<_>>());
        for kind in StrategyKind::ALL {
            let mut s = kind.build(7);
            // Warm learning strategies so the measured pick finds a match.
            let first = s.pick(Some(&meta), &cands);
            s.routed(Some(&meta), cands[first].id);
            group.bench_with_input(BenchmarkId::new(kind.as_str(), n), &n, |b, _| {
                b.iter(|| black_box(s.pick(Some(black_box(&meta)), black_box(&cands))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
