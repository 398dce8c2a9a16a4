//! Queries on `audit_events`. Events are only ever inserted, in the transaction of
//! the change they record.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::bulk::{self, Kind};
use super::ids::{AuditEventId, CustomerId, UserId};
use super::values::AuditAction;

use super::entities::audit_events::{Column, Entity, Model};

/// Filters of an audit list; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only events about this user.
    pub user_id: Option<UserId>,
    /// Only events by this actor.
    pub actor: Option<String>,
    /// Only events of these actions; empty means every action.
    pub actions: Vec<AuditAction>,
    /// Only events at or after this instant.
    pub occurred_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events before this instant.
    pub occurred_before: Option<chrono::DateTime<chrono::Utc>>,
    /// A lower id bound implied by `occurred_from` (v7 ids carry their time), so that
    /// the `(customer_id, id)` index narrows the scan.
    pub min_id: Option<Uuid>,
    /// An upper id bound implied by `occurred_before`, likewise.
    pub max_id_exclusive: Option<Uuid>,
}

/// The columns of `audit_events`, in the order of [`row`].
const COLUMNS: bulk::Columns = bulk::Columns {
    table: "audit_events",
    columns: &[
        ("id", Kind::Uuid),
        ("customer_id", Kind::Uuid),
        ("occurred_at", Kind::Time),
        ("actor", Kind::Text),
        ("action", Kind::Text),
        ("user_id", Kind::Uuid),
        ("method_id", Kind::Uuid),
        ("reset_id", Kind::Uuid),
        ("reason", Kind::Text),
        ("request_id", Kind::Text),
        ("details", Kind::Text),
        ("external_subject", Kind::Text),
        ("mfa_registration_required", Kind::Bool),
        ("mfa_reset_at", Kind::Time),
    ],
};

fn row(event: Model) -> serde_json::Value {
    serde_json::Value::Array(vec![
        bulk::uuid_cell(event.id),
        bulk::opt_uuid_cell(event.customer_id),
        bulk::time_cell(event.occurred_at),
        event.actor.into(),
        event.action.into(),
        bulk::opt_uuid_cell(event.user_id),
        bulk::opt_uuid_cell(event.method_id),
        bulk::opt_uuid_cell(event.reset_id),
        bulk::opt_text_cell(event.reason),
        bulk::opt_text_cell(event.request_id),
        event.details.into(),
        bulk::opt_text_cell(event.external_subject),
        event.mfa_registration_required.into(),
        bulk::opt_time_cell(event.mfa_reset_at),
    ])
}

/// Inserts events in one statement, however many.
pub async fn insert_many(db: &impl ConnectionTrait, events: Vec<Model>) -> Result<(), DbErr> {
    bulk::insert_rows(db, &COLUMNS, events.into_iter().map(row).collect()).await
}

/// One page of events of `customer_ids`, and of every customer (`customer_id` NULL: roles on
/// `*`), newest first (ids before `before`).
///
/// Time bounds are applied exactly on `occurred_at`, and also as a coarser id range
/// (ids are v7 UUIDs whose leading bits are the creation time) that the
/// `(customer_id, id)` indexes serve.
pub async fn list(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    filter: &AuditFilter,
    before: Option<AuditEventId>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().filter(
        Condition::any()
            .add(Column::CustomerId.is_in(customer_ids.iter().copied()))
            .add(Column::CustomerId.is_null()),
    );
    if let Some(user_id) = filter.user_id {
        query = query.filter(Column::UserId.eq(user_id));
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(Column::Actor.eq(actor.as_str()));
    }
    if !filter.actions.is_empty() {
        query = query.filter(Column::Action.is_in(filter.actions.iter().map(|a| a.as_str())));
    }
    if let Some(from) = filter.occurred_from {
        query = query.filter(Column::OccurredAt.gte(from));
    }
    if let Some(before) = filter.occurred_before {
        query = query.filter(Column::OccurredAt.lt(before));
    }
    if let Some(min_id) = filter.min_id {
        query = query.filter(Column::Id.gte(min_id));
    }
    if let Some(max_id) = filter.max_id_exclusive {
        query = query.filter(Column::Id.lt(max_id));
    }
    if let Some(before) = before {
        query = query.filter(Column::Id.lt(before));
    }
    query.order_by_desc(Column::Id).limit(limit).all(db).await
}
