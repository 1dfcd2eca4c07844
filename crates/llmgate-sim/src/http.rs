//! The replica's HTTP routes.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use llmgate_core::prefix::{text_block_hashes, token_block_hashes};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::Faults;
use crate::engine::{std_normal, EngineRequest, Finished, ReqId};
use crate::replica::{Ev, Shared, Sink};

/// Header naming the replica that served a request.
pub const REPLICA_HEADER: &str = "x-sim-replica";

/// Characters per simulated token: a prompt of `n` characters is
/// `ceil(n / 4)` tokens, and one 16-token KV block is 64 characters, the
/// same blocks [`llmgate_core::prefix::text_block_hashes`] hashes by default.
pub const CHARS_PER_TOKEN: usize = 4;

type Sh = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/load", get(load))
        .route("/get_load", get(get_load))
        .route("/get_server_info", get(server_info))
        .route("/get_model_info", get(model_info))
        .route("/metrics", get(metrics))
        .route("/gpu", get(gpu))
        .route("/admin/faults", get(get_faults).post(post_faults))
        .route("/admin/counters", get(counters))
        .with_state(shared)
}

fn with_replica(shared: &Shared, mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&shared.id) {
        res.headers_mut().insert(REPLICA_HEADER, v);
    }
    res
}

fn error(shared: &Shared, status: StatusCode, message: &str, code: &str) -> Response {
    shared.counters.errored.fetch_add(1, Ordering::Relaxed);
    let body = llmgate_core::error_body(message, llmgate_core::default_error_type(status), code);
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    with_replica(shared, res)
}

async fn hang_if(shared: &Shared) {
    if shared.faults.lock().faults.hang {
        std::future::pending::<()>().await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(State(sh): Sh, body: Bytes) -> Response {
    infer(sh, Kind::Completion, body).await
}

async fn chat(State(sh): Sh, body: Bytes) -> Response {
    infer(sh, Kind::Chat, body).await
}

/// The prompt of a request as text or token ids.
fn prompt_of(kind: Kind, v: &Value) -> Result<(u32, Vec<u64>), &'static str> {
    let text_prompt = |text: &str| {
        let tokens = text.chars().count().div_ceil(CHARS_PER_TOKEN).max(1) as u32;
        (tokens, text_block_hashes(text, 16 * CHARS_PER_TOKEN))
    };
    match kind {
        Kind::Chat => {
            let msgs = v
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("`messages` must be an array")?;
            let mut text = String::new();
            for m in msgs {
                match m.get("content") {
                    Some(Value::String(s)) => text.push_str(s),
                    Some(Value::Array(parts)) => {
                        for p in parts {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                text.push_str(t);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(text_prompt(&text))
        }
        Kind::Completion => match v.get("prompt") {
            Some(Value::String(s)) => Ok(text_prompt(s)),
            Some(Value::Array(a)) if a.iter().all(Value::is_u64) && !a.is_empty() => {
                let ids: Vec<u32> = a.iter().map(|x| x.as_u64().unwrap_or(0) as u32).collect();
                Ok((ids.len() as u32, token_block_hashes(&ids, 16)))
            }
            Some(Value::Array(a)) => match a.first() {
                Some(Value::String(s)) => Ok(text_prompt(s)),
                Some(Value::Array(ids)) => {
                    let ids: Vec<u32> =
                        ids.iter().map(|x| x.as_u64().unwrap_or(0) as u32).collect();
                    Ok((ids.len().max(1) as u32, token_block_hashes(&ids, 16)))
                }
                _ => Err("`prompt` must be a string or token ids"),
            },
            _ => Err("`prompt` must be a string or token ids"),
        },
    }
}

/// Output length: `max_tokens`, or (with `"sim_output": "sampled"` or no
/// `max_tokens`) a LN(5.05, 0.9) sample capped by `max_tokens`.
fn output_len(shared: &Shared, v: &Value, prompt: u32) -> u32 {
    let max = v
        .get("max_tokens")
        .or_else(|| v.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map(|m| m.min(u64::from(u32::MAX)) as u32);
    let sampled = v.get("sim_output").and_then(Value::as_str) == Some("sampled");
    let room = shared
        .config
        .profile
        .max_model_len
        .saturating_sub(prompt)
        .max(1);
    match max {
        Some(m) if !sampled => m.max(1),
        _ => {
            let cap = max.unwrap_or(room).min(room).max(1);
            let x = (5.05 + 0.9 * std_normal(&mut *shared.rng.lock())).exp();
            (x.round() as u32).clamp(1, cap)
        }
    }
}

struct Guard {
    shared: Arc<Shared>,
    id: ReqId,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.shared.state.lock();
            st.sinks.remove(&self.id);
            st.engine.abort(self.id);
        }
    }
}

struct Ctx {
    kind: Kind,
    model: String,
    resp_id: String,
    created: u64,
    max_tokens: Option<u32>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn infer(shared: Arc<Shared>, kind: Kind, body: Bytes) -> Response {
    shared.counters.received.fetch_add(1, Ordering::Relaxed);
    hang_if(&shared).await;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                &shared,
                StatusCode::BAD_REQUEST,
                "body must be a JSON object",
                "invalid_json",
            )
        }
    };
    let (err_p, rl_p) = {
        let f = &shared.faults.lock().faults;
        (f.error_rate, f.rate_limit_rate)
    };
    if err_p > 0.0 || rl_p > 0.0 {
        let x: f64 = shared.rng.lock().random();
        if x < err_p {
            return error(
                &shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected engine error",
                "sim_injected_error",
            );
        }
        if x < err_p + rl_p {
            return error(
                &shared,
                StatusCode::TOO_MANY_REQUESTS,
                "injected rate limit",
                "rate_limit_exceeded",
            );
        }
    }
    let (prompt, hashes) = match prompt_of(kind, &v) {
        Ok(p) => p,
        Err(m) => return error(&shared, StatusCode::BAD_REQUEST, m, "invalid_prompt"),
    };
    let output = output_len(&shared, &v, prompt);
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ctx = Ctx {
        kind,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&shared.config.model)
            .to_string(),
        resp_id: format!(
            "{}-sim-{}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            shared.next_response.fetch_add(1, Ordering::Relaxed)
        ),
        created: unix_now(),
        max_tokens: v
            .get("max_tokens")
            .or_else(|| v.get("max_completion_tokens"))
            .and_then(Value::as_u64)
            .map(|m| m as u32),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let id = {
        let mut st = shared.state.lock();
        let arrival = st.clock.now_us();
        match st
            .engine
            .submit_at(EngineRequest::new(prompt, hashes, output), arrival)
        {
            Ok(id) => {
                st.sinks.insert(id, Sink { tx, stream });
                id
            }
            Err(e) => {
                drop(st);
                return error(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                    "context_length_exceeded",
                );
            }
        }
    };
    shared.notify.notify_one();
    let guard = Guard {
        shared: shared.clone(),
        id,
        done: false,
    };
    if stream {
        let reset_after = shared.faults.lock().faults.reset_after_chunks;
        let body = SseBody {
            rx,
            guard,
            ctx,
            include_usage,
            sent: 0,
            reset_after,
            role_sent: false,
            finished: false,
            tail: None,
        };
        let mut res = Response::new(Body::new(body));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return with_replica(&shared, res);
    }
    let mut rx = rx;
    let mut guard = guard;
    loop {
        match rx.recv().await {
            Some(Ev::Done(f)) => {
                guard.done = true;
                shared.counters.completed.fetch_add(1, Ordering::Relaxed);
                let text = token_text(id, 0, f.output_tokens);
                let finish = finish_reason(&ctx, &f);
                let choice = match kind {
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish})
                    }
                    Kind::Completion => {
                        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
                    }
                };
                let body = json!({
                    "id": ctx.resp_id,
                    "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
                    "created": ctx.created,
                    "model": ctx.model,
                    "choices": [choice],
                    "usage": usage(&f),
                });
                let mut res = Json(body).into_response();
                let h = res.headers_mut();
                h.insert("x-sim-ttft-us", HeaderValue::from(f.ttft_us()));
                h.insert("x-sim-e2e-us", HeaderValue::from(f.e2e_us()));
                return with_replica(&shared, res);
            }
            Some(Ev::Token(_)) => continue,
            None => {
                return error(
                    &shared,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "engine dropped the request",
                    "engine_reset",
                )
            }
        }
    }
}

fn finish_reason(ctx: &Ctx, f: &Finished) -> &'static str {
    if Some(f.output_tokens) == ctx.max_tokens {
        "length"
    } else {
        "stop"
    }
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.output_tokens,
        "total_tokens": f.prompt_tokens + f.output_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

const WORDS: [&str; 16] = [
    " the",
    " model",
    " says",
    " hello",
    " to",
    " a",
    " simulated",
    " world",
    " and",
    " then",
    " keeps",
    " on",
    " talking",
    " about",
    " tokens",
    ".",
];

fn word(id: ReqId, i: u32) -> &'static str {
    WORDS[((id as usize).wrapping_mul(7) + i as usize) % WORDS.len()]
}

fn token_text(id: ReqId, from: u32, to: u32) -> String {
    (from..to).map(|i| word(id, i)).collect()
}

/// The SSE body of a streamed answer: one chunk per token, a final chunk
/// with `finish_reason`, a usage chunk if asked, then `data: [DONE]`.
struct SseBody {
    rx: mpsc::UnboundedReceiver<Ev>,
    guard: Guard,
    ctx: Ctx,
    include_usage: bool,
    sent: u32,
    reset_after: Option<u32>,
    role_sent: bool,
    finished: bool,
    tail: Option<Bytes>,
}

impl SseBody {
    fn chunk(&mut self, buf: &mut BytesMut, index: u32, finish: Option<&str>) {
        let text = word(self.guard.id, index);
        let choice = match self.ctx.kind {
            Kind::Chat => {
                let delta = if self.role_sent {
                    json!({"content": text})
                } else {
                    self.role_sent = true;
                    json!({"role": "assistant", "content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        let obj = json!({
            "id": self.ctx.resp_id,
            "object": if self.ctx.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [choice],
        });
        write_event(buf, &obj);
        self.sent += 1;
    }

    fn reset_due(&self) -> bool {
        self.reset_after.is_some_and(|n| self.sent >= n)
    }
}

fn write_event(buf: &mut BytesMut, v: &Value) {
    buf.put_slice(b"data: ");
    let _ = serde_json::to_writer((&mut *buf).writer(), v);
    buf.put_slice(b"\n\n");
}

/// Error ending a stream that the replica cut on purpose.
#[derive(Debug)]
struct StreamCut(&'static str);

impl std::fmt::Display for StreamCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for StreamCut {}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(t) = this.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(t))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if this.reset_due() {
            return Poll::Ready(Some(Err(Box::new(StreamCut("injected reset")))));
        }
        let mut buf = BytesMut::new();
        // Coalesce what is ready into one frame (bounded).
        for _ in 0..256 {
            let ev = match this.rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => ev,
                Poll::Ready(None) => {
                    if buf.is_empty() {
                        return Poll::Ready(Some(Err(Box::new(StreamCut(
                            "engine dropped the request",
                        )))));
                    }
                    break;
                }
                Poll::Pending => break,
            };
            match ev {
                Ev::Token(i) => this.chunk(&mut buf, i, None),
                Ev::Done(f) => {
                    let finish = finish_reason(&this.ctx, &f);
                    this.chunk(&mut buf, f.output_tokens.saturating_sub(1), Some(finish));
                    let mut tail = BytesMut::new();
                    if this.include_usage {
                        let obj = json!({
                            "id": this.ctx.resp_id,
                            "object": if this.ctx.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                            "created": this.ctx.created,
                            "model": this.ctx.model,
                            "choices": [],
                            "usage": usage(&f),
                        });
                        write_event(&mut tail, &obj);
                    }
                    tail.put_slice(b"data: [DONE]\n\n");
                    // The engine is done with it: nothing to abort.
                    this.guard.done = true;
                    if !this.reset_due() {
                        buf.put_slice(&tail);
                        this.finished = true;
                        this.guard
                            .shared
                            .counters
                            .completed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
            if this.reset_due() {
                break;
            }
        }
        if buf.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.tail.is_none()
    }
}

async fn embeddings(State(sh): Sh, body: Bytes) -> Response {
    sh.counters.received.fetch_add(1, Ordering::Relaxed);
    hang_if(&sh).await;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                &sh,
                StatusCode::BAD_REQUEST,
                "body must be JSON",
                "invalid_json",
            )
        }
    };
    let inputs: Vec<String> = match v.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().map(|x| x.to_string()).collect(),
        _ => {
            return error(
                &sh,
                StatusCode::BAD_REQUEST,
                "`input` is required",
                "invalid_input",
            )
        }
    };
    let mut tokens = 0usize;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokens += s.chars().count().div_ceil(CHARS_PER_TOKEN);
            let h = llmgate_core::prefix::chain_hash(0, s.as_bytes());
            let emb: Vec<f64> = (0..16)
                .map(|k| (((h >> (k * 4)) & 0xf) as f64 - 7.5) / 7.5)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    sh.counters.completed.fetch_add(1, Ordering::Relaxed);
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&sh.config.model);
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    with_replica(&sh, Json(body).into_response())
}

async fn health(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    let ok = {
        let mut fs = sh.faults.lock();
        fs.health_probes += 1;
        let flap_down = fs.faults.flapping_health && fs.health_probes.is_multiple_of(2);
        let slow = fs
            .slow_until
            .is_some_and(|t| tokio::time::Instant::now() < t);
        !flap_down && !slow
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    with_replica(&sh, status.into_response())
}

async fn models(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    let m = &sh.config.model;
    Json(json!({"object": "list", "data": [{
        "id": m, "object": "model", "created": unix_now(), "owned_by": "llmgate-sim",
        "root": m, "parent": null, "max_model_len": sh.config.profile.max_model_len,
    }]}))
    .into_response()
}

async fn load(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    let st = sh.state.lock();
    let n = st.engine.num_running() + st.engine.num_waiting();
    drop(st);
    Json(json!({"server_load": n})).into_response()
}

async fn get_load(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    let st = sh.state.lock();
    let body = json!({
        "num_tokens": st.engine.kv_tokens_in_use(),
        "num_reqs": st.engine.num_running() + st.engine.num_waiting(),
        "num_waiting_reqs": st.engine.num_waiting(),
    });
    drop(st);
    Json(body).into_response()
}

async fn server_info(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    let p = sh.config.profile;
    Json(json!({
        "model_path": sh.config.model,
        "served_model_name": sh.config.model,
        "profile": p.name,
        "max_running_requests": p.max_num_seqs,
        "chunked_prefill_size": p.max_num_batched_tokens,
        "max_total_num_tokens": p.kv_tokens(),
        "page_size": p.block_size,
        "context_length": p.max_model_len,
        "speedup": sh.config.speedup,
        "version": env!("CARGO_PKG_VERSION"),
        "simulated": true,
    }))
    .into_response()
}

async fn model_info(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    Json(
        json!({"model_path": sh.config.model, "tokenizer_path": sh.config.model,
        "is_generation": true}),
    )
    .into_response()
}

async fn metrics(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    let text = crate::metrics::render(&sh);
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

async fn gpu(State(sh): Sh) -> Response {
    hang_if(&sh).await;
    Json(sh.gpu_report()).into_response()
}

async fn get_faults(State(sh): Sh) -> Response {
    Json(sh.faults.lock().faults.clone()).into_response()
}

async fn post_faults(State(sh): Sh, Json(f): Json<Faults>) -> Response {
    if f.crash {
        // Answer first, then crash.
        let sh2 = sh.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            sh2.set_faults(f);
        });
        return StatusCode::ACCEPTED.into_response();
    }
    sh.set_faults(f.clone());
    Json(f).into_response()
}

async fn counters(State(sh): Sh) -> Response {
    Json(sh.counters()).into_response()
}
