//! A mock inner service whose readiness the test controls, and a job type.

#![allow(dead_code)]

use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use llmgate_core::{BoxError, ClientKey, Priority};
use llmgate_queue::{PriorityOf, QueueError};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::Service;

/// A queued unit of work.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u32,
    pub priority: Priority,
    pub client: &'static str,
    pub deadline: Option<Instant>,
    pub cost: u64,
}

impl Job {
    pub fn new(id: u32, priority: Priority) -> Job {
        Job {
            id,
            priority,
            client: "a",
            deadline: None,
            cost: 1,
        }
    }

    pub fn client(mut self, c: &'static str) -> Job {
        self.client = c;
        self
    }

    pub fn deadline(mut self, d: Instant) -> Job {
        self.deadline = Some(d);
        self
    }
}

impl PriorityOf for Job {
    fn priority(&self) -> Priority {
        self.priority
    }
    fn client_key(&self) -> Option<ClientKey> {
        Some(ClientKey::from_id(self.client))
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn cost(&self) -> u64 {
        self.cost
    }
}

#[derive(Debug, Default)]
struct GateState {
    permits: usize,
    waker: Option<Waker>,
    fail: Option<String>,
    log: Vec<u32>,
}

/// Ready only while it holds permits; each call takes one and logs the id.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    st: Arc<Mutex<GateState>>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets `n` more requests through.
    pub fn allow(&self, n: usize) {
        let w = {
            let mut st = self.st.lock();
            st.permits += n;
            st.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Makes the next `poll_ready` fail.
    pub fn fail(&self, msg: &str) {
        let w = {
            let mut st = self.st.lock();
            st.fail = Some(msg.to_string());
            st.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Ids called so far, in call order.
    pub fn log(&self) -> Vec<u32> {
        self.st.lock().log.clone()
    }
}

impl Service<Job> for Gate {
    type Response = u32;
    type Error = BoxError;
    type Future = Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut st = self.st.lock();
        if let Some(msg) = &st.fail {
            return Poll::Ready(Err(msg.clone().into()));
        }
        if st.permits > 0 {
            Poll::Ready(Ok(()))
        } else {
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let mut st = self.st.lock();
        assert!(st.permits > 0, "called without readiness");
        st.permits -= 1;
        st.log.push(job.id);
        ready(Ok(job.id))
    }
}

/// Lets spawned tasks (the worker) run without moving the clock.
pub async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// The queue error inside a boxed error.
pub fn queue_err(e: &BoxError) -> &QueueError {
    e.downcast_ref::<QueueError>()
        .unwrap_or_else(|| panic!("not a queue error: {e}"))
}
