//! Behaviour of `RateLimitLayer` on tokio's paused clock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use llmgate_core::{error_response, ClientKey, EndpointKind, ErrorResponse, RequestMeta};
use llmgate_ratelimit::{Limit, LimitKind, Limiter, NoSettle, RateLimitLayer, RateLimited, Tier};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// A body that yields the given chunks one frame at a time.
#[derive(Debug)]
struct Chunks(VecDeque<Bytes>);

impl Chunks {
    fn new(parts: &[&str]) -> Chunks {
        Chunks(parts.iter().map(|p| Bytes::from(p.to_string())).collect())
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn request(client: &str, prompt: u32, max_tokens: Option<u32>) -> Request<()> {
    let mut meta = RequestMeta::new(EndpointKind::Chat).with_client(ClientKey::from_id(client));
    meta.prompt_tokens = prompt;
    meta.max_tokens = max_tokens;
    let mut req = Request::new(());
    req.extensions_mut().insert(meta);
    req
}

fn key(client: &str) -> ClientKey {
    ClientKey::from_id(client)
}

fn refusal(err: BoxError) -> RateLimited {
    *err.downcast::<RateLimited>().expect("a RateLimited error")
}

/// A service answering every request with `content_type` and `chunks`.
fn answering(
    status: u16,
    content_type: &'static str,
    chunks: &'static [&'static str],
) -> impl Service<Request<()>, Response = Response<Chunks>, Error = BoxError, Future: Send> + Clone
{
    service_fn(move |_req: Request<()>| async move {
        let res = Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Chunks::new(chunks))?;
        Ok::<_, BoxError>(res)
    })
}

fn ok_service() -> impl Service<Request<()>, Response = Response<Chunks>, Error = BoxError> + Clone
{
    answering(200, "text/plain", &["ok"])
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn burst_then_refill() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_second(2).burst(4))
        .build();
    let mut svc = layer.layer(ok_service());
    for _ in 0..4 {
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 1, None))
            .await
            .unwrap();
    }
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 1, None))
            .await
            .unwrap_err(),
    );
    assert_eq!(r.kind(), LimitKind::Requests);
    assert_eq!(r.retry_after(), Some(Duration::from_millis(500)));

    // Half the wait is not enough, and a refusal charges nothing.
    tokio::time::advance(Duration::from_millis(250)).await;
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 1, None))
            .await
            .unwrap_err(),
    );
    assert_eq!(r.retry_after(), Some(Duration::from_millis(250)));
    tokio::time::advance(Duration::from_millis(250)).await;
    svc.ready()
        .await
        .unwrap()
        .call(request("a", 1, None))
        .await
        .unwrap();
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 1, None))
        .await
        .is_err());

    // A long pause refills to the burst, never beyond it.
    tokio::time::advance(Duration::from_secs(3600)).await;
    for _ in 0..4 {
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 1, None))
            .await
            .unwrap();
    }
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 1, None))
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated_and_anonymous_is_a_key() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(1))
        .build();
    let mut svc = layer.layer(ok_service());
    svc.ready()
        .await
        .unwrap()
        .call(request("a", 1, None))
        .await
        .unwrap();
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 1, None))
        .await
        .is_err());
    svc.ready()
        .await
        .unwrap()
        .call(request("b", 1, None))
        .await
        .unwrap();
    // No RequestMeta: the "anonymous" key.
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .is_err());
    assert_eq!(layer.limiter().live_keys(), 3);
    assert_eq!(
        layer
            .limiter()
            .state(&ClientKey::anonymous())
            .requests
            .unwrap()
            .remaining,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn tiers_override_defaults() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(2))
        .tokens(Limit::per_minute(1_000))
        .tier(key("gold"), Tier::new().requests(Limit::per_minute(5)))
        .tier(key("free"), Tier::unlimited())
        .build();
    let mut svc = layer.layer(ok_service());
    let passed = |client: &'static str, prompt: u32| {
        let mut svc = svc.clone();
        async move {
            let mut n = 0;
            for _ in 0..10 {
                if svc
                    .ready()
                    .await
                    .unwrap()
                    .call(request(client, prompt, Some(0)))
                    .await
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        }
    };
    assert_eq!(passed("basic", 1).await, 2);
    // gold: 5 requests, and no tokens limit at all (its tier has none).
    assert_eq!(passed("gold", 100_000).await, 5);
    assert_eq!(passed("free", 100_000).await, 10);
    let ok = svc
        .ready()
        .await
        .unwrap()
        .call(request("gold2", 1, Some(0)))
        .await;
    assert!(ok.is_ok());
}

#[tokio::test(start_paused = true)]
async fn token_limit_refuses_and_reports_tokens() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(100))
        .tokens(Limit::per_minute(6_000))
        .default_max_tokens(100)
        .build();
    let mut svc = layer.layer(ok_service());
    // 4_000 + 1_000 = 5_000 of 6_000.
    svc.ready()
        .await
        .unwrap()
        .call(request("a", 4_000, Some(1_000)))
        .await
        .unwrap();
    // 900 + default 100 = 1_000 fits exactly.
    svc.ready()
        .await
        .unwrap()
        .call(request("a", 900, None))
        .await
        .unwrap();
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 50, Some(10)))
            .await
            .unwrap_err(),
    );
    assert_eq!(r.kind(), LimitKind::Tokens);
    assert_eq!(r.cost(), 60);
    // 6_000 per minute: 60 tokens take 600 ms.
    assert_eq!(r.retry_after(), Some(Duration::from_millis(600)));
    assert_eq!(r.code(), "rate_limit_exceeded");
    // The refused request charged no request either.
    assert_eq!(r.state().requests.unwrap().remaining, 98);

    // Larger than the whole bucket: can never pass, no Retry-After.
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("b", 7_000, Some(0)))
            .await
            .unwrap_err(),
    );
    assert_eq!(r.retry_after(), None);
    assert_eq!(r.code(), "request_too_large");
    let res = error_response(&r);
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_none());
    // And it left no bucket behind.
    assert_eq!(layer.limiter().live_keys(), 1);
}

#[tokio::test(start_paused = true)]
async fn refusal_renders_429_with_openai_headers() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(60).burst(3))
        .tokens(Limit::per_minute(1_200))
        .build();
    let mut svc = layer.layer(ok_service());
    for _ in 0..3 {
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 100, Some(100)))
            .await
            .unwrap();
    }
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 100, Some(100)))
            .await
            .unwrap_err(),
    );
    let res = error_response(&r);
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = res.headers();
    // One request per second refills: a second to wait.
    assert_eq!(header(h, "retry-after"), "1");
    assert_eq!(header(h, "retry-after-ms"), "1000");
    assert_eq!(header(h, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(h, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(h, "x-ratelimit-reset-requests"), "3s");
    assert_eq!(header(h, "x-ratelimit-limit-tokens"), "1200");
    assert_eq!(header(h, "x-ratelimit-remaining-tokens"), "600");
    // 600 tokens at 20 per second.
    assert_eq!(header(h, "x-ratelimit-reset-tokens"), "30s");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // Both limits out: the wait is the longer one.
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 500, Some(600)))
            .await
            .unwrap_err(),
    );
    assert_eq!(r.kind(), LimitKind::Tokens);
    // Needs 1_100 with 620 there: 480 tokens at 20/s = 24 s.
    assert_eq!(r.retry_after(), Some(Duration::from_secs(24)));
    assert_eq!(header(&r.headers(), "retry-after"), "24");
}

#[tokio::test(start_paused = true)]
async fn allowed_answers_carry_remaining_headers() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(10))
        .tokens(Limit::per_minute(10_000))
        .build();
    let mut svc = layer.layer(ok_service());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 1_000, Some(1_000)))
        .await
        .unwrap();
    let h = res.headers();
    assert_eq!(header(h, "x-ratelimit-limit-requests"), "10");
    assert_eq!(header(h, "x-ratelimit-remaining-requests"), "9");
    assert_eq!(header(h, "x-ratelimit-reset-requests"), "6s");
    assert_eq!(header(h, "x-ratelimit-limit-tokens"), "10000");
    assert_eq!(header(h, "x-ratelimit-remaining-tokens"), "8000");
    assert_eq!(header(h, "x-ratelimit-reset-tokens"), "12s");
    assert_eq!(header(h, "content-type"), "text/plain");
    // The body is untouched.
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");

    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(10))
        .build();
    let mut svc = layer.layer(ok_service());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 1, None))
        .await
        .unwrap();
    assert_eq!(header(res.headers(), "x-ratelimit-remaining-requests"), "9");
    assert!(res.headers().get("x-ratelimit-remaining-tokens").is_none());
}

const JSON_SMALL: &[&str] = &[
    r#"{"id":"c1","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}],"#,
    r#""usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150}}"#,
];

const JSON_LARGE: &[&str] = &[
    r#"{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":2900,"total_tokens":3000}}"#,
];

#[tokio::test(start_paused = true)]
async fn non_streamed_usage_refunds_the_estimate() {
    let layer = RateLimitLayer::builder()
        .tokens(Limit::per_minute(10_000))
        .build();
    let mut svc = layer.layer(answering(200, "application/json", JSON_SMALL));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 100, Some(1_900)))
        .await
        .unwrap();
    assert_eq!(
        header(res.headers(), "x-ratelimit-remaining-tokens"),
        "8000"
    );
    // Nothing settled before the body ends.
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        8_000
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, JSON_SMALL.concat());
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        9_850
    );
}

#[tokio::test(start_paused = true)]
async fn non_streamed_usage_charges_the_excess() {
    let layer = RateLimitLayer::builder()
        .tokens(Limit::per_minute(6_000))
        .build();
    let mut svc = layer.layer(answering(
        200,
        "application/json; charset=utf-8",
        JSON_LARGE,
    ));
    // Estimated 1_000, used 3_000.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 100, Some(900)))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        3_000
    );
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 100, Some(900)))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    // 6_000 spent; a third request waits for 1_000 tokens: 10 s.
    let r = refusal(
        svc.ready()
            .await
            .unwrap()
            .call(request("a", 100, Some(900)))
            .await
            .unwrap_err(),
    );
    assert_eq!(r.retry_after(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn settles_on_the_last_frame_of_a_sized_body() {
    // hyper stops at `is_end_stream`, never polling the final `None`.
    let layer = RateLimitLayer::builder()
        .tokens(Limit::per_minute(10_000))
        .build();
    let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
        let res = Response::builder()
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(JSON_SMALL.concat())))?;
        Ok::<_, BoxError>(res)
    }));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 100, Some(1_900)))
        .await
        .unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(body.is_end_stream());
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        9_850
    );
    drop(body);
    // Settled once only.
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        9_850
    );
}

#[tokio::test(start_paused = true)]
async fn oversized_json_is_not_settled() {
    let layer = RateLimitLayer::builder()
        .tokens(Limit::per_minute(10_000))
        .json_scan_limit(32)
        .build();
    let mut svc = layer.layer(answering(200, "application/json", JSON_SMALL));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 100, Some(1_900)))
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, JSON_SMALL.concat());
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        8_000
    );
}

/// An OpenAI stream with `include_usage`: chunks with `"usage":null`, then a
/// usage chunk, split across frames at awkward places.
const SSE_WITH_USAGE: &[&str] = &[
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"He\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"llo\"}}],\"usage\":null}\n",
    "\ndata: {\"id\":\"c\",\"choices\":[],\"usa",
    "ge\":{\"prompt_tokens\":40,\"completion_tokens\":",
    "260,\"total_tokens\":300}}\r\n\r\n",
    "data: [DONE]\n\n",
];

const SSE_NO_USAGE: &[&str] = &[
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    "data: [DONE]\n\n",
];

#[tokio::test(start_paused = true)]
async fn streamed_usage_is_settled_at_done() {
    let layer = RateLimitLayer::builder()
        .tokens(Limit::per_minute(10_000))
        .build();
    let mut svc = layer.layer(answering(200, "text/event-stream", SSE_WITH_USAGE));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 40, Some(2_960)))
        .await
        .unwrap();
    assert_eq!(
        header(res.headers(), "x-ratelimit-remaining-tokens"),
        "7000"
    );
    let mut body = res.into_body();
    let mut seen = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        let data = frame.into_data().unwrap();
        seen.extend_from_slice(&data);
        if data.starts_with(b"data: [DONE]") {
            // Settled as soon as [DONE] passed, before the stream's end.
            assert_eq!(
                layer.limiter().state(&key("a")).tokens.unwrap().remaining,
                9_700
            );
        } else {
            assert_eq!(
                layer.limiter().state(&key("a")).tokens.unwrap().remaining,
                7_000
            );
        }
    }
    assert_eq!(seen, SSE_WITH_USAGE.concat().as_bytes());
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        9_700
    );

    // Without a usage chunk the estimate stays.
    let mut svc = layer.layer(answering(200, "text/event-stream", SSE_NO_USAGE));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("b", 40, Some(960)))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(
        layer.limiter().state(&key("b")).tokens.unwrap().remaining,
        9_000
    );
}

#[tokio::test(start_paused = true)]
async fn stream_dropped_after_usage_still_settles() {
    let layer = RateLimitLayer::builder()
        .tokens(Limit::per_minute(10_000))
        .build();
    let mut svc = layer.layer(answering(200, "text/event-stream", SSE_WITH_USAGE));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 40, Some(2_960)))
        .await
        .unwrap();
    let mut body = res.into_body();
    // Read up to (not including) [DONE], then go away.
    for _ in 0..5 {
        body.frame().await.unwrap().unwrap();
    }
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        7_000
    );
    drop(body);
    assert_eq!(
        layer.limiter().state(&key("a")).tokens.unwrap().remaining,
        9_700
    );
}

#[tokio::test(start_paused = true)]
async fn failures_refund_tokens_but_count_requests() {
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_minute(10))
        .tokens(Limit::per_minute(10_000))
        .build();
    let mut svc = layer.layer(answering(503, "application/json", &["{}"]));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 500, Some(500)))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let state = layer.limiter().state(&key("a"));
    assert_eq!(state.tokens.unwrap().remaining, 10_000);
    assert_eq!(state.requests.unwrap().remaining, 9);

    let failing = service_fn(|_req: Request<()>| async {
        Err::<Response<Chunks>, BoxError>("connection refused".into())
    });
    let mut svc = layer.layer(failing);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request("a", 500, Some(500)))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<RateLimited>().is_none());
    let state = layer.limiter().state(&key("a"));
    assert_eq!(state.tokens.unwrap().remaining, 10_000);
    assert_eq!(state.requests.unwrap().remaining, 8);
}

#[tokio::test(start_paused = true)]
async fn idle_buckets_are_evicted_and_the_map_stays_bounded() {
    let ttl = Duration::from_secs(60);
    let layer = RateLimitLayer::builder()
        .requests(Limit::per_second(10))
        .idle_ttl(ttl)
        .shards(4)
        .build();
    let limiter = layer.limiter().clone();
    let mut svc = layer.layer(ok_service());
    // 40 rounds of 500 new keys, 15 s apart: 20_000 keys over 10 minutes.
    let mut peak = 0;
    for round in 0..40 {
        for i in 0..500 {
            let client = format!("k{round}-{i}");
            svc.ready()
                .await
                .unwrap()
                .call(request(&client, 1, None))
                .await
                .unwrap();
        }
        peak = peak.max(limiter.live_keys());
        tokio::time::advance(Duration::from_secs(15)).await;
    }
    // Keys live for at most ~1.5 TTL (90 s = 6 rounds) plus one sweep step.
    assert!(peak <= 500 * 7, "peak {peak}");
    assert!(peak >= 500 * 4, "peak {peak}");

    // A key that is still refilling is kept; full idle ones go.
    let slow = RateLimitLayer::builder()
        .requests(Limit::new(1, Duration::from_secs(600)))
        .idle_ttl(ttl)
        .build();
    let l = slow.limiter().clone();
    l.check(&key("busy"), 0).unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(l.sweep(), 0);
    assert_eq!(l.live_keys(), 1);
    assert!(l.check(&key("busy"), 0).is_err());
    tokio::time::advance(Duration::from_secs(480 + 61)).await;
    assert_eq!(l.sweep(), 1);
    assert_eq!(l.live_keys(), 0);
    // Its state after eviction is that of a full bucket.
    assert!(l.check(&key("busy"), 0).is_ok());
}

#[tokio::test(start_paused = true)]
async fn generic_requests_with_closures() {
    // Any request type: key and cost from closures, answers passed through.
    let layer = RateLimitLayer::builder()
        .key_extractor(|req: &(u32, u64)| req.0)
        .token_cost(|req: &(u32, u64)| req.1)
        .on_response(NoSettle)
        .tokens(Limit::per_second(100))
        .tier(7, Tier::unlimited())
        .build();
    let mut svc = layer.layer(service_fn(|req: (u32, u64)| async move {
        Ok::<_, Infallible>(req.1 * 2)
    }));
    assert_eq!(svc.ready().await.unwrap().call((1, 60)).await.unwrap(), 120);
    let err = svc.ready().await.unwrap().call((1, 60)).await.unwrap_err();
    assert_eq!(refusal(err).retry_after(), Some(Duration::from_millis(200)));
    assert!(svc.ready().await.unwrap().call((2, 60)).await.is_ok());
    for _ in 0..5 {
        assert!(svc.ready().await.unwrap().call((7, 100)).await.is_ok());
    }
}

#[test]
fn concurrent_checks_never_overspend() {
    let limiter = std::sync::Arc::new(Limiter::<u32>::new(
        Tier::new().requests(Limit::new(1, Duration::from_secs(3600)).burst(1_000)),
    ));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let l = limiter.clone();
            std::thread::spawn(move || (0..1_000).filter(|_| l.check(&1, 0).is_ok()).count())
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 1_000);
}

#[test]
fn metrics_count_allowed_rejected_and_keys() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let l = Limiter::<u32>::new(
            Tier::new()
                .requests(Limit::per_minute(2))
                .tokens(Limit::per_minute(100)),
        );
        assert!(l.check(&1, 10).is_ok());
        assert!(l.check(&2, 10).is_ok());
        assert!(l.check(&2, 10).is_ok());
        assert!(l.check(&2, 10).is_err());
        assert!(l.check(&3, 500).is_err());
    });
    let mut allowed = 0;
    let mut rejected_requests = 0;
    let mut rejected_tokens = 0;
    let mut keys = 0.0;
    for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = ck.key().name();
        let limit = ck
            .key()
            .labels()
            .find(|l| l.key() == "limit")
            .map(|l| l.value().to_owned());
        match (name, limit.as_deref(), value) {
            ("llmgate_ratelimit_allowed_total", _, DebugValue::Counter(n)) => allowed = n,
            ("llmgate_ratelimit_rejected_total", Some("requests"), DebugValue::Counter(n)) => {
                rejected_requests = n
            }
            ("llmgate_ratelimit_rejected_total", Some("tokens"), DebugValue::Counter(n)) => {
                rejected_tokens = n
            }
            ("llmgate_ratelimit_keys", _, DebugValue::Gauge(g)) => keys = g.into_inner(),
            _ => {}
        }
    }
    assert_eq!(allowed, 3);
    assert_eq!(rejected_requests, 1);
    assert_eq!(rejected_tokens, 1);
    assert_eq!(keys, 2.0);
}
