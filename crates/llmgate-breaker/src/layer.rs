//! [`CircuitBreakerLayer`].

use std::sync::Arc;

use tower::Layer;

use crate::classify::HttpClassifier;
use crate::config::BreakerConfig;
use crate::service::CircuitBreaker;
use crate::state::{BreakerHandle, Shared};

/// Wraps services in one circuit breaker.
///
/// A layer owns exactly one breaker: every service it wraps (and every
/// clone of those) shares the same state. For one breaker per endpoint,
/// build one layer per endpoint (`config.clone().name(id).build()`).
///
/// The classifier decides what a failure is; [`HttpClassifier`] by default.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = HttpClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl CircuitBreakerLayer<HttpClassifier> {
    /// A breaker with the default configuration (see [`BreakerConfig`]).
    pub fn new() -> Self {
        BreakerConfig::default().build()
    }

    /// A builder, starting from the defaults; finish with
    /// [`BreakerConfig::build`].
    pub fn builder() -> BreakerConfig {
        BreakerConfig::default()
    }

    /// A breaker with `config`.
    pub fn from_config(config: BreakerConfig) -> Self {
        CircuitBreakerLayer {
            shared: Shared::new(config),
            classifier: HttpClassifier,
        }
    }
}

impl Default for CircuitBreakerLayer<HttpClassifier> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Replaces the classifier, keeping the breaker.
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// A handle on this layer's breaker (state, counts, last transition).
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(inner, self.shared.clone(), self.classifier.clone())
    }
}
