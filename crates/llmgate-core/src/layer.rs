//! [`MetaLayer`]: buffer the body once, parse it once, attach [`RequestMeta`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use bytes::{Buf, BufMut};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::headers::{X_CLIENT_ID, X_PRIORITY, X_REQUEST_TIMEOUT, X_SESSION_ID};
use crate::meta::DEFAULT_REQUEST_TIMEOUT;
use crate::parse::{parse_borrowed, Parsed};
use crate::prefix::DEFAULT_BLOCK_CHARS;
use crate::{
    CharsPerToken, ClientKey, EndpointKind, MetaError, Priority, RequestMeta, TokenEstimator,
};

/// The body type [`MetaLayer`] passes on: the whole request body in memory,
/// cheap to clone, so retries can replay it byte for byte.
pub type BufferedBody = Full<Bytes>;

/// Default body limit: 8 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Longest `x-request-timeout` accepted: one day.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Chooses a request's priority when it carries no `x-priority` header; the
/// hook through which a server maps API keys (client keys) to tiers.
pub trait DefaultPriority: Send + Sync + 'static {
    /// The priority for a request from `client`, or `None` for
    /// [`Priority::Normal`].
    fn default_priority(&self, client: &ClientKey, headers: &http::HeaderMap) -> Option<Priority>;
}

impl<F> DefaultPriority for F
where
    F: Fn(&ClientKey, &http::HeaderMap) -> Option<Priority> + Send + Sync + 'static,
{
    fn default_priority(&self, client: &ClientKey, headers: &http::HeaderMap) -> Option<Priority> {
        self(client, headers)
    }
}

#[derive(Clone)]
struct MetaConfig {
    body_limit: usize,
    default_timeout: Duration,
    block_chars: usize,
    prefix_hashes: bool,
    estimator: Arc<dyn TokenEstimator>,
    default_priority: Option<Arc<dyn DefaultPriority>>,
}

/// Buffers each request body (bounded), parses OpenAI-shaped JSON once and
/// inserts a [`RequestMeta`] into the request's extensions.
///
/// * Over the body limit: [`MetaError::BodyTooLarge`] (HTTP 413).
/// * Malformed JSON on `/v1/completions`, `/v1/chat/completions` or
///   `/v1/embeddings`, a bad `x-priority` or `x-request-timeout`:
///   [`MetaError`] (HTTP 400).
/// * Other routes get a minimal `RequestMeta` (client, priority, deadline).
/// * A `RequestMeta` already present (inserted by user code) is kept as is.
///
/// Errors come out boxed; render them with
/// [`error_response`](crate::error_response).
#[derive(Clone)]
pub struct MetaLayer {
    config: MetaConfig,
}

impl fmt::Debug for MetaLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaLayer")
            .field("body_limit", &self.config.body_limit)
            .field("default_timeout", &self.config.default_timeout)
            .field("block_chars", &self.config.block_chars)
            .field("prefix_hashes", &self.config.prefix_hashes)
            .finish_non_exhaustive()
    }
}

impl Default for MetaLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetaLayer {
    /// Defaults: 8 MiB body limit, 300 s request timeout, 64-character prefix
    /// blocks (hashed), chars/4 token estimate, every client at `Normal`.
    pub fn new() -> MetaLayer {
        MetaLayer {
            config: MetaConfig {
                body_limit: DEFAULT_BODY_LIMIT,
                default_timeout: DEFAULT_REQUEST_TIMEOUT,
                block_chars: DEFAULT_BLOCK_CHARS,
                prefix_hashes: true,
                estimator: Arc::new(CharsPerToken::default()),
                default_priority: None,
            },
        }
    }

    /// Largest accepted body in bytes.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config.body_limit = bytes;
        self
    }

    /// Deadline of requests without `x-request-timeout`.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default_timeout = timeout;
        self
    }

    /// Prefix block size in characters.
    pub fn block_chars(mut self, chars: usize) -> Self {
        self.config.block_chars = chars.max(1);
        self
    }

    /// Whether to hash prompt prefixes into [`RequestMeta::prefix_hashes`]
    /// (on by default). Hashing reads every byte of a prompt, so a stack
    /// whose balancer ignores prefixes (anything but cache affinity) can
    /// turn it off; the hashes are then empty.
    pub fn prefix_hashes(mut self, enabled: bool) -> Self {
        self.config.prefix_hashes = enabled;
        self
    }

    /// Token estimator for prompts.
    pub fn estimator(mut self, estimator: impl TokenEstimator) -> Self {
        self.config.estimator = Arc::new(estimator);
        self
    }

    /// Priority of requests without `x-priority` (e.g. by API-key tier).
    pub fn default_priority(mut self, hook: impl DefaultPriority) -> Self {
        self.config.default_priority = Some(Arc::new(hook));
        self
    }
}

impl<S> Layer<S> for MetaLayer {
    type Service = MetaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetaService {
            inner,
            config: Arc::new(self.config.clone()),
        }
    }
}

/// The service of [`MetaLayer`].
#[derive(Clone)]
pub struct MetaService<S> {
    inner: S,
    // Shared: every request's future holds it until its body is read.
    config: Arc<MetaConfig>,
}

impl<S: fmt::Debug> fmt::Debug for MetaService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> MetaService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for MetaService<S>
where
    S: Service<Request<BufferedBody>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service goes with this request; the clone waits for the
        // next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.body_limit as u64) {
            return ResponseFuture {
                state: State::Failed {
                    error: Some(MetaError::BodyTooLarge {
                        limit: self.config.body_limit,
                    }),
                },
            };
        }
        ResponseFuture {
            state: State::Buffering {
                body,
                buf: BodyBuf::Empty,
                parts: Some(parts),
                inner: Some(inner),
                config: self.config.clone(),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`MetaService`]: buffers the body, then calls the
    /// inner service.
    pub struct ResponseFuture<S: Service<Request<BufferedBody>>, B: Body> {
        #[pin]
        state: State<S, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<BufferedBody>>, B: Body> {
        Failed { error: Option<MetaError> },
        Buffering {
            #[pin]
            body: B,
            buf: BodyBuf,
            parts: Option<http::request::Parts>,
            inner: Option<S>,
            config: Arc<MetaConfig>,
        },
        Calling { #[pin] fut: S::Future },
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<BufferedBody>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    let e = error.take().expect("polled after completion");
                    return Poll::Ready(Err(e.into()));
                }
                StateProj::Buffering {
                    mut body,
                    buf,
                    parts,
                    inner,
                    config,
                } => {
                    // Read frames until the end, failing as soon as the limit
                    // is crossed so an oversized upload is not held in memory.
                    loop {
                        match body.as_mut().poll_frame(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(None) => break,
                            Poll::Ready(Some(Err(e))) => {
                                let e: BoxError = e.into();
                                return Poll::Ready(Err(MetaError::BodyRead(e.to_string()).into()));
                            }
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Ok(data) = frame.into_data() {
                                    if buf.len() + data.remaining() > config.body_limit {
                                        return Poll::Ready(Err(MetaError::BodyTooLarge {
                                            limit: config.body_limit,
                                        }
                                        .into()));
                                    }
                                    buf.put(data);
                                }
                            }
                        }
                    }
                    let bytes = std::mem::replace(buf, BodyBuf::Empty).freeze();
                    let mut parts = parts.take().expect("polled after completion");
                    if parts.extensions.get::<RequestMeta>().is_none() {
                        match build_meta(&parts, &bytes, config) {
                            Ok(meta) => {
                                parts.extensions.insert(meta);
                            }
                            Err(e) => return Poll::Ready(Err(e.into())),
                        }
                    }
                    let mut svc = inner.take().expect("polled after completion");
                    let req = Request::from_parts(parts, Full::new(bytes));
                    State::Calling { fut: svc.call(req) }
                }
                StateProj::Calling { fut } => {
                    return fut.poll(cx).map_err(Into::into);
                }
            };
            this.state.set(next);
        }
    }
}

/// A body being buffered. A body that arrives as one frame (most do) is
/// kept as that frame's bytes (for `Bytes`, without a copy): the server
/// that produced the frame already chose how to hold it, and a second
/// buffer would only cost an allocation and a copy per request.
enum BodyBuf {
    Empty,
    One(Bytes),
    Many(bytes::BytesMut),
}

impl BodyBuf {
    fn len(&self) -> usize {
        match self {
            BodyBuf::Empty => 0,
            BodyBuf::One(b) => b.len(),
            BodyBuf::Many(b) => b.len(),
        }
    }

    fn put(&mut self, mut data: impl Buf) {
        match self {
            BodyBuf::Empty => *self = BodyBuf::One(data.copy_to_bytes(data.remaining())),
            BodyBuf::One(first) => {
                let mut all = bytes::BytesMut::with_capacity(first.len() + data.remaining());
                all.put(std::mem::take(first));
                all.put(data);
                *self = BodyBuf::Many(all);
            }
            BodyBuf::Many(all) => all.put(data),
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            BodyBuf::Empty => Bytes::new(),
            BodyBuf::One(b) => b,
            BodyBuf::Many(b) => b.freeze(),
        }
    }
}

fn build_meta(
    parts: &http::request::Parts,
    body: &[u8],
    config: &MetaConfig,
) -> Result<RequestMeta, MetaError> {
    let kind = EndpointKind::from_path(parts.uri.path());
    let found = FoundHeaders::of(&parts.headers);
    let client = ClientKey::from_values(found.client_id, found.authorization, &parts.extensions);
    let priority = match found.priority {
        Some(v) => v
            .to_str()
            .map_err(|_| crate::priority::ParsePriorityError {
                value: String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(64)
                    .collect(),
            })?
            .parse::<Priority>()?,
        None => config
            .default_priority
            .as_ref()
            .and_then(|h| h.default_priority(&client, &parts.headers))
            .unwrap_or_default(),
    };
    let timeout = match found.timeout {
        Some(v) => parse_timeout(v)?,
        None => config.default_timeout,
    };
    let arrival = Instant::now();
    let header_session = found
        .session
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(Arc::<str>::from);
    // Paths outside the OpenAI routes carry no body llmgate reads.
    let parsed = if kind != EndpointKind::Other {
        let block_chars = config.prefix_hashes.then_some(config.block_chars);
        parse_borrowed(kind, body, config.estimator.as_ref(), block_chars)?
    } else {
        Parsed::default()
    };
    // Built whole rather than from `RequestMeta::new`, whose anonymous
    // client key and empty prefix list are allocations overwritten here.
    let meta = RequestMeta {
        kind,
        model: parsed.model.as_deref().map(shared_model),
        stream: parsed.stream,
        max_tokens: parsed.max_tokens,
        prompt_tokens: parsed.prompt_tokens,
        prefix_hashes: shared_hashes(parsed.prefix_hashes),
        priority,
        client,
        session: header_session.or_else(|| parsed.user.as_deref().map(Arc::from)),
        arrival,
        deadline: arrival + timeout,
    };
    Ok(meta)
}

/// `model` as an `Arc`. A gateway sees the same few model names over and
/// over: each thread keeps the last one and hands out clones of it while
/// requests repeat it, instead of allocating a copy per request.
fn shared_model(name: &str) -> Arc<str> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(m) if **m == *name => m.clone(),
            _ => {
                let m = Arc::<str>::from(name);
                *last = Some(m.clone());
                m
            }
        }
    })
}

/// `hashes` as an `Arc`; short prompts have none, and every thread shares
/// one empty list for them instead of allocating one per request.
fn shared_hashes(hashes: Vec<u64>) -> Arc<[u64]> {
    if !hashes.is_empty() {
        return Arc::from(hashes);
    }
    thread_local! {
        static EMPTY: Arc<[u64]> = Arc::from(Vec::new());
    }
    EMPTY.with(Arc::clone)
}

/// The first value of each header [`build_meta`] reads.
#[derive(Default)]
struct FoundHeaders<'a> {
    client_id: Option<&'a http::HeaderValue>,
    authorization: Option<&'a http::HeaderValue>,
    priority: Option<&'a http::HeaderValue>,
    timeout: Option<&'a http::HeaderValue>,
    session: Option<&'a http::HeaderValue>,
}

impl<'a> FoundHeaders<'a> {
    /// Requests carry a handful of headers: one walk over them comparing
    /// names costs less than five hashed lookups. Long header lists are
    /// looked up as usual.
    fn of(headers: &'a http::HeaderMap) -> Self {
        if headers.len() > 16 {
            return FoundHeaders {
                client_id: headers.get(&X_CLIENT_ID),
                authorization: headers.get(http::header::AUTHORIZATION),
                priority: headers.get(&X_PRIORITY),
                timeout: headers.get(&X_REQUEST_TIMEOUT),
                session: headers.get(&X_SESSION_ID),
            };
        }
        let mut found = FoundHeaders::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "x-client-id" => &mut found.client_id,
                "authorization" => &mut found.authorization,
                "x-priority" => &mut found.priority,
                "x-request-timeout" => &mut found.timeout,
                "x-session-id" => &mut found.session,
                _ => continue,
            };
            // `get` answers with a name's first value.
            slot.get_or_insert(value);
        }
        found
    }
}

fn parse_timeout(v: &http::HeaderValue) -> Result<Duration, MetaError> {
    let text = String::from_utf8_lossy(v.as_bytes());
    let bad = || MetaError::BadTimeout(text.chars().take(64).collect());
    let secs: f64 = text.trim().parse().map_err(|_| bad())?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs).min(MAX_REQUEST_TIMEOUT))
}

/// Convenience for tests and callers that build requests by hand: the
/// [`RequestMeta`] of a request, if present.
pub fn meta_of<B>(req: &Request<B>) -> Option<&RequestMeta> {
    req.extensions().get::<RequestMeta>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_headers_match_lookups_by_name() {
        let names = [
            X_CLIENT_ID,
            http::header::AUTHORIZATION,
            X_PRIORITY,
            X_REQUEST_TIMEOUT,
            X_SESSION_ID,
        ];
        for filler in [0, 3, 30] {
            let mut h = http::HeaderMap::new();
            for i in 0..filler {
                h.append(
                    http::HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap(),
                    "v".parse().unwrap(),
                );
            }
            h.append(http::header::HOST, "h".parse().unwrap());
            for (i, name) in names.iter().enumerate().skip(1) {
                h.append(name.clone(), format!("first-{i}").parse().unwrap());
                h.append(name.clone(), format!("second-{i}").parse().unwrap());
            }
            let f = FoundHeaders::of(&h);
            let got = [
                f.client_id,
                f.authorization,
                f.priority,
                f.timeout,
                f.session,
            ];
            for (name, value) in names.iter().zip(got) {
                assert_eq!(value, h.get(name), "{name} with {filler} others");
            }
        }
    }
}
