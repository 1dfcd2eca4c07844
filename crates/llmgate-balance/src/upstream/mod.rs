//! The client the request path uses to reach replicas.
//!
//! Over HTTP/1.1 (what vLLM, SGLang, TGI and llama.cpp serve) it is
//! llmgate's own keep-alive pool: a checked-out connection is driven by the
//! task that awaits the answer and then polls its body, so a proxied request
//! costs no task, channel or cross-thread wake-up beyond the socket's own.
//! hyper-util's pooled client runs one background task and one dispatch
//! channel per connection: each request crosses tasks twice, and the
//! channel and that connection's buffers were about half the memory of an
//! open stream (`benches/README.md`). Framing is `llmgate_http1::codec`:
//! requests carry a `content-length` (bodies are buffered before routing),
//! answers may use content-length, chunked or close-delimited bodies.
//!
//! With `h2c` the fleet speaks HTTP/2 with prior knowledge through
//! hyper-util's client instead (multiplexed streams need a connection task).

mod pool;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tower::BoxError;

use llmgate_core::BufferedBody;

pub use llmgate_http1::codec::ProtocolError;
pub use pool::UpstreamConfig;

use crate::attempt::HttpClient;
use llmgate_http1::codec::{self, Decoder, Step};
use pool::{Conn, Pool};

/// Request bodies up to this size are written with the head in one call.
const COALESCE_BODY_BYTES: usize = 16 * 1024;

/// Sends requests to replicas: an HTTP/1.1 keep-alive pool, or hyper-util's
/// client for HTTP/2 with prior knowledge. Cheap to clone (clones share
/// the pool).
#[derive(Clone)]
pub struct Upstream {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Http1(Arc<Pool>),
    H2c(Arc<HttpClient>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Http1(p) => f.debug_tuple("Upstream::Http1").field(p).finish(),
            Kind::H2c(_) => f.write_str("Upstream::H2c"),
        }
    }
}

/// Where one replica is: `http://host:port[/prefix]`, parsed once.
#[derive(Clone, Debug)]
pub struct Target {
    authority: Arc<str>,
    prefix: Arc<str>,
}

impl Target {
    /// Parses a replica base URL. Only `http` is supported (TLS to replicas
    /// is for a sidecar or mesh).
    pub fn parse(base: &str) -> Result<Target, BoxError> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("replica URL {base:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(s) => {
                return Err(format!(
                    "replica URL {base:?}: scheme {s:?} is not supported, use http"
                )
                .into())
            }
            None => return Err(format!("replica URL {base:?}: needs http://host:port").into()),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("replica URL {base:?}: no host"))?;
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.as_str()),
        };
        if uri.query().is_some() {
            return Err(format!("replica URL {base:?}: a query string is not allowed").into());
        }
        Ok(Target {
            authority: authority.into(),
            prefix: uri.path().trim_end_matches('/').into(),
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The absolute URI of `uri`'s path and query at this replica.
    fn absolute(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        Uri::builder()
            .scheme("http")
            .authority(&*self.authority)
            .path_and_query(format!("{}{pq}", self.prefix))
            .build()
    }
}

impl Upstream {
    /// The HTTP/1.1 keep-alive pool.
    pub fn http1(config: UpstreamConfig) -> Upstream {
        Upstream {
            kind: Kind::Http1(Arc::new(Pool::new(config))),
        }
    }

    /// HTTP/2 with prior knowledge over `client` (build it with
    /// [`http_client(true)`](crate::http_client)).
    pub fn h2c(client: HttpClient) -> Upstream {
        Upstream {
            kind: Kind::H2c(Arc::new(client)),
        }
    }

    /// Sends `req` (its URI's path and query, below the target's prefix)
    /// to `target` and waits for the answer's head. Transport and framing
    /// failures are errors; any HTTP status is an answer.
    pub async fn send(
        &self,
        target: &Target,
        req: Request<BufferedBody>,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        match &self.kind {
            Kind::Http1(pool) => send_http1(pool, target, req).await,
            Kind::H2c(client) => {
                let (mut parts, body) = req.into_parts();
                parts.uri = target.absolute(&parts.uri)?;
                parts.headers.remove(http::header::HOST);
                let res = client.request(Request::from_parts(parts, body)).await?;
                Ok(res.map(|b| UpstreamBody {
                    kind: BodyKind::H2(b),
                }))
            }
        }
    }

    /// Idle pooled connections (HTTP/1.1; 0 for h2c).
    pub fn idle_connections(&self) -> usize {
        match &self.kind {
            Kind::Http1(p) => p.idle_count(),
            Kind::H2c(_) => 0,
        }
    }
}

/// How one exchange on a connection failed.
struct ExchangeError {
    error: BoxError,
    /// Nothing of an answer arrived, so a reused connection that the replica
    /// had closed can be replaced and the request sent again.
    nothing_received: bool,
}

async fn send_http1(
    pool: &Arc<Pool>,
    target: &Target,
    req: Request<BufferedBody>,
) -> Result<Response<UpstreamBody>, BoxError> {
    let (parts, mut body) = req.into_parts();
    let body: Bytes = match body.frame().await {
        Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    };
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let coalesce = body.len() <= COALESCE_BODY_BYTES;
    let mut head = Vec::with_capacity(256 + if coalesce { body.len() } else { 0 });
    codec::encode_request_head(
        &parts.method,
        &target.prefix,
        pq,
        &target.authority,
        &parts.headers,
        body.len(),
        &mut head,
    );
    if coalesce {
        head.extend_from_slice(&body);
    }
    let tail = if coalesce { Bytes::new() } else { body };

    let mut fresh_only = false;
    loop {
        let mut conn = match fresh_only {
            false => pool.checkout(&target.authority).await?,
            true => pool.connect(&target.authority).await?,
        };
        match exchange(&mut conn, &head, &tail, &parts.method, pool.read_size()).await {
            Ok(h) => {
                let decoder = Decoder::new(h.framing);
                let mut body = H1Body {
                    conn: Some(conn),
                    decoder,
                    keep_alive: h.keep_alive,
                    pool: pool.clone(),
                    authority: target.authority.clone(),
                };
                if body.decoder == Decoder::Done {
                    body.finish();
                }
                let mut res = Response::new(UpstreamBody {
                    kind: BodyKind::H1(body),
                });
                *res.status_mut() = h.status;
                *res.version_mut() = h.version;
                *res.headers_mut() = h.headers;
                return Ok(res);
            }
            Err(e) if e.nothing_received && conn.reused && !fresh_only => {
                // The replica closed this idle connection as we reused it.
                tracing::debug!(replica = %target.authority, error = %e.error, "stale pooled connection; sending on a new one");
                fresh_only = true;
            }
            Err(e) => return Err(e.error),
        }
    }
}

async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    tail: &[u8],
    method: &Method,
    read_size: usize,
) -> Result<codec::ResponseHead, ExchangeError> {
    let sent = async {
        // A head nearly always fits the socket's send buffer: one plain
        // write, without the readiness polling of `write_all`, which
        // takes over only for what that write leaves.
        let written = match conn.io.try_write(head) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < head.len() {
            conn.io.write_all(&head[written..]).await?;
        }
        if !tail.is_empty() {
            conn.io.write_all(tail).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = sent.await {
        return Err(ExchangeError {
            error: e.into(),
            nothing_received: true,
        });
    }
    loop {
        // Nothing to parse before the first bytes arrive.
        if !conn.buf.is_empty() {
            match codec::parse_response_head(&mut conn.buf, method) {
                Ok(Some(h)) => return Ok(h),
                Ok(None) => {}
                Err(e) => {
                    return Err(ExchangeError {
                        error: e.into(),
                        nothing_received: false,
                    })
                }
            }
        }
        let had = conn.buf.len();
        let n = std::future::poll_fn(|cx| conn.poll_fill(cx, read_size)).await;
        match n {
            Ok(0) => {
                return Err(ExchangeError {
                    error: "replica closed the connection before answering".into(),
                    nothing_received: had == 0,
                })
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ExchangeError {
                    error: e.into(),
                    nothing_received: had == 0,
                })
            }
        }
    }
}

/// A response body from a replica.
#[derive(Debug)]
pub struct UpstreamBody {
    kind: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    H1(H1Body),
    H2(hyper::body::Incoming),
}

/// An HTTP/1.1 body read straight off its pooled connection; the connection
/// goes back to the pool when the body ends cleanly and is closed when the
/// body is dropped early (which cancels the request at the replica).
struct H1Body {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Arc<Pool>,
    authority: Arc<str>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("decoder", &self.decoder)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl H1Body {
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes beyond the answer mean the replica is confused; the
            // connection is not trusted again.
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.checkin(&self.authority, conn);
            }
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(e.into())))
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.buf) {
                Err(e) => return self.fail(e),
                Ok(Step::Done) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::Data(data)) => {
                    if self.decoder == Decoder::Done {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::NeedMore) => match ready!(conn.poll_fill(cx, self.pool.read_size())) {
                    Ok(0) if self.decoder == Decoder::UntilClose => {
                        self.conn = None;
                        self.decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        return self.fail("replica closed the connection before the body ended")
                    }
                    Ok(_) => {}
                    Err(e) => return self.fail(e),
                },
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            BodyKind::H1(b) => b.poll_data(cx),
            BodyKind::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::H1(b) => b.decoder == Decoder::Done,
            BodyKind::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::H1(b) => match b.decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            BodyKind::H2(b) => b.size_hint(),
        }
    }
}

impl Conn {
    /// Reads what the socket has into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        read_size: usize,
    ) -> Poll<std::io::Result<usize>> {
        llmgate_http1::io::poll_fill(&mut self.io, &mut self.buf, cx, read_size)
    }
}

#[cfg(test)]
mod tests;
