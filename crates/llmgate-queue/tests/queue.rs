//! Behaviour of the priority queue on tokio's paused clock, with a mock
//! inner service whose readiness the test controls.

mod support;

use std::time::Duration;

use futures_util::FutureExt;
use llmgate_core::{ErrorResponse, Priority};
use llmgate_queue::{Fairness, PriorityQueue, PriorityQueueLayer, QueueError};
use support::{queue_err, settle, Gate, Job};
use tokio::time::Instant;
use tower::{Layer, Service};

use Priority::*;

fn layer() -> llmgate_queue::PriorityQueueBuilder {
    PriorityQueueLayer::builder().queue_timeout(Duration::from_secs(600))
}

fn queue(b: llmgate_queue::PriorityQueueBuilder, gate: &Gate) -> PriorityQueue<Gate, Job> {
    b.build::<Job>().layer(gate.clone())
}

#[tokio::test(start_paused = true)]
async fn priority_order_under_saturation() {
    let gate = Gate::new();
    let mut q = queue(layer(), &gate);
    let prios = [
        Batch, Low, Normal, High, Critical, Normal, Batch, High, Low, Critical,
    ];
    let futs: Vec<_> = prios
        .iter()
        .enumerate()
        .map(|(i, p)| q.call(Job::new(i as u32, *p)))
        .collect();
    settle().await;
    assert!(gate.log().is_empty());
    assert_eq!(q.handle().total_depth(), 10);
    assert_eq!(q.handle().depth(Normal), 2);
    gate.allow(10);
    for f in futs {
        f.await.unwrap();
    }
    // Most urgent first; arrival order inside one priority.
    assert_eq!(gate.log(), vec![4, 9, 3, 7, 2, 5, 1, 8, 0, 6]);
    assert_eq!(q.handle().total_depth(), 0);
    assert_eq!(q.handle().snapshot().served, 10);
}

#[tokio::test(start_paused = true)]
async fn fifo_within_a_priority_and_one_release_per_readiness() {
    let gate = Gate::new();
    let mut q = queue(layer(), &gate);
    let mut futs: Vec<_> = (0..6).map(|i| q.call(Job::new(i, Normal))).collect();
    gate.allow(2);
    settle().await;
    assert_eq!(gate.log(), vec![0, 1]);
    assert_eq!(q.handle().total_depth(), 4);
    gate.allow(4);
    for f in futs.drain(..) {
        f.await.unwrap();
    }
    assert_eq!(gate.log(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn displacement_when_full() {
    let gate = Gate::new();
    let mut q = queue(
        layer().capacity(3).retry_after(Duration::from_secs(2)),
        &gate,
    );
    let f1 = q.call(Job::new(1, Low));
    let f2 = q.call(Job::new(2, Low));
    let mut f3 = q.call(Job::new(3, Low));
    // A more urgent arrival displaces the newest of the least urgent level.
    let f4 = q.call(Job::new(4, High));
    let err = (&mut f3).now_or_never().expect("shed at once").unwrap_err();
    let shed = queue_err(&err);
    assert!(matches!(shed, QueueError::Shed { .. }), "{shed:?}");
    assert_eq!(shed.status().as_u16(), 503);
    assert_eq!(shed.headers()["retry-after"], "2");
    // Not more urgent than the least urgent queued: refused at once.
    for p in [Low, Batch] {
        let err = q.call(Job::new(5, p)).now_or_never().unwrap().unwrap_err();
        let full = queue_err(&err);
        assert!(matches!(full, QueueError::Full { .. }), "{full:?}");
        assert_eq!(full.status().as_u16(), 503);
        assert_eq!(full.code(), "queue_full");
        assert_eq!(full.headers()["retry-after"], "2");
    }
    gate.allow(3);
    assert_eq!(f4.await.unwrap(), 4);
    f1.await.unwrap();
    f2.await.unwrap();
    assert_eq!(gate.log(), vec![4, 1, 2]);
    let s = q.handle().snapshot();
    assert_eq!((s.accepted, s.served, s.shed, s.full), (4, 3, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn per_priority_caps() {
    let gate = Gate::new();
    let mut q = queue(layer().priority_capacity(Batch, 2), &gate);
    let b1 = q.call(Job::new(1, Batch));
    let b2 = q.call(Job::new(2, Batch));
    let err = q
        .call(Job::new(3, Batch))
        .now_or_never()
        .unwrap()
        .unwrap_err();
    assert!(matches!(queue_err(&err), QueueError::PriorityFull { .. }));
    assert_eq!(queue_err(&err).status().as_u16(), 503);
    // Other priorities are not limited by Batch's cap.
    let n = q.call(Job::new(4, Normal));
    gate.allow(3);
    n.await.unwrap();
    b1.await.unwrap();
    b2.await.unwrap();
    assert_eq!(gate.log(), vec![4, 1, 2]);
    assert_eq!(q.handle().snapshot().full, 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_expiry_with_the_right_error() {
    let gate = Gate::new();
    let mut q = queue(
        PriorityQueueLayer::builder().queue_timeout(Duration::from_secs(5)),
        &gate,
    );
    let start = Instant::now();
    let own = q.call(Job::new(1, Normal).deadline(start + Duration::from_secs(2)));
    let default = q.call(Job::new(2, Normal));
    let err = own.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let e = queue_err(&err);
    assert!(
        matches!(e, QueueError::Timeout { waited } if *waited == Duration::from_secs(2)),
        "{e:?}"
    );
    assert_eq!(e.status().as_u16(), 504);
    assert_eq!(e.code(), "queue_timeout");
    assert_eq!(q.handle().total_depth(), 1);
    let err = default.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(matches!(queue_err(&err), QueueError::Timeout { .. }));
    // Already past its deadline on arrival: answered at once.
    let late = q.call(Job::new(3, High).deadline(Instant::now()));
    assert!(matches!(
        queue_err(&late.now_or_never().unwrap().unwrap_err()),
        QueueError::Timeout { .. }
    ));
    assert!(gate.log().is_empty());
    assert_eq!(q.handle().snapshot().timed_out, 3);
}

#[tokio::test(start_paused = true)]
async fn cancellation_frees_the_slot_at_once() {
    let gate = Gate::new();
    let mut q = queue(layer().capacity(2), &gate);
    let f1 = q.call(Job::new(1, Normal));
    let f2 = q.call(Job::new(2, Normal));
    drop(f1);
    // No yield: the slot is free as soon as the future is gone.
    assert_eq!(q.handle().total_depth(), 1);
    assert_eq!(q.handle().snapshot().cancelled, 1);
    let f3 = q.call(Job::new(3, Normal));
    gate.allow(5);
    f2.await.unwrap();
    f3.await.unwrap();
    assert_eq!(gate.log(), vec![2, 3]);
    let s = q.handle().snapshot();
    assert_eq!((s.full, s.served, s.cancelled), (0, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn two_client_fairness() {
    let gate = Gate::new();
    let mut q = queue(layer().capacity(2000), &gate);
    let burst: Vec<_> = (0..1000)
        .map(|i| q.call(Job::new(i, Normal).client("a")))
        .collect();
    let single = q.call(Job::new(5000, Normal).client("b"));
    gate.allow(2);
    settle().await;
    assert!(gate.log().contains(&5000), "{:?}", gate.log());
    single.await.unwrap();
    gate.allow(1000);
    for f in burst {
        f.await.unwrap();
    }
    // A's requests stay in their own order.
    let a: Vec<_> = gate.log().into_iter().filter(|i| *i != 5000).collect();
    assert_eq!(a, (0..1000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn fifo_mode_serves_the_burst_first() {
    let gate = Gate::new();
    let mut q = queue(layer().fairness(Fairness::Fifo), &gate);
    let futs: Vec<_> = (0..5)
        .map(|i| q.call(Job::new(i, Normal).client("a")))
        .collect();
    let b = q.call(Job::new(9, Normal).client("b"));
    gate.allow(6);
    for f in futs {
        f.await.unwrap();
    }
    b.await.unwrap();
    assert_eq!(gate.log(), vec![0, 1, 2, 3, 4, 9]);
}

#[tokio::test(start_paused = true)]
async fn aging_when_enabled() {
    let gate = Gate::new();
    let aged = layer().aging(Duration::from_secs(10));
    let mut q = queue(aged, &gate);
    let batch = q.call(Job::new(1, Batch));
    let highs: Vec<_> = (2..5).map(|i| q.call(Job::new(i, High))).collect();
    // Batch -> Low (10 s) -> Normal (20 s) -> High (30 s): older than the
    // High requests, it now goes first; a Critical arrival still wins.
    tokio::time::advance(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(q.handle().depth(High), 4);
    assert_eq!(q.handle().depth(Batch), 0);
    let crit = q.call(Job::new(9, Critical));
    gate.allow(5);
    batch.await.unwrap();
    crit.await.unwrap();
    for f in highs {
        f.await.unwrap();
    }
    assert_eq!(gate.log(), vec![9, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn no_aging_by_default() {
    let gate = Gate::new();
    let mut q = queue(layer(), &gate);
    let batch = q.call(Job::new(1, Batch));
    let highs: Vec<_> = (2..5).map(|i| q.call(Job::new(i, High))).collect();
    tokio::time::advance(Duration::from_secs(300)).await;
    settle().await;
    assert_eq!(q.handle().depth(Batch), 1);
    gate.allow(4);
    for f in highs {
        f.await.unwrap();
    }
    batch.await.unwrap();
    assert_eq!(gate.log(), vec![2, 3, 4, 1]);
}

#[tokio::test(start_paused = true)]
async fn inner_poll_ready_error_fails_queued_requests() {
    let gate = Gate::new();
    let mut q = queue(layer(), &gate);
    let futs: Vec<_> = (0..3).map(|i| q.call(Job::new(i, Normal))).collect();
    gate.fail("replica pool gone");
    for f in futs {
        let err = f.await.unwrap_err();
        let e = queue_err(&err);
        assert!(matches!(e, QueueError::InnerFailed { .. }), "{e:?}");
        assert!(e.to_string().contains("replica pool gone"), "{e}");
        assert_eq!(e.status().as_u16(), 503);
    }
    // Later requests fail the same way at once instead of hanging.
    let err = q
        .call(Job::new(7, High))
        .now_or_never()
        .unwrap()
        .unwrap_err();
    assert!(matches!(queue_err(&err), QueueError::InnerFailed { .. }));
    assert_eq!(q.handle().snapshot().failed, 4);
}

#[tokio::test(start_paused = true)]
async fn dropped_worker_closes_the_queue() {
    let gate = Gate::new();
    let layer = layer().build::<Job>();
    let (mut q, worker) = PriorityQueue::pair(gate.clone(), &layer);
    let f = q.call(Job::new(1, Normal));
    drop(worker);
    let err = f.await.unwrap_err();
    assert!(matches!(queue_err(&err), QueueError::Closed));
    let err = q.call(Job::new(2, Normal)).await.unwrap_err();
    assert!(matches!(queue_err(&err), QueueError::Closed));
}

#[tokio::test(start_paused = true)]
async fn the_worker_drains_then_exits_once_every_queue_clone_is_gone() {
    let gate = Gate::new();
    let layer = layer().build::<Job>();
    let (mut q, worker) = PriorityQueue::pair(gate.clone(), &layer);
    let worker = tokio::spawn(worker);
    let clones: Vec<_> = (0..3).map(|_| q.clone()).collect();
    let waiting = q.call(Job::new(1, Normal));
    drop(clones);
    settle().await;
    assert!(!worker.is_finished(), "a handle is still alive");
    drop(q);
    settle().await;
    assert!(!worker.is_finished(), "a request is still queued");
    gate.allow(1);
    assert_eq!(waiting.await.unwrap(), 1);
    settle().await;
    assert!(worker.is_finished(), "no handle and nothing queued");
}

#[tokio::test(start_paused = true)]
async fn an_empty_queue_calls_a_ready_inner_service_directly_and_never_lets_one_pass() {
    let gate = Gate::new();
    let layer = layer().build::<Job>();
    let admin = layer.handle();
    let (mut q, worker) = PriorityQueue::pair(gate.clone(), &layer);
    gate.allow(1);
    // The worker is not running, so only the direct path can serve this.
    let direct = q.call(Job::new(1, Normal)).now_or_never();
    assert_eq!(direct.expect("answered without the worker").unwrap(), 1);
    assert_eq!(admin.snapshot().served, 1);
    // Not ready: the request waits for the worker.
    let second = q.call(Job::new(2, Normal));
    assert_eq!(admin.total_depth(), 1);
    // Ready again, but a request waits: a later one queues behind it.
    gate.allow(1);
    let third = q.call(Job::new(3, Normal));
    assert_eq!(admin.total_depth(), 2);
    assert_eq!(gate.log(), vec![1]);
    tokio::spawn(worker);
    gate.allow(1);
    assert_eq!(second.await.unwrap(), 2);
    assert_eq!(third.await.unwrap(), 3);
    assert_eq!(gate.log(), vec![1, 2, 3]);
    assert_eq!(admin.snapshot().served, 3);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_queue_and_the_layer_handle() {
    let gate = Gate::new();
    let layer = layer().build::<Job>();
    let admin = layer.handle();
    let mut q1 = layer.layer(gate.clone());
    let mut q2 = q1.clone();
    let a = q1.call(Job::new(1, Low));
    let b = q2.call(Job::new(2, High));
    assert_eq!(admin.total_depth(), 2);
    drop(q1);
    gate.allow(2);
    b.await.unwrap();
    a.await.unwrap();
    assert_eq!(gate.log(), vec![2, 1]);
    assert_eq!(admin.snapshot().served, 2);
}

/// Every request ends in exactly one outcome and the counters add up,
/// under random arrivals, cancellations, readiness changes and time.
#[tokio::test(start_paused = true)]
async fn randomized_no_lost_request() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    let mut totals = [0u64; 5];
    for seed in 0..24u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let gate = Gate::new();
        let mut b = PriorityQueueLayer::builder()
            .capacity(rng.random_range(1..24))
            .queue_timeout(Duration::from_millis(rng.random_range(5..200)));
        if rng.random_bool(0.5) {
            b = b.priority_capacity(Batch, rng.random_range(0..5));
        }
        if rng.random_bool(0.5) {
            b = b.aging(Duration::from_millis(rng.random_range(1..50)));
        }
        b = b.fairness(match rng.random_range(0..3) {
            0 => Fairness::Fifo,
            1 => Fairness::RoundRobin,
            _ => Fairness::DeficitRoundRobin { quantum: 3 },
        });
        let mut q = queue(b, &gate);
        let clients = ["a", "b", "c"];

        let mut pending = HashMap::new();
        let mut outcome: HashMap<u32, &'static str> = HashMap::new();
        let mut dropped = Vec::new();
        let mut next = 0u32;
        for _ in 0..400 {
            match rng.random_range(0..10) {
                0..=4 => {
                    let mut job = Job::new(next, Priority::ALL[rng.random_range(0..5)])
                        .client(clients[rng.random_range(0..3)]);
                    job.cost = rng.random_range(1..6);
                    if rng.random_bool(0.3) {
                        job = job.deadline(
                            Instant::now() + Duration::from_millis(rng.random_range(0..100)),
                        );
                    }
                    pending.insert(next, q.call(job));
                    next += 1;
                }
                5 => {
                    if let Some(&id) = pending.keys().next() {
                        pending.remove(&id);
                        dropped.push(id);
                    }
                }
                6 | 7 => gate.allow(rng.random_range(0..4)),
                _ => tokio::time::advance(Duration::from_millis(rng.random_range(0..30))).await,
            }
            settle().await;
            let ids: Vec<u32> = pending.keys().copied().collect();
            for id in ids {
                let f = pending.get_mut(&id).unwrap();
                if let Some(res) = f.now_or_never() {
                    pending.remove(&id);
                    let o = match res {
                        Ok(v) => {
                            assert_eq!(v, id);
                            "served"
                        }
                        Err(e) => match queue_err(&e) {
                            QueueError::Shed { .. } => "shed",
                            QueueError::Full { .. } | QueueError::PriorityFull { .. } => "full",
                            QueueError::Timeout { .. } => "timed_out",
                            other => panic!("seed {seed}: unexpected {other:?}"),
                        },
                    };
                    assert!(outcome.insert(id, o).is_none());
                }
            }
        }
        // Drain: open the gate and let every deadline pass; nobody hangs.
        gate.allow(10_000);
        for (id, f) in pending.drain() {
            let res = tokio::time::timeout(Duration::from_secs(3600), f)
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: request {id} never answered"));
            let o = match res {
                Ok(_) => "served",
                Err(e) => match queue_err(&e) {
                    QueueError::Timeout { .. } => "timed_out",
                    QueueError::Shed { .. } => "shed",
                    other => panic!("seed {seed}: unexpected {other:?}"),
                },
            };
            outcome.insert(id, o);
        }
        let log = gate.log();
        let mut seen = std::collections::HashSet::new();
        for id in &log {
            assert!(seen.insert(*id), "seed {seed}: {id} released twice");
        }
        for id in dropped {
            // A dropped future was either cancelled in the queue, or had
            // been released already (then the worker counted it served).
            let o = if seen.contains(&id) {
                "served"
            } else {
                "cancelled"
            };
            assert!(outcome.insert(id, o).is_none());
        }
        assert_eq!(outcome.len(), next as usize, "seed {seed}: lost requests");
        let count = |k: &str| outcome.values().filter(|o| **o == k).count() as u64;
        let s = q.handle().snapshot();
        assert_eq!(s.total_depth(), 0, "seed {seed}");
        assert_eq!(s.served, log.len() as u64, "seed {seed}");
        assert_eq!(s.served, count("served"), "seed {seed}");
        assert_eq!(s.shed, count("shed"), "seed {seed}");
        assert_eq!(s.full, count("full"), "seed {seed}");
        assert_eq!(s.timed_out, count("timed_out"), "seed {seed}");
        assert_eq!(s.cancelled, count("cancelled"), "seed {seed}");
        assert_eq!(s.failed, 0);
        assert_eq!(s.accepted + s.full, u64::from(next), "seed {seed}: {s:?}");
        assert_eq!(
            s.accepted,
            s.served + s.shed + s.timed_out + s.cancelled,
            "seed {seed}"
        );
        for (t, v) in totals
            .iter_mut()
            .zip([s.served, s.shed, s.full, s.timed_out, s.cancelled])
        {
            *t += v;
        }
        // Every served request was really released by the inner service.
        for id in &log {
            assert_eq!(outcome[id], "served", "seed {seed}: {id}");
        }
    }
    // The schedule exercised every outcome.
    assert!(totals.iter().all(|t| *t > 0), "{totals:?}");
}

#[test]
fn service_and_future_are_send_and_sync_enough_for_boxing() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<PriorityQueue<Gate, Job>>();
    send_sync::<PriorityQueueLayer<Job>>();
    send::<<PriorityQueue<Gate, Job> as Service<Job>>::Future>();
    send::<llmgate_queue::Worker<Gate, Job>>();
    send_sync::<llmgate_queue::QueueHandle>();
}
