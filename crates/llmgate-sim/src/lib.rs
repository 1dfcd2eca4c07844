//! llmgate-sim: a simulated continuous-batching LLM replica.
#![warn(missing_docs)]

mod config;
pub mod engine;
mod http;
mod metrics;
pub mod profile;
mod replica;

pub use config::{Faults, MetricsFlavor, SimConfig};
pub use http::{CHARS_PER_TOKEN, REPLICA_HEADER};
pub use profile::{Profile, UnknownProfile};
pub use replica::{SimCounters, SimFleet, SimReplica};
