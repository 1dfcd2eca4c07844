//! llmgate: facade re-exporting the layer crates.
