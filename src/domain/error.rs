//! The one error type of the domain, with the cases DESIGN.md "Errors" names. The
//! gRPC layer turns each case into a status code with rich details
//! (`crate::api::status`); nothing here knows about gRPC.

use sea_orm::DbErr;

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `customer_ids[2]` or `user.email`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why a call failed. Each variant carries an UPPER_SNAKE `reason` that clients
/// branch on (AIP-193), never on the message.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed; lists every violated field at once.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The caller lacks a role (or a strong enough one) in a customer of the selection.
    #[error("{message}")]
    PermissionDenied {
        /// NO_ROLE, ROLE_TOO_WEAK.
        reason: &'static str,
        /// Names only ids the request itself contained.
        message: String,
    },
    /// Something the request named is not inside its selection.
    #[error("{resource_type} {id} not found")]
    NotFound {
        /// e.g. `mfareset.v1.User`.
        resource_type: &'static str,
        /// The id as the request gave it.
        id: String,
    },
    /// A unique value is taken.
    #[error("{resource_type} with this {field} already exists")]
    AlreadyExists {
        /// e.g. `mfareset.v1.User`.
        resource_type: &'static str,
        /// The request field holding the taken value.
        field: String,
    },
    /// The request is valid but the system is not in a state to do it.
    #[error("{message}")]
    FailedPrecondition {
        /// e.g. OPTION_NOT_COMMON, NOTHING_TO_RESET, RESET_EXPIRED.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
        /// Customers the precondition fails in, when that is the point.
        customer_ids: Vec<String>,
    },
    /// Concurrency conflict: re-read, then retry (AIP-154).
    #[error("{message}")]
    Aborted {
        /// e.g. PLAN_STALE, ETAG_MISMATCH.
        reason: &'static str,
        /// Human-readable explanation, naming what changed.
        message: String,
    },
    /// The database cannot be reached; retrying later may work.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// Anything else: a bug or an unexpected database error. The detail is logged,
    /// never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Violations spelled out in the message; the BadRequest detail lists more.
const MAX_DESCRIBED_VIOLATIONS: usize = 5;

fn describe(violations: &[FieldViolation]) -> String {
    let mut text = violations
        .iter()
        .take(MAX_DESCRIBED_VIOLATIONS)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > MAX_DESCRIBED_VIOLATIONS {
        text.push_str(&format!(
            "; and {} more (see BadRequest)",
            violations.len() - MAX_DESCRIBED_VIOLATIONS
        ));
    }
    text
}

impl DomainError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        DomainError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// Not found.
    pub fn not_found(resource_type: &'static str, id: impl ToString) -> Self {
        DomainError::NotFound {
            resource_type,
            id: id.to_string(),
        }
    }

    /// A failed precondition that concerns no particular customer.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        DomainError::FailedPrecondition {
            reason,
            message: message.into(),
            customer_ids: vec![],
        }
    }

    /// The UPPER_SNAKE reason clients branch on.
    pub fn reason(&self) -> &'static str {
        match self {
            DomainError::InvalidArgument(_) => "INVALID_ARGUMENT",
            DomainError::PermissionDenied { reason, .. } => reason,
            DomainError::NotFound { .. } => "NOT_FOUND",
            DomainError::AlreadyExists { .. } => "ALREADY_EXISTS",
            DomainError::FailedPrecondition { reason, .. } => reason,
            DomainError::Aborted { reason, .. } => reason,
            DomainError::Unavailable(_) => "DATABASE_UNAVAILABLE",
            DomainError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<DbErr> for DomainError {
    /// A database that cannot be reached, or is busy past its timeout, is UNAVAILABLE (a
    /// client may retry); a PostgreSQL serialization failure or deadlock is ABORTED (retry
    /// the call); everything else is a bug or a broken database and stays INTERNAL.
    fn from(err: DbErr) -> Self {
        match transience(&err) {
            Some(Transience::Unavailable) => DomainError::Unavailable(err),
            Some(Transience::Conflict) => DomainError::Aborted {
                reason: "CONCURRENT_UPDATE",
                message: "the data changed concurrently; retry the call".into(),
            },
            None => DomainError::Internal(err.into()),
        }
    }
}

/// How a database error may go away by itself.
enum Transience {
    /// Unreachable, or busy: retry later.
    Unavailable,
    /// Lost a race with another transaction: retry now.
    Conflict,
}

fn transience(err: &DbErr) -> Option<Transience> {
    use sea_orm::{RuntimeErr, sqlx};
    let sqlx_err = match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return Some(Transience::Unavailable),
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return None,
    };
    match sqlx_err.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Transience::Unavailable),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT.
            Some("5" | "6" | "517") => Some(Transience::Unavailable),
            // PostgreSQL: serialization failure, deadlock.
            Some("40001" | "40P01") => Some(Transience::Conflict),
            // PostgreSQL: connection exceptions, server shutting down.
            Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                Some(Transience::Unavailable)
            }
            _ => None,
        },
        _ => None,
    }
}

/// Short for `Result<T, DomainError>`.
pub type DomainResult<T> = Result<T, DomainError>;
