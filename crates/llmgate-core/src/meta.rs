//! [`RequestMeta`]: everything later layers need to know about a request.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{ClientKey, Priority};

/// Which OpenAI-style API a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EndpointKind {
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/embeddings`
    Embeddings,
    /// Anything else (passed through with minimal metadata).
    #[default]
    Other,
}

impl EndpointKind {
    /// The kind of a request path (`/v1/chat/completions` → `Chat`, …).
    pub fn from_path(path: &str) -> EndpointKind {
        match path.trim_end_matches('/') {
            "/v1/completions" => EndpointKind::Completions,
            "/v1/chat/completions" => EndpointKind::Chat,
            "/v1/embeddings" => EndpointKind::Embeddings,
            _ => EndpointKind::Other,
        }
    }

    /// Lower-case name, bounded: fit for a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Completions => "completions",
            EndpointKind::Chat => "chat",
            EndpointKind::Embeddings => "embeddings",
            EndpointKind::Other => "other",
        }
    }
}

/// Default time a request may take end to end when it names no
/// `x-request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Parsed once per request by [`MetaLayer`](crate::MetaLayer) (or inserted by
/// user code) and read by every later layer from the request's extensions.
///
/// Cloning is cheap: the prefix hashes are shared.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Which API the request targets.
    pub kind: EndpointKind,
    /// The `model` field, if any.
    pub model: Option<Arc<str>>,
    /// Whether the client asked for a streamed (SSE) answer.
    pub stream: bool,
    /// `max_tokens` (or `max_completion_tokens`), if given.
    pub max_tokens: Option<u32>,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// Chained hashes of the prompt's full blocks (see [`crate::prefix`]).
    pub prefix_hashes: Arc<[u64]>,
    /// Scheduling priority.
    pub priority: Priority,
    /// Who the request is from.
    pub client: ClientKey,
    /// Session affinity key: `x-session-id`, else the body's `user` field.
    pub session: Option<Arc<str>>,
    /// When the request arrived.
    pub arrival: Instant,
    /// When the request must have finished; queues fail it after this.
    pub deadline: Instant,
}

impl RequestMeta {
    /// Minimal metadata for a request of `kind` arriving now, with default
    /// priority, anonymous client and the default deadline.
    pub fn new(kind: EndpointKind) -> RequestMeta {
        let now = Instant::now();
        RequestMeta {
            kind,
            model: None,
            stream: false,
            max_tokens: None,
            prompt_tokens: 0,
            prefix_hashes: Arc::from(Vec::new()),
            priority: Priority::Normal,
            client: ClientKey::anonymous(),
            session: None,
            arrival: now,
            deadline: now + DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the client key.
    pub fn with_client(mut self, client: ClientKey) -> Self {
        self.client = client;
        self
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the deadline to `timeout` after arrival.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline = self.arrival + timeout;
        self
    }

    /// Tokens this request may cost at most: prompt plus `max_tokens`
    /// (or `default_max_tokens` when the request names none).
    pub fn estimated_total_tokens(&self, default_max_tokens: u32) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.max_tokens.unwrap_or(default_max_tokens))
    }
}
