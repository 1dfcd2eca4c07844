//! The gateway's configuration: a TOML file, environment overrides, and
//! validation that names the offending key.
//!
//! Loading is three steps, so that the environment can fill in what the file
//! leaves out (an admin token from a Secret, say) before anything is checked:
//!
//! ```text
//! let mut cfg = Config::load(path)?;          // file, or defaults without one
//! cfg.apply_env(|k| std::env::var(k).ok())?;  // ROUTING_STRATEGY, MAX_RETRIES, ...
//! cfg.validate()?;                             // ranges, URLs, ids, tokens
//! ```
//!
//! [`Config::resolve`] does all three. Every field has a default, so an empty
//! file (or no file) is a valid configuration: no replicas means the embedded
//! simulated fleet described by `[sim]`.
//!
//! Errors name the key: `routing.strategy: unknown strategy "fastest"; ...`,
//! `replicas[1].url: ...`, `unknown key "strategyy" in [routing]`, and for the
//! environment the variable (`ROUTING_STRATEGY: ...`). TOML syntax and type
//! errors keep toml's own message (line, column and the offending line),
//! prefixed with the file path.
//!
//! Secrets (the admin token, tier API keys) never appear in `Debug` output or
//! in error messages; [`Config::redacted`] gives a copy that is safe to
//! serialize (for an admin "show config" endpoint, say).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use llmgate_core::{Priority, ACCEPTED_PRIORITIES};
use serde::{Deserialize, Serialize};

/// What secrets print as.
pub const REDACTED: &str = "<redacted>";

/// Routing strategy names accepted in `routing.strategy` and
/// `ROUTING_STRATEGY` (`-` is accepted for `_`, case does not matter).
/// They are the names `llmgate_balance::StrategyKind` parses.
pub const STRATEGIES: [&str; 9] = [
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_loaded",
    "gpu_aware",
    "adaptive",
    "p2c",
    "cache_affinity",
    "sticky",
];

/// Simulated replica profiles accepted in `sim.replicas` (the profiles
/// `llmgate_sim::Profile` parses; `_` is accepted for `-`).
pub const SIM_PROFILES: [&str; 4] = ["h100-8b", "a100-8b", "small", "h100-70b-tp4"];

/// Upper bound on `retry.max_retries` (beyond it retries only multiply an outage).
pub const MAX_RETRIES_LIMIT: u32 = 10;

/// The canonical name of a routing strategy, or `None` if it is unknown.
pub fn canonical_strategy(name: &str) -> Option<&'static str> {
    let norm = name.trim().to_ascii_lowercase().replace('-', "_");
    STRATEGIES.into_iter().find(|s| *s == norm)
}

fn canonical_profile(name: &str) -> Option<&'static str> {
    let norm = name.trim().to_ascii_lowercase().replace('_', "-");
    SIM_PROFILES.into_iter().find(|s| *s == norm)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A configuration that cannot be used. Every message names the key (or the
/// environment variable) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax error, wrong type, or unknown key.
    #[error("{}{message}", origin_prefix(path.as_deref()))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The unknown key (`routing.strategyy`) when that is the error.
        key: Option<String>,
        /// toml's message (with line and column), possibly preceded by a
        /// one-line summary naming the key.
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key path, e.g. `routing.strategy` or `replicas[1].url`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// An environment override that cannot be parsed.
    #[error("{var}: {message}")]
    Env {
        /// The variable, e.g. `ROUTING_STRATEGY`.
        var: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

fn origin_prefix(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

impl ConfigError {
    /// The key or environment variable the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Env { var, .. } => Some(var),
        }
    }

    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    fn env(var: &str, message: impl Into<String>) -> Self {
        ConfigError::Env {
            var: var.to_owned(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Defaults (functions for serde's `default = "..."`)
// ---------------------------------------------------------------------------

/// More I/O threads than this is a typo, not a machine.
const MAX_IO_THREADS: usize = 1024;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("built-in default address")
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// The whole gateway configuration (`llmgate serve --config FILE`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen addresses, admin access, drain and request limits.
    pub server: ServerConfig,
    /// Strategy, GPU-aware pre-filter and telemetry scraping.
    pub routing: RoutingConfig,
    /// Active health checks of the replicas.
    pub health: HealthConfig,
    /// Upstream timeouts (first chunk, between chunks, per attempt).
    pub timeouts: TimeoutsConfig,
    /// The priority queue in front of the balancer.
    pub queue: QueueConfig,
    /// Per-client rate limits.
    pub ratelimit: RateLimitConfig,
    /// Retries of failed attempts on another replica.
    pub retry: RetryConfig,
    /// Per-replica circuit breaker.
    pub breaker: BreakerConfig,
    /// The embedded simulated fleet, used when `replicas` is empty.
    pub sim: SimConfig,
    /// The model replicas to balance over. Empty: serve the simulated fleet.
    pub replicas: Vec<ReplicaConfig>,
    /// API-key tiers: a key's priority and rate limits.
    pub tiers: Vec<TierConfig>,
}

/// `[server]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the OpenAI-compatible API, `/health` and `/ready`.
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    pub metrics_listen: SocketAddr,
    /// Address of the admin API. Keep it on loopback unless `admin_token` is set.
    pub admin_listen: SocketAddr,
    /// Bearer token the admin API requires. Required when `admin_listen` is not
    /// a loopback address; when set, it is required on loopback too.
    pub admin_token: Option<String>,
    /// After SIGTERM / ctrl-c, how long in-flight and queued requests may take
    /// to finish before the gateway exits.
    pub drain_timeout_secs: u64,
    /// Largest request body accepted (larger: 413).
    pub max_body_bytes: usize,
    /// Overall limit on one request, queueing and retries included.
    pub request_timeout_secs: u64,
    /// A client connection with no request for this long is closed (0: kept
    /// until the client closes it).
    pub idle_timeout_secs: u64,
    /// Threads that carry client connections, each a single-threaded
    /// runtime; a connection stays on one for its whole life (0: one per
    /// CPU core).
    pub io_threads: usize,
    /// A TOML file of `[[replicas]]` tables, watched for changes every
    /// `replicas_watch_secs`: added replicas join, removed ones are drained
    /// (within `drain_timeout_secs`), changed ones are replaced without
    /// dropping in-flight requests. Excludes `[[replicas]]` in this file.
    pub replicas_file: Option<std::path::PathBuf>,
    /// How often `replicas_file` is checked.
    pub replicas_watch_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: addr("127.0.0.1:8080"),
            metrics_listen: addr("127.0.0.1:9090"),
            admin_listen: addr("127.0.0.1:8081"),
            admin_token: None,
            drain_timeout_secs: 30,
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout_secs: 300,
            idle_timeout_secs: 300,
            io_threads: 0,
            replicas_file: None,
            replicas_watch_secs: 2,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| REDACTED))
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("io_threads", &self.io_threads)
            .field("replicas_file", &self.replicas_file)
            .field("replicas_watch_secs", &self.replicas_watch_secs)
            .finish()
    }
}

impl ServerConfig {
    /// `drain_timeout_secs` as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
    /// `request_timeout_secs` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    /// `idle_timeout_secs` as a duration; `None` when 0.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }
    /// `io_threads`, with 0 resolved to the number of CPU cores.
    pub fn io_threads(&self) -> std::num::NonZeroUsize {
        std::num::NonZeroUsize::new(self.io_threads).unwrap_or_else(|| {
            std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
        })
    }
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Strategy: one of [`STRATEGIES`] (`-` accepted for `_`).
    pub strategy: String,
    /// Pre-filter composed with the strategy: skip replicas whose GPU is over
    /// the limits below (unless every replica is).
    pub enable_gpu_aware: bool,
    /// GPU utilization above which a replica is skipped (percent, 0-100).
    pub gpu_max_utilization_pct: f64,
    /// GPU memory used / total above which a replica is skipped (0-1).
    pub gpu_max_memory_fraction: f64,
    /// GPU temperature above which a replica is skipped (degrees Celsius).
    pub gpu_max_temperature_c: f64,
    /// Telemetry older than this is ignored, never trusted.
    pub telemetry_staleness_secs: u64,
    /// How often replicas' `metrics_url` / `gpu_url` are scraped.
    pub scrape_interval_secs: u64,
    /// Limit on one scrape.
    pub scrape_timeout_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: "p2c".to_owned(),
            enable_gpu_aware: false,
            gpu_max_utilization_pct: 95.0,
            gpu_max_memory_fraction: 0.95,
            gpu_max_temperature_c: 85.0,
            telemetry_staleness_secs: 30,
            scrape_interval_secs: 5,
            scrape_timeout_secs: 2,
        }
    }
}

impl RoutingConfig {
    /// The canonical strategy name (`"p2c"`, `"least_loaded"`, ...); parse it
    /// with `llmgate_balance::StrategyKind`. Falls back to the raw string when
    /// it is unknown (which [`Config::validate`] rejects).
    pub fn strategy_name(&self) -> &str {
        canonical_strategy(&self.strategy).unwrap_or(&self.strategy)
    }
    /// `telemetry_staleness_secs` as a duration.
    pub fn telemetry_staleness(&self) -> Duration {
        Duration::from_secs(self.telemetry_staleness_secs)
    }
    /// `scrape_interval_secs` as a duration.
    pub fn scrape_interval(&self) -> Duration {
        Duration::from_secs(self.scrape_interval_secs)
    }
    /// `scrape_timeout_secs` as a duration.
    pub fn scrape_timeout(&self) -> Duration {
        Duration::from_secs(self.scrape_timeout_secs)
    }
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between two probes of one replica.
    pub interval_secs: u64,
    /// Limit on one probe.
    pub timeout_secs: u64,
    /// Consecutive failed probes that take a replica out of rotation.
    pub unhealthy_threshold: u32,
    /// Consecutive good probes that bring it back.
    pub healthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_secs: 5,
            timeout_secs: 2,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

impl HealthConfig {
    /// `interval_secs` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
    /// `timeout_secs` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// `[timeouts]`: upstream deadlines per attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Streamed requests: time from sending to the first chunk.
    pub first_chunk_secs: u64,
    /// Streamed requests: longest pause between two chunks.
    pub idle_secs: u64,
    /// Non-streamed requests: fixed part of the per-attempt deadline.
    pub attempt_base_secs: u64,
    /// Non-streamed requests: per requested token part of the per-attempt
    /// deadline (deadline = base + per_token × max_tokens).
    pub attempt_per_token_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            first_chunk_secs: 30,
            idle_secs: 60,
            attempt_base_secs: 60,
            attempt_per_token_ms: 50,
        }
    }
}

impl TimeoutsConfig {
    /// `first_chunk_secs` as a duration.
    pub fn first_chunk(&self) -> Duration {
        Duration::from_secs(self.first_chunk_secs)
    }
    /// `idle_secs` as a duration.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
    /// Deadline of one non-streamed attempt: base + per_token × max_tokens
    /// (just the base when the request gives no `max_tokens`).
    pub fn attempt_deadline(&self, max_tokens: Option<u32>) -> Duration {
        let per_token = self
            .attempt_per_token_ms
            .saturating_mul(u64::from(max_tokens.unwrap_or(0)));
        Duration::from_secs(self.attempt_base_secs) + Duration::from_millis(per_token)
    }
}

/// `[queue]`: the priority queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Off: requests wait for a replica only as long as the balancer does.
    pub enabled: bool,
    /// Queued requests at most, all priorities together.
    pub capacity: usize,
    /// How long a request may stay queued when it names no timeout (then 504).
    pub deadline_secs: u64,
    /// Promote a queued request one priority level per this many seconds of
    /// waiting (anti-starvation). Unset: strict priority.
    pub aging_secs: Option<u64>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            capacity: 1024,
            deadline_secs: 60,
            aging_secs: None,
        }
    }
}

impl QueueConfig {
    /// `deadline_secs` as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline_secs)
    }
    /// `aging_secs` as a duration.
    pub fn aging(&self) -> Option<Duration> {
        self.aging_secs.map(Duration::from_secs)
    }
}

/// `[ratelimit]`: per-client token buckets (tiers may override the rates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off by default.
    pub enabled: bool,
    /// Requests per minute per client (refill rate).
    pub requests_per_minute: u32,
    /// Requests a client may send at once (bucket size).
    pub request_burst: u32,
    /// Tokens (prompt + max_tokens estimate) per minute per client. Unset: no
    /// token limit.
    pub tokens_per_minute: Option<u64>,
    /// Token bucket size. Unset: one minute's worth.
    pub token_burst: Option<u64>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            requests_per_minute: 600,
            request_burst: 60,
            tokens_per_minute: None,
            token_burst: None,
        }
    }
}

/// `[retry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Off: one attempt per request.
    pub enabled: bool,
    /// Retries after the first attempt (2 = 3 attempts at most).
    pub max_retries: u32,
    /// Backoff before the first retry (exponential, full jitter).
    pub backoff_base_ms: u64,
    /// Longest backoff.
    pub backoff_cap_ms: u64,
    /// Retries may add at most this percentage to the request rate.
    pub budget_percent: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            max_retries: 2,
            backoff_base_ms: 50,
            backoff_cap_ms: 2000,
            budget_percent: 20,
        }
    }
}

impl RetryConfig {
    /// `backoff_base_ms` as a duration.
    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms)
    }
    /// `backoff_cap_ms` as a duration.
    pub fn backoff_cap(&self) -> Duration {
        Duration::from_millis(self.backoff_cap_ms)
    }
}

/// `[breaker]`: per-replica circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Off: failing replicas stay in rotation (health checks still apply).
    pub enabled: bool,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Failure rate over the window that opens the breaker (0-1)...
    pub failure_rate: f64,
    /// ...once the window holds at least this many calls.
    pub min_calls: u32,
    /// Rolling window for `failure_rate`.
    pub window_secs: u64,
    /// Time open before probes are let through (half-open).
    pub cooldown_secs: u64,
    /// Concurrent probes while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker again.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_threshold: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window_secs: 10,
            cooldown_secs: 30,
            half_open_probes: 1,
            half_open_successes: 3,
        }
    }
}

impl BreakerConfig {
    /// `window_secs` as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
    /// `cooldown_secs` as a duration.
    pub fn cooldown(&self) -> Duration {
        Duration::from_secs(self.cooldown_secs)
    }
}

/// `[sim]`: the embedded simulated fleet, started when `replicas` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// One simulated replica per entry, by profile name (see [`SIM_PROFILES`]).
    pub replicas: Vec<String>,
    /// Time compression: 2.0 makes every simulated replica twice as fast.
    pub speedup: f64,
    /// Model name the simulated replicas serve.
    pub model: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            replicas: vec!["h100-8b".into(), "a100-8b".into(), "small".into()],
            speedup: 1.0,
            model: "llama-3-8b".into(),
        }
    }
}

/// One `[[replicas]]` entry: the balancer's own endpoint spec, so the file
/// and the admin API (`POST /admin/replicas`) take the same shape.
pub use llmgate_balance::EndpointSpec as ReplicaConfig;

/// One `[[tiers]]` entry: which API keys get which priority and limits.
/// `Debug` never prints the keys.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tier name (metrics label, logs).
    pub name: String,
    /// Raw API keys (as sent in `Authorization: Bearer ...`) in this tier.
    /// Never logged.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Queue priority: critical, high, normal, low, batch, or 0-4 (0 = critical).
    #[serde(default, deserialize_with = "de_priority")]
    pub priority: Priority,
    /// Requests per minute per key. Unset: `[ratelimit]`'s.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute per key. Unset: `[ratelimit]`'s.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

impl fmt::Debug for TierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.api_keys.iter().map(|_| REDACTED).collect();
        f.debug_struct("TierConfig")
            .field("name", &self.name)
            .field("api_keys", &keys)
            .field("priority", &self.priority)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .finish()
    }
}

/// Priority from a name or a number 0-4.
fn de_priority<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Priority;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a priority: {ACCEPTED_PRIORITIES}")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Priority, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Priority, E> {
            usize::try_from(v)
                .ok()
                .and_then(|i| Priority::ALL.get(i).copied())
                .ok_or_else(|| {
                    E::custom(format!(
                        "invalid priority {v}: accepted values are {ACCEPTED_PRIORITIES}"
                    ))
                })
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Priority, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_any(V)
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

impl Config {
    /// Parses TOML text. Does not validate (see [`Config::validate`]).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, None)
    }

    /// Reads and parses a config file; `None` gives the defaults. Does not
    /// validate (see [`Config::validate`]).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse(&text, Some(path))
    }

    /// [`load`](Config::load), [`apply_env`](Config::apply_env) and
    /// [`validate`](Config::validate) in one call: what `llmgate serve` does.
    pub fn resolve(
        path: Option<&Path>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config::load(path)?;
        cfg.apply_env(get)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies environment overrides, read through `get` (pass
    /// `|k| std::env::var(k).ok()`). Empty values count as unset.
    ///
    /// | variable | key |
    /// |---|---|
    /// | `ROUTING_STRATEGY` | `routing.strategy` |
    /// | `ENABLE_GPU_AWARE` (true/false/1/0/yes/no/on/off) | `routing.enable_gpu_aware` |
    /// | `MAX_RETRIES` | `retry.max_retries` |
    /// | `HEALTH_CHECK_INTERVAL` (seconds, `5` or `5s`) | `health.interval_secs` |
    /// | `LLMGATE_LISTEN` | `server.listen` |
    /// | `LLMGATE_METRICS_LISTEN` | `server.metrics_listen` |
    /// | `LLMGATE_ADMIN_LISTEN` | `server.admin_listen` |
    /// | `LLMGATE_ADMIN_TOKEN` | `server.admin_token` |
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |var: &str| {
            get(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        if let Some(v) = get("ROUTING_STRATEGY") {
            let name = canonical_strategy(&v)
                .ok_or_else(|| ConfigError::env("ROUTING_STRATEGY", unknown_strategy(&v)))?;
            self.routing.strategy = name.to_owned();
        }
        if let Some(v) = get("ENABLE_GPU_AWARE") {
            self.routing.enable_gpu_aware = parse_bool(&v).ok_or_else(|| {
                ConfigError::env(
                    "ENABLE_GPU_AWARE",
                    format!("invalid boolean {v:?}; expected true, false, 1, 0, yes or no"),
                )
            })?;
        }
        if let Some(v) = get("MAX_RETRIES") {
            let n: u32 = v.parse().ok().filter(|n| *n <= MAX_RETRIES_LIMIT).ok_or_else(|| {
                ConfigError::env(
                    "MAX_RETRIES",
                    format!("invalid value {v:?}; expected an integer from 0 to {MAX_RETRIES_LIMIT}"),
                )
            })?;
            self.retry.max_retries = n;
        }
        if let Some(v) = get("HEALTH_CHECK_INTERVAL") {
            let digits = v.strip_suffix('s').unwrap_or(&v).trim();
            let n: u64 = digits.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::env(
                    "HEALTH_CHECK_INTERVAL",
                    format!("invalid value {v:?}; expected a whole number of seconds > 0"),
                )
            })?;
            self.health.interval_secs = n;
        }
        for (var, slot) in [
            ("LLMGATE_LISTEN", &mut self.server.listen),
            ("LLMGATE_METRICS_LISTEN", &mut self.server.metrics_listen),
            ("LLMGATE_ADMIN_LISTEN", &mut self.server.admin_listen),
        ] {
            if let Some(v) = get(var) {
                *slot = v.parse().map_err(|_| {
                    ConfigError::env(
                        var,
                        format!(
                            "invalid socket address {v:?}; expected IP:PORT, e.g. 0.0.0.0:8080"
                        ),
                    )
                })?;
            }
        }
        if let Some(v) = get("LLMGATE_ADMIN_TOKEN") {
            self.server.admin_token = Some(v);
        }
        Ok(())
    }

    /// Checks ranges, URLs, uniqueness and cross-field rules. The first
    /// problem found is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_routing()?;
        self.validate_sections()?;
        self.validate_sim()?;
        self.validate_replicas()?;
        self.validate_tiers()?;
        Ok(())
    }

    /// Whether the embedded simulated fleet is to be served (no replicas).
    pub fn uses_sim(&self) -> bool {
        self.replicas.is_empty() && self.server.replicas_file.is_none()
    }

    /// The tier an API key belongs to.
    pub fn tier_for_key(&self, key: &str) -> Option<&TierConfig> {
        self.tiers
            .iter()
            .find(|t| t.api_keys.iter().any(|k| k == key))
    }

    /// A copy with the admin token and tier API keys replaced by
    /// [`REDACTED`], safe to serialize or show.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if c.server.admin_token.is_some() {
            c.server.admin_token = Some(REDACTED.to_owned());
        }
        for t in &mut c.tiers {
            for k in &mut t.api_keys {
                *k = REDACTED.to_owned();
            }
        }
        c
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        match &s.admin_token {
            None if !s.admin_listen.ip().is_loopback() => {
                return Err(ConfigError::invalid(
                    "server.admin_token",
                    format!(
                        "required when server.admin_listen ({}) is not a loopback address; \
                         set it or LLMGATE_ADMIN_TOKEN, or bind the admin API to 127.0.0.1",
                        s.admin_listen
                    ),
                ))
            }
            Some(t) if t.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    "server.admin_token",
                    "must not be empty",
                ))
            }
            _ => {}
        }
        let addrs = [
            ("server.listen", s.listen),
            ("server.metrics_listen", s.metrics_listen),
            ("server.admin_listen", s.admin_listen),
        ];
        for (i, (key, a)) in addrs.iter().enumerate() {
            for (other, b) in &addrs[..i] {
                if a.port() != 0 && a.port() == b.port() && overlap(a, b) {
                    return Err(ConfigError::invalid(
                        *key,
                        format!("{a} clashes with {other} ({b}); use another port"),
                    ));
                }
            }
        }
        positive("server.max_body_bytes", s.max_body_bytes as u64)?;
        positive("server.request_timeout_secs", s.request_timeout_secs)?;
        if s.io_threads > MAX_IO_THREADS {
            return Err(ConfigError::invalid(
                "server.io_threads",
                format!(
                    "{} is more than {MAX_IO_THREADS}; use about one per CPU core (0: one per core)",
                    s.io_threads
                ),
            ));
        }
        Ok(())
    }

    fn validate_routing(&self) -> Result<(), ConfigError> {
        let r = &self.routing;
        if canonical_strategy(&r.strategy).is_none() {
            return Err(ConfigError::invalid(
                "routing.strategy",
                unknown_strategy(&r.strategy),
            ));
        }
        in_range(
            "routing.gpu_max_utilization_pct",
            r.gpu_max_utilization_pct,
            0.0,
            100.0,
        )?;
        in_range(
            "routing.gpu_max_memory_fraction",
            r.gpu_max_memory_fraction,
            0.0,
            1.0,
        )?;
        in_range(
            "routing.gpu_max_temperature_c",
            r.gpu_max_temperature_c,
            0.0,
            150.0,
        )?;
        positive(
            "routing.telemetry_staleness_secs",
            r.telemetry_staleness_secs,
        )?;
        positive("routing.scrape_interval_secs", r.scrape_interval_secs)?;
        positive("routing.scrape_timeout_secs", r.scrape_timeout_secs)?;
        if r.scrape_timeout_secs > r.scrape_interval_secs {
            return Err(ConfigError::invalid(
                "routing.scrape_timeout_secs",
                format!(
                    "{} exceeds routing.scrape_interval_secs ({})",
                    r.scrape_timeout_secs, r.scrape_interval_secs
                ),
            ));
        }
        Ok(())
    }

    fn validate_sections(&self) -> Result<(), ConfigError> {
        let h = &self.health;
        positive("health.interval_secs", h.interval_secs)?;
        positive("health.timeout_secs", h.timeout_secs)?;
        positive("health.unhealthy_threshold", h.unhealthy_threshold.into())?;
        positive("health.healthy_threshold", h.healthy_threshold.into())?;

        let t = &self.timeouts;
        positive("timeouts.first_chunk_secs", t.first_chunk_secs)?;
        positive("timeouts.idle_secs", t.idle_secs)?;
        positive("timeouts.attempt_base_secs", t.attempt_base_secs)?;

        let q = &self.queue;
        positive("queue.capacity", q.capacity as u64)?;
        positive("queue.deadline_secs", q.deadline_secs)?;
        if let Some(a) = q.aging_secs {
            positive("queue.aging_secs", a)?;
        }

        let rl = &self.ratelimit;
        positive(
            "ratelimit.requests_per_minute",
            rl.requests_per_minute.into(),
        )?;
        positive("ratelimit.request_burst", rl.request_burst.into())?;
        if let Some(n) = rl.tokens_per_minute {
            positive("ratelimit.tokens_per_minute", n)?;
        }
        if let Some(n) = rl.token_burst {
            positive("ratelimit.token_burst", n)?;
            if rl.tokens_per_minute.is_none() {
                return Err(ConfigError::invalid(
                    "ratelimit.token_burst",
                    "set without ratelimit.tokens_per_minute",
                ));
            }
        }

        let re = &self.retry;
        if re.max_retries > MAX_RETRIES_LIMIT {
            return Err(ConfigError::invalid(
                "retry.max_retries",
                format!("{} is more than {MAX_RETRIES_LIMIT}", re.max_retries),
            ));
        }
        if re.backoff_base_ms > re.backoff_cap_ms {
            return Err(ConfigError::invalid(
                "retry.backoff_base_ms",
                format!(
                    "{} exceeds retry.backoff_cap_ms ({})",
                    re.backoff_base_ms, re.backoff_cap_ms
                ),
            ));
        }
        if re.budget_percent > 100 {
            return Err(ConfigError::invalid(
                "retry.budget_percent",
                format!("{} is out of range; expected 0 to 100", re.budget_percent),
            ));
        }

        let b = &self.breaker;
        positive("breaker.failure_threshold", b.failure_threshold.into())?;
        if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
            return Err(ConfigError::invalid(
                "breaker.failure_rate",
                format!(
                    "{} is out of range; expected more than 0 and at most 1",
                    b.failure_rate
                ),
            ));
        }
        positive("breaker.min_calls", b.min_calls.into())?;
        positive("breaker.window_secs", b.window_secs)?;
        positive("breaker.cooldown_secs", b.cooldown_secs)?;
        positive("breaker.half_open_probes", b.half_open_probes.into())?;
        positive("breaker.half_open_successes", b.half_open_successes.into())?;
        Ok(())
    }

    fn validate_sim(&self) -> Result<(), ConfigError> {
        let s = &self.sim;
        for (i, p) in s.replicas.iter().enumerate() {
            if canonical_profile(p).is_none() {
                return Err(ConfigError::invalid(
                    format!("sim.replicas[{i}]"),
                    format!(
                        "unknown profile {p:?}; expected one of {}",
                        SIM_PROFILES.join(", ")
                    ),
                ));
            }
        }
        if self.replicas.is_empty() && s.replicas.is_empty() {
            return Err(ConfigError::invalid(
                "sim.replicas",
                "empty while no [[replicas]] are configured: nothing to serve",
            ));
        }
        if !(s.speedup.is_finite() && s.speedup > 0.0) {
            return Err(ConfigError::invalid(
                "sim.speedup",
                format!("{} is out of range; expected a number > 0", s.speedup),
            ));
        }
        if s.model.trim().is_empty() {
            return Err(ConfigError::invalid("sim.model", "must not be empty"));
        }
        Ok(())
    }

    fn validate_replicas(&self) -> Result<(), ConfigError> {
        if self.server.replicas_file.is_some() && !self.replicas.is_empty() {
            return Err(ConfigError::invalid(
                "server.replicas_file",
                "the replicas come from this file or from [[replicas]], not both",
            ));
        }
        if self.server.replicas_watch_secs == 0 {
            return Err(ConfigError::invalid(
                "server.replicas_watch_secs",
                "must be greater than 0",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let key = |field: &str| format!("replicas[{i}].{field}");
            if r.id.trim().is_empty() {
                return Err(ConfigError::invalid(key("id"), "must not be empty"));
            }
            if let Some(j) = seen.insert(&r.id, i) {
                return Err(ConfigError::invalid(
                    key("id"),
                    format!("duplicate replica id {:?} (also replicas[{j}].id)", r.id),
                ));
            }
            check_base_url(&r.url).map_err(|m| {
                ConfigError::invalid(key("url"), format!("replica {:?}: {m}", r.id))
            })?;
            for (field, url) in [("metrics_url", &r.metrics_url), ("gpu_url", &r.gpu_url)] {
                // An empty URL turns that scrape off.
                if let Some(u) = url.as_deref().filter(|u| !u.is_empty()) {
                    check_http_url(u).map_err(|m| {
                        ConfigError::invalid(key(field), format!("replica {:?}: {m}", r.id))
                    })?;
                }
            }
            for (j, m) in r.models.iter().enumerate() {
                if m.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("replicas[{i}].models[{j}]"),
                        "must not be empty",
                    ));
                }
            }
            positive(&key("weight"), r.weight.into())?;
            positive(&key("max_concurrent"), r.max_concurrent as u64)?;
        }
        Ok(())
    }

    fn validate_tiers(&self) -> Result<(), ConfigError> {
        let mut names: HashSet<&str> = HashSet::new();
        let mut keys: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.tiers.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("tiers[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(&t.name) {
                return Err(ConfigError::invalid(
                    format!("tiers[{i}].name"),
                    format!("duplicate tier name {:?}", t.name),
                ));
            }
            if t.api_keys.is_empty() {
                return Err(ConfigError::invalid(
                    format!("tiers[{i}].api_keys"),
                    format!("tier {:?} lists no keys", t.name),
                ));
            }
            for (j, k) in t.api_keys.iter().enumerate() {
                let key = format!("tiers[{i}].api_keys[{j}]");
                if k.trim().is_empty() {
                    return Err(ConfigError::invalid(key, "must not be empty"));
                }
                // Never print the key itself.
                if let Some(other) = keys.insert(k, i) {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "this key is already listed in tier {:?}",
                            self.tiers[other].name
                        ),
                    ));
                }
            }
            if let Some(n) = t.requests_per_minute {
                positive(&format!("tiers[{i}].requests_per_minute"), n.into())?;
            }
            if let Some(n) = t.tokens_per_minute {
                positive(&format!("tiers[{i}].tokens_per_minute"), n)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn unknown_strategy(v: &str) -> String {
    format!(
        "unknown strategy {v:?}; expected one of {}",
        STRATEGIES.join(", ")
    )
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn in_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{v} is out of range; expected {lo} to {hi}"),
        ))
    }
}

/// Whether two bind addresses on the same port would clash.
fn overlap(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// `http://host:port`, nothing else.
fn check_base_url(url: &str) -> Result<(), String> {
    let uri = check_http_url(url)?;
    if uri.port_u16().is_none() {
        return Err(format!("{url:?} has no port; expected http://host:port"));
    }
    match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("" | "/") if !url.ends_with('?') => Ok(()),
        _ => Err(format!(
            "{url:?} has a path or query; expected http://host:port (routes such as /v1/... are appended)"
        )),
    }
}

/// An absolute `http://` URL with a host and no user info.
fn check_http_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?} ({e}); expected http://host:port"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https is not supported; expected http://host:port"
            ))
        }
        _ => {
            return Err(format!(
                "{url:?} is not an http:// URL; expected http://host:port"
            ))
        }
    }
    let Some(auth) = uri.authority() else {
        return Err(format!("{url:?} has no host; expected http://host:port"));
    };
    if auth.as_str().contains('@') {
        return Err(format!(
            "{url:?}: user info is not supported; expected http://host:port"
        ));
    }
    if auth.host().is_empty() {
        return Err(format!("{url:?} has no host; expected http://host:port"));
    }
    Ok(uri)
}

/// Parses TOML into a [`Config`]. When the error can be pinned to a key, a
/// first line names it (`retry.max_retries: invalid type ...`, `unknown key
/// "strategyy" in [routing]`); toml's own message (line, column, the line
/// itself) follows unchanged.
fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| {
        let toml_msg = e.to_string();
        let toml_msg = toml_msg.trim_end();
        let offset = e.span().map(|s| s.start);
        let backticked = |prefix: &str| {
            e.message()
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned)
        };
        let (key, summary) = if let Some(field) = backticked("unknown field `") {
            // The span may point at the table rather than the key: use the
            // first line at or after it that defines the key.
            let at = offset.map(|o| key_line_after(text, o, &field).unwrap_or(o));
            match at.and_then(|o| table_at(text, o)) {
                Some(t) if t.contains('[') => (
                    format!("{t}.{field}"),
                    format!("unknown key {field:?} in {t}"),
                ),
                Some(t) => (
                    format!("{t}.{field}"),
                    format!("unknown key {field:?} in [{t}]"),
                ),
                None => (
                    field.clone(),
                    format!("unknown key {field:?} at the top level"),
                ),
            }
        } else if let Some(field) = backticked("missing field `") {
            let table = offset.and_then(|o| table_at(text, o));
            let key = join_key(table.as_deref(), &field);
            (key.clone(), format!("{key}: required key is missing"))
        } else if let Some(line_key) = offset.and_then(|o| key_on_line(text, o)) {
            let key = join_key(offset.and_then(|o| table_at(text, o)).as_deref(), &line_key);
            (key.clone(), format!("{key}: {}", e.message().trim_end()))
        } else {
            return ConfigError::Parse {
                path: path.map(Path::to_owned),
                key: None,
                message: toml_msg.to_owned(),
            };
        };
        // toml's message quotes the offending line and value: keep secrets out.
        let message = if is_secret_key(&key) {
            let line = offset.map_or(0, |o| text[..o.min(text.len())].matches('\n').count() + 1);
            format!("{key}: invalid value at line {line} (not shown: it may hold a secret)")
        } else {
            format!("{summary}\n{toml_msg}")
        };
        ConfigError::Parse {
            path: path.map(Path::to_owned),
            key: Some(key),
            message,
        }
    })
}

/// Keys whose values must never be printed.
fn is_secret_key(key: &str) -> bool {
    key.ends_with("admin_token") || key.contains("api_keys")
}

fn join_key(table: Option<&str>, key: &str) -> String {
    match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    }
}

/// The key defined on the line holding byte `offset` (`max_retries` in
/// `max_retries = "two"`), if that line is a `key = value` line.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"').trim_matches('\'');
    (!k.is_empty() && !k.starts_with('[') && !k.starts_with('#')).then(|| k.to_owned())
}

/// Byte offset of the first line at or after `offset` that defines `field`.
fn key_line_after(text: &str, offset: usize, field: &str) -> Option<usize> {
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if pos <= offset {
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            if k.trim().trim_matches('"').trim_matches('\'') == field {
                return Some(start);
            }
        }
    }
    None
}

/// The table (`routing`, `replicas[1]`, `replicas[0].labels`) holding byte
/// `offset`, from the `[...]` / `[[...]]` headers above it. `None` for the
/// top level.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let mut current: Option<String> = None;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        pos += line.len();
        let t = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            current = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim();
            // `[replicas.labels]`: a sub-table of the latest array entry.
            current = Some(match name.split_once('.') {
                Some((head, rest)) if counts.contains_key(head) => {
                    format!("{head}[{}].{rest}", counts[head] - 1)
                }
                _ => name.to_owned(),
            });
        }
    }
    current
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn invalid(text: &str) -> ConfigError {
        Config::from_toml_str(text)
            .expect("parses")
            .validate()
            .expect_err("should be invalid")
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.server.listen, addr("127.0.0.1:8080"));
        assert_eq!(c.server.metrics_listen, addr("127.0.0.1:9090"));
        assert_eq!(c.server.admin_listen, addr("127.0.0.1:8081"));
        assert_eq!(c.server.admin_token, None);
        assert_eq!(c.server.drain_timeout(), Duration::from_secs(30));
        assert_eq!(c.server.max_body_bytes, 8 << 20);
        assert_eq!(c.server.request_timeout_secs, 300);
        assert_eq!(c.server.idle_timeout(), Some(Duration::from_secs(300)));
        assert_eq!(c.routing.strategy, "p2c");
        assert!(!c.routing.enable_gpu_aware);
        assert_eq!(c.routing.gpu_max_utilization_pct, 95.0);
        assert_eq!(c.routing.gpu_max_memory_fraction, 0.95);
        assert_eq!(c.routing.gpu_max_temperature_c, 85.0);
        assert_eq!(c.routing.telemetry_staleness_secs, 30);
        assert_eq!(c.routing.scrape_interval_secs, 5);
        assert_eq!(c.routing.scrape_timeout_secs, 2);
        assert_eq!(
            c.health,
            HealthConfig {
                interval_secs: 5,
                timeout_secs: 2,
                unhealthy_threshold: 3,
                healthy_threshold: 2
            }
        );
        assert_eq!(c.timeouts.first_chunk_secs, 30);
        assert_eq!(c.timeouts.idle_secs, 60);
        assert_eq!(c.timeouts.attempt_deadline(None), Duration::from_secs(60));
        assert_eq!(
            c.timeouts.attempt_deadline(Some(100)),
            Duration::from_secs(65)
        );
        assert_eq!(
            c.queue,
            QueueConfig {
                enabled: true,
                capacity: 1024,
                deadline_secs: 60,
                aging_secs: None
            }
        );
        assert!(!c.ratelimit.enabled);
        assert_eq!(
            (c.ratelimit.requests_per_minute, c.ratelimit.request_burst),
            (600, 60)
        );
        assert_eq!(
            (c.ratelimit.tokens_per_minute, c.ratelimit.token_burst),
            (None, None)
        );
        assert_eq!(
            c.retry,
            RetryConfig {
                enabled: true,
                max_retries: 2,
                backoff_base_ms: 50,
                backoff_cap_ms: 2000,
                budget_percent: 20
            }
        );
        assert_eq!(c.breaker, BreakerConfig::default());
        assert_eq!(
            (
                c.breaker.failure_threshold,
                c.breaker.min_calls,
                c.breaker.cooldown_secs
            ),
            (5, 20, 30)
        );
        assert_eq!(c.sim.replicas, ["h100-8b", "a100-8b", "small"]);
        assert_eq!(c.sim.speedup, 1.0);
        assert_eq!(c.sim.model, "llama-3-8b");
        assert!(c.replicas.is_empty() && c.tiers.is_empty() && c.uses_sim());
        c.validate().expect("defaults are valid");
        // An empty file and no file are the defaults.
        assert_eq!(Config::from_toml_str("").unwrap(), c);
        assert_eq!(Config::load(None).unwrap(), c);
        // A replica's optional fields have defaults too.
        let r = Config::from_toml_str("[[replicas]]\nid = \"a\"\nurl = \"http://h:1\"\n").unwrap();
        assert_eq!(r.replicas[0], ReplicaConfig::new("a", "http://h:1"));
        assert_eq!(
            (r.replicas[0].weight, r.replicas[0].max_concurrent),
            (1, 256)
        );
    }

    const FULL: &str = r#"
[server]
listen = "0.0.0.0:8000"
metrics_listen = "0.0.0.0:9000"
admin_listen = "0.0.0.0:8001"
admin_token = "s3cret-token"
drain_timeout_secs = 12
max_body_bytes = 1048576
request_timeout_secs = 100
idle_timeout_secs = 0
io_threads = 3

[routing]
strategy = "least-loaded"
enable_gpu_aware = true
gpu_max_utilization_pct = 90
gpu_max_memory_fraction = 0.9
gpu_max_temperature_c = 80.5
telemetry_staleness_secs = 15
scrape_interval_secs = 3
scrape_timeout_secs = 1

[health]
interval_secs = 7
timeout_secs = 3
unhealthy_threshold = 4
healthy_threshold = 1

[timeouts]
first_chunk_secs = 10
idle_secs = 20
attempt_base_secs = 30
attempt_per_token_ms = 40

[queue]
enabled = false
capacity = 10
deadline_secs = 5
aging_secs = 2

[ratelimit]
enabled = true
requests_per_minute = 120
request_burst = 10
tokens_per_minute = 100000
token_burst = 20000

[retry]
enabled = false
max_retries = 4
backoff_base_ms = 10
backoff_cap_ms = 100
budget_percent = 50

[breaker]
enabled = false
failure_threshold = 3
failure_rate = 0.25
min_calls = 8
window_secs = 60
cooldown_secs = 5
half_open_probes = 2
half_open_successes = 4

[sim]
replicas = ["small", "h100_70b_tp4"]
speedup = 4.0
model = "tiny"

[[replicas]]
id = "a"
url = "http://10.0.0.1:8000"
models = ["m1", "m2"]
weight = 3
max_concurrent = 64
labels = { zone = "eu-1", gpu = "h100" }
metrics_url = "http://10.0.0.1:8000/metrics"
gpu_url = "http://10.0.0.1:9400/metrics"

[[replicas]]
id = "b"
url = "http://vllm-b.svc:8000"
models = ["m1"]

[replicas.labels]
zone = "eu-2"

[[tiers]]
name = "gold"
api_keys = ["sk-gold-1", "sk-gold-2"]
priority = "high"
requests_per_minute = 6000
tokens_per_minute = 1000000

[[tiers]]
name = "batch"
api_keys = ["sk-batch"]
priority = 4
"#;

    #[test]
    fn full_config_round_trip() {
        let c = Config::from_toml_str(FULL).expect("full config parses");
        c.validate().expect("full config is valid");

        assert_eq!(c.server.listen, addr("0.0.0.0:8000"));
        assert_eq!(c.server.admin_token.as_deref(), Some("s3cret-token"));
        assert_eq!(c.server.max_body_bytes, 1 << 20);
        assert_eq!(c.server.idle_timeout(), None, "0 keeps connections");
        assert_eq!(c.server.io_threads().get(), 3);
        assert_eq!(c.routing.strategy_name(), "least_loaded");
        assert!(c.routing.enable_gpu_aware);
        assert_eq!(c.routing.gpu_max_utilization_pct, 90.0);
        assert_eq!(c.routing.gpu_max_temperature_c, 80.5);
        assert_eq!(c.health.interval(), Duration::from_secs(7));
        assert_eq!(
            c.timeouts.attempt_deadline(Some(1000)),
            Duration::from_secs(70)
        );
        assert_eq!(c.queue.aging(), Some(Duration::from_secs(2)));
        assert!(!c.queue.enabled);
        assert_eq!(c.ratelimit.token_burst, Some(20000));
        assert_eq!(c.retry.max_retries, 4);
        assert_eq!(c.retry.backoff_cap(), Duration::from_millis(100));
        assert_eq!(c.breaker.failure_rate, 0.25);
        assert_eq!(c.breaker.half_open_successes, 4);
        assert_eq!(c.sim.replicas, ["small", "h100_70b_tp4"]);
        assert_eq!(c.sim.speedup, 4.0);
        assert_eq!(c.replicas.len(), 2);
        assert_eq!(c.replicas[0].weight, 3);
        assert_eq!(c.replicas[0].labels["gpu"], "h100");
        assert_eq!(
            c.replicas[0].gpu_url.as_deref(),
            Some("http://10.0.0.1:9400/metrics")
        );
        assert_eq!(c.replicas[1].labels["zone"], "eu-2");
        assert_eq!(c.replicas[1].max_concurrent, 256);
        assert_eq!(c.tiers[0].priority, Priority::High);
        assert_eq!(c.tiers[1].priority, Priority::Batch);
        assert_eq!(
            c.tier_for_key("sk-gold-2").map(|t| t.name.as_str()),
            Some("gold")
        );
        assert!(c.tier_for_key("nope").is_none());
        assert!(!c.uses_sim());

        // Serialize and read back: nothing lost.
        let json = serde_json::to_value(&c).unwrap();
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        // No field of the full config is left at its default.
        let d = Config::default();
        assert_ne!(c.server, d.server);
        assert_ne!(c.routing, d.routing);
        assert_ne!(c.health, d.health);
        assert_ne!(c.timeouts, d.timeouts);
        assert_ne!(c.queue, d.queue);
        assert_ne!(c.ratelimit, d.ratelimit);
        assert_ne!(c.retry, d.retry);
        assert_ne!(c.breaker, d.breaker);
        assert_ne!(c.sim, d.sim);
    }

    #[test]
    fn unknown_key_names_the_key_and_table() {
        let e = Config::from_toml_str("[routing]\nstrategyy = \"p2c\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(r#"unknown key "strategyy" in [routing]"#),
            "{msg}"
        );
        assert!(msg.contains("line 2"), "toml's location is kept: {msg}");
        assert_eq!(e.key(), Some("routing.strategyy"));

        let e = Config::from_toml_str("strategy = \"p2c\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"unknown key "strategy" at the top level"#),
            "{e}"
        );

        let e = Config::from_toml_str(
            "[[replicas]]\nid = \"a\"\nurl = \"http://a:1\"\n\n[[replicas]]\nid = \"b\"\nurl = \"http://b:1\"\nwieght = 2\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"unknown key "wieght" in replicas[1]"#),
            "{e}"
        );
        assert_eq!(e.key(), Some("replicas[1].wieght"));

        let e = Config::from_toml_str("[serverr]\nlisten = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(e.to_string().contains("serverr"), "{e}");

        // Wrong types keep toml's message, which names the key's line.
        let e = Config::from_toml_str("[retry]\nmax_retries = \"two\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("retry.max_retries: invalid type"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert_eq!(e.key(), Some("retry.max_retries"));

        let e = Config::from_toml_str(
            "[[replicas]]\nid = \"a\"\nurl = \"http://a:1\"\n[replicas.labels]\nx = 1\n",
        )
        .unwrap_err();
        assert_eq!(e.key(), Some("replicas[0].labels.x"), "{e}");
        let e = Config::from_toml_str("[[replicas]]\nid = \"a\"\n").unwrap_err();
        assert_eq!(e.key(), Some("replicas[0].url"), "{e}");
        assert!(
            e.to_string()
                .starts_with("replicas[0].url: required key is missing"),
            "{e}"
        );
        let e = Config::from_toml_str("[server]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(e.key(), Some("server.listen"), "{e}");
        // Plain syntax errors keep toml's message alone.
        let e = Config::from_toml_str("[server\n").unwrap_err();
        assert!(e.to_string().starts_with("TOML parse error"), "{e}");
    }

    #[test]
    fn load_prefixes_the_file_path() {
        let dir = std::env::temp_dir().join(format!("llmgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[health]\ninterval = 3\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}: ", file.display())), "{msg}");
        assert!(
            msg.contains(r#"unknown key "interval" in [health]"#),
            "{msg}"
        );
        let missing = dir.join("missing.toml");
        let e = Config::load(Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
        std::fs::write(&file, "[health]\ninterval_secs = 3\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().health.interval_secs, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn io_threads_default_to_the_cores_and_have_a_ceiling() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Config::default().server.io_threads().get(), cores);
        let e = invalid("[server]\nio_threads = 5000\n");
        assert_eq!(e.key(), Some("server.io_threads"));
        assert!(e.to_string().contains("5000 is more than 1024"), "{e}");
    }

    #[test]
    fn bad_strategy() {
        let e = invalid("[routing]\nstrategy = \"fastest\"\n");
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                r#"routing.strategy: unknown strategy "fastest"; expected one of round_robin,"#
            ),
            "{msg}"
        );
        assert_eq!(e.key(), Some("routing.strategy"));
        for s in STRATEGIES {
            let c = Config::from_toml_str(&format!(
                "[routing]\nstrategy = \"{}\"\n",
                s.replace('_', "-")
            ))
            .unwrap();
            c.validate().unwrap();
            assert_eq!(c.routing.strategy_name(), s);
        }
    }

    #[test]
    fn bad_url_names_the_replica() {
        for url in [
            "vllm-1:8000",
            "https://h:1",
            "http://h",
            "http://h:1/v1",
            "ftp://h:1",
            "http://u:p@h:1",
            "not a url",
        ] {
            let text = format!(
                "[[replicas]]\nid = \"ok\"\nurl = \"http://h:1\"\n[[replicas]]\nid = \"bad\"\nurl = \"{url}\"\n"
            );
            let e = invalid(&text);
            let msg = e.to_string();
            assert!(
                msg.starts_with("replicas[1].url: replica \"bad\""),
                "{url}: {msg}"
            );
            assert!(msg.contains("http://host:port"), "{msg}");
        }
        for url in ["http://h:1/", "http://10.0.0.1:8000", "http://[::1]:8000"] {
            let text = format!("[[replicas]]\nid = \"a\"\nurl = \"{url}\"\n");
            Config::from_toml_str(&text).unwrap().validate().unwrap();
        }
        let e = invalid(
            "[[replicas]]\nid = \"a\"\nurl = \"http://h:1\"\nmetrics_url = \"h/metrics\"\n",
        );
        assert_eq!(e.key(), Some("replicas[0].metrics_url"));
        let e = invalid("[[replicas]]\nid = \"a\"\nurl = \"http://h:1\"\nmax_concurrent = 0\n");
        assert_eq!(
            e.to_string(),
            "replicas[0].max_concurrent: must be greater than 0"
        );
        let e = invalid(
            "[server]\nreplicas_file = \"r.toml\"\n[[replicas]]\nid = \"a\"\nurl = \"http://h:1\"\n",
        );
        assert_eq!(e.key(), Some("server.replicas_file"));
        let c = Config::from_toml_str("[server]\nreplicas_file = \"r.toml\"\n").unwrap();
        assert!(!c.uses_sim(), "a replicas file means real replicas");
    }

    #[test]
    fn duplicate_replica_ids() {
        let e = invalid(
            "[[replicas]]\nid = \"a\"\nurl = \"http://h:1\"\n[[replicas]]\nid = \"b\"\nurl = \"http://h:2\"\n[[replicas]]\nid = \"a\"\nurl = \"http://h:3\"\n",
        );
        assert_eq!(e.key(), Some("replicas[2].id"));
        assert!(
            e.to_string()
                .contains(r#"duplicate replica id "a" (also replicas[0].id)"#),
            "{e}"
        );
    }

    #[test]
    fn admin_token_required_off_loopback() {
        let e = invalid("[server]\nadmin_listen = \"0.0.0.0:8081\"\n");
        assert_eq!(e.key(), Some("server.admin_token"));
        assert!(e.to_string().contains("not a loopback address"), "{e}");
        // With a token it is fine; loopback (v4 or v6) needs none.
        Config::from_toml_str("[server]\nadmin_listen = \"0.0.0.0:8081\"\nadmin_token = \"t\"\n")
            .unwrap()
            .validate()
            .unwrap();
        Config::from_toml_str("[server]\nadmin_listen = \"[::1]:8081\"\n")
            .unwrap()
            .validate()
            .unwrap();
        // The token can come from the environment.
        let mut c = Config::from_toml_str("[server]\nadmin_listen = \"10.1.2.3:8081\"\n").unwrap();
        assert!(c.validate().is_err());
        c.apply_env(env(&[("LLMGATE_ADMIN_TOKEN", "from-env")]))
            .unwrap();
        c.validate().unwrap();
        // Clashing listen addresses are caught too.
        let e = invalid("[server]\nlisten = \"0.0.0.0:9090\"\n");
        assert_eq!(e.key(), Some("server.metrics_listen"));
    }

    #[test]
    fn other_ranges_name_their_key() {
        for (text, key) in [
            (
                "[routing]\ngpu_max_memory_fraction = 1.5\n",
                "routing.gpu_max_memory_fraction",
            ),
            (
                "[routing]\nscrape_timeout_secs = 9\n",
                "routing.scrape_timeout_secs",
            ),
            ("[health]\ninterval_secs = 0\n", "health.interval_secs"),
            ("[queue]\ncapacity = 0\n", "queue.capacity"),
            ("[ratelimit]\ntoken_burst = 5\n", "ratelimit.token_burst"),
            ("[retry]\nmax_retries = 11\n", "retry.max_retries"),
            ("[retry]\nbackoff_base_ms = 5000\n", "retry.backoff_base_ms"),
            ("[breaker]\nfailure_rate = 0\n", "breaker.failure_rate"),
            (
                "[sim]\nreplicas = [\"small\", \"tpu\"]\n",
                "sim.replicas[1]",
            ),
            ("[sim]\nreplicas = []\n", "sim.replicas"),
            ("[sim]\nspeedup = 0\n", "sim.speedup"),
            ("[[tiers]]\nname = \"t\"\n", "tiers[0].api_keys"),
        ] {
            assert_eq!(invalid(text).key(), Some(key), "{text}");
        }
        let e = Config::from_toml_str(
            "[[tiers]]\nname = \"t\"\napi_keys = [\"k\"]\npriority = \"urgent\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid priority"), "{e}");
        let e =
            Config::from_toml_str("[[tiers]]\nname = \"t\"\napi_keys = [\"k\"]\npriority = 7\n")
                .unwrap_err();
        assert!(e.to_string().contains("invalid priority 7"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let mut c = Config::default();
        c.apply_env(env(&[
            ("ROUTING_STRATEGY", "Least-Connections"),
            ("ENABLE_GPU_AWARE", "yes"),
            ("MAX_RETRIES", "5"),
            ("HEALTH_CHECK_INTERVAL", "9s"),
            ("LLMGATE_LISTEN", "0.0.0.0:18080"),
            ("LLMGATE_METRICS_LISTEN", "0.0.0.0:19090"),
            ("LLMGATE_ADMIN_LISTEN", "0.0.0.0:18081"),
            ("LLMGATE_ADMIN_TOKEN", "tok"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(c.routing.strategy, "least_connections");
        assert!(c.routing.enable_gpu_aware);
        assert_eq!(c.retry.max_retries, 5);
        assert_eq!(c.health.interval_secs, 9);
        assert_eq!(c.server.listen, addr("0.0.0.0:18080"));
        assert_eq!(c.server.metrics_listen, addr("0.0.0.0:19090"));
        assert_eq!(c.server.admin_listen, addr("0.0.0.0:18081"));
        assert_eq!(c.server.admin_token.as_deref(), Some("tok"));
        c.validate().unwrap();

        // Environment wins over the file; empty values are ignored.
        let mut c = Config::from_toml_str("[routing]\nenable_gpu_aware = true\n").unwrap();
        c.apply_env(env(&[("ENABLE_GPU_AWARE", "0"), ("MAX_RETRIES", "")]))
            .unwrap();
        assert!(!c.routing.enable_gpu_aware);
        assert_eq!(c.retry.max_retries, 2);

        for (var, val) in [
            ("ROUTING_STRATEGY", "fastest"),
            ("ENABLE_GPU_AWARE", "maybe"),
            ("MAX_RETRIES", "-1"),
            ("MAX_RETRIES", "99"),
            ("HEALTH_CHECK_INTERVAL", "0"),
            ("HEALTH_CHECK_INTERVAL", "5m"),
            ("LLMGATE_LISTEN", "localhost"),
            ("LLMGATE_METRICS_LISTEN", "1.2.3.4"),
            ("LLMGATE_ADMIN_LISTEN", ":8081"),
        ] {
            let e = Config::default().apply_env(env(&[(var, val)])).unwrap_err();
            assert_eq!(e.key(), Some(var));
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{var}: ")), "{msg}");
            assert!(msg.contains(val), "{msg}");
        }
        let e = Config::default()
            .apply_env(env(&[("ROUTING_STRATEGY", "fastest")]))
            .unwrap_err();
        assert!(e
            .to_string()
            .starts_with(r#"ROUTING_STRATEGY: unknown strategy "fastest"; expected one of"#));

        // resolve = load + env + validate.
        let c = Config::resolve(None, env(&[("MAX_RETRIES", "0")])).unwrap();
        assert_eq!(c.retry.max_retries, 0);
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::from_toml_str(FULL).unwrap();
        let dbg = format!("{c:?}");
        for secret in ["sk-gold-1", "sk-gold-2", "sk-batch", "s3cret-token"] {
            assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
        }
        let tier = format!("{:?}", c.tiers[0]);
        assert!(
            tier.contains(r#"api_keys: ["<redacted>", "<redacted>"]"#),
            "{tier}"
        );
        assert!(tier.contains("gold") && tier.contains("High"), "{tier}");
        assert!(format!("{:?}", c.server).contains(r#"admin_token: Some("<redacted>")"#));

        let json = serde_json::to_string(&c.redacted()).unwrap();
        for secret in ["sk-gold-1", "sk-batch", "s3cret-token"] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
        // A malformed key is reported without printing it.
        let e = Config::from_toml_str("[[tiers]]\nname = \"a\"\napi_keys = \"sk-lonely\"\n")
            .unwrap_err();
        assert_eq!(e.key(), Some("tiers[0].api_keys"));
        assert!(
            !e.to_string().contains("sk-lonely") && e.to_string().contains("line 3"),
            "{e}"
        );
        // A key listed twice is reported without printing it.
        let e = invalid("[[tiers]]\nname = \"a\"\napi_keys = [\"dup-key\"]\n[[tiers]]\nname = \"b\"\napi_keys = [\"dup-key\"]\n");
        assert_eq!(e.key(), Some("tiers[1].api_keys[0]"));
        assert!(!e.to_string().contains("dup-key"), "{e}");
    }

    #[test]
    fn example_config_parses_and_is_valid() {
        let c = Config::from_toml_str(include_str!("../../../examples/llmgate.toml"))
            .unwrap_or_else(|e| panic!("examples/llmgate.toml: {e}"));
        c.validate()
            .unwrap_or_else(|e| panic!("examples/llmgate.toml: {e}"));
        // The example documents the defaults: it must agree with them.
        assert_eq!(
            c,
            Config::default(),
            "examples/llmgate.toml should show the defaults"
        );
    }

    #[test]
    fn example_commented_blocks_parse() {
        // The commented-out [[replicas]] and [[tiers]] templates, uncommented.
        let example = include_str!("../../../examples/llmgate.toml");
        let start = example
            .find("# [[replicas]]")
            .expect("a [[replicas]] template");
        let text: String = example[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("[[") || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        c.validate().unwrap();
        assert_eq!(c.replicas.len(), 1);
        assert_eq!(c.replicas[0].labels["zone"], "eu-west-1a");
        assert_eq!(c.tiers[0].priority, Priority::High);
    }

    /// The block scalar after `llmgate.toml: |`, de-indented.
    fn configmap_toml(yaml: &str) -> String {
        let mut lines = yaml
            .lines()
            .skip_while(|l| !l.trim_end().ends_with("llmgate.toml: |"));
        lines
            .next()
            .expect("ConfigMap has an `llmgate.toml: |` block");
        let body: Vec<&str> = lines.collect();
        let indent = body
            .iter()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .expect("block is not empty");
        let mut out = String::new();
        for l in body {
            if l.trim().is_empty() {
                out.push('\n');
            } else if l.len() - l.trim_start().len() >= indent {
                out.push_str(&l[indent..]);
                out.push('\n');
            } else {
                break;
            }
        }
        out
    }

    #[test]
    fn configmap_config_parses_and_is_valid() {
        let text = configmap_toml(include_str!("../../../deploy/kubernetes/configmap.yaml"));
        let c = Config::from_toml_str(&text)
            .unwrap_or_else(|e| panic!("deploy/kubernetes/configmap.yaml: {e}"));
        c.validate()
            .unwrap_or_else(|e| panic!("deploy/kubernetes/configmap.yaml: {e}"));
        assert_eq!(c.server.listen, addr("0.0.0.0:8080"));
        assert_eq!(c.server.metrics_listen, addr("0.0.0.0:9090"));
        assert_eq!(c.server.admin_listen, addr("127.0.0.1:8081"));
        assert_eq!(c.server.drain_timeout_secs, 30);
        assert!(!c.replicas.is_empty());
    }
}
