//! Ferry's capture machinery.
//!
//! This crate turns an ordinary wasm32-wasi module into one whose execution a
//! hub can interrupt and account for ([`instrument`](mod@instrument)), and keeps the
//! checkpoints of running functions ([`checkpoint`]). It never opens a
//! socket, never knows about gRPC services or mDNS, and never runs a module:
//! it works on bytes and data only.

pub mod checkpoint;
pub mod instrument;
pub mod transfer;

pub use checkpoint::{
    CHECKPOINT_FORMAT_VERSION, CheckpointError, CheckpointManifest, CheckpointStore, CheckpointStoreOptions, ChunkHash,
    DEFAULT_CHUNK_SIZE, Fingerprints, GcStats, PutStats, decode_manifest, encode_manifest,
};
pub use instrument::{
    GLOBAL_EXPORT_PREFIX, INSTRUMENTATION_VERSION, InstrumentError, InstrumentStats, InstrumentedModule,
    MEMORY_GROW_IMPORT, PREEMPT_IMPORT, RESERVED_IMPORT_MODULE, REWIND_EXPORT_PREFIX, REWIND_IMPORT_MODULE,
    STACK_MEMORY_EXPORT, STACK_MEMORY_PAGES, UNWINDING_IMPORTS, instrument,
};
