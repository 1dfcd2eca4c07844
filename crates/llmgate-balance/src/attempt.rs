//! One attempt at one replica: the pooled HTTP client, URI rewriting and the
//! per-attempt timeouts that keep a hung replica from holding requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

use llmgate_core::{BufferedBody, RequestMeta};

use crate::error::{AttemptTimeout, UpstreamError};
use crate::upstream::{Target, Upstream};

/// The response body every endpoint returns: boxed once, at the edge.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// hyper-util's pooled client: the fleet scrapes telemetry with it, and
/// sends requests with it when replicas speak HTTP/2 with prior knowledge
/// (see [`Upstream`]).
pub type HttpClient = Client<HttpConnector, BufferedBody>;

/// A hyper-util pooled client for replicas (`h2c`: HTTP/2 only).
pub fn http_client(h2c: bool) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        // Answers arrive as small SSE chunks; a fixed 4 KiB read buffer
        // keeps each of thousands of open streams from growing its own
        // to 16 KiB and more.
        .http1_read_buf_exact_size(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .http2_only(h2c)
        .build(connector)
}

/// Per-attempt time limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptTimeouts {
    /// Streamed requests: from sending to the first body chunk.
    pub first_chunk: Duration,
    /// Any request: longest silence between two body chunks.
    pub idle: Duration,
    /// Non-streamed requests: the deadline is `base + per_token × max_tokens`.
    pub base: Duration,
    /// See `base`.
    pub per_token: Duration,
    /// `max_tokens` assumed when a request names none.
    pub default_max_tokens: u32,
}

impl Default for AttemptTimeouts {
    fn default() -> Self {
        AttemptTimeouts {
            first_chunk: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            base: Duration::from_secs(60),
            per_token: Duration::from_millis(50),
            default_max_tokens: 256,
        }
    }
}

impl AttemptTimeouts {
    /// Time allowed until the first body chunk for a request.
    pub fn first_byte_limit(&self, meta: Option<&RequestMeta>) -> Duration {
        match meta {
            Some(m) if m.stream => self.first_chunk,
            Some(m) => self.base + self.per_token * m.max_tokens.unwrap_or(self.default_max_tokens),
            None => self.base,
        }
    }
}

/// Sends requests to one replica; answers once the first body chunk is in,
/// so that a replica that stalls before producing anything fails the attempt
/// while it can still be retried elsewhere.
#[derive(Clone, Debug)]
pub struct Attempt {
    upstream: Upstream,
    target: Target,
    timeouts: AttemptTimeouts,
}

impl Attempt {
    /// An attempt service for the replica at `base` (`http://host:port`,
    /// optionally with a path prefix), sending through `upstream`.
    pub fn new(
        upstream: Upstream,
        base: &str,
        timeouts: AttemptTimeouts,
    ) -> Result<Self, BoxError> {
        Ok(Self::to_target(upstream, Target::parse(base)?, timeouts))
    }

    /// An attempt service for an already parsed replica `target`.
    pub fn to_target(upstream: Upstream, target: Target, timeouts: AttemptTimeouts) -> Self {
        Attempt {
            upstream,
            target,
            timeouts,
        }
    }
}

impl Service<Request<BufferedBody>> for Attempt {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool is always ready; the endpoint's cap sits above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BufferedBody>) -> Self::Future {
        let limit = self
            .timeouts
            .first_byte_limit(req.extensions().get::<RequestMeta>());
        let idle = self.timeouts.idle;
        let upstream = self.upstream.clone();
        let target = self.target.clone();
        Box::pin(async move {
            // One timer for both waits (they share the deadline), polled by
            // hand: `timeout_at` would register a second one and move the
            // large send future into itself.
            let sleep = tokio::time::sleep_until(Instant::now() + limit);
            tokio::pin!(sleep);
            let send = upstream.send(&target, req);
            tokio::pin!(send);
            let sent = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => sleep.as_mut().poll(cx).map(|()| None),
            })
            .await;
            let res = match sent {
                None => {
                    return Err(AttemptTimeout {
                        what: "send response headers",
                        timeout: limit,
                    }
                    .into())
                }
                Some(Err(e)) => return Err(UpstreamError(e).into()),
                Some(Ok(res)) => res,
            };
            let (parts, mut body) = res.into_parts();
            // Wait for the first chunk of a successful answer (error answers
            // pass through as they are).
            let first = if parts.status.is_success() && !body.is_end_stream() {
                let frame = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(f) => Poll::Ready(Some(f)),
                    Poll::Pending => sleep.as_mut().poll(cx).map(|()| None),
                })
                .await;
                match frame {
                    None => {
                        return Err(AttemptTimeout {
                            what: "send the first chunk",
                            timeout: limit,
                        }
                        .into())
                    }
                    Some(Some(Err(e))) => return Err(UpstreamError(e).into()),
                    Some(Some(Ok(frame))) => Some(frame),
                    Some(None) => None,
                }
            } else {
                None
            };
            let ended = body.is_end_stream();
            let timed = TimedBody {
                first,
                inner: body,
                idle,
                sleep: None,
                armed: false,
                ended,
            };
            Ok(Response::from_parts(parts, timed.boxed_unsync()))
        })
    }
}

pin_project_lite::pin_project! {
    /// A body with its first frame already read, that fails when the replica
    /// goes silent for longer than the idle timeout.
    struct TimedBody<B> {
        first: Option<Frame<Bytes>>,
        #[pin]
        inner: B,
        idle: Duration,
        // Armed only when the replica makes the body wait (a complete
        // answer needs no timer), re-armed after each frame.
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
        ended: bool,
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                // The silence is measured from the next wait on.
                *this.armed = false;
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(UpstreamError(e.into()).into()))),
            Poll::Ready(None) => {
                *this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = *this.idle;
                let sleep = match this.sleep {
                    Some(s) if !*this.armed => {
                        s.as_mut().reset(Instant::now() + idle);
                        s
                    }
                    Some(s) => s,
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(idle))),
                };
                *this.armed = true;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        *this.ended = true;
                        Poll::Ready(Some(Err(AttemptTimeout {
                            what: "send the next chunk",
                            timeout: idle,
                        }
                        .into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.ended || self.inner.is_end_stream())
    }
}
