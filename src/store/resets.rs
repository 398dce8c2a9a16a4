//! Queries on `mfa_resets`, `mfa_reset_customers` and `mfa_reset_items`, and the
//! set-based writes a confirmed reset makes. Lists of ids and of rows travel as one
//! parameter each ([`super::bulk`]): the number of statements does not grow with the users
//! or the customers of a reset.

use super::bulk::{self, Kind};
use super::ids::{CustomerId, MethodId, ResetId, UserId};
use super::values::{MethodState, ResetState, SkipReason};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::{ArrayType, Expr, ExprTrait, Query},
};

use super::entities::{
    authentication_methods as methods, customers, mfa_reset_customers, mfa_reset_items, mfa_resets,
    users,
};

/// The columns of `mfa_reset_items` that [`insert`] fills, in the order of [`item_row`].
const ITEM_COLUMNS: bulk::Columns = bulk::Columns {
    table: "mfa_reset_items",
    columns: &[
        ("reset_id", Kind::Uuid),
        ("customer_id", Kind::Uuid),
        ("user_id", Kind::Uuid),
        ("position", Kind::Integer),
        ("display_name", Kind::Text),
        ("is_admin", Kind::Bool),
        ("skip_reason", Kind::Text),
        ("planned_methods", Kind::Text),
        ("external_subject", Kind::Text),
    ],
};

fn item_row(item: mfa_reset_items::Model) -> serde_json::Value {
    serde_json::Value::Array(vec![
        bulk::uuid_cell(item.reset_id),
        bulk::uuid_cell(item.customer_id),
        bulk::uuid_cell(item.user_id),
        item.position.into(),
        item.display_name.into(),
        item.is_admin.into(),
        bulk::opt_text_cell(item.skip_reason),
        item.planned_methods.into(),
        bulk::opt_text_cell(item.external_subject),
    ])
}

/// Stores a new reset with its customers and items (one insert each).
///
/// Items are inserted in user id order (each keeps its `position`), the order in which a
/// confirm locks users: should items ever take locks on their users again (the foreign key
/// they had did, and deadlocked with confirms of the same users on PostgreSQL), summaries and
/// confirms still take them in one order.
pub async fn insert(
    db: &impl ConnectionTrait,
    reset: mfa_resets::Model,
    customer_ids: &[CustomerId],
    mut items: Vec<mfa_reset_items::Model>,
) -> Result<(), DbErr> {
    items.sort_unstable_by_key(|item| item.user_id);
    let reset_id = reset.id;
    mfa_resets::Entity::insert(mfa_resets::ActiveModel::from(reset))
        .exec_without_returning(db)
        .await?;
    mfa_reset_customers::Entity::insert_many(customer_ids.iter().map(|&customer_id| {
        mfa_reset_customers::ActiveModel::from(mfa_reset_customers::Model {
            reset_id,
            customer_id: customer_id.into(),
        })
    }))
    .exec_without_returning(db)
    .await?;
    bulk::insert_rows(db, &ITEM_COLUMNS, items.into_iter().map(item_row).collect()).await
}

/// A reset by id. With `lock`, the row is locked for the rest of the transaction on
/// PostgreSQL (`FOR UPDATE`), so concurrent confirms of one reset run one after the
/// other; SQLite's `BEGIN IMMEDIATE` already serialises writers.
pub async fn find(
    db: &impl ConnectionTrait,
    id: ResetId,
    lock: bool,
) -> Result<Option<mfa_resets::Model>, DbErr> {
    let mut query = mfa_resets::Entity::find_by_id(id);
    if lock && db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.one(db).await
}

/// The customers of reset `id`, in id order: what decides who may see and act on it.
pub async fn customers_of(
    db: &impl ConnectionTrait,
    id: ResetId,
) -> Result<Vec<CustomerId>, DbErr> {
    let ids: Vec<uuid::Uuid> = mfa_reset_customers::Entity::find()
        .select_only()
        .column(mfa_reset_customers::Column::CustomerId)
        .filter(mfa_reset_customers::Column::ResetId.eq(id))
        .order_by_asc(mfa_reset_customers::Column::CustomerId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids.into_iter().map(CustomerId::from).collect())
}

/// Filters of [`items`]; they combine with AND.
#[derive(Clone, Debug, Default)]
pub struct ItemFilter {
    /// Only items of these customers (empty: all).
    pub customer_ids: Vec<CustomerId>,
    /// Only skipped (`Some(true)`) or reset (`Some(false)`) items.
    pub skipped: Option<bool>,
    /// Only items skipped for one of these reasons (empty: any).
    pub skip_reasons: Vec<SkipReason>,
}

/// Items of a reset matching `filter` after `after_position`, in order, at most `limit`.
pub async fn items(
    db: &impl ConnectionTrait,
    reset_id: ResetId,
    filter: Option<&ItemFilter>,
    after_position: Option<i32>,
    limit: Option<u64>,
) -> Result<Vec<mfa_reset_items::Model>, DbErr> {
    use mfa_reset_items::Column as C;
    let mut query = mfa_reset_items::Entity::find().filter(C::ResetId.eq(reset_id));
    if let Some(filter) = filter {
        if !filter.customer_ids.is_empty() {
            query = query.filter(C::CustomerId.is_in(filter.customer_ids.iter().copied()));
        }
        match filter.skipped {
            Some(true) => query = query.filter(C::SkipReason.is_not_null()),
            Some(false) => query = query.filter(C::SkipReason.is_null()),
            None => {}
        }
        if !filter.skip_reasons.is_empty() {
            query =
                query.filter(C::SkipReason.is_in(filter.skip_reasons.iter().map(|r| r.as_str())));
        }
    }
    if let Some(after) = after_position {
        query = query.filter(C::Position.gt(after));
    }
    if let Some(limit) = limit {
        query = query.limit(limit);
    }
    query.order_by_asc(C::Position).all(db).await
}

/// Moves a reset from one of the states `from` to `to`, setting the given columns (who and
/// when), provided it has not expired by the database's clock; returns whether it changed
/// (it was in one of `from`, and unexpired).
pub async fn transition<const N: usize>(
    db: &impl ConnectionTrait,
    id: ResetId,
    from: &[ResetState],
    to: ResetState,
    set: [(mfa_resets::Column, sea_orm::Value); N],
) -> Result<bool, DbErr> {
    let mut update = mfa_resets::Entity::update_many()
        .col_expr(mfa_resets::Column::State, Expr::value(to.as_str()));
    for (column, value) in set {
        update = update.col_expr(column, Expr::value(value));
    }
    let result = update
        .filter(mfa_resets::Column::Id.eq(id))
        .filter(mfa_resets::Column::State.is_in(from.iter().map(|s| s.as_str())))
        .filter(super::later_than_db_now(
            db.get_database_backend(),
            mfa_resets::Column::ExpiresAt,
        ))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Who may approve, for [`ListFilter::approvable_by`].
#[derive(Clone, Debug)]
pub struct Approver {
    /// The approver's subject: not the requester, and not one of the reset's users.
    pub subject: String,
    /// Selected customers where the approver may reset users.
    pub may_reset: Vec<CustomerId>,
    /// Selected customers where the approver may reset admins.
    pub may_reset_admins: Vec<CustomerId>,
}

/// Filters of [`list`]; they combine with AND. The state lists combine with OR.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// The selection: a reset is listed only when all its customers are among these.
    pub customer_ids: Vec<CustomerId>,
    /// Only resets requested by this subject.
    pub requested_by: Option<String>,
    /// Stored states that may still expire, wanted while not expired.
    pub open_states: Vec<ResetState>,
    /// Stored final states, wanted as they are.
    pub final_states: Vec<ResetState>,
    /// Open resets whose expiry has passed.
    pub expired: bool,
    /// Only resets awaiting approval that this approver may approve.
    pub approvable_by: Option<Approver>,
}

/// The stored states in which a reset may still be applied (and so may expire).
const OPEN_STATES: [ResetState; 2] = [ResetState::Pending, ResetState::AwaitingApproval];

fn spellings(states: &[ResetState]) -> impl Iterator<Item = &'static str> + '_ {
    states.iter().map(|s| s.as_str())
}

/// `EXISTS (a customer of this reset outside `customer_ids`)`.
fn has_customer_outside(customer_ids: &[CustomerId]) -> Expr {
    use mfa_reset_customers::{Column, Entity};
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(Entity)
            .and_where(
                Expr::col((Entity, Column::ResetId))
                    .equals((mfa_resets::Entity, mfa_resets::Column::Id)),
            )
            .and_where(
                Expr::col((Entity, Column::CustomerId)).is_not_in(customer_ids.iter().copied()),
            )
            .to_owned(),
    )
}

/// `EXISTS (an item of this reset that is not skipped and matches `condition`)`.
fn resets_a_user_where(condition: Condition) -> Expr {
    use mfa_reset_items::{Column, Entity};
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(Entity)
            .and_where(
                Expr::col((Entity, Column::ResetId))
                    .equals((mfa_resets::Entity, mfa_resets::Column::Id)),
            )
            .and_where(Expr::col((Entity, Column::SkipReason)).is_null())
            .cond_where(condition)
            .to_owned(),
    )
}

/// One page of the resets that `filter` lists, newest first (ids before `before`). `now`
/// tells open resets from expired ones.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: &ListFilter,
    now: chrono::DateTime<chrono::Utc>,
    before: Option<ResetId>,
    limit: u64,
) -> Result<Vec<mfa_resets::Model>, DbErr> {
    use mfa_resets::Column as C;
    let in_selection = Query::select()
        .column(mfa_reset_customers::Column::ResetId)
        .from(mfa_reset_customers::Entity)
        .and_where(
            mfa_reset_customers::Column::CustomerId.is_in(filter.customer_ids.iter().copied()),
        )
        .to_owned();
    let mut query = mfa_resets::Entity::find()
        .filter(C::Id.in_subquery(in_selection))
        .filter(has_customer_outside(&filter.customer_ids).not());
    let mut states = Condition::any();
    if !filter.open_states.is_empty() {
        states = states.add(
            Condition::all()
                .add(C::State.is_in(spellings(&filter.open_states)))
                .add(C::ExpiresAt.gt(now)),
        );
    }
    if !filter.final_states.is_empty() {
        states = states.add(C::State.is_in(spellings(&filter.final_states)));
    }
    if filter.expired {
        states = states.add(
            Condition::all()
                .add(C::State.is_in(spellings(&OPEN_STATES)))
                .add(C::ExpiresAt.lte(now)),
        );
    }
    if !states.is_empty() {
        query = query.filter(states);
    }
    if let Some(requested_by) = &filter.requested_by {
        query = query.filter(C::RequestedBy.eq(requested_by.as_str()));
    }
    if let Some(approver) = &filter.approvable_by {
        use mfa_reset_items::Column as Item;
        let admin_elsewhere = Condition::all()
            .add(Expr::col((mfa_reset_items::Entity, Item::IsAdmin)).eq(true))
            .add(
                Expr::col((mfa_reset_items::Entity, Item::CustomerId))
                    .is_not_in(approver.may_reset_admins.iter().copied()),
            );
        let approver_is_reset = Condition::all().add(
            Expr::col((mfa_reset_items::Entity, Item::ExternalSubject))
                .eq(approver.subject.as_str()),
        );
        query = query
            .filter(C::State.eq(ResetState::AwaitingApproval.as_str()))
            .filter(C::ExpiresAt.gt(now))
            .filter(C::RequestedBy.ne(approver.subject.as_str()))
            .filter(has_customer_outside(&approver.may_reset).not())
            .filter(resets_a_user_where(admin_elsewhere).not())
            .filter(resets_a_user_where(approver_is_reset).not());
    }
    if let Some(before) = before {
        query = query.filter(C::Id.lt(before));
    }
    query.order_by_desc(C::Id).limit(limit).all(db).await
}

/// Gives the rest of a large reset's transaction the memory to sort its rows (35,000 methods
/// of 10,000 users, in lock order) without spilling to disk (PostgreSQL; `work_mem` is per
/// sort, and for this transaction only).
pub async fn prepare_bulk(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_unprepared("SET LOCAL work_mem = '64MB'").await?;
    }
    Ok(())
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

/// What the planner needs of a user: a plain row, not a whole model (a 10,000-user reset
/// reads and allocates only these columns).
#[derive(Clone, Debug, FromQueryResult)]
pub struct PlanUser {
    /// The user.
    pub id: uuid::Uuid,
    /// Their customer.
    pub customer_id: uuid::Uuid,
    /// Display name.
    pub display_name: String,
    /// Admin of their customer.
    pub is_admin: bool,
    /// Sign-in subject.
    pub external_subject: Option<String>,
    /// Whether they must register MFA again now.
    pub mfa_registration_required: bool,
}

/// The users of `customer_ids` matching `condition`, as [`PlanUser`] rows in id order (the
/// order concurrent confirms lock them in, so that they cannot deadlock).
async fn plan_users(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    condition: Expr,
    lock: Lock,
) -> Result<Vec<PlanUser>, DbErr> {
    use users::Column as C;
    let mut query = users::Entity::find()
        .select_only()
        .columns([
            C::Id,
            C::CustomerId,
            C::DisplayName,
            C::IsAdmin,
            C::ExternalSubject,
            C::MfaRegistrationRequired,
        ])
        .filter(super::within_customers(
            db,
            users::Entity,
            C::CustomerId,
            customer_ids,
        ))
        .filter(condition)
        .order_by_asc(C::Id);
    if locking(db, lock) {
        query = query.lock_exclusive();
    }
    query.into_model::<PlanUser>().all(db).await
}

/// The users among `user_ids` that belong to `customer_ids`, in id order.
pub async fn users_in(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user_ids: &[UserId],
    lock: Lock,
) -> Result<Vec<PlanUser>, DbErr> {
    let ids = Expr::col((users::Entity, users::Column::Id));
    let condition = bulk::among(db, ids, user_ids.iter().map(|&id| id.into()));
    plan_users(db, customer_ids, condition, lock).await
}

/// The users of `customer_ids` with one of these external subjects (unique within a
/// customer), in id order.
pub async fn users_with_subjects(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    subjects: &[String],
) -> Result<Vec<PlanUser>, DbErr> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let column = Expr::col((users::Entity, users::Column::ExternalSubject));
    let condition = bulk::among_texts(db, column, subjects.iter().map(String::as_str));
    plan_users(db, customer_ids, condition, Lock::None).await
}

/// Locks the customers against policy changes until the transaction ends (PostgreSQL;
/// `FOR SHARE`, so confirms of other resets in the same customers do not wait).
pub async fn lock_customers(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
) -> Result<(), DbErr> {
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

/// What the planner needs of a method: a plain row.
#[derive(Clone, Debug, FromQueryResult)]
pub struct PlanMethod {
    /// The method.
    pub id: uuid::Uuid,
    /// Its user.
    pub user_id: uuid::Uuid,
    /// Kind, as stored.
    pub kind: String,
    /// Scope, as stored.
    pub scope: String,
    /// Label, unmasked.
    pub label: String,
    /// State, as stored.
    pub state: String,
}

/// Every method of `user_ids` (in `customer_ids`), in id order (the order concurrent
/// confirms lock them in).
pub async fn methods_of(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user_ids: &[UserId],
    lock: Lock,
) -> Result<Vec<PlanMethod>, DbErr> {
    use methods::Column as C;
    let mut query = methods::Entity::find()
        .select_only()
        .columns([C::Id, C::UserId, C::Kind, C::Scope, C::Label, C::State])
        .filter(super::within_customers(
            db,
            methods::Entity,
            C::CustomerId,
            customer_ids,
        ))
        .filter(bulk::among(
            db,
            Expr::col((methods::Entity, C::UserId)),
            user_ids.iter().map(|&id| id.into()),
        ))
        .order_by_asc(C::Id);
    if locking(db, lock) {
        query = query.lock_exclusive();
    }
    query.into_model::<PlanMethod>().all(db).await
}

/// Methods `ids`, within `customer_ids`: what a confirm deletes or deactivates.
fn methods_by_id(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    ids: &[MethodId],
) -> Condition {
    Condition::all()
        .add(super::within_customers(
            db,
            methods::Entity,
            methods::Column::CustomerId,
            customer_ids,
        ))
        .add(bulk::among(
            db,
            Expr::col((methods::Entity, methods::Column::Id)),
            ids.iter().map(|&id| id.into()),
        ))
}

/// Deletes methods by id (within `customer_ids`); returns the rows deleted.
pub async fn delete_methods(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    ids: &[MethodId],
) -> Result<u64, DbErr> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(methods::Entity::delete_many()
        .filter(methods_by_id(db, customer_ids, ids))
        .exec(db)
        .await?
        .rows_affected)
}

/// Deactivates active methods by id (within `customer_ids`); returns the rows changed.
pub async fn deactivate_methods(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    ids: &[MethodId],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(methods::Entity::update_many()
        .col_expr(
            methods::Column::State,
            Expr::value(MethodState::Deactivated.as_str()),
        )
        .col_expr(methods::Column::UpdatedAt, Expr::value(now))
        .filter(methods_by_id(db, customer_ids, ids))
        .filter(methods::Column::State.eq(MethodState::Active.as_str()))
        .exec(db)
        .await?
        .rows_affected)
}

/// Marks users as reset at `now`, and those in `registration_required` (a subset) as
/// having to register MFA again, in one statement; returns the rows changed.
pub async fn mark_users_reset(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user_ids: &[UserId],
    registration_required: &[UserId],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    if user_ids.is_empty() {
        return Ok(0);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        // Joined with the two arrays, not `id = ANY(registration_required)` row by row.
        let sql = "UPDATE users AS u SET mfa_reset_at = $1, updated_at = $1, \
            mfa_registration_required = u.mfa_registration_required OR r.required \
            FROM unnest($2::uuid[], $3::bool[]) AS r(id, required) \
            WHERE u.id = r.id AND u.customer_id = ANY($4::uuid[])";
        let required: std::collections::HashSet<UserId> =
            registration_required.iter().copied().collect();
        let uuids = |ids: &mut dyn Iterator<Item = uuid::Uuid>| {
            let ids = ids.map(|id| sea_orm::Value::Uuid(Some(id))).collect();
            sea_orm::Value::Array(ArrayType::Uuid, Some(Box::new(ids)))
        };
        let flags = user_ids
            .iter()
            .map(|id| sea_orm::Value::Bool(Some(required.contains(id))))
            .collect();
        let values = [
            now.into(),
            uuids(&mut user_ids.iter().map(|&id| id.into())),
            sea_orm::Value::Array(ArrayType::Bool, Some(Box::new(flags))),
            uuids(&mut customer_ids.iter().map(|&id| id.into())),
        ];
        let result = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await?;
        return Ok(result.rows_affected());
    }
    let id = || Expr::col((users::Entity, users::Column::Id));
    let required = Expr::col((users::Entity, users::Column::MfaRegistrationRequired)).or(
        bulk::among(db, id(), registration_required.iter().map(|&u| u.into())),
    );
    Ok(users::Entity::update_many()
        .col_expr(users::Column::MfaResetAt, Expr::value(now))
        .col_expr(users::Column::UpdatedAt, Expr::value(now))
        .col_expr(users::Column::MfaRegistrationRequired, required)
        .filter(super::within_customers(
            db,
            users::Entity,
            users::Column::CustomerId,
            customer_ids,
        ))
        .filter(bulk::among(db, id(), user_ids.iter().map(|&u| u.into())))
        .exec(db)
        .await?
        .rows_affected)
}

/// Deletes the resets made before `cutoff` that can no longer change (confirmed,
/// cancelled, rejected, or expired by `now`), with their customers and items (the foreign keys
/// cascade); returns how many resets went. Audit events keep the record of what a
/// confirmed reset did.
pub async fn purge_finished(
    db: &impl ConnectionTrait,
    cutoff: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    let finished = Condition::any()
        .add(mfa_resets::Column::State.is_not_in(spellings(&OPEN_STATES)))
        .add(mfa_resets::Column::ExpiresAt.lt(now));
    Ok(mfa_resets::Entity::delete_many()
        .filter(mfa_resets::Column::CreatedAt.lt(cutoff))
        .filter(finished)
        .exec(db)
        .await?
        .rows_affected)
}
