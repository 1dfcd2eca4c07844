//! GPU and engine telemetry for llmgate.
//!
//! * [`GpuReading`] / [`GpuReport`]: one GPU's utilization, memory,
//!   temperature and power, and the JSON document a node agent (or a
//!   simulated replica) serves at `GET /gpu`.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod reading;

pub use reading::{GpuReading, GpuReport};
