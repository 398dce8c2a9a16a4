//! The one error type of the domain, with the cases DESIGN.md "Errors" names. The gRPC layer
//! turns each case into a status code with rich details (`crate::api::status`); nothing here
//! knows about gRPC. Where an error is about a set of things (customers lacking an option,
//! unknown users, the changes that made a plan stale) the error carries the whole set, in
//! structured form, and the status layer caps what it sends.

use sea_orm::DbErr;

use super::{
    ids::CustomerId,
    model::{Action, MethodKind},
    reason::Reason,
    reset::ResetState,
};

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

/// One thing that stands in the way of a call, as a `google.rpc.PreconditionFailure`
/// violation: its `kind` (e.g. `METHOD_REMOVED`, `RESET_SCOPE_ORG_LEVEL`), the `subject` it is
/// about (`customers/{id}`, `customers/{id}/users/{id}`, ...), and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What kind of violation, UPPER_SNAKE.
    pub kind: String,
    /// What it is about, as a relative resource name.
    pub subject: String,
    /// A sentence for people.
    pub description: String,
}

impl Violation {
    /// A violation of `kind` about `subject`.
    pub fn new(
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Violation {
            kind: kind.into(),
            subject: subject.into(),
            description: description.into(),
        }
    }
}

/// A value of `ErrorInfo.metadata`: text, or a value of an enum of the contract (which the
/// gRPC layer spells as the contract names it, e.g. `METHOD_KIND_PHONE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataValue {
    /// Text as it is (ids, counts).
    Text(String),
    /// A method kind.
    MethodKind(MethodKind),
    /// A reset's state.
    ResetState(ResetState),
}

/// Structured details of a failed precondition or an aborted call: the violations (each one
/// of the request, not only the first) and `ErrorInfo` metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// Every violation.
    pub violations: Vec<Violation>,
    /// `ErrorInfo.metadata` entries.
    pub metadata: Vec<(&'static str, MetadataValue)>,
}

impl Details {
    /// Adds a text metadata entry.
    pub fn with(self, key: &'static str, value: impl ToString) -> Self {
        self.with_value(key, MetadataValue::Text(value.to_string()))
    }

    /// Adds a metadata entry.
    pub fn with_value(mut self, key: &'static str, value: MetadataValue) -> Self {
        self.metadata.push((key, value));
        self
    }
}

/// Why a call failed. Each variant carries a [`Reason`] that clients branch on (AIP-193),
/// never on the message.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed; lists every violated field at once.
    #[error("invalid request: {}", describe(.violations))]
    InvalidArgument {
        /// INVALID_ARGUMENT or REQUEST_ID_REUSED.
        reason: Reason,
        /// Every violated field.
        violations: Vec<FieldViolation>,
    },
    /// The caller lacks a role (or a strong enough one) in a customer of the selection, or
    /// would act on their own MFA.
    #[error("{message}")]
    PermissionDenied {
        /// NO_ROLE, ROLE_TOO_WEAK or SELF.
        reason: Reason,
        /// Names only ids the request itself contained.
        message: String,
        /// The customers the refusal is about (ids the request contained), if any.
        customer_ids: Vec<CustomerId>,
        /// The action refused, if the refusal is about one.
        action: Option<Action>,
    },
    /// Things the request named are not inside its selection: every one of them.
    #[error("{}", describe_not_found(resource_type, ids))]
    NotFound {
        /// e.g. `mfareset.v1.User`.
        resource_type: &'static str,
        /// The references as the request gave them (ids, or `external_subject/...`).
        ids: Vec<String>,
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
        reason: Reason,
        /// Human-readable explanation.
        message: String,
        /// What stands in the way, in structured form.
        details: Details,
    },
    /// Concurrency conflict: re-read, then retry (AIP-154).
    #[error("{message}")]
    Aborted {
        /// PLAN_STALE, ETAG_MISMATCH or CONCURRENT_UPDATE.
        reason: Reason,
        /// Human-readable explanation, naming what changed.
        message: String,
        /// What changed, in structured form.
        details: Details,
    },
    /// An RPC of the contract that this release does not serve yet.
    #[error("{rpc} is not implemented by this release of the server")]
    Unimplemented {
        /// The RPC's full name.
        rpc: &'static str,
    },
    /// The database cannot be reached; retrying later may work.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// Anything else: a bug or an unexpected database error. The detail is logged, never
    /// returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Violations spelled out in the message; the BadRequest detail lists more.
const MAX_DESCRIBED_VIOLATIONS: usize = 5;
/// Ids spelled out in a NOT_FOUND message; the ResourceInfo details list more.
const MAX_DESCRIBED_IDS: usize = 5;

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

fn describe_not_found(resource_type: &str, ids: &[String]) -> String {
    let mut text = format!(
        "{resource_type} not found in the selected customers: {}",
        ids.iter()
            .take(MAX_DESCRIBED_IDS)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if ids.len() > MAX_DESCRIBED_IDS {
        text.push_str(&format!(
            " and {} more (see ResourceInfo)",
            ids.len() - MAX_DESCRIBED_IDS
        ));
    }
    text
}

impl DomainError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            reason: Reason::InvalidArgument,
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    /// One thing not found.
    pub fn not_found(resource_type: &'static str, id: impl ToString) -> Self {
        DomainError::NotFound {
            resource_type,
            ids: vec![id.to_string()],
        }
    }

    /// A failed precondition with no structured details beyond `metadata`.
    pub fn precondition(reason: Reason, message: impl Into<String>) -> Self {
        DomainError::FailedPrecondition {
            reason,
            message: message.into(),
            details: Details::default(),
        }
    }

    /// A refusal for lack of a (strong enough) role.
    pub fn permission(reason: Reason, message: impl Into<String>) -> Self {
        DomainError::PermissionDenied {
            reason,
            message: message.into(),
            customer_ids: Vec::new(),
            action: None,
        }
    }

    /// The reason clients branch on.
    pub fn reason(&self) -> Reason {
        match self {
            DomainError::InvalidArgument { reason, .. }
            | DomainError::PermissionDenied { reason, .. }
            | DomainError::FailedPrecondition { reason, .. }
            | DomainError::Aborted { reason, .. } => *reason,
            DomainError::NotFound { .. } => Reason::NotFound,
            DomainError::AlreadyExists { .. } => Reason::AlreadyExists,
            DomainError::Unimplemented { .. } => Reason::Unimplemented,
            DomainError::Unavailable(_) => Reason::DatabaseUnavailable,
            DomainError::Internal(_) => Reason::Internal,
        }
    }

    /// The same error with text `key = value` added to its metadata, where it has metadata.
    pub fn with_metadata(self, key: &'static str, value: impl ToString) -> Self {
        self.with_metadata_value(key, MetadataValue::Text(value.to_string()))
    }

    /// The same error with `key = value` added to its metadata, where it has metadata.
    pub fn with_metadata_value(mut self, key: &'static str, value: MetadataValue) -> Self {
        if let DomainError::FailedPrecondition { details, .. }
        | DomainError::Aborted { details, .. } = &mut self
        {
            details.metadata.push((key, value));
        }
        self
    }
}

impl From<DbErr> for DomainError {
    /// A database that cannot be reached, or is busy past its timeout, is UNAVAILABLE (a
    /// client may retry); a PostgreSQL serialization failure, deadlock or lock timeout is
    /// ABORTED (retry the call); everything else is a bug or a broken database and stays
    /// INTERNAL.
    fn from(err: DbErr) -> Self {
        match transience(&err) {
            Some(Transience::Unavailable) => DomainError::Unavailable(err),
            Some(Transience::Conflict) => DomainError::Aborted {
                reason: Reason::ConcurrentUpdate,
                message: "the data changed concurrently; retry the call".into(),
                details: Details::default(),
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
            // PostgreSQL: serialization failure, deadlock, a lock not had in time.
            Some("40001" | "40P01" | "55P03") => Some(Transience::Conflict),
            // PostgreSQL: a statement over its timeout (the call's deadline, or the DBA's).
            Some("57014") => Some(Transience::Unavailable),
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
