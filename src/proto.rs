//! The generated `mfareset.v1` contract (messages, server traits and clients).

#![allow(
    missing_docs,
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation
)]

/// Messages and services of package `mfareset.v1`.
pub mod v1 {
    tonic::include_proto!("mfareset.v1");
}

/// The encoded file descriptor set of the contract, served by server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("mfareset_v1_descriptor");
