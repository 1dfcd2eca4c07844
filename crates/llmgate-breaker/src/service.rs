//! [`CircuitBreaker`]: the service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

use crate::classify::Classify;
use crate::config::Mode;
use crate::error::BreakerOpen;
use crate::future::ResponseFuture;
use crate::state::{BreakerHandle, BreakerState, Permit, Refusal, Shared};

/// What `poll_ready` decided for the next `call`.
enum Admission {
    Admitted(Permit),
    Refused(BreakerOpen),
}

/// A service behind a circuit breaker. Built by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer); clones share the
/// breaker.
///
/// `poll_ready` takes the call's admission: a [`Permit`] (closed, or a free
/// half-open probe slot) or, in fail-fast mode, a refusal that `call` turns
/// into a [`BreakerOpen`] error without touching the inner service. In
/// not-ready mode a refused `poll_ready` is `Pending` and wakes itself when
/// the cool-down ends (a tokio timer) or a probe slot frees. A clone starts
/// without an admission, as a clone of a tower service is not ready.
pub struct CircuitBreaker<S, C> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    admission: Option<Admission>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            shared,
            classifier,
            admission: None,
            sleep: None,
        }
    }

    /// A handle on the breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn refusal_error(&self, r: Refusal) -> BreakerOpen {
        let at = match r.state {
            BreakerState::Open => r.retry_at.unwrap_or_else(Instant::now),
            // Half-open and busy: a slot may free at any moment.
            _ => Instant::now(),
        };
        BreakerOpen::new(self.shared.config.name.clone(), r.state, at)
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker::from_parts(
            self.inner.clone(),
            self.shared.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared)
            .field(
                "admitted",
                &matches!(self.admission, Some(Admission::Admitted(_))),
            )
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = C::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Bounded: after a timer fires the next admit sees half-open.
        let mut tries = 0;
        while self.admission.is_none() {
            tries += 1;
            let waker = (self.shared.config.mode == Mode::NotReady).then(|| cx.waker());
            match self.shared.admit(Instant::now(), waker) {
                Ok(permit) => {
                    self.sleep = None;
                    self.admission = Some(Admission::Admitted(permit));
                }
                Err(refusal) => match self.shared.config.mode {
                    Mode::FailFast => {
                        self.shared.count_rejected();
                        self.admission = Some(Admission::Refused(self.refusal_error(refusal)));
                    }
                    Mode::NotReady => {
                        let Some(at) = refusal.retry_at else {
                            // Half-open and busy: our waker is registered.
                            return Poll::Pending;
                        };
                        let sleep = self
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                        if sleep.deadline() != at {
                            sleep.as_mut().reset(at);
                        }
                        if sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        if tries > 3 {
                            // Never expected; yield instead of spinning.
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                },
            }
        }
        match self.admission {
            Some(Admission::Refused(_)) => Poll::Ready(Ok(())),
            _ => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let admission = match self.admission.take() {
            Some(a) => a,
            // Called without poll_ready: decide now, refusing when not admitted.
            None => match self.shared.admit(Instant::now(), None) {
                Ok(p) => Admission::Admitted(p),
                Err(r) => {
                    self.shared.count_rejected();
                    Admission::Refused(self.refusal_error(r))
                }
            },
        };
        match admission {
            Admission::Admitted(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Admission::Refused(err) => ResponseFuture::refused(err, self.classifier.clone()),
        }
    }
}
