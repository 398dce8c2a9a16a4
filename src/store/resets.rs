//! Queries on `mfa_resets`, `mfa_reset_customers` and `mfa_reset_items`, and the
//! set-based writes a confirmed reset makes. Lists of ids are cut into chunks of
//! [`CHUNK`] so that no statement exceeds a backend's bound-parameter limit (SQLite's is
//! 32,766): the number of statements grows with the chunks, never per user.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use super::entities::{
    authentication_methods as methods, mfa_reset_customers, mfa_reset_items, mfa_resets, users,
};

/// Ids per statement. Items have 8 columns: 2,000 rows are 16,000 parameters.
pub const CHUNK: usize = 2_000;

/// Stores a new reset with its customers and items (one multi-row insert per chunk).
pub async fn insert(
    db: &impl ConnectionTrait,
    reset: mfa_resets::Model,
    customer_ids: &[Uuid],
    items: Vec<mfa_reset_items::Model>,
) -> Result<(), DbErr> {
    let reset_id = reset.id;
    mfa_resets::Entity::insert(mfa_resets::ActiveModel::from(reset))
        .exec_without_returning(db)
        .await?;
    mfa_reset_customers::Entity::insert_many(customer_ids.iter().map(|&customer_id| {
        mfa_reset_customers::ActiveModel::from(mfa_reset_customers::Model {
            reset_id,
            customer_id,
        })
    }))
    .exec_without_returning(db)
    .await?;
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let chunk: Vec<_> = items
            .by_ref()
            .take(CHUNK)
            .map(mfa_reset_items::ActiveModel::from)
            .collect();
        mfa_reset_items::Entity::insert_many(chunk)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// A reset by id. With `lock`, the row is locked for the rest of the transaction on
/// PostgreSQL (`FOR UPDATE`), so concurrent confirms of one reset run one after the
/// other; SQLite's `BEGIN IMMEDIATE` already serialises writers.
pub async fn find(
    db: &impl ConnectionTrait,
    id: Uuid,
    lock: bool,
) -> Result<Option<mfa_resets::Model>, DbErr> {
    let mut query = mfa_resets::Entity::find_by_id(id);
    if lock && db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.one(db).await
}

/// The customers of a reset, in the order they were selected.
pub async fn customer_ids(db: &impl ConnectionTrait, reset_id: Uuid) -> Result<Vec<Uuid>, DbErr> {
    Ok(mfa_reset_customers::Entity::find()
        .filter(mfa_reset_customers::Column::ResetId.eq(reset_id))
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.customer_id)
        .collect())
}

/// Items of a reset after `after_position`, in order, at most `limit`.
pub async fn items(
    db: &impl ConnectionTrait,
    reset_id: Uuid,
    after_position: Option<i32>,
    limit: Option<u64>,
) -> Result<Vec<mfa_reset_items::Model>, DbErr> {
    let mut query =
        mfa_reset_items::Entity::find().filter(mfa_reset_items::Column::ResetId.eq(reset_id));
    if let Some(after) = after_position {
        query = query.filter(mfa_reset_items::Column::Position.gt(after));
    }
    if let Some(limit) = limit {
        query = query.limit(limit);
    }
    query
        .order_by_asc(mfa_reset_items::Column::Position)
        .all(db)
        .await
}

/// Sets a reset's state and the matching timestamp column.
pub async fn set_state(
    db: &impl ConnectionTrait,
    id: Uuid,
    state: &str,
    at_column: mfa_resets::Column,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbErr> {
    mfa_resets::Entity::update_many()
        .col_expr(mfa_resets::Column::State, Expr::value(state))
        .col_expr(at_column, Expr::value(now))
        .filter(mfa_resets::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The users among `user_ids` that belong to `customer_ids`.
pub async fn users_in(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    user_ids: &[Uuid],
) -> Result<Vec<users::Model>, DbErr> {
    let mut found = Vec::with_capacity(user_ids.len());
    for chunk in user_ids.chunks(CHUNK) {
        found.extend(
            users::Entity::find()
                .filter(users::Column::CustomerId.is_in(customer_ids.iter().copied()))
                .filter(users::Column::Id.is_in(chunk.iter().copied()))
                .all(db)
                .await?,
        );
    }
    Ok(found)
}

/// Every method of `user_ids` (in `customer_ids`), ordered by id within each chunk.
pub async fn methods_of(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    user_ids: &[Uuid],
) -> Result<Vec<methods::Model>, DbErr> {
    let mut found = Vec::new();
    for chunk in user_ids.chunks(CHUNK) {
        found.extend(
            methods::Entity::find()
                .filter(methods::Column::CustomerId.is_in(customer_ids.iter().copied()))
                .filter(methods::Column::UserId.is_in(chunk.iter().copied()))
                .order_by_asc(methods::Column::Id)
                .all(db)
                .await?,
        );
    }
    Ok(found)
}

/// Deletes methods by id (within `customer_ids`); returns the rows deleted.
pub async fn delete_methods(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    ids: &[Uuid],
) -> Result<u64, DbErr> {
    let mut deleted = 0;
    for chunk in ids.chunks(CHUNK) {
        deleted += methods::Entity::delete_many()
            .filter(methods::Column::CustomerId.is_in(customer_ids.iter().copied()))
            .filter(methods::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

/// Deactivates active methods by id (within `customer_ids`); returns the rows changed.
pub async fn deactivate_methods(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    ids: &[Uuid],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    let mut changed = 0;
    for chunk in ids.chunks(CHUNK) {
        changed += methods::Entity::update_many()
            .col_expr(methods::Column::State, Expr::value("DEACTIVATED"))
            .col_expr(methods::Column::UpdatedAt, Expr::value(now))
            .filter(methods::Column::CustomerId.is_in(customer_ids.iter().copied()))
            .filter(methods::Column::Id.is_in(chunk.iter().copied()))
            .filter(methods::Column::State.eq("ACTIVE"))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(changed)
}

/// Marks users as reset at `now`, and those in `registration_required` as having to
/// register MFA again.
pub async fn mark_users_reset(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    user_ids: &[Uuid],
    registration_required: &[Uuid],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbErr> {
    for chunk in user_ids.chunks(CHUNK) {
        users::Entity::update_many()
            .col_expr(users::Column::MfaResetAt, Expr::value(now))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::CustomerId.is_in(customer_ids.iter().copied()))
            .filter(users::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    for chunk in registration_required.chunks(CHUNK) {
        users::Entity::update_many()
            .col_expr(users::Column::MfaRegistrationRequired, Expr::value(true))
            .filter(users::Column::CustomerId.is_in(customer_ids.iter().copied()))
            .filter(users::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    Ok(())
}
