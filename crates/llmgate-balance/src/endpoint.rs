//! Endpoints (replicas) and the state the balancer keeps for each.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::load::LoadView;

/// A replica as configured: where it is and what it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Unique id (a bounded label in metrics).
    pub id: String,
    /// Base URL, e.g. `http://10.0.0.5:8000`.
    pub url: String,
    /// Model names it serves; empty means "any model".
    #[serde(default)]
    pub models: Vec<String>,
    /// Relative capacity for weighted strategies (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Most requests in flight at once from this balancer (default 256).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Free-form labels (GPU type, zone).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where to scrape engine metrics (default `{url}/metrics`; `""` turns
    /// scraping off).
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// Where to read GPU telemetry (`/gpu` of an `llmgate agent` or of the
    /// replica), if anywhere.
    #[serde(default)]
    pub gpu_url: Option<String>,
}

fn default_weight() -> u32 {
    1
}
fn default_max_concurrent() -> usize {
    256
}

impl EndpointSpec {
    /// A spec with defaults for everything but id and URL.
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        EndpointSpec {
            id: id.into(),
            url: url.into().trim_end_matches('/').to_string(),
            models: Vec::new(),
            weight: 1,
            max_concurrent: default_max_concurrent(),
            labels: BTreeMap::new(),
            metrics_url: None,
            gpu_url: None,
        }
    }

    /// Sets the models served.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the concurrency cap.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Whether it serves `model` (`None`: the request names no model).
    pub fn serves(&self, model: Option<&str>) -> bool {
        match model {
            None => true,
            Some(m) => self.models.is_empty() || self.models.iter().any(|x| x == m),
        }
    }

    /// Checks the spec: non-empty id, an `http://` URL, positive weight and cap.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("replica id must not be empty".into());
        }
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("replica {}: invalid url {:?}: {e}", self.id, self.url))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "replica {}: url {:?} must be http://host:port (TLS to replicas is not supported)",
                self.id, self.url
            ));
        }
        if self.weight == 0 {
            return Err(format!("replica {}: weight must be at least 1", self.id));
        }
        if self.max_concurrent == 0 {
            return Err(format!(
                "replica {}: max_concurrent must be at least 1",
                self.id
            ));
        }
        Ok(())
    }
}

/// Health as seen by active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No verdict yet: treated as healthy so a new replica takes traffic.
    Unknown,
    /// Passing its checks.
    Healthy,
    /// Failed its checks: out of rotation.
    Unhealthy,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        }
    }
}

/// Decay time of the end-to-end latency EWMA.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Decay time of the peak TTFT estimate (reported, and used by
/// `adaptive`). Long enough that it stays a steady picture of an endpoint's
/// recent worst first tokens while it has traffic; an endpoint shunned by one
/// slow sample is still tried again within minutes.
const TTFT_DECAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Ewma {
    value_s: f64,
    at: Option<Instant>,
    decay: Duration,
}

impl Ewma {
    /// The estimate at `now`: it decays toward zero while no sample arrives
    /// (as tower's `PeakEwma` does), so an endpoint that one slow answer
    /// priced out of every pick is tried again, and gives a new sample,
    /// instead of staying shunned for good. `None` before the first sample.
    fn value_at(&self, now: Instant) -> Option<f64> {
        let at = self.at?;
        let dt = now.saturating_duration_since(at).as_secs_f64();
        Some(self.value_s * (-dt / self.decay.as_secs_f64()).exp())
    }

    /// Peak-EWMA: a sample above the (decayed) estimate replaces it at once,
    /// so a slow replica is noticed immediately; below it, it blends in by
    /// how much time has passed.
    fn observe(&mut self, sample_s: f64, now: Instant) {
        self.value_s = match (self.at, self.value_at(now)) {
            (Some(prev), Some(current)) if sample_s <= current => {
                let dt = now.saturating_duration_since(prev).as_secs_f64();
                let w = (-dt / self.decay.as_secs_f64()).exp();
                current * w + sample_s * (1.0 - w)
            }
            _ => sample_s,
        };
        self.at = Some(now);
    }
}

/// Weight of one first byte in the prefill pace estimate: about the last
/// ten answers.
const PACE_WEIGHT: f64 = 0.1;

/// Decay time of the prefill pace while an endpoint gives no sample.
const PACE_DECAY: Duration = Duration::from_secs(60);

/// A per-answer EWMA of an endpoint's prefill pace, seconds per work token
/// (see [`LoadView::cost_for`]). Like [`Ewma`] it decays toward zero while
/// no sample arrives, so an endpoint that slow answers priced out of every
/// pick is tried again instead of staying shunned.
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    value_s: f64,
    at: Option<Instant>,
}

impl Pace {
    fn value_at(&self, now: Instant) -> Option<f64> {
        let at = self.at?;
        let dt = now.saturating_duration_since(at).as_secs_f64();
        Some(self.value_s * (-dt / PACE_DECAY.as_secs_f64()).exp())
    }

    /// Blends in a sample. Its weight is [`PACE_WEIGHT`] under steady
    /// traffic and grows towards 1 with the time since the last sample: an
    /// endpoint back from a long idle spell (its estimate decayed towards
    /// zero) is priced by what it does now, not underpriced for the next
    /// ten answers.
    fn observe(&mut self, sample_s: f64, now: Instant) {
        self.value_s = match (self.value_at(now), self.at) {
            (Some(current), Some(at)) => {
                let gap = now.saturating_duration_since(at).as_secs_f64();
                let weight = PACE_WEIGHT.max(1.0 - (-gap / PACE_DECAY.as_secs_f64()).exp());
                current + weight * (sample_s - current)
            }
            _ => sample_s,
        };
        self.at = Some(now);
    }
}

/// What a request dispatched to an endpoint found there (for the pace sample
/// at its first byte).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dispatched {
    /// Its prompt tokens (counted in the endpoint's pending prefill until the
    /// first byte).
    pub(crate) tokens: u32,
    /// Pending prefill tokens ahead of it.
    pub(crate) ahead: u64,
    /// Requests in flight before it.
    pub(crate) in_flight: usize,
    /// Whether its first byte is its first token (a streamed answer).
    pub(crate) streamed: bool,
}

#[derive(Debug)]
struct Stats {
    latency: Ewma,
    ttft: Ewma,
    pace: Pace,
    /// Exponentially decayed error fraction.
    error_rate: f64,
    /// Last time any in-flight request of this endpoint made progress
    /// (headers, a body chunk, or completion).
    last_progress: Instant,
}

/// What the balancer and its helpers (health checks, telemetry, admin API)
/// share about one endpoint. Cheap to read from the routing hot path.
#[derive(Debug)]
pub struct EndpointState {
    spec: EndpointSpec,
    id: Arc<str>,
    in_flight: AtomicUsize,
    pending_prefill: AtomicU64,
    served: AtomicU64,
    failed: AtomicU64,
    health: AtomicU8,
    draining: AtomicBool,
    drain_deadline: Mutex<Option<Instant>>,
    ejected_until: Mutex<Option<Instant>>,
    stats: Mutex<Stats>,
    telemetry: Mutex<Option<llmgate_telemetry::TelemetryCell>>,
    /// Notified when the last in-flight request ends (drain reaping).
    idle: tokio::sync::Notify,
    /// Woken whenever readiness may have changed (health, drain, ejection,
    /// an in-flight slot freed).
    pub(crate) readiness: AtomicWaker,
}

impl EndpointState {
    /// New state for `spec`.
    pub fn new(spec: EndpointSpec) -> Arc<EndpointState> {
        Arc::new(EndpointState {
            id: Arc::from(spec.id.as_str()),
            spec,
            in_flight: AtomicUsize::new(0),
            pending_prefill: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            health: AtomicU8::new(Health::Unknown.as_u8()),
            draining: AtomicBool::new(false),
            drain_deadline: Mutex::new(None),
            ejected_until: Mutex::new(None),
            stats: Mutex::new(Stats {
                latency: Ewma {
                    value_s: 0.0,
                    at: None,
                    decay: EWMA_DECAY,
                },
                ttft: Ewma {
                    value_s: 0.0,
                    at: None,
                    decay: TTFT_DECAY,
                },
                pace: Pace::default(),
                error_rate: 0.0,
                last_progress: Instant::now(),
            }),
            telemetry: Mutex::new(None),
            idle: tokio::sync::Notify::new(),
            readiness: AtomicWaker::new(),
        })
    }

    /// The endpoint's configuration.
    pub fn spec(&self) -> &EndpointSpec {
        &self.spec
    }

    /// Its id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Requests in flight from this balancer (until their streams end).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests answered / failed since start.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Active-check health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets the health verdict; returns the previous one.
    pub fn set_health(&self, h: Health) -> Health {
        let prev = Health::from_u8(self.health.swap(h.as_u8(), Ordering::AcqRel));
        if prev != h {
            self.readiness.wake();
        }
        prev
    }

    /// Marks the endpoint draining: no new requests; removed once idle or
    /// past `deadline`.
    pub fn start_drain(&self, deadline: Instant) {
        *self.drain_deadline.lock() = Some(deadline);
        self.draining.store(true, Ordering::Release);
        self.readiness.wake();
    }

    /// Whether draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether a drain has finished (idle, or past its deadline).
    pub fn drain_complete(&self, now: Instant) -> bool {
        self.is_draining()
            && (self.in_flight() == 0 || self.drain_deadline.lock().is_some_and(|d| now >= d))
    }

    /// Resolves when a drain has completed: no request in flight, or the
    /// drain deadline passed.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Register before checking, so an end between the two is seen.
            idle.as_mut().enable();
            let now = Instant::now();
            if self.drain_complete(now) {
                return;
            }
            let deadline = *self.drain_deadline.lock();
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = idle => {}
                        _ = tokio::time::sleep_until(d) => {}
                    }
                }
                None => idle.await,
            }
        }
    }

    /// Takes the endpoint out of rotation until `until` (outlier ejection).
    pub fn eject_until(&self, until: Instant) {
        *self.ejected_until.lock() = Some(until);
        self.readiness.wake();
    }

    /// When an ejection ends, if ejected now.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let mut g = self.ejected_until.lock();
        match *g {
            Some(t) if t > now => Some(t),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    /// Lifts an ejection (e.g. once health probes pass).
    pub fn clear_ejection(&self) {
        if self.ejected_until.lock().take().is_some() {
            self.readiness.wake();
        }
    }

    /// Attaches a telemetry source (engine metrics and GPU readings).
    pub fn set_telemetry(&self, cell: llmgate_telemetry::TelemetryCell) {
        *self.telemetry.lock() = Some(cell);
    }

    /// Whether the endpoint may take a new request now, and if not why.
    pub fn admission(&self, now: Instant) -> Admission {
        if self.is_draining() {
            return Admission::Draining;
        }
        if self.health() == Health::Unhealthy {
            return Admission::Unhealthy;
        }
        if let Some(t) = self.ejected_until(now) {
            return Admission::Ejected(t);
        }
        if self.in_flight() >= self.spec.max_concurrent {
            return Admission::Full;
        }
        Admission::Open
    }

    /// A request with `prompt_tokens` to prefill is sent. A streamed one is
    /// counted in the pending prefill until [`first_byte`](Self::first_byte)
    /// or [`abandon_prefill`](Self::abandon_prefill); the first byte of any
    /// other is its whole answer, which says nothing of when its prefill
    /// ended: it counts through `in_flight` only.
    pub(crate) fn begin(&self, prompt_tokens: u32, streamed: bool) -> Dispatched {
        let tokens = if streamed { prompt_tokens } else { 0 };
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let ahead = self
            .pending_prefill
            .fetch_add(u64::from(tokens), Ordering::AcqRel);
        Dispatched {
            tokens,
            ahead,
            in_flight,
            streamed,
        }
    }

    /// The first byte of a request begun with `d` came after `ttft`; `ok`:
    /// a success (2xx). A successful streamed answer's first token is a
    /// sample of the pace: `ttft` over the work the request found
    /// ([`work_tokens`](crate::load::work_tokens)).
    pub(crate) fn first_byte(&self, d: Dispatched, ttft: Duration, ok: bool, now: Instant) {
        self.pending_prefill
            .fetch_sub(u64::from(d.tokens), Ordering::AcqRel);
        let secs = ttft.as_secs_f64();
        let mut s = self.stats.lock();
        s.ttft.observe(secs, now);
        if d.streamed && ok {
            let work = crate::load::work_tokens(d.ahead as f64, d.tokens, d.in_flight as f64);
            s.pace.observe(secs / work, now);
        }
        s.last_progress = now;
    }

    /// A request begun with `d` ended before its first byte.
    pub(crate) fn abandon_prefill(&self, d: Dispatched) {
        self.pending_prefill
            .fetch_sub(u64::from(d.tokens), Ordering::AcqRel);
    }

    /// A request ended (stream finished or failed).
    pub(crate) fn end(&self, ok: bool, now: Instant) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
        if ok {
            self.served.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut s = self.stats.lock();
            // Per-request EWMA: about the error fraction of the last ten requests.
            s.error_rate = s.error_rate * 0.9 + if ok { 0.0 } else { 0.1 };
            s.last_progress = now;
        }
        self.readiness.wake();
    }

    pub(crate) fn observe_latency(&self, d: Duration, now: Instant) {
        let mut s = self.stats.lock();
        s.latency.observe(d.as_secs_f64(), now);
        s.last_progress = now;
    }

    pub(crate) fn progress(&self, now: Instant) {
        self.stats.lock().last_progress = now;
    }

    /// Last time an in-flight request of this endpoint made progress.
    pub fn last_progress(&self) -> Instant {
        self.stats.lock().last_progress
    }

    /// A point-in-time view of the load, trusting telemetry only while it is
    /// younger than `staleness`.
    pub fn load_view(&self, staleness: Duration) -> LoadView {
        self.load_view_at(staleness, Instant::now())
    }

    /// [`Self::load_view`] at a time the caller already read (the balancer
    /// reads it once for every candidate of a pick).
    pub(crate) fn load_view_at(&self, staleness: Duration, now: Instant) -> LoadView {
        let (latency, ttft, pace, error_rate) = {
            let s = self.stats.lock();
            // A sample decayed to nothing still counts as "answered": keep a
            // floor of 1 ms so it never reads as "no sample yet" (0).
            let seen = |e: &Ewma| e.value_at(now).map_or(0.0, |v| v.max(0.001));
            let pace = s.pace.value_at(now).map_or(0.0, |v| v.max(1e-9));
            (seen(&s.latency), seen(&s.ttft), pace, s.error_rate)
        };
        let snapshot = self
            .telemetry
            .lock()
            .as_ref()
            .and_then(|cell| cell.fresh(staleness));
        let (engine, gpu) = match snapshot {
            Some(snap) => (
                snap.engine.as_ref().map(|e| crate::load::EngineView {
                    running: e.running,
                    waiting: e.waiting,
                    kv_cache_usage: e.kv_cache_usage,
                }),
                snap.gpu_summary(),
            ),
            None => (None, None),
        };
        LoadView {
            in_flight: self.in_flight(),
            max_concurrent: self.spec.max_concurrent,
            weight: self.spec.weight,
            latency_s: latency,
            ttft_s: ttft,
            pending_prefill_tokens: self.pending_prefill.load(Ordering::Acquire),
            prefill_pace_s: pace,
            error_rate,
            engine,
            gpu,
        }
    }
}

/// Whether an endpoint admits a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Open,
    /// At its concurrency cap.
    Full,
    /// Failed active health checks.
    Unhealthy,
    /// Draining.
    Draining,
    /// Ejected as an outlier until then.
    Ejected(Instant),
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(30);

    /// One streamed request of `tokens` answered after `ttft` (and ended).
    fn answer(state: &EndpointState, tokens: u32, ttft: Duration) {
        let d = state.begin(tokens, true);
        state.first_byte(d, ttft, true, Instant::now());
        state.end(true, Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sample_decays_while_the_endpoint_gets_no_traffic() {
        let state = EndpointState::new(EndpointSpec::new("r0", "http://127.0.0.1:1"));
        assert_eq!(state.load_view(STALE).ttft_s, 0.0);
        answer(&state, 10, Duration::from_millis(50));
        // One slow answer: the estimate jumps at once (peak).
        answer(&state, 10, Duration::from_secs(2));
        assert_eq!(state.load_view(STALE).ttft_s, 2.0);
        // No traffic for three decay periods: it has come most of the way down,
        // so the endpoint is tried again instead of staying shunned.
        tokio::time::advance(TTFT_DECAY * 3).await;
        let later = state.load_view(STALE).ttft_s;
        assert!(later < 0.11 && later > 0.0, "{later}");
        // A fast sample now blends in below the decayed peak.
        answer(&state, 10, Duration::from_millis(40));
        let blended = state.load_view(STALE).ttft_s;
        assert!(blended < later && blended >= 0.04, "{blended}");
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * b.abs().max(1e-9)
    }

    #[tokio::test(start_paused = true)]
    async fn prompts_are_pending_until_their_first_byte_and_teach_the_pace() {
        use crate::load::work_tokens;
        let state = EndpointState::new(EndpointSpec::new("r0", "http://127.0.0.1:1"));
        let a = state.begin(300, true);
        let b = state.begin(200, true);
        let view = state.load_view(STALE);
        assert_eq!((view.in_flight, view.pending_prefill_tokens), (2, 500));
        assert_eq!(view.prefill_pace_s, 0.0, "no answer yet");
        // b found a's 300 tokens and one request ahead of it.
        assert_eq!((b.ahead, b.in_flight), (300, 1));
        // A non-streamed request counts in flight only; an abandoned one
        // gives its tokens back.
        let c = state.begin(1000, false);
        let d = state.begin(400, true);
        state.abandon_prefill(d);
        state.end(false, Instant::now());
        assert_eq!(state.load_view(STALE).pending_prefill_tokens, 500);
        // First bytes: the first sample is the pace; the next blends in
        // with a weight of a tenth.
        state.first_byte(a, Duration::from_millis(40), true, Instant::now());
        let first = 0.040 / work_tokens(0.0, 300, 0.0);
        let view = state.load_view(STALE);
        assert_eq!(view.pending_prefill_tokens, 200);
        assert!(close(view.prefill_pace_s, first), "{view:?}");
        state.first_byte(b, Duration::from_millis(90), true, Instant::now());
        let second = 0.090 / work_tokens(300.0, 200, 1.0);
        let view = state.load_view(STALE);
        assert_eq!(view.pending_prefill_tokens, 0);
        assert!(close(view.prefill_pace_s, first + 0.1 * (second - first)));
        // A whole non-streamed answer, and a 5xx, are no pace samples.
        state.first_byte(c, Duration::from_secs(5), true, Instant::now());
        let e = state.begin(10, true);
        state.first_byte(e, Duration::from_secs(5), false, Instant::now());
        assert!(close(
            state.load_view(STALE).prefill_pace_s,
            view.prefill_pace_s
        ));
        // Unsampled for a while, the pace decays, so a shunned endpoint is
        // tried again.
        tokio::time::advance(PACE_DECAY * 3).await;
        let later = state.load_view(STALE).prefill_pace_s;
        assert!(later > 0.0 && later < view.prefill_pace_s / 15.0, "{later}");
        // Back from the idle spell, its next answer counts almost whole
        // (weight 1 - e^-3, not a tenth): it is priced by what it does now.
        let f = state.begin(100, true);
        state.first_byte(f, Duration::from_millis(60), true, Instant::now());
        let sample = 0.060 / work_tokens(f.ahead as f64, f.tokens, f.in_flight as f64);
        let weight = 1.0 - (-3.0f64).exp();
        let back = state.load_view(STALE).prefill_pace_s;
        assert!(close(back, later + weight * (sample - later)), "{back}");
        assert!(back > 0.9 * sample, "{back} vs {sample}");
    }
}
