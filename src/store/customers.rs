//! Queries on `customers`.

use super::entities::{
    customers::{ActiveModel, Column, Entity, Model},
    role_assignments,
};
use super::ids::CustomerId;
use super::values::MfaPolicy;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
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

/// How many users a customer has, by MFA state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounts {
    /// Every user.
    pub users: i64,
    /// Users with at least one active method.
    pub mfa_registered: i64,
    /// Users flagged to register again.
    pub registration_required: i64,
}

#[derive(Debug, FromQueryResult)]
struct CountRow {
    customer_id: uuid::Uuid,
    what: i32,
    n: i64,
}

/// The user counts of each of `ids` (absent: no users), in one statement read from indexes
/// alone (see migration 4): three grouped counts, `UNION ALL`.
pub async fn user_counts(
    db: &impl ConnectionTrait,
    ids: &[CustomerId],
) -> Result<std::collections::HashMap<CustomerId, UserCounts>, DbErr> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let statement = user_counts_statement(db.get_database_backend(), ids);
    let rows = CountRow::find_by_statement(statement).all(db).await?;
    let mut counts: std::collections::HashMap<CustomerId, UserCounts> = Default::default();
    for row in rows {
        let entry = counts.entry(row.customer_id.into()).or_default();
        match row.what {
            0 => entry.users = row.n,
            1 => entry.mfa_registered = row.n,
            _ => entry.registration_required = row.n,
        }
    }
    Ok(counts)
}

/// The statement [`user_counts`] runs, with its values: what the bench shows the plan of.
pub fn user_counts_statement(
    backend: sea_orm::DbBackend,
    ids: &[CustomerId],
) -> sea_orm::Statement {
    use super::entities::{authentication_methods as methods, users};
    use super::values::MethodState;
    use sea_orm::sea_query::{Asterisk, Query, SelectStatement, UnionType};
    let of_users = |what: i32, required_only: bool| -> SelectStatement {
        let mut select = Query::select();
        select
            .column(users::Column::CustomerId)
            .expr_as(Expr::val(what), "what")
            .expr_as(Expr::col(users::Column::Id).count(), "n")
            .from(users::Entity)
            .and_where(users::Column::CustomerId.is_in(ids.iter().copied()))
            .group_by_col(users::Column::CustomerId);
        if required_only {
            // The partial index's own predicate, written out: a bound `= $1` would not let
            // the planner prove it (PostgreSQL's generic plans, SQLite's planner).
            select.and_where(Expr::col((
                users::Entity,
                users::Column::MfaRegistrationRequired,
            )));
        }
        select
    };
    // Users with an active method: grouped by (customer, user) first, then counted per
    // customer. Both groupings follow the partial index's order, so neither sorts; a
    // `COUNT(DISTINCT user_id)` would sort every active method of the page's customers
    // (112,500 rows, spilling to disk, for 500 customers of 250 users).
    let with_active_method = Query::select()
        .column(methods::Column::CustomerId)
        .column(methods::Column::UserId)
        .from(methods::Entity)
        .and_where(methods::Column::CustomerId.is_in(ids.iter().copied()))
        .and_where(
            Expr::col((methods::Entity, methods::Column::State))
                .eq(Expr::cust(format!("'{}'", MethodState::Active.as_str()))),
        )
        .group_by_col(methods::Column::CustomerId)
        .group_by_col(methods::Column::UserId)
        .to_owned();
    let registered = Query::select()
        .column(methods::Column::CustomerId)
        .expr_as(Expr::val(1), "what")
        .expr_as(Expr::col(Asterisk).count(), "n")
        .from_subquery(with_active_method, "registered")
        .group_by_col(methods::Column::CustomerId)
        .to_owned();
    let query = of_users(0, false)
        .union(UnionType::All, registered)
        .union(UnionType::All, of_users(2, true))
        .to_owned();
    backend.build(&query)
}
