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
    pub ttft_s: f64,
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

    /// The [`EndpointLoad`] cost, in seconds-like units: the endpoint's
    /// time to first token, `(1 + queue / QUEUE_DOUBLING) × ttft ×
    /// (ttft / DEFAULT_TTFT_S)`, inflated by KV-cache pressure (a nearly full
    /// cache means preemptions) and recent errors, divided by weight.
    ///
    /// `ttft` is the peak-EWMA time to first byte ([`DEFAULT_TTFT_S`] before
    /// the first answer): a slowly decaying estimate of the endpoint's recent
    /// worst first-token time, i.e. how slow it is. Two things differ from a
    /// serial-server `(queue + 1) × ttft`:
    ///
    /// - a continuous-batching engine serves its queue together, so a
    ///   request more in flight lengthens the next first token by a step's
    ///   fraction, not by a whole TTFT: the queue counts `1 / QUEUE_DOUBLING`
    ///   per request;
    /// - the p99 first token of a fleet is set by its slowest GPUs, whose
    ///   tail (long prefills) stays long however idle they are: the TTFT
    ///   factor is squared (relative to the 50 ms reference), so a replica
    ///   three times slower is used only once the fast ones hold about
    ///   `8 × QUEUE_DOUBLING` requests more than it: as overflow.
    pub fn cost(&self) -> f64 {
        self.cost_for(0)
    }

    /// [`cost`](Self::cost) for a request with `prompt_tokens` to prefill:
    /// plus the request's own prefill at this endpoint's pace, `ttft ×
    /// prompt_tokens / PREFILL_REFERENCE_TOKENS`, so a long prompt leans
    /// harder towards a fast replica than a short one does (a slow GPU's
    /// first-token tail is its long prefills).
    pub fn cost_for(&self, prompt_tokens: u32) -> f64 {
        let ttft = if self.ttft_s > 0.0 {
            self.ttft_s
        } else {
            DEFAULT_TTFT_S
        };
        let kv = self.engine.map(|e| e.kv_cache_usage).unwrap_or(0.0);
        let kv_penalty = if kv > 0.9 {
            1.0 + (kv - 0.9) * 20.0
        } else {
            1.0
        };
        let err_penalty = 1.0 + 4.0 * self.error_rate;
        let queue = 1.0 + self.queue_depth() / QUEUE_DOUBLING;
        let own_prefill = ttft * f64::from(prompt_tokens) / PREFILL_REFERENCE_TOKENS;
        (queue * ttft * (ttft / DEFAULT_TTFT_S) + own_prefill) * kv_penalty * err_penalty
            / f64::from(self.weight.max(1))
    }
}

/// Time to first token assumed for an endpoint that has not answered yet.
pub const DEFAULT_TTFT_S: f64 = 0.05;

/// A prompt this long adds one TTFT of the endpoint to
/// [`LoadView::cost_for`] (its own prefill, at the endpoint's speed).
pub const PREFILL_REFERENCE_TOKENS: f64 = 1000.0;

/// Requests in flight that double an endpoint's [`LoadView::cost`].
pub const QUEUE_DOUBLING: f64 = 10.0;

/// The `Load` metric of a balanced endpoint: its [`LoadView::cost`].
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
    }

    #[test]
    fn slower_first_tokens_cost_more_at_equal_queues() {
        let mut fast = view(3);
        fast.ttft_s = 0.02;
        let mut slow = view(3);
        slow.ttft_s = 0.06;
        assert!(slow.cost() > fast.cost());
        // No answer yet: the default stands in.
        assert_eq!(view(0).cost(), DEFAULT_TTFT_S);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn queue_counts_a_tenth_and_a_slow_replica_is_overflow_only() {
        // (1 + q / 10) × ttft × ttft / 50 ms
        let mut fast = view(10);
        fast.ttft_s = 0.02;
        assert!(close(fast.cost(), 2.0 * 0.02 * 0.4), "{}", fast.cost());
        let mut idle_slow = view(0);
        idle_slow.ttft_s = 0.06;
        assert!(close(idle_slow.cost(), 0.06 * 1.2), "{}", idle_slow.cost());
        // A replica three times slower costs nine times more: a fast one
        // with a few requests in flight (which `(queue + 1) × ttft` sent to
        // the idle slow one) still wins...
        fast.in_flight = 3;
        assert!(fast.cost() < idle_slow.cost());
        fast.in_flight = 70;
        assert!(fast.cost() < idle_slow.cost());
        // ...until it holds about eighty more: the slow one takes overflow.
        fast.in_flight = 90;
        assert!(fast.cost() > idle_slow.cost());
        // Engine-reported queues count the same way.
        let mut engine = view(0);
        engine.ttft_s = 0.02;
        engine.engine = Some(EngineView {
            running: 85.0,
            waiting: 5.0,
            kv_cache_usage: 0.5,
        });
        assert!(close(engine.cost(), fast.cost()));
    }

    #[test]
    fn a_long_prompt_leans_harder_towards_the_fast_replica() {
        let mut fast = view(85);
        fast.ttft_s = 0.02;
        let mut slow = view(0);
        slow.ttft_s = 0.06;
        // Past the overflow point a short prompt goes to the slow replica...
        assert!(slow.cost_for(50) < fast.cost_for(50));
        // ...a long one stays on the fast one: its own prefill costs
        // ttft × tokens / 1000 there, three times more on the slow one.
        assert!(fast.cost_for(2000) < slow.cost_for(2000));
        assert!(close(
            slow.cost_for(2000),
            slow.cost() + 0.06 * 2000.0 / PREFILL_REFERENCE_TOKENS
        ));
        assert!(close(fast.cost_for(0), fast.cost()));
    }
}
