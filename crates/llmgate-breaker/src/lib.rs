//! CircuitBreakerLayer: closed/open/half-open breaker with fail-fast and not-ready modes
