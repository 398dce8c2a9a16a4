//! (c) The change stream (issue 10):
//!
//! 1. Delivery latency: a watcher on the customers of a reset (MFA_RESET events only) is open
//!    before `SummarizeMfaReset`; `ConfirmMfaReset` commits its users' events; each event's
//!    arrival is timed from the moment the confirm's answer reached the bench (the commit
//!    precedes it by the answer's transit, well under a millisecond here). p50 / p99 / max over
//!    the reset's users.
//! 2. The audit clock's cost to concurrent writers: raw transactions, each updating one user of
//!    its own and inserting one audit event, at 1 / 16 / 64 writers, with the event stamped from
//!    the clock (`UPDATE audit_clock ... RETURNING` in the insert's `WITH`, exactly as the
//!    service writes it) and without (a constant stamp): transactions per second, p50 / p99.
//! 3. Memory with stalled consumers: streams that read nothing while events are committed;
//!    the process's RSS (after `malloc_trim`) before, and after each batch of events.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, ensure};
use mfa_reset::proto::v1::{
    self as pb, audit_log_client::AuditLogClient, users_client::UsersClient,
};
use sea_orm::sqlx;
use serde::Serialize;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    authed,
    db::Pool,
    resets::{self, Case},
};

/// What part (c) needs.
pub struct Setup<'a> {
    pub pool: &'a Pool,
    /// The same database through sea-orm, for writing events as the service does.
    pub db: &'a sea_orm::DatabaseConnection,
    pub channel: Channel,
    pub token: &'a str,
    /// The reset whose delivery is timed.
    pub case: Case,
    /// Seconds of each clock-cost cell.
    pub cell: Duration,
    /// Stalled streams, and events committed per step while they stall.
    pub stalled_streams: usize,
    pub stalled_batches: [usize; 2],
    /// How long the stalled streams' producers get to fill their buffers after each batch.
    pub settle: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct WatchReport {
    pub latency: Latency,
    pub clock: Vec<ClockCell>,
    pub stalled: Stalled,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub case: String,
    pub events: usize,
    pub confirm_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Events that arrived before the confirm's answer did (their latency counts as 0).
    pub before_answer: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClockCell {
    pub writers: usize,
    pub stamped: bool,
    pub commits_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stalled {
    pub streams: usize,
    pub rss_before_kib: Option<u64>,
    /// (events committed so far, RSS after).
    pub rss_after_kib: Vec<(usize, Option<u64>)>,
}

pub async fn run(ctx: &Setup<'_>) -> anyhow::Result<WatchReport> {
    let latency = latency(ctx).await.context("delivery latency")?;
    eprintln!(
        "  delivery of {} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms after the confirm's answer ({:.0} ms)",
        latency.events, latency.p50_ms, latency.p99_ms, latency.max_ms, latency.confirm_ms
    );
    let mut clock = Vec::new();
    for writers in [1, 16, 64] {
        for stamped in [false, true] {
            let cell = clock_cell(ctx.pool, writers, stamped, ctx.cell).await?;
            eprintln!(
                "  {writers} writers, {}: {:.0} commits/s, p50 {:.2} ms, p99 {:.2} ms",
                if stamped { "clock" } else { "no clock" },
                cell.commits_per_sec,
                cell.p50_ms,
                cell.p99_ms
            );
            clock.push(cell);
        }
    }
    let stalled = stalled(ctx).await.context("stalled consumers")?;
    Ok(WatchReport {
        latency,
        clock,
        stalled,
    })
}

async fn open(
    ctx: &Setup<'_>,
    request: pb::WatchAuditEventsRequest,
) -> anyhow::Result<tonic::Streaming<pb::WatchAuditEventsResponse>> {
    Ok(AuditLogClient::new(ctx.channel.clone())
        .watch_audit_events(authed(request, ctx.token)?)
        .await
        .map_err(|s| anyhow!("WatchAuditEvents failed: {s:?}"))?
        .into_inner())
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or(0.0)
}

async fn latency(ctx: &Setup<'_>) -> anyhow::Result<Latency> {
    let case = &ctx.case;
    let customers = resets::pick_customers(
        ctx.pool,
        case.customers,
        case.users.div_ceil(case.customers),
    )
    .await?;
    let users = resets::pick_users(ctx.pool, &customers, case.users).await?;
    let customer_ids: Vec<String> = customers.iter().map(ToString::to_string).collect();
    let mut stream = open(
        ctx,
        pb::WatchAuditEventsRequest {
            customer_ids: customer_ids.clone(),
            actions: vec![pb::AuditAction::MfaReset.into()],
            ..Default::default()
        },
    )
    .await?;
    let expected = users.len();
    let reader = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut arrivals = Vec::with_capacity(expected);
        while seen.len() < expected {
            let message = tokio::time::timeout(Duration::from_secs(120), stream.message()).await;
            match message {
                Ok(Ok(Some(response))) => {
                    if let Some(pb::watch_audit_events_response::Payload::AuditEvent(e)) =
                        response.payload
                    {
                        if seen.insert(e.id) {
                            arrivals.push(Instant::now());
                        }
                    }
                }
                Ok(Ok(None)) => return Err(anyhow!("the stream ended")),
                Ok(Err(status)) => return Err(anyhow!("the stream failed: {status:?}")),
                Err(_) => return Err(anyhow!("{} of {expected} events in 120 s", seen.len())),
            }
        }
        Ok(arrivals)
    });

    let mut client = UsersClient::new(ctx.channel.clone());
    let summary = client
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids,
                target: Some(pb::users_summarize_mfa_reset_request::Target::Users(
                    pb::UserReferences {
                        user_ids: users.iter().map(|(_, u)| u.to_string()).collect(),
                        external_subjects: vec![],
                    },
                )),
                reason: "bench: change stream".into(),
                page_size: 1,
                ..Default::default()
            },
            ctx.token,
        )?)
        .await
        .map_err(|s| anyhow!("SummarizeMfaReset failed: {s:?}"))?
        .into_inner()
        .mfa_reset
        .context("no reset")?;
    let started = Instant::now();
    client
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: summary.id,
                etag: summary.etag,
                request_id: String::new(),
            },
            ctx.token,
        )?)
        .await
        .map_err(|s| anyhow!("ConfirmMfaReset failed: {s:?}"))?;
    let answered = Instant::now();
    let arrivals = reader.await??;
    let before_answer = arrivals.iter().filter(|a| **a < answered).count();
    let mut ms: Vec<f64> = arrivals
        .iter()
        .map(|a| a.saturating_duration_since(answered).as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        case: case.label(),
        events: ms.len(),
        confirm_ms: (answered - started).as_secs_f64() * 1e3,
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        before_answer,
    })
}

const PG_USER: &str = "UPDATE users SET updated_at = now() WHERE id = $1 RETURNING customer_id";
const SQLITE_USER: &str =
    "UPDATE users SET updated_at = CURRENT_TIMESTAMP WHERE id = ?1 RETURNING customer_id";
/// The service's stamped insert (`store::audit::insert_many`), one row.
const PG_STAMPED: &str = "WITH clock AS (UPDATE audit_clock SET seq = seq + 1 WHERE id = 1 \
RETURNING seq) INSERT INTO audit_events (id, customer_id, occurred_at, actor, action, user_id, \
details, commit_seq) SELECT $1, $2, now(), 'bench-writer', 'USER_UPDATED', $3, '{}', clock.seq \
FROM clock";
/// Stamped -1, a value no stream reads: 0 would make the database stamp it (the trigger for
/// rows of older releases).
const PG_UNSTAMPED: &str = "INSERT INTO audit_events (id, customer_id, occurred_at, actor, \
action, user_id, details, commit_seq) VALUES ($1, $2, now(), 'bench-writer', 'USER_UPDATED', $3, \
'{}', -1)";
const SQLITE_CLOCK: &str = "UPDATE audit_clock SET seq = seq + 1 WHERE id = 1";
const SQLITE_STAMPED: &str = "INSERT INTO audit_events (id, customer_id, occurred_at, actor, \
action, user_id, details, commit_seq) VALUES (?1, ?2, CURRENT_TIMESTAMP, 'bench-writer', \
'USER_UPDATED', ?3, '{}', (SELECT seq FROM audit_clock WHERE id = 1))";
const SQLITE_UNSTAMPED: &str = "INSERT INTO audit_events (id, customer_id, occurred_at, actor, \
action, user_id, details, commit_seq) VALUES (?1, ?2, CURRENT_TIMESTAMP, 'bench-writer', \
'USER_UPDATED', ?3, '{}', -1)";

/// One writer transaction: a user of its own updated, one event inserted, committed.
async fn write_once(pool: &Pool, user: Uuid, stamped: bool) -> anyhow::Result<()> {
    match pool {
        Pool::Postgres(p) => {
            let mut tx = p.begin().await?;
            let (customer,): (Uuid,) = sqlx::query_as(PG_USER)
                .bind(user)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(if stamped { PG_STAMPED } else { PG_UNSTAMPED })
                .bind(Uuid::now_v7())
                .bind(customer)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Pool::Sqlite(p) => {
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            let (customer,): (Uuid,) = sqlx::query_as(SQLITE_USER)
                .bind(user)
                .fetch_one(&mut *tx)
                .await?;
            if stamped {
                sqlx::query(SQLITE_CLOCK).execute(&mut *tx).await?;
            }
            sqlx::query(if stamped {
                SQLITE_STAMPED
            } else {
                SQLITE_UNSTAMPED
            })
            .bind(Uuid::now_v7())
            .bind(customer)
            .bind(user)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn clock_cell(
    pool: &Pool,
    writers: usize,
    stamped: bool,
    duration: Duration,
) -> anyhow::Result<ClockCell> {
    let users: Vec<Uuid> = match pool {
        Pool::Postgres(p) => {
            sqlx::query_scalar("SELECT id FROM users ORDER BY random() LIMIT $1")
                .bind(i64::try_from(writers)?)
                .fetch_all(p)
                .await?
        }
        Pool::Sqlite(p) => {
            sqlx::query_scalar("SELECT id FROM users ORDER BY random() LIMIT ?1")
                .bind(i64::try_from(writers)?)
                .fetch_all(p)
                .await?
        }
    };
    ensure!(
        users.len() == writers,
        "not enough users for {writers} writers"
    );
    let pool = Arc::new(pool.clone());
    let until = Instant::now() + duration;
    let tasks: Vec<_> = users
        .into_iter()
        .map(|user| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    write_once(&pool, user, stamped).await?;
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_by(f64::total_cmp);
    Ok(ClockCell {
        writers,
        stamped,
        commits_per_sec: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    })
}

async fn stalled(ctx: &Setup<'_>) -> anyhow::Result<Stalled> {
    let customer = resets::pick_customers(ctx.pool, 1, 1)
        .await?
        .into_iter()
        .next()
        .context("a customer")?;
    resets::trim_heap();
    let rss_before_kib = resets::rss_kib();
    let mut streams = Vec::new();
    for _ in 0..ctx.stalled_streams {
        let stream = open(
            ctx,
            pb::WatchAuditEventsRequest {
                customer_ids: vec![customer.to_string()],
                ..Default::default()
            },
        )
        .await?;
        streams.push(stream);
    }
    let mut rss_after_kib = Vec::new();
    let mut written = 0;
    for batch in ctx.stalled_batches {
        write_events(ctx.db, customer, batch).await?;
        written += batch;
        // Time for the producers to fill their buffers and windows.
        tokio::time::sleep(ctx.settle).await;
        resets::trim_heap();
        rss_after_kib.push((written, resets::rss_kib()));
    }
    eprintln!(
        "  {} stalled streams: RSS {:?} KiB before, {:?} after (events, KiB)",
        ctx.stalled_streams, rss_before_kib, rss_after_kib
    );
    drop(streams);
    Ok(Stalled {
        streams: ctx.stalled_streams,
        rss_before_kib,
        rss_after_kib,
    })
}

/// `count` events in `customer`, stamped as the service stamps them, in transactions of 5,000.
async fn write_events(
    db: &sea_orm::DatabaseConnection,
    customer: Uuid,
    count: usize,
) -> anyhow::Result<()> {
    let customer = mfa_reset::domain::ids::CustomerId::from(customer);
    let mut left = count;
    while left > 0 {
        let n = left.min(5_000);
        left -= n;
        let events = (0..n)
            .map(|i| {
                mfa_reset::domain::audit::AuditEvent::by(
                    "bench-writer",
                    Some(customer),
                    mfa_reset::domain::audit::AuditDetails::MfaPolicySet {
                        previous: mfa_reset::domain::model::MfaPolicy::Enforced,
                        policy: mfa_reset::domain::model::MfaPolicy::Enforced,
                    },
                    mfa_reset::domain::now(),
                )
                .reason(&format!("stalled-consumer event {i}"))
            })
            .collect();
        let txn = mfa_reset::store::begin_write(db).await?;
        mfa_reset::domain::audit::record(&txn, events).await?;
        mfa_reset::store::commit(txn).await?;
    }
    Ok(())
}
