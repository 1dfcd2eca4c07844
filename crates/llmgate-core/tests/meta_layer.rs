//! MetaLayer end to end: body limits, parsing, headers, pass-through.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use llmgate_core::{
    error_response, BufferedBody, ClientKey, EndpointKind, MetaError, MetaLayer, Priority,
    RequestMeta,
};
use tower::{service_fn, BoxError, Layer, ServiceExt};

/// Echoes the RequestMeta and the body it received.
async fn run(
    layer: MetaLayer,
    req: Request<Full<Bytes>>,
) -> Result<(RequestMeta, Bytes), BoxError> {
    let svc = layer.layer(service_fn(|req: Request<BufferedBody>| async move {
        let meta = req
            .extensions()
            .get::<RequestMeta>()
            .cloned()
            .expect("meta inserted");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new((meta, body)))
    }));
    let res = svc.oneshot(req).await?;
    Ok(res.into_body())
}

fn req(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

fn meta_error(err: BoxError) -> MetaError {
    *err.downcast::<MetaError>().expect("a MetaError")
}

#[tokio::test]
async fn chat_request_is_parsed_and_body_passed_on_unchanged() {
    let body = r#"{"model":"llama","stream":true,"max_tokens":64,"user":"alice","messages":[{"role":"user","content":"Hello, world"}]}"#;
    let (meta, passed) = run(MetaLayer::new(), req("/v1/chat/completions", body))
        .await
        .unwrap();
    assert_eq!(
        passed,
        Bytes::from(body),
        "the body reaches the inner service byte-identical"
    );
    assert_eq!(meta.kind, EndpointKind::Chat);
    assert_eq!(meta.model.as_deref(), Some("llama"));
    assert!(meta.stream);
    assert_eq!(meta.max_tokens, Some(64));
    assert_eq!(meta.session.as_deref(), Some("alice"));
    assert_eq!(meta.priority, Priority::Normal);
    assert_eq!(meta.client, ClientKey::anonymous());
    assert!(meta.prompt_tokens > 0);
}

#[tokio::test]
async fn headers_set_priority_client_session_and_deadline() {
    let mut r = req(
        "/v1/completions",
        r#"{"model":"m","prompt":"hi","user":"bob"}"#,
    );
    let h = r.headers_mut();
    h.insert("x-priority", "BATCH".parse().unwrap());
    h.insert("x-client-id", "tenant-7".parse().unwrap());
    h.insert("x-session-id", "s-1".parse().unwrap());
    h.insert("x-request-timeout", "2.5".parse().unwrap());
    let (meta, _) = run(MetaLayer::new(), r).await.unwrap();
    assert_eq!(meta.priority, Priority::Batch);
    assert_eq!(meta.client.as_str(), "id:tenant-7");
    assert_eq!(
        meta.session.as_deref(),
        Some("s-1"),
        "header wins over `user`"
    );
    assert_eq!(meta.deadline - meta.arrival, Duration::from_millis(2500));
}

#[tokio::test]
async fn bad_priority_and_timeout_are_400s_naming_the_problem() {
    let mut r = req("/v1/completions", r#"{"prompt":"hi"}"#);
    r.headers_mut()
        .insert("x-priority", "urgent".parse().unwrap());
    let err = meta_error(run(MetaLayer::new(), r).await.unwrap_err());
    let res = error_response(&err);
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_priority");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("critical, high, normal, low, batch"));

    for bad in ["0", "-1", "soon", "NaN"] {
        let mut r = req("/v1/completions", r#"{"prompt":"hi"}"#);
        r.headers_mut()
            .insert("x-request-timeout", bad.parse().unwrap());
        let err = meta_error(run(MetaLayer::new(), r).await.unwrap_err());
        assert!(matches!(err, MetaError::BadTimeout(_)), "{bad}: {err}");
    }
}

#[tokio::test]
async fn default_priority_hook_applies_without_header() {
    let layer = MetaLayer::new().default_priority(|client: &ClientKey, _: &http::HeaderMap| {
        (client.as_str() == "id:vip").then_some(Priority::High)
    });
    let mut r = req("/v1/completions", r#"{"prompt":"hi"}"#);
    r.headers_mut()
        .insert("x-client-id", "vip".parse().unwrap());
    assert_eq!(
        run(layer.clone(), r).await.unwrap().0.priority,
        Priority::High
    );
    let mut r = req("/v1/completions", r#"{"prompt":"hi"}"#);
    r.headers_mut()
        .insert("x-client-id", "vip".parse().unwrap());
    r.headers_mut().insert("x-priority", "low".parse().unwrap());
    assert_eq!(
        run(layer, r).await.unwrap().0.priority,
        Priority::Low,
        "the header wins"
    );
}

#[tokio::test]
async fn body_exactly_at_limit_passes_and_one_byte_over_is_413() {
    let prompt_at = |total: usize| {
        let frame = r#"{"prompt":""}"#.len();
        format!(r#"{{"prompt":"{}"}}"#, "a".repeat(total - frame))
    };
    let limit = 1000;
    let at = prompt_at(limit);
    assert_eq!(at.len(), limit);
    assert!(run(
        MetaLayer::new().body_limit(limit),
        req("/v1/completions", &at)
    )
    .await
    .is_ok());

    let over = prompt_at(limit + 1);
    let err = meta_error(
        run(
            MetaLayer::new().body_limit(limit),
            req("/v1/completions", &over),
        )
        .await
        .unwrap_err(),
    );
    assert!(matches!(err, MetaError::BodyTooLarge { limit: 1000 }));
    assert_eq!(error_response(&err).status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A declared Content-Length over the limit is refused before reading.
    let mut r = req("/v1/completions", &at);
    r.headers_mut()
        .insert("content-length", "5000".parse().unwrap());
    let err = meta_error(
        run(MetaLayer::new().body_limit(limit), r)
            .await
            .unwrap_err(),
    );
    assert!(matches!(err, MetaError::BodyTooLarge { .. }));
}

#[tokio::test]
async fn streamed_body_over_limit_is_413() {
    use futures_like::ChunkedBody;
    let body = ChunkedBody::new(vec![
        Bytes::from(vec![b'a'; 600]),
        Bytes::from(vec![b'b'; 600]),
    ]);
    let svc =
        MetaLayer::new()
            .body_limit(1000)
            .layer(service_fn(|_req: Request<BufferedBody>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
    let err = svc
        .oneshot(Request::post("/v1/completions").body(body).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(meta_error(err), MetaError::BodyTooLarge { .. }));
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let err = meta_error(
        run(
            MetaLayer::new(),
            req("/v1/chat/completions", r#"{"messages": [}"#),
        )
        .await
        .unwrap_err(),
    );
    let res = error_response(&err);
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_json");
}

#[tokio::test]
async fn other_routes_pass_through_with_minimal_meta() {
    let (meta, body) = run(MetaLayer::new(), req("/v1/files", "not json at all"))
        .await
        .unwrap();
    assert_eq!(meta.kind, EndpointKind::Other);
    assert_eq!(meta.model, None);
    assert_eq!(body, Bytes::from("not json at all"));
}

#[tokio::test]
async fn pre_inserted_meta_is_kept_as_is() {
    let mine = RequestMeta::new(EndpointKind::Chat)
        .with_priority(Priority::Critical)
        .with_model("from-user-code");
    let mut r = req("/v1/completions", "{ this would be malformed");
    r.extensions_mut().insert(mine.clone());
    let (meta, _) = run(MetaLayer::new(), r).await.unwrap();
    assert_eq!(meta.priority, Priority::Critical);
    assert_eq!(meta.model.as_deref(), Some("from-user-code"));
    assert_eq!(meta.kind, EndpointKind::Chat);
}

#[tokio::test]
async fn shared_prompt_prefixes_share_block_hashes() {
    let system = "You are a helpful assistant for ACME corp. ".repeat(10);
    let q1 = "question one, quite different from the other. ".repeat(4);
    let q2 = "another question entirely, nothing alike here. ".repeat(4);
    let a = format!(
        r#"{{"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{q1}"}}]}}"#
    );
    let b = format!(
        r#"{{"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{q2}"}}]}}"#
    );
    let (ma, _) = run(MetaLayer::new(), req("/v1/chat/completions", &a))
        .await
        .unwrap();
    let (mb, _) = run(MetaLayer::new(), req("/v1/chat/completions", &b))
        .await
        .unwrap();
    let shared = llmgate_core::prefix::shared_prefix_blocks(&ma.prefix_hashes, &mb.prefix_hashes);
    assert!(
        shared >= 6,
        "the 440-char system prompt spans 6 full blocks, got {shared}"
    );
    assert!(shared < ma.prefix_hashes.len().max(mb.prefix_hashes.len()));

    // Without prefix hashing the rest of the metadata is the same.
    let (off, _) = run(
        MetaLayer::new().prefix_hashes(false),
        req("/v1/chat/completions", &a),
    )
    .await
    .unwrap();
    assert!(off.prefix_hashes.is_empty());
    assert_eq!(off.prompt_tokens, ma.prompt_tokens);
    let tokens = r#"{"prompt":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]]}"#;
    let (on, _) = run(MetaLayer::new(), req("/v1/completions", tokens))
        .await
        .unwrap();
    assert_eq!(on.prefix_hashes.len(), 1);
    let (off, _) = run(
        MetaLayer::new().prefix_hashes(false),
        req("/v1/completions", tokens),
    )
    .await
    .unwrap();
    assert!(off.prefix_hashes.is_empty());
    assert_eq!(off.prompt_tokens, 17);
}

/// A body that yields its chunks one frame at a time.
mod futures_like {
    use bytes::Bytes;
    use http_body::{Body, Frame};
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ChunkedBody(VecDeque<Bytes>);

    impl ChunkedBody {
        pub fn new(chunks: Vec<Bytes>) -> Self {
            ChunkedBody(chunks.into())
        }
    }

    impl Body for ChunkedBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }
}
