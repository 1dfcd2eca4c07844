//! GpuAwareBalance: a balancer over tower::discover with GPU- and engine-aware load and routing strategies
