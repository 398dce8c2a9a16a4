//! Queries on `role_assignments`. `customer_id = NULL` is the `*` assignment (every
//! customer, present and future).

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{
    entities::role_assignments::{ActiveModel, Column, Entity, Model},
    ids::CustomerId,
    values::Role,
};

/// The subject's assignments on any of `customer_ids`, and on `*`.
pub async fn assignments_for(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_ids: &[CustomerId],
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

/// Locks the subjects' assignments `FOR SHARE` until the transaction ends (PostgreSQL): a
/// revoke then waits until a change made under those roles has committed, and a change never
/// commits after a revoke it began before. One statement, in id order, however many
/// subjects (an approval holds both the requester's and the approver's).
pub async fn lock_assignments(db: &impl ConnectionTrait, subjects: &[&str]) -> Result<(), DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Subject.is_in(subjects.iter().copied()))
            .order_by_asc(Column::Id)
            .lock_shared()
            .into_tuple::<Uuid>()
            .all(db)
            .await?;
    }
    Ok(())
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

fn same_assignment(subject: &str, customer_id: Option<CustomerId>, role: Role) -> Condition {
    let customer = match customer_id {
        Some(id) => Column::CustomerId.eq(id),
        None => Column::CustomerId.is_null(),
    };
    Condition::all()
        .add(Column::Subject.eq(subject))
        .add(customer)
        .add(Column::Role.eq(role.as_str()))
}

/// Grants `role` to `subject` on one customer or on `*`; returns false when it was
/// already held (granting is idempotent, also when two grants race: the unique indexes
/// refuse the second, which then finds the role held).
pub async fn grant(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_id: Option<CustomerId>,
    role: Role,
) -> Result<bool, DbErr> {
    let existing = Entity::find()
        .filter(same_assignment(subject, customer_id, role))
        .one(db)
        .await?;
    if existing.is_some() {
        return Ok(false);
    }
    // A concurrent grant of the same role wins the unique index: nothing is inserted, and
    // the transaction stays usable (a caught unique violation would abort it on PostgreSQL).
    let inserted = Entity::insert(ActiveModel {
        id: Set(Uuid::now_v7()),
        subject: Set(subject.to_string()),
        customer_id: Set(customer_id.map(Into::into)),
        role: Set(role.as_str().to_string()),
        created_at: Set(Utc::now()),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::new()
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(inserted == 1)
}

/// Takes `role` on one customer or on `*` away from `subject`; returns false when it
/// was not held.
pub async fn revoke(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_id: Option<CustomerId>,
    role: Role,
) -> Result<bool, DbErr> {
    let result = Entity::delete_many()
        .filter(same_assignment(subject, customer_id, role))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}
