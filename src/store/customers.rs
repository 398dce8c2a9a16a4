//! Queries on `customers`.

use super::entities::{
    customers::{ActiveModel, Column, Entity, Model},
    role_assignments,
};
use super::ids::CustomerId;
use super::values::MfaPolicy;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

/// The customers among `ids` that exist.
pub async fn find_many(db: &impl ConnectionTrait, ids: &[CustomerId]) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await
}

/// One page of the customers `subject` may see, ordered by id, after `after`. With a
/// role on `*` that is every customer; otherwise those named by an assignment.
pub async fn list_visible(
    db: &impl ConnectionTrait,
    subject: &str,
    everywhere: bool,
    after: Option<CustomerId>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find();
    if !everywhere {
        // A subquery rather than a join: a subject may hold several roles in one customer.
        query = query.filter(
            Column::Id.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(role_assignments::Column::CustomerId)
                    .from(role_assignments::Entity)
                    .and_where(role_assignments::Column::Subject.eq(subject))
                    .and_where(role_assignments::Column::CustomerId.is_not_null())
                    .to_owned(),
            ),
        );
    }
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    query.order_by_asc(Column::Id).limit(limit).all(db).await
}

/// Inserts a customer.
pub async fn insert(db: &impl ConnectionTrait, customer: Model) -> Result<Model, DbErr> {
    let active: ActiveModel = customer.clone().into();
    Entity::insert(active).exec_without_returning(db).await?;
    Ok(customer)
}

/// The customer named `name`, if any.
pub async fn find_by_name(db: &impl ConnectionTrait, name: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(Column::Name.eq(name)).one(db).await
}

/// A customer setting that a PRIVILEGED_AUTHENTICATION_ADMIN changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The MFA policy.
    MfaPolicy(MfaPolicy),
    /// The four-eyes approval threshold (users; 0: never).
    ApprovalThreshold(u32),
}

/// Stores a changed setting of customer `id`.
pub async fn set(
    db: &impl ConnectionTrait,
    id: CustomerId,
    setting: Setting,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbErr> {
    let (column, value) = match setting {
        Setting::MfaPolicy(policy) => (Column::MfaPolicy, Expr::value(policy.as_str())),
        Setting::ApprovalThreshold(threshold) => (
            Column::ApprovalThreshold,
            // Validated at the edge to at most 10,000.
            Expr::value(i32::try_from(threshold).unwrap_or(i32::MAX)),
        ),
    };
    Entity::update_many()
        .col_expr(column, value)
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Locks customer `id` for a change of its own columns until the transaction ends
/// (PostgreSQL, `FOR NO KEY UPDATE`): concurrent changes of it, and confirms (which hold their
/// customers `FOR SHARE`), wait; rows being inserted that refer to it do not. Read it after
/// this, and the read is the latest.
pub async fn lock_for_change(db: &impl ConnectionTrait, id: CustomerId) -> Result<(), DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        Entity::find_by_id(id)
            .select_only()
            .column(Column::Id)
            .lock(sea_orm::sea_query::LockType::NoKeyUpdate)
            .into_tuple::<uuid::Uuid>()
            .all(db)
            .await?;
    }
    Ok(())
}

/// One customer by id.
pub async fn find(db: &impl ConnectionTrait, id: CustomerId) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.uuid()).one(db).await
}
