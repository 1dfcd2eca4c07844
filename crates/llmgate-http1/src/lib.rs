//! A lean HTTP/1.1 server core, and the HTTP/1.1 framing it shares with
//! llmgate's upstream client.
//!
//! The gateway spends its life holding streams open: thousands of clients
//! each waiting on tokens. [`serve`] gives each connection one task and no
//! buffer while it waits (a read buffer exists only while bytes are in it,
//! a write buffer only while an answer is being written), where a general
//! purpose server keeps about 24 KiB of buffers per connection. It reads
//! each request whole (an LLM request is parsed whole before it can be
//! routed), calls a `tower::Service`, and streams the answer out chunk by
//! chunk as it comes. It speaks HTTP/1.0 and HTTP/1.1 (keep-alive,
//! pipelining, `Expect: 100-continue`, chunked bodies both ways) and
//! refuses request smuggling shapes; HTTP/2 is not served.
//!
//! Answers to requests it cannot take (malformed head, body too large,
//! request too slow) are OpenAI-shaped JSON errors, like every other
//! llmgate error.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use llmgate_http1::{serve, RequestBody, ServerConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(
//!     listener,
//!     ServerConfig::default(),
//!     |_peer| {
//!         tower::service_fn(|req: Request<RequestBody>| async move {
//!             let greeting = format!("hello from {}", req.uri().path());
//!             Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(greeting))))
//!         })
//!     },
//!     async move {
//!         let _ = stopped.await;
//!     },
//! ));
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client
//!     .write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(answer.ends_with("hello from /v1/models"));
//!
//! let _ = stop.send(());
//! server.await.unwrap();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod codec;
mod date;
pub mod io;
mod server;
mod threads;

pub use server::{serve, RequestBody, ServerConfig};
