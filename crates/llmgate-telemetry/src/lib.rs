//! GPU (NVML) and engine (Prometheus scrape) telemetry sources for llmgate
