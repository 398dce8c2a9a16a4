//! Queries on `authentication_methods`. Every query is confined to the customer ids it
//! is given.

use super::ids::{CustomerId, MethodId, UserId};
use super::values::MethodState;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};

use super::entities::authentication_methods::{ActiveModel, Column, Entity, Model};

/// Every method of the given users, ordered by user then id, in one query.
pub async fn of_users(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user_ids: &[UserId],
) -> Result<Vec<Model>, DbErr> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    Entity::find()
        .filter(super::within_customers(
            db,
            Entity,
            Column::CustomerId,
            customer_ids,
        ))
        .filter(Column::UserId.is_in(user_ids.iter().copied()))
        .order_by_asc(Column::UserId)
        .order_by_asc(Column::Id)
        .all(db)
        .await
}

/// One page of one user's methods, ordered by id (keyset: ids after `after`).
pub async fn of_user(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    user_id: UserId,
    after: Option<MethodId>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find()
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::UserId.eq(user_id));
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    query.order_by_asc(Column::Id).limit(limit).all(db).await
}

/// How many methods one user has, active or not.
pub async fn count_of_user(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    user_id: UserId,
) -> Result<u64, DbErr> {
    Entity::find()
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::UserId.eq(user_id))
        .count(db)
        .await
}

/// The method with `id` if it belongs to `customer_id`.
pub async fn find_in(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: MethodId,
) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .one(db)
        .await
}

/// Inserts a method.
pub async fn insert(db: &impl ConnectionTrait, method: Model) -> Result<Model, DbErr> {
    let active: ActiveModel = method.clone().into();
    Entity::insert(active).exec_without_returning(db).await?;
    Ok(method)
}

/// Deletes one method; returns whether a row was deleted.
pub async fn delete(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: MethodId,
) -> Result<bool, DbErr> {
    let result = Entity::delete_many()
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Deactivates one active method; returns whether a row changed.
pub async fn deactivate(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: MethodId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbErr> {
    let result = Entity::update_many()
        .col_expr(
            Column::State,
            Expr::value(MethodState::Deactivated.as_str()),
        )
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .filter(Column::State.eq(MethodState::Active.as_str()))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}
