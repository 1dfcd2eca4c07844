//! `serve` end to end: raw TCP clients on 127.0.0.1 write scripted bytes
//! and read back exactly what the server put on the wire.
//!
//! Waits that matter to the server (idle timeout, request read timeout)
//! run under a paused clock: with every socket in this process, the clock
//! jumps to the next timer whenever everything waits on I/O, so those
//! tests take no wall time and assert on virtual time only. Every other
//! wait is bounded by [`GUARD`], a hang guard rather than a speed check.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use llmgate_http1::{serve, RequestBody, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{service_fn, BoxError, Service};

// ---------------------------------------------------------------------
// Server harness
// ---------------------------------------------------------------------

const MAX_BODY: usize = 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long any one wait may take before the test fails. Longer than every
/// server timeout, so under a paused clock those always fire first.
const GUARD: Duration = Duration::from_secs(30);
/// Most bytes a client buffers before a test gives up on a runaway answer.
const MAX_ANSWER: usize = 4 << 20;

fn config() -> ServerConfig {
    ServerConfig {
        max_body_bytes: MAX_BODY,
        request_read_timeout: READ_TIMEOUT,
        idle_timeout: Some(IDLE_TIMEOUT),
        ..ServerConfig::default()
    }
}

/// Awaits `f`, failing the test if it takes longer than [`GUARD`].
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(GUARD, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {GUARD:?}"),
    }
}

/// What the tests serve: a `service_fn`, cloned for each connection.
trait TestService<B>:
    Service<Request<RequestBody>, Response = Response<B>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<T, B> TestService<B> for T where
    T: Service<Request<RequestBody>, Response = Response<B>, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static
{
}

struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Serves `service` on an ephemeral 127.0.0.1 port.
async fn start<B>(config: ServerConfig, service: impl TestService<B>) -> Server
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        config,
        move |_peer| {
            counted.fetch_add(1, Ordering::SeqCst);
            service.clone()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        connections,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Completes the shutdown future handed to `serve`.
    fn begin_shutdown(&mut self) {
        let _ = self.stop.take().expect("shut down twice").send(());
    }

    /// Shuts down and waits for `serve` to return.
    async fn stop(mut self) {
        self.begin_shutdown();
        within("serve returning", &mut self.task).await.unwrap();
    }
}

// ---------------------------------------------------------------------
// Client: a raw socket and a tiny response parser
// ---------------------------------------------------------------------

struct Client {
    io: TcpStream,
    /// Received and not yet taken.
    buf: Vec<u8>,
}

/// One response as it came off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The head, status line to the empty line, as sent.
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The chunks as framed, for a chunked body.
    chunks: Option<Vec<Vec<u8>>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let io = within("connecting", TcpStream::connect(addr))
            .await
            .unwrap();
        Client {
            io,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        within("writing", self.io.write_all(bytes.as_ref()))
            .await
            .unwrap();
    }

    /// Reads what the socket has next; `Ok(false)` at end of stream.
    async fn try_read_more(&mut self) -> std::io::Result<bool> {
        assert!(self.buf.len() < MAX_ANSWER, "runaway answer");
        let n = within("reading", self.io.read_buf(&mut self.buf)).await?;
        Ok(n > 0)
    }

    async fn read_more(&mut self) {
        match self.try_read_more().await {
            Ok(true) => {}
            Ok(false) => panic!(
                "connection closed; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!(
                "read failed ({e}); unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Takes exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.read_more().await;
        }
        self.buf.drain(..n).collect()
    }

    /// Takes the next `expected.len()` bytes and asserts they are `expected`.
    async fn expect_bytes(&mut self, expected: &[u8]) {
        let got = self.take(expected.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Takes everything up to and including `delim`.
    async fn take_through(&mut self, delim: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return self.buf.drain(..at + delim.len()).collect();
            }
            self.read_more().await;
        }
    }

    /// Reads one response; its body framed as the head says.
    async fn answer(&mut self) -> Answer {
        self.read_answer(false).await
    }

    /// Reads the answer to a HEAD request: the head only.
    async fn head_answer(&mut self) -> Answer {
        self.read_answer(true).await
    }

    async fn read_answer(&mut self, head_only: bool) -> Answer {
        let head = String::from_utf8(self.take_through(b"\r\n\r\n").await).unwrap();
        let mut lines = head.trim_end_matches("\r\n").split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{head:?}");
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (name, value) = l
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("header line {l:?}"));
                (name.to_string(), value.to_string())
            })
            .collect();
        let mut answer = Answer {
            status,
            head,
            headers,
            body: Vec::new(),
            chunks: None,
        };
        if head_only || matches!(status, 100..=199 | 204 | 304) {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            let chunks = self.chunks().await;
            answer.body = chunks.concat();
            answer.chunks = Some(chunks);
        } else if let Some(n) = answer.header("content-length") {
            answer.body = self.take(n.parse().unwrap()).await;
        } else {
            answer.body = self.read_to_end().await;
        }
        answer
    }

    /// Reads a chunked body through its last chunk.
    async fn chunks(&mut self) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        loop {
            let line = self.take_through(b"\r\n").await;
            let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("chunk size line {size:?}"));
            if size == 0 {
                assert_eq!(self.take(2).await, b"\r\n", "no trailers expected");
                return chunks;
            }
            chunks.push(self.take(size).await);
            assert_eq!(self.take(2).await, b"\r\n", "chunk data ends in CRLF");
        }
    }

    async fn read_to_end(&mut self) -> Vec<u8> {
        loop {
            match self.try_read_more().await {
                Ok(true) => {}
                Ok(false) => return std::mem::take(&mut self.buf),
                Err(e) => panic!("read failed before the end of the answer: {e}"),
            }
        }
    }

    /// Asserts the server closed the connection cleanly with nothing more
    /// to say.
    async fn expect_eof(&mut self) {
        match self.try_read_more().await {
            Ok(false) => assert!(
                self.buf.is_empty(),
                "unread before EOF: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(true) => panic!("expected EOF, got {:?}", String::from_utf8_lossy(&self.buf)),
            Err(e) => panic!("expected a clean EOF, got {e}"),
        }
    }

    /// Sends `request` and reads its answer.
    async fn exchange(&mut self, request: &str) -> Answer {
        self.send(request).await;
        self.answer().await
    }
}

impl Answer {
    /// The only value of header `name`, if any.
    fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} sent {} times: {:?}",
            all.len(),
            self.head
        );
        all.first().copied()
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The head with the date's value replaced by `<date>`, for exact
    /// comparison.
    fn masked_head(&self) -> String {
        self.head
            .split_inclusive("\r\n")
            .map(|line| {
                if line.to_ascii_lowercase().starts_with("date: ") {
                    "date: <date>\r\n".to_string()
                } else {
                    line.to_string()
                }
            })
            .collect()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// Asserts an OpenAI-shaped JSON error with this status and code.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        let text = self.text();
        assert!(text.starts_with(r#"{"error":{"#), "{text}");
        assert!(text.contains(r#""message":""#), "{text}");
        assert!(
            text.contains(&format!(r#""code":"{code}""#)),
            "want code {code}: {text}"
        );
    }
}

// ---------------------------------------------------------------------
// Services and bodies
// ---------------------------------------------------------------------

fn full(body: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(body.into())
}

/// Routes on the path: `/no-content` 204 (with a body that must not be
/// sent), `/fail` an error, `/dated` its own `date`, `/close` asks to
/// close; anything else echoes the body back, with `x-target` naming the
/// request target and `x-method` the method when it is not GET.
async fn app(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let res = Response::builder();
    let res = match parts.uri.path() {
        "/no-content" => res
            .status(StatusCode::NO_CONTENT)
            .header(header::CONTENT_LENGTH, "7")
            .body(full("ignored")),
        "/fail" => return Err("the service failed".into()),
        "/dated" => res
            .header(header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT")
            .body(full("dated")),
        "/close" => res.header(header::CONNECTION, "close").body(full("bye")),
        _ => {
            let mut res = res.header("x-target", parts.uri.to_string());
            if parts.method != http::Method::GET {
                res = res.header("x-method", parts.method.as_str());
            }
            res.body(Full::new(body))
        }
    };
    Ok(res.unwrap())
}

fn app_service() -> impl TestService<Full<Bytes>> {
    service_fn(app)
}

/// Counts its calls, then answers like [`app`].
fn counted_app() -> (impl TestService<Full<Bytes>>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = service_fn(move |req| {
        counter.fetch_add(1, Ordering::SeqCst);
        app(req)
    });
    (service, calls)
}

/// Sends on a oneshot when dropped.
struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn drop_signal() -> (DropSignal, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    (DropSignal(Some(tx)), rx)
}

/// A request held by [`gated`] until the test answers it.
struct Call {
    target: String,
    respond: oneshot::Sender<Response<Full<Bytes>>>,
    /// Fires when the service's future is dropped.
    dropped: oneshot::Receiver<()>,
}

/// Hands each request to the test as a [`Call`] and answers with what the
/// test sends back.
fn gated() -> (impl TestService<Full<Bytes>>, mpsc::UnboundedReceiver<Call>) {
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let service = service_fn(move |req: Request<RequestBody>| {
        let calls_tx = calls_tx.clone();
        async move {
            let (respond, answer) = oneshot::channel();
            let (guard, dropped) = drop_signal();
            calls_tx
                .send(Call {
                    target: req.uri().to_string(),
                    respond,
                    dropped,
                })
                .unwrap();
            let _guard = guard;
            answer.await.map_err(|_| BoxError::from("no answer"))
        }
    });
    (service, calls)
}

/// A response body fed through a channel by the test.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    exact: Option<u64>,
    _dropped: DropSignal,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|piece| piece.map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        self.exact.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// The test's end of one streamed response.
struct Stream {
    chunks: mpsc::Sender<Bytes>,
    /// Fires when the server drops the body.
    dropped: oneshot::Receiver<()>,
}

impl Stream {
    async fn push(&self, data: &'static [u8]) {
        self.chunks
            .send(Bytes::from_static(data))
            .await
            .expect("the body is gone");
    }
}

/// How [`streaming`] describes its bodies.
#[derive(Clone, Copy, Default)]
struct StreamShape {
    /// The body's exact size hint.
    exact: Option<u64>,
    /// A `content-length` header set by the service.
    declared: Option<u64>,
}

/// Answers every request with a body the test feeds through a [`Stream`].
fn streaming(
    shape: StreamShape,
) -> (
    impl TestService<ChannelBody>,
    mpsc::UnboundedReceiver<Stream>,
) {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let service = service_fn(move |_req: Request<RequestBody>| {
        let streams_tx = streams_tx.clone();
        async move {
            let (chunks, rx) = mpsc::channel(8);
            let (guard, dropped) = drop_signal();
            streams_tx.send(Stream { chunks, dropped }).unwrap();
            let mut res = Response::new(ChannelBody {
                rx,
                exact: shape.exact,
                _dropped: guard,
            });
            if let Some(n) = shape.declared {
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
            }
            Ok::<_, BoxError>(res)
        }
    });
    (service, streams)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    within("the service being called", rx.recv())
        .await
        .expect("service gone")
}

// ---------------------------------------------------------------------
// Connections and framing
// ---------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let first = c
        .exchange("GET /first?x=1&y=%20 HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(
        first.masked_head(),
        "HTTP/1.1 200 OK\r\nx-target: /first?x=1&y=%20\r\ndate: <date>\r\ncontent-length: 0\r\n\r\n"
    );
    let second = c.exchange("GET /second HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-target"), Some("/second"));
    assert_eq!(server.connections(), 1);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    c.send(concat!(
        "GET /1 HTTP/1.1\r\nhost: t\r\n\r\n",
        "POST /2 HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello",
        "POST /3 HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "GET /4 HTTP/1.1\r\nhost: t\r\n\r\n",
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let a = c.answer().await;
        assert_eq!(a.status, 200);
        seen.push(format!("{} {}", a.header("x-target").unwrap(), a.text()));
    }
    assert_eq!(seen, ["/1 ", "/2 hello", "/3 hi", "/4 "]);
    assert!(c.buf.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_content_length_body_reaches_the_service_intact() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let body: Vec<u8> = (0..=255u8)
        .chain(*b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        .collect();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // Head and body in separate writes, the body itself in two.
    c.send(head).await;
    c.send(&body[..100]).await;
    c.send(&body[100..]).await;
    let a = c.answer().await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-method"), Some("POST"));
    assert_eq!(a.body, body);
    server.stop().await;
}

#[tokio::test]
async fn a_large_body_arriving_in_pieces_reaches_the_service_intact() {
    // Past the size the server copies out of its read buffer.
    let config = ServerConfig {
        max_body_bytes: 256 * 1024,
        ..config()
    };
    let server = start(config, app_service()).await;
    let mut c = server.client().await;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    c.send(format!(
        "PUT /big HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ))
    .await;
    for piece in body.chunks(30_000) {
        c.send(piece).await;
    }
    let a = c.answer().await;
    assert_eq!((a.status, a.header("x-method")), (200, Some("PUT")));
    assert_eq!(a.body.len(), body.len());
    assert!(a.body == body, "the body came back altered");
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_reaches_the_service_intact() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    c.send("POST /chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        .await;
    c.send("1\r\n \r\nA\r\n0123\r\n5678\r\n0\r\nx-trailer: t\r\n\r\n")
        .await;
    let a = c.answer().await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "hello 0123\r\n5678");
    assert_eq!(a.header("content-length"), Some("16"));
    server.stop().await;
}

#[tokio::test]
async fn a_stream_of_unknown_length_goes_out_chunked_as_it_comes() {
    let (service, mut streams) = streaming(StreamShape::default());
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
        .await;
    let stream = next(&mut streams).await;
    stream.push(b"data: one\n\n").await;
    let head = c.take_through(b"\r\n\r\n").await;
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{head}");
    assert!(
        head.ends_with(" GMT\r\ntransfer-encoding: chunked\r\n\r\n"),
        "{head}"
    );
    // The first chunk arrives while the service still holds the second.
    c.expect_bytes(b"b\r\ndata: one\n\n\r\n").await;
    // An empty piece must not end the stream early.
    stream.push(b"").await;
    stream.push(b"data: two\n\n").await;
    c.expect_bytes(b"b\r\ndata: two\n\n\r\n").await;
    // A piece too large to coalesce with its framing.
    let big = vec![b'x'; 10_000];
    stream.chunks.send(Bytes::from(big.clone())).await.unwrap();
    c.expect_bytes(b"2710\r\n").await;
    c.expect_bytes(&big).await;
    c.expect_bytes(b"\r\n").await;
    drop(stream.chunks);
    c.expect_bytes(b"0\r\n\r\n").await;
    within("the body being dropped", stream.dropped)
        .await
        .unwrap();
    // The connection carries on.
    c.send("GET / HTTP/1.1\r\n\r\n").await;
    let again = next(&mut streams).await;
    again.push(b"z").await;
    drop(again.chunks);
    let a = c.answer().await;
    assert_eq!(a.chunks, Some(vec![b"z".to_vec()]));
    assert_eq!(server.connections(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_request_pipelined_during_a_stream_is_answered_after_it() {
    let (service, mut streams) = streaming(StreamShape::default());
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("GET /a HTTP/1.1\r\n\r\n").await;
    let a = next(&mut streams).await;
    a.push(b"a1").await;
    assert!(c
        .take_through(b"\r\n\r\n")
        .await
        .ends_with(b"chunked\r\n\r\n"));
    c.expect_bytes(b"2\r\na1\r\n").await;
    // Sent while /a is still streaming: read ahead, answered after /a ends.
    c.send("GET /b HTTP/1.1\r\n\r\n").await;
    a.push(b"a2").await;
    c.expect_bytes(b"2\r\na2\r\n").await;
    drop(a.chunks);
    c.expect_bytes(b"0\r\n\r\n").await;
    let b = next(&mut streams).await;
    b.push(b"b1").await;
    drop(b.chunks);
    let answer = c.answer().await;
    assert_eq!(answer.chunks, Some(vec![b"b1".to_vec()]));
    server.stop().await;
}

#[tokio::test]
async fn an_exact_size_hint_gets_content_length_not_chunks() {
    let shape = StreamShape {
        exact: Some(11),
        ..StreamShape::default()
    };
    let (service, mut streams) = streaming(shape);
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("GET / HTTP/1.1\r\n\r\n").await;
    let stream = next(&mut streams).await;
    stream.push(b"hello ").await;
    stream.push(b"world").await;
    drop(stream.chunks);
    let a = c.answer().await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-length: 11\r\n\r\n"
    );
    assert_eq!(a.text(), "hello world");
    // Nothing after the body: the next answer starts on its status line.
    c.send("GET / HTTP/1.1\r\n\r\n").await;
    let stream = next(&mut streams).await;
    stream.push(b"01234567890").await;
    drop(stream.chunks);
    assert_eq!(c.answer().await.text(), "01234567890");
    server.stop().await;
}

#[tokio::test]
async fn a_declared_content_length_frames_a_body_of_unknown_size() {
    let shape = StreamShape {
        declared: Some(4),
        ..StreamShape::default()
    };
    let (service, mut streams) = streaming(shape);
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("GET / HTTP/1.1\r\n\r\n").await;
    let stream = next(&mut streams).await;
    stream.push(b"ab").await;
    stream.push(b"cd").await;
    drop(stream.chunks);
    let a = c.answer().await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-length: 4\r\n\r\n"
    );
    assert_eq!(a.text(), "abcd");
    server.stop().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_declared_length_ends_the_connection() {
    let shape = StreamShape {
        declared: Some(10),
        ..StreamShape::default()
    };
    let (service, mut streams) = streaming(shape);
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("GET / HTTP/1.1\r\n\r\n").await;
    let stream = next(&mut streams).await;
    stream.push(b"abc").await;
    drop(stream.chunks);
    let head = c.take_through(b"\r\n\r\n").await;
    assert!(String::from_utf8(head)
        .unwrap()
        .contains("content-length: 10\r\n"));
    c.expect_bytes(b"abc").await;
    // The client learns the body is short from the connection closing.
    c.expect_eof().await;
    server.stop().await;
}

#[tokio::test]
async fn head_gets_the_length_but_no_body() {
    let server = start(
        config(),
        service_fn(|_req: Request<RequestBody>| async {
            Ok::<_, BoxError>(Response::new(full("hello")))
        }),
    )
    .await;
    let mut c = server.client().await;
    c.send("HEAD / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let a = c.head_answer().await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-length: 5\r\n\r\n"
    );
    // Had the body been sent, this answer would start with "hello".
    let next = c.exchange("GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(next.text(), "hello");
    server.stop().await;
}

#[tokio::test]
async fn head_keeps_the_length_the_service_declared_for_an_empty_body() {
    let server = start(
        config(),
        service_fn(|_req: Request<RequestBody>| async {
            let mut res = Response::new(Full::new(Bytes::new()));
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, "5".parse().unwrap());
            Ok::<_, BoxError>(res)
        }),
    )
    .await;
    let mut c = server.client().await;
    c.send("HEAD / HTTP/1.1\r\n\r\n").await;
    let a = c.head_answer().await;
    assert_eq!(a.header("content-length"), Some("5"), "{:?}", a.head);
    server.stop().await;
}

#[tokio::test]
async fn no_content_has_no_body_and_no_length() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let a = c.exchange("GET /no-content HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 204 No Content\r\ndate: <date>\r\n\r\n"
    );
    // Had "ignored" been sent, this answer would start with it.
    let next = c.exchange("GET /after HTTP/1.1\r\n\r\n").await;
    assert_eq!(next.header("x-target"), Some("/after"));
    server.stop().await;
}

#[tokio::test]
async fn http10_without_keep_alive_is_answered_then_closed() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let a = c.exchange("GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\nx-target: /old\r\ndate: <date>\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    c.expect_eof().await;
    server.stop().await;
}

#[tokio::test]
async fn http10_keep_alive_is_honoured() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let a = c
        .exchange("POST /a HTTP/1.0\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi")
        .await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\nx-target: /a\r\nx-method: POST\r\ndate: <date>\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n"
    );
    assert_eq!(a.text(), "hi");
    let b = c
        .exchange("GET /b HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        .await;
    assert_eq!(b.header("x-target"), Some("/b"));
    assert_eq!(b.header("connection"), Some("keep-alive"));
    assert_eq!(server.connections(), 1);
    server.stop().await;
}

#[tokio::test]
async fn http10_stream_of_unknown_length_is_delimited_by_close() {
    let (service, mut streams) = streaming(StreamShape::default());
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let stream = next(&mut streams).await;
    stream.push(b"one ").await;
    stream.push(b"two").await;
    drop(stream.chunks);
    let a = c.answer().await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\ndate: <date>\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(a.text(), "one two");
    server.stop().await;
}

#[tokio::test]
async fn connection_close_is_answered_with_close_then_eof() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    // The pipelined request after it is never answered.
    c.send("GET /last HTTP/1.1\r\nconnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n")
        .await;
    let a = c.answer().await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\nx-target: /last\r\ndate: <date>\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    c.expect_eof().await;
    server.stop().await;
}

#[tokio::test]
async fn a_service_asking_to_close_gets_one_close_header_and_eof() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let a = c.exchange("GET /close HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-length: 3\r\nconnection: close\r\n\r\n"
    );
    c.expect_eof().await;
    server.stop().await;
}

#[tokio::test]
async fn the_date_header_is_added_once_unless_the_service_set_one() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let a = c.exchange("GET / HTTP/1.1\r\n\r\n").await;
    let date = a.header("date").expect("a date header");
    let parsed = httpdate::parse_http_date(date).unwrap();
    assert_eq!(httpdate::fmt_http_date(parsed), date, "an IMF-fixdate");
    let a = c.exchange("GET /dated HTTP/1.1\r\n\r\n").await;
    assert_eq!(a.all("date"), ["Sun, 06 Nov 1994 08:49:37 GMT"]);
    server.stop().await;
}

// ---------------------------------------------------------------------
// Requests the server refuses
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_the_connection_closes() {
    let (service, calls) = counted_app();
    let server = start(config(), service).await;

    // At the limit: served.
    let mut c = server.client().await;
    let at_limit = "x".repeat(MAX_BODY);
    let a = c
        .exchange(&format!(
            "POST / HTTP/1.1\r\ncontent-length: {MAX_BODY}\r\n\r\n{at_limit}"
        ))
        .await;
    assert_eq!((a.status, a.body.len()), (200, MAX_BODY));

    // One byte over, by content-length.
    let mut c = server.client().await;
    let over = "x".repeat(MAX_BODY + 1);
    let a = c
        .exchange(&format!(
            "POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n{over}",
            MAX_BODY + 1
        ))
        .await;
    a.assert_error(413, "request_too_large");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(a.text().contains("1024 bytes"), "{}", a.text());
    c.expect_eof().await;

    // One byte over, in chunks.
    let mut c = server.client().await;
    c.send(format!(
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{at_limit}\r\n1\r\nx\r\n0\r\n\r\n",
        MAX_BODY
    ))
    .await;
    let a = c.answer().await;
    a.assert_error(413, "request_too_large");
    assert_eq!(a.header("connection"), Some("close"));
    c.expect_eof().await;

    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the first was served");
    server.stop().await;
}

/// Sends `first`, then `rest` while the server is refusing the request;
/// the client must still read the whole error answer and a clean close.
async fn refused_while_sending(
    server: &Server,
    first: &[u8],
    rest: &[u8],
    status: u16,
    code: &str,
) {
    let mut c = server.client().await;
    c.send(first).await;
    let written = within("writing the rest", c.io.write_all(rest)).await;
    let a = c.answer().await;
    a.assert_error(status, code);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(
        written.is_ok(),
        "the request could not be sent: {written:?}"
    );
    c.expect_eof().await;
}

#[tokio::test]
async fn a_client_still_sending_a_refused_request_gets_the_answer_and_a_clean_close() {
    let server = start(config(), app_service()).await;
    // Declared far over the limit; the client sends the body regardless,
    // as clients that do not use `Expect: 100-continue` do.
    let body = vec![b'x'; 256 * 1024];
    let head = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len());
    refused_while_sending(&server, head.as_bytes(), &body, 413, "request_too_large").await;
    // A head over 64 KiB, refused before its end arrives.
    let mut head = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
    head.resize(70 * 1024, b'a');
    refused_while_sending(&server, &head, b"\r\n\r\n", 431, "request_head_too_large").await;
    server.stop().await;
}

#[tokio::test]
async fn a_head_over_64_kib_is_431() {
    let (service, calls) = counted_app();
    let server = start(config(), service).await;
    let mut c = server.client().await;
    let mut head = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
    head.resize(70 * 1024, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    c.send(&head).await;
    let a = c.answer().await;
    a.assert_error(431, "request_head_too_large");
    assert_eq!(a.header("connection"), Some("close"));
    // How the connection then ends: see the lingering-close test above.
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_openai_shaped_errors_and_close() {
    let (service, calls) = counted_app();
    let server = start(config(), service).await;
    let many_headers: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(String, u16, &str)> = vec![
        ("GARBAGE\r\n\r\n".into(), 400, "invalid_http_request"),
        (
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
            505,
            "http_version_not_supported",
        ),
        (
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\nabc".into(),
            400,
            "invalid_http_request",
        ),
        (
            "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
            "invalid_http_request",
        ),
        (
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n".into(),
            501,
            "not_implemented",
        ),
        (
            "POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc".into(),
            400,
            "invalid_http_request",
        ),
        (
            "POST / HTTP/1.1\r\ncontent-length: three\r\n\r\n".into(),
            400,
            "invalid_http_request",
        ),
        (
            "POST / HTTP/1.1\r\nexpect: 200-ok\r\ncontent-length: 2\r\n\r\nhi".into(),
            417,
            "expectation_failed",
        ),
        (
            format!("GET / HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "request_head_too_large",
        ),
        (
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".into(),
            400,
            "invalid_http_request",
        ),
    ];
    for (request, status, code) in &cases {
        let mut c = server.client().await;
        c.send(request).await;
        let a = c.answer().await;
        let shown = &request[..request.len().min(40)];
        assert_eq!(a.status, *status, "{shown:?}: {a:?}");
        a.assert_error(*status, code);
        assert_eq!(a.header("connection"), Some("close"), "{shown:?}");
        c.expect_eof().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.stop().await;
}

#[tokio::test]
async fn expect_100_continue_gets_continue_before_the_body_is_sent() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    c.send("POST /e HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        .await;
    c.expect_bytes(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    c.send("hello").await;
    let a = c.answer().await;
    assert_eq!((a.status, a.text()), (200, "hello"));

    // Chunked, on the same connection.
    c.send("POST /e HTTP/1.1\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n")
        .await;
    c.expect_bytes(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    c.send("3\r\nabc\r\n0\r\n\r\n").await;
    let a = c.answer().await;
    assert_eq!((a.status, a.text()), (200, "abc"));
    server.stop().await;
}

#[tokio::test]
async fn expect_100_continue_with_a_body_over_the_limit_gets_413_without_continue() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    c.send(format!(
        "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        MAX_BODY + 1
    ))
    .await;
    let a = c.answer().await;
    a.assert_error(413, "request_too_large");
    c.expect_eof().await;
    server.stop().await;
}

#[tokio::test]
async fn a_service_error_is_a_500_and_the_connection_carries_on() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let a = c.exchange("GET /fail HTTP/1.1\r\n\r\n").await;
    a.assert_error(500, "internal_error");
    assert_eq!(a.header("connection"), None);
    assert!(
        !a.text().contains("the service failed"),
        "no internals leak"
    );
    let b = c.exchange("GET /ok HTTP/1.1\r\n\r\n").await;
    assert_eq!(b.header("x-target"), Some("/ok"));
    server.stop().await;
}

// ---------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_client_disconnect_drops_the_pending_service_future() {
    let (service, mut calls) = gated();
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("POST /slow HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}")
        .await;
    let call = next(&mut calls).await;
    assert_eq!(call.target, "/slow");
    drop(c);
    within("the service future being dropped", call.dropped)
        .await
        .expect("the future was dropped, not leaked");
    assert!(call.respond.is_closed());
    server.stop().await;
}

#[tokio::test]
async fn a_client_disconnect_mid_stream_drops_the_response_body() {
    let (service, mut streams) = streaming(StreamShape::default());
    let server = start(config(), service).await;
    let mut c = server.client().await;
    c.send("GET /stream HTTP/1.1\r\n\r\n").await;
    let stream = next(&mut streams).await;
    stream.push(b"token").await;
    c.take_through(b"\r\n\r\n").await;
    c.expect_bytes(b"5\r\ntoken\r\n").await;
    drop(c);
    within("the body being dropped", stream.dropped)
        .await
        .expect("the body was dropped, not leaked");
    assert!(stream.chunks.is_closed());
    server.stop().await;
}

// ---------------------------------------------------------------------
// Timeouts (paused clock)
// ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_after_the_idle_timeout() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    assert_eq!(c.exchange("GET /1 HTTP/1.1\r\n\r\n").await.status, 200);
    // Activity just before the timeout keeps the connection.
    tokio::time::sleep(IDLE_TIMEOUT - Duration::from_secs(1)).await;
    assert_eq!(c.exchange("GET /2 HTTP/1.1\r\n\r\n").await.status, 200);
    let idle_since = Instant::now();
    c.expect_eof().await;
    let idle = idle_since.elapsed();
    assert!(
        idle >= IDLE_TIMEOUT && idle < IDLE_TIMEOUT + Duration::from_secs(1),
        "closed after {idle:?} idle"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_time_counts_from_the_last_answer_even_after_a_request_longer_than_the_timeout() {
    let (service, mut calls) = gated();
    let server = start(config(), service).await;
    let mut c = server.client().await;
    // Idle for a while first, so the connection's idle timer is running.
    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
    c.send("GET /slow HTTP/1.1\r\n\r\n").await;
    let call = next(&mut calls).await;
    // The timer's first deadline passes while the request is in service.
    tokio::time::sleep(IDLE_TIMEOUT + Duration::from_secs(5)).await;
    call.respond.send(Response::new(full("late"))).unwrap();
    assert_eq!(c.answer().await.text(), "late");
    let idle_since = Instant::now();
    c.expect_eof().await;
    let idle = idle_since.elapsed();
    assert!(
        idle >= IDLE_TIMEOUT && idle < IDLE_TIMEOUT + Duration::from_secs(1),
        "closed after {idle:?} idle"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sends_closes_after_the_idle_timeout() {
    let server = start(config(), app_service()).await;
    let connected = Instant::now();
    let mut c = server.client().await;
    c.expect_eof().await;
    let idle = connected.elapsed();
    assert!(
        idle >= IDLE_TIMEOUT && idle < IDLE_TIMEOUT + Duration::from_secs(1),
        "closed after {idle:?} idle"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_idle_timeout_keeps_a_connection_open() {
    let config = ServerConfig {
        idle_timeout: None,
        ..config()
    };
    let server = start(config, app_service()).await;
    let mut c = server.client().await;
    assert_eq!(c.exchange("GET / HTTP/1.1\r\n\r\n").await.status, 200);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(c.exchange("GET / HTTP/1.1\r\n\r\n").await.status, 200);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_head_that_stalls_gets_408() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    c.send("POST /v1/completions HTTP/1.1\r\nhost: t\r\ncontent-le")
        .await;
    let started = Instant::now();
    let a = c.answer().await;
    let waited = started.elapsed();
    a.assert_error(408, "request_timeout");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(
        waited >= READ_TIMEOUT && waited < READ_TIMEOUT + Duration::from_secs(1),
        "answered after {waited:?}"
    );
    c.expect_eof().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_body_that_stalls_gets_408() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    let started = Instant::now();
    c.send("POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc")
        .await;
    // Trickling does not extend the deadline.
    tokio::time::sleep(READ_TIMEOUT / 2).await;
    c.send("def").await;
    let a = c.answer().await;
    let waited = started.elapsed();
    a.assert_error(408, "request_timeout");
    assert!(
        waited >= READ_TIMEOUT && waited < READ_TIMEOUT + Duration::from_secs(1),
        "answered after {waited:?}"
    );
    c.expect_eof().await;
    server.stop().await;
}

// ---------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_serve_unfinished_closes_idle_connections_at_once() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    assert_eq!(c.exchange("GET /1 HTTP/1.1\r\n\r\n").await.status, 200);
    let asked = Instant::now();
    server.task.abort();
    c.expect_eof().await;
    assert!(
        asked.elapsed() < IDLE_TIMEOUT,
        "the idle connection was closed by its idle timeout, not by serve's end"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_at_once_and_finishes_requests_in_flight() {
    let (service, mut calls) = gated();
    let mut server = start(config(), service).await;

    let mut idle = server.client().await;
    idle.send("GET /idle HTTP/1.1\r\n\r\n").await;
    let call = next(&mut calls).await;
    call.respond.send(Response::new(full("first"))).unwrap();
    assert_eq!(idle.answer().await.text(), "first");

    let mut busy = server.client().await;
    busy.send("GET /busy HTTP/1.1\r\n\r\n").await;
    let call = next(&mut calls).await;
    assert_eq!(call.target, "/busy");

    let asked = Instant::now();
    server.begin_shutdown();
    idle.expect_eof().await;
    assert!(
        asked.elapsed() < IDLE_TIMEOUT,
        "the idle connection was closed by its idle timeout, not by shutdown"
    );
    // `serve` waits for the request in flight.
    tokio::task::yield_now().await;
    assert!(
        !server.task.is_finished(),
        "serve returned with a request in flight"
    );

    call.respond.send(Response::new(full("last"))).unwrap();
    let a = busy.answer().await;
    assert_eq!(
        a.masked_head(),
        "HTTP/1.1 200 OK\r\ndate: <date>\r\ncontent-length: 4\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(a.text(), "last");
    busy.expect_eof().await;
    within("serve returning", &mut server.task).await.unwrap();
}

// ---------------------------------------------------------------------
// Review follow-ups
// ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn line_ends_after_a_request_leave_the_connection_idle_not_half_read() {
    let server = start(config(), app_service()).await;
    let mut c = server.client().await;
    // A client that ends its request with an extra CRLF.
    assert_eq!(c.exchange("GET /1 HTTP/1.1\r\n\r\n\r\n").await.status, 200);
    let idle_since = Instant::now();
    // Closed quietly by the idle timeout, with no 408 for a request that
    // was never begun.
    c.expect_eof().await;
    assert!(
        idle_since.elapsed() >= IDLE_TIMEOUT,
        "{:?}",
        idle_since.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn an_interim_status_from_the_service_becomes_a_500() {
    let server = start(
        config(),
        service_fn(|_req: Request<RequestBody>| async {
            let mut res = Response::new(full(""));
            *res.status_mut() = StatusCode::from_u16(103).unwrap();
            Ok::<_, BoxError>(res)
        }),
    )
    .await;
    let mut c = server.client().await;
    let a = c.exchange("GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(a.status, 500, "{}", a.masked_head());
    assert!(a.text().contains("no final answer"), "{}", a.text());
    server.stop().await;
}

#[tokio::test]
async fn two_host_headers_are_a_400() {
    let (service, calls) = counted_app();
    let server = start(config(), service).await;
    let mut c = server.client().await;
    let a = c
        .exchange("GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n")
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.stop().await;
}

/// A body that always has another kilobyte ready and never ends.
struct Endless;

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b'x'; 1024])))))
    }
}

#[tokio::test]
async fn a_body_that_is_always_ready_still_reaches_the_client_in_pieces() {
    let server = start(
        config(),
        service_fn(|_req: Request<RequestBody>| async {
            Ok::<_, BoxError>(Response::new(Endless))
        }),
    )
    .await;
    let mut c = server.client().await;
    c.send("GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    // Were every ready piece gathered until the body paused, nothing would
    // ever be written.
    let got = c.take(256 * 1024).await;
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(got.windows(4).any(|w| w == b"xxxx"));
    drop(c);
    server.stop().await;
}

// ---------------------------------------------------------------------
// Dedicated I/O threads
// ---------------------------------------------------------------------

/// Answers with the name of the thread that runs the service's future.
fn thread_name_service() -> impl TestService<Full<Bytes>> {
    service_fn(|_req: Request<RequestBody>| async move {
        let name = std::thread::current().name().unwrap_or("").to_string();
        Ok::<_, BoxError>(Response::new(full(name)))
    })
}

#[tokio::test]
async fn io_threads_carry_each_connection_on_one_thread_of_their_own() {
    let server = start(
        ServerConfig {
            io_threads: std::num::NonZeroUsize::new(2),
            ..config()
        },
        thread_name_service(),
    )
    .await;
    let mut seen = Vec::new();
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = server.client().await;
        let first = c
            .exchange("GET /a HTTP/1.1\r\n\r\n")
            .await
            .text()
            .to_string();
        assert!(first.starts_with("llmgate-io-"), "{first:?}");
        for _ in 0..3 {
            let again = c
                .exchange("GET /b HTTP/1.1\r\n\r\n")
                .await
                .text()
                .to_string();
            assert_eq!(again, first, "a connection moved between threads");
        }
        seen.push(first);
        // Held open so the next connection goes to the emptier thread.
        open.push(c);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "llmgate-io-0",
            "llmgate-io-0",
            "llmgate-io-1",
            "llmgate-io-1"
        ]
    );
}

#[tokio::test]
async fn io_threads_finish_requests_in_flight_on_shutdown() {
    let (service, mut calls) = gated();
    let mut server = start(
        ServerConfig {
            io_threads: std::num::NonZeroUsize::new(2),
            ..config()
        },
        service,
    )
    .await;
    let mut busy = server.client().await;
    busy.send("GET /busy HTTP/1.1\r\n\r\n").await;
    let call = next(&mut calls).await;
    server.begin_shutdown();
    tokio::task::yield_now().await;
    assert!(
        !server.task.is_finished(),
        "serve returned with a request in flight"
    );
    call.respond.send(Response::new(full("last"))).unwrap();
    let a = busy.answer().await;
    assert_eq!(a.header("connection"), Some("close"));
    assert_eq!(a.text(), "last");
    busy.expect_eof().await;
    within("serve returning", &mut server.task).await.unwrap();
}

/// Write syscalls the calling thread has made so far (Linux's per-thread
/// accounting; socket sends are not counted there, event-fd writes are).
fn thread_writes() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("per-thread I/O accounting");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .expect("a syscw line")
        .trim()
        .parse()
        .unwrap()
}

/// Registers a request-sized timer, as the layer stack does for each
/// request, then answers with the thread's write count.
fn timer_service() -> impl TestService<Full<Bytes>> {
    service_fn(|_req: Request<RequestBody>| async move {
        let timer = tokio::time::sleep(std::time::Duration::from_secs(72));
        tokio::pin!(timer);
        std::future::poll_fn(|cx| {
            let _ = std::future::Future::poll(timer.as_mut(), cx);
            std::task::Poll::Ready(())
        })
        .await;
        Ok::<_, BoxError>(Response::new(full(thread_writes().to_string())))
    })
}

/// A timer registered on an I/O thread that parked with only far-off
/// timers makes tokio's time driver wake itself with an event-fd write;
/// the thread's anchor timer keeps requests' timers off that path.
#[tokio::test]
async fn request_timers_cost_an_io_thread_no_wake_up_writes() {
    let server = start(
        ServerConfig {
            io_threads: std::num::NonZeroUsize::new(1),
            // The default: idle timers further off than requests' timers.
            idle_timeout: Some(std::time::Duration::from_secs(300)),
            ..config()
        },
        timer_service(),
    )
    .await;
    let mut c = server.client().await;
    let mut counts = Vec::new();
    for _ in 0..50 {
        let a = c.exchange("GET /t HTTP/1.1\r\n\r\n").await;
        counts.push(a.text().parse::<u64>().unwrap());
    }
    let writes = counts[49] - counts[0];
    assert!(writes < 5, "{writes} write syscalls over 49 requests");
}
