//! `RateLimitLayer`: keyed token buckets for requests and tokens.
//!
//! Each client key (HTTP default: [`RequestMeta`](llmgate_core::RequestMeta)'s
//! `client`, `"anonymous"` without one) has two buckets: a **requests**
//! limit (each request costs 1) and a **tokens** limit (each request costs
//! its estimated prompt tokens plus `max_tokens`). A request passes only if
//! both have room, and is then charged to both; otherwise it is refused at
//! once with [`RateLimited`], which says how long until it would pass. The
//! limiter never waits. Per-key [`Tier`]s replace the defaults.
//!
//! On HTTP answers ([`HttpSettle`]) the layer adds the `x-ratelimit-*`
//! headers (limit, remaining, reset of both limits, OpenAI's formats) and
//! wraps the body in a [`SettleBody`] that passes bytes through untouched,
//! finds the OpenAI `usage` (JSON body or the final SSE chunk) and settles
//! the estimate against the actual `total_tokens`: the difference is
//! refunded or charged. A 5xx answer or an inner error refunds the estimate.
//! A refusal renders, through [`llmgate_core::error_response`], as HTTP 429
//! with `Retry-After`.
//!
//! Buckets are GCRA timestamps on tokio's clock (lazy refill, paused-clock
//! friendly) in a sharded map; idle full buckets are evicted on the hot path
//! (amortised), see [`Limiter`] for the details and the memory bound.
//!
//! Metrics: `llmgate_ratelimit_allowed_total`,
//! `llmgate_ratelimit_rejected_total{limit="requests"|"tokens"}`,
//! `llmgate_ratelimit_keys` (gauge of live keys),
//! `llmgate_ratelimit_settled_tokens_total{direction="refund"|"charge"}`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use llmgate_core::{error_response, ClientKey, EndpointKind, ErrorResponse, RequestMeta};
//! use llmgate_ratelimit::{Limit, RateLimitLayer, RateLimited};
//! use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = RateLimitLayer::builder()
//!     .requests(Limit::per_minute(60).burst(2))
//!     .tokens(Limit::per_minute(10_000))
//!     .build();
//! let mut svc = layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
//!     let body = r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}"#;
//!     let res = Response::builder()
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from(body)))?;
//!     Ok::<_, BoxError>(res)
//! }));
//!
//! let request = || {
//!     let mut meta = RequestMeta::new(EndpointKind::Chat).with_client(ClientKey::from_id("alice"));
//!     meta.prompt_tokens = 10;
//!     meta.max_tokens = Some(990);
//!     let mut req = Request::new(Full::new(Bytes::new()));
//!     req.extensions_mut().insert(meta);
//!     req
//! };
//!
//! // Allowed: the estimate (10 + 990 tokens) is charged, the headers say so.
//! let res = svc.ready().await?.call(request()).await?;
//! assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "1");
//! assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "9000");
//! // Reading the body to its end settles the estimate against usage (30).
//! res.into_body().collect().await?;
//! let state = layer.limiter().state(&ClientKey::from_id("alice"));
//! assert_eq!(state.tokens.unwrap().remaining, 9970);
//!
//! svc.ready().await?.call(request()).await?;
//! // The burst of 2 is spent: the third request is refused at once.
//! let err = svc.ready().await?.call(request()).await.unwrap_err();
//! let refused = err.downcast_ref::<RateLimited>().expect("a rate-limit refusal");
//! assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
//! let answer = error_response(refused);
//! assert_eq!(answer.status(), 429);
//! assert_eq!(answer.headers()["retry-after"], "1");
//!
//! // One second later a request has refilled.
//! tokio::time::advance(Duration::from_secs(1)).await;
//! assert!(svc.ready().await?.call(request()).await.is_ok());
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod body;
mod error;
mod future;
mod key;
mod layer;
mod limit;
mod limiter;
mod response;
mod service;

pub use body::{RateLimitKey, SettleBody, DEFAULT_JSON_SCAN_LIMIT};
pub use error::{format_reset, BucketState, LimitKind, RateLimitState, RateLimited};
pub use future::ResponseFuture;
pub use key::{KeyExtractor, MetaClientKey, MetaTokenCost, TokenCost, DEFAULT_MAX_TOKENS};
pub use layer::{Builder, RateLimitLayer};
pub use limit::{Limit, Tier};
pub use limiter::{Grant, Limiter, DEFAULT_IDLE_TTL, DEFAULT_SHARDS};
pub use response::{HttpSettle, NoSettle, OnResponse};
