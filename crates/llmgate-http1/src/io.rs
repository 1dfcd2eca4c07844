//! Reading from a socket into a buffer that exists only while it holds
//! bytes.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Below this much free buffer space a read first reserves `read_size`.
pub const MIN_READ_SPACE: usize = 512;

/// Reads what `io` has into `buf`; `Ok(0)` at end of stream.
///
/// The buffer is reserved only once the socket is readable and given up
/// while waiting empty: an open stream or an idle keep-alive connection
/// spends most of its life waiting, and thousands of them should not each
/// hold a read buffer meanwhile.
///
/// The read goes through `AsyncRead`, which takes a read that leaves
/// buffer space unfilled as proof the socket is drained: the next call
/// waits for the next readiness event instead of first spending a system
/// call on a read that would block (two fewer per proxied request).
pub fn poll_fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    read_size: usize,
) -> Poll<std::io::Result<usize>> {
    match io.poll_read_ready(cx) {
        Poll::Pending => return release_idle(buf),
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Ready(Ok(())) => {}
    }
    if buf.capacity() == 0 {
        // Given up while waiting (or never had one): a fresh allocation,
        // without `reserve`'s bookkeeping for a buffer that holds bytes.
        *buf = BytesMut::with_capacity(read_size);
    } else if buf.capacity() - buf.len() < MIN_READ_SPACE {
        buf.reserve(read_size);
    }
    match pin!(io.read_buf(buf)).poll(cx) {
        // Readiness was stale; the read registered for the next event.
        Poll::Pending => release_idle(buf),
        done => done,
    }
}

fn release_idle(buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
    Poll::Pending
}

/// [`poll_fill`] as a future.
pub async fn fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    read_size: usize,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, buf, cx, read_size)).await
}
