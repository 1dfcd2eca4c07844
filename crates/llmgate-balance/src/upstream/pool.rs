//! Idle HTTP/1.1 connections per replica, reused most-recent first.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::BoxError;

use crate::keyhash::TrustedKeys;

/// A buffer that grew past this (a large answer) is not kept while idle.
const MAX_IDLE_BUFFER: usize = 16 * 1024;

/// Settings of the HTTP/1.1 upstream pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamConfig {
    /// Limit on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Idle connections kept per replica (per thread, for callers on
    /// single-threaded runtimes, whose connections are kept apart).
    pub max_idle_per_host: usize,
    /// Bytes reserved per read. Answers are mostly small SSE chunks, and
    /// every open stream holds one such buffer, so it is small.
    pub read_size: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 1024,
            read_size: 4096,
        }
    }
}

/// One connection to a replica and what has been read from it.
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
    /// Came from the pool (the replica may have closed it meanwhile).
    pub(crate) reused: bool,
    /// The callers that may reuse it: those of the thread that opened it,
    /// fixed when it is opened.
    shard: Shard,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Which callers may reuse a connection: on a single-threaded runtime
/// only the thread that opened it, since that thread's I/O driver is the
/// one that wakes it (used from another thread, every answer would cost a
/// cross-thread wake-up); on a multi-threaded runtime any of its workers.
type Shard = Option<std::thread::ThreadId>;

fn current_shard() -> Shard {
    use tokio::runtime::{Handle, RuntimeFlavor};
    thread_local! {
        // `thread::current()` clones the thread's handle on every call.
        static THREAD: std::thread::ThreadId = std::thread::current().id();
    }
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => Some(THREAD.with(|id| *id)),
        _ => None,
    }
}

/// One replica's idle connections, by shard.
type Shards = Vec<(Shard, Vec<Idle>)>;

/// The pool shared by every clone of an `Upstream`.
pub(crate) struct Pool {
    config: UpstreamConfig,
    idle: Mutex<Idled>,
}

struct Idled {
    /// Per replica, per shard, most recent last. Shards are few (the I/O
    /// threads), so a list.
    by_host: HashMap<std::sync::Arc<str>, Shards, TrustedKeys>,
    last_sweep: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(config: UpstreamConfig) -> Pool {
        Pool {
            config,
            idle: Mutex::new(Idled {
                by_host: HashMap::default(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Bytes to reserve before a read.
    pub(crate) fn read_size(&self) -> usize {
        self.config.read_size
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .by_host
            .values()
            .flat_map(|shards| shards.iter().map(|(_, list)| list.len()))
            .sum()
    }

    /// A live idle connection to `authority`, or a new one.
    pub(crate) async fn checkout(&self, authority: &str) -> Result<Conn, BoxError> {
        let shard = current_shard();
        loop {
            let candidate = {
                let mut idle = self.idle.lock();
                let now = Instant::now();
                let Some(list) = idle.by_host.get_mut(authority).and_then(|shards| {
                    shards
                        .iter_mut()
                        .find(|(s, _)| *s == shard)
                        .map(|(_, list)| list)
                }) else {
                    break;
                };
                match list.pop() {
                    // The most recent is too old, so are all below it.
                    Some(i)
                        if now.saturating_duration_since(i.since) > self.config.idle_timeout =>
                    {
                        let stale = std::mem::take(list);
                        drop(idle);
                        drop(stale);
                        drop(i);
                        break;
                    }
                    Some(i) => i.conn,
                    None => break,
                }
            };
            if still_open(&candidate.io) {
                return Ok(candidate);
            }
        }
        self.connect(authority).await
    }

    /// A new connection to `authority`.
    pub(crate) async fn connect(&self, authority: &str) -> Result<Conn, BoxError> {
        let io =
            match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(authority))
                .await
            {
                Err(_) => {
                    return Err(format!(
                        "connecting to {authority} timed out after {:?}",
                        self.config.connect_timeout
                    )
                    .into())
                }
                Ok(Err(e)) => return Err(format!("connecting to {authority}: {e}").into()),
                Ok(Ok(io)) => io,
            };
        // Streamed tokens are small writes; Nagle would hold them back.
        io.set_nodelay(true)?;
        Ok(Conn {
            io,
            buf: BytesMut::new(),
            reused: false,
            shard: current_shard(),
        })
    }

    /// Returns a connection whose answer was read completely, to the shard
    /// it was opened in (whichever thread finished reading the answer).
    pub(crate) fn checkin(&self, authority: &std::sync::Arc<str>, mut conn: Conn) {
        if conn.buf.capacity() > MAX_IDLE_BUFFER {
            conn.buf = BytesMut::new();
        }
        conn.reused = true;
        let now = Instant::now();
        let shard = conn.shard;
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock();
            let shards = idle.by_host.entry(authority.clone()).or_default();
            let at = match shards.iter().position(|(s, _)| *s == shard) {
                Some(at) => at,
                None => {
                    shards.push((shard, Vec::new()));
                    shards.len() - 1
                }
            };
            let list = &mut shards[at].1;
            if list.len() < self.config.max_idle_per_host {
                list.push(Idle { conn, since: now });
            } else {
                expired.push(Idle { conn, since: now });
            }
            // Now and then, close what idled out everywhere (replicas that
            // left the fleet included).
            if now.saturating_duration_since(idle.last_sweep) > self.config.idle_timeout {
                idle.last_sweep = now;
                let timeout = self.config.idle_timeout;
                idle.by_host.retain(|_, shards| {
                    shards.retain_mut(|(_, list)| {
                        let keep_from = list
                            .iter()
                            .position(|i| now.saturating_duration_since(i.since) <= timeout)
                            .unwrap_or(list.len());
                        expired.extend(list.drain(..keep_from));
                        !list.is_empty()
                    });
                    !shards.is_empty()
                });
            }
        }
        // Sockets close outside the lock.
        drop(expired);
    }
}

/// Whether an idle connection can carry a request: not closed by the
/// replica, no unexpected bytes waiting.
fn still_open(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match io.try_read(&mut probe) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}
