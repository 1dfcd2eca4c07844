//! The load runner: replays a workload against any base URL (a replica, a
//! gateway) open-loop by timestamps, with a concurrency cap and a total
//! wall-time bound, streaming answers to time the first token.
//!
//! **Time.** Latencies in [`LoadReport`] are measured by this client in
//! wall time. Against replicas running at speedup `s`, set
//! [`LoadOptions::time_scale`] to `s`: arrivals are compressed by `s`, and
//! a wall latency `x` corresponds to about `s·x` of simulated time (the
//! table prints both). The HTTP and gateway overhead is real wall time, so
//! it is magnified by `s` in the simulated column: keep `s` modest (≤ 100)
//! when the gateway's own latency matters.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use llmgate_sim::load::{run, LoadOptions};
//! use llmgate_sim::workload::{generate, WorkloadOptions};
//! use llmgate_sim::{SimConfig, SimReplica};
//!
//! let sim = SimReplica::spawn(SimConfig::default().with_speedup(1000.0)).unwrap();
//! let reqs = generate("chat-short", 1, &WorkloadOptions { requests: 20, ..Default::default() }).unwrap();
//! let report = run(&sim.url(), &reqs, LoadOptions { time_scale: 1000.0, ..Default::default() }).await;
//! assert_eq!(report.completed, 20);
//! assert_eq!(report.per_replica_share.get(sim.id()), Some(&1.0));
//! println!("{report}");
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::REPLICA_HEADER;
use crate::workload::WorkloadRequest;

/// How to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Most requests in flight; arrivals beyond it wait for a slot.
    pub concurrency: usize,
    /// Total wall-time bound; requests not finished by then count as
    /// `timed_out` and are dropped.
    pub max_wall: Duration,
    /// Arrival timestamps are divided by this (set it to the replicas'
    /// speedup).
    pub time_scale: f64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            concurrency: 256,
            max_wall: Duration::from_secs(60),
            time_scale: 1.0,
        }
    }
}

/// Results of a run. Latencies are wall seconds measured by the client.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct LoadReport {
    /// Requests of the workload.
    pub requests: usize,
    /// Requests sent.
    pub sent: usize,
    /// Requests answered 2xx and read to the end.
    pub completed: usize,
    /// Failed requests: non-2xx, transport errors, cut streams.
    pub errors: usize,
    /// Answers with status 429.
    pub status_429: usize,
    /// Answers with status 503.
    pub status_503: usize,
    /// Streams that ended without `data: [DONE]` or broke mid-body.
    pub stream_errors: usize,
    /// Requests unsent or unfinished at the wall-time bound.
    pub timed_out: usize,
    /// Wall duration of the run, s.
    pub wall_s: f64,
    /// Completed requests per wall second.
    pub throughput_rps: f64,
    /// Generated tokens per wall second.
    pub tokens_per_s: f64,
    /// Time to first token of streamed requests (first body bytes), p50, s.
    pub ttft_p50_s: f64,
    /// TTFT p90, s.
    pub ttft_p90_s: f64,
    /// TTFT p99, s.
    pub ttft_p99_s: f64,
    /// End-to-end latency p50, s.
    pub e2e_p50_s: f64,
    /// E2E p90, s.
    pub e2e_p90_s: f64,
    /// E2E p99, s.
    pub e2e_p99_s: f64,
    /// Share of completed requests per replica (`x-sim-replica` header).
    pub per_replica_share: BTreeMap<String, f64>,
    /// Σ cached / Σ prompt tokens from `usage`.
    pub cache_hit_rate: f64,
    /// Prompt tokens reported in `usage`.
    pub prompt_tokens: u64,
    /// Cached prompt tokens reported in `usage`.
    pub cached_tokens: u64,
    /// Generated tokens reported in `usage`.
    pub completion_tokens: u64,
    /// The [`LoadOptions::time_scale`] used.
    pub time_scale: f64,
}

#[derive(Default)]
struct Acc {
    completed: usize,
    errors: usize,
    s429: usize,
    s503: usize,
    stream_errors: usize,
    ttft: Option<Histogram<u64>>,
    e2e: Option<Histogram<u64>>,
    replicas: BTreeMap<String, usize>,
    prompt: u64,
    cached: u64,
    completion: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("valid sigfig")
}

fn usage_of(v: &Value) -> Option<(u64, u64, u64)> {
    let u = v.get("usage")?;
    if u.is_null() {
        return None;
    }
    Some((
        u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        u.pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        u.get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    ))
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn one(client: HttpClient, url: String, r: WorkloadRequest, acc: Arc<Mutex<Acc>>) {
    let start = Instant::now();
    let mut b = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-priority", r.priority.as_str())
        .header("x-client-id", r.client.as_str());
    if let Some(s) = &r.session {
        b = b.header("x-session-id", s.as_str());
    }
    let body = Bytes::from(serde_json::to_vec(&r.body).unwrap_or_default());
    let Ok(req) = b.body(Full::new(body)) else {
        acc.lock().errors += 1;
        return;
    };
    let res = match client.request(req).await {
        Ok(res) => res,
        Err(_) => {
            acc.lock().errors += 1;
            return;
        }
    };
    let status = res.status();
    let replica = res
        .headers()
        .get(REPLICA_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = res.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut ttft = None;
    let mut broken = false;
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    if ttft.is_none() && !d.is_empty() {
                        ttft = Some(start.elapsed());
                    }
                    buf.extend_from_slice(d);
                }
            }
            Some(Err(_)) => {
                broken = true;
                break;
            }
            None => break,
        }
    }
    let e2e = start.elapsed();
    let mut a = acc.lock();
    if !status.is_success() {
        a.errors += 1;
        match status.as_u16() {
            429 => a.s429 += 1,
            503 => a.s503 += 1,
            _ => {}
        }
        return;
    }
    let usage = if r.stream {
        let text = String::from_utf8_lossy(&buf);
        let done = text.trim_end().ends_with("data: [DONE]");
        if broken || !done {
            a.errors += 1;
            a.stream_errors += 1;
            return;
        }
        text.split("\n\n")
            .filter_map(|ev| ev.strip_prefix("data: "))
            .filter(|d| d.contains("\"usage\""))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| usage_of(&v))
    } else {
        if broken {
            a.errors += 1;
            return;
        }
        serde_json::from_slice::<Value>(&buf)
            .ok()
            .and_then(|v| usage_of(&v))
    };
    a.completed += 1;
    if let Some((p, c, o)) = usage {
        a.prompt += p;
        a.cached += c;
        a.completion += o;
    }
    if let Some(id) = replica {
        *a.replicas.entry(id).or_default() += 1;
    }
    if r.stream {
        if let Some(t) = ttft {
            let _ = a
                .ttft
                .get_or_insert_with(hist)
                .record(t.as_micros().max(1) as u64);
        }
    }
    let _ = a
        .e2e
        .get_or_insert_with(hist)
        .record(e2e.as_micros().max(1) as u64);
}

/// Replays `requests` against `base_url` (e.g. `http://127.0.0.1:8001`).
pub async fn run(base_url: &str, requests: &[WorkloadRequest], opts: LoadOptions) -> LoadReport {
    let base = base_url.trim_end_matches('/').to_string();
    let concurrency = opts.concurrency.max(1);
    let scale = if opts.time_scale.is_finite() && opts.time_scale > 0.0 {
        opts.time_scale
    } else {
        1.0
    };
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let acc = Arc::new(Mutex::new(Acc::default()));
    let sem = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let deadline = start + opts.max_wall;
    let mut set = JoinSet::new();
    let mut sent = 0usize;
    for r in requests {
        let at = start + r.at.div_f64(scale);
        if at >= deadline {
            break;
        }
        // Batch sleeps: only sleep when at least 1 ms early.
        if at > Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(at).await;
        }
        let permit = match tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => break,
        };
        while set.try_join_next().is_some() {}
        let fut = one(
            client.clone(),
            format!("{base}{}", r.path),
            r.clone(),
            acc.clone(),
        );
        set.spawn(async move {
            fut.await;
            drop(permit);
        });
        sent += 1;
    }
    let drained =
        tokio::time::timeout_at(deadline, async { while set.join_next().await.is_some() {} })
            .await
            .is_ok();
    let unfinished = if drained { 0 } else { set.len() };
    set.abort_all();
    let wall = start.elapsed().as_secs_f64().max(1e-9);
    let a = acc.lock();
    let q = |h: &Option<Histogram<u64>>, p: f64| {
        h.as_ref()
            .map(|h| h.value_at_quantile(p) as f64 / 1e6)
            .unwrap_or(0.0)
    };
    let total_ok: usize = a.replicas.values().sum();
    LoadReport {
        requests: requests.len(),
        sent,
        completed: a.completed,
        errors: a.errors,
        status_429: a.s429,
        status_503: a.s503,
        stream_errors: a.stream_errors,
        timed_out: requests.len() - sent + unfinished,
        wall_s: wall,
        throughput_rps: a.completed as f64 / wall,
        tokens_per_s: a.completion as f64 / wall,
        ttft_p50_s: q(&a.ttft, 0.5),
        ttft_p90_s: q(&a.ttft, 0.9),
        ttft_p99_s: q(&a.ttft, 0.99),
        e2e_p50_s: q(&a.e2e, 0.5),
        e2e_p90_s: q(&a.e2e, 0.9),
        e2e_p99_s: q(&a.e2e, 0.99),
        per_replica_share: a
            .replicas
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / total_ok.max(1) as f64))
            .collect(),
        cache_hit_rate: if a.prompt == 0 {
            0.0
        } else {
            a.cached as f64 / a.prompt as f64
        },
        prompt_tokens: a.prompt,
        cached_tokens: a.cached,
        completion_tokens: a.completion,
        time_scale: scale,
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.time_scale;
        writeln!(
            f,
            "requests {} sent {} completed {} errors {} (429: {}, 503: {}, cut streams: {}) timed out {}",
            self.requests,
            self.sent,
            self.completed,
            self.errors,
            self.status_429,
            self.status_503,
            self.stream_errors,
            self.timed_out
        )?;
        writeln!(
            f,
            "wall {:.2} s  throughput {:.1} req/s  {:.0} tok/s (wall; ×{s} simulated time: {:.2} req/s, {:.0} tok/s)",
            self.wall_s,
            self.throughput_rps,
            self.tokens_per_s,
            self.throughput_rps / s,
            self.tokens_per_s / s
        )?;
        writeln!(
            f,
            "{:<8} {:>10} {:>10} {:>10}   {:>12} {:>12} {:>12}",
            "latency", "p50 wall", "p90 wall", "p99 wall", "p50 sim", "p90 sim", "p99 sim"
        )?;
        for (name, v) in [
            ("ttft", [self.ttft_p50_s, self.ttft_p90_s, self.ttft_p99_s]),
            ("e2e", [self.e2e_p50_s, self.e2e_p90_s, self.e2e_p99_s]),
        ] {
            writeln!(
                f,
                "{:<8} {:>8.1}ms {:>8.1}ms {:>8.1}ms   {:>10.3} s {:>10.3} s {:>10.3} s",
                name,
                v[0] * 1e3,
                v[1] * 1e3,
                v[2] * 1e3,
                v[0] * s,
                v[1] * s,
                v[2] * s
            )?;
        }
        writeln!(
            f,
            "cache hit rate {:.1}% ({} of {} prompt tokens)",
            self.cache_hit_rate * 100.0,
            self.cached_tokens,
            self.prompt_tokens
        )?;
        write!(f, "per replica:")?;
        for (k, v) in &self.per_replica_share {
            write!(f, " {k} {:.1}%", v * 100.0)?;
        }
        Ok(())
    }
}
