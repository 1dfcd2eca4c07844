//! RetryLayer: retries with backoff, jitter, Retry-After and a budget
