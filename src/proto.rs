//! The generated `mfareset.v1` contract (messages, server traits and clients), and the file
//! descriptors that server reflection serves.

#![allow(
    missing_docs,
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation
)]

use prost::Message;
use prost_types::FileDescriptorSet;

/// Messages and services of package `mfareset.v1`.
pub mod v1 {
    tonic::include_proto!("mfareset.v1");
}

/// The encoded file descriptor set of the contract, served by server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("mfareset_v1_descriptor");

/// The `google.rpc` error details (`Status`, `ErrorInfo`, `BadRequest`, ...) under their
/// canonical file names (`google/rpc/error_details.proto`), so that reflection clients can
/// resolve and decode the details of every error. tonic-types ships them named by their
/// basename alone (`error_details.proto`), which no other descriptor imports.
pub fn google_rpc_file_descriptor_set() -> Result<FileDescriptorSet, prost::DecodeError> {
    let mut set = FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
    let canonical = |name: &mut String| {
        if matches!(name.as_str(), "status.proto" | "error_details.proto") {
            *name = format!("google/rpc/{name}");
        }
    };
    for file in &mut set.file {
        if let Some(name) = file.name.as_mut() {
            canonical(name);
        }
        file.dependency.iter_mut().for_each(canonical);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_rpc_files_have_their_canonical_names() {
        let set = google_rpc_file_descriptor_set().unwrap();
        let names: Vec<_> = set.file.iter().filter_map(|f| f.name.clone()).collect();
        assert!(
            names.contains(&"google/rpc/error_details.proto".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"google/rpc/status.proto".to_string()),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| n == "error_details.proto"),
            "{names:?}"
        );
    }
}
