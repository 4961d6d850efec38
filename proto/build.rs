//! Generates the prost types for `onnx.proto` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from("onnx.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile([&proto], ["."])?;
    let mut config = prost_build::Config::new();
    // Tensor payloads decode as slices of the input buffer (zero-copy), not fresh Vecs.
    config.bytes(["."]);
    config.compile_fds(descriptors)?;
    Ok(())
}
