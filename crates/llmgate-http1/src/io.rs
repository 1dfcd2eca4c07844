//! Reading from a socket into a buffer that exists only while it holds
//! bytes.

use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Below this much free buffer space a read first reserves `read_size`.
pub const MIN_READ_SPACE: usize = 512;

/// Reads what `io` has into `buf`; `Ok(0)` at end of stream.
///
/// The buffer is reserved only once the socket is readable and given up
/// while waiting empty: an open stream or an idle keep-alive connection
/// spends most of its life waiting, and thousands of them should not each
/// hold a read buffer meanwhile.
pub fn poll_fill(
    io: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    read_size: usize,
) -> Poll<std::io::Result<usize>> {
    loop {
        match io.poll_read_ready(cx) {
            Poll::Pending => {
                if buf.is_empty() && buf.capacity() > 0 {
                    *buf = BytesMut::new();
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        if buf.capacity() - buf.len() < MIN_READ_SPACE {
            buf.reserve(read_size);
        }
        match io.try_read_buf(buf) {
            Ok(n) => return Poll::Ready(Ok(n)),
            // Readiness was stale; it is cleared now, so the next
            // `poll_read_ready` registers for the real event.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// [`poll_fill`] as a future.
pub async fn fill(io: &TcpStream, buf: &mut BytesMut, read_size: usize) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, buf, cx, read_size)).await
}
