//! Queries on `audit_events`. Events are only ever inserted, in the transaction of
//! the change they record.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::entities::audit_events::{ActiveModel, Column, Entity, Model};

/// Filters of an audit list; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only events about this user.
    pub user_id: Option<Uuid>,
    /// Only events by this actor.
    pub actor: Option<String>,
    /// Only events of this action (stored name).
    pub action: Option<String>,
    /// Only events whose id is at least this: the smallest v7 id of the start time.
    pub min_id: Option<Uuid>,
    /// Only events whose id is below this: the smallest v7 id of the end time.
    pub max_id_exclusive: Option<Uuid>,
}

/// Inserts events with one multi-row statement.
pub async fn insert_many(db: &impl ConnectionTrait, events: Vec<Model>) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    Entity::insert_many(events.into_iter().map(ActiveModel::from))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// One page of events of `customer_ids`, newest first (ids before `before`).
///
/// Time bounds are id bounds: ids are v7 UUIDs whose leading bits are the creation
/// time, so a time range is an id range that the `(customer_id, id)` indexes serve on
/// both backends, without comparing timestamps that SQLite keeps as text.
pub async fn list(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    filter: &AuditFilter,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().filter(Column::CustomerId.is_in(customer_ids.iter().copied()));
    if let Some(user_id) = filter.user_id {
        query = query.filter(Column::UserId.eq(user_id));
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(Column::Actor.eq(actor.as_str()));
    }
    if let Some(action) = &filter.action {
        query = query.filter(Column::Action.eq(action.as_str()));
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
