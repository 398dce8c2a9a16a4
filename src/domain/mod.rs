//! The rules of mfa-reset: selection, roles, customers, users, methods, audit, idempotent
//! writes, and the reset engine. Knows nothing about gRPC: the api layer hands it parsed
//! domain values and a [`Caller`], and turns its [`DomainError`]s into statuses.

pub mod audit;
pub mod customers;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod masking;
pub mod methods;
pub mod model;
pub mod paging;
pub mod reason;
pub mod reset;
pub mod roles;
pub mod selection;
pub mod users;

pub use error::{Details, DomainError, DomainResult, FieldViolation, MetadataValue, Violation};
pub use reason::Reason;

/// Who is calling, as the domain needs it: the verified principal and the correlation id
/// (`x-request-id`) that audit events record.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The principal's subject (`sub` of the verified token).
    pub subject: String,
    /// The call's `x-request-id`, which correlates logs, traces and audit events.
    pub correlation_id: Option<String>,
}

/// The current time at the precision both backends keep (PostgreSQL stores
/// microseconds), so that what a call returns equals what a later read returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Maps a unique-constraint violation to ALREADY_EXISTS naming `field`, so a
/// duplicate is the client's error, not INTERNAL.
pub(crate) fn unique_violation_as<'a>(
    resource_type: &'static str,
    field: &'a str,
) -> impl FnOnce(sea_orm::DbErr) -> DomainError + 'a {
    move |err| match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => DomainError::AlreadyExists {
            resource_type,
            field: field.to_string(),
        },
        _ => DomainError::from(err),
    }
}
