//! A hyper client to a flaky endpoint, wrapped only in the circuit breaker.
//!
//! A simulated replica (`llmgate-sim`) fails 80% of requests with 500 for
//! the first phase, then heals. The breaker (fail-fast mode) opens after
//! three failures in a row, refuses calls during its cool-down without
//! touching the network, lets probes through when half-open, and closes
//! after two successful probes. Every state transition is printed.
//!
//! ```text
//! cargo run --example breaker_alone
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_breaker::{BreakerOpen, BreakerState, CircuitBreakerLayer};
use llmgate_sim::{Faults, Profile, SimConfig, SimReplica};
use tower::{BoxError, Layer, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let replica = SimReplica::spawn(
        SimConfig::default()
            .with_profile(Profile::SMALL)
            .with_speedup(100.0),
    )?;
    replica.set_faults(Faults {
        error_rate: 0.8,
        ..Faults::default()
    });
    let url = format!("{}/v1/completions", replica.url());

    let breaker = CircuitBreakerLayer::builder()
        .name("sim-0")
        .consecutive_failures(3)
        .cool_down(Duration::from_millis(400))
        .cool_down_growth(1.5)
        .cool_down_cap(Duration::from_secs(1))
        .half_open_successes(2)
        .build();
    let handle = breaker.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = breaker.layer(client);

    println!("breaker {} starts {}", handle.name(), handle.state());
    let mut seen_transitions = 0;
    let (mut ok, mut failed, mut refused) = (0u32, 0u32, 0u32);
    for i in 0..60u32 {
        if i == 30 {
            println!("-- request {i}: the endpoint heals --");
            replica.set_faults(Faults::default());
        }
        let req = Request::post(url.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"sim","prompt":"Say hello","max_tokens":4}"#,
            )))?;
        match svc.clone().oneshot(req).await {
            Ok(res) => {
                let status = res.status();
                // The outcome follows the body: read it to the end.
                res.into_body().collect().await?;
                if status.is_success() {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            Err(e) => match e.downcast_ref::<BreakerOpen>() {
                Some(open) => {
                    refused += 1;
                    if refused % 5 == 1 {
                        println!(
                            "   request {i}: refused, breaker {} (retry in {:?})",
                            open.state(),
                            open.retry_after()
                        );
                    }
                }
                None => {
                    failed += 1;
                    println!("   request {i}: transport error: {e}");
                }
            },
        }
        let snap = handle.snapshot();
        if snap.transitions_total != seen_transitions {
            let skipped = snap.transitions_total - seen_transitions > 1;
            seen_transitions = snap.transitions_total;
            if let Some(t) = snap.last_transition {
                if skipped && t.from == BreakerState::HalfOpen {
                    // The cool-down ended and the probe failed within one call.
                    println!("request {i:>2}: open -> half_open (probe)");
                }
                println!(
                    "request {i:>2}: {} -> {} (trips {}, failures so far {})",
                    t.from, t.to, snap.trips, snap.failures_total
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    let snap = handle.snapshot();
    println!(
        "done: {ok} ok, {failed} failed upstream, {refused} refused by the breaker; \
         final state {}, {} transitions",
        snap.state, snap.transitions_total
    );
    replica.kill();
    if snap.state != BreakerState::Closed {
        return Err("the breaker should have closed after the endpoint healed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example whole: it serves, calls, prints and
    /// checks what it showed, against its own embedded replicas.
    #[test]
    fn runs_to_the_end() {
        super::main().unwrap();
    }
}
