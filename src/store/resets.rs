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
    authentication_methods as methods, customers, mfa_reset_customers, mfa_reset_items, mfa_resets,
    users,
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

/// Moves a PENDING reset to `state`, setting the matching timestamp column; returns
/// whether it was still PENDING (and so changed).
pub async fn finish_pending(
    db: &impl ConnectionTrait,
    id: Uuid,
    state: &str,
    at_column: mfa_resets::Column,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbErr> {
    let result = mfa_resets::Entity::update_many()
        .col_expr(mfa_resets::Column::State, Expr::value(state))
        .col_expr(at_column, Expr::value(now))
        .filter(mfa_resets::Column::Id.eq(id))
        .filter(mfa_resets::Column::State.eq("PENDING"))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Whether to lock the rows read until the transaction ends. On PostgreSQL (read
/// committed) a confirm locks what its plan covers, so that no user, method or policy
/// can change between its staleness check and its writes; SQLite's `BEGIN IMMEDIATE`
/// already keeps every other writer out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    None,
    /// `FOR UPDATE` (rows about to change) on PostgreSQL.
    ForUpdate,
}

fn locking(db: &impl ConnectionTrait, lock: Lock) -> bool {
    lock == Lock::ForUpdate && db.get_database_backend() == DbBackend::Postgres
}

/// The users among `user_ids` that belong to `customer_ids`, in id order (the order
/// concurrent confirms lock them in, so that they cannot deadlock).
pub async fn users_in(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    user_ids: &[Uuid],
    lock: Lock,
) -> Result<Vec<users::Model>, DbErr> {
    let mut sorted = user_ids.to_vec();
    sorted.sort_unstable();
    let mut found = Vec::with_capacity(user_ids.len());
    for chunk in sorted.chunks(CHUNK) {
        let mut query = users::Entity::find()
            .filter(super::within_customers(
                db,
                users::Entity,
                users::Column::CustomerId,
                customer_ids,
            ))
            .filter(users::Column::Id.is_in(chunk.iter().copied()))
            .order_by_asc(users::Column::Id);
        if locking(db, lock) {
            query = query.lock_exclusive();
        }
        found.extend(query.all(db).await?);
    }
    Ok(found)
}

/// Locks the customers against policy changes until the transaction ends (PostgreSQL;
/// `FOR SHARE`, so confirms of other resets in the same customers do not wait).
pub async fn lock_customers(db: &impl ConnectionTrait, customer_ids: &[Uuid]) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    customers::Entity::find()
        .filter(customers::Column::Id.is_in(customer_ids.iter().copied()))
        .order_by_asc(customers::Column::Id)
        .lock_shared()
        .all(db)
        .await?;
    Ok(())
}

/// Every method of `user_ids` (in `customer_ids`), ordered by id within each chunk.
pub async fn methods_of(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    user_ids: &[Uuid],
    lock: Lock,
) -> Result<Vec<methods::Model>, DbErr> {
    let mut found = Vec::new();
    for chunk in user_ids.chunks(CHUNK) {
        let mut query = methods::Entity::find()
            .filter(super::within_customers(
                db,
                methods::Entity,
                methods::Column::CustomerId,
                customer_ids,
            ))
            .filter(methods::Column::UserId.is_in(chunk.iter().copied()))
            .order_by_asc(methods::Column::Id);
        if locking(db, lock) {
            query = query.lock_exclusive();
        }
        found.extend(query.all(db).await?);
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
            .filter(super::within_customers(
                db,
                methods::Entity,
                methods::Column::CustomerId,
                customer_ids,
            ))
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
            .filter(super::within_customers(
                db,
                methods::Entity,
                methods::Column::CustomerId,
                customer_ids,
            ))
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
            .filter(super::within_customers(
                db,
                users::Entity,
                users::Column::CustomerId,
                customer_ids,
            ))
            .filter(users::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    for chunk in registration_required.chunks(CHUNK) {
        users::Entity::update_many()
            .col_expr(users::Column::MfaRegistrationRequired, Expr::value(true))
            .filter(super::within_customers(
                db,
                users::Entity,
                users::Column::CustomerId,
                customer_ids,
            ))
            .filter(users::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Deletes the resets made before `cutoff` that can no longer change (confirmed,
/// cancelled, or expired by `now`), with their customers and items (the foreign keys
/// cascade); returns how many resets went. Audit events keep the record of what a
/// confirmed reset did.
pub async fn purge_finished(
    db: &impl ConnectionTrait,
    cutoff: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    use sea_orm::Condition;
    let finished = Condition::any()
        .add(mfa_resets::Column::State.ne("PENDING"))
        .add(mfa_resets::Column::ExpiresAt.lt(now));
    Ok(mfa_resets::Entity::delete_many()
        .filter(mfa_resets::Column::CreatedAt.lt(cutoff))
        .filter(finished)
        .exec(db)
        .await?
        .rows_affected)
}
