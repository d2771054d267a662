//! The Ferry hub: a daemon that runs WebAssembly functions on Wasmer, keeps
//! them in a sled store and serves the `ferry.v1` gRPC API — and the `ferry`
//! command-line client for it.
//!
//! Invariant: this is the only crate that links tonic services, Wasmer and
//! the hub's sled database together; the libraries it builds on never see
//! each other's types except through `ferry-proto`.

pub mod agent;
pub mod api;
pub mod checkpoint_codec;
pub mod cli;
pub mod config;
pub mod connector;
pub mod error;
pub mod events;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod migration;
pub mod peers;
pub mod rebalance;
pub mod renewer;
pub mod resources;
pub mod runtime;
pub mod service;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod trust;
pub mod volume_layout;
