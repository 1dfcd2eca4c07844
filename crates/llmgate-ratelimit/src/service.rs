//! [`RateLimit`], the service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use llmgate_core::ClientKey;
use tower::{BoxError, Service};

use crate::future::ResponseFuture;
use crate::key::{KeyExtractor, MetaClientKey, MetaTokenCost, TokenCost};
use crate::limiter::{Grant, Limiter};
use crate::response::{HttpSettle, OnResponse};

/// Charges each request to its key's buckets before calling the inner
/// service; refuses at once with [`crate::RateLimited`] (boxed) when a
/// limit is spent. Always as ready as the inner service: the limiter never
/// waits.
///
/// The inner service is called synchronously in `call`, so it needs no
/// `Clone` bound (and no readiness is lost to a clone).
pub struct RateLimit<S, K = ClientKey, E = MetaClientKey, C = MetaTokenCost, H = HttpSettle> {
    inner: S,
    limiter: Arc<Limiter<K>>,
    extractor: E,
    cost: C,
    on_response: H,
}

impl<S, K, E, C, H> RateLimit<S, K, E, C, H> {
    pub(crate) fn from_parts(
        inner: S,
        limiter: Arc<Limiter<K>>,
        extractor: E,
        cost: C,
        on_response: H,
    ) -> Self {
        RateLimit {
            inner,
            limiter,
            extractor,
            cost,
            on_response,
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

    /// The shared buckets.
    pub fn limiter(&self) -> &Arc<Limiter<K>> {
        &self.limiter
    }
}

impl<S: Clone, K, E: Clone, C: Clone, H: Clone> Clone for RateLimit<S, K, E, C, H> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
            cost: self.cost.clone(),
            on_response: self.on_response.clone(),
        }
    }
}

impl<S: fmt::Debug, K, E: fmt::Debug, C: fmt::Debug, H: fmt::Debug> fmt::Debug
    for RateLimit<S, K, E, C, H>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("extractor", &self.extractor)
            .field("cost", &self.cost)
            .field("on_response", &self.on_response)
            .finish()
    }
}

impl<S, K, E, C, H, Req> Service<Req> for RateLimit<S, K, E, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    E: KeyExtractor<Req, Key = K>,
    C: TokenCost<Req>,
    H: OnResponse<S::Response, K> + Clone,
{
    type Response = H::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, H, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extractor.extract(&req);
        let tier = self.limiter.tier_of(&key);
        // Skip estimating when no tokens limit applies.
        let tokens = if tier.tokens.is_some() {
            self.cost.tokens(&req)
        } else {
            0
        };
        match self.limiter.check(&key, tokens) {
            Ok(state) => {
                let grant = Grant::new(self.limiter.clone(), key, tokens, state);
                ResponseFuture::allowed(self.inner.call(req), grant, self.on_response.clone())
            }
            Err(refused) => ResponseFuture::refused(refused),
        }
    }
}
