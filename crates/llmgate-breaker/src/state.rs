//! The shared state machine: one per breaker, behind a mutex held for a few
//! arithmetic operations per call.

use std::fmt;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::BreakerConfig;

/// Number of buckets of the rolling failure-rate window.
const WINDOW_BUCKETS: usize = 10;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// A bounded number of probe calls pass; their outcomes decide.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `llmgate_breaker_state` gauge: 0 closed, 1 half-open,
    /// 2 open.
    pub const fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    /// A lower-case name, used as the `to` label of the transitions counter.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one call, as a classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call worked (or failed for a reason that is not the endpoint's
    /// fault, such as a 4xx).
    Success,
    /// The call failed in a way that counts against the endpoint.
    Failure,
}

/// One change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// When it happened (tokio clock).
    pub at: Instant,
}

/// A point-in-time view of a breaker, from [`BreakerHandle::snapshot`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Its current state.
    pub state: BreakerState,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Calls recorded in the rolling window.
    pub window_calls: u32,
    /// Failures recorded in the rolling window.
    pub window_failures: u32,
    /// Probes in flight while half-open.
    pub probes_in_flight: u32,
    /// Probe successes so far in this half-open period.
    pub probe_successes: u32,
    /// When an open breaker lets probes through again.
    pub retry_at: Option<Instant>,
    /// Trips since the breaker last closed (drives the cool-down growth).
    pub trips: u32,
    /// Successful calls since creation.
    pub successes_total: u64,
    /// Failed calls since creation.
    pub failures_total: u64,
    /// Calls refused since creation (fail-fast mode).
    pub rejected_total: u64,
    /// State changes since creation.
    pub transitions_total: u64,
    /// The most recent state change.
    pub last_transition: Option<Transition>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    width: Duration,
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        let width = (window / WINDOW_BUCKETS as u32).max(Duration::from_millis(1));
        Window {
            start: now,
            width,
            buckets: [Bucket::default(); WINDOW_BUCKETS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.width.as_nanos()) as u64
    }

    fn record(&mut self, now: Instant, failure: bool) {
        let epoch = self.epoch(now);
        let b = &mut self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                calls: 0,
                failures: 0,
            };
        }
        b.calls = b.calls.saturating_add(1);
        if failure {
            b.failures = b.failures.saturating_add(1);
        }
    }

    /// (calls, failures) over the buckets still inside the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let epoch = self.epoch(now);
        let oldest = epoch.saturating_sub(WINDOW_BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch && b.calls > 0)
            .fold((0u32, 0u32), |(c, f), b| {
                (c.saturating_add(b.calls), f.saturating_add(b.failures))
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); WINDOW_BUCKETS];
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    generation: u64,
    consecutive_failures: u32,
    window: Window,
    retry_at: Option<Instant>,
    trips: u32,
    probes_in_flight: u32,
    probe_successes: u32,
    successes_total: u64,
    failures_total: u64,
    rejected_total: u64,
    transitions_total: u64,
    last_transition: Option<Transition>,
    waiters: Vec<Waker>,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) state: BreakerState,
    /// When an open breaker probes again; `None` while half-open with every
    /// probe slot taken (a waker was registered).
    pub(crate) retry_at: Option<Instant>,
}

/// The state shared by a breaker's layer, services, futures, bodies and
/// handles.
pub(crate) struct Shared {
    pub(crate) config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .field("state", &self.inner.lock().state)
            .finish()
    }
}

impl Shared {
    pub(crate) fn new(config: BreakerConfig) -> Arc<Self> {
        let now = Instant::now();
        let window = Window::new(config.window, now);
        metrics::gauge!("llmgate_breaker_state", "name" => config.name.to_string())
            .set(BreakerState::Closed.gauge_value());
        Arc::new(Shared {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                consecutive_failures: 0,
                window,
                retry_at: None,
                trips: 0,
                probes_in_flight: 0,
                probe_successes: 0,
                successes_total: 0,
                failures_total: 0,
                rejected_total: 0,
                transitions_total: 0,
                last_transition: None,
                waiters: Vec::new(),
            }),
        })
    }

    /// Tries to admit one call. On refusal, registers `waker` (if any) to be
    /// woken on the next state change or released probe slot.
    pub(crate) fn admit(
        self: &Arc<Self>,
        now: Instant,
        waker: Option<&Waker>,
    ) -> Result<Permit, Refusal> {
        let mut wake = Vec::new();
        let result = {
            let mut g = self.inner.lock();
            self.refresh(&mut g, now, &mut wake);
            match g.state {
                BreakerState::Closed => Ok(Permit::new(self.clone(), g.generation, false)),
                BreakerState::HalfOpen if g.probes_in_flight < self.config.half_open_max_probes => {
                    g.probes_in_flight += 1;
                    Ok(Permit::new(self.clone(), g.generation, true))
                }
                state => {
                    if let Some(w) = waker {
                        if !g.waiters.iter().any(|x| x.will_wake(w)) {
                            g.waiters.push(w.clone());
                        }
                    }
                    Err(Refusal {
                        state,
                        retry_at: if state == BreakerState::Open {
                            g.retry_at
                        } else {
                            None
                        },
                    })
                }
            }
        };
        wake_all(wake);
        result
    }

    pub(crate) fn count_rejected(&self) {
        self.inner.lock().rejected_total += 1;
        metrics::counter!("llmgate_breaker_rejected_total", "name" => self.config.name.to_string())
            .increment(1);
    }

    /// Open → half-open once the cool-down has passed.
    fn refresh(&self, g: &mut Inner, now: Instant, wake: &mut Vec<Waker>) {
        if g.state == BreakerState::Open && g.retry_at.is_some_and(|at| now >= at) {
            self.transition(g, BreakerState::HalfOpen, now, wake);
        }
    }

    fn transition(&self, g: &mut Inner, to: BreakerState, now: Instant, wake: &mut Vec<Waker>) {
        let from = g.state;
        g.state = to;
        g.generation = g.generation.wrapping_add(1);
        g.probes_in_flight = 0;
        g.probe_successes = 0;
        match to {
            BreakerState::Open => {
                g.trips = g.trips.saturating_add(1);
                g.retry_at = Some(now + self.config.cool_down_for_trip(g.trips));
            }
            BreakerState::HalfOpen => {
                g.retry_at = None;
            }
            BreakerState::Closed => {
                g.retry_at = None;
                g.trips = 0;
                g.consecutive_failures = 0;
                g.window.clear();
            }
        }
        g.transitions_total += 1;
        g.last_transition = Some(Transition { from, to, at: now });
        wake.append(&mut g.waiters);
        let name = self.config.name.to_string();
        metrics::gauge!("llmgate_breaker_state", "name" => name.clone()).set(to.gauge_value());
        metrics::counter!("llmgate_breaker_transitions_total", "name" => name, "to" => to.as_str())
            .increment(1);
    }

    fn record(&self, generation: u64, probe: bool, outcome: Option<Outcome>, now: Instant) {
        let mut wake = Vec::new();
        {
            let mut g = self.inner.lock();
            match outcome {
                Some(Outcome::Success) => g.successes_total += 1,
                Some(Outcome::Failure) => g.failures_total += 1,
                None => {}
            }
            if generation != g.generation {
                // Admitted under an earlier state: it says nothing about now.
                return;
            }
            match g.state {
                BreakerState::Closed => match outcome {
                    Some(Outcome::Success) => {
                        g.consecutive_failures = 0;
                        g.window.record(now, false);
                    }
                    Some(Outcome::Failure) => {
                        g.consecutive_failures = g.consecutive_failures.saturating_add(1);
                        g.window.record(now, true);
                        if self.should_trip(&g, now) {
                            self.transition(&mut g, BreakerState::Open, now, &mut wake);
                        }
                    }
                    None => {}
                },
                BreakerState::HalfOpen if probe => {
                    g.probes_in_flight = g.probes_in_flight.saturating_sub(1);
                    match outcome {
                        Some(Outcome::Success) => {
                            g.probe_successes += 1;
                            if g.probe_successes >= self.config.half_open_successes {
                                self.transition(&mut g, BreakerState::Closed, now, &mut wake);
                            }
                        }
                        Some(Outcome::Failure) => {
                            self.transition(&mut g, BreakerState::Open, now, &mut wake);
                        }
                        None => {}
                    }
                    // A slot came free (or the state changed): let waiters retry.
                    wake.append(&mut g.waiters);
                }
                _ => {}
            }
        }
        wake_all(wake);
    }

    fn should_trip(&self, g: &Inner, now: Instant) -> bool {
        let c = &self.config;
        if c.consecutive_failures > 0 && g.consecutive_failures >= c.consecutive_failures {
            return true;
        }
        if let Some(rate) = c.failure_rate {
            let (calls, failures) = g.window.totals(now);
            if calls >= c.min_calls.max(1) && f64::from(failures) >= rate * f64::from(calls) {
                return true;
            }
        }
        false
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        let mut wake = Vec::new();
        let s = {
            let mut g = self.inner.lock();
            self.refresh(&mut g, now, &mut wake);
            g.state
        };
        wake_all(wake);
        s
    }

    pub(crate) fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut wake = Vec::new();
        let snap = {
            let mut g = self.inner.lock();
            self.refresh(&mut g, now, &mut wake);
            let (window_calls, window_failures) = g.window.totals(now);
            BreakerSnapshot {
                name: self.config.name.clone(),
                state: g.state,
                consecutive_failures: g.consecutive_failures,
                window_calls,
                window_failures,
                probes_in_flight: g.probes_in_flight,
                probe_successes: g.probe_successes,
                retry_at: g.retry_at,
                trips: g.trips,
                successes_total: g.successes_total,
                failures_total: g.failures_total,
                rejected_total: g.rejected_total,
                transitions_total: g.transitions_total,
                last_transition: g.last_transition,
            }
        };
        wake_all(wake);
        snap
    }

    /// Forces a state (admin action).
    pub(crate) fn force(&self, to: BreakerState, now: Instant) {
        let mut wake = Vec::new();
        {
            let mut g = self.inner.lock();
            if g.state != to {
                self.transition(&mut g, to, now, &mut wake);
            }
        }
        wake_all(wake);
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// The right to make one call through a breaker, and the duty to report how
/// it went.
///
/// A [`Classify`](crate::Classify) implementation receives the permit with
/// the inner service's result and either records the outcome at once
/// ([`Permit::success`], [`Permit::failure`]) or moves the permit into the
/// response body (see [`BreakerBody`](crate::BreakerBody)) so the outcome
/// follows the stream to its end. A permit dropped without an outcome (a
/// cancelled call, a client that went away mid-stream) releases its
/// half-open probe slot and counts as nothing.
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    probe: bool,
    done: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.shared.config.name)
            .field("probe", &self.probe)
            .finish()
    }
}

impl Permit {
    fn new(shared: Arc<Shared>, generation: u64, probe: bool) -> Self {
        Permit {
            shared,
            generation,
            probe,
            done: false,
        }
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records `outcome` and releases the permit.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.shared
            .record(self.generation, self.probe, Some(outcome), Instant::now());
    }

    /// Records a success.
    pub fn success(self) {
        self.record(Outcome::Success)
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(Outcome::Failure)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .record(self.generation, self.probe, None, Instant::now());
        }
    }
}

/// A cheap, clonable view of one breaker, for admin APIs and tests.
///
/// Obtain it from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle)
/// or [`CircuitBreaker::handle`](crate::CircuitBreaker::handle).
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl BreakerHandle {
    /// The breaker's name (the `name` label of its metrics).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The current state. An open breaker whose cool-down has passed reports
    /// (and becomes) half-open.
    pub fn state(&self) -> BreakerState {
        self.shared.state(Instant::now())
    }

    /// State, counts and the last transition.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.shared.snapshot(Instant::now())
    }

    /// The configuration the breaker runs with.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Opens the breaker now (an operator taking an endpoint out), for one
    /// cool-down.
    pub fn force_open(&self) {
        self.shared.force(BreakerState::Open, Instant::now())
    }

    /// Closes the breaker now and clears its counts of recent failures.
    pub fn reset(&self) {
        self.shared.force(BreakerState::Closed, Instant::now())
    }
}
