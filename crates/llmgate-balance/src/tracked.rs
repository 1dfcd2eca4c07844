//! [`Endpoint`]: the balanced service of one replica. Gates admission (health,
//! drain, ejection, concurrency cap), reports [`EndpointLoad`], and tracks each
//! request until its body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use tower::load::Load;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use llmgate_core::{BufferedBody, EndpointError, RequestMeta, ServedBy};

use crate::attempt::BoxBody;
use crate::balance::HasEndpointState;
use crate::endpoint::{Admission, Dispatched, EndpointState};
use crate::load::EndpointLoad;

/// The type-erased stack below [`Endpoint`] (breaker, attempt, client).
pub type InnerService = BoxCloneSyncService<Request<BufferedBody>, Response<BoxBody>, BoxError>;

/// One replica as the balancer sees it.
pub struct Endpoint {
    state: Arc<EndpointState>,
    inner: InnerService,
    staleness: Duration,
    ejection_timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", self.state.id())
            .finish()
    }
}

impl Endpoint {
    /// Wraps `inner` (the stack that talks to the replica) for `state`.
    pub fn new(state: Arc<EndpointState>, inner: InnerService, staleness: Duration) -> Self {
        Endpoint {
            state,
            inner,
            staleness,
            ejection_timer: None,
        }
    }
}

impl HasEndpointState for Endpoint {
    fn endpoint_state(&self) -> &Arc<EndpointState> {
        &self.state
    }
}

impl Load for Endpoint {
    type Metric = EndpointLoad;
    fn load(&self) -> EndpointLoad {
        EndpointLoad(self.state.load_view(self.staleness).cost())
    }
}

impl Service<Request<BufferedBody>> for Endpoint {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Whatever keeps this endpoint pending (a full cap, an open breaker),
        // a change of health, drain or ejection must wake the balancer: a
        // request waiting for a replica learns then that none is healthy.
        self.state.readiness.register(cx.waker());
        loop {
            match self.state.admission(Instant::now()) {
                Admission::Open => {
                    self.ejection_timer = None;
                    // Never an error for a transient reason: the balancer would
                    // drop the endpoint for good.
                    return match self.inner.poll_ready(cx) {
                        Poll::Ready(Err(e)) => {
                            tracing::warn!(endpoint = %self.state.id(), error = %e, "endpoint stack not ready");
                            Poll::Pending
                        }
                        other => other,
                    };
                }
                Admission::Ejected(until) => {
                    self.state.readiness.register(cx.waker());
                    let timer = self
                        .ejection_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    timer.as_mut().reset(until);
                    if timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
                Admission::Full | Admission::Unhealthy | Admission::Draining => {
                    self.state.readiness.register(cx.waker());
                    // A change between the check and the registration would
                    // be missed: check once more.
                    if self.state.admission(Instant::now()) == Admission::Open {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn call(&mut self, req: Request<BufferedBody>) -> Self::Future {
        let state = &self.state;
        let (prompt, streamed) = req
            .extensions()
            .get::<RequestMeta>()
            .map_or((0, false), |m| (m.prompt_tokens, m.stream));
        let dispatched = state.begin(prompt, streamed);
        let guard = InFlight {
            state: Some(state.clone()),
            start: Instant::now(),
            ok: true,
            prefill: Some(dispatched),
        };
        EndpointFuture {
            fut: self.inner.call(req),
            guard: Some(guard),
        }
    }
}

/// Response future of [`Endpoint`]: written out rather than an async block,
/// so that it sits inline in the balancer's future instead of in a box of
/// its own.
pub struct EndpointFuture {
    fut: <InnerService as Service<Request<BufferedBody>>>::Future,
    /// Taken when the answer's head (or error) arrives.
    guard: Option<InFlight>,
}

impl Future for EndpointFuture {
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.fut.as_mut().poll(cx));
        let mut guard = self.guard.take().expect("polled after completion");
        let Some(state) = guard.state.as_ref() else {
            unreachable!("an in-flight guard keeps its state until finished")
        };
        Poll::Ready(match result {
            Ok(res) => {
                let now = Instant::now();
                guard.ok = !res.status().is_server_error();
                if let Some(d) = guard.prefill.take() {
                    // Only a successful stream's first token measures
                    // prefill: an error or rejection comes back at once.
                    let measures = res.status().is_success();
                    state.first_byte(d, now - guard.start, measures, now);
                }
                let (mut parts, body) = res.into_parts();
                parts.extensions.insert(ServedBy(state.id().clone()));
                let tracked = TrackedBody { inner: body, guard };
                Ok(Response::from_parts(parts, tracked.boxed_unsync()))
            }
            Err(e) => {
                let id = state.id().clone();
                guard.finish(false);
                Err(EndpointError::new(id, e).into())
            }
        })
    }
}

/// Counts a request in flight until dropped or finished.
struct InFlight {
    state: Option<Arc<EndpointState>>,
    start: Instant,
    /// The outcome known so far (a 5xx head is a failure even if the body
    /// is dropped before its end).
    ok: bool,
    /// Counted in the endpoint's pending prefill until the first byte.
    prefill: Option<Dispatched>,
}

impl InFlight {
    fn finish(mut self, ok: bool) {
        if let Some(s) = self.state.take() {
            if let Some(d) = self.prefill.take() {
                s.abandon_prefill(d);
            }
            let now = Instant::now();
            if ok {
                s.observe_latency(now - self.start, now);
            }
            s.end(ok, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Dropped before the end: the client went away, which is not the
        // replica's fault; only an outcome already known to be bad counts.
        if let Some(s) = self.state.take() {
            if let Some(d) = self.prefill.take() {
                s.abandon_prefill(d);
            }
            s.end(self.ok, Instant::now());
        }
    }
}

pin_project_lite::pin_project! {
    struct TrackedBody {
        #[pin]
        inner: BoxBody,
        guard: InFlight,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                if let Some(s) = this.guard.state.take() {
                    let now = Instant::now();
                    if this.guard.ok {
                        s.observe_latency(now - this.guard.start, now);
                    }
                    s.end(this.guard.ok, now);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(s) = this.guard.state.take() {
                    s.end(false, Instant::now());
                }
            }
            Poll::Ready(Some(Ok(_))) => {
                if let Some(s) = this.guard.state.as_ref() {
                    s.progress(Instant::now());
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
