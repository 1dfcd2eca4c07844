//! llmgate's layers on the client side: no server, just a program sending
//! completions through a `tower::ServiceBuilder` stack.
//!
//! Part 1–3: `MetaLayer → RetryLayer → (attempt log) → Fleet balancer` over
//! three simulated replicas (`llmgate-sim`, in process); the balancer owns a
//! pooled hyper-util client and sends each attempt to one replica. The
//! program prints which replica served each request (`x-sim-replica`) and
//! every attempt the retry layer made:
//!
//! 1. a healthy fleet, round robin;
//! 2. `sim-0` answers every request with 429 (`Faults { rate_limit_rate:
//!    1.0, .. }`): each request that lands there is retried, and the retry
//!    avoids `sim-0` and lands elsewhere;
//! 3. `sim-1` is killed: its connection errors are retried elsewhere, its
//!    health check and breaker take it out of rotation, no request fails.
//!
//! Part 4: a plain hyper-util `Client` to one replica, wrapped with
//! `MetaLayer → RetryLayer → CircuitBreakerLayer → ConcurrencyLimitLayer`.
//!
//! (A 500 is not retried by the HTTP retry policy, which retries errors,
//! 429, 502, 503 and 504 only, so the faults used here are 429 and a kill.)
//!
//! ```text
//! cargo run --example hyper_client
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgate_balance::{
    BalanceConfig, EndpointSpec, Fleet, FleetConfig, HealthConfig, StrategyKind,
};
use llmgate_breaker::CircuitBreakerLayer;
use llmgate_core::{EndpointError, MetaLayer, ServedBy};
use llmgate_retry::RetryLayer;
use llmgate_sim::{Faults, SimConfig, SimFleet};
use tower::limit::ConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// Prints one attempt, between the retry layer and the balancer.
fn log_attempt<B>(r: Result<Response<B>, BoxError>) -> Result<Response<B>, BoxError> {
    match &r {
        Ok(res) => {
            let by = res.extensions().get::<ServedBy>().map(|s| s.0.clone());
            println!(
                "     attempt at {} -> {}",
                by.as_deref().unwrap_or("?"),
                res.status()
            );
        }
        Err(e) => println!(
            "     attempt at {} -> error: {e}",
            EndpointError::endpoint_of(e.as_ref())
                .as_deref()
                .unwrap_or("?"),
        ),
    }
    r
}

fn completion(uri: &str, prompt: &str, max_tokens: u32) -> Result<Request<Full<Bytes>>, BoxError> {
    let body =
        serde_json::json!({"model": "llama-3-8b", "prompt": prompt, "max_tokens": max_tokens});
    Ok(Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let sims = SimFleet::spawn(vec![SimConfig::default().with_speedup(50.0); 3])?;
    let specs = sims
        .replicas()
        .iter()
        .map(|r| EndpointSpec::new(r.id(), r.url()))
        .collect();
    let fleet = Fleet::new(
        FleetConfig {
            balance: BalanceConfig {
                strategy: StrategyKind::RoundRobin,
                ..BalanceConfig::default()
            },
            health: Some(HealthConfig {
                interval: Duration::from_millis(100),
                unhealthy_threshold: 1,
                ..HealthConfig::default()
            }),
            scrape: None,
            ..FleetConfig::default()
        },
        specs,
    )?;

    let svc = ServiceBuilder::new()
        .layer(MetaLayer::new())
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                // Retry-After is honoured up to the cap: keep the demo short.
                .backoff(Duration::from_millis(10), Duration::from_millis(100))
                .budget_min_per_sec(10)
                .build(),
        )
        .map_result(log_attempt)
        .service(fleet.service());

    // Requests have a path only: the balancer picks the replica.
    let send = |prompt: String| {
        let svc = svc.clone();
        async move {
            let res = svc
                .oneshot(completion("/v1/completions", &prompt, 8)?)
                .await?;
            let status = res.status();
            let replica = res
                .headers()
                .get("x-sim-replica")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            res.into_body().collect().await?;
            Ok::<_, BoxError>((status, replica))
        }
    };

    println!("1. healthy fleet, round robin");
    for i in 0..4 {
        let (status, replica) = send(format!("Request {i}")).await?;
        println!("   request {i}: {status} served by {replica}");
    }

    println!("\n2. sim-0 answers 429 to everything: retries land elsewhere");
    sims.replicas()[0].set_faults(Faults {
        rate_limit_rate: 1.0,
        ..Faults::default()
    });
    let mut served_by_sim0 = 0;
    for i in 0..6 {
        let (status, replica) = send(format!("Request {i}")).await?;
        println!("   request {i}: {status} served by {replica}");
        served_by_sim0 += u32::from(replica == "sim-0");
    }
    sims.replicas()[0].set_faults(Faults::default());

    println!("\n3. sim-1 is killed: connection errors are retried elsewhere");
    sims.replicas()[1].kill();
    let mut failed = 0;
    for i in 0..6 {
        match send(format!("Request {i}")).await {
            Ok((status, replica)) => println!("   request {i}: {status} served by {replica}"),
            Err(e) => {
                failed += 1;
                println!("   request {i}: failed: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (report, breaker) in fleet.report() {
        println!(
            "   {}: health {:?}, breaker {:?}, requests ok/failed {:?}",
            report.state.id(),
            report.state.health(),
            breaker,
            report.state.totals()
        );
    }

    println!("\n4. a plain hyper client to sim-2 behind a breaker and a concurrency cap");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let breaker = CircuitBreakerLayer::builder()
        .name("sim-2")
        .consecutive_failures(3)
        .build();
    let single = ServiceBuilder::new()
        .layer(MetaLayer::new())
        .layer(RetryLayer::new())
        .layer(breaker.clone())
        .layer(ConcurrencyLimitLayer::new(2))
        .service(client);
    let uri = format!("{}/v1/completions", sims.replicas()[2].url());
    // Watch how many requests sim-2 holds at once while 6 calls run.
    let (peak_tx, peak_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let replica = &sims.replicas()[2];
        let mut peak = 0;
        let mut stop = peak_rx;
        let start = replica.counters();
        async move {
            // Bounded: at most 10 s in 1 ms steps.
            for _ in 0..10_000 {
                let c = replica.counters();
                peak = peak.max(c.running + c.waiting);
                if stop.try_recv().is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (
                peak,
                replica.counters().requests_received - start.requests_received,
            )
        }
    };
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let single = single.clone();
            let req = completion(&uri, &format!("Concurrent {i}"), 128);
            tokio::spawn(async move {
                let res = single.oneshot(req?).await?;
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body)?;
                Ok::<_, BoxError>((status, json["usage"]["completion_tokens"].clone()))
            })
        })
        .collect();
    let collect = async {
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await);
        }
        let _ = peak_tx.send(());
        out
    };
    let (results, (peak, received)) = tokio::join!(collect, watcher);
    for (i, r) in results.into_iter().enumerate() {
        let (status, tokens) = r??;
        println!("   concurrent {i}: {status}, {tokens} completion tokens");
    }
    println!("   sim-2 received {received} requests, at most {peak} at once (cap 2)");
    println!(
        "   breaker {} is {}",
        breaker.handle().name(),
        breaker.handle().state()
    );

    sims.shutdown();
    if served_by_sim0 > 0 || failed > 0 || peak > 2 {
        return Err(
            "a request was served by the rate-limited replica, lost, or over the cap".into(),
        );
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
