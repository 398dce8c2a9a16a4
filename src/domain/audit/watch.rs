//! The change stream's rules (DESIGN.md "Change events"): where a stream is, what it may see,
//! and the reads that carry it forward.
//!
//! Every transaction that writes audit events stamps them with the next value of a single
//! clock row, taken right before the events are written and held to commit
//! (`store::audit::insert_many`). A stamp is so only ever taken after every smaller stamp's
//! transaction committed, and a reader that sees the clock at N sees every event stamped up to
//! N. A [`Position`] is a stamp and an event id (the order of one transaction's events); a
//! stream reads the clock, then every event after its position with a stamp up to the clock,
//! and is then at the end of that stamp. Nothing is skipped: a transaction that wrote its
//! events early but commits late has the later stamp.

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::AuditEvent;
use crate::{
    domain::{
        error::{DomainError, DomainResult},
        ids::{CustomerId, UserId},
        model::{Action, AuditAction},
        reason::Reason,
        selection::{Grants, Selection},
    },
    store,
};

/// A place in the change stream: after every event stamped below `seq`, and after those
/// stamped `seq` with ids up to `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The stamp.
    pub seq: i64,
    /// The last event id of that stamp passed.
    pub id: Uuid,
}

impl Position {
    /// Before every event.
    pub const OLDEST: Position = Position {
        seq: 0,
        id: Uuid::nil(),
    };

    /// After every event stamped up to `seq`.
    pub fn end_of(seq: i64) -> Position {
        Position {
            seq,
            id: Uuid::max(),
        }
    }

    /// The position's bytes (a cursor seals them): a version, the stamp, the id.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(25);
        bytes.push(1);
        bytes.extend(self.seq.to_be_bytes());
        bytes.extend(self.id.as_bytes());
        bytes
    }

    /// The position in `bytes` from [`Position::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Position> {
        let [1, rest @ ..] = bytes else { return None };
        let (seq, id) = rest.split_at_checked(8)?;
        let seq = i64::from_be_bytes(seq.try_into().ok()?);
        (seq >= 0).then_some(())?;
        Some(Position {
            seq,
            id: Uuid::from_slice(id).ok()?,
        })
    }
}

/// What a stream watches: some customers (and the events about every customer), or all,
/// present and future.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// These customers.
    Customers(Vec<CustomerId>),
    /// Every customer: needs a role on `*`.
    All,
}

/// A stream's scope and filters.
#[derive(Clone, Debug)]
pub struct WatchQuery {
    /// Which customers.
    pub scope: Scope,
    /// Only about this user.
    pub user_id: Option<UserId>,
    /// Only these actions; empty is every action.
    pub actions: Vec<AuditAction>,
}

/// Whether `subject` may watch `scope` now: a role that may read (READER, PROVISIONER or any
/// admin role) in every selected customer, or any role on `*` for every customer. Checked when
/// a stream opens and again while it runs.
pub async fn authorize(
    db: &impl ConnectionTrait,
    subject: &str,
    scope: &Scope,
) -> DomainResult<()> {
    match scope {
        Scope::Customers(ids) => Selection::resolve(db, subject, ids, Action::Read)
            .await
            .map(drop),
        Scope::All => {
            if Grants::load(db, subject, &[]).await?.has_any_everywhere() {
                Ok(())
            } else {
                Err(DomainError::PermissionDenied {
                    reason: Reason::NoRole,
                    message: "watching every customer needs a role on every customer (*)".into(),
                    customer_ids: vec![],
                    action: None,
                })
            }
        }
    }
}

/// The audit clock as the stream needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Every event stamped up to here has committed.
    pub latest: i64,
    /// The highest position `purge-audit` deleted: a stream behind it may have missed events.
    pub purged: Position,
}

impl Clock {
    /// Reads the clock.
    pub async fn read(db: &impl ConnectionTrait) -> DomainResult<Clock> {
        let clock = store::audit::clock(db).await?;
        Ok(Clock {
            latest: clock.seq,
            purged: Position {
                seq: clock.purged.0,
                id: clock.purged.1,
            },
        })
    }

    /// Whether a stream at `position` may have missed events purged since `accepted` (the
    /// purged position when it started at the oldest retained event; [`Position::OLDEST`]
    /// for a cursor, which must not be behind anything purged).
    pub fn expired(&self, position: Position, accepted: Position) -> bool {
        position < self.purged && self.purged > accepted
    }

    /// Where a stream without a cursor starts, and the purges it accepts: after everything
    /// committed so far, or before every retained event (what was purged before it started
    /// is no gap of its own).
    pub fn start(&self, at_oldest: bool) -> (Position, Position) {
        if at_oldest {
            (Position::OLDEST, self.purged)
        } else {
            (Position::end_of(self.latest), Position::OLDEST)
        }
    }
}

/// Up to `limit` events of `query` after `after`, stamped up to `through`, in commit order,
/// each with its position.
pub async fn read_after(
    db: &impl ConnectionTrait,
    query: &WatchQuery,
    after: Position,
    through: i64,
    limit: u64,
) -> DomainResult<Vec<(Position, AuditEvent)>> {
    let filter = store::audit::WatchFilter {
        customer_ids: match &query.scope {
            Scope::Customers(ids) => Some(ids.clone()),
            Scope::All => None,
        },
        user_id: query.user_id,
        actions: query.actions.clone(),
    };
    store::audit::after(db, &filter, (after.seq, after.id), through, limit)
        .await?
        .into_iter()
        .map(|model| {
            let position = Position {
                seq: model.commit_seq,
                id: model.id,
            };
            Ok((position, AuditEvent::from_model(model)?))
        })
        .collect()
}

/// Deletes the events that happened before `cutoff`, except those of resets still awaiting
/// approval, in batches of one transaction each; returns how many.
pub async fn purge(
    db: &sea_orm::DatabaseConnection,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> DomainResult<u64> {
    const BATCH: u64 = 5_000;
    let id_bound = super::v7_floor(cutoff + chrono::Duration::seconds(super::ID_RANGE_MARGIN_SECS));
    let mut purged = 0;
    loop {
        let txn = store::begin_write(db).await?;
        let deleted = store::audit::purge_batch(&txn, cutoff, id_bound, BATCH).await?;
        store::commit(txn).await?;
        purged += deleted;
        if deleted < BATCH {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_stamp_then_id() {
        let a = Position {
            seq: 7,
            id: Uuid::now_v7(),
        };
        assert_eq!(Position::from_bytes(&a.to_bytes()), Some(a));
        assert!(
            Position::OLDEST < a
                && a < Position::end_of(7)
                && Position::end_of(7) < Position::end_of(8)
        );
        let later_id_earlier_stamp = Position {
            seq: 6,
            id: Uuid::max(),
        };
        assert!(later_id_earlier_stamp < a);
        assert_eq!(Position::from_bytes(&[]), None);
        assert_eq!(Position::from_bytes(&a.to_bytes()[..20]), None);
        let mut negative = a.to_bytes();
        negative[1] = 0x80;
        assert_eq!(Position::from_bytes(&negative), None);
        let mut version = a.to_bytes();
        version[0] = 2;
        assert_eq!(Position::from_bytes(&version), None);
    }

    #[test]
    fn a_stream_behind_a_purge_has_expired_unless_it_started_at_the_oldest_event_after_it() {
        let purged = Position {
            seq: 5,
            id: Uuid::now_v7(),
        };
        let clock = Clock { latest: 9, purged };
        let behind = Position { seq: 4, ..purged };
        assert!(clock.expired(behind, Position::OLDEST));
        assert!(
            !clock.expired(purged, Position::OLDEST),
            "at the last purged event"
        );
        assert!(!clock.expired(Position::end_of(9), Position::OLDEST));
        let (start, accepted) = clock.start(true);
        assert_eq!(start, Position::OLDEST);
        assert!(
            !clock.expired(start, accepted),
            "what was purged before it started"
        );
        let later = Clock {
            latest: 12,
            purged: Position::end_of(7),
        };
        assert!(later.expired(behind, accepted), "a purge while it replays");
        assert_eq!(clock.start(false), (Position::end_of(9), Position::OLDEST));
    }
}
