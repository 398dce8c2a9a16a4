//! Queries on `audit_events`. Events are only ever inserted, in the transaction of
//! the change they record.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use super::bulk::{self, Kind};
use super::entities::mfa_resets;
use super::ids::{AuditEventId, CustomerId, UserId};
use super::values::{AuditAction, ResetState};

use super::entities::audit_events::{Column, Entity, Model};

/// Filters of an audit list; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only events about this user.
    pub user_id: Option<UserId>,
    /// Only events by this actor.
    pub actor: Option<String>,
    /// Only events of these actions; empty means every action.
    pub actions: Vec<AuditAction>,
    /// Only events at or after this instant.
    pub occurred_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events before this instant.
    pub occurred_before: Option<chrono::DateTime<chrono::Utc>>,
    /// A lower id bound implied by `occurred_from` (v7 ids carry their time), so that
    /// the `(customer_id, id)` index narrows the scan.
    pub min_id: Option<Uuid>,
    /// An upper id bound implied by `occurred_before`, likewise.
    pub max_id_exclusive: Option<Uuid>,
}

/// The columns of `audit_events`, in the order of [`row`].
const COLUMNS: bulk::Columns = bulk::Columns {
    table: "audit_events",
    columns: &[
        ("id", Kind::Uuid),
        ("customer_id", Kind::Uuid),
        ("occurred_at", Kind::Time),
        ("actor", Kind::Text),
        ("action", Kind::Text),
        ("user_id", Kind::Uuid),
        ("method_id", Kind::Uuid),
        ("reset_id", Kind::Uuid),
        ("reason", Kind::Text),
        ("request_id", Kind::Text),
        ("details", Kind::Text),
        ("external_subject", Kind::Text),
        ("mfa_registration_required", Kind::Bool),
        ("mfa_reset_at", Kind::Time),
    ],
};

fn row(event: Model) -> serde_json::Value {
    serde_json::Value::Array(vec![
        bulk::uuid_cell(event.id),
        bulk::opt_uuid_cell(event.customer_id),
        bulk::time_cell(event.occurred_at),
        event.actor.into(),
        event.action.into(),
        bulk::opt_uuid_cell(event.user_id),
        bulk::opt_uuid_cell(event.method_id),
        bulk::opt_uuid_cell(event.reset_id),
        bulk::opt_text_cell(event.reason),
        bulk::opt_text_cell(event.request_id),
        event.details.into(),
        bulk::opt_text_cell(event.external_subject),
        event.mfa_registration_required.into(),
        bulk::opt_time_cell(event.mfa_reset_at),
    ])
}

/// Inserts events (with `commit_seq` taken from the clock, not from the models), however
/// many, after taking the audit clock: the row lock on `audit_clock` is then held to commit,
/// so call it after every other row lock the transaction takes (as the last write but the
/// request id's), or two writers could deadlock on it. One statement on PostgreSQL (the clock
/// `UPDATE ... RETURNING` is a data-modifying `WITH`), two on SQLite. Nothing when there are no
/// events: a transaction that records nothing does not take the clock.
pub async fn insert_many(db: &impl ConnectionTrait, events: Vec<Model>) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = events.into_iter().map(row).collect();
    let extra = match db.get_database_backend() {
        DbBackend::Postgres => bulk::Extra {
            with: "WITH clock AS (UPDATE audit_clock SET seq = seq + 1 WHERE id = 1 RETURNING seq)",
            join: " CROSS JOIN clock",
            columns: &[("commit_seq", "clock.seq")],
        },
        _ => {
            // One writer at a time (`BEGIN IMMEDIATE`): the stamp cannot change before the
            // insert reads it.
            db.execute_unprepared("UPDATE audit_clock SET seq = seq + 1 WHERE id = 1")
                .await?;
            bulk::Extra {
                columns: &[("commit_seq", "(SELECT seq FROM audit_clock WHERE id = 1)")],
                ..bulk::Extra::default()
            }
        }
    };
    bulk::insert_rows_with(db, &COLUMNS, rows, &extra).await
}

/// A position in the change stream: after the events of stamps below `seq`, and those of
/// stamp `seq` with ids up to `id`.
pub type Position = (i64, Uuid);

/// The audit clock: the stamp of the latest transaction that wrote events, and the highest
/// position `purge-audit` deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// The latest stamp taken (every transaction with a stamp up to it has committed, as seen by
    /// the statement that read it).
    pub seq: i64,
    /// The highest position purged.
    pub purged: Position,
}

/// Reads the audit clock.
pub async fn clock(db: &impl ConnectionTrait) -> Result<Clock, DbErr> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT seq, purged_seq, purged_id FROM audit_clock WHERE id = 1",
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the audit_clock row".into()))?;
    Ok(Clock {
        seq: row.try_get("", "seq")?,
        purged: (
            row.try_get("", "purged_seq")?,
            row.try_get("", "purged_id")?,
        ),
    })
}

/// Which events a change stream carries; `customer_ids: None` is every customer.
#[derive(Clone, Debug, Default)]
pub struct WatchFilter {
    /// The selection (events about every customer, `customer_id` NULL, are in every one), or
    /// `None` for all customers.
    pub customer_ids: Option<Vec<CustomerId>>,
    /// Only events about this user.
    pub user_id: Option<UserId>,
    /// Only these actions; empty means every action.
    pub actions: Vec<AuditAction>,
}

/// Up to `limit` events of `filter` after position `after` with stamps up to `through`, in
/// commit order (stamp, then id: the order of a transaction's own events).
pub async fn after(
    db: &impl ConnectionTrait,
    filter: &WatchFilter,
    after: Position,
    through: i64,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let position = Expr::tuple([Expr::col(Column::CommitSeq), Expr::col(Column::Id)]);
    let mut query = Entity::find()
        .filter(position.gt(Expr::tuple([Expr::val(after.0), Expr::val(after.1)])))
        .filter(Column::CommitSeq.lte(through));
    if let Some(ids) = &filter.customer_ids {
        query = query.filter(
            Condition::any()
                .add(bulk::among(
                    db,
                    Expr::col(Column::CustomerId),
                    ids.iter().map(|id| id.uuid()),
                ))
                .add(Column::CustomerId.is_null()),
        );
    }
    if let Some(user_id) = filter.user_id {
        query = query.filter(Column::UserId.eq(user_id));
    }
    if !filter.actions.is_empty() {
        query = query.filter(Column::Action.is_in(filter.actions.iter().map(|a| a.as_str())));
    }
    query
        .order_by_asc(Column::CommitSeq)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Deletes up to `limit` events that happened before `cutoff` (their ids below `id_bound`, the
/// v7 floor of a moment a little after it, so the primary key narrows the scan), except those of
/// resets still awaiting approval, and raises the clock's purged position to the highest one
/// deleted. Returns how many it deleted; run it until 0, each batch in a transaction of its own.
pub async fn purge_batch(
    db: &impl ConnectionTrait,
    cutoff: chrono::DateTime<chrono::Utc>,
    id_bound: Uuid,
    limit: u64,
) -> Result<u64, DbErr> {
    let awaiting = sea_orm::sea_query::Query::select()
        .column(mfa_resets::Column::Id)
        .from(mfa_resets::Entity)
        .and_where(mfa_resets::Column::State.eq(ResetState::AwaitingApproval.as_str()))
        .to_owned();
    let doomed: Vec<(Uuid, i64)> = Entity::find()
        .select_only()
        .column(Column::Id)
        .column(Column::CommitSeq)
        .filter(Column::Id.lt(id_bound))
        .filter(Column::OccurredAt.lt(cutoff))
        .filter(
            Condition::any()
                .add(Column::ResetId.is_null())
                .add(Column::ResetId.not_in_subquery(awaiting)),
        )
        .order_by_asc(Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    let Some(&(highest_id, highest_seq)) = doomed.iter().max_by_key(|(id, seq)| (*seq, *id)) else {
        return Ok(0);
    };
    let backend = db.get_database_backend();
    let raise = match backend {
        DbBackend::Postgres => {
            "UPDATE audit_clock SET purged_seq = $1, purged_id = $2 \
             WHERE id = 1 AND (purged_seq, purged_id) < ($1, $2)"
        }
        _ => {
            "UPDATE audit_clock SET purged_seq = ?1, purged_id = ?2 \
             WHERE id = 1 AND (purged_seq, purged_id) < (?1, ?2)"
        }
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        raise,
        [highest_seq.into(), highest_id.into()],
    ))
    .await?;
    let deleted = Entity::delete_many()
        .filter(bulk::among(
            db,
            Expr::col(Column::Id),
            doomed.iter().map(|(id, _)| *id),
        ))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}

/// One page of events of `customer_ids`, and of every customer (`customer_id` NULL: roles on
/// `*`), newest first (ids before `before`).
///
/// Time bounds are applied exactly on `occurred_at`, and also as a coarser id range
/// (ids are v7 UUIDs whose leading bits are the creation time) that the
/// `(customer_id, id)` indexes serve.
pub async fn list(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    filter: &AuditFilter,
    before: Option<AuditEventId>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().filter(
        Condition::any()
            .add(Column::CustomerId.is_in(customer_ids.iter().copied()))
            .add(Column::CustomerId.is_null()),
    );
    if let Some(user_id) = filter.user_id {
        query = query.filter(Column::UserId.eq(user_id));
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(Column::Actor.eq(actor.as_str()));
    }
    if !filter.actions.is_empty() {
        query = query.filter(Column::Action.is_in(filter.actions.iter().map(|a| a.as_str())));
    }
    if let Some(from) = filter.occurred_from {
        query = query.filter(Column::OccurredAt.gte(from));
    }
    if let Some(before) = filter.occurred_before {
        query = query.filter(Column::OccurredAt.lt(before));
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
