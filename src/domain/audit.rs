//! Audit events: built by the rules that make a change and written in that change's
//! transaction; listed newest first.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    Caller,
    error::{DomainError, DomainResult},
    ids::{AuditEventId, CustomerId, MethodId, ResetId, UserId},
    model::AuditAction,
    paging::{Page, PageRequest},
    selection::Selection,
};
use crate::store::{self, entities::audit_events};

/// An audit event about to be written or just read.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// Id: a v7 UUID made when the event is, so that ids sort by time (and, within this
    /// process, in creation order even inside one millisecond).
    pub id: AuditEventId,
    /// Customer.
    pub customer_id: CustomerId,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who (principal subject).
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// About which user.
    pub user_id: Option<UserId>,
    /// About which method.
    pub method_id: Option<MethodId>,
    /// Part of which reset.
    pub reset_id: Option<ResetId>,
    /// The caller's reason.
    pub reason: Option<String>,
    /// The call's request id.
    pub request_id: Option<String>,
    /// What changed (never contact data).
    pub details: Map<String, Value>,
}

impl AuditEvent {
    /// A new event by `caller` in `customer_id`, happening `now`.
    pub fn new(
        caller: &Caller,
        customer_id: CustomerId,
        action: AuditAction,
        now: DateTime<Utc>,
    ) -> Self {
        AuditEvent {
            id: AuditEventId::new(),
            customer_id,
            occurred_at: now,
            actor: caller.subject.clone(),
            action,
            user_id: None,
            method_id: None,
            reset_id: None,
            reason: None,
            request_id: caller.request_id.clone(),
            details: Map::new(),
        }
    }

    /// Sets the user.
    pub fn user(mut self, user_id: UserId) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// Sets the method.
    pub fn method(mut self, method_id: MethodId) -> Self {
        self.method_id = Some(method_id);
        self
    }

    /// Sets the reason; an empty reason is none.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = (!reason.is_empty()).then(|| reason.to_string());
        self
    }

    /// Adds one detail.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    fn into_model(self) -> audit_events::Model {
        audit_events::Model {
            id: self.id.uuid(),
            customer_id: self.customer_id.uuid(),
            occurred_at: self.occurred_at,
            actor: self.actor,
            action: self.action.as_str().to_string(),
            user_id: self.user_id.map(UserId::uuid),
            method_id: self.method_id.map(MethodId::uuid),
            reset_id: self.reset_id.map(ResetId::uuid),
            reason: self.reason,
            request_id: self.request_id,
            details: Value::Object(self.details).to_string(),
        }
    }

    fn from_model(model: audit_events::Model) -> DomainResult<Self> {
        let action = AuditAction::parse(&model.action).ok_or_else(|| {
            DomainError::Internal(anyhow::anyhow!("unknown audit action {:?}", model.action))
        })?;
        let details = match serde_json::from_str(&model.details) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Ok(AuditEvent {
            id: model.id.into(),
            customer_id: model.customer_id.into(),
            occurred_at: model.occurred_at,
            actor: model.actor,
            action,
            user_id: model.user_id.map(Into::into),
            method_id: model.method_id.map(Into::into),
            reset_id: model.reset_id.map(Into::into),
            reason: model.reason,
            request_id: model.request_id,
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

/// Writes events, inside the caller's transaction, with one statement.
pub async fn record(db: &impl ConnectionTrait, events: Vec<AuditEvent>) -> DomainResult<()> {
    let models = events.into_iter().map(AuditEvent::into_model).collect();
    store::audit::insert_many(db, models).await?;
    Ok(())
}

/// Filters of [`list`].
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only about this user.
    pub user_id: Option<UserId>,
    /// Only by this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<AuditAction>,
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
    page: PageRequest<Uuid>,
) -> DomainResult<Page<AuditEvent, Uuid>> {
    // The id range lets the `(customer_id, id)` index narrow the scan; the margin covers
    // the moment between making an event's id and its timestamp (and clock steps between
    // replicas). The exact bounds are on `occurred_at`.
    let margin = chrono::Duration::seconds(ID_RANGE_MARGIN_SECS);
    let filter = store::audit::AuditFilter {
        user_id: query.user_id.map(UserId::uuid),
        actor: query.actor.clone(),
        action: query.action.map(|a| a.as_str().to_string()),
        occurred_from: query.start_time,
        occurred_before: query.end_time,
        min_id: query.start_time.map(|t| v7_floor(t - margin)),
        max_id_exclusive: query.end_time.map(|t| v7_floor(t + margin)),
    };
    let rows = store::audit::list(db, &selection.ids(), &filter, page.after, page.size + 1).await?;
    Page::from_rows(rows, page.size, |row| row.id).try_map(AuditEvent::from_model)
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
