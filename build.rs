//! Compiles the `mfareset.v1` contract with protox (pure Rust: no system `protoc`)
//! and writes the file descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/mfareset/v1/customers_service.proto",
    "proto/mfareset/v1/users_service.proto",
    "proto/mfareset/v1/authentication_methods_service.proto",
    "proto/mfareset/v1/audit_log_service.proto",
    // Imported by no service: the `ErrorInfo.reason` values of every error.
    "proto/mfareset/v1/error_reason.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // protox keeps the source comments, so reflection clients see the API docs.
    let file_descriptors = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = PathBuf::from(env::var("OUT_DIR")?).join("mfareset_v1_descriptor.bin");
    fs::write(&descriptor_path, file_descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        // A body that does not decode is the client's error (MALFORMED_REQUEST), not INTERNAL.
        .codec_path("crate::api::codec::Codec")
        .skip_protoc_run()
        .compile_fds(file_descriptors)?;
    Ok(())
}
