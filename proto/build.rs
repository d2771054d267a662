//! Compiles the `.proto` files with protox (no system `protoc`) and generates
//! prost messages and tonic clients/servers, plus the descriptor set of the
//! public package for reflection.

use std::{env, path::PathBuf};

use prost::Message;

/// What a third-party client needs: the `ferry.v1` package.
const PUBLIC: &[&str] = &["ferry/v1/hub.proto"];
/// The hub's own formats: records, checkpoints, the hub-to-hub protocol.
const INTERNAL: &[&str] = &[
    "ferry/internal/v1/records.proto",
    "ferry/internal/v1/checkpoint.proto",
    "ferry/internal/v1/transfer.proto",
    "ferry/internal/v1/join.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PUBLIC.iter().chain(INTERNAL) {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Reflection serves the public package only.
    let public = protox::compile(PUBLIC, ["."])?;
    let public_descriptors = public.encode_to_vec();
    std::fs::write(out_dir.join("ferry_public_descriptor.bin"), &public_descriptors)?;
    // The protobuf JSON mapping of the public messages, for the HTTP API.
    pbjson_build::Builder::new()
        .register_descriptors(&public_descriptors)?
        .build(&[".ferry.v1"])?;
    let everything = protox::compile(PUBLIC.iter().chain(INTERNAL), ["."])?;
    tonic_prost_build::configure().compile_fds(everything)?;
    Ok(())
}
