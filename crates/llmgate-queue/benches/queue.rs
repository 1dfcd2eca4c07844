//! Enqueue + dequeue cost of the priority queue with 100,000 requests
//! waiting, through the public API (service `call`, worker release).
//!
//! Run: `cargo bench -p llmgate-queue --bench queue -- --warm-up-time 1 --measurement-time 3`
//!
//! Figures measured on a shared, busy 2-core dev machine (medians; noisy):
//! - `enqueue_release_at_100k` (one `call` + one worker release + awaiting
//!   the released future, 100,000 waiting over 1,000 clients, includes a
//!   runtime `block_on` and task switch): round robin 8.6 µs, FIFO 5.4 µs,
//!   DRR 8.8 µs.
//! - `enqueue_100k`: 158 ms per 100,000 `call`s (about 1.6 µs each).
//! - `release_100k`: 222 ms to release and complete 100,000 (about 2.2 µs
//!   each).

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llmgate_core::{BoxError, ClientKey, Priority};
use llmgate_queue::{Fairness, PriorityOf, PriorityQueue, PriorityQueueLayer, ResponseFuture};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Layer, Service};

const DEPTH: usize = 100_000;
const CLIENTS: usize = 1_000;

struct Job {
    id: u64,
    priority: Priority,
    client: ClientKey,
}

impl PriorityOf for Job {
    fn priority(&self) -> Priority {
        self.priority
    }
    fn client_key(&self) -> Option<ClientKey> {
        Some(self.client.clone())
    }
}

#[derive(Default)]
struct GateState {
    permits: usize,
    waker: Option<Waker>,
    calls: u64,
    last: u64,
}

/// Ready while it holds permits; remembers the last id called.
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<GateState>>);

impl Gate {
    fn allow(&self, n: usize) {
        let w = {
            let mut st = self.0.lock();
            st.permits += n;
            st.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
    fn calls(&self) -> u64 {
        self.0.lock().calls
    }
}

impl Service<Job> for Gate {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut st = self.0.lock();
        if st.permits > 0 {
            Poll::Ready(Ok(()))
        } else {
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
    fn call(&mut self, job: Job) -> Self::Future {
        let mut st = self.0.lock();
        st.permits -= 1;
        st.calls += 1;
        st.last = job.id;
        ready(Ok(job.id))
    }
}

struct Bench {
    gate: Gate,
    q: PriorityQueue<Gate, Job>,
    clients: Vec<ClientKey>,
    rng: SmallRng,
    next: u64,
}

impl Bench {
    fn new(fairness: Fairness) -> Bench {
        let gate = Gate::default();
        let q = PriorityQueueLayer::builder()
            .capacity(DEPTH * 2)
            .queue_timeout(Duration::from_secs(24 * 3600))
            .fairness(fairness)
            .build::<Job>()
            .layer(gate.clone());
        Bench {
            gate,
            q,
            clients: (0..CLIENTS)
                .map(|i| ClientKey::from_id(&format!("client-{i}")))
                .collect(),
            rng: SmallRng::seed_from_u64(7),
            next: 0,
        }
    }

    fn job(&mut self) -> Job {
        let id = self.next;
        self.next += 1;
        Job {
            id,
            priority: Priority::ALL[self.rng.random_range(1..5)],
            client: self.clients[self.rng.random_range(0..CLIENTS)].clone(),
        }
    }
}

type Fut = ResponseFuture<Ready<Result<u64, BoxError>>>;

fn steady_state(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("queue");
    for (name, fairness) in [
        ("round_robin", Fairness::RoundRobin),
        ("fifo", Fairness::Fifo),
        ("drr", Fairness::DeficitRoundRobin { quantum: 1 }),
    ] {
        // One enqueue plus one release while 100,000 requests wait.
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("enqueue_release_at_100k/{name}"), |b| {
            let _guard = rt.enter();
            let mut bench = Bench::new(fairness);
            let mut futs: HashMap<u64, Fut> = HashMap::with_capacity(DEPTH * 2);
            for _ in 0..DEPTH {
                let job = bench.job();
                let id = job.id;
                futs.insert(id, bench.q.call(job));
            }
            b.iter(|| {
                rt.block_on(async {
                    let job = bench.job();
                    let id = job.id;
                    futs.insert(id, bench.q.call(job));
                    let before = bench.gate.calls();
                    bench.gate.allow(1);
                    for _ in 0..1_000 {
                        tokio::task::yield_now().await;
                        if bench.gate.calls() > before {
                            break;
                        }
                    }
                    let last = bench.gate.0.lock().last;
                    let done = futs.remove(&last).expect("released a queued request");
                    done.await.unwrap();
                })
            });
            assert_eq!(bench.q.handle().total_depth(), DEPTH);
        });
    }

    // Bulk: enqueue 100,000, then release all of them.
    group.sample_size(10);
    group.throughput(Throughput::Elements(DEPTH as u64));
    group.bench_function("enqueue_100k", |b| {
        let _guard = rt.enter();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut bench = Bench::new(Fairness::RoundRobin);
                let jobs: Vec<Job> = (0..DEPTH).map(|_| bench.job()).collect();
                let start = Instant::now();
                let futs: Vec<Fut> = jobs.into_iter().map(|j| bench.q.call(j)).collect();
                total += start.elapsed();
                drop(futs);
            }
            total
        })
    });
    group.bench_function("release_100k", |b| {
        let _guard = rt.enter();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut bench = Bench::new(Fairness::RoundRobin);
                let futs: Vec<Fut> = (0..DEPTH)
                    .map(|_| {
                        let j = bench.job();
                        bench.q.call(j)
                    })
                    .collect();
                let start = Instant::now();
                rt.block_on(async {
                    bench.gate.allow(DEPTH);
                    for f in futs {
                        f.await.unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, steady_state);
criterion_main!(benches);
