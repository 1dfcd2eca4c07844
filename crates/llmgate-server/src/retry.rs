//! The retry layer of the stack, from `[retry]`.

use std::time::Duration;

use llmgate_retry::{HttpRetry, RetryLayer};

use crate::config::Config;

/// The retry layer, when `[retry]` enables it: `max_retries` retries after
/// the first attempt, full-jitter backoff, and the retry budget.
pub fn retry_layer(config: &Config) -> Option<RetryLayer<HttpRetry>> {
    let r = &config.retry;
    r.enabled.then(|| {
        RetryLayer::builder()
            .max_attempts(r.max_retries + 1)
            .backoff(
                Duration::from_millis(r.backoff_base_ms),
                Duration::from_millis(r.backoff_cap_ms),
            )
            .budget_percent(r.budget_percent as f32)
            .build()
    })
}
