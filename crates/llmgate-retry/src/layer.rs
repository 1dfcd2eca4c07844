//! [`RetryLayer`].

use std::sync::Arc;

use tower::Layer;

use crate::classify::HttpRetry;
use crate::config::RetryConfig;
use crate::policy::{RetryPolicy, Shared};
use crate::service::Retry;

/// Retries failed attempts of the wrapped service.
///
/// One layer owns one retry budget, shared by every service it wraps and
/// their clones. The classifier ([`HttpRetry`] by default) decides what is
/// retryable and how a request is replayed.
#[derive(Debug, Clone)]
pub struct RetryLayer<C = HttpRetry> {
    shared: Arc<Shared>,
    classifier: C,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish()
    }
}

impl RetryLayer<HttpRetry> {
    /// The defaults (see [`RetryConfig`]).
    pub fn new() -> Self {
        RetryConfig::default().build()
    }

    /// A builder from the defaults; finish with [`RetryConfig::build`].
    pub fn builder() -> RetryConfig {
        RetryConfig::default()
    }

    /// A layer with `config`.
    pub fn from_config(config: RetryConfig) -> Self {
        RetryLayer {
            shared: Shared::new(config),
            classifier: HttpRetry,
        }
    }
}

impl Default for RetryLayer<HttpRetry> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> RetryLayer<C> {
    /// Replaces the classifier (keeps config and budget).
    pub fn with_classifier<C2>(self, classifier: C2) -> RetryLayer<C2> {
        RetryLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The policy this layer installs (tower's `retry::Policy`).
    pub fn policy(&self) -> RetryPolicy<C>
    where
        C: Clone,
    {
        RetryPolicy::new(self.shared.clone(), self.classifier.clone())
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy())
    }
}
