//! Compiles the `.proto` files with protox (no system `protoc`) and generates
//! prost messages and tonic clients/servers, plus a descriptor set for reflection.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "ferry/v1/hub.proto",
    "ferry/v1/records.proto",
    "ferry/v1/checkpoint.proto",
    "ferry/v1/transfer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ferry_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
