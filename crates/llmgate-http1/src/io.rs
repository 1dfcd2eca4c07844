//! Reading from a socket into a buffer that exists only while it holds
//! bytes.

use std::io::ErrorKind;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::Interest;
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
/// A read that leaves buffer space unfilled is taken as proof the socket
/// is drained (as tokio's `AsyncRead` does): the next call waits for the
/// next readiness event instead of first spending a system call on a read
/// that would block (two fewer per proxied request). The read itself is a
/// `try_read_buf` inside `try_io` rather than `AsyncRead`, which would ask
/// for the readiness just seen a second time (and charge the task's
/// coop budget again).
pub fn poll_fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    read_size: usize,
) -> Poll<std::io::Result<usize>> {
    loop {
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
        let room = buf.capacity() - buf.len();
        let mut got = 0;
        // `try_io` clears the readiness when its closure reports
        // `WouldBlock`: a short read reports it too, after keeping what it
        // read, so that the socket counts as drained.
        let read = io.try_io(Interest::READABLE, || {
            got = io.try_read_buf(buf)?;
            if got > 0 && got < room {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match read {
            Ok(()) => return Poll::Ready(Ok(got)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if got > 0 {
                    return Poll::Ready(Ok(got));
                }
                // Readiness was stale and is cleared now: the next turn
                // registers for the next event (or reads, if one came).
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
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
