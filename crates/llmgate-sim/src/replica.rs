//! A replica: the engine behind a real HTTP server on 127.0.0.1, driven in
//! (sped-up) real time, plus in-process fleets.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{Faults, SimConfig};
use crate::engine::{Engine, Finished, ReqId};
use llmgate_telemetry::{GpuReading, GpuReport};

/// What a request's handler receives from the driver.
#[derive(Debug)]
pub(crate) enum Ev {
    /// A token that is not the last one.
    Token(u32),
    /// The last token was produced.
    Done(Finished),
}

pub(crate) struct Sink {
    pub(crate) tx: mpsc::UnboundedSender<Ev>,
    pub(crate) stream: bool,
}

/// Maps wall time to virtual µs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    anchor_wall: Instant,
    anchor_virt: u64,
    speedup: f64,
}

impl Clock {
    pub(crate) fn now_us(&self) -> u64 {
        let dt = self.anchor_wall.elapsed().as_secs_f64();
        self.anchor_virt + (dt * self.speedup * 1e6) as u64
    }
    fn wall_at(&self, virt_us: u64) -> Instant {
        let dv = virt_us.saturating_sub(self.anchor_virt) as f64 / 1e6 / self.speedup;
        self.anchor_wall + Duration::from_secs_f64(dv)
    }
    fn anchor(&mut self, wall: Instant, virt: u64) {
        self.anchor_wall = wall;
        self.anchor_virt = virt;
    }
}

/// First-order model of utilization and temperature over virtual time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GpuModel {
    util: f64,
    temp: f64,
    last_us: u64,
}

const UTIL_TAU_S: f64 = 1.0;
const TEMP_TAU_S: f64 = 30.0;
const TEMP_IDLE_C: f64 = 32.0;
const TEMP_SPAN_C: f64 = 50.0;

impl GpuModel {
    fn new() -> Self {
        GpuModel {
            util: 0.0,
            temp: TEMP_IDLE_C,
            last_us: 0,
        }
    }

    fn relax(&mut self, busy: f64, dt_us: u64) {
        if dt_us == 0 {
            return;
        }
        let dt = dt_us as f64 / 1e6;
        self.util = busy + (self.util - busy) * (-dt / UTIL_TAU_S).exp();
        let target = TEMP_IDLE_C + TEMP_SPAN_C * self.util;
        self.temp = target + (self.temp - target) * (-dt / TEMP_TAU_S).exp();
    }

    /// Idle until `start`, busy until `end`.
    fn step(&mut self, start: u64, end: u64) {
        self.relax(0.0, start.saturating_sub(self.last_us));
        self.relax(1.0, end.saturating_sub(start.max(self.last_us)));
        self.last_us = end.max(self.last_us);
    }

    fn idle_until(&mut self, now: u64) {
        if now > self.last_us {
            self.relax(0.0, now - self.last_us);
            self.last_us = now;
        }
    }
}

pub(crate) struct State {
    pub(crate) engine: Engine,
    pub(crate) clock: Clock,
    pub(crate) sinks: HashMap<ReqId, Sink>,
    gpu: GpuModel,
    stalled: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) errored: AtomicU64,
}

pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    pub(crate) slow_until: Option<Instant>,
    pub(crate) health_probes: u64,
}

pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) config: SimConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) notify: Notify,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) counters: Counters,
    pub(crate) rng: Mutex<SmallRng>,
    pub(crate) next_response: AtomicU64,
    server: Mutex<Option<AbortHandle>>,
    addr: Mutex<SocketAddr>,
}

impl Shared {
    pub(crate) fn virt_now(&self) -> u64 {
        self.state.lock().clock.now_us()
    }

    pub(crate) fn set_faults(self: &Arc<Self>, faults: Faults) {
        let crash = faults.crash;
        {
            let mut fs = self.faults.lock();
            fs.slow_until = faults.slow_start.map(|d| Instant::now() + d);
            fs.faults = faults;
        }
        if crash {
            self.kill();
        }
    }

    pub(crate) fn kill(&self) {
        if let Some(h) = self.server.lock().take() {
            h.abort();
        }
        let mut st = self.state.lock();
        st.engine.clear();
        st.sinks.clear();
    }

    fn listen(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = bind(addr)?;
        self.serve_on(listener)
    }

    fn serve_on(self: &Arc<Self>, listener: tokio::net::TcpListener) -> io::Result<SocketAddr> {
        let local = listener.local_addr()?;
        let router = crate::http::router(self.clone());
        let task = tokio::spawn(serve(listener, router));
        if let Some(old) = self.server.lock().replace(task.abort_handle()) {
            old.abort();
        }
        *self.addr.lock() = local;
        Ok(local)
    }

    pub(crate) fn gpu_report(&self) -> GpuReport {
        let p = self.config.profile;
        let mut st = self.state.lock();
        let now = st.clock.now_us().max(st.engine.now_us());
        let used_blocks = st.engine.kv_blocks_used() as u64;
        st.gpu.idle_until(now);
        let g = st.gpu;
        drop(st);
        let kv_bytes = used_blocks * u64::from(p.block_size) * p.kv_bytes_per_token;
        GpuReport {
            gpus: vec![GpuReading {
                index: 0,
                name: p.gpu_name.to_string(),
                utilization_pct: (g.util * 100.0).clamp(0.0, 100.0),
                memory_used_bytes: (p.weights_bytes + kv_bytes).min(p.gpu_memory_bytes),
                memory_total_bytes: p.gpu_memory_bytes,
                temperature_c: g.temp,
                power_w: Some(90.0 + 600.0 * g.util),
                power_limit_w: Some(700.0),
            }],
        }
    }

    pub(crate) fn counters(&self) -> SimCounters {
        let st = self.state.lock();
        let s = st.engine.stats();
        SimCounters {
            requests_received: self.counters.received.load(Ordering::Relaxed),
            requests_completed: self.counters.completed.load(Ordering::Relaxed),
            requests_errored: self.counters.errored.load(Ordering::Relaxed),
            prompt_tokens: s.prompt_tokens,
            generation_tokens: s.generation_tokens,
            prefix_hits: s.prefix_hits,
            prefix_queries: s.prefix_queries,
            preemptions: s.preemptions,
            running: st.engine.num_running(),
            waiting: st.engine.num_waiting(),
            kv_usage: st.engine.kv_usage(),
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

async fn serve(listener: tokio::net::TcpListener, router: axum::Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    // Connections live in the JoinSet: aborting this task (a crash) drops
    // the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let svc = TowerToHyperService::new(router.clone());
                    conns.spawn(async move {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The driver: steps the engine and sleeps so that virtual time runs at
/// `speedup` × wall time. Sleeps are batched: it only sleeps once the
/// engine is at least 1 ms of wall time ahead.
async fn drive(shared: Arc<Shared>) {
    loop {
        loop {
            let notified = shared.notify.notified();
            {
                let mut st = shared.state.lock();
                if st.engine.has_work() && !st.stalled {
                    break;
                }
                st.stalled = false;
            }
            notified.await;
        }
        {
            let mut st = shared.state.lock();
            let v = st.clock.now_us();
            st.engine.advance_to(v);
            let now = st.engine.now_us();
            st.clock.anchor(Instant::now(), now);
        }
        // Tokens of a step reach clients when the step ends, as an engine
        // returns them after the forward pass: a request's first token waits
        // for its own prefill, not only for the step before it.
        let mut out: Vec<(mpsc::UnboundedSender<Ev>, Ev)> = Vec::new();
        loop {
            let slow = {
                let mut fs = shared.faults.lock();
                match fs.slow_until {
                    Some(t) if Instant::now() < t => 10.0,
                    Some(_) => {
                        fs.slow_until = None;
                        1.0
                    }
                    None => 1.0,
                }
            };
            let target = {
                let mut guard = shared.state.lock();
                let st = &mut *guard;
                st.engine.set_slow_factor(slow);
                let Some(rep) = st.engine.step() else {
                    st.stalled = st.engine.has_work();
                    break;
                };
                st.gpu.step(rep.start_us, rep.start_us + rep.duration_us);
                let n = st.engine.events().len();
                for i in 0..n {
                    let ev = st.engine.events()[i];
                    if ev.finished {
                        let f = st.engine.take_finished(ev.id).unwrap_or_default();
                        if let Some(sink) = st.sinks.remove(&ev.id) {
                            out.push((sink.tx, Ev::Done(f)));
                        }
                    } else if let Some(sink) = st.sinks.get(&ev.id) {
                        if sink.stream {
                            out.push((sink.tx.clone(), Ev::Token(ev.index)));
                        }
                    }
                }
                st.clock.wall_at(st.engine.now_us())
            };
            let now = Instant::now();
            let slept = target > now + Duration::from_millis(1);
            if slept {
                tokio::time::sleep_until(target).await;
            } else if now > target + Duration::from_millis(50) {
                // Fell behind (the host is saturated): do not try to catch
                // up in a burst.
                let mut st = shared.state.lock();
                let v = st.engine.now_us();
                st.clock.anchor(now, v);
            }
            for (tx, ev) in out.drain(..) {
                let _ = tx.send(ev);
            }
            if !slept {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Counters of one replica, cumulative over the handle's lifetime (a
/// kill/restart keeps them), plus the current queue state.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SimCounters {
    /// Inference requests received (completions, chat, embeddings).
    pub requests_received: u64,
    /// Requests answered successfully (streams: to the end).
    pub requests_completed: u64,
    /// Requests answered with an error (injected or invalid).
    pub requests_errored: u64,
    /// Prompt tokens of finished requests.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub generation_tokens: u64,
    /// Prefix-cache hits, tokens.
    pub prefix_hits: u64,
    /// Prefix-cache queries, tokens.
    pub prefix_queries: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// Requests running now.
    pub running: usize,
    /// Requests waiting now.
    pub waiting: usize,
    /// KV usage now, 0–1.
    pub kv_usage: f64,
}

/// Handle to one simulated replica serving HTTP on a local port. Dropping
/// it stops the replica.
pub struct SimReplica {
    shared: Arc<Shared>,
    driver: AbortHandle,
}

impl std::fmt::Debug for SimReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimReplica")
            .field("id", &self.shared.id)
            .field("addr", &self.addr())
            .finish()
    }
}

impl SimReplica {
    /// Binds `config.host:config.port` and starts serving. Must be called
    /// inside a tokio runtime.
    pub fn spawn(config: SimConfig) -> io::Result<SimReplica> {
        Self::spawn_with_id(config, None)
    }

    pub(crate) fn spawn_with_id(
        mut config: SimConfig,
        fallback_id: Option<String>,
    ) -> io::Result<SimReplica> {
        if !(config.speedup.is_finite() && config.speedup > 0.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "speedup must be a positive number",
            ));
        }
        config.speedup = config.speedup.max(1e-3);
        let listener = bind(SocketAddr::new(config.host, config.port))?;
        let local = listener.local_addr()?;
        let id = config
            .id
            .clone()
            .or(fallback_id)
            .unwrap_or_else(|| format!("sim-{}", local.port()));
        let engine = Engine::new(config.profile, config.seed);
        let faults = config.faults.clone();
        let shared = Arc::new(Shared {
            id,
            state: Mutex::new(State {
                engine,
                clock: Clock {
                    anchor_wall: Instant::now(),
                    anchor_virt: 0,
                    speedup: config.speedup,
                },
                sinks: HashMap::new(),
                gpu: GpuModel::new(),
                stalled: false,
            }),
            notify: Notify::new(),
            faults: Mutex::new(FaultState {
                faults: Faults::default(),
                slow_until: None,
                health_probes: 0,
            }),
            counters: Counters::default(),
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed ^ 0x5eed)),
            next_response: AtomicU64::new(1),
            server: Mutex::new(None),
            addr: Mutex::new(local),
            config,
        });
        shared.serve_on(listener)?;
        shared.set_faults(faults);
        let driver = tokio::spawn(drive(shared.clone())).abort_handle();
        Ok(SimReplica { shared, driver })
    }

    /// Replica id (the `x-sim-replica` header value).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Address served.
    pub fn addr(&self) -> SocketAddr {
        *self.shared.addr.lock()
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Replaces the active faults (`crash: true` kills the replica).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().faults.clone()
    }

    /// Crashes the replica: closes the listener and every connection, drops
    /// all requests and the KV cache.
    pub fn kill(&self) {
        self.shared.kill();
    }

    /// Whether the replica is serving.
    pub fn is_running(&self) -> bool {
        self.shared.server.lock().is_some()
    }

    /// Serves again on the same address after [`kill`](Self::kill) (clears
    /// the `crash` fault; re-arms `slow_start`).
    pub fn restart(&self) -> io::Result<()> {
        self.shared.kill();
        let mut f = self.faults();
        f.crash = false;
        self.shared.set_faults(f);
        self.shared.listen(self.addr()).map(|_| ())
    }

    /// Counters and queue state.
    pub fn counters(&self) -> SimCounters {
        self.shared.counters()
    }

    /// The simulated GPU reading (what `GET /gpu` serves).
    pub fn gpu_report(&self) -> GpuReport {
        self.shared.gpu_report()
    }

    /// Virtual time now, µs.
    pub fn virtual_now_us(&self) -> u64 {
        self.shared.virt_now()
    }
}

impl Drop for SimReplica {
    fn drop(&mut self) {
        self.driver.abort();
        self.shared.kill();
    }
}

/// Several replicas in this process, each on its own ephemeral port.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use llmgate_sim::{SimConfig, SimFleet};
/// let fleet = SimFleet::spawn(vec![SimConfig::default(); 2]).unwrap();
/// assert_eq!(fleet.urls().len(), 2);
/// assert_eq!(fleet.replicas()[1].id(), "sim-1");
/// fleet.shutdown();
/// # }
/// ```
#[derive(Debug)]
pub struct SimFleet {
    replicas: Vec<SimReplica>,
}

impl SimFleet {
    /// Starts one replica per config (ids `sim-0`, `sim-1`, … unless set).
    /// Must be called inside a tokio runtime.
    pub fn spawn(configs: Vec<SimConfig>) -> io::Result<SimFleet> {
        let replicas = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| SimReplica::spawn_with_id(c, Some(format!("sim-{i}"))))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SimFleet { replicas })
    }

    /// Base URLs, in config order.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(SimReplica::url).collect()
    }

    /// Replica handles.
    pub fn replicas(&self) -> &[SimReplica] {
        &self.replicas
    }

    /// Stops every replica.
    pub fn shutdown(self) {
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineRequest;
    use crate::profile::Profile;

    /// A token reaches its client when the step that produced it ends, so
    /// the time to first token a client sees includes the request's own
    /// prefill (tokio's paused clock: the replica's sleeps are exact).
    #[tokio::test(start_paused = true)]
    async fn tokens_are_delivered_when_their_step_ends() {
        let replica = SimReplica::spawn(
            SimConfig::default()
                .with_profile(Profile::A100_8B)
                .with_speedup(1.0),
        )
        .unwrap();
        let shared = replica.shared.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        {
            let mut st = shared.state.lock();
            let arrival = st.clock.now_us();
            let id = st
                .engine
                .submit_at(EngineRequest::new(2000, Vec::new(), 1), arrival)
                .unwrap();
            st.sinks.insert(id, Sink { tx, stream: true });
        }
        shared.notify.notify_one();
        let Some(Ev::Done(f)) = rx.recv().await else {
            panic!("expected the request to finish");
        };
        let seen = Instant::now() - start;
        // A 2,000-token prefill on this profile is tens of milliseconds.
        assert!(f.ttft_us() > 10_000, "virtual TTFT {} µs", f.ttft_us());
        assert!(
            seen >= Duration::from_micros(f.ttft_us()),
            "the token arrived after {seen:?}, before its step ended ({} µs)",
            f.ttft_us()
        );
        replica.kill();
    }
}
