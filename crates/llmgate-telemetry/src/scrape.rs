//! Scraping a replica's `/metrics` and a node agent's `/gpu` into a
//! [`TelemetryCell`] the routing path reads without blocking.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{EngineMetrics, GpuReading, GpuReport, GpuSummary};

/// Default scrape period.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Default per-scrape timeout (connect, headers and body together).
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);
/// Default staleness bound: telemetry older than this is not trusted.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);
/// Largest response body read from a target (vLLM's `/metrics` with
/// histograms is a few hundred KiB).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The client type [`scrape_client`] builds: pooled, HTTP/1.1 keep-alive.
pub type ScrapeClient = Client<HttpConnector, Empty<Bytes>>;

/// A pooled hyper client suitable for scraping (share one for the whole fleet).
pub fn scrape_client() -> ScrapeClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(2)
        .build(connector)
}

/// The latest telemetry of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The engine's own load (`None`: not scraped, not an engine, or stale).
    pub engine: Option<EngineMetrics>,
    /// The replica's GPUs (empty: not scraped, no GPU, or stale).
    pub gpus: Vec<GpuReading>,
    /// When the oldest part included here was taken.
    pub at: Instant,
}

impl Snapshot {
    /// The GPUs condensed for a load score.
    pub fn gpu_summary(&self) -> Option<GpuSummary> {
        GpuSummary::from_readings(&self.gpus)
    }
}

#[derive(Debug, Default)]
struct CellState {
    engine: Option<(EngineMetrics, Instant)>,
    gpus: Option<(Arc<Vec<GpuReading>>, Option<GpuSummary>, Instant)>,
}

/// The latest telemetry of one replica, shared between a scraper (writer)
/// and the balancer (reader).
///
/// Cheap to clone (an `Arc`). Reads take a `parking_lot` read lock held for a
/// copy, never across I/O, so the routing path never waits on a scrape. The
/// engine part and the GPU part age independently: each is stamped when it
/// was scraped, and a part older than the caller's bound is left out.
///
/// ```
/// use std::time::Duration;
/// use llmgate_telemetry::{EngineMetrics, TelemetryCell};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let cell = TelemetryCell::new();
/// cell.set_engine(EngineMetrics::from_text("vllm:num_requests_waiting 3\n").unwrap());
/// assert_eq!(cell.engine(Duration::from_secs(30)).unwrap().waiting, 3.0);
/// tokio::time::sleep(Duration::from_secs(31)).await;
/// assert!(cell.fresh(Duration::from_secs(30)).is_none()); // stale: not trusted
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct TelemetryCell {
    state: Arc<RwLock<CellState>>,
}

fn is_fresh(at: Instant, now: Instant, max_age: Duration) -> bool {
    now.saturating_duration_since(at) <= max_age
}

impl TelemetryCell {
    /// An empty cell (nothing fresh).
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores engine metrics taken now.
    pub fn set_engine(&self, m: EngineMetrics) {
        self.set_engine_at(m, Instant::now());
    }

    /// Stores engine metrics taken at `at`.
    pub fn set_engine_at(&self, m: EngineMetrics, at: Instant) {
        self.state.write().engine = Some((m, at));
    }

    /// Stores GPU readings taken now.
    pub fn set_gpus(&self, gpus: Vec<GpuReading>) {
        self.set_gpus_at(gpus, Instant::now());
    }

    /// Stores GPU readings taken at `at`.
    pub fn set_gpus_at(&self, gpus: Vec<GpuReading>, at: Instant) {
        let summary = GpuSummary::from_readings(&gpus);
        self.state.write().gpus = Some((Arc::new(gpus), summary, at));
    }

    /// Forgets everything (e.g. when a replica restarts).
    pub fn clear(&self) {
        *self.state.write() = CellState::default();
    }

    /// The parts no older than `max_age`, or `None` when nothing is that fresh.
    pub fn fresh(&self, max_age: Duration) -> Option<Snapshot> {
        self.snapshot(Some(max_age))
    }

    /// Everything held, however old (for display; routing uses [`fresh`](Self::fresh)).
    pub fn latest(&self) -> Option<Snapshot> {
        self.snapshot(None)
    }

    fn snapshot(&self, max_age: Option<Duration>) -> Option<Snapshot> {
        let now = Instant::now();
        let ok = |at: Instant| max_age.is_none_or(|m| is_fresh(at, now, m));
        let st = self.state.read();
        let engine = st.engine.filter(|(_, at)| ok(*at));
        let gpus = st.gpus.as_ref().filter(|(_, _, at)| ok(*at));
        let at = match (engine.map(|(_, a)| a), gpus.map(|(_, _, a)| *a)) {
            (None, None) => return None,
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => a.min(b),
        };
        Some(Snapshot {
            engine: engine.map(|(m, _)| m),
            gpus: gpus.map(|(g, _, _)| g.as_ref().clone()).unwrap_or_default(),
            at,
        })
    }

    /// Fresh engine metrics, without allocating (hot path).
    pub fn engine(&self, max_age: Duration) -> Option<EngineMetrics> {
        let now = Instant::now();
        self.state
            .read()
            .engine
            .filter(|(_, at)| is_fresh(*at, now, max_age))
            .map(|(m, _)| m)
    }

    /// A fresh summary of the GPUs, without allocating (hot path). `None`
    /// when stale, never scraped, or the replica reports no GPU.
    pub fn gpu_summary(&self, max_age: Duration) -> Option<GpuSummary> {
        let now = Instant::now();
        self.state
            .read()
            .gpus
            .as_ref()
            .filter(|(_, _, at)| is_fresh(*at, now, max_age))
            .and_then(|(_, s, _)| *s)
    }

    /// Age of the most recent part, `None` when empty.
    pub fn age(&self) -> Option<Duration> {
        let now = Instant::now();
        let st = self.state.read();
        let e = st.engine.map(|(_, a)| a);
        let g = st.gpus.as_ref().map(|(_, _, a)| *a);
        e.into_iter()
            .chain(g)
            .max()
            .map(|a| now.saturating_duration_since(a))
    }
}

/// What to scrape for one replica and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeTarget {
    /// The replica's id: the `target` label of the scraper's metrics (keep it bounded).
    pub name: String,
    /// The engine's Prometheus endpoint, e.g. `http://10.0.0.5:8000/metrics`.
    pub metrics_url: Option<String>,
    /// A node agent's (or a replica's) `GET /gpu` JSON endpoint.
    pub gpu_url: Option<String>,
    /// Period between scrapes.
    pub interval: Duration,
    /// Limit on one scrape (connect, headers and body together).
    pub timeout: Duration,
}

impl ScrapeTarget {
    /// A target named `name` with nothing to scrape yet and default interval/timeout.
    pub fn new(name: impl Into<String>) -> Self {
        ScrapeTarget {
            name: name.into(),
            metrics_url: None,
            gpu_url: None,
            interval: DEFAULT_SCRAPE_INTERVAL,
            timeout: DEFAULT_SCRAPE_TIMEOUT,
        }
    }

    /// Sets the engine's `/metrics` URL.
    pub fn metrics_url(mut self, url: impl Into<String>) -> Self {
        self.metrics_url = Some(url.into());
        self
    }

    /// Sets the `/gpu` URL.
    pub fn gpu_url(mut self, url: impl Into<String>) -> Self {
        self.gpu_url = Some(url.into());
        self
    }

    /// Sets the scrape period.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Sets the per-scrape timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
}

/// Why one scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The URL is not a valid absolute `http://` URI.
    #[error("invalid url {0:?}")]
    InvalidUrl(String),
    /// No complete answer within the timeout.
    #[error("scrape timed out")]
    Timeout,
    /// Connecting or talking HTTP failed.
    #[error("transport: {0}")]
    Transport(#[source] Box<dyn StdError + Send + Sync>),
    /// The target answered with a non-2xx status.
    #[error("target answered {0}")]
    Status(StatusCode),
    /// The body could not be read, or was larger than [`MAX_BODY_BYTES`].
    #[error("body: {0}")]
    Body(#[source] Box<dyn StdError + Send + Sync>),
    /// The `/gpu` body is not a `GpuReport`.
    #[error("decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Starts background scrapes that fill a [`TelemetryCell`].
///
/// See [`Scraper::spawn`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Scraper;

/// Keeps a scrape task alive; dropping it (or [`ScrapeHandle::abort`]) stops the task.
#[derive(Debug)]
pub struct ScrapeHandle {
    task: AbortHandle,
}

impl ScrapeHandle {
    /// Stops the scrape task now.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for ScrapeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Metrics,
    Gpu,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Gpu => "gpu",
        }
    }
}

impl Scraper {
    /// Scrapes `target` every interval into a new [`TelemetryCell`].
    ///
    /// `client` is the fleet's shared pooled client (any body type with a
    /// `Default`, e.g. `Empty<Bytes>` or `Full<Bytes>`); it is cloned, which
    /// shares its pool. The first scrape starts at once. A scrape that fails
    /// or times out leaves the previous value in the cell to age out, logs at
    /// debug level and counts `llmgate_telemetry_scrape_errors_total{target,kind}`.
    /// Must be called inside a tokio runtime; the task stops when the handle drops.
    pub fn spawn<C, B>(target: ScrapeTarget, client: Client<C, B>) -> (TelemetryCell, ScrapeHandle)
    where
        C: Connect + Clone + Send + Sync + 'static,
        B: http_body::Body + Default + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let cell = TelemetryCell::new();
        let handle = Self::spawn_into(target, client, cell.clone());
        (cell, handle)
    }

    /// Like [`spawn`](Self::spawn), filling an existing cell.
    pub fn spawn_into<C, B>(
        target: ScrapeTarget,
        client: Client<C, B>,
        cell: TelemetryCell,
    ) -> ScrapeHandle
    where
        C: Connect + Clone + Send + Sync + 'static,
        B: http_body::Body + Default + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let task = tokio::spawn(run(target, client, cell)).abort_handle();
        ScrapeHandle { task }
    }

    /// Scrapes an engine's `/metrics` once.
    pub async fn scrape_engine<C, B>(
        client: &Client<C, B>,
        url: &str,
        timeout: Duration,
    ) -> Result<Option<EngineMetrics>, ScrapeError>
    where
        C: Connect + Clone + Send + Sync + 'static,
        B: http_body::Body + Default + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let uri = parse_uri(url)?;
        let body = fetch(client, &uri, timeout, Kind::Metrics).await?;
        let text = String::from_utf8_lossy(&body);
        Ok(EngineMetrics::from_text(&text))
    }

    /// Scrapes a `/gpu` endpoint once.
    pub async fn scrape_gpus<C, B>(
        client: &Client<C, B>,
        url: &str,
        timeout: Duration,
    ) -> Result<Vec<GpuReading>, ScrapeError>
    where
        C: Connect + Clone + Send + Sync + 'static,
        B: http_body::Body + Default + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let uri = parse_uri(url)?;
        let body = fetch(client, &uri, timeout, Kind::Gpu).await?;
        Ok(serde_json::from_slice::<GpuReport>(&body)?.gpus)
    }
}

/// A stable offset in `[0, period)` derived from the target's name.
fn phase(name: &str, period: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let nanos = period.as_nanos().max(1);
    Duration::from_nanos((u128::from(h.finish()) % nanos) as u64)
}

fn parse_uri(url: &str) -> Result<Uri, ScrapeError> {
    match url.parse::<Uri>() {
        Ok(u) if u.scheme().is_some() && u.authority().is_some() => Ok(u),
        _ => Err(ScrapeError::InvalidUrl(url.to_string())),
    }
}

async fn fetch<C, B>(
    client: &Client<C, B>,
    uri: &Uri,
    timeout: Duration,
    kind: Kind,
) -> Result<Bytes, ScrapeError>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: http_body::Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let accept = match kind {
        Kind::Metrics => "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        Kind::Gpu => "application/json",
    };
    let req = Request::get(uri.clone())
        .header(header::ACCEPT, accept)
        .body(B::default())
        .map_err(|e| ScrapeError::InvalidUrl(e.to_string()))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| ScrapeError::Transport(Box::new(e)))?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(ScrapeError::Body)?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ScrapeError::Timeout))
}

async fn run<C, B>(target: ScrapeTarget, client: Client<C, B>, cell: TelemetryCell)
where
    C: Connect + Clone + Send + Sync + 'static,
    B: http_body::Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let name = target.name.clone();
    let errors = |kind: Kind| {
        metrics::counter!(
            "llmgate_telemetry_scrape_errors_total",
            "target" => name.clone(),
            "kind" => kind.as_str()
        )
    };
    let record = |kind: Kind, e: &ScrapeError| {
        errors(kind).increment(1);
        tracing::debug!(target_name = %target.name, kind = kind.as_str(), error = %e, "telemetry scrape failed");
    };
    let metrics_uri = target.metrics_url.as_deref().map(parse_uri);
    let gpu_uri = target.gpu_url.as_deref().map(parse_uri);
    for (kind, u) in [(Kind::Metrics, &metrics_uri), (Kind::Gpu, &gpu_uri)] {
        if let Some(Err(e)) = u {
            tracing::warn!(target_name = %target.name, kind = kind.as_str(), error = %e, "telemetry scrape target disabled");
        }
    }
    // First scrape at once; later ones on a per-target phase, so a fleet
    // started together does not scrape in lock-step.
    let period = target.interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + phase(&target.name, period), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            ticker.tick().await;
        }
        let engine = async {
            match &metrics_uri {
                Some(Ok(uri)) => {
                    let started = Instant::now();
                    let r = fetch(&client, uri, target.timeout, Kind::Metrics).await;
                    metrics::histogram!("llmgate_telemetry_scrape_duration_seconds", "kind" => "metrics")
                        .record(started.elapsed().as_secs_f64());
                    Some(r.map(|b| EngineMetrics::from_text(&String::from_utf8_lossy(&b))))
                }
                Some(Err(e)) => Some(Err(ScrapeError::InvalidUrl(e.to_string()))),
                None => None,
            }
        };
        let gpus = async {
            match &gpu_uri {
                Some(Ok(uri)) => {
                    let started = Instant::now();
                    let r = fetch(&client, uri, target.timeout, Kind::Gpu).await;
                    metrics::histogram!("llmgate_telemetry_scrape_duration_seconds", "kind" => "gpu")
                        .record(started.elapsed().as_secs_f64());
                    Some(r.and_then(|b| Ok(serde_json::from_slice::<GpuReport>(&b)?.gpus)))
                }
                Some(Err(e)) => Some(Err(ScrapeError::InvalidUrl(e.to_string()))),
                None => None,
            }
        };
        let (engine, gpus) = tokio::join!(engine, gpus);
        let now = Instant::now();
        match engine {
            Some(Ok(Some(m))) => cell.set_engine_at(m, now),
            // Answered, but not with engine metrics: nothing to trust.
            Some(Ok(None)) => {}
            Some(Err(e)) => record(Kind::Metrics, &e),
            None => {}
        }
        match gpus {
            Some(Ok(g)) => cell.set_gpus_at(g, now),
            Some(Err(e)) => record(Kind::Gpu, &e),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::tests_support::reading;

    fn metrics(waiting: f64) -> EngineMetrics {
        EngineMetrics::from_text(&format!("vllm:num_requests_waiting {waiting}\n")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn parts_age_independently() {
        let max = Duration::from_secs(30);
        let cell = TelemetryCell::new();
        assert!(cell.fresh(max).is_none());
        assert!(cell.latest().is_none());
        assert_eq!(cell.age(), None);

        cell.set_gpus(vec![reading(0, 40.0)]);
        tokio::time::sleep(Duration::from_secs(20)).await;
        cell.set_engine(metrics(2.0));
        let snap = cell.fresh(max).unwrap();
        assert_eq!(snap.engine.unwrap().waiting, 2.0);
        assert_eq!(snap.gpus.len(), 1);
        assert_eq!(snap.gpu_summary().unwrap().mean_utilization_pct, 40.0);
        assert_eq!(cell.age(), Some(Duration::ZERO));
        // `at` is the older part's stamp.
        assert_eq!(Instant::now() - snap.at, Duration::from_secs(20));

        // Exactly max_age old is still fresh; a hair older is not.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(cell.gpu_summary(max).is_some());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(cell.gpu_summary(max).is_none());
        let snap = cell.fresh(max).unwrap();
        assert!(snap.gpus.is_empty());
        assert!(snap.engine.is_some());

        tokio::time::sleep(Duration::from_secs(21)).await;
        assert!(cell.fresh(max).is_none());
        assert!(cell.engine(max).is_none());
        // Still visible for display, and a bigger bound still accepts it.
        assert_eq!(cell.latest().unwrap().gpus.len(), 1);
        assert!(cell.engine(Duration::from_secs(60)).is_some());

        // A new value makes it fresh again; clear forgets.
        cell.set_engine(metrics(5.0));
        assert_eq!(cell.engine(max).unwrap().waiting, 5.0);
        cell.clear();
        assert!(cell.latest().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn empty_gpu_list_is_fresh_but_has_no_summary() {
        let cell = TelemetryCell::new();
        cell.set_gpus(Vec::new());
        let snap = cell.fresh(DEFAULT_MAX_AGE).unwrap();
        assert!(snap.gpus.is_empty() && snap.engine.is_none());
        assert!(cell.gpu_summary(DEFAULT_MAX_AGE).is_none());
    }

    #[test]
    fn phases_are_stable_and_within_the_period() {
        let p = Duration::from_secs(1);
        assert_eq!(phase("a", p), phase("a", p));
        let distinct: std::collections::HashSet<_> =
            (0..50).map(|i| phase(&format!("r{i}"), p)).collect();
        assert!(distinct.len() > 40);
        assert!(distinct.iter().all(|d| *d < p));
        assert_eq!(phase("x", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn uri_validation() {
        assert!(parse_uri("http://127.0.0.1:9/metrics").is_ok());
        assert!(matches!(
            parse_uri("/metrics"),
            Err(ScrapeError::InvalidUrl(_))
        ));
        assert!(matches!(
            parse_uri("not a url"),
            Err(ScrapeError::InvalidUrl(_))
        ));
        let t = ScrapeTarget::new("r1")
            .metrics_url("http://a/metrics")
            .gpu_url("http://a/gpu")
            .interval(Duration::from_secs(2))
            .timeout(Duration::from_secs(1));
        assert_eq!(t.name, "r1");
        assert_eq!(t.metrics_url.as_deref(), Some("http://a/metrics"));
        assert_eq!(t.interval, Duration::from_secs(2));
    }
}
