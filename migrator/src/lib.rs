//! Ferry's capture machinery.
//!
//! This crate turns an ordinary wasm32-wasi module into one whose execution a
//! hub can interrupt and account for ([`instrument`]). It never opens a
//! socket, never knows about gRPC services or mDNS, and never runs a module:
//! it works on bytes and data only.

pub mod instrument;

pub use instrument::{
    INSTRUMENTATION_VERSION, InstrumentError, InstrumentStats, InstrumentedModule, MEMORY_GROW_IMPORT, PREEMPT_IMPORT,
    RESERVED_IMPORT_MODULE, instrument,
};
