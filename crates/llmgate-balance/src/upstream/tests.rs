//! The HTTP/1.1 pool against scripted replicas on 127.0.0.1 (real sockets;
//! the sim replicas exercise it end to end in `tests/fleet_sim.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What a scripted replica does with the n-th request (counted over all
/// connections).
#[derive(Clone)]
enum Act {
    /// Writes these bytes and keeps the connection.
    Answer(&'static [u8]),
    /// Writes these bytes and closes.
    AnswerClose(&'static [u8]),
    /// Closes without answering.
    Close,
    /// Writes these bytes and then holds the connection until the client
    /// closes it (reports that through `closed_by_client`).
    AnswerHold(&'static [u8]),
}

struct Replica {
    target: Target,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    closed_by_client: Arc<tokio::sync::Notify>,
}

async fn replica(script: Vec<Act>) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let closed_by_client = Arc::new(tokio::sync::Notify::new());
    let script = Arc::new(script);
    let next = Arc::new(AtomicUsize::new(0));
    {
        let (accepted, requests, closed) =
            (accepted.clone(), requests.clone(), closed_by_client.clone());
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let (script, next, requests, closed) = (
                    script.clone(),
                    next.clone(),
                    requests.clone(),
                    closed.clone(),
                );
                tokio::spawn(async move {
                    serve_conn(sock, &script, &next, &requests, &closed).await;
                });
            }
        });
    }
    Replica {
        target: Target::parse(&format!("http://{addr}/pre")).unwrap(),
        accepted,
        requests,
        closed_by_client,
    }
}

async fn serve_conn(
    mut sock: TcpStream,
    script: &[Act],
    next: &AtomicUsize,
    requests: &Mutex<Vec<String>>,
    closed: &tokio::sync::Notify,
) {
    let mut buf = Vec::new();
    loop {
        // One request: head, then content-length bytes.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        requests.lock().push(format!("{head}{body}"));
        buf.drain(..head_end + len);
        let i = next.fetch_add(1, Ordering::SeqCst);
        match script.get(i).cloned().unwrap_or(Act::Close) {
            Act::Answer(b) => sock.write_all(b).await.unwrap(),
            Act::AnswerClose(b) => {
                sock.write_all(b).await.unwrap();
                return;
            }
            Act::Close => return,
            Act::AnswerHold(b) => {
                sock.write_all(b).await.unwrap();
                let mut rest = [0u8; 64];
                while let Ok(n) = sock.read(&mut rest).await {
                    if n == 0 {
                        closed.notify_one();
                        return;
                    }
                }
                closed.notify_one();
                return;
            }
        }
    }
}

fn post(path: &str, body: &'static str) -> Request<BufferedBody> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("connection", "x-drop-me")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn text(res: Response<UpstreamBody>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

const LEN_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n3\r\n1\n\n\r\n0\r\n\r\n";

#[tokio::test]
async fn keep_alive_carries_sequential_requests_on_one_connection() {
    let r = replica(vec![
        Act::Answer(LEN_OK),
        Act::Answer(CHUNKED),
        Act::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        Act::Answer(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"),
    ])
    .await;
    let up = Upstream::http1(UpstreamConfig::default());

    let res = up
        .send(&r.target, post("/v1/completions?x=1", "{\"a\":1}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.body().size_hint().exact(), Some(11));
    assert_eq!(text(res).await, "{\"ok\":true}");
    assert_eq!(up.idle_connections(), 1, "connection back in the pool");

    let res = up
        .send(&r.target, post("/v1/chat/completions", "{}"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "data: 1\n\n");

    let res = up.send(&r.target, post("/v1/x", "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.body().is_end_stream());
    let res = up.send(&r.target, post("/v1/x", "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(text(res).await, "busy");

    assert_eq!(
        r.accepted.load(Ordering::SeqCst),
        1,
        "one connection for four requests"
    );
    let reqs = r.requests.lock().clone();
    assert_eq!(reqs.len(), 4);
    let first = &reqs[0];
    assert!(
        first.starts_with("POST /pre/v1/completions?x=1 HTTP/1.1\r\n"),
        "{first}"
    );
    assert!(
        first.contains(&format!("host: {}\r\n", r.target.authority())),
        "{first}"
    );
    assert!(first.contains("content-length: 7\r\n"), "{first}");
    assert!(
        !first.contains("x-drop-me"),
        "hop-by-hop header forwarded: {first}"
    );
    assert!(first.ends_with("\r\n\r\n{\"a\":1}"), "{first}");
}

#[tokio::test]
async fn answers_come_without_hop_by_hop_fields_and_their_connection_is_reused() {
    const HOP: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        connection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\nx-hop: 1\r\n\
        transfer-encoding: chunked\r\nx-request-id: r1\r\n\r\n\
        6\r\ndata: \r\n3\r\n1\n\n\r\n0\r\n\r\n";
    let r = replica(vec![Act::Answer(HOP), Act::Answer(LEN_OK)]).await;
    let up = Upstream::http1(UpstreamConfig::default());
    let res = up.send(&r.target, post("/v1/x", "")).await.unwrap();
    let names: Vec<_> = res.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["content-type", "x-request-id"]);
    assert_eq!(text(res).await, "data: 1\n\n");
    assert_eq!(up.idle_connections(), 1, "kept alive");
    let res = up.send(&r.target, post("/v1/x", "")).await.unwrap();
    assert_eq!(text(res).await, "{\"ok\":true}");
    assert_eq!(r.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_close_and_close_delimited_answers_are_not_reused() {
    let r = replica(vec![
        Act::Answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi"),
        Act::AnswerClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
        Act::Answer(LEN_OK),
    ])
    .await;
    let up = Upstream::http1(UpstreamConfig::default());
    assert_eq!(
        text(up.send(&r.target, post("/a", "")).await.unwrap()).await,
        "hi"
    );
    assert_eq!(up.idle_connections(), 0);
    assert_eq!(
        text(up.send(&r.target, post("/b", "")).await.unwrap()).await,
        "until the end"
    );
    assert_eq!(up.idle_connections(), 0);
    assert_eq!(
        text(up.send(&r.target, post("/c", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(r.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_replica_is_replaced_without_losing_the_request() {
    // The replica drops the second request on the kept connection unanswered
    // (its idle timeout raced the reuse); the client resends it once on a
    // new connection.
    let r = replica(vec![Act::Answer(LEN_OK), Act::Close, Act::Answer(CHUNKED)]).await;
    let up = Upstream::http1(UpstreamConfig::default());
    assert_eq!(
        text(up.send(&r.target, post("/a", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    let res = up.send(&r.target, post("/b", "{\"n\":2}")).await.unwrap();
    assert_eq!(text(res).await, "data: 1\n\n");
    assert_eq!(r.accepted.load(Ordering::SeqCst), 2);
    let reqs = r.requests.lock().clone();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1], reqs[2], "the same request was sent again");
}

#[tokio::test]
async fn a_new_connection_closed_unanswered_is_an_error_not_a_loop() {
    let r = replica(vec![Act::Close, Act::Close]).await;
    let up = Upstream::http1(UpstreamConfig::default());
    let err = up.send(&r.target, post("/a", "")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("closed the connection before answering"),
        "{err}"
    );
    assert_eq!(r.requests.lock().len(), 1, "sent once");
}

#[tokio::test]
async fn a_truncated_body_is_an_error_and_the_connection_is_dropped() {
    let r = replica(vec![Act::AnswerClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
    )])
    .await;
    let up = Upstream::http1(UpstreamConfig::default());
    let res = up.send(&r.target, post("/a", "")).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert!(err.to_string().contains("before the body ended"), "{err}");
    assert_eq!(up.idle_connections(), 0);
}

#[tokio::test]
async fn malformed_answers_are_errors_that_say_why() {
    let r = replica(vec![Act::AnswerClose(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nXYZ\r\n",
    )])
    .await;
    let up = Upstream::http1(UpstreamConfig::default());
    let res = up.send(&r.target, post("/a", "")).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert!(err.to_string().contains("chunk size"), "{err}");

    let r = replica(vec![Act::AnswerClose(b"garbage\r\n\r\n")]).await;
    let err = up.send(&r.target, post("/a", "")).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid HTTP/1.1 message"),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_a_body_early_closes_the_connection_at_the_replica() {
    let r = replica(vec![Act::AnswerHold(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )])
    .await;
    let up = Upstream::http1(UpstreamConfig::default());
    let res = up
        .send(&r.target, post("/v1/completions", ""))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first");
    let notified = r.closed_by_client.notified();
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("the replica saw the connection close");
    assert_eq!(up.idle_connections(), 0);
}

#[tokio::test]
async fn refused_connections_and_bad_targets_are_clear_errors() {
    // A port that was just free.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let up = Upstream::http1(UpstreamConfig::default());
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let err = up.send(&target, post("/a", "")).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("connecting to {addr}")),
        "{err}"
    );

    for (url, want) in [
        ("https://h:1", "not supported"),
        ("replica:8000", "http://host:port"),
        ("http://h:1/?q=1", "query"),
    ] {
        let err = Target::parse(url).unwrap_err().to_string();
        assert!(err.contains(want), "{url}: {err}");
    }
    assert_eq!(
        Target::parse("http://example.internal")
            .unwrap()
            .authority(),
        "example.internal:80"
    );
}

#[tokio::test]
async fn large_bodies_go_both_ways() {
    static BIG_ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let answer = BIG_ANSWER.get_or_init(|| {
        let body = vec![b'x'; 300_000];
        let mut a =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        a.extend_from_slice(&body);
        a
    });
    let r = replica(vec![Act::Answer(answer), Act::Answer(LEN_OK)]).await;
    let up = Upstream::http1(UpstreamConfig::default());
    let big: &'static str = Box::leak("y".repeat(100_000).into_boxed_str());
    let res = up.send(&r.target, post("/a", big)).await.unwrap();
    assert_eq!(text(res).await.len(), 300_000);
    assert!(r.requests.lock()[0].ends_with(big));
    // The kept connection still works after a body larger than its buffer.
    assert_eq!(
        text(up.send(&r.target, post("/b", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(r.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_not_reused() {
    let r = replica(vec![
        Act::Answer(LEN_OK),
        Act::Answer(LEN_OK),
        Act::Answer(LEN_OK),
    ])
    .await;
    let up = Upstream::http1(UpstreamConfig {
        idle_timeout: Duration::from_millis(100),
        ..UpstreamConfig::default()
    });
    assert_eq!(
        text(up.send(&r.target, post("/a", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(
        text(up.send(&r.target, post("/b", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(
        r.accepted.load(Ordering::SeqCst),
        1,
        "reused within the timeout"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        text(up.send(&r.target, post("/c", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(
        r.accepted.load(Ordering::SeqCst),
        2,
        "a new connection after the timeout"
    );
}

#[tokio::test]
async fn idle_connections_per_replica_are_capped() {
    let r = replica(vec![
        Act::AnswerHold(LEN_OK),
        Act::AnswerHold(LEN_OK),
        Act::AnswerHold(LEN_OK),
    ])
    .await;
    let up = Upstream::http1(UpstreamConfig {
        max_idle_per_host: 2,
        ..UpstreamConfig::default()
    });
    // Three concurrent requests open three connections; two stay idle.
    let (a, b, c) = tokio::join!(
        up.send(&r.target, post("/a", "")),
        up.send(&r.target, post("/b", "")),
        up.send(&r.target, post("/c", "")),
    );
    for res in [a, b, c] {
        assert_eq!(text(res.unwrap()).await, "{\"ok\":true}");
    }
    assert_eq!(r.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(up.idle_connections(), 2);
}

/// On single-threaded runtimes a connection is reused only by the thread
/// that opened it (its I/O driver is the one that wakes it).
#[tokio::test]
async fn single_threaded_runtimes_keep_their_own_connections() {
    let r = replica(vec![Act::Answer(LEN_OK); 4]).await;
    let up = Upstream::http1(UpstreamConfig::default());
    let on_another_thread = |up: Upstream, target: Target| {
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(
                    async move { text(up.send(&target, post("/b", "")).await.unwrap()).await },
                )
        })
    };

    assert_eq!(
        text(up.send(&r.target, post("/a", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(r.accepted.load(Ordering::SeqCst), 1);
    let b = on_another_thread(up.clone(), r.target.clone())
        .await
        .unwrap();
    assert_eq!(b, "{\"ok\":true}");
    assert_eq!(
        r.accepted.load(Ordering::SeqCst),
        2,
        "the other thread opened its own connection"
    );
    assert_eq!(up.idle_connections(), 2);
    assert_eq!(
        text(up.send(&r.target, post("/c", "")).await.unwrap()).await,
        "{\"ok\":true}"
    );
    assert_eq!(
        r.accepted.load(Ordering::SeqCst),
        2,
        "this thread reused its own"
    );
}

/// Both kinds against a real engine-like server (an `llmgate-sim` replica,
/// which speaks HTTP/1.1 and h2c): a JSON answer and an SSE stream.
#[tokio::test]
async fn http1_and_h2c_reach_a_sim_replica() {
    let sim =
        llmgate_sim::SimFleet::spawn(vec![llmgate_sim::SimConfig::default().with_speedup(100.0)])
            .unwrap();
    let target = Target::parse(&sim.replicas()[0].url()).unwrap();
    for up in [
        Upstream::http1(UpstreamConfig::default()),
        Upstream::h2c(crate::http_client(true)),
    ] {
        let res = up
            .send(
                &target,
                post(
                    "/v1/completions",
                    r#"{"model":"llama-3-8b","prompt":"Hi","max_tokens":4}"#,
                ),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{up:?}");
        assert!(text(res).await.contains("\"usage\""), "{up:?}");

        let res = up
            .send(
                &target,
                post(
                    "/v1/completions",
                    r#"{"model":"llama-3-8b","prompt":"Hi","max_tokens":4,"stream":true}"#,
                ),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{up:?}");
        let body = text(res).await;
        assert!(body.starts_with("data: "), "{up:?}: {body}");
        assert!(body.trim_end().ends_with("data: [DONE]"), "{up:?}: {body}");
    }
    sim.shutdown();
}
