//! Idempotent writes (AIP-155): a mutating call may carry a `request_id` chosen by the client;
//! a retry with the same id by the same principal gets the first answer and changes nothing
//! more, so a client can retry after a lost response without making a second user, method or
//! reset.
//!
//! The key is (principal, RPC, request id), under a primary key, written in the same
//! transaction as the change: the key row is claimed when the write transaction begins (a
//! concurrent duplicate waits on it, then finds the first answer), and the answer, encoded by
//! the caller of the domain, is stored before the commit. A call that fails stores nothing, so
//! it can be retried with the same id. The same key with a different request (compared by a
//! digest of the request without its `request_id`) is INVALID_ARGUMENT, REQUEST_ID_REUSED.
//! Keys live for [`KEY_LIFETIME`]; older ones count as absent and are purged.
//!
//! A replay is looked up before the call's own checks run: it gives the principal back an
//! answer they were already given, so a role revoked since changes nothing about it (the
//! change it answers was made while the role was held).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Caller, DomainError, DomainResult, FieldViolation, reason::Reason};
use crate::store;

/// How long a request id is remembered.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A mutating call's request id and a digest of what it asked, parsed at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    /// The RPC's full name, e.g. `mfareset.v1.Users/CreateUser`.
    pub rpc: &'static str,
    /// The client's request id.
    pub request_id: Uuid,
    /// Hex SHA-256 of the request without its `request_id`.
    pub digest: String,
}

/// Encodes a call's answer so that a retry can be given it back. The domain never looks
/// inside the bytes (the api layer encodes its response message).
pub trait Remember<T>: Send + Sync {
    /// The answer to `value`, encoded.
    fn encode(&self, value: &T) -> Vec<u8>;
}

/// How a call remembers its answer: its key (if the client sent a request id) and how to
/// encode the answer for a replay.
pub struct Idempotency<'a, T> {
    key: Option<&'a RequestKey>,
    answer: &'a dyn Remember<T>,
}

impl<'a, T> Idempotency<'a, T> {
    /// The call's key, and the encoder of its answer.
    pub fn new(key: Option<&'a RequestKey>, answer: &'a dyn Remember<T>) -> Self {
        Idempotency { key, answer }
    }
}

/// What a call answers: a new result, or the stored answer of the first call with its key.
#[derive(Debug)]
pub enum Answer<T> {
    /// The call did its work now.
    New(T),
    /// A retry: the first call's encoded answer, replayed.
    Replay(Vec<u8>),
}

fn store_key<'a>(caller: &'a Caller, key: &'a RequestKey) -> store::idempotency::Key<'a> {
    store::idempotency::Key {
        subject: &caller.subject,
        rpc: key.rpc,
        request_id: key.request_id,
    }
}

fn oldest_live(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(KEY_LIFETIME).unwrap_or(chrono::Duration::days(1))
}

/// The stored answer of an earlier call with this key, if one committed within the key's
/// lifetime. Made before any work, so that a retry costs one read.
pub async fn previous<T>(
    db: &impl ConnectionTrait,
    caller: &Caller,
    idempotency: &Idempotency<'_, T>,
) -> DomainResult<Option<Vec<u8>>> {
    let Some(key) = idempotency.key else {
        return Ok(None);
    };
    let row =
        store::idempotency::find(db, store_key(caller, key), oldest_live(super::now())).await?;
    match row {
        None => Ok(None),
        Some(row) if row.request_digest != key.digest => Err(reused()),
        Some(row) => row.response.map(Some).ok_or_else(|| {
            DomainError::Internal(anyhow::anyhow!("committed idempotency key without answer"))
        }),
    }
}

fn reused() -> DomainError {
    DomainError::InvalidArgument {
        reason: Reason::RequestIdReused,
        violations: vec![FieldViolation::new(
            "request_id",
            "was used by you for a different request to this RPC within 24 hours; choose a new one",
        )],
    }
}

/// Runs `work` in one write transaction that also claims the call's key and stores its
/// answer; a retry of a committed call returns the first answer instead. A concurrent
/// duplicate waits for the first call's transaction, then gets its answer.
pub async fn write<T>(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, T>,
    work: impl AsyncFnOnce(&DatabaseTransaction) -> DomainResult<T>,
) -> DomainResult<Answer<T>> {
    if let Some(answer) = previous(db, caller, &idempotency).await? {
        return Ok(Answer::Replay(answer));
    }
    // What the work counts (metrics) is recorded only once it has committed.
    crate::metrics::after_commit(async {
        let txn = store::begin_write(db).await?;
        if let Some(replay) = claim(&txn, caller, &idempotency).await? {
            // Release the write lock (SQLite) and any row lock now, not when the pool reuses
            // the connection.
            txn.rollback().await?;
            return Ok(Answer::Replay(replay));
        }
        let value = work(&txn).await?;
        remember(&txn, caller, &idempotency, &value).await?;
        store::commit(txn)
            .instrument(tracing::info_span!("db.commit"))
            .await?;
        Ok(Answer::New(value))
    })
    .await
}

/// Claims the key inside `txn`: `None` when the call may go ahead, or the answer of a
/// duplicate that committed first (whose transaction the claim waited for).
pub async fn claim<T>(
    txn: &DatabaseTransaction,
    caller: &Caller,
    idempotency: &Idempotency<'_, T>,
) -> DomainResult<Option<Vec<u8>>> {
    let Some(key) = idempotency.key else {
        return Ok(None);
    };
    let now = super::now();
    let claimed = store::idempotency::claim(
        txn,
        store_key(caller, key),
        &key.digest,
        now,
        oldest_live(now),
    )
    .await?;
    if claimed {
        return Ok(None);
    }
    match previous(txn, caller, idempotency).await? {
        Some(answer) => Ok(Some(answer)),
        None => Err(DomainError::Aborted {
            reason: Reason::ConcurrentUpdate,
            message: "a call with this request_id is in progress; retry".into(),
            details: Default::default(),
        }),
    }
}

/// Stores the answer of a claimed key, inside the claiming transaction.
pub async fn remember<T>(
    txn: &DatabaseTransaction,
    caller: &Caller,
    idempotency: &Idempotency<'_, T>,
    value: &T,
) -> DomainResult<()> {
    if let Some(key) = idempotency.key {
        let answer = idempotency.answer.encode(value);
        store::idempotency::answer(txn, store_key(caller, key), answer).await?;
    }
    Ok(())
}

/// Deletes the keys older than [`KEY_LIFETIME`]; returns how many went.
pub async fn purge_expired(db: &DatabaseConnection) -> DomainResult<u64> {
    let txn = store::begin_write(db).await?;
    let purged = store::idempotency::purge(&txn, oldest_live(super::now())).await?;
    store::commit(txn).await?;
    Ok(purged)
}
