//! Queries on `idempotency_keys`: the remembered first answers of calls that carried an
//! AIP-155 `request_id`. Keys are per principal, so a query is confined to one subject.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use super::entities::idempotency_keys::{ActiveModel, Column, Entity, Model};

/// The key of one remembered call.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    /// The principal.
    pub subject: &'a str,
    /// The RPC's full name.
    pub rpc: &'a str,
    /// The client's request id.
    pub request_id: Uuid,
}

fn matching(key: Key<'_>) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(Column::Subject.eq(key.subject))
        .add(Column::Rpc.eq(key.rpc))
        .add(Column::RequestId.eq(key.request_id))
}

/// The key's row if it was made at or after `not_before` (older rows are expired, whether or
/// not they were purged yet).
pub async fn find(
    db: &impl ConnectionTrait,
    key: Key<'_>,
    not_before: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(matching(key))
        .filter(Column::CreatedAt.gte(not_before))
        .one(db)
        .await
}

/// Claims the key for the calling transaction: inserts its row without a response, after
/// removing an expired row with the same key. Returns false when a live row exists (another
/// call with this key committed; on PostgreSQL the insert first waits for a concurrent
/// transaction holding the same key to end).
pub async fn claim(
    db: &impl ConnectionTrait,
    key: Key<'_>,
    request_digest: &str,
    now: chrono::DateTime<chrono::Utc>,
    not_before: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbErr> {
    Entity::delete_many()
        .filter(matching(key))
        .filter(Column::CreatedAt.lt(not_before))
        .exec(db)
        .await?;
    let row = ActiveModel::from(Model {
        subject: key.subject.to_string(),
        rpc: key.rpc.to_string(),
        request_id: key.request_id,
        request_digest: request_digest.to_string(),
        response: None,
        created_at: now,
    });
    let inserted = Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::Subject, Column::Rpc, Column::RequestId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(inserted == 1)
}

/// Stores the answer of a claimed key (in the claiming transaction, before it commits).
pub async fn answer(
    db: &impl ConnectionTrait,
    key: Key<'_>,
    response: Vec<u8>,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Response, Expr::value(response))
        .filter(matching(key))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes the keys made before `before`; returns how many went.
pub async fn purge(
    db: &impl ConnectionTrait,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    Ok(Entity::delete_many()
        .filter(Column::CreatedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected)
}
