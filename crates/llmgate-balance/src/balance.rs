//! [`GpuAwareBalance`]: a shared balancer over a set of ready endpoints.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower::load::Load;
use tower::{BoxError, Service};

use llmgate_core::{AvoidEndpoints, RequestMeta};

use crate::endpoint::{Admission, EndpointState};
use crate::error::{NoEndpoint, NoEndpointReason};
use crate::keyhash::TrustedKeys;
use crate::load::{EndpointLoad, LoadView};
use crate::ready::ReadySet;
use crate::strategy::{Candidate, GpuThresholds, Strategy, StrategyKind};

/// What the balancer must learn from a request.
pub trait RouteInfo {
    /// The request's metadata, if any.
    fn meta(&self) -> Option<&RequestMeta>;
    /// Endpoints a retry asked to avoid.
    fn avoid(&self) -> Option<&AvoidEndpoints>;
}

impl<B> RouteInfo for http::Request<B> {
    fn meta(&self) -> Option<&RequestMeta> {
        self.extensions().get::<RequestMeta>()
    }
    fn avoid(&self) -> Option<&AvoidEndpoints> {
        self.extensions().get::<AvoidEndpoints>()
    }
}

/// A balanced endpoint exposes the state the balancer routes by.
pub trait HasEndpointState {
    /// The endpoint's shared state.
    fn endpoint_state(&self) -> &Arc<EndpointState>;
}

/// Balancer settings.
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// Strategy at start.
    pub strategy: StrategyKind,
    /// When set, endpoints over these GPU thresholds are skipped by every
    /// strategy (unless all are over): the `ENABLE_GPU_AWARE` switch, which
    /// composes with the configured strategy instead of replacing it.
    pub gpu_filter: Option<GpuThresholds>,
    /// Telemetry older than this is ignored (default 30 s).
    pub staleness: Duration,
    /// Seed of randomized strategies.
    pub seed: u64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            strategy: StrategyKind::P2c,
            gpu_filter: None,
            staleness: Duration::from_secs(30),
            seed: 0x11_6a7e,
        }
    }
}

/// Wakes every task waiting on the balancer. Pending endpoints are polled
/// with one waker; several tasks (the queue worker, retries) may
/// wait at once, so the cache gets this waker and fans out.
#[derive(Default)]
struct WakeAll(Mutex<Vec<Waker>>);

impl WakeAll {
    fn register(&self, w: &Waker) {
        let mut g = self.0.lock();
        if !g.iter().any(|x| x.will_wake(w)) {
            g.push(w.clone());
        }
    }
}

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let waiters = std::mem::take(&mut *self.0.lock());
        for w in waiters {
            w.wake();
        }
    }
}

struct Shared<D: Discover, Req>
where
    D::Key: Hash + Eq,
{
    discover: Pin<Box<D>>,
    cache: ReadySet<D::Key, D::Service>,
    _req: std::marker::PhantomData<fn(Req)>,
    states: HashMap<D::Key, Arc<EndpointState>>,
    strategy: Box<dyn Strategy>,
    strategy_kind: StrategyKind,
    config: BalanceConfig,
    wake_all: Arc<WakeAll>,
    waker: Waker,
    discover_error: Option<String>,
    /// Per-pick buffers, kept between picks so routing does not allocate.
    scratch: Scratch,
    /// `llmgate_balance_picks_total` per endpoint, for the current strategy.
    pick_counters: HashMap<Arc<str>, metrics::Counter, TrustedKeys>,
}

#[derive(Default)]
struct Scratch {
    idx: Vec<usize>,
    views: Vec<LoadView>,
    ids: Vec<Arc<str>>,
    keep: Vec<bool>,
    /// Always empty between picks: only its allocation is kept.
    cands: Vec<Candidate<'static>>,
}

/// A load balancer over any [`Discover`] whose endpoints report
/// [`EndpointLoad`] and expose their [`EndpointState`], with a pluggable
/// [`Strategy`].
///
/// Endpoints that are not ready (at their concurrency cap, breaker open,
/// unhealthy, draining, ejected) wait in a pending set and are never
/// picked. `poll_ready` is ready when at least one
/// endpoint is; the choice among ready endpoints is made per request, because
/// model, prefix and session decide it. Cloning is cheap and all clones share
/// one pool, so it can sit below a retry layer.
pub struct GpuAwareBalance<D: Discover, Req>
where
    D::Key: Hash + Eq,
{
    shared: Arc<Mutex<Shared<D, Req>>>,
}

impl<D: Discover, Req> Clone for GpuAwareBalance<D, Req>
where
    D::Key: Hash + Eq,
{
    fn clone(&self) -> Self {
        GpuAwareBalance {
            shared: self.shared.clone(),
        }
    }
}

impl<D: Discover, Req> std::fmt::Debug for GpuAwareBalance<D, Req>
where
    D::Key: Hash + Eq,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.shared.lock();
        f.debug_struct("GpuAwareBalance")
            .field("endpoints", &g.states.len())
            .field("ready", &g.cache.ready_len())
            .field("strategy", &g.strategy_kind)
            .finish()
    }
}

/// One endpoint as the admin API shows it.
#[derive(Debug, Clone)]
pub struct EndpointReport {
    /// Shared state (spec, health, drain, counters).
    pub state: Arc<EndpointState>,
    /// Whether it is in the ready set right now.
    pub ready: bool,
    /// Its load view.
    pub load: LoadView,
}

impl<D, Req> GpuAwareBalance<D, Req>
where
    D: Discover,
    D::Key: Hash + Eq + Clone + Send + 'static,
    D::Service: Service<Req> + HasEndpointState,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    D::Error: Into<BoxError>,
{
    /// A balancer over `discover`.
    pub fn new(discover: D, config: BalanceConfig) -> Self {
        let wake_all = Arc::new(WakeAll::default());
        let shared = Shared {
            discover: Box::pin(discover),
            cache: ReadySet::default(),
            _req: std::marker::PhantomData,
            states: HashMap::new(),
            strategy: config.strategy.build(config.seed),
            strategy_kind: config.strategy,
            config,
            waker: Waker::from(wake_all.clone()),
            wake_all,
            discover_error: None,
            scratch: Scratch::default(),
            pick_counters: HashMap::default(),
        };
        GpuAwareBalance {
            shared: Arc::new(Mutex::new(shared)),
        }
    }

    /// Switches the strategy at run time (admin API).
    pub fn set_strategy(&self, kind: StrategyKind) {
        let mut g = self.shared.lock();
        g.strategy = kind.build(g.config.seed);
        g.strategy_kind = kind;
        g.pick_counters.clear();
    }

    /// The strategy in use.
    pub fn strategy(&self) -> StrategyKind {
        self.shared.lock().strategy_kind
    }

    /// Applies pending discovery changes and readiness updates without a
    /// request (admin API, `/ready`).
    pub fn refresh(&self) {
        let mut g = self.shared.lock();
        g.refresh();
    }

    /// Every endpoint with its readiness and load.
    pub fn endpoints(&self) -> Vec<EndpointReport> {
        let mut g = self.shared.lock();
        g.refresh();
        let staleness = g.config.staleness;
        let mut ready_ids = std::collections::HashSet::new();
        for i in 0..g.cache.ready_len() {
            if let Some((k, _)) = g.cache.get_ready_index(i) {
                if let Some(s) = g.states.get(k) {
                    ready_ids.insert(s.id().clone());
                }
            }
        }
        let mut out: Vec<_> = g
            .states
            .values()
            .map(|s| EndpointReport {
                state: s.clone(),
                ready: ready_ids.contains(s.id()),
                load: s.load_view(staleness),
            })
            .collect();
        out.sort_by(|a, b| a.state.id().cmp(b.state.id()));
        out
    }

    /// Number of endpoints known, and of those ready now.
    pub fn len(&self) -> (usize, usize) {
        let mut g = self.shared.lock();
        g.refresh();
        (g.states.len(), g.cache.ready_len())
    }
}

impl<D, Req> Shared<D, Req>
where
    D: Discover,
    D::Key: Hash + Eq + Clone + Send + 'static,
    D::Service: Service<Req> + HasEndpointState,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    D::Error: Into<BoxError>,
{
    /// Applies discovery changes, promotes endpoints that became ready and
    /// removes finished drains. Never blocks.
    fn refresh(&mut self) {
        self.refresh_at(Instant::now());
    }

    /// [`Self::refresh`] with the time already read.
    fn refresh_at(&mut self, now: Instant) {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        loop {
            match self.discover.as_mut().poll_discover(&mut cx) {
                Poll::Ready(Some(Ok(Change::Insert(key, svc)))) => {
                    let state = svc.endpoint_state().clone();
                    tracing::info!(endpoint = %state.id(), "endpoint added");
                    self.states.insert(key.clone(), state);
                    self.cache.push(key, svc);
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => self.remove(&key),
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    tracing::warn!(error = %e, "discovery error");
                    self.discover_error = Some(e.to_string());
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        // An endpoint stays in the ready set until it is polled again, even
        // after it turned unhealthy, draining or ejected. Demote those, so
        // that `poll_ready`, `len` and the admin report see the truth.
        for i in (0..self.cache.ready_len()).rev() {
            let admitted = self
                .cache
                .get_ready_index(i)
                .is_none_or(|(_, svc)| svc.endpoint_state().admission(now) == Admission::Open);
            if !admitted {
                if let Err(failed) = self.cache.check_ready_index::<Req>(&mut cx, i) {
                    tracing::warn!(error = %failed.1, "endpoint failed and was removed");
                    if let Some(s) = self.states.remove(&failed.0) {
                        self.strategy.removed(s.id());
                    }
                }
            }
        }
        loop {
            match self.cache.poll_pending::<Req>(&mut cx) {
                Poll::Ready(Ok(())) | Poll::Pending => break,
                Poll::Ready(Err(failed)) => {
                    // An endpoint's poll_ready failed: the set dropped it.
                    tracing::warn!(error = %failed.1, "endpoint failed and was removed");
                    if let Some(s) = self.states.remove(&failed.0) {
                        self.strategy.removed(s.id());
                    }
                }
            }
        }
        // Looked for before collecting: a finished drain is rare, and the
        // collect costs more than the look.
        if self.states.values().any(|s| s.drain_complete(now)) {
            let done: Vec<D::Key> = self
                .states
                .iter()
                .filter(|(_, s)| s.drain_complete(now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in done {
                self.remove(&k);
            }
        }
    }

    /// Whether any endpoint is healthy (or not yet checked) and not draining.
    fn any_healthy(&self) -> bool {
        self.states
            .values()
            .any(|s| !s.is_draining() && s.health() != crate::endpoint::Health::Unhealthy)
    }

    fn remove(&mut self, key: &D::Key) {
        self.cache.evict(key);
        if let Some(s) = self.states.remove(key) {
            tracing::info!(endpoint = %s.id(), "endpoint removed");
            self.strategy.removed(s.id());
        }
    }

    /// Chooses a ready endpoint for a request and sends it there.
    fn dispatch(
        &mut self,
        waiter: Option<&Waker>,
        req: Req,
    ) -> Result<<D::Service as Service<Req>>::Future, (Req, Option<NoEndpoint>)>
    where
        Req: RouteInfo,
    {
        let now = Instant::now();
        self.refresh_at(now);
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = loop {
            let chosen = match self.choose(&req, now, &mut scratch, waiter) {
                Ok(c) => c,
                Err(none) => break Err((req, none)),
            };
            let (ready_index, id) = chosen;
            let waker = self.waker.clone();
            let mut wcx = Context::from_waker(&waker);
            match self.cache.check_ready_index::<Req>(&mut wcx, ready_index) {
                Ok(true) => {
                    self.strategy.routed(req.meta(), &id);
                    let kind = self.strategy_kind.as_str();
                    self.pick_counters
                        .entry(id)
                        .or_insert_with_key(|id| {
                            metrics::counter!("llmgate_balance_picks_total", "replica" => id.to_string(), "strategy" => kind)
                        })
                        .increment(1);
                    break Ok(self.cache.call_ready_index(ready_index, req));
                }
                // Went back to pending (or failed and was removed): choose again.
                Ok(false) => continue,
                Err(failed) => {
                    if let Some(s) = self.states.remove(&failed.0) {
                        self.strategy.removed(s.id());
                    }
                    continue;
                }
            }
        };
        scratch.views.clear();
        scratch.ids.clear();
        self.scratch = scratch;
        result
    }

    /// Picks among the ready endpoints for `req`: its ready-cache index and
    /// id, or why there is none (`None`: wait, a waker is registered).
    fn choose(
        &mut self,
        req: &Req,
        now: Instant,
        scratch: &mut Scratch,
        waiter: Option<&Waker>,
    ) -> Result<(usize, Arc<str>), Option<NoEndpoint>>
    where
        Req: RouteInfo,
    {
        let meta = req.meta();
        let model = meta.and_then(|m| m.model.as_deref());
        let staleness = self.config.staleness;
        let Scratch {
            idx,
            views,
            ids,
            keep,
            cands: spare,
        } = scratch;
        idx.clear();
        views.clear();
        ids.clear();
        // Ready endpoints that serve the model and admit requests.
        for i in 0..self.cache.ready_len() {
            let Some((_, svc)) = self.cache.get_ready_index(i) else {
                continue;
            };
            let st = svc.endpoint_state();
            if !st.spec().serves(model) || st.admission(now) != Admission::Open {
                continue;
            }
            idx.push(i);
            views.push(st.load_view_at(staleness, now));
            ids.push(st.id().clone());
        }
        if idx.is_empty() {
            let any_serves = self
                .states
                .values()
                .any(|s| s.spec().serves(model) && !s.is_draining());
            if !any_serves {
                let reason = if self.states.is_empty() {
                    NoEndpointReason::NoEndpoints
                } else {
                    NoEndpointReason::ModelNotServed(model.unwrap_or("").to_string())
                };
                return Err(Some(NoEndpoint { reason }));
            }
            // Waiting makes sense for a full cap, an open breaker or an
            // ejection, which pass; not when every replica of the model
            // failed its health checks.
            let any_healthy = self.states.values().any(|s| {
                s.spec().serves(model)
                    && !s.is_draining()
                    && s.health() != crate::endpoint::Health::Unhealthy
            });
            if !any_healthy {
                return Err(Some(NoEndpoint {
                    reason: NoEndpointReason::NoHealthy,
                }));
            }
            if let Some(w) = waiter {
                self.wake_all.register(w);
            }
            return Err(None);
        }
        // Retry avoidance, unless it would leave nothing.
        if let Some(avoid) = req.avoid() {
            keep.clear();
            keep.extend(ids.iter().map(|id| !avoid.contains(id)));
            narrow(keep, idx, views, ids);
        }
        // Optional GPU pre-filter, unless every endpoint is over.
        if let Some(th) = self.config.gpu_filter {
            keep.clear();
            keep.extend(views.iter().map(|v| !th.exceeded(v)));
            narrow(keep, idx, views, ids);
        }
        let mut cands: Vec<Candidate<'_>> = std::mem::take(spare);
        cands.extend(
            ids.iter()
                .zip(views.iter())
                .map(|(id, load)| Candidate { id, load }),
        );
        let chosen = self.strategy.pick(meta, &cands);
        cands.clear();
        // Back to a `'static` element type for keeping: an in-place collect
        // of an empty vector, which keeps its allocation.
        *spare = cands
            .into_iter()
            .map(|_| -> Candidate<'static> { unreachable!("cleared") })
            .collect();
        Ok((
            idx[chosen.min(idx.len() - 1)],
            ids[chosen.min(ids.len() - 1)].clone(),
        ))
    }
}

impl<D, Req> Service<Req> for GpuAwareBalance<D, Req>
where
    D: Discover + Send + 'static,
    D::Key: Hash + Eq + Clone + Send + 'static,
    D::Service: Service<Req> + HasEndpointState + Load<Metric = EndpointLoad> + Send + 'static,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    <D::Service as Service<Req>>::Future: Send + 'static,
    <D::Service as Service<Req>>::Response: Send + 'static,
    D::Error: Into<BoxError>,
    Req: RouteInfo + Send + 'static,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = BalanceFuture<<D::Service as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut g = self.shared.lock();
        g.refresh();
        // Ready when a replica is, and also when there is nothing worth
        // waiting for (no replica, or none healthy): `call` then answers at
        // once with `NoEndpoint` instead of holding callers until their
        // deadlines.
        if g.cache.ready_len() > 0 || !g.any_healthy() {
            return Poll::Ready(Ok(()));
        }
        g.wake_all.register(cx.waker());
        // Check again after registering, so a wake that raced it is not lost.
        g.refresh();
        if g.cache.ready_len() > 0 || !g.any_healthy() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Choose now, not when the future is first polled: the chosen
        // endpoint's slot is taken before the next poll_ready, so a queue
        // above releases one request per free slot and keeps its order.
        let first = self.shared.lock().dispatch(None, req);
        let state = match first {
            Ok(fut) => State::Sent { fut },
            Err((_, Some(no))) => State::Failed {
                error: Some(no.into()),
            },
            Err((req, None)) => State::Waiting {
                pick: Box::pin(Dispatch {
                    shared: self.shared.clone(),
                    req: Some(req),
                }),
            },
        };
        BalanceFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`GpuAwareBalance`]: the chosen endpoint's future
    /// inline (no box on the common path, where an endpoint is ready at
    /// `call`), or the wait for one.
    pub struct BalanceFuture<F> {
        #[pin]
        state: State<F>,
    }
}

/// The wait for a ready endpoint, ending in its response future.
type Pick<F> = Pin<Box<dyn Future<Output = Result<F, BoxError>> + Send>>;

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Sent {
            #[pin]
            fut: F,
        },
        Waiting {
            pick: Pick<F>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F, T, E> Future for BalanceFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let fut = match self.as_mut().project().state.project() {
                StateProj::Sent { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")))
                }
                StateProj::Waiting { pick } => match std::task::ready!(pick.as_mut().poll(cx)) {
                    Ok(fut) => fut,
                    Err(e) => {
                        self.as_mut()
                            .project()
                            .state
                            .set(State::Failed { error: None });
                        return Poll::Ready(Err(e));
                    }
                },
            };
            self.as_mut().project().state.set(State::Sent { fut });
        }
    }
}

/// Waits until an endpoint that can serve the request is ready, then sends
/// it there.
struct Dispatch<D: Discover, Req>
where
    D::Key: Hash + Eq,
{
    shared: Arc<Mutex<Shared<D, Req>>>,
    req: Option<Req>,
}

impl<D: Discover, Req> Unpin for Dispatch<D, Req> where D::Key: Hash + Eq {}

impl<D, Req> Future for Dispatch<D, Req>
where
    D: Discover,
    D::Key: Hash + Eq + Clone + Send + 'static,
    D::Service: Service<Req> + HasEndpointState,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    D::Error: Into<BoxError>,
    Req: RouteInfo,
{
    type Output = Result<<D::Service as Service<Req>>::Future, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let req = self.req.take().expect("polled after completion");
        let shared = self.shared.clone();
        let mut g = shared.lock();
        let mut req = req;
        // Twice: a slot freed between the first attempt's look at the
        // endpoints and its waker's registration woke nobody; the second
        // attempt, made with the waker registered, sees it.
        for _ in 0..2 {
            match g.dispatch(Some(cx.waker()), req) {
                Ok(fut) => return Poll::Ready(Ok(fut)),
                Err((_, Some(no))) => return Poll::Ready(Err(no.into())),
                Err((back, None)) => req = back,
            }
        }
        drop(g);
        self.req = Some(req);
        Poll::Pending
    }
}

/// Keeps the candidates marked in `keep`, unless that would keep none or all.
fn narrow(keep: &[bool], idx: &mut Vec<usize>, views: &mut Vec<LoadView>, ids: &mut Vec<Arc<str>>) {
    if !keep.iter().any(|k| *k) || keep.iter().all(|k| *k) {
        return;
    }
    let mut it = keep.iter();
    idx.retain(|_| *it.next().unwrap_or(&true));
    let mut it = keep.iter();
    views.retain(|_| *it.next().unwrap_or(&true));
    let mut it = keep.iter();
    ids.retain(|_| *it.next().unwrap_or(&true));
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Empty};
    use llmgate_core::{BufferedBody, EndpointKind, ErrorResponse, ServedBy};
    use tower::discover::ServiceList;
    use tower::util::BoxCloneSyncService;
    use tower::{service_fn, ServiceExt};

    use crate::endpoint::{EndpointSpec, Health};
    use crate::tracked::Endpoint;

    type TestBalance = GpuAwareBalance<ServiceList<Vec<Endpoint>>, Request<BufferedBody>>;

    /// Endpoints that answer 200 at once; `models[i]` are those of `r{i}`.
    fn balance(models: &[&[&str]]) -> (TestBalance, Vec<Arc<EndpointState>>) {
        let mut states = Vec::new();
        let mut endpoints = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let spec = EndpointSpec::new(format!("r{i}"), format!("http://127.0.0.1:{}", 1000 + i))
                .models(m.iter().copied());
            let state = EndpointState::new(spec);
            let inner = BoxCloneSyncService::new(service_fn(|_req: Request<BufferedBody>| async {
                Ok::<_, BoxError>(Response::new(
                    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync(),
                ))
            }));
            endpoints.push(Endpoint::new(state.clone(), inner, Duration::from_secs(30)));
            states.push(state);
        }
        let config = BalanceConfig {
            strategy: StrategyKind::RoundRobin,
            ..BalanceConfig::default()
        };
        (
            GpuAwareBalance::new(ServiceList::new(endpoints), config),
            states,
        )
    }

    fn request(model: Option<&str>, avoid: &[&str]) -> Request<BufferedBody> {
        let mut req = Request::post("/v1/chat/completions")
            .body(BufferedBody::new(Bytes::from_static(b"{}")))
            .unwrap();
        let mut meta = RequestMeta::new(EndpointKind::Chat);
        meta.model = model.map(Arc::from);
        req.extensions_mut().insert(meta);
        if !avoid.is_empty() {
            req.extensions_mut().insert(AvoidEndpoints(
                avoid.iter().map(|a| Arc::from(*a)).collect(),
            ));
        }
        req
    }

    /// Sends `n` requests one by one; the endpoint ids that served them.
    async fn route(b: &TestBalance, n: usize, model: Option<&str>, avoid: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let res = b.clone().oneshot(request(model, avoid)).await.unwrap();
            let by = res.extensions().get::<ServedBy>().expect("ServedBy set");
            out.push(by.0.to_string());
        }
        out
    }

    #[tokio::test]
    async fn avoided_endpoint_is_skipped_while_another_is_ready() {
        let (b, states) = balance(&[&[], &[], &[]]);
        // Without avoidance, round robin reaches every endpoint.
        let plain = route(&b, 6, None, &[]).await;
        for id in ["r0", "r1", "r2"] {
            assert!(plain.iter().any(|x| x == id), "{plain:?}");
        }
        // A retry avoiding r0 never lands there.
        let avoid0 = route(&b, 12, None, &["r0"]).await;
        assert!(avoid0.iter().all(|x| x != "r0"), "{avoid0:?}");
        assert!(avoid0.iter().any(|x| x == "r1") && avoid0.iter().any(|x| x == "r2"));
        // Avoiding two leaves the third.
        let avoid01 = route(&b, 6, None, &["r0", "r1"]).await;
        assert!(avoid01.iter().all(|x| x == "r2"), "{avoid01:?}");
        // r1 not ready: avoiding r0 still finds r2, the other ready one.
        states[1].set_health(Health::Unhealthy);
        let r = route(&b, 6, None, &["r0"]).await;
        assert!(r.iter().all(|x| x == "r2"), "{r:?}");
        // Only the avoided endpoint is ready: it is used rather than nothing.
        states[2].set_health(Health::Unhealthy);
        let r = route(&b, 3, None, &["r0"]).await;
        assert!(r.iter().all(|x| x == "r0"), "{r:?}");
        // Avoiding every endpoint is the same as avoiding none.
        states[1].set_health(Health::Healthy);
        states[2].set_health(Health::Healthy);
        let all = route(&b, 6, None, &["r0", "r1", "r2"]).await;
        for id in ["r0", "r1", "r2"] {
            assert!(all.iter().any(|x| x == id), "{all:?}");
        }
    }

    #[tokio::test]
    async fn requests_go_only_to_endpoints_serving_their_model() {
        let (b, _states) = balance(&[&["special", "common"], &["common"], &["common"]]);
        let special = route(&b, 8, Some("special"), &[]).await;
        assert!(special.iter().all(|x| x == "r0"), "{special:?}");
        // Avoidance never leaves a model with no endpoint.
        let special = route(&b, 3, Some("special"), &["r0"]).await;
        assert!(special.iter().all(|x| x == "r0"), "{special:?}");
        let common = route(&b, 6, Some("common"), &[]).await;
        for id in ["r0", "r1", "r2"] {
            assert!(common.iter().any(|x| x == id), "{common:?}");
        }
        // No model named: any endpoint.
        let any = route(&b, 6, None, &[]).await;
        assert!(any.iter().any(|x| x == "r1"), "{any:?}");
        // A model nobody serves: NoEndpoint, 404.
        let err = b
            .clone()
            .oneshot(request(Some("unknown-model"), &[]))
            .await
            .unwrap_err();
        let no = err.downcast_ref::<NoEndpoint>().expect("NoEndpoint");
        assert_eq!(
            no.reason,
            NoEndpointReason::ModelNotServed("unknown-model".into())
        );
        assert_eq!(no.status(), StatusCode::NOT_FOUND);
        assert_eq!(no.code(), "model_not_found");
    }
    #[tokio::test]
    async fn endpoint_out_of_rotation_leaves_the_ready_set_at_once() {
        use tower::Service;
        let (mut b, states) = balance(&[&[], &[]]);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(b.poll_ready(&mut cx).is_ready());
        assert_eq!(b.len(), (2, 2));
        states[1].set_health(Health::Unhealthy);
        assert_eq!(b.len(), (2, 1));
        let report = b.endpoints();
        assert!(report[0].ready && !report[1].ready, "{report:?}");
        // r0, idle, finishes its drain at once and is gone.
        states[0].start_drain(Instant::now() + Duration::from_secs(60));
        assert_eq!(b.len(), (1, 0));
        states[1].set_health(Health::Healthy);
        assert!(b.poll_ready(&mut cx).is_ready());
        assert_eq!(b.len(), (1, 1));
        // Ejected (healthy, but out of rotation): the balancer is not ready.
        states[1].eject_until(Instant::now() + Duration::from_secs(60));
        assert!(b.poll_ready(&mut cx).is_pending());
        assert_eq!(b.len(), (1, 0));
        states[1].clear_ejection();
        assert!(b.poll_ready(&mut cx).is_ready());
        assert_eq!(b.len(), (1, 1));
    }
}
