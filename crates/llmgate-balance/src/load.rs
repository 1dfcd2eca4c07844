//! [`EndpointLoad`]: the `tower::load::Load` metric of an endpoint, and the
//! [`LoadView`] strategies decide on.

/// What the replica's engine reports about itself (fresh telemetry only).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EngineView {
    /// Requests the engine is running.
    pub running: f64,
    /// Requests waiting in the engine's own queue.
    pub waiting: f64,
    /// KV-cache usage, 0–1.
    pub kv_cache_usage: f64,
}

pub use llmgate_telemetry::GpuSummary;

/// A 0–1 score of how loaded a replica's GPUs are (higher is busier): the
/// busiest GPU's utilization, the fullest one's memory, the hottest one's
/// temperature (a replica spanning several GPUs is as constrained as its
/// worst one).
pub fn gpu_score(g: &GpuSummary) -> f64 {
    let util = (g.max_utilization_pct / 100.0).clamp(0.0, 1.0);
    let temp = ((g.max_temperature_c - 40.0) / 50.0).clamp(0.0, 1.0);
    0.5 * util + 0.35 * g.max_memory_fraction.clamp(0.0, 1.0) + 0.15 * temp
}

/// A point-in-time view of one endpoint's load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadView {
    /// Requests in flight from this balancer.
    pub in_flight: usize,
    /// Concurrency cap.
    pub max_concurrent: usize,
    /// Configured weight.
    pub weight: u32,
    /// Peak-EWMA end-to-end latency, seconds (0 before the first answer).
    pub latency_s: f64,
    /// Peak-EWMA time to first byte, seconds (0 before the first answer).
    /// Reported (admin API, `adaptive`); [`cost`](Self::cost) uses
    /// [`prefill_pace_s`](Self::prefill_pace_s), and this only until the
    /// first successful streamed answer.
    pub ttft_s: f64,
    /// Prompt tokens of the streamed requests this balancer has in flight
    /// there that have not had their first byte yet.
    pub pending_prefill_tokens: u64,
    /// Learned seconds of time to first byte per token of
    /// [`work_tokens`] (0 before the first streamed answer).
    pub prefill_pace_s: f64,
    /// Recent error fraction, 0–1.
    pub error_rate: f64,
    /// Engine telemetry, when fresh.
    pub engine: Option<EngineView>,
    /// GPU telemetry, when fresh.
    pub gpu: Option<GpuSummary>,
}

impl LoadView {
    /// Queue depth as the seed design scores it: requests the replica is
    /// working on or holding. With fresh engine telemetry, the larger of what
    /// the engine reports and what this balancer has in flight (other
    /// gateways may share the replica); without, in-flight only.
    pub fn queue_depth(&self) -> f64 {
        match self.engine {
            Some(e) => (e.running + e.waiting).max(self.in_flight as f64),
            None => self.in_flight as f64,
        }
    }

    /// The seed's least-loaded score: 0.7 × in-flight + 0.3 × engine queue.
    pub fn least_loaded_score(&self) -> f64 {
        let waiting = self.engine.map(|e| e.waiting).unwrap_or(0.0);
        0.7 * self.in_flight as f64 + 0.3 * waiting
    }

    /// The [`EndpointLoad`] cost: [`cost_for`](Self::cost_for) a request
    /// with an empty prompt, i.e. the endpoint's predicted time to first
    /// token, whatever the request.
    pub fn cost(&self) -> f64 {
        self.cost_for(0)
    }

    /// The predicted time to first token of a request with `prompt_tokens`
    /// to prefill, in seconds, inflated by KV-cache pressure (a nearly full
    /// cache means preemptions) and recent errors, divided by weight:
    /// `pace × work`, where
    ///
    /// - `work` ([`work_tokens`]) is the prefill the request waits for, in
    ///   tokens: the prompts this balancer has sent there that have not had
    ///   their first byte yet ([`pending_prefill_tokens`](Self::pending_prefill_tokens)),
    ///   its own prompt, and the engine's fixed cost of a step, counted as
    ///   [`STEP_TOKENS`] and growing by one more step per [`QUEUE_DOUBLING`]
    ///   requests in flight (a continuous-batching engine decodes them all
    ///   in each step);
    /// - `pace` ([`prefill_pace_s`](Self::prefill_pace_s)) is the endpoint's
    ///   learned seconds per work token: each successful streamed first
    ///   token divides its time by the work that request found. Before the
    ///   first one, the peak time to first byte ([`ttft_s`](Self::ttft_s))
    ///   stands in for one step's work, and before any answer
    ///   [`DEFAULT_TTFT_S`] does.
    ///
    /// Non-streamed requests are seen only through the requests in flight
    /// and that fallback: their first byte comes with the whole answer, so
    /// it measures decoding too and is no pace sample, and their prompts
    /// are not counted as pending prefill. An endpoint whose only answers so
    /// far were non-streamed is priced by its whole-answer time, which
    /// keeps it out of streamed traffic until that estimate decays.
    ///
    /// Both terms are fresh: pending prefill moves with every request sent
    /// and every first byte, so a slow endpoint that looks idle stops
    /// looking so as soon as a few prompts are sent to it, without waiting
    /// for their answers; and the pace of a GPU three times slower at
    /// prefill is learned as three times larger, so it is used only once
    /// the fast ones have three times as much queued.
    pub fn cost_for(&self, prompt_tokens: u32) -> f64 {
        let pace = if self.prefill_pace_s > 0.0 {
            self.prefill_pace_s
        } else if self.ttft_s > 0.0 {
            self.ttft_s / STEP_TOKENS
        } else {
            DEFAULT_TTFT_S / STEP_TOKENS
        };
        let kv = self.engine.map(|e| e.kv_cache_usage).unwrap_or(0.0);
        let kv_penalty = if kv > 0.9 {
            1.0 + (kv - 0.9) * 20.0
        } else {
            1.0
        };
        let err_penalty = 1.0 + 4.0 * self.error_rate;
        let work = work_tokens(
            self.pending_prefill_tokens as f64,
            prompt_tokens,
            self.queue_depth(),
        );
        pace * work * kv_penalty * err_penalty / f64::from(self.weight.max(1))
    }
}

/// The work a request with `prompt_tokens` waits for before its first token,
/// in prefill tokens: `ahead` (prompts queued before it), its own prompt, and
/// one step's fixed cost, [`STEP_TOKENS`] × `(1 + queue / QUEUE_DOUBLING)`
/// with `queue` requests in flight. [`LoadView::cost_for`] multiplies it by
/// the endpoint's pace, and the endpoint learns its pace by dividing each
/// first byte's time by it.
pub fn work_tokens(ahead: f64, prompt_tokens: u32, queue: f64) -> f64 {
    ahead + f64::from(prompt_tokens) + STEP_TOKENS * (1.0 + queue / QUEUE_DOUBLING)
}

/// Time to first token assumed for an endpoint that has not answered yet
/// (for a request that finds [`STEP_TOKENS`] of work).
pub const DEFAULT_TTFT_S: f64 = 0.05;

/// An engine step's fixed cost, in prefill tokens: the first token of an
/// empty prompt on an idle endpoint takes about as long as this many
/// prompt tokens (in the simulator's profiles, between 200 and 500).
pub const STEP_TOKENS: f64 = 256.0;

/// Requests in flight that double the step cost in [`work_tokens`]: each
/// is one more decode in every step.
pub const QUEUE_DOUBLING: f64 = 300.0;

/// The `Load` metric of a balanced endpoint: its [`LoadView::cost`], a
/// predicted time to first token in seconds.
/// Ordered by cost; NaN never occurs (all inputs are finite).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct EndpointLoad(pub f64);

#[cfg(test)]
mod tests {
    use super::*;

    fn view(in_flight: usize) -> LoadView {
        LoadView {
            in_flight,
            max_concurrent: 100,
            weight: 1,
            ..Default::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cost_grows_with_queue_kv_errors_and_falls_with_weight() {
        assert!(view(4).cost() > view(1).cost());
        let mut engine = view(1);
        engine.engine = Some(EngineView {
            running: 10.0,
            waiting: 5.0,
            kv_cache_usage: 0.2,
        });
        assert!(engine.cost() > view(1).cost(), "engine queue counts");
        let mut full_kv = engine.clone();
        full_kv.engine.as_mut().unwrap().kv_cache_usage = 0.99;
        assert!(full_kv.cost() > engine.cost());
        let mut erring = view(1);
        erring.error_rate = 0.5;
        assert!(erring.cost() > view(1).cost());
        let mut heavy = view(4);
        heavy.weight = 4;
        assert!(heavy.cost() < view(4).cost());
        let mut pending = view(1);
        pending.pending_prefill_tokens = 100;
        assert!(pending.cost() > view(1).cost(), "queued prefill counts");
    }

    #[test]
    fn cost_is_pace_times_work() {
        // No answer yet: the default pace, DEFAULT_TTFT_S for a step.
        assert!(close(view(0).cost(), DEFAULT_TTFT_S));
        // Only non-streamed answers yet: their peak time stands in for a
        // step; a learned pace takes over from it.
        let mut unstreamed = view(0);
        unstreamed.ttft_s = 2.0;
        assert!(close(unstreamed.cost_for(256), 4.0));
        unstreamed.prefill_pace_s = 1e-4;
        assert!(close(unstreamed.cost_for(256), 1e-4 * 512.0));
        let mut v = view(150);
        v.prefill_pace_s = 20e-6;
        v.pending_prefill_tokens = 1000;
        // 1000 pending + 500 own + 256 × (1 + 150 / 300)
        assert!(close(work_tokens(1000.0, 500, 150.0), 1884.0));
        assert!(
            close(v.cost_for(500), 20e-6 * 1884.0),
            "{}",
            v.cost_for(500)
        );
        assert!(close(v.cost(), v.cost_for(0)));
        // Engine-reported queues count when larger than this balancer's.
        v.engine = Some(EngineView {
            running: 280.0,
            waiting: 20.0,
            kv_cache_usage: 0.5,
        });
        assert!(close(v.cost(), 20e-6 * (1000.0 + 2.0 * STEP_TOKENS)));
    }

    /// An H100-like endpoint (20 µs a token) and an A100-like one, three
    /// times slower.
    fn fast_and_slow() -> (LoadView, LoadView) {
        let mut fast = view(0);
        fast.prefill_pace_s = 20e-6;
        let mut slow = view(0);
        slow.prefill_pace_s = 60e-6;
        (fast, slow)
    }

    #[test]
    fn a_slower_pace_is_taken_only_for_less_queued_work() {
        let (mut fast, mut slow) = fast_and_slow();
        // Idle both: the fast one, for any prompt.
        assert!(fast.cost_for(50) < slow.cost_for(50));
        assert!(fast.cost_for(1000) < slow.cost_for(1000));
        // A few prompts queued on the fast one: still the fast one.
        fast.pending_prefill_tokens = 600;
        fast.in_flight = 40;
        assert!(fast.cost_for(200) < slow.cost_for(200));
        // Past three times the slow one's work, the slow one.
        fast.pending_prefill_tokens = 1500;
        assert!(slow.cost_for(200) < fast.cost_for(200));
        // ...but not for a long prompt, whose own prefill is three times
        // longer there.
        assert!(fast.cost_for(1024) < slow.cost_for(1024));
        // Prompts sent to the slow one count at once, before any answer:
        // a burst does not all go there.
        slow.pending_prefill_tokens = 400;
        assert!(fast.cost_for(200) < slow.cost_for(200));
    }
}
