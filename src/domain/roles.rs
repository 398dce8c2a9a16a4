//! Granting and revoking roles, as operators do with the binary (`grant`, `revoke`): each
//! change is audited like any other (ROLE_GRANTED / ROLE_REVOKED, in the customer's log, or
//! in every customer's for a role on `*`), in the transaction that makes it. Granting a role
//! already held, or revoking one not held, changes nothing and records nothing.

use sea_orm::DatabaseConnection;

use super::{
    DomainError, DomainResult,
    audit::{self, AuditDetails, AuditEvent},
    ids::CustomerId,
    model::Role,
};
use crate::store;

/// Whether a role change changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleChange {
    /// The assignment was made or removed, and audited.
    Changed,
    /// It was already as asked.
    Unchanged,
}

/// Gives `subject` `role` in `customer` (`None`: every customer, `*`), audited as done by
/// `actor` (the operator). An unknown customer is NOT_FOUND.
pub async fn grant(
    db: &DatabaseConnection,
    actor: &str,
    subject: &str,
    customer: Option<CustomerId>,
    role: Role,
) -> DomainResult<RoleChange> {
    change(db, actor, subject, customer, role, true).await
}

/// Takes `role` in `customer` (`None`: `*`) away from `subject`, audited as done by `actor`.
pub async fn revoke(
    db: &DatabaseConnection,
    actor: &str,
    subject: &str,
    customer: Option<CustomerId>,
    role: Role,
) -> DomainResult<RoleChange> {
    change(db, actor, subject, customer, role, false).await
}

async fn change(
    db: &DatabaseConnection,
    actor: &str,
    subject: &str,
    customer: Option<CustomerId>,
    role: Role,
    grant: bool,
) -> DomainResult<RoleChange> {
    let txn = store::begin_write(db).await?;
    if let Some(id) = customer {
        if store::customers::find(&txn, id).await?.is_none() {
            return Err(DomainError::not_found("mfareset.v1.Customer", id));
        }
    }
    let changed = if grant {
        store::roles::grant(&txn, subject, customer, role).await?
    } else {
        store::roles::revoke(&txn, subject, customer, role).await?
    };
    if !changed {
        return Ok(RoleChange::Unchanged);
    }
    let subject = subject.to_string();
    let details = if grant {
        AuditDetails::RoleGranted { subject, role }
    } else {
        AuditDetails::RoleRevoked { subject, role }
    };
    let event = AuditEvent::by(actor, customer, details, super::now());
    audit::record(&txn, vec![event]).await?;
    store::commit(txn).await?;
    Ok(RoleChange::Changed)
}
