//! How a [`DomainError`] becomes a gRPC status: the code of DESIGN.md "Errors", an
//! `ErrorInfo` (reason, domain `mfareset`) on every status, and `BadRequest`,
//! `ResourceInfo` or `PreconditionFailure` where they apply (AIP-193).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::DomainError;

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "mfareset";

/// Most entries in one detail list. Status details travel in HTTP/2 trailers, which
/// clients cap at 8 to 16 KiB; a request may carry 500 customer ids or 10,000 user ids.
/// The counts beyond are stated, so a client knows the list is cut.
const MAX_DETAIL_ENTRIES: usize = 50;

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Status {
        let reason = err.reason();
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        let (code, message) = match &err {
            DomainError::InvalidArgument(violations) => {
                for v in violations.iter().take(MAX_DETAIL_ENTRIES) {
                    details.add_bad_request_violation(&v.field, &v.description);
                }
                if violations.len() > MAX_DETAIL_ENTRIES {
                    metadata.insert("violation_count".to_string(), violations.len().to_string());
                }
                (Code::InvalidArgument, err.to_string())
            }
            DomainError::PermissionDenied { message, .. } => {
                (Code::PermissionDenied, message.clone())
            }
            DomainError::NotFound { resource_type, id } => {
                details.set_resource_info(
                    *resource_type,
                    id,
                    "",
                    "not found in the selected customers",
                );
                (Code::NotFound, err.to_string())
            }
            DomainError::AlreadyExists {
                resource_type,
                field,
            } => {
                details.set_resource_info(*resource_type, "", "", format!("{field} is taken"));
                details.add_bad_request_violation(field, "already exists");
                (Code::AlreadyExists, err.to_string())
            }
            DomainError::FailedPrecondition {
                message,
                customer_ids,
                ..
            } => {
                let listed = &customer_ids[..customer_ids.len().min(MAX_DETAIL_ENTRIES)];
                for id in listed {
                    details.add_precondition_failure_violation(
                        reason,
                        format!("customers/{id}"),
                        "",
                    );
                }
                if !customer_ids.is_empty() {
                    metadata.insert("customer_ids".to_string(), listed.join(","));
                    metadata.insert("customer_count".to_string(), customer_ids.len().to_string());
                }
                (Code::FailedPrecondition, message.clone())
            }
            DomainError::Aborted { message, .. } => (Code::Aborted, message.clone()),
            DomainError::Unavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                details.set_retry_info(Some(std::time::Duration::from_secs(1)));
                (Code::Unavailable, err.to_string())
            }
            DomainError::Internal(source) => {
                // The detail stays in the log, next to the request id of the span.
                tracing::error!(error = ?source, "internal error");
                (
                    Code::Internal,
                    "internal error; see the server log for this request id".to_string(),
                )
            }
        };
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldViolation;

    fn round_trip(err: DomainError) -> (Code, ErrorDetails, String) {
        let status = Status::from(err);
        (
            status.code(),
            status.get_error_details(),
            status.message().to_string(),
        )
    }

    #[test]
    fn every_case_maps_to_its_code_with_a_reason() {
        let cases = [
            (
                DomainError::InvalidArgument(vec![FieldViolation::new("a", "b")]),
                Code::InvalidArgument,
            ),
            (
                DomainError::PermissionDenied {
                    reason: "NO_ROLE",
                    message: "m".into(),
                },
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
                DomainError::precondition("NOTHING_TO_RESET", "m"),
                Code::FailedPrecondition,
            ),
            (
                DomainError::Aborted {
                    reason: "PLAN_STALE",
                    message: "m".into(),
                },
                Code::Aborted,
            ),
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
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        let (_, _, message) =
            round_trip(DomainError::Internal(anyhow::anyhow!("password=hunter2")));
        assert!(!message.contains("hunter2"));
    }

    #[test]
    fn bad_request_lists_every_violation() {
        let err = DomainError::InvalidArgument(vec![
            FieldViolation::new("customer_ids", "required"),
            FieldViolation::new("page_size", "must not be negative"),
        ]);
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
}
