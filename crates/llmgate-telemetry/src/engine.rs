//! The load an inference engine reports about itself on `/metrics`.

use crate::prom::Sample;

/// Which engine's metric names a scrape matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineFlavor {
    /// vLLM (`vllm:*`), also what `llmgate-sim` serves by default.
    Vllm,
    /// SGLang (`sglang:*`).
    Sglang,
}

impl EngineFlavor {
    /// A short stable name (`"vllm"`, `"sglang"`), usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineFlavor::Vllm => "vllm",
            EngineFlavor::Sglang => "sglang",
        }
    }
}

/// One replica's own view of its load, summed over its engines / DP ranks.
///
/// Fields an engine does not report are 0. Counts are `f64` because the
/// exposition format carries floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineMetrics {
    /// Requests in the running batch (`vllm:num_requests_running`,
    /// `sglang:num_running_reqs`), summed over label sets.
    pub running: f64,
    /// Requests queued inside the engine (`vllm:num_requests_waiting`,
    /// `sglang:num_queue_reqs`), summed over label sets.
    pub waiting: f64,
    /// KV-cache usage 0–1 (`vllm:kv_cache_usage_perc`, or the older
    /// `vllm:gpu_cache_usage_perc`; `sglang:token_usage`). With several
    /// engines / DP ranks this is their mean (each has its own cache).
    pub kv_cache_usage: f64,
    /// Prefix-cache hits, a counter in tokens (`vllm:prefix_cache_hits_total`,
    /// older `vllm:gpu_prefix_cache_hits_total`; SGLang: `sglang:cached_tokens_total`).
    pub prefix_cache_hits: f64,
    /// Prefix-cache queries, a counter in tokens (`vllm:prefix_cache_queries_total`,
    /// older `vllm:gpu_prefix_cache_queries_total`; SGLang: `sglang:prompt_tokens_total`).
    pub prefix_cache_queries: f64,
    /// Which names matched.
    pub flavor: EngineFlavor,
}

/// Accumulates one metric over label sets.
#[derive(Default, Clone, Copy)]
struct Acc {
    sum: f64,
    n: u32,
}

impl Acc {
    fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.sum += v;
            self.n += 1;
        }
    }
    fn seen(self) -> bool {
        self.n > 0
    }
    fn mean(self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
}

#[derive(Default)]
struct Flavored {
    running: Acc,
    waiting: Acc,
    kv: Acc,
    kv_old: Acc,
    hits: Acc,
    hits_old: Acc,
    queries: Acc,
    queries_old: Acc,
}

impl Flavored {
    fn any_load(&self) -> bool {
        self.running.seen() || self.waiting.seen() || self.kv.seen() || self.kv_old.seen()
    }

    fn finish(&self, flavor: EngineFlavor) -> EngineMetrics {
        let pick = |new: Acc, old: Acc| if new.seen() { new } else { old };
        EngineMetrics {
            running: self.running.sum.max(0.0),
            waiting: self.waiting.sum.max(0.0),
            kv_cache_usage: pick(self.kv, self.kv_old).mean().clamp(0.0, 1.0),
            prefix_cache_hits: pick(self.hits, self.hits_old).sum.max(0.0),
            prefix_cache_queries: pick(self.queries, self.queries_old).sum.max(0.0),
            flavor,
        }
    }
}

impl EngineMetrics {
    /// Extracts an engine's load from scraped samples.
    ///
    /// Returns `None` when no running/waiting/KV metric of a known engine is
    /// present (e.g. the target is not an engine). If both vLLM and SGLang
    /// names are present, vLLM's win. Non-finite values are ignored.
    ///
    /// ```
    /// use llmgate_telemetry::{prom, EngineFlavor, EngineMetrics};
    /// let s = prom::parse("sglang:num_running_reqs{dp_rank=\"0\"} 2\n\
    ///                      sglang:num_running_reqs{dp_rank=\"1\"} 3\n\
    ///                      sglang:token_usage{dp_rank=\"0\"} 0.5\n");
    /// let m = EngineMetrics::from_samples(&s).unwrap();
    /// assert_eq!((m.running, m.kv_cache_usage, m.flavor), (5.0, 0.5, EngineFlavor::Sglang));
    /// ```
    pub fn from_samples(samples: &[Sample]) -> Option<EngineMetrics> {
        let mut vllm = Flavored::default();
        let mut sglang = Flavored::default();
        for s in samples {
            let v = s.value;
            match s.name.as_str() {
                "vllm:num_requests_running" => vllm.running.add(v),
                "vllm:num_requests_waiting" => vllm.waiting.add(v),
                "vllm:kv_cache_usage_perc" => vllm.kv.add(v),
                "vllm:gpu_cache_usage_perc" => vllm.kv_old.add(v),
                "vllm:prefix_cache_hits_total" => vllm.hits.add(v),
                "vllm:gpu_prefix_cache_hits_total" => vllm.hits_old.add(v),
                "vllm:prefix_cache_queries_total" => vllm.queries.add(v),
                "vllm:gpu_prefix_cache_queries_total" => vllm.queries_old.add(v),
                "sglang:num_running_reqs" => sglang.running.add(v),
                "sglang:num_queue_reqs" => sglang.waiting.add(v),
                "sglang:token_usage" => sglang.kv.add(v),
                "sglang:cached_tokens_total" => sglang.hits.add(v),
                "sglang:prompt_tokens_total" => sglang.queries.add(v),
                _ => {}
            }
        }
        if vllm.any_load() {
            Some(vllm.finish(EngineFlavor::Vllm))
        } else if sglang.any_load() {
            Some(sglang.finish(EngineFlavor::Sglang))
        } else {
            None
        }
    }

    /// Parses a Prometheus exposition and extracts the engine's load.
    ///
    /// Only `vllm:` / `sglang:` lines are parsed, and histogram buckets are
    /// skipped, so a large exposition costs little more than a scan.
    pub fn from_text(text: &str) -> Option<EngineMetrics> {
        let samples: Vec<Sample> = text
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                let name_end = l.find(['{', ' ', '\t']).unwrap_or(l.len());
                (l.starts_with("vllm:") || l.starts_with("sglang:"))
                    && !l[..name_end].ends_with("_bucket")
            })
            .filter_map(|l| crate::prom::parse_line(l).ok().flatten())
            .collect();
        Self::from_samples(&samples)
    }

    /// Requests the engine holds: running plus waiting.
    pub fn queue_depth(&self) -> f64 {
        self.running + self.waiting
    }

    /// Prefix-cache hit rate between an earlier reading and this one
    /// (Δhits / Δqueries), or `None` when no query happened in between or
    /// the counters went backwards (engine restart).
    pub fn prefix_hit_rate_since(&self, earlier: &EngineMetrics) -> Option<f64> {
        let dq = self.prefix_cache_queries - earlier.prefix_cache_queries;
        let dh = self.prefix_cache_hits - earlier.prefix_cache_hits;
        if dq > 0.0 && dh >= 0.0 {
            Some((dh / dq).clamp(0.0, 1.0))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::parse;

    #[test]
    fn vllm_sums_engines_and_averages_kv() {
        let text = "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 4\n\
                    vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 2\n\
                    vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 7\n\
                    vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 1\n\
                    vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.2\n\
                    vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.6\n\
                    vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"m\"} 30\n\
                    vllm:prefix_cache_hits_total{engine=\"1\",model_name=\"m\"} 10\n\
                    vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"m\"} 100\n\
                    vllm:time_to_first_token_seconds_sum{engine=\"0\"} 99\n";
        let m = EngineMetrics::from_samples(&parse(text)).unwrap();
        assert_eq!(m.flavor, EngineFlavor::Vllm);
        assert_eq!(m.running, 6.0);
        assert_eq!(m.waiting, 8.0);
        assert!((m.kv_cache_usage - 0.4).abs() < 1e-12);
        assert_eq!(m.prefix_cache_hits, 40.0);
        assert_eq!(m.prefix_cache_queries, 100.0);
        assert_eq!(m.queue_depth(), 14.0);
    }

    #[test]
    fn vllm_old_kv_name_used_only_when_new_absent() {
        let old = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.7\n";
        assert_eq!(EngineMetrics::from_text(old).unwrap().kv_cache_usage, 0.7);
        let both = "vllm:gpu_cache_usage_perc 0.7\nvllm:kv_cache_usage_perc 0.3\n";
        let m = EngineMetrics::from_text(both).unwrap();
        assert_eq!(m.kv_cache_usage, 0.3);
        assert_eq!(m.running, 0.0);
        let old_prefix = "vllm:num_requests_running 1\n\
                          vllm:gpu_prefix_cache_hits_total 5\n\
                          vllm:gpu_prefix_cache_queries_total 9\n";
        let m = EngineMetrics::from_text(old_prefix).unwrap();
        assert_eq!((m.prefix_cache_hits, m.prefix_cache_queries), (5.0, 9.0));
    }

    #[test]
    fn sglang_names() {
        let text = "sglang:num_running_reqs{dp_rank=\"0\"} 3\n\
                    sglang:num_running_reqs{dp_rank=\"1\"} 5\n\
                    sglang:num_queue_reqs{dp_rank=\"0\"} 2\n\
                    sglang:num_queue_reqs{dp_rank=\"1\"} 0\n\
                    sglang:token_usage{dp_rank=\"0\"} 0.5\n\
                    sglang:token_usage{dp_rank=\"1\"} 0.1\n\
                    sglang:cached_tokens_total 20\n\
                    sglang:prompt_tokens_total 80\n";
        let m = EngineMetrics::from_text(text).unwrap();
        assert_eq!(m.flavor, EngineFlavor::Sglang);
        assert_eq!((m.running, m.waiting), (8.0, 2.0));
        assert!((m.kv_cache_usage - 0.3).abs() < 1e-12);
        assert_eq!((m.prefix_cache_hits, m.prefix_cache_queries), (20.0, 80.0));
        assert_eq!(m.flavor.as_str(), "sglang");
    }

    #[test]
    fn unknown_or_non_finite_yields_none_or_clamps() {
        assert_eq!(
            EngineMetrics::from_text("process_cpu_seconds_total 3\n"),
            None
        );
        assert_eq!(EngineMetrics::from_text(""), None);
        // Only NaN: nothing was really seen.
        assert_eq!(
            EngineMetrics::from_text("vllm:num_requests_running NaN\n"),
            None
        );
        let m = EngineMetrics::from_text(
            "vllm:num_requests_running +Inf\nvllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 1.7\n",
        )
        .unwrap();
        assert_eq!(m.running, 0.0);
        assert_eq!(m.waiting, 2.0);
        assert_eq!(m.kv_cache_usage, 1.0);
    }

    #[test]
    fn hit_rate_from_counter_deltas() {
        let a = EngineMetrics::from_text(
            "vllm:num_requests_running 0\nvllm:prefix_cache_hits_total 10\nvllm:prefix_cache_queries_total 100\n",
        )
        .unwrap();
        let b = EngineMetrics::from_text(
            "vllm:num_requests_running 0\nvllm:prefix_cache_hits_total 40\nvllm:prefix_cache_queries_total 140\n",
        )
        .unwrap();
        assert_eq!(b.prefix_hit_rate_since(&a), Some(0.75));
        assert_eq!(a.prefix_hit_rate_since(&b), None);
        assert_eq!(a.prefix_hit_rate_since(&a), None);
    }
}
