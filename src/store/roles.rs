//! Queries on `role_assignments`. `customer_id = NULL` is the `*` assignment (every
//! customer, present and future).

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QueryOrder,
};
use uuid::Uuid;

use super::entities::role_assignments::{ActiveModel, Column, Entity, Model};

/// The subject's assignments on any of `customer_ids`, and on `*`.
pub async fn assignments_for(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_ids: &[Uuid],
) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(Column::Subject.eq(subject))
        .filter(
            Condition::any()
                .add(Column::CustomerId.is_null())
                .add(Column::CustomerId.is_in(customer_ids.iter().copied())),
        )
        .all(db)
        .await
}

/// Whether the subject holds any assignment on `*`.
pub async fn has_any_everywhere(db: &impl ConnectionTrait, subject: &str) -> Result<bool, DbErr> {
    Ok(Entity::find()
        .filter(Column::Subject.eq(subject))
        .filter(Column::CustomerId.is_null())
        .one(db)
        .await?
        .is_some())
}

/// Every assignment, or one subject's, ordered by subject then id.
pub async fn list(db: &impl ConnectionTrait, subject: Option<&str>) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find();
    if let Some(subject) = subject {
        query = query.filter(Column::Subject.eq(subject));
    }
    query
        .order_by_asc(Column::Subject)
        .order_by_asc(Column::Id)
        .all(db)
        .await
}

fn same_assignment(subject: &str, customer_id: Option<Uuid>, role: &str) -> Condition {
    let customer = match customer_id {
        Some(id) => Column::CustomerId.eq(id),
        None => Column::CustomerId.is_null(),
    };
    Condition::all()
        .add(Column::Subject.eq(subject))
        .add(customer)
        .add(Column::Role.eq(role))
}

/// Grants `role` to `subject` on one customer or on `*`; returns false when it was
/// already held (granting is idempotent).
pub async fn grant(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_id: Option<Uuid>,
    role: &str,
) -> Result<bool, DbErr> {
    let existing = Entity::find()
        .filter(same_assignment(subject, customer_id, role))
        .one(db)
        .await?;
    if existing.is_some() {
        return Ok(false);
    }
    Entity::insert(ActiveModel {
        id: Set(Uuid::now_v7()),
        subject: Set(subject.to_string()),
        customer_id: Set(customer_id),
        role: Set(role.to_string()),
        created_at: Set(Utc::now()),
    })
    .exec(db)
    .await?;
    Ok(true)
}

/// Takes `role` on one customer or on `*` away from `subject`; returns false when it
/// was not held.
pub async fn revoke(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_id: Option<Uuid>,
    role: &str,
) -> Result<bool, DbErr> {
    let result = Entity::delete_many()
        .filter(same_assignment(subject, customer_id, role))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}
