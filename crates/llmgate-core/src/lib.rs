//! Request metadata for llmgate: [`RequestMeta`], [`Priority`], [`ClientKey`],
//! the [`MetaLayer`] that parses each request once, and the shared
//! error-to-response mapping ([`ErrorResponse`], [`error_response`]).
//!
//! Every other llmgate layer reads [`RequestMeta`] from the request's
//! extensions and never re-parses JSON. Code that does not speak HTTP (a
//! tonic interceptor, a job runner) can insert a `RequestMeta` itself.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use llmgate_core::{BufferedBody, MetaLayer, Priority, RequestMeta};
//! use tower::{service_fn, ServiceBuilder, ServiceExt, BoxError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(MetaLayer::new().body_limit(1 << 20))
//!     .service(service_fn(|req: Request<BufferedBody>| async move {
//!         let meta = req.extensions().get::<RequestMeta>().expect("inserted by MetaLayer");
//!         let answer = format!("{} {:?} {}", meta.priority, meta.model, meta.prompt_tokens);
//!         Ok::<_, BoxError>(Response::new(answer))
//!     }));
//!
//! let req = Request::post("/v1/chat/completions")
//!     .header("x-priority", "high")
//!     .body(Full::new(Bytes::from(
//!         r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"Hello there"}]}"#,
//!     )))?;
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.body(), "high Some(\"llama-3-8b\") 5");
//! # let _ = Priority::High;
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

mod client;
mod deadline;
mod error;
mod estimate;
pub mod headers;
mod layer;
mod meta;
mod parse;
pub mod prefix;
mod priority;
mod routing;
mod scan;

pub use client::{bearer_token, ClientKey, PeerAddr};
pub use deadline::{Deadline, DeadlineFuture, DeadlineLayer, RequestTimeout};
pub use error::{default_error_type, error_body, error_response, ErrorResponse, MetaError};
pub use estimate::{CharsPerToken, TokenEstimator};
pub use layer::{
    meta_of, BufferedBody, DefaultPriority, MetaLayer, MetaService, ResponseFuture,
    DEFAULT_BODY_LIMIT,
};
pub use meta::{EndpointKind, RequestMeta, DEFAULT_REQUEST_TIMEOUT};
pub use parse::{parse_body, ParsedBody};
pub use priority::{ParsePriorityError, Priority, ACCEPTED_PRIORITIES};
pub use routing::{find_in_chain, AvoidEndpoints, EndpointError, ServedBy};

/// Errors of every llmgate layer are boxed like tower's.
pub use tower::BoxError;
