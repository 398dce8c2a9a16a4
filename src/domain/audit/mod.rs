//! Audit events: built by the rules that make a change and written in that change's
//! transaction; listed newest first. Every event is also the change event of what it records
//! (DESIGN.md "Change events"): typed ([`AuditDetails`]), and, when it is about a user,
//! carrying the user's external subject and MFA state right after the change.

mod details;
mod stored;
pub mod watch;

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use uuid::Uuid;

pub use self::details::AuditDetails;
use super::{
    Caller,
    error::{DomainError, DomainResult},
    ids::{AuditEventId, CustomerId, MethodId, ResetId, UserId},
    model::{AuditAction, User},
    paging::{Page, PageRequest},
    selection::Selection,
};
use crate::store::{self, entities::audit_events};

/// A user as a change left them: what sign-in services need to act on the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAfter {
    /// The user.
    pub id: UserId,
    /// The id the sign-in system knows them by.
    pub external_subject: Option<String>,
    /// Whether they must register MFA at their next sign-in (`None`: not recorded, for events
    /// written before the service kept it).
    pub mfa_registration_required: Option<bool>,
    /// Their last MFA reset.
    pub mfa_reset_at: Option<DateTime<Utc>>,
}

impl From<&User> for UserAfter {
    fn from(user: &User) -> Self {
        UserAfter {
            id: user.id,
            external_subject: user.external_subject.clone(),
            mfa_registration_required: Some(user.mfa_registration_required),
            mfa_reset_at: user.mfa_reset_at,
        }
    }
}

/// An audit event about to be written or just read.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// Id: a v7 UUID made when the event is, so that ids sort by time (and, within this
    /// process, in creation order even inside one millisecond).
    pub id: AuditEventId,
    /// Customer; `None` for an event about a role on every customer (`*`).
    pub customer_id: Option<CustomerId>,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who (principal subject, or the operator of a subcommand).
    pub actor: String,
    /// About which user, as the change left them.
    pub user: Option<UserAfter>,
    /// About which method.
    pub method_id: Option<MethodId>,
    /// Part of which reset.
    pub reset_id: Option<ResetId>,
    /// The caller's reason.
    pub reason: Option<String>,
    /// The call's `x-request-id`.
    pub correlation_id: Option<String>,
    /// What changed; decides the action.
    pub details: AuditDetails,
}

impl AuditEvent {
    /// A new event by `caller` in `customer_id`, happening `now`.
    pub fn new(
        caller: &Caller,
        customer_id: CustomerId,
        details: AuditDetails,
        now: DateTime<Utc>,
    ) -> Self {
        Self::by(&caller.subject, Some(customer_id), details, now)
            .correlation(caller.correlation_id.clone())
    }

    /// A new event by `actor` in `customer_id` (`None`: every customer), happening `now`.
    pub fn by(
        actor: &str,
        customer_id: Option<CustomerId>,
        details: AuditDetails,
        now: DateTime<Utc>,
    ) -> Self {
        AuditEvent {
            id: AuditEventId::generate(),
            customer_id,
            occurred_at: now,
            actor: actor.to_string(),
            user: None,
            method_id: None,
            reset_id: None,
            reason: None,
            correlation_id: None,
            details,
        }
    }

    /// What the event records.
    pub fn action(&self) -> AuditAction {
        self.details.action()
    }

    /// Sets the user the event is about, as the change left them.
    pub fn user(mut self, user: UserAfter) -> Self {
        self.user = Some(user);
        self
    }

    /// Sets the method.
    pub fn method(mut self, method_id: MethodId) -> Self {
        self.method_id = Some(method_id);
        self
    }

    /// Sets the reset.
    pub fn reset(mut self, reset_id: ResetId) -> Self {
        self.reset_id = Some(reset_id);
        self
    }

    /// Sets the reason; an empty reason is none.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = (!reason.is_empty()).then(|| reason.to_string());
        self
    }

    /// Sets the correlation id (`x-request-id`).
    pub fn correlation(mut self, correlation_id: Option<String>) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    fn into_model(self) -> audit_events::Model {
        let action = self.action();
        audit_events::Model {
            id: self.id.uuid(),
            customer_id: self.customer_id.map(CustomerId::uuid),
            occurred_at: self.occurred_at,
            actor: self.actor,
            action: action.as_str().to_string(),
            user_id: self.user.as_ref().map(|u| u.id.uuid()),
            method_id: self.method_id.map(MethodId::uuid),
            reset_id: self.reset_id.map(ResetId::uuid),
            reason: self.reason,
            request_id: self.correlation_id,
            details: stored::to_json(&self.details),
            external_subject: self.user.as_ref().and_then(|u| u.external_subject.clone()),
            mfa_registration_required: self.user.as_ref().and_then(|u| u.mfa_registration_required),
            mfa_reset_at: self.user.as_ref().and_then(|u| u.mfa_reset_at),
            // Stamped by the insert, from the audit clock.
            commit_seq: 0,
        }
    }

    fn from_model(model: audit_events::Model) -> DomainResult<Self> {
        let action = AuditAction::parse(&model.action).ok_or_else(|| {
            DomainError::Internal(anyhow::anyhow!("unknown audit action {:?}", model.action))
        })?;
        let details = stored::from_json(action, &model.details, &model.actor)?;
        let user = model.user_id.map(|id| UserAfter {
            id: id.into(),
            external_subject: model.external_subject,
            mfa_registration_required: model.mfa_registration_required,
            mfa_reset_at: model.mfa_reset_at,
        });
        Ok(AuditEvent {
            id: model.id.into(),
            customer_id: model.customer_id.map(Into::into),
            occurred_at: model.occurred_at,
            actor: model.actor,
            user,
            method_id: model.method_id.map(Into::into),
            reset_id: model.reset_id.map(Into::into),
            reason: model.reason,
            correlation_id: model.request_id,
            details,
        })
    }
}

/// Seconds of slack between an event's id time and its `occurred_at` in time filters.
const ID_RANGE_MARGIN_SECS: i64 = 60;

/// The smallest v7 UUID of instant `at`: every id made at or after `at` sorts at or
/// above it, every id made before sorts below.
pub fn v7_floor(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid()
}

/// Writes events, inside the caller's transaction, with one statement per chunk, and logs
/// the change at INFO: one line per kind of event (its action, how many, the customers, the
/// user, the method or the reset they are about; ids only). A reset's own lines say more
/// (`reset::confirm`, `reset::approve`), so its per-user MFA_RESET events are not repeated.
/// Written inside the transaction, the line comes before the commit: a call whose commit
/// fails says so in its `call finished` line.
pub async fn record(db: &impl ConnectionTrait, events: Vec<AuditEvent>) -> DomainResult<()> {
    log_changes(&events);
    let models = events.into_iter().map(AuditEvent::into_model).collect();
    store::audit::insert_many(db, models).await?;
    Ok(())
}

fn log_changes(events: &[AuditEvent]) {
    /// Customers named in one line; the count says how many there were.
    const MAX_LOGGED_CUSTOMERS: usize = 20;
    let mut actions: Vec<AuditAction> = Vec::new();
    for action in events.iter().map(AuditEvent::action) {
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    for action in actions {
        // Said by the reset's own line, with its counts.
        if matches!(
            action,
            AuditAction::MfaReset
                | AuditAction::ResetApprovalRequested
                | AuditAction::ResetApproved
        ) {
            continue;
        }
        let of_kind: Vec<&AuditEvent> = events.iter().filter(|e| e.action() == action).collect();
        let customers: Vec<String> = of_kind
            .iter()
            .take(MAX_LOGGED_CUSTOMERS)
            .map(|e| {
                e.customer_id
                    .map_or_else(|| "*".to_string(), |c| c.to_string())
            })
            .collect();
        let first = of_kind.first();
        tracing::info!(
            action = action.as_str(),
            count = of_kind.len(),
            customer_ids = %customers.join(","),
            user_id = first.and_then(|e| e.user.as_ref()).map(|u| u.id.to_string()).unwrap_or_default(),
            method_id = first.and_then(|e| e.method_id).map(|m| m.to_string()).unwrap_or_default(),
            reset_id = first.and_then(|e| e.reset_id).map(|r| r.to_string()).unwrap_or_default(),
            "change recorded"
        );
    }
}

/// Filters of [`list`].
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only about this user.
    pub user_id: Option<UserId>,
    /// Only by this actor.
    pub actor: Option<String>,
    /// Only these actions; empty means every action.
    pub actions: Vec<AuditAction>,
    /// At or after.
    pub start_time: Option<DateTime<Utc>>,
    /// Before.
    pub end_time: Option<DateTime<Utc>>,
}

/// One page of the selection's audit events, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    selection: &Selection,
    query: &AuditQuery,
    page: PageRequest<AuditEventId>,
) -> DomainResult<Page<AuditEvent, AuditEventId>> {
    // The id range lets the `(customer_id, id)` index narrow the scan; the margin covers
    // the moment between making an event's id and its timestamp (and clock steps between
    // replicas). The exact bounds are on `occurred_at`.
    let margin = chrono::Duration::seconds(ID_RANGE_MARGIN_SECS);
    let filter = store::audit::AuditFilter {
        user_id: query.user_id,
        actor: query.actor.clone(),
        actions: query.actions.clone(),
        occurred_from: query.start_time,
        occurred_before: query.end_time,
        min_id: query.start_time.map(|t| v7_floor(t - margin)),
        max_id_exclusive: query.end_time.map(|t| v7_floor(t + margin)),
    };
    let rows = store::audit::list(db, &selection.ids(), &filter, page.after, page.size + 1).await?;
    Page::from_rows(rows, page.size, |row| AuditEventId::from(row.id))
        .try_map(AuditEvent::from_model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_floor_orders_ids_by_time() {
        let before = v7_floor(Utc::now() - chrono::Duration::milliseconds(2));
        let id = Uuid::now_v7();
        let after = v7_floor(Utc::now() + chrono::Duration::milliseconds(2));
        assert!(before < id && id < after);
    }
}
