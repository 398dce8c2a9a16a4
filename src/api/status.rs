//! How a [`DomainError`] becomes a gRPC status: the code of DESIGN.md "Errors", an
//! `ErrorInfo` (its [`Reason`], domain [`ERROR_DOMAIN`], metadata) on every status, and
//! `BadRequest`, `ResourceInfo` or `PreconditionFailure` where they apply (AIP-193).
//!
//! Status details travel in HTTP/2 trailers, which clients cap at 8 to 16 KiB, while a request
//! may carry 500 customer ids or 10,000 user ids: every list is cut at [`MAX_DETAIL_ENTRIES`]
//! entries and [`MAX_DETAIL_BYTES`] bytes, and a `*_count` metadata key tells the whole
//! number.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{
    BadRequest, ErrorDetail, ErrorInfo, PreconditionFailure, PreconditionViolation, ResourceInfo,
    RetryInfo, StatusExt,
};

use crate::{
    domain::{Details, DomainError, MetadataValue, Reason, selection::list_ids},
    proto::v1 as pb,
};

/// The `ErrorInfo.domain` of every error this service returns: a DNS-style name of the
/// service (AIP-193), in the `.internal` top-level domain reserved for private use.
pub const ERROR_DOMAIN: &str = "mfa-reset.internal";

/// Most entries in one detail list.
pub const MAX_DETAIL_ENTRIES: usize = 50;

/// Most bytes of text in one detail list (before the base64 of the trailer).
pub const MAX_DETAIL_BYTES: usize = 6 * 1024;

/// How long a client should wait before retrying a call the database could not serve.
const UNAVAILABLE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// A status with an `ErrorInfo` of `reason` and `metadata`, and the other `details`.
pub fn status(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
    details: Vec<ErrorDetail>,
) -> Status {
    let info = ErrorInfo::new(reason.as_str(), ERROR_DOMAIN, metadata);
    let details = std::iter::once(ErrorDetail::from(info)).chain(details);
    Status::with_error_details_vec(code, message, details)
}

/// The leading entries of `entries` that fit both caps, by the text length `len` of each.
fn capped<T>(entries: impl IntoIterator<Item = T>, len: impl Fn(&T) -> usize) -> Vec<T> {
    let mut bytes = 0;
    entries
        .into_iter()
        .take(MAX_DETAIL_ENTRIES)
        .take_while(|entry| {
            bytes += len(entry);
            bytes <= MAX_DETAIL_BYTES
        })
        .collect()
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Status {
        let reason = err.reason();
        let message = err.to_string();
        let mut metadata = HashMap::new();
        let mut details = Vec::new();
        let code = match err {
            DomainError::InvalidArgument { violations, .. } => {
                let listed = capped(&violations, |v| v.field.len() + v.description.len());
                if listed.len() < violations.len() {
                    metadata.insert("violation_count".into(), violations.len().to_string());
                }
                let listed = listed
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(&v.field, &v.description));
                details.push(BadRequest::new(listed.collect::<Vec<_>>()).into());
                Code::InvalidArgument
            }
            DomainError::PermissionDenied {
                customer_ids,
                action,
                ..
            } => {
                if let Some(action) = action {
                    metadata.insert(
                        "action".into(),
                        pb::Action::from(action).as_str_name().into(),
                    );
                }
                if !customer_ids.is_empty() {
                    metadata.insert("customer_ids".into(), list_ids(&customer_ids));
                    metadata.insert("customer_count".into(), customer_ids.len().to_string());
                }
                Code::PermissionDenied
            }
            DomainError::NotFound { resource_type, ids } => {
                metadata.insert("resource_type".into(), resource_type.into());
                metadata.insert("not_found_count".into(), ids.len().to_string());
                for id in capped(&ids, |id| id.len() + resource_type.len()) {
                    let info = ResourceInfo::new(
                        resource_type,
                        id,
                        "",
                        "not found in the selected customers",
                    );
                    details.push(info.into());
                }
                Code::NotFound
            }
            DomainError::AlreadyExists {
                resource_type,
                field,
            } => {
                details.push(
                    ResourceInfo::new(resource_type, "", "", format!("{field} is taken")).into(),
                );
                details.push(BadRequest::with_violation(&field, "already exists").into());
                metadata.insert("field".into(), field);
                Code::AlreadyExists
            }
            DomainError::FailedPrecondition {
                details: domain, ..
            } => {
                precondition_failure(domain, &mut metadata, &mut details);
                Code::FailedPrecondition
            }
            DomainError::Aborted {
                details: domain, ..
            } => {
                precondition_failure(domain, &mut metadata, &mut details);
                Code::Aborted
            }
            DomainError::Unimplemented { .. } => Code::Unimplemented,
            DomainError::Unavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                details.push(RetryInfo::new(Some(UNAVAILABLE_RETRY_DELAY)).into());
                Code::Unavailable
            }
            DomainError::Internal(source) => {
                // The detail stays in the log, next to the request id of the span.
                tracing::error!(error = ?source, "internal error");
                return status(
                    Code::Internal,
                    reason,
                    "internal error; see the server log for this request id",
                    metadata,
                    details,
                );
            }
        };
        status(code, reason, message, metadata, details)
    }
}

/// A metadata value as the contract spells it.
fn spelled(value: MetadataValue) -> String {
    match value {
        MetadataValue::Text(text) => text,
        MetadataValue::MethodKind(kind) => pb::MethodKind::from(kind).as_str_name().into(),
        MetadataValue::ResetState(state) => pb::MfaResetState::from(state).as_str_name().into(),
    }
}

/// Moves structured details into `ErrorInfo` metadata and a capped `PreconditionFailure`.
fn precondition_failure(
    domain: Details,
    metadata: &mut HashMap<String, String>,
    details: &mut Vec<ErrorDetail>,
) {
    metadata.extend(
        domain
            .metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), spelled(v))),
    );
    let listed = capped(domain.violations, |v| {
        v.kind.len() + v.subject.len() + v.description.len()
    });
    if !listed.is_empty() {
        let violations = listed
            .into_iter()
            .map(|v| PreconditionViolation::new(v.kind, v.subject, v.description));
        details.push(PreconditionFailure::new(violations.collect::<Vec<_>>()).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{FieldViolation, Violation, ids::CustomerId},
        proto::v1::ErrorReason,
    };

    fn round_trip(err: DomainError) -> (Code, tonic_types::ErrorDetails, Status) {
        let status = Status::from(err);
        (status.code(), status.get_error_details(), status)
    }

    /// Reasons of the contract that only RPCs (or request forms) this release answers
    /// UNIMPLEMENTED would send. Implementing one removes it from here.
    const DECLARED_FOR_LATER: [Reason; 0] = [];

    #[test]
    fn the_reasons_the_code_can_send_are_the_contracts_error_reasons() {
        // Errors carry a `Reason`, never a string: the reasons the code can send are
        // `Reason::ALL`, which must be the contract's `ErrorReason` values.
        let in_code: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        let mut in_contract = Vec::new();
        for value in 1..=i32::from(u8::MAX) {
            if let Ok(reason) = ErrorReason::try_from(value) {
                let name = reason.as_str_name();
                let name = name.strip_prefix("ERROR_REASON_").unwrap_or(name);
                in_contract.push(name);
            }
        }
        for reason in &in_code {
            assert!(
                in_contract.contains(reason),
                "{reason} is sent but not in ErrorReason"
            );
        }
        for reason in &in_contract {
            assert!(
                in_code.contains(reason),
                "ErrorReason {reason} is declared but no Reason stands for it"
            );
        }
        assert_eq!(in_code.len(), in_contract.len());
    }

    #[test]
    fn every_reason_is_raised_somewhere_but_those_declared_for_later() {
        fn sources(dir: &std::path::Path, into: &mut String) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, into);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("domain/reason.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Only the code that runs: not the tests (this one names reasons).
                    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
                    into.push_str(code);
                }
            }
        }
        let mut code = String::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut code,
        );
        for &reason in Reason::ALL {
            let raised = code.contains(&format!("Reason::{reason:?}"));
            let later = DECLARED_FOR_LATER.contains(&reason);
            assert!(
                raised != later,
                "{reason}: raised by the code: {raised}; declared for later: {later}"
            );
        }
    }

    #[test]
    fn every_case_maps_to_its_code_with_a_reason() {
        let cases = [
            (DomainError::invalid("a", "b"), Code::InvalidArgument),
            (
                DomainError::permission(Reason::NoRole, "m"),
                Code::PermissionDenied,
            ),
            (
                DomainError::not_found("mfareset.v1.User", "x"),
                Code::NotFound,
            ),
            (
                DomainError::AlreadyExists {
                    resource_type: "t",
                    field: "f".into(),
                },
                Code::AlreadyExists,
            ),
            (
                DomainError::precondition(Reason::NothingToReset, "m"),
                Code::FailedPrecondition,
            ),
            (
                DomainError::Aborted {
                    reason: Reason::PlanStale,
                    message: "m".into(),
                    details: Details::default(),
                },
                Code::Aborted,
            ),
            (DomainError::Unimplemented { rpc: "X" }, Code::Unimplemented),
            (
                DomainError::Unavailable(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(
                    "down".into(),
                ))),
                Code::Unavailable,
            ),
            (
                DomainError::Internal(anyhow::anyhow!("secret detail")),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let reason = err.reason();
            let (got, details, _) = round_trip(err);
            assert_eq!(got, code);
            let info = details
                .error_info()
                .expect("every status carries ErrorInfo");
            assert_eq!(info.reason, reason.as_str());
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        let (_, _, status) = round_trip(DomainError::Internal(anyhow::anyhow!("password=hunter2")));
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn bad_request_lists_every_violation() {
        let err = DomainError::InvalidArgument {
            reason: Reason::InvalidArgument,
            violations: vec![
                FieldViolation::new("customer_ids", "required"),
                FieldViolation::new("page_size", "must not be negative"),
            ],
        };
        let (_, details, _) = round_trip(err);
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["customer_ids", "page_size"]);
    }

    #[test]
    fn long_lists_are_capped_and_counted() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let (_, _, status) = round_trip(DomainError::NotFound {
            resource_type: "mfareset.v1.User",
            ids,
        });
        let listed = status
            .get_error_details_vec()
            .into_iter()
            .filter(|d| matches!(d, ErrorDetail::ResourceInfo(_)))
            .count();
        assert_eq!(listed, MAX_DETAIL_ENTRIES);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.metadata["not_found_count"], "10000");
        assert!(
            status.details().len() < 12 * 1024,
            "{}",
            status.details().len()
        );

        let customers: Vec<CustomerId> = (0..500).map(|_| CustomerId::generate()).collect();
        let violations = customers
            .iter()
            .map(|c| {
                Violation::new(
                    "METHOD_KIND_PHONE",
                    format!("customers/{c}"),
                    "x".repeat(200),
                )
            })
            .collect();
        let (_, details, status) = round_trip(DomainError::FailedPrecondition {
            reason: Reason::OptionNotCommon,
            message: "m".into(),
            details: Details {
                violations,
                metadata: vec![],
            },
        });
        let listed = details.precondition_failure().unwrap().violations.len();
        assert!(
            listed < MAX_DETAIL_ENTRIES,
            "{listed} long violations fit the byte cap"
        );
        assert!(status.details().len() < 12 * 1024);
    }
}
