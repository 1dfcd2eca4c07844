//! llmgate-sim: a simulated continuous-batching LLM replica, in-process fleets and named workloads
