//! The llmgate gateway binary: config, OpenAI routes, admin API, metrics
