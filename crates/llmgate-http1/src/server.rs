//! The accept loop and the per-connection driver.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use llmgate_core::ErrorResponse;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

use crate::codec::{self, Decoder, Framing, Persistence, RequestError, RequestHead, Step};
use crate::io::fill;
use crate::threads::IoThreads;

/// The body of a request handed to the service: read whole before the
/// call (an LLM request is parsed whole before it can be routed anyway).
pub type RequestBody = Full<Bytes>;

/// Settings of the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Largest request body accepted; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Time allowed for the rest of a request (head and body) once its
    /// first bytes arrived; past it the client gets 408 and the
    /// connection closes.
    pub request_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    /// `None` keeps it open until the client closes it.
    pub idle_timeout: Option<Duration>,
    /// Bytes reserved per read.
    pub read_size: usize,
    /// Dedicated I/O threads, each a single-threaded runtime, that carry
    /// the connections: each connection stays on the thread with the
    /// fewest when it was accepted. `None` runs them on the caller's
    /// runtime. Connections on these threads run on real time even when
    /// the caller's clock is paused. Timers a request creates there (a
    /// timeout, a breaker's cool-down) belong to that thread's runtime,
    /// which stops when `serve` returns: a service that outlives `serve`
    /// must not poll such a timer afterwards (tokio panics when it is).
    pub io_threads: Option<NonZeroUsize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 8 * 1024 * 1024,
            request_read_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(300)),
            read_size: 4096,
            io_threads: None,
        }
    }
}

/// Request bodies up to this size that needed reads of their own are
/// copied out of the read buffer, so a long request does not pin a whole
/// read buffer for its lifetime. (One that came with its head shares the
/// buffer: the head's fields, slices of it, pin it as long anyway.)
const COPY_BODY_BYTES: usize = 16 * 1024;
/// Response data up to this size is copied next to its framing and written
/// in one call; larger pieces are written as they are.
const COALESCE_BYTES: usize = 4096;
/// Answer bytes gathered before they are written even though the body has
/// more ready.
const MAX_GATHERED_BYTES: usize = 64 * 1024;
/// Pipelined bytes read ahead while a response is pending; past this the
/// socket is not read until the response is done.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// How long a connection that is closed after an error answer keeps
/// reading (and dropping) what the client still sends, so the client sees
/// the answer rather than a reset.
const LINGER: Duration = Duration::from_secs(1);

/// Serves HTTP/1.x on `listener` until `shutdown` completes, then stops
/// accepting, lets every connection finish the request it is on (idle
/// keep-alive connections close at once), and returns when all have
/// closed. `make_service` builds the service for each accepted connection
/// from its peer address.
///
/// Each connection is one task (on the caller's runtime, or on one of the
/// dedicated threads of [`ServerConfig::io_threads`]) that parses
/// requests, calls the service,
/// and writes the answer, streaming the body chunk by chunk as it comes
/// (chunked transfer coding when its length is unknown). A read buffer
/// exists only while bytes wait in it, so an open stream or an idle
/// connection holds no buffer. A client that disconnects while its request
/// is being served cancels it: the service's future, or the response body,
/// is dropped.
pub async fn serve<M, S, B, F>(
    listener: TcpListener,
    config: ServerConfig,
    mut make_service: M,
    shutdown: F,
) where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<RequestBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
    F: Future<Output = ()>,
{
    let threads = match config.io_threads.map(IoThreads::start) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            // Still served, only on the caller's runtime.
            tracing::warn!(error = %e, "could not start I/O threads");
            None
        }
    };
    let config = Arc::new(config);
    let stop = Arc::new(Stop::new());
    // Also stops the connections when this future is dropped unfinished.
    let stop_guard = StopOnDrop(stop.clone());
    let mut accepted_count: usize = 0;
    // Every connection holds a sender; `recv` yields `None` once all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (io, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off rather
                // than spin on a listener that fails at once.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Streamed tokens go out as they come, not held back by Nagle.
        let _ = io.set_nodelay(true);
        let service = make_service(peer);
        let config = config.clone();
        let stop = stop.clone();
        let stop_shard = accepted_count % STOP_SHARDS;
        accepted_count = accepted_count.wrapping_add(1);
        let alive = alive_tx.clone();
        let run = move |io| async move {
            // Before the connection first looks at the flag, so that a
            // stop signalled after that look wakes this.
            let stop_wait = Box::pin(stop.shards[stop_shard].clone().notified_owned());
            let conn = Connection {
                io,
                rbuf: BytesMut::new(),
                wbuf: Vec::new(),
                idle_timer: None,
                service,
                config,
                stop,
                stop_wait,
            };
            conn.run().await;
            drop(alive);
        };
        match &threads {
            Some(t) => t.spawn(io, run),
            None => {
                tokio::spawn(run(io));
            }
        }
    }
    drop(listener);
    drop(stop_guard);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// How the client's request and connection are to be answered.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    version: Version,
    keep_alive: bool,
    head_only: bool,
}

/// The next thing a connection does.
// Returned once per request and moved straight out; boxing the request
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<RequestBody>, Exchange),
    /// The client closed, went quiet past the idle timeout, or the server
    /// is stopping.
    Close,
    /// The request cannot be served: answer this and close.
    Reject(RequestError),
}

struct Connection<S> {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// The idle timeout's timer, kept from one wait to the next: see
    /// [`idle_expired`].
    idle_timer: Option<Pin<Box<Sleep>>>,
    service: S,
    config: Arc<ServerConfig>,
    stop: Arc<Stop>,
    /// Completes once the server stops; kept for the connection's life
    /// (see [`Stop`]).
    stop_wait: Pin<Box<OwnedNotified>>,
}

impl<S, B> Connection<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    async fn run(mut self) {
        loop {
            let (req, exchange) = match self.next_request().await {
                Next::Request(req, exchange) => (req, exchange),
                Next::Close => return,
                Next::Reject(e) => return self.reject(e).await,
            };
            let ready = std::future::poll_fn(|cx| self.service.poll_ready(cx)).await;
            if ready
                .map_err(|e| log_failure("service not ready", e.into()))
                .is_err()
            {
                return self
                    .reject(internal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "service unavailable",
                    ))
                    .await;
            }
            let call = self.service.call(req);
            let answered = tokio::select! {
                r = call => r,
                // Dropping the call cancels the request (queued or at a replica).
                _ = client_gone(&mut self.io, &mut self.rbuf, self.config.read_size) => return,
            };
            let keep = match answered.map_err(|e| log_failure("service failed", e.into())) {
                Ok(res) => self.write_response(res, exchange).await,
                Err(()) => {
                    let res = llmgate_core::error_response(&internal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error",
                    ));
                    self.write_response(res, exchange).await
                }
            };
            if !keep {
                let _ = self.io.shutdown().await;
                return;
            }
        }
    }

    /// Reads the next request, head and body.
    async fn next_request(&mut self) -> Next {
        // Line ends a client sent after its last request (RFC 9112 §2.2
        // lets a server skip them) do not start a new one: the connection
        // is idle, not waiting for the rest of a request.
        let blank = self
            .rbuf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        self.rbuf.advance(blank);
        if self.rbuf.is_empty() {
            if self.stop.is_stopping() {
                return Next::Close;
            }
            let idle = self.config.idle_timeout;
            let first = tokio::select! {
                biased;
                r = fill(&mut self.io, &mut self.rbuf, self.config.read_size) => r,
                _ = self.stop_wait.as_mut() => return Next::Close,
                _ = idle_expired(&mut self.idle_timer, idle) => return Next::Close,
            };
            if !matches!(first, Ok(n) if n > 0) {
                return Next::Close;
            }
        }
        // Set by the first read that waits: a request that arrived whole
        // (nearly every one) needs no clock read.
        let mut deadline = None;
        let head = loop {
            match codec::parse_request_head(&mut self.rbuf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => return Next::Reject(e),
            }
            match self.read_more(&mut deadline).await {
                Ok(true) => {}
                Ok(false) => return Next::Close,
                Err(e) => return Next::Reject(e),
            }
        };
        let exchange = Exchange {
            version: head.version,
            keep_alive: head.keep_alive,
            head_only: head.method == http::Method::HEAD,
        };
        let body = match self.read_body(&head, &mut deadline).await {
            Ok(Some(body)) => body,
            Ok(None) => return Next::Close,
            Err(e) => return Next::Reject(e),
        };
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        let RequestHead {
            method,
            uri,
            version,
            headers,
            ..
        } = head;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        Next::Request(req, exchange)
    }

    /// The request read deadline, set to the timeout from now unless set
    /// already. (A `100 Continue` that the client is slow to take counts
    /// against the time the request has, as it always did.)
    fn start_clock(&self, deadline: &mut Option<Instant>) -> Instant {
        let timeout = self.config.request_read_timeout;
        *deadline.get_or_insert_with(|| Instant::now() + timeout)
    }

    /// Reads more of a request by `deadline`, which the first call sets
    /// to the request read timeout from now. `Ok(false)`: the client
    /// closed the connection.
    async fn read_more(&mut self, deadline: &mut Option<Instant>) -> Result<bool, RequestError> {
        let deadline = self.start_clock(deadline);
        match tokio::time::timeout_at(
            deadline,
            fill(&mut self.io, &mut self.rbuf, self.config.read_size),
        )
        .await
        {
            Err(_) => Err(internal(
                StatusCode::REQUEST_TIMEOUT,
                "the request did not arrive in time",
            )),
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(_)) => Ok(false),
        }
    }

    /// Reads the request's body whole. `Ok(None)`: the client closed the
    /// connection before sending it all.
    async fn read_body(
        &mut self,
        head: &RequestHead,
        deadline: &mut Option<Instant>,
    ) -> Result<Option<Bytes>, RequestError> {
        let max = self.config.max_body_bytes;
        let too_large = || {
            internal(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            )
        };
        match head.framing {
            Framing::Empty | Framing::UntilClose => Ok(Some(Bytes::new())),
            Framing::Length(n) => {
                if n > max as u64 {
                    return Err(too_large());
                }
                let n = n as usize;
                // Still in the allocation the head was cut from.
                let came_with_head = self.rbuf.len() >= n;
                if head.expects_continue && self.rbuf.len() < n {
                    self.start_clock(deadline);
                    self.send_continue().await;
                }
                while self.rbuf.len() < n {
                    let missing = n - self.rbuf.len();
                    self.rbuf.reserve(missing);
                    if !self.read_more(deadline).await? {
                        return Ok(None);
                    }
                }
                Ok(Some(if n <= COPY_BODY_BYTES && !came_with_head {
                    let body = Bytes::copy_from_slice(&self.rbuf[..n]);
                    self.rbuf.advance(n);
                    body
                } else {
                    self.rbuf.split_to(n).freeze()
                }))
            }
            Framing::Chunked => {
                if head.expects_continue && self.rbuf.is_empty() {
                    self.start_clock(deadline);
                    self.send_continue().await;
                }
                let mut decoder = Decoder::for_request(Framing::Chunked);
                let mut body = BytesMut::new();
                loop {
                    match decoder.decode(&mut self.rbuf) {
                        Ok(Step::Data(d)) => {
                            if body.len() + d.len() > max {
                                return Err(too_large());
                            }
                            body.extend_from_slice(&d);
                        }
                        Ok(Step::Done) => return Ok(Some(body.freeze())),
                        Ok(Step::NeedMore) => {
                            if !self.read_more(deadline).await? {
                                return Ok(None);
                            }
                        }
                        Err(e) => return Err(internal(StatusCode::BAD_REQUEST, &e.to_string())),
                    }
                }
            }
        }
    }

    async fn send_continue(&mut self) {
        let _ = self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }

    /// Writes `res`; whether the connection can carry another request.
    async fn write_response<B2>(&mut self, res: Response<B2>, exchange: Exchange) -> bool
    where
        B2: Body<Data = Bytes>,
        B2::Error: Into<BoxError>,
    {
        if res.status().is_informational() {
            // An interim answer is no answer: the client would wait for a
            // final one forever.
            tracing::warn!(status = %res.status(), "service answered with an interim status");
            let res = llmgate_core::error_response(&internal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the service gave no final answer",
            ));
            return Box::pin(self.write_response(res, exchange)).await;
        }
        let (parts, body) = res.into_parts();
        let status = parts.status;
        let fields = codec::answer_fields(&parts.headers);
        // The service's own `Connection: close` ends the connection too.
        let mut keep = exchange.keep_alive && !self.stop.is_stopping() && fields.keep_alive;
        let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        // A malformed length from the service frames nothing: the body's
        // own size (or chunking) decides.
        let declared = fields.content_length;
        let framing = if bodiless {
            Framing::Empty
        } else if let Some(n) = if exchange.head_only {
            // A HEAD answer's body is empty; its length is what a GET
            // would have sent, as the service declared it.
            declared.or(body.size_hint().exact())
        } else {
            body.size_hint().exact().or(declared)
        } {
            Framing::Length(n)
        } else if exchange.version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            keep = false;
            Framing::UntilClose
        };
        let persistence = if !keep {
            Persistence::Close
        } else if exchange.version == Version::HTTP_10 {
            Persistence::KeepAlive
        } else {
            Persistence::Default
        };
        let date = (!fields.has_date).then(crate::date::now);
        self.wbuf.clear();
        codec::encode_response_head(
            status,
            &parts.headers,
            framing,
            persistence,
            date.as_ref().map(|d| &d[..]),
            &mut self.wbuf,
        );
        if exchange.head_only || framing == Framing::Empty {
            let flushed = self.flush().await;
            self.wbuf = Vec::new();
            return flushed && keep;
        }
        let mut body = pin!(body);
        let mut sent: u64 = 0;
        loop {
            // Take what the body has ready; flush before waiting for more,
            // so a stream's chunks reach the client as they come.
            let frame = match poll_now(body.as_mut()) {
                // A body that is always ready still reaches the client in
                // bounded pieces.
                Some(frame) if self.wbuf.len() < MAX_GATHERED_BYTES => frame,
                Some(frame) => {
                    if !self.flush().await {
                        return false;
                    }
                    frame
                }
                None => {
                    if !self.flush().await {
                        return false;
                    }
                    // A stream waits for its next chunk holding no buffer.
                    self.wbuf = Vec::new();
                    tokio::select! {
                        f = body.frame() => f,
                        _ = client_gone(&mut self.io, &mut self.rbuf, self.config.read_size) => return false,
                    }
                }
            };
            let data =
                match frame.map(|f| f.map_err(|e| log_failure("response body failed", e.into()))) {
                    None => break,
                    Some(Err(())) => {
                        // Mid-body: the client sees the connection end short of
                        // the framing's end, which is how HTTP/1.1 says so.
                        let _ = self.flush().await;
                        return false;
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => data,
                        // Empty data and trailers are not relayed.
                        _ => continue,
                    },
                };
            sent += data.len() as u64;
            if let Framing::Length(n) = framing {
                if sent > n {
                    tracing::warn!(declared = n, "response body longer than its length");
                    let _ = self.flush().await;
                    return false;
                }
            }
            if framing == Framing::Chunked {
                codec::encode_chunk_size(data.len(), &mut self.wbuf);
            }
            if data.len() <= COALESCE_BYTES {
                self.wbuf.extend_from_slice(&data);
            } else if !(self.flush().await && self.write(&data).await) {
                return false;
            }
            if framing == Framing::Chunked {
                self.wbuf.extend_from_slice(b"\r\n");
            }
        }
        match framing {
            Framing::Length(n) if sent != n => {
                tracing::warn!(declared = n, sent, "response body shorter than its length");
                let _ = self.flush().await;
                return false;
            }
            Framing::Chunked => self.wbuf.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
        let flushed = self.flush().await;
        // The connection now waits for its next request: no buffer kept.
        self.wbuf = Vec::new();
        flushed && keep
    }

    /// Writes the write buffer out; false when the client is gone.
    async fn flush(&mut self) -> bool {
        if self.wbuf.is_empty() {
            return true;
        }
        // An answer's head and small body nearly always fit the socket's
        // send buffer: one plain write, without the readiness polling of
        // `write_all`, which takes over only for what that write leaves.
        let written = match self.io.try_write(&self.wbuf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                self.wbuf.clear();
                return false;
            }
        };
        let ok =
            written == self.wbuf.len() || self.io.write_all(&self.wbuf[written..]).await.is_ok();
        self.wbuf.clear();
        ok
    }

    async fn write(&mut self, data: &[u8]) -> bool {
        self.io.write_all(data).await.is_ok()
    }

    /// Answers a request that cannot be served and closes the connection,
    /// reading what the client still sends for a moment so that it gets
    /// the answer rather than a reset.
    async fn reject(mut self, e: RequestError) {
        tracing::debug!(status = %e.status, error = %e.message, "request rejected");
        let res = llmgate_core::error_response(&e);
        let exchange = Exchange {
            version: Version::HTTP_11,
            keep_alive: false,
            head_only: false,
        };
        // Always false (the exchange does not keep the connection); a
        // failed write makes the lingering below end at once.
        let _ = self.write_response(res, exchange).await;
        let _ = self.io.shutdown().await;
        let linger = async {
            let mut left = MAX_READ_AHEAD * 16;
            loop {
                self.rbuf.clear();
                match fill(&mut self.io, &mut self.rbuf, self.config.read_size).await {
                    Ok(n) if n > 0 && n < left => left -= n,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, linger).await;
    }
}

fn log_failure(what: &str, e: BoxError) {
    tracing::warn!(error = %e, "{what}");
}

/// What polling a body yields when it is ready.
type NextFrame<B> = Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>;

/// Polls `body` once without registering for a wake-up.
fn poll_now<B: Body>(body: std::pin::Pin<&mut B>) -> Option<NextFrame<B>> {
    let mut cx = Context::from_waker(Waker::noop());
    match body.poll_frame(&mut cx) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// Completes when the client closes its end (or the socket fails). Bytes
/// it sends meanwhile (a pipelined request) are kept in `rbuf`.
async fn client_gone(io: &mut TcpStream, rbuf: &mut BytesMut, read_size: usize) {
    loop {
        if rbuf.len() >= MAX_READ_AHEAD {
            return std::future::pending().await;
        }
        match fill(io, rbuf, read_size).await {
            Ok(n) if n > 0 => continue,
            _ => return,
        }
    }
}

/// How many [`Notify`]s the connections' stop waits are spread over.
const STOP_SHARDS: usize = 8;

/// Tells the connections that the server is stopping.
///
/// Each connection keeps one wait for it from start to end, registered
/// once; a fresh wait for each idle spell (a watch channel's `changed`)
/// was registered and unregistered under a lock once per request. The
/// waits are spread over several `Notify`s so that the connections of
/// different I/O threads do not all take one lock.
struct Stop {
    stopping: AtomicBool,
    shards: [Arc<Notify>; STOP_SHARDS],
}

impl Stop {
    fn new() -> Stop {
        Stop {
            stopping: AtomicBool::new(false),
            shards: std::array::from_fn(|_| Arc::new(Notify::new())),
        }
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn signal(&self) {
        // The flag first: a connection that misses it was already waiting
        // (its wait predates this call), and `notify_waiters` wakes it.
        self.stopping.store(true, Ordering::Release);
        for shard in &self.shards {
            shard.notify_waiters();
        }
    }
}

/// Signals [`Stop`] when dropped.
struct StopOnDrop(Arc<Stop>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.signal();
    }
}

/// Completes once `idle` (from the first poll) has passed; never when
/// `None`.
///
/// The timer lives in `timer` from one idle wait to the next and is not
/// moved to each new deadline: inserting a timer into the runtime's wheel
/// and taking it out again, once per request, cost more than the rest of
/// the wait. When the timer fires for an older deadline, it is moved to
/// this one and waited on again, so the connection still closes `idle`
/// after it went idle, never sooner.
async fn idle_expired(timer: &mut Option<Pin<Box<Sleep>>>, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    let deadline = Instant::now() + idle;
    let timer = match timer {
        Some(t) => {
            if t.deadline() > deadline {
                t.as_mut().reset(deadline);
            }
            t
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    loop {
        timer.as_mut().await;
        if timer.deadline() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

fn internal(status: StatusCode, msg: &str) -> RequestError {
    RequestError {
        status,
        message: msg.to_string(),
    }
}

impl ErrorResponse for RequestError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid_http_request",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::EXPECTATION_FAILED => "expectation_failed",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_head_too_large",
            StatusCode::NOT_IMPLEMENTED => "not_implemented",
            StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            _ => "internal_error",
        }
    }
}
