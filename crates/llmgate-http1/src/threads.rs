//! Dedicated I/O threads: each accepted connection lives on one of a few
//! single-threaded runtimes, one per core, for its whole life.
//!
//! A work-stealing runtime moves tasks between its workers and wakes
//! parked workers to take them; on a proxy, whose every request is a few
//! microseconds of work between two socket events, those wake-ups cost
//! more than the work. A connection pinned to one thread is woken by that
//! thread's own I/O driver and never crosses to another core (the
//! upstream pool keeps replica connections per thread for the same
//! reason).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};
use tokio::sync::watch;

/// Period of each thread's anchor timer.
///
/// A tokio time driver wakes itself (a write to its event fd, then a
/// wasted turn of its poll loop) whenever a timer is registered that falls
/// due before every timer it saw when it last parked. Each request
/// registers a couple of timers (its deadline, the attempt's first-byte
/// limit), and a thread between bursts holds only the connections' idle
/// timers, minutes away: without an anchor, about one request in five paid
/// for that wake-up. A timer that never lies more than this far ahead keeps
/// every request timer of a second or more off that path, for one wake-up
/// per period on an idle thread.
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

/// The threads and how many connections each carries.
pub(crate) struct IoThreads {
    workers: Vec<Worker>,
    /// Dropped when the pool is: each thread then drops its runtime, which
    /// cancels whatever still runs there.
    _stop: watch::Sender<()>,
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    live: Arc<AtomicUsize>,
}

/// Decrements a worker's connection count however its task ends.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps a timer at most [`TIMER_ANCHOR`] ahead on the current runtime.
async fn anchor() {
    loop {
        tokio::time::sleep(TIMER_ANCHOR).await;
    }
}

impl IoThreads {
    /// Starts `n` threads named `llmgate-io-N`, each running a
    /// single-threaded runtime with I/O and timers.
    pub(crate) fn start(n: NonZeroUsize) -> std::io::Result<IoThreads> {
        let (stop, stopped) = watch::channel(());
        let mut workers = Vec::with_capacity(n.get());
        for i in 0..n.get() {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let handle = rt.handle().clone();
            let mut stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("llmgate-io-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        // `changed` fails once the sender is gone: the pool
                        // was dropped.
                        let stop = async { while stopped.changed().await.is_ok() {} };
                        tokio::select! {
                            () = stop => {}
                            () = anchor() => {}
                        }
                    });
                })?;
            workers.push(Worker {
                handle,
                live: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(IoThreads {
            workers,
            _stop: stop,
            next: AtomicUsize::new(0),
        })
    }

    /// Moves `io` to the thread carrying the fewest connections (ties go
    /// round) and runs `run` with it there.
    pub(crate) fn spawn<R, F>(&self, io: TcpStream, run: R)
    where
        R: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let worker = (0..n)
            .map(|k| &self.workers[(start + k) % n])
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
            .expect("at least one I/O thread");
        // The socket is registered with the accepting runtime's driver;
        // it moves to the worker's as a plain socket.
        let io = match io.into_std() {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(error = %e, "could not hand a connection to an I/O thread");
                return;
            }
        };
        worker.live.fetch_add(1, Ordering::Relaxed);
        let live = Live(worker.live.clone());
        worker.handle.spawn(async move {
            let _live = live;
            match TcpStream::from_std(io) {
                Ok(io) => run(io).await,
                Err(e) => tracing::warn!(error = %e, "could not register a connection"),
            }
        });
    }

    /// Connections each thread carries now, in thread order.
    #[cfg(test)]
    pub(crate) fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections spread evenly, run off the caller's thread, and each
    /// thread's count falls back as they close.
    #[tokio::test]
    async fn spreads_connections_and_counts_them_down() {
        let threads = IoThreads::start(NonZeroUsize::new(2).unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let caller = std::thread::current().id();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (io, _) = listener.accept().await.unwrap();
            threads.spawn(io, move |mut io| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let other = std::thread::current().id() != caller;
                let mut byte = [0u8; 1];
                // Echo the thread's name once the client speaks, then hold
                // the connection until it closes.
                if io.read(&mut byte).await.unwrap_or(0) == 1 {
                    let line = format!("{name} {other}\n");
                    let _ = io.write_all(line.as_bytes()).await;
                }
                let _ = io.read(&mut byte).await;
            });
        }
        assert_eq!(threads.loads(), vec![2, 2]);
        let mut names = Vec::new();
        for c in &mut clients {
            c.write_all(b"?").await.unwrap();
            let mut buf = vec![0u8; 64];
            let n = c.read(&mut buf).await.unwrap();
            names.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
        names.sort();
        assert_eq!(
            names,
            vec![
                "llmgate-io-0 true",
                "llmgate-io-0 true",
                "llmgate-io-1 true",
                "llmgate-io-1 true"
            ]
        );
        drop(clients);
        for _ in 0..200 {
            if threads.loads() == vec![0, 0] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("counts stayed at {:?}", threads.loads());
    }
}
