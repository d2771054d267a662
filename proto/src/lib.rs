//! Ferry's protobuf packages compiled to prost messages and tonic
//! clients/servers, and the single mapping from the project's error kinds
//! to gRPC (and HTTP) status codes.
//!
//! - [`v1`] (`ferry.v1`, `ferry/v1/hub.proto`) is the public client API:
//!   what a third-party client needs, and all that reflection serves.
//! - [`internal::v1`] (`ferry.internal.v1`) holds what only hubs speak and
//!   store: the sled records, the checkpoint format and the hub-to-hub
//!   transfer protocol. It may use public messages; the public package never
//!   refers to it.
//!
//! Invariant: this crate knows nothing about Wasmer, sled or any other
//! implementation detail of a hub.

mod error;

pub use error::{ErrorCode, ServiceError, error_chain};

/// Version of the hub↔hub and client↔hub protocol. Peers with another major
/// protocol version are listed but never used.
pub const PROTOCOL_VERSION: u32 = 2;

/// Version of the durable record formats in `records.proto`.
pub const RECORD_FORMAT_VERSION: u32 = 1;

pub mod v1 {
    //! Generated code for the public `ferry.v1` package.
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("ferry.v1");
    // serde for every public message, by the protobuf JSON mapping
    // (lowerCamelCase fields, enums by name, 64-bit integers as strings).
    include!(concat!(env!("OUT_DIR"), "/ferry.v1.serde.rs"));

    /// Encoded `FileDescriptorSet` of the public package, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_public_descriptor");
}

pub mod internal {
    //! What only hubs speak and store; never served by reflection.

    pub mod v1 {
        //! Generated code for the `ferry.internal.v1` package: records,
        //! checkpoints, the hub-to-hub transfer protocol.
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("ferry.internal.v1");
    }
}
