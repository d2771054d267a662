//! Ferry's wire API: the `ferry.v1` protobuf package compiled to prost
//! messages and tonic clients/servers, and the single mapping from the
//! project's error kinds to gRPC status codes.
//!
//! Invariant: this crate knows nothing about Wasmer, sled or any other
//! implementation detail of a hub; it is what a third-party client needs.

mod error;

pub use error::{ErrorCode, ServiceError, error_chain};

/// Version of the hub↔hub and client↔hub protocol. Peers with another major
/// protocol version are listed but never used.
pub const PROTOCOL_VERSION: u32 = 1;

/// Version of the durable record formats in `records.proto`.
pub const RECORD_FORMAT_VERSION: u32 = 1;

pub mod v1 {
    //! Generated code for the `ferry.v1` package.
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("ferry.v1");

    /// Encoded `FileDescriptorSet` of every Ferry proto, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");
}
