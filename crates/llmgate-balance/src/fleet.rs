//! [`Fleet`]: endpoints from a static list, a watched file or an admin
//! handle, each wrapped in its per-endpoint stack, with active health checks
//! and telemetry scraping, behind one [`GpuAwareBalance`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use llmgate_breaker::{BreakerConfig, BreakerHandle, Mode};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::discover::Change;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, ServiceBuilder, ServiceExt};

use llmgate_core::BufferedBody;
use llmgate_telemetry::{ScrapeTarget, Scraper};

use crate::attempt::{http_client, Attempt, AttemptTimeouts, HttpClient};
use crate::balance::{BalanceConfig, EndpointReport, GpuAwareBalance};
use crate::endpoint::{EndpointSpec, EndpointState, Health};
use crate::strategy::StrategyKind;
use crate::tracked::Endpoint;
use crate::upstream::{Target, Upstream, UpstreamConfig};

/// Active health-check settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    /// Between probes.
    pub interval: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Consecutive failures that take an endpoint out of rotation.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that bring it back.
    pub healthy_threshold: u32,
    /// An endpoint whose in-flight requests made no progress for this long,
    /// while another endpoint did, is ejected (outlier detection).
    pub stall_after: Duration,
    /// How long an ejection lasts at least.
    pub ejection: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            stall_after: Duration::from_secs(30),
            ejection: Duration::from_secs(30),
        }
    }
}

/// Everything a fleet needs besides its endpoints.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The balancer.
    pub balance: BalanceConfig,
    /// Per-attempt timeouts.
    pub timeouts: AttemptTimeouts,
    /// Health checks (`None`: off, endpoints are trusted).
    pub health: Option<HealthConfig>,
    /// Per-endpoint circuit breaker, always in not-ready mode (`None`: off).
    pub breaker: Option<BreakerConfig>,
    /// Telemetry scrape interval and timeout (`None`: no scraping).
    pub scrape: Option<(Duration, Duration)>,
    /// Speak HTTP/2 with prior knowledge to replicas.
    pub h2c: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            balance: BalanceConfig::default(),
            timeouts: AttemptTimeouts::default(),
            health: Some(HealthConfig::default()),
            breaker: Some(BreakerConfig::new()),
            scrape: Some((Duration::from_secs(5), Duration::from_secs(2))),
            h2c: false,
        }
    }
}

/// The balancer type of a [`Fleet`].
pub type FleetBalance = GpuAwareBalance<FleetDiscover, Request<BufferedBody>>;

/// Discovery fed by a [`FleetHandle`]: a [`tower::discover::Discover`] over a
/// channel of changes.
#[derive(Debug)]
pub struct FleetDiscover {
    rx: mpsc::UnboundedReceiver<Change<Arc<str>, Endpoint>>,
    /// The waker the channel holds since a poll found it empty. The
    /// balancer polls for changes twice a request and nearly always finds
    /// none: while the channel is still empty and open and that waker would
    /// wake the same task, its registration stands and the poll (coop
    /// budget, waker exchange) can be skipped.
    parked: Option<Waker>,
}

impl FleetDiscover {
    fn new(rx: mpsc::UnboundedReceiver<Change<Arc<str>, Endpoint>>) -> Self {
        FleetDiscover { rx, parked: None }
    }
}

impl futures_util::Stream for FleetDiscover {
    type Item = Result<Change<Arc<str>, Endpoint>, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(w) = &this.parked {
            if w.will_wake(cx.waker()) && this.rx.is_empty() && !this.rx.is_closed() {
                return Poll::Pending;
            }
        }
        let r = this.rx.poll_recv(cx);
        this.parked = match r {
            Poll::Pending => Some(cx.waker().clone()),
            Poll::Ready(_) => None,
        };
        r.map(|o| o.map(Ok))
    }
}

struct Member {
    state: Arc<EndpointState>,
    breaker: Option<BreakerHandle>,
    tasks: Vec<JoinHandle<()>>,
    /// Dropping it stops the member's telemetry scraping.
    _scrape: Option<llmgate_telemetry::ScrapeHandle>,
}

impl Drop for Member {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Inner {
    config: FleetConfig,
    /// Requests and health probes.
    upstream: Upstream,
    /// Telemetry scrapes.
    client: HttpClient,
    tx: mpsc::UnboundedSender<Change<Arc<str>, Endpoint>>,
    members: Mutex<HashMap<Arc<str>, Member>>,
}

/// Adds, drains and removes endpoints at run time (admin API, file watch).
#[derive(Clone)]
pub struct FleetHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHandle")
            .field("endpoints", &self.inner.members.lock().len())
            .finish()
    }
}

/// A balanced fleet of HTTP replicas.
#[derive(Clone, Debug)]
pub struct Fleet {
    balance: FleetBalance,
    handle: FleetHandle,
}

/// Why a fleet operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// The spec is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No endpoint has that id.
    #[error("no replica with id {0:?}")]
    Unknown(String),
}

impl Fleet {
    /// A fleet of `specs` (may be empty). Must run inside a tokio runtime.
    pub fn new(config: FleetConfig, specs: Vec<EndpointSpec>) -> Result<Fleet, FleetError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let balance = GpuAwareBalance::new(FleetDiscover::new(rx), config.balance.clone());
        let client = http_client(config.h2c);
        let handle = FleetHandle {
            inner: Arc::new(Inner {
                upstream: match config.h2c {
                    true => Upstream::h2c(client.clone()),
                    false => Upstream::http1(UpstreamConfig::default()),
                },
                client,
                config,
                tx,
                members: Mutex::new(HashMap::new()),
            }),
        };
        for spec in specs {
            handle.upsert(spec)?;
        }
        Ok(Fleet { balance, handle })
    }

    /// The balancer: a cloneable `Service<Request<BufferedBody>>`.
    pub fn service(&self) -> FleetBalance {
        self.balance.clone()
    }

    /// The handle for run-time changes.
    pub fn handle(&self) -> &FleetHandle {
        &self.handle
    }

    /// Every endpoint with readiness, load, health and breaker state.
    pub fn report(&self) -> Vec<(EndpointReport, Option<llmgate_breaker::BreakerState>)> {
        let reports = self.balance.endpoints();
        let members = self.handle.inner.members.lock();
        reports
            .into_iter()
            .map(|r| {
                let b = members
                    .get(r.state.id())
                    .and_then(|m| m.breaker.as_ref().map(|b| b.state()));
                (r, b)
            })
            .collect()
    }

    /// Endpoints that are healthy (or not yet checked) and not draining.
    pub fn healthy_count(&self) -> usize {
        self.balance.refresh();
        self.handle
            .inner
            .members
            .lock()
            .values()
            .filter(|m| m.state.health() != Health::Unhealthy && !m.state.is_draining())
            .count()
    }

    /// Models served by healthy endpoints (union, sorted).
    pub fn models(&self) -> Vec<String> {
        let members = self.handle.inner.members.lock();
        let mut out: Vec<String> = members
            .values()
            .filter(|m| m.state.health() != Health::Unhealthy && !m.state.is_draining())
            .flat_map(|m| m.state.spec().models.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Switches the routing strategy at run time.
    pub fn set_strategy(&self, kind: StrategyKind) {
        self.balance.set_strategy(kind);
    }

    /// The strategy in use.
    pub fn strategy(&self) -> StrategyKind {
        self.balance.strategy()
    }
}

impl FleetHandle {
    /// Adds an endpoint, or replaces the one with the same id (in-flight
    /// requests of the old one finish undisturbed).
    pub fn upsert(&self, spec: EndpointSpec) -> Result<(), FleetError> {
        spec.validate().map_err(FleetError::Invalid)?;
        let cfg = &self.inner.config;
        let state = EndpointState::new(spec.clone());
        let target = Target::parse(&spec.url)
            .map_err(|e| FleetError::Invalid(format!("replica {}: {e}", spec.id)))?;
        let attempt = Attempt::to_target(self.inner.upstream.clone(), target.clone(), cfg.timeouts);
        let (inner, breaker) = match &cfg.breaker {
            Some(b) => {
                let layer = b.clone().name(spec.id.clone()).mode(Mode::NotReady).build();
                let handle = layer.handle();
                let svc = layer.layer(attempt).map_response(|r: Response<_>| {
                    r.map(|b| b.map_err(Into::<BoxError>::into).boxed_unsync())
                });
                (BoxCloneSyncService::new(svc), Some(handle))
            }
            None => (BoxCloneSyncService::new(attempt), None),
        };
        let inner = ServiceBuilder::new().service(inner);
        let endpoint = Endpoint::new(state.clone(), inner, cfg.balance.staleness);
        let mut tasks = Vec::new();
        if let Some(h) = cfg.health {
            tasks.push(tokio::spawn(health_loop(
                self.inner.upstream.clone(),
                target,
                state.clone(),
                h,
                Arc::downgrade(&self.inner),
            )));
        }
        let mut scrape = None;
        if let Some((interval, timeout)) = cfg.scrape {
            let metrics_url = spec
                .metrics_url
                .clone()
                .unwrap_or_else(|| format!("{}/metrics", spec.url));
            let mut target = ScrapeTarget::new(spec.id.clone())
                .interval(interval)
                .timeout(timeout);
            if !metrics_url.is_empty() {
                target = target.metrics_url(metrics_url);
            }
            if let Some(g) = spec.gpu_url.clone().filter(|g| !g.is_empty()) {
                target = target.gpu_url(g);
            }
            // Scrapes share one pooled client.
            let (cell, handle) = Scraper::spawn(target, self.inner.client.clone());
            state.set_telemetry(cell);
            scrape = Some(handle);
        }
        let id = state.id().clone();
        self.inner.members.lock().insert(
            id.clone(),
            Member {
                state,
                breaker,
                tasks,
                _scrape: scrape,
            },
        );
        let _ = self.inner.tx.send(Change::Insert(id, endpoint));
        Ok(())
    }

    /// Removes an endpoint at once (in-flight requests still finish).
    pub fn remove(&self, id: &str) -> Result<(), FleetError> {
        let m = self.inner.members.lock().remove(id);
        match m {
            Some(m) => {
                let _ = self.inner.tx.send(Change::Remove(m.state.id().clone()));
                Ok(())
            }
            None => Err(FleetError::Unknown(id.to_string())),
        }
    }

    /// Drains an endpoint: no new requests; the balancer removes it once its
    /// in-flight requests end or `deadline` passes.
    pub fn drain(&self, id: &str, within: Duration) -> Result<(), FleetError> {
        let members = self.inner.members.lock();
        let m = members
            .get(id)
            .ok_or_else(|| FleetError::Unknown(id.to_string()))?;
        m.state.start_drain(Instant::now() + within);
        tracing::info!(endpoint = id, "draining");
        let state = m.state.clone();
        let weak = Arc::downgrade(&self.inner);
        drop(members);
        // Forget the member once the drain completes.
        tokio::spawn(async move {
            state.drained().await;
            if let Some(inner) = weak.upgrade() {
                let mut g = inner.members.lock();
                if g.get(state.id())
                    .is_some_and(|m| Arc::ptr_eq(&m.state, &state))
                {
                    g.remove(state.id());
                    let _ = inner.tx.send(Change::Remove(state.id().clone()));
                }
            }
        });
        Ok(())
    }

    /// The state of every endpoint.
    pub fn states(&self) -> Vec<Arc<EndpointState>> {
        self.inner
            .members
            .lock()
            .values()
            .map(|m| m.state.clone())
            .collect()
    }

    /// Replaces the set of endpoints with `specs`: new ids added, changed
    /// specs replaced, missing ids drained within `drain`.
    pub fn sync(&self, specs: Vec<EndpointSpec>, drain: Duration) -> Result<(), FleetError> {
        for s in &specs {
            s.validate().map_err(FleetError::Invalid)?;
        }
        let current: HashMap<Arc<str>, EndpointSpec> = self
            .inner
            .members
            .lock()
            .iter()
            .filter(|(_, m)| !m.state.is_draining())
            .map(|(k, m)| (k.clone(), m.state.spec().clone()))
            .collect();
        for s in &specs {
            if current.get(s.id.as_str()) != Some(s) {
                self.upsert(s.clone())?;
            }
        }
        for id in current.keys() {
            if !specs.iter().any(|s| s.id == **id) {
                self.drain(id, drain)?;
            }
        }
        Ok(())
    }

    /// Watches a TOML file of `[[replicas]]` and applies its changes (add,
    /// remove by draining within `drain`, change weight or any field) every
    /// `interval`.
    /// A file that does not parse is logged and ignored until fixed.
    pub fn watch_file(&self, path: PathBuf, interval: Duration, drain: Duration) -> JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut last: Option<String> = None;
            loop {
                match tokio::fs::read_to_string(&path).await {
                    Ok(text) if last.as_deref() != Some(text.as_str()) => {
                        match parse_replicas_file(&text) {
                            Ok(specs) => {
                                if let Err(e) = handle.sync(specs, drain) {
                                    tracing::warn!(file = %path.display(), error = %e, "replica file rejected");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(file = %path.display(), error = %e, "replica file does not parse")
                            }
                        }
                        last = Some(text);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot read replica file")
                    }
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicasFile {
    #[serde(default)]
    replicas: Vec<EndpointSpec>,
}

/// Parses a file of `[[replicas]]` tables.
pub fn parse_replicas_file(text: &str) -> Result<Vec<EndpointSpec>, String> {
    let f: ReplicasFile = toml::from_str(text).map_err(|e| e.to_string())?;
    Ok(f.replicas)
}

/// Probes one endpoint until it leaves the fleet; also ejects it when its
/// in-flight requests stall while another endpoint makes progress.
async fn health_loop(
    client: Upstream,
    target: Target,
    state: Arc<EndpointState>,
    cfg: HealthConfig,
    fleet: std::sync::Weak<Inner>,
) {
    let mut ok_run = 0u32;
    let mut fail_run = 0u32;
    let path = match state.spec().models.is_empty() {
        true => "/health",
        false => "/v1/models",
    };
    loop {
        let passed = probe(&client, &target, path, &state, cfg.timeout).await;
        if passed {
            ok_run += 1;
            fail_run = 0;
        } else {
            fail_run += 1;
            ok_run = 0;
        }
        let now_health = state.health();
        if passed
            && (ok_run >= cfg.healthy_threshold || now_health == Health::Unknown)
            && now_health != Health::Healthy
        {
            state.set_health(Health::Healthy);
            state.clear_ejection();
            tracing::info!(endpoint = %state.id(), "healthy");
            metrics::counter!("llmgate_health_transitions_total", "replica" => state.id().to_string(), "to" => "healthy").increment(1);
        } else if !passed && fail_run >= cfg.unhealthy_threshold && now_health != Health::Unhealthy
        {
            state.set_health(Health::Unhealthy);
            tracing::warn!(endpoint = %state.id(), "unhealthy");
            metrics::counter!("llmgate_health_transitions_total", "replica" => state.id().to_string(), "to" => "unhealthy").increment(1);
        }
        metrics::gauge!("llmgate_replica_healthy", "replica" => state.id().to_string()).set(
            if state.health() == Health::Unhealthy {
                0.0
            } else {
                1.0
            },
        );
        // Outlier ejection: stalled here while others progress.
        let now = Instant::now();
        if state.in_flight() > 0
            && now.saturating_duration_since(state.last_progress()) > cfg.stall_after
        {
            let others_progress = fleet.upgrade().is_some_and(|f| {
                f.members.lock().values().any(|m| {
                    !Arc::ptr_eq(&m.state, &state)
                        && now.saturating_duration_since(m.state.last_progress()) < cfg.stall_after
                })
            });
            if others_progress && state.ejected_until(now).is_none() {
                tracing::warn!(endpoint = %state.id(), "ejected: in-flight requests make no progress");
                metrics::counter!("llmgate_outlier_ejections_total", "replica" => state.id().to_string()).increment(1);
                state.eject_until(now + cfg.ejection);
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

async fn probe(
    client: &Upstream,
    target: &Target,
    path: &str,
    state: &EndpointState,
    timeout: Duration,
) -> bool {
    let Ok(req) = Request::get(path).body(BufferedBody::default()) else {
        return false;
    };
    let fut = async {
        let res = client.send(target, req).await.ok()?;
        let status = res.status();
        let body = res.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Some((status, body))) if status.is_success() => {
            let models = &state.spec().models;
            if models.is_empty() {
                return true;
            }
            // Readiness: /v1/models lists every model we route to it.
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let listed: Vec<&str> = v["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
                .unwrap_or_default();
            models.iter().all(|m| listed.contains(&m.as_str()))
        }
        _ => false,
    }
}
