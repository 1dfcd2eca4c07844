//! Seeded workload generators: timestamped OpenAI requests with priority,
//! client and session keys.
//!
//! Prompts are pseudo-text of exactly `4 × tokens` characters (one token
//! stand-in is 3 letters and a space; see [`CHARS_PER_TOKEN`]), so the
//! simulator counts the intended prompt tokens and shared prefixes hash to
//! the same KV blocks. Every request sets `max_tokens` to its sampled output
//! length; the simulator generates exactly that many tokens. Timestamps are
//! in **simulated** time: replay them against a replica with speedup `s`
//! by dividing them by `s` ([`crate::load::LoadOptions::time_scale`]).
//!
//! | name | arrivals (default rate) | prompt tokens | output tokens |
//! |---|---|---|---|
//! | `chat-short` | Poisson (20/s) | LN(4.8, 1.2) ≤ 1024, median ≈ 122 | LN(5.05, 0.9) ≤ 1024, median ≈ 156 |
//! | `azure-conv` | Gamma k = 0.8 (5.5/s) | LN(6.63, 0.99) ≤ 8192, median ≈ 758, mean ≈ 1,230 | LN(5.02, 0.86) ≤ 2048, median ≈ 151, mean ≈ 219 |
//! | `azure-code-burst` | on/off MMPP: 2.5/s, 10× for 10–30 s bursts after Exp(60 s) calm | LN(7.0, 1.36) ≤ 7,500, median ≈ 1,097 | LN(2.8, 0.85), median ≈ 16 |
//! | `tenant-prefix` | Poisson (10/s) | 30 tenants × 6,000-token system prompt + 1,200-token question = 7,200 | LN(5, 0.8) ≤ 1024, median ≈ 148 |
//! | `gsp` | Poisson (16/s) | 64 groups × 16 prompts: 2,048 shared + 128 = 2,176 | 256 |
//! | `multiturn-sessions` | sessions Poisson (1/s), Geometric(mean 4) turns, think time Exp(10 s) | history + LN(4.8, 1.2) ≤ 1024 new, optional 1–2k system prompt | LN(5.05, 0.9) ≤ 1024 |
//!
//! `tenant-prefix` is sized for the small default fleet: 30 × 6,000 tokens
//! is about 70 % of four `small` replicas' KV (4 × 65,536 tokens), so no
//! replica can hold every prefix.
//!
//! ```
//! use llmgate_sim::workload::{generate, WorkloadOptions};
//! let reqs = generate("gsp", 7, &WorkloadOptions { requests: 32, ..Default::default() }).unwrap();
//! assert_eq!(reqs.len(), 32);
//! assert_eq!(reqs[0].prompt_tokens, 2048 + 128);
//! assert!(reqs.windows(2).all(|w| w[0].at <= w[1].at));
//! ```

use std::fmt;
use std::time::Duration;

use llmgate_core::Priority;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::engine::std_normal;
pub use crate::http::CHARS_PER_TOKEN;

/// Names of the workloads [`generate`] knows.
pub const NAMES: [&str; 6] = [
    "chat-short",
    "azure-conv",
    "azure-code-burst",
    "tenant-prefix",
    "gsp",
    "multiturn-sessions",
];

/// One request of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRequest {
    /// Arrival time from the start of the run, in simulated time.
    pub at: Duration,
    /// Path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// Priority (sent as `x-priority`).
    pub priority: Priority,
    /// Client key (sent as `x-client-id`).
    pub client: String,
    /// Session key (sent as `x-session-id`).
    pub session: Option<String>,
    /// Whether the body asks for streaming.
    pub stream: bool,
    /// Prompt tokens as the simulator counts them.
    pub prompt_tokens: u32,
    /// `max_tokens` of the body (the output length).
    pub max_tokens: u32,
}

/// Options shared by the generators.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadOptions {
    /// Number of requests to produce.
    pub requests: usize,
    /// Arrival rate in requests (sessions for `multiturn-sessions`) per
    /// simulated second; `None` = the workload's default.
    pub rate: Option<f64>,
    /// `model` of every body.
    pub model: String,
    /// Ask for SSE streaming (with `stream_options.include_usage`).
    pub stream: bool,
    /// Zipf exponent of group popularity for `gsp` and `tenant-prefix`
    /// (`None`: uniform).
    pub zipf_alpha: Option<f64>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            requests: 500,
            rate: None,
            model: "llama-3-8b".to_string(),
            stream: true,
            zipf_alpha: None,
        }
    }
}

/// A workload name [`generate`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWorkload(pub String);

impl fmt::Display for UnknownWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown workload {:?} (known: {})",
            self.0,
            NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownWorkload {}

/// Generates `opts.requests` requests of workload `name`, deterministic for
/// `seed`, sorted by arrival time.
pub fn generate(
    name: &str,
    seed: u64,
    opts: &WorkloadOptions,
) -> Result<Vec<WorkloadRequest>, UnknownWorkload> {
    let mut g = Gen {
        rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
        opts,
        seed,
    };
    let mut out = match name {
        "chat-short" => g.independent(20.0, Arrivals::Poisson, (4.8, 1.2, 1024), (5.05, 0.9, 1024)),
        "azure-conv" => g.independent(
            5.5,
            Arrivals::Gamma(0.8),
            (6.63, 0.99, 8192),
            (5.02, 0.86, 2048),
        ),
        "azure-code-burst" => {
            g.independent(2.5, Arrivals::OnOff, (7.0, 1.36, 7500), (2.8, 0.85, 1024))
        }
        "tenant-prefix" => g.shared_prefix(10.0, 30, 6000, 1200, None),
        "gsp" => g.shared_prefix(16.0, 64, 2048, 128, Some(256)),
        "multiturn-sessions" => g.sessions(1.0),
        other => return Err(UnknownWorkload(other.to_string())),
    };
    out.sort_by_key(|r| r.at);
    out.truncate(opts.requests);
    Ok(out)
}

#[derive(Clone, Copy)]
enum Arrivals {
    Poisson,
    Gamma(f64),
    OnOff,
}

struct Gen<'a> {
    rng: SmallRng,
    opts: &'a WorkloadOptions,
    seed: u64,
}

/// Pseudo-text of exactly `tokens` token stand-ins (4 characters each),
/// deterministic for `key`.
pub fn pseudo_text(key: u64, tokens: u32) -> String {
    let mut rng = SmallRng::seed_from_u64(key);
    let mut s = String::with_capacity(tokens as usize * CHARS_PER_TOKEN);
    for _ in 0..tokens {
        for _ in 0..3 {
            s.push(char::from(b'a' + rng.random_range(0..26u8)));
        }
        s.push(' ');
    }
    s
}

impl Gen<'_> {
    fn lognormal(&mut self, mu: f64, sigma: f64, cap: u32) -> u32 {
        let x = (mu + sigma * std_normal(&mut self.rng)).exp();
        (x.round() as u32).clamp(1, cap)
    }

    fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.rng.random::<f64>()).ln() / rate
    }

    fn gamma(&mut self, k: f64, theta: f64) -> f64 {
        // Marsaglia–Tsang, with the k < 1 boost.
        if k < 1.0 {
            let u: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
            return self.gamma(k + 1.0, theta) * u.powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = std_normal(&mut self.rng);
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * theta;
            }
        }
    }

    fn priority(&mut self) -> Priority {
        match self.rng.random_range(0..10) {
            0 => Priority::High,
            1 => Priority::Low,
            _ => Priority::Normal,
        }
    }

    fn body(&self, messages: Value, max_tokens: u32) -> Value {
        let mut b = json!({
            "model": self.opts.model,
            "messages": messages,
            "max_tokens": max_tokens,
        });
        if self.opts.stream {
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        at: f64,
        messages: Value,
        prompt_tokens: u32,
        max_tokens: u32,
        priority: Priority,
        client: String,
        session: Option<String>,
    ) -> WorkloadRequest {
        WorkloadRequest {
            at: Duration::from_secs_f64(at.max(0.0)),
            path: "/v1/chat/completions".to_string(),
            body: self.body(messages, max_tokens),
            priority,
            client,
            session,
            stream: self.opts.stream,
            prompt_tokens,
            max_tokens,
        }
    }

    fn independent(
        &mut self,
        default_rate: f64,
        arrivals: Arrivals,
        input: (f64, f64, u32),
        output: (f64, f64, u32),
    ) -> Vec<WorkloadRequest> {
        let rate = self.opts.rate.unwrap_or(default_rate);
        let mut t = 0.0;
        // On/off state: (bursting, state end time).
        let mut burst = (false, self.exp(1.0 / 60.0));
        let mut out = Vec::with_capacity(self.opts.requests);
        for i in 0..self.opts.requests {
            let gap = match arrivals {
                Arrivals::Poisson => self.exp(rate),
                Arrivals::Gamma(k) => self.gamma(k, 1.0 / (k * rate)),
                Arrivals::OnOff => loop {
                    let r = if burst.0 { rate * 10.0 } else { rate };
                    let gap = self.exp(r);
                    if t + gap <= burst.1 {
                        break gap;
                    }
                    // Memoryless: jump to the switch and draw again.
                    t = burst.1;
                    let next = if burst.0 {
                        self.exp(1.0 / 60.0)
                    } else {
                        self.rng.random_range(10.0..30.0)
                    };
                    burst = (!burst.0, t + next);
                },
            };
            t += gap;
            let p = self.lognormal(input.0, input.1, input.2);
            let o = self.lognormal(output.0, output.1, output.2);
            let key = self.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            let msgs = json!([{"role": "user", "content": pseudo_text(key, p)}]);
            let prio = self.priority();
            let client = format!("client-{}", self.rng.random_range(0..16));
            out.push(self.request(t, msgs, p, o, prio, client, None));
        }
        out
    }

    fn pick_group(&mut self, groups: usize, cdf: &Option<Vec<f64>>) -> usize {
        match cdf {
            Some(c) => {
                let u: f64 = self.rng.random();
                c.partition_point(|&x| x < u).min(groups - 1)
            }
            None => self.rng.random_range(0..groups),
        }
    }

    fn shared_prefix(
        &mut self,
        default_rate: f64,
        groups: usize,
        prefix: u32,
        question: u32,
        fixed_output: Option<u32>,
    ) -> Vec<WorkloadRequest> {
        let rate = self.opts.rate.unwrap_or(default_rate);
        let cdf = self.opts.zipf_alpha.map(|a| {
            let w: Vec<f64> = (1..=groups).map(|k| 1.0 / (k as f64).powf(a)).collect();
            let total: f64 = w.iter().sum();
            let mut acc = 0.0;
            w.iter()
                .map(|x| {
                    acc += x / total;
                    acc
                })
                .collect::<Vec<_>>()
        });
        let prefixes: Vec<String> = (0..groups)
            .map(|g| pseudo_text(self.seed ^ (0xabcd_0000 + g as u64), prefix))
            .collect();
        let mut t = 0.0;
        let mut out = Vec::with_capacity(self.opts.requests);
        for i in 0..self.opts.requests {
            t += self.exp(rate);
            let g = self.pick_group(groups, &cdf);
            let user = self.rng.random_range(0..5);
            let key = self.seed.wrapping_mul(7_777_777).wrapping_add(i as u64);
            let msgs = json!([
                {"role": "system", "content": prefixes[g]},
                {"role": "user", "content": pseudo_text(key, question)},
            ]);
            let o = match fixed_output {
                Some(o) => o,
                None => self.lognormal(5.0, 0.8, 1024),
            };
            let prio = if g.is_multiple_of(5) {
                Priority::High
            } else {
                Priority::Normal
            };
            let client = format!("tenant-{g}");
            let session = Some(format!("tenant-{g}-user-{user}"));
            out.push(self.request(t, msgs, prefix + question, o, prio, client, session));
        }
        out
    }

    fn sessions(&mut self, default_rate: f64) -> Vec<WorkloadRequest> {
        let rate = self.opts.rate.unwrap_or(default_rate);
        let mut out = Vec::with_capacity(self.opts.requests);
        let mut t0 = 0.0;
        let mut s = 0u64;
        while out.len() < self.opts.requests {
            t0 += self.exp(rate);
            // Geometric with mean 4 on {1, 2, …}.
            let u: f64 = 1.0 - self.rng.random::<f64>();
            let turns = 1 + (u.ln() / (0.75f64).ln()).floor() as u32;
            let mut messages: Vec<Value> = Vec::new();
            let mut prompt = 0u32;
            if self.rng.random_bool(0.5) {
                let sys = self.rng.random_range(1000..=2000);
                messages.push(
                    json!({"role": "system", "content": pseudo_text(self.seed ^ s ^ 0x5151, sys)}),
                );
                prompt += sys;
            }
            let client = format!("client-{}", s % 16);
            let session = format!("session-{s}");
            let mut t = t0;
            for turn in 0..turns.min(32) {
                let new = self.lognormal(4.8, 1.2, 1024);
                let key = self
                    .seed
                    .wrapping_mul(31)
                    .wrapping_add(s << 8)
                    .wrapping_add(u64::from(turn));
                messages.push(json!({"role": "user", "content": pseudo_text(key, new)}));
                prompt += new;
                let o = self.lognormal(5.05, 0.9, 1024);
                out.push(self.request(
                    t,
                    Value::Array(messages.clone()),
                    prompt,
                    o,
                    Priority::Normal,
                    client.clone(),
                    Some(session.clone()),
                ));
                messages
                    .push(json!({"role": "assistant", "content": pseudo_text(key ^ 0xa5a5, o)}));
                prompt += o;
                t += self.exp(0.1);
            }
            s += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    fn within(got: f64, want: f64, tol: f64) -> bool {
        (got / want - 1.0).abs() < tol
    }

    fn gen(name: &str, n: usize) -> Vec<WorkloadRequest> {
        generate(
            name,
            42,
            &WorkloadOptions {
                requests: n,
                stream: false,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn deterministic_per_seed_and_sorted() {
        for name in NAMES {
            let o = WorkloadOptions {
                requests: 50,
                ..Default::default()
            };
            let a = generate(name, 1, &o).unwrap();
            let b = generate(name, 1, &o).unwrap();
            let c = generate(name, 2, &o).unwrap();
            assert_eq!(a, b, "{name}");
            assert_ne!(a, c, "{name}");
            assert_eq!(a.len(), 50, "{name}");
            assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "{name}");
            for r in &a {
                let msgs = r.body["messages"].as_array().unwrap();
                let chars: usize = msgs
                    .iter()
                    .map(|m| m["content"].as_str().unwrap().len())
                    .sum();
                assert_eq!(chars, r.prompt_tokens as usize * 4, "{name}");
            }
        }
        assert!(generate("nope", 1, &WorkloadOptions::default()).is_err());
    }

    #[test]
    fn chat_short_distribution() {
        let r = gen("chat-short", 4000);
        let p: Vec<f64> = r.iter().map(|x| f64::from(x.prompt_tokens)).collect();
        let o: Vec<f64> = r.iter().map(|x| f64::from(x.max_tokens)).collect();
        assert!(within(median(p), 121.5, 0.1));
        assert!(within(median(o), 156.0, 0.1));
        let dur = r.last().unwrap().at.as_secs_f64();
        assert!(within(4000.0 / dur, 20.0, 0.1), "rate {}", 4000.0 / dur);
    }

    #[test]
    fn azure_conv_distribution() {
        let r = gen("azure-conv", 4000);
        let p: Vec<f64> = r.iter().map(|x| f64::from(x.prompt_tokens)).collect();
        let o: Vec<f64> = r.iter().map(|x| f64::from(x.max_tokens)).collect();
        assert!(within(median(p.clone()), 757.9, 0.1));
        assert!(within(mean(&p), 1236.0, 0.12), "{}", mean(&p));
        assert!(within(median(o.clone()), 151.4, 0.1));
        assert!(within(mean(&o), 219.0, 0.12), "{}", mean(&o));
        let dur = r.last().unwrap().at.as_secs_f64();
        assert!(within(4000.0 / dur, 5.5, 0.15));
    }

    #[test]
    fn azure_code_burst_distribution_and_burstiness() {
        let r = gen("azure-code-burst", 4000);
        let p: Vec<f64> = r.iter().map(|x| f64::from(x.prompt_tokens)).collect();
        let o: Vec<f64> = r.iter().map(|x| f64::from(x.max_tokens)).collect();
        assert!(within(median(p), 1097.0, 0.1));
        assert!(within(median(o), 16.4, 0.15));
        // Bursty: inter-arrival CV well above Poisson's 1.
        let gaps: Vec<f64> = r
            .windows(2)
            .map(|w| (w[1].at - w[0].at).as_secs_f64())
            .collect();
        let m = mean(&gaps);
        let sd = (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!(sd / m > 1.3, "cv {}", sd / m);
    }

    #[test]
    fn shared_prefix_workloads() {
        let r = gen("tenant-prefix", 2000);
        assert!(r.iter().all(|x| x.prompt_tokens == 7200));
        let o: Vec<f64> = r.iter().map(|x| f64::from(x.max_tokens)).collect();
        assert!(within(median(o), 148.4, 0.1));
        let tenants: std::collections::HashSet<_> = r.iter().map(|x| x.client.clone()).collect();
        assert_eq!(tenants.len(), 30);
        // Same tenant, same system prompt.
        let same: Vec<_> = r.iter().filter(|x| x.client == "tenant-3").collect();
        assert_eq!(
            same[0].body["messages"][0]["content"],
            same[1].body["messages"][0]["content"]
        );
        let g = gen("gsp", 1024);
        assert!(g
            .iter()
            .all(|x| x.prompt_tokens == 2176 && x.max_tokens == 256));
        let groups: std::collections::HashSet<_> = g.iter().map(|x| x.client.clone()).collect();
        assert!(groups.len() > 60);
    }

    #[test]
    fn multiturn_sessions_grow_and_average_four_turns() {
        let r = gen("multiturn-sessions", 4000);
        let mut per: std::collections::HashMap<String, Vec<&WorkloadRequest>> = Default::default();
        for x in &r {
            per.entry(x.session.clone().unwrap()).or_default().push(x);
        }
        // Sessions cut by the request cap are few; the mean is still ≈ 4.
        let turns: Vec<f64> = per.values().map(|v| v.len() as f64).collect();
        assert!(within(mean(&turns), 4.0, 0.12), "{}", mean(&turns));
        for v in per.values() {
            for w in v.windows(2) {
                assert!(w[1].prompt_tokens > w[0].prompt_tokens);
                let a = w[0].body["messages"].as_array().unwrap();
                let b = w[1].body["messages"].as_array().unwrap();
                assert_eq!(&b[..a.len()], &a[..], "each turn extends the last prompt");
            }
        }
    }
}
