//! Prometheus text for `/metrics`, with vLLM's or SGLang's names.
//!
//! Latency histograms are in **simulated** seconds (virtual clock).

use std::fmt::Write;

use crate::config::MetricsFlavor;
use crate::engine::{Histogram, LATENCY_BUCKETS_S};
use crate::replica::Shared;

fn gauge(out: &mut String, name: &str, labels: &str, v: f64) {
    let _ = writeln!(out, "# TYPE {name} gauge\n{name}{{{labels}}} {v}");
}

fn counter(out: &mut String, name: &str, labels: &str, v: u64) {
    let _ = writeln!(out, "# TYPE {name} counter\n{name}{{{labels}}} {v}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cum = 0u64;
    for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
        cum += h.buckets[i];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
    }
    cum += h.buckets[LATENCY_BUCKETS_S.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

pub(crate) fn render(sh: &Shared) -> String {
    let p = sh.config.profile;
    let (running, waiting, kv, kv_tokens, stats) = {
        let st = sh.state.lock();
        (
            st.engine.num_running(),
            st.engine.num_waiting(),
            st.engine.kv_usage(),
            st.engine.kv_blocks_used() as u64 * u64::from(p.block_size),
            st.engine.stats().clone(),
        )
    };
    let model = &sh.config.model;
    let mut out = String::with_capacity(4096);
    match sh.config.flavor {
        MetricsFlavor::Vllm => {
            let l = format!("model_name=\"{model}\",engine=\"0\"");
            gauge(&mut out, "vllm:num_requests_running", &l, running as f64);
            gauge(&mut out, "vllm:num_requests_waiting", &l, waiting as f64);
            gauge(&mut out, "vllm:kv_cache_usage_perc", &l, kv);
            counter(
                &mut out,
                "vllm:prefix_cache_queries_total",
                &l,
                stats.prefix_queries,
            );
            counter(
                &mut out,
                "vllm:prefix_cache_hits_total",
                &l,
                stats.prefix_hits,
            );
            counter(
                &mut out,
                "vllm:num_preemptions_total",
                &l,
                stats.preemptions,
            );
            counter(
                &mut out,
                "vllm:prompt_tokens_total",
                &l,
                stats.prompt_tokens,
            );
            counter(
                &mut out,
                "vllm:generation_tokens_total",
                &l,
                stats.generation_tokens,
            );
            let _ = writeln!(
                out,
                "# TYPE vllm:request_success_total counter\nvllm:request_success_total{{{l},finished_reason=\"length\"}} {}",
                stats.finished
            );
            histogram(
                &mut out,
                "vllm:time_to_first_token_seconds",
                &l,
                &stats.ttft,
            );
            histogram(&mut out, "vllm:e2e_request_latency_seconds", &l, &stats.e2e);
            let _ = writeln!(
                out,
                "# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{{l},block_size=\"{}\",num_gpu_blocks=\"{}\"}} 1",
                p.block_size, p.num_gpu_blocks
            );
        }
        MetricsFlavor::Sglang => {
            let l = format!("model_name=\"{model}\"");
            gauge(&mut out, "sglang:num_running_reqs", &l, running as f64);
            gauge(&mut out, "sglang:num_queue_reqs", &l, waiting as f64);
            gauge(&mut out, "sglang:token_usage", &l, kv);
            gauge(&mut out, "sglang:num_used_tokens", &l, kv_tokens as f64);
            gauge(
                &mut out,
                "sglang:max_total_num_tokens",
                &l,
                p.kv_tokens() as f64,
            );
            let hit = if stats.prefix_queries == 0 {
                0.0
            } else {
                stats.prefix_hits as f64 / stats.prefix_queries as f64
            };
            gauge(&mut out, "sglang:cache_hit_rate", &l, hit);
            counter(
                &mut out,
                "sglang:cached_tokens_total",
                &l,
                stats.prefix_hits,
            );
            counter(
                &mut out,
                "sglang:prompt_tokens_total",
                &l,
                stats.prompt_tokens,
            );
            counter(
                &mut out,
                "sglang:generation_tokens_total",
                &l,
                stats.generation_tokens,
            );
            counter(
                &mut out,
                "sglang:num_retracted_reqs_total",
                &l,
                stats.preemptions,
            );
            histogram(
                &mut out,
                "sglang:time_to_first_token_seconds",
                &l,
                &stats.ttft,
            );
            histogram(
                &mut out,
                "sglang:e2e_request_latency_seconds",
                &l,
                &stats.e2e,
            );
            let _ = writeln!(
                out,
                "# TYPE sglang:cache_config_info gauge\nsglang:cache_config_info{{{l},page_size=\"{}\",num_pages=\"{}\"}} 1",
                p.block_size, p.num_gpu_blocks
            );
        }
    }
    out
}
