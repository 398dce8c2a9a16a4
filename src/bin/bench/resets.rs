//! Part (a): summarize and confirm through gRPC, each beside the hand-written transaction
//! doing the same reads (and locks and writes) on the same rows, interleaved per round:
//! raw read, SummarizeMfaReset, raw confirm (rolled back), ConfirmMfaReset.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, anyhow, bail, ensure};
use chrono::Utc;
use mfa_reset::proto::v1::{self as pb, users_client::UsersClient};
use rand::seq::SliceRandom;
use sea_orm::sqlx::{
    self, Executor, FromRow, Postgres, Sqlite, postgres::PgRow, sqlite::SqliteRow,
};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    SUBJECT, authed,
    db::{Pool, hex_json},
    sql,
};

/// `N users × C customers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub users: usize,
    pub customers: usize,
}

impl Case {
    pub fn label(&self) -> String {
        format!("{}x{}", self.users, self.customers)
    }
}

/// Parses `100x1,1000x50`.
pub fn parse_cases(text: &str) -> anyhow::Result<Vec<Case>> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (users, customers) = part
                .split_once(['x', 'X'])
                .with_context(|| format!("case {part:?} is not USERSxCUSTOMERS"))?;
            let case = Case {
                users: users.trim().parse().context("users of a case")?,
                customers: customers.trim().parse().context("customers of a case")?,
            };
            ensure!(
                case.customers >= 1 && case.customers <= 500 && case.users <= 10_000,
                "case {part}: 1 to 500 customers and at most 10,000 users (the service's limits)"
            );
            ensure!(
                case.users >= case.customers,
                "case {part}: at least one user per customer"
            );
            Ok(case)
        })
        .collect()
}

/// One round's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Round {
    pub raw_read_ms: f64,
    pub summarize_ms: f64,
    pub raw_confirm_ms: f64,
    pub confirm_ms: f64,
    pub raw_read_statements: u64,
    pub summarize_statements: u64,
    pub raw_confirm_statements: u64,
    pub confirm_statements: u64,
    /// VmHWM of the bench process (server and client in one) during the call, in KiB.
    pub summarize_peak_rss_kib: Option<u64>,
    pub confirm_peak_rss_kib: Option<u64>,
    /// VmRSS just before the confirm (what the peak grew from).
    pub confirm_rss_before_kib: Option<u64>,
    pub users_reset: u64,
    pub methods_deleted: u64,
    pub methods_deactivated: u64,
    pub methods_read: u64,
}

/// A case's rounds and medians.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub users: usize,
    pub customers: usize,
    pub rounds: Vec<Round>,
    pub median_raw_read_ms: f64,
    pub median_summarize_ms: f64,
    pub summarize_ratio: f64,
    pub median_raw_confirm_ms: f64,
    pub median_confirm_ms: f64,
    pub confirm_ratio: f64,
    pub max_confirm_peak_rss_kib: Option<u64>,
    pub max_summarize_peak_rss_kib: Option<u64>,
    /// The largest VmRSS just before a confirm of the case.
    pub max_confirm_rss_before_kib: Option<u64>,
}

impl CaseResult {
    pub fn case(&self) -> Case {
        Case {
            users: self.users,
            customers: self.customers,
        }
    }
}

pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match (values.get(n / 2), n % 2) {
        (None, _) => 0.0,
        (Some(mid), 1) => *mid,
        (Some(mid), _) => (mid + values.get(n / 2 - 1).copied().unwrap_or(*mid)) / 2.0,
    }
}

/// What part (a) needs.
pub struct Setup<'a> {
    pub pool: &'a Pool,
    pub channel: Channel,
    pub token: &'a str,
    pub statements: Arc<AtomicU64>,
    pub rounds: usize,
    pub print_sql: bool,
    /// Print the wall-clock window of each gRPC call (`--pg-log-statements`).
    pub print_windows: bool,
}

/// Runs every case; users are never reused within a run.
pub async fn run(ctx: &Setup<'_>, cases: &[Case]) -> anyhow::Result<Vec<CaseResult>> {
    let mut used = HashSet::new();
    let largest = cases.iter().map(|c| c.users).max().unwrap_or(0);
    let mut explained = false;
    // One unrecorded round first, so that no case pays for the first use of a connection or
    // a statement (both sides prepare statements per connection).
    let warm_up = Case {
        users: 10,
        customers: 1,
    };
    let customers = pick_customers(ctx.pool, 1, warm_up.users).await?;
    let users = pick_users(ctx.pool, &customers, warm_up.users).await?;
    used.extend(users.iter().map(|(_, u)| *u));
    run_round(ctx, &warm_up, 0, &customers, &users, false)
        .await
        .context("the warm-up round")?;
    let mut results = Vec::new();
    for case in cases {
        let per_customer = case.users.div_ceil(case.customers);
        let customers = pick_customers(ctx.pool, case.customers, per_customer * ctx.rounds)
            .await
            .with_context(|| format!("case {}", case.label()))?;
        let mut rounds = Vec::new();
        for round in 0..ctx.rounds {
            let users = pick_users(ctx.pool, &customers, case.users).await?;
            for (_, user) in &users {
                ensure!(used.insert(*user), "user {user} picked twice");
            }
            let explain = ctx.print_sql && !explained && case.users == largest;
            explained |= explain;
            let figures = run_round(ctx, case, round, &customers, &users, explain)
                .await
                .with_context(|| format!("case {} round {}", case.label(), round + 1))?;
            eprintln!(
                "  {} round {}: raw read {:.1} ms, summarize {:.1} ms, raw confirm {:.1} ms, confirm {:.1} ms",
                case.label(),
                round + 1,
                figures.raw_read_ms,
                figures.summarize_ms,
                figures.raw_confirm_ms,
                figures.confirm_ms
            );
            rounds.push(figures);
        }
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f));
        let (raw_read, summarize) = (m(|r| r.raw_read_ms), m(|r| r.summarize_ms));
        let (raw_confirm, confirm) = (m(|r| r.raw_confirm_ms), m(|r| r.confirm_ms));
        results.push(CaseResult {
            users: case.users,
            customers: case.customers,
            median_raw_read_ms: raw_read,
            median_summarize_ms: summarize,
            summarize_ratio: summarize / raw_read.max(f64::MIN_POSITIVE),
            median_raw_confirm_ms: raw_confirm,
            median_confirm_ms: confirm,
            confirm_ratio: confirm / raw_confirm.max(f64::MIN_POSITIVE),
            max_confirm_peak_rss_kib: rounds.iter().filter_map(|r| r.confirm_peak_rss_kib).max(),
            max_summarize_peak_rss_kib: rounds
                .iter()
                .filter_map(|r| r.summarize_peak_rss_kib)
                .max(),
            max_confirm_rss_before_kib: rounds
                .iter()
                .filter_map(|r| r.confirm_rss_before_kib)
                .max(),
            rounds,
        });
    }
    Ok(results)
}

const PG_CANDIDATES: &str = "\
SELECT u.customer_id, count(*) FROM users u WHERE EXISTS (SELECT 1 FROM authentication_methods m \
WHERE m.customer_id = u.customer_id AND m.user_id = u.id AND m.state = 'ACTIVE') \
GROUP BY u.customer_id";

const SQLITE_CANDIDATES: &str = "\
SELECT u.customer_id, count(*) FROM users u WHERE EXISTS (SELECT 1 FROM authentication_methods m \
WHERE m.user_id = u.id AND m.state = 'ACTIVE') GROUP BY u.customer_id";

/// `count` random customers with at least `needed` users that have an active method.
pub async fn pick_customers(pool: &Pool, count: usize, needed: usize) -> anyhow::Result<Vec<Uuid>> {
    let candidates: Vec<(Uuid, i64)> = match pool {
        Pool::Postgres(p) => sqlx::query_as(PG_CANDIDATES).fetch_all(p).await?,
        Pool::Sqlite(p) => sqlx::query_as(SQLITE_CANDIDATES).fetch_all(p).await?,
    };
    let mut fit: Vec<Uuid> = candidates
        .into_iter()
        .filter(|(_, n)| usize::try_from(*n).unwrap_or(0) >= needed)
        .map(|(id, _)| id)
        .collect();
    ensure!(
        fit.len() >= count,
        "only {} customers have {needed} users with MFA left; seed more users (--users) or \
         run fewer rounds",
        fit.len()
    );
    fit.shuffle(&mut rand::rng());
    fit.truncate(count);
    Ok(fit)
}

const PG_PICK_USERS: &str = "\
SELECT customer_id, id FROM (SELECT u.customer_id, u.id, \
row_number() OVER (PARTITION BY u.customer_id ORDER BY random()) AS rn FROM users u \
WHERE u.customer_id = ANY($1::uuid[]) AND EXISTS (SELECT 1 FROM authentication_methods m \
WHERE m.customer_id = u.customer_id AND m.user_id = u.id AND m.state = 'ACTIVE')) t \
WHERE rn <= $2";

const SQLITE_PICK_USERS: &str = "\
SELECT customer_id, id FROM (SELECT u.customer_id, u.id, \
row_number() OVER (PARTITION BY u.customer_id ORDER BY random()) AS rn FROM users u \
WHERE u.customer_id IN (SELECT unhex(value) FROM json_each(?1)) AND EXISTS (SELECT 1 \
FROM authentication_methods m WHERE m.user_id = u.id AND m.state = 'ACTIVE')) WHERE rn <= ?2";

/// `total` users with an active method, spread evenly over `customers` (a reset removes
/// every active method, so users of earlier rounds are never picked again).
pub async fn pick_users(
    pool: &Pool,
    customers: &[Uuid],
    total: usize,
) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
    let per_customer = total.div_ceil(customers.len()) as i64;
    let rows: Vec<(Uuid, Uuid)> = match pool {
        Pool::Postgres(p) => {
            sqlx::query_as(PG_PICK_USERS)
                .bind(customers)
                .bind(per_customer)
                .fetch_all(p)
                .await?
        }
        Pool::Sqlite(p) => {
            sqlx::query_as(SQLITE_PICK_USERS)
                .bind(hex_json(customers))
                .bind(per_customer)
                .fetch_all(p)
                .await?
        }
    };
    // Round-robin over the customers down to `total`, so that each has N/C (±1).
    let mut by_customer: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for (customer, user) in rows {
        by_customer.entry(customer).or_default().push(user);
    }
    let mut picked = Vec::with_capacity(total);
    let mut depth = 0;
    while picked.len() < total {
        let before = picked.len();
        for (customer, users) in &by_customer {
            if let Some(user) = users.get(depth) {
                if picked.len() < total {
                    picked.push((*customer, *user));
                }
            }
        }
        ensure!(picked.len() > before, "not enough users with MFA left");
        depth += 1;
    }
    Ok(picked)
}

/// `window <rpc> <case> <round> <start> <end>` in UTC, for matching the server's log.
fn window(ctx: &Setup<'_>, rpc: &str, case: &Case, round: usize, started: Instant) {
    if ctx.print_windows {
        let end = Utc::now();
        let start = chrono::Duration::from_std(started.elapsed()).map_or(end, |took| end - took);
        eprintln!(
            "window {rpc} {} {} {} {}",
            case.label(),
            round + 1,
            start.format("%Y-%m-%d %H:%M:%S%.3f"),
            end.format("%Y-%m-%d %H:%M:%S%.3f")
        );
    }
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// Gives the allocator's free memory back to the OS, then resets the process's peak RSS to
/// its current RSS (Linux `clear_refs` 5): the peak measured next is what the call needs on
/// top of what the process holds, not memory freed by earlier calls and kept by malloc.
fn reset_peak_rss() -> bool {
    trim_heap();
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    unsafe extern "C" {
        /// glibc: releases free memory at the top of the heap and in every arena.
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes no pointers and only returns free pages to the OS.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

/// The process's peak RSS (VmHWM) in KiB.
fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// The process's RSS (VmRSS) in KiB.
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a rolled-back raw confirm leaves on PostgreSQL, removed before the gRPC confirm
/// meets it: the rows it locked carry an aborted xmax (the next reader sets hint bits and
/// dirties their pages), the users it updated have dead versions with an entry in each of
/// their eight indexes, and the audit events it inserted are dead rows. The raw confirm
/// found the rows clean; so must the gRPC confirm. (SQLite's rollback restores the pages.)
async fn clean_up_after_rollback(pool: &Pool) -> anyhow::Result<()> {
    if let Pool::Postgres(pool) = pool {
        sqlx::raw_sql(
            "VACUUM (ANALYZE false) users, authentication_methods, audit_events, mfa_resets",
        )
        .execute(pool)
        .await?;
    }
    Ok(())
}

async fn run_round(
    ctx: &Setup<'_>,
    case: &Case,
    round: usize,
    customers: &[Uuid],
    users: &[(Uuid, Uuid)],
    explain: bool,
) -> anyhow::Result<Round> {
    let user_ids: Vec<Uuid> = users.iter().map(|(_, u)| *u).collect();
    let mut figures = Round::default();

    let trace = |what: &str| {
        if std::env::var_os("BENCH_RSS_TRACE").is_some() {
            trim_heap();
            eprintln!("    rss {what}: {:?} KiB", rss_kib());
        }
    };
    trace("round start");
    // 1. The raw read.
    let started = Instant::now();
    let read = raw_read(ctx.pool, customers, &user_ids).await?;
    figures.raw_read_ms = elapsed_ms(started);
    figures.raw_read_statements = read.statements;
    figures.methods_read = read.methods;
    ensure!(
        read.users == user_ids.len() as u64,
        "the raw read found {} of {} users",
        read.users,
        user_ids.len()
    );

    trace("after raw read");
    // 2. SummarizeMfaReset.
    let mut client = UsersClient::new(ctx.channel.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let request = pb::UsersSummarizeMfaResetRequest {
        customer_ids: customers.iter().map(ToString::to_string).collect(),
        target: Some(pb::users_summarize_mfa_reset_request::Target::Users(
            pb::UserReferences {
                user_ids: user_ids.iter().map(ToString::to_string).collect(),
                external_subjects: vec![],
            },
        )),
        reason: format!("bench {} round {}", case.label(), round + 1),
        page_size: 500,
        ..Default::default()
    };
    let rss = reset_peak_rss();
    let before = ctx.statements.load(Ordering::Relaxed);
    let started = Instant::now();
    let summary = client
        .summarize_mfa_reset(authed(request, ctx.token)?)
        .await
        .map_err(|status| anyhow!("SummarizeMfaReset failed: {status:?}"))?
        .into_inner();
    figures.summarize_ms = elapsed_ms(started);
    window(ctx, "SummarizeMfaReset", case, round, started);
    figures.summarize_statements = ctx.statements.load(Ordering::Relaxed) - before;
    figures.summarize_peak_rss_kib = peak_rss_kib().filter(|_| rss);
    let reset = summary
        .mfa_reset
        .context("SummarizeMfaReset answered without a reset")?;
    let totals = reset.totals.clone().unwrap_or_default();
    ensure!(
        totals.users_to_reset_count as usize == user_ids.len(),
        "the summary resets {} of {} users (skipped: {:?})",
        totals.users_to_reset_count,
        user_ids.len(),
        totals.users_skipped_by_reason
    );
    let reset_id = Uuid::try_parse(&reset.id).context("the reset id")?;

    trace("after summarize");
    // 3. The raw confirm, rolled back.
    let started = Instant::now();
    let confirm = raw_confirm(ctx.pool, reset_id, &reset.etag, None).await?;
    figures.raw_confirm_ms = elapsed_ms(started);
    figures.raw_confirm_statements = confirm.statements;
    figures.users_reset = confirm.users_reset;
    figures.methods_deleted = confirm.deleted;
    figures.methods_deactivated = confirm.deactivated;
    ensure!(
        confirm.users_reset == user_ids.len() as u64,
        "the raw confirm reset {} of {} users",
        confirm.users_reset,
        user_ids.len()
    );
    ensure!(
        confirm.deleted == totals.methods_to_delete_count as u64
            && confirm.deactivated == totals.methods_to_deactivate_count as u64,
        "the raw confirm deleted {} / deactivated {} methods, the summary plans {} / {}",
        confirm.deleted,
        confirm.deactivated,
        totals.methods_to_delete_count,
        totals.methods_to_deactivate_count
    );
    if explain {
        let mut plans = Vec::new();
        explain_read(ctx.pool, customers, &user_ids, &mut plans).await?;
        raw_confirm(ctx.pool, reset_id, &reset.etag, Some(&mut plans)).await?;
        print_plans(ctx.pool, case, &plans);
    }
    clean_up_after_rollback(ctx.pool).await?;
    trace("after raw confirm");

    // 4. ConfirmMfaReset.
    let request = pb::UsersConfirmMfaResetRequest {
        reset_id: reset.id.clone(),
        etag: reset.etag.clone(),
        request_id: String::new(),
    };
    let rss = reset_peak_rss();
    figures.confirm_rss_before_kib = rss_kib().filter(|_| rss);
    let before = ctx.statements.load(Ordering::Relaxed);
    let started = Instant::now();
    let confirmed = client
        .confirm_mfa_reset(authed(request, ctx.token)?)
        .await
        .map_err(|status| anyhow!("ConfirmMfaReset failed: {status:?}"))?
        .into_inner();
    figures.confirm_ms = elapsed_ms(started);
    window(ctx, "ConfirmMfaReset", case, round, started);
    figures.confirm_statements = ctx.statements.load(Ordering::Relaxed) - before;
    figures.confirm_peak_rss_kib = peak_rss_kib().filter(|_| rss);
    trace("after confirm");
    let state = confirmed.mfa_reset.map(|r| r.state).unwrap_or_default();
    ensure!(
        state == pb::MfaResetState::Confirmed as i32,
        "ConfirmMfaReset answered state {state}, not CONFIRMED"
    );
    Ok(figures)
}

// ---------------------------------------------------------------------------------------
// The raw read
// ---------------------------------------------------------------------------------------

struct ReadOutcome {
    statements: u64,
    users: u64,
    methods: u64,
}

type CustomerRow = (Uuid, String, String, String, i32);
type UserRow = (Uuid, Uuid, Option<String>, String, bool, bool);
type MethodRow = (Uuid, Uuid, Uuid, String, String, String, String);
type ReadRows = (
    Vec<(Option<Uuid>, String)>,
    Vec<CustomerRow>,
    Vec<UserRow>,
    Vec<MethodRow>,
);

/// The reads a summarize makes, in one transaction, every row decoded into Rust values.
async fn raw_read(pool: &Pool, customers: &[Uuid], users: &[Uuid]) -> anyhow::Result<ReadOutcome> {
    let (roles, customer_rows, user_rows, method_rows): ReadRows = match pool {
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::raw_sql(sql::PG_TUNE).execute(&mut *tx).await?;
            let roles = sqlx::query_as(sql::PG_READ_ROLES)
                .bind(SUBJECT)
                .bind(customers)
                .fetch_all(&mut *tx)
                .await?;
            let customer_rows = sqlx::query_as(sql::PG_READ_CUSTOMERS)
                .bind(customers)
                .fetch_all(&mut *tx)
                .await?;
            let user_rows = sqlx::query_as(sql::PG_READ_USERS)
                .bind(users)
                .bind(customers)
                .fetch_all(&mut *tx)
                .await?;
            let method_rows = sqlx::query_as(sql::PG_READ_METHODS)
                .bind(users)
                .bind(customers)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            (roles, customer_rows, user_rows, method_rows)
        }
        Pool::Sqlite(pool) => {
            let (customers, users) = (hex_json(customers), hex_json(users));
            let mut tx = pool.begin().await?;
            let roles = sqlx::query_as(sql::SQLITE_READ_ROLES)
                .bind(SUBJECT)
                .bind(&customers)
                .fetch_all(&mut *tx)
                .await?;
            let customer_rows = sqlx::query_as(sql::SQLITE_READ_CUSTOMERS)
                .bind(&customers)
                .fetch_all(&mut *tx)
                .await?;
            let user_rows = sqlx::query_as(sql::SQLITE_READ_USERS)
                .bind(&users)
                .bind(&customers)
                .fetch_all(&mut *tx)
                .await?;
            let method_rows = sqlx::query_as(sql::SQLITE_READ_METHODS)
                .bind(&users)
                .bind(&customers)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            (roles, customer_rows, user_rows, method_rows)
        }
    };
    ensure!(!roles.is_empty(), "the bench principal holds no role");
    ensure!(
        customer_rows.len() == customers.len(),
        "a customer is missing"
    );
    Ok(ReadOutcome {
        // And PG_TUNE on PostgreSQL.
        statements: if matches!(pool, Pool::Postgres(_)) {
            5
        } else {
            4
        },
        users: user_rows.len() as u64,
        methods: method_rows.len() as u64,
    })
}

// ---------------------------------------------------------------------------------------
// The raw confirm
// ---------------------------------------------------------------------------------------

struct ConfirmOutcome {
    statements: u64,
    users_reset: u64,
    deleted: u64,
    deactivated: u64,
}

/// A planned method as the summary stored it (`mfa_reset_items.planned_methods`).
#[derive(Deserialize)]
struct PlannedMethod {
    id: Uuid,
    kind: String,
    state: String,
    disposition: String,
}

/// The audit event details of one reset user, in the shape the service writes.
#[derive(Serialize)]
struct ResetDetails<'a> {
    scope: &'a str,
    methods_deleted: BTreeMap<&'a str, u32>,
    methods_deactivated: BTreeMap<&'a str, u32>,
    requested_by: &'a str,
}

type ResetRow = (String, String, String, String, String, String, bool);
type LockedCustomerRow = (Uuid, String, String);
type ItemRow = (Uuid, Uuid, bool, Option<String>, String);
type LockedUserRow = (Uuid, Uuid, Option<String>, bool, bool);
type LockedMethodRow = (Uuid, Uuid, Uuid, String, String);

/// What the reads of a confirm found.
struct Loaded {
    reset: ResetRow,
    roles: usize,
    customers: Vec<LockedCustomerRow>,
    items: Vec<ItemRow>,
}

/// The raw confirm's five writes (delete, deactivate, users, audit events, reset state)
/// touched exactly the rows `w` plans.
fn ensure_planned_writes(affected: [u64; 5], w: &Writes) -> anyhow::Result<()> {
    let [deleted, deactivated, users_updated, events, state] = affected;
    ensure!(
        deleted == w.delete.len() as u64
            && deactivated == w.deactivate.len() as u64
            && users_updated == w.users.len() as u64
            && events == w.users.len() as u64
            && state == 1,
        "the raw confirm's writes touched other rows than planned \
         ({deleted} {deactivated} {users_updated} {events} {state})"
    );
    Ok(())
}

/// The writes of a confirm, as arrays.
#[derive(Default)]
struct Writes {
    customer_ids: Vec<Uuid>,
    delete: Vec<Uuid>,
    deactivate: Vec<Uuid>,
    users: Vec<Uuid>,
    required: Vec<bool>,
    event_ids: Vec<Uuid>,
    event_customers: Vec<Uuid>,
    details: Vec<String>,
    external_subjects: Vec<Option<String>>,
    required_after: Vec<bool>,
}

/// Checks the plan against the locked rows (as a confirm must: a stale plan is refused) and
/// computes the writes.
fn plan_writes(
    loaded: &Loaded,
    etag: &str,
    users: &[LockedUserRow],
    methods: &[LockedMethodRow],
) -> anyhow::Result<Writes> {
    let (state, stored_etag, requested_by, scope, _kinds, _reason, open) = &loaded.reset;
    ensure!(
        state == "PENDING" && *open,
        "the reset is {state} (open: {open})"
    );
    ensure!(stored_etag == etag, "etag mismatch");
    ensure!(requested_by == SUBJECT, "not the requester");
    ensure!(loaded.roles > 0, "no role");
    let policies: HashMap<Uuid, &str> = loaded
        .customers
        .iter()
        .map(|(id, policy, _)| (*id, policy.as_str()))
        .collect();
    let users: HashMap<Uuid, &LockedUserRow> = users.iter().map(|u| (u.0, u)).collect();
    let current: HashMap<Uuid, &LockedMethodRow> = methods.iter().map(|m| (m.0, m)).collect();
    let mut planned_ids = HashSet::with_capacity(methods.len());
    let mut writes = Writes {
        customer_ids: loaded.customers.iter().map(|c| c.0).collect(),
        ..Writes::default()
    };
    for (user_id, customer_id, is_admin, skip, planned) in &loaded.items {
        let planned: Vec<PlannedMethod> =
            serde_json::from_str(planned).context("planned methods")?;
        for m in &planned {
            planned_ids.insert(m.id);
        }
        let user = users
            .get(user_id)
            .with_context(|| format!("stale: user {user_id} is gone"))?;
        ensure!(
            user.1 == *customer_id && user.3 == *is_admin,
            "stale: user {user_id} changed"
        );
        if skip.is_some() {
            continue;
        }
        let mut deleted = BTreeMap::new();
        let mut deactivated = BTreeMap::new();
        let mut active_kept = false;
        for m in &planned {
            let now = current
                .get(&m.id)
                .with_context(|| format!("stale: method {} is gone", m.id))?;
            ensure!(
                now.2 == *user_id && now.4 == m.state,
                "stale: method {} changed",
                m.id
            );
            match m.disposition.as_str() {
                "DELETE" => {
                    writes.delete.push(m.id);
                    *deleted.entry(m.kind.as_str()).or_insert(0) += 1;
                }
                "DEACTIVATE" => {
                    writes.deactivate.push(m.id);
                    *deactivated.entry(m.kind.as_str()).or_insert(0) += 1;
                }
                _ => active_kept |= m.state == "ACTIVE",
            }
        }
        let enforced = policies.get(customer_id) == Some(&"ENFORCED");
        let required = enforced && !active_kept;
        writes.users.push(*user_id);
        writes.required.push(required);
        writes.event_ids.push(Uuid::now_v7());
        writes.event_customers.push(*customer_id);
        writes.details.push(serde_json::to_string(&ResetDetails {
            scope,
            methods_deleted: deleted,
            methods_deactivated: deactivated,
            requested_by,
        })?);
        writes.external_subjects.push(user.2.clone());
        writes.required_after.push(required || user.4);
    }
    // A method added since the summary makes the plan stale too.
    if let Some(new) = methods.iter().find(|m| !planned_ids.contains(&m.0)) {
        bail!("stale: method {} was added", new.0);
    }
    Ok(writes)
}

/// The reads, locks and writes of a confirm of reset `reset_id`, in one transaction that is
/// rolled back, so that the gRPC confirm finds the same rows. With `explain`, every
/// statement runs under `EXPLAIN (ANALYZE, BUFFERS)` (PostgreSQL; the writes are those of
/// a normal pass, computed first) or `EXPLAIN QUERY PLAN` (SQLite) and its plan is kept.
async fn raw_confirm(
    pool: &Pool,
    reset_id: Uuid,
    etag: &str,
    explain: Option<&mut Vec<(String, String)>>,
) -> anyhow::Result<ConfirmOutcome> {
    match pool {
        Pool::Postgres(pool) => raw_confirm_pg(pool, reset_id, etag, explain).await,
        Pool::Sqlite(pool) => raw_confirm_sqlite(pool, reset_id, etag, explain).await,
    }
}

fn rows<R: sqlx::Row, T>(rows: Vec<R>) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, R>,
{
    rows.iter().map(T::from_row).collect()
}

type PgQuery = sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery = sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>;

/// A parameter of a raw PostgreSQL statement: bound, or (explain) written as a literal.
enum PgArg {
    Uuid(Uuid),
    Uuids(Vec<Uuid>),
    Bools(Vec<bool>),
    Text(String),
    Texts(Vec<Option<String>>),
    Time(chrono::DateTime<Utc>),
}

impl PgArg {
    fn bind(self, q: PgQuery) -> PgQuery {
        match self {
            PgArg::Uuid(v) => q.bind(v),
            PgArg::Uuids(v) => q.bind(v),
            PgArg::Bools(v) => q.bind(v),
            PgArg::Text(v) => q.bind(v),
            PgArg::Texts(v) => q.bind(v),
            PgArg::Time(v) => q.bind(v),
        }
    }

    fn literal(&self) -> String {
        fn text(t: &str) -> String {
            format!("'{}'", t.replace('\'', "''"))
        }
        let join = |parts: Vec<String>| parts.join(",");
        match self {
            PgArg::Uuid(v) => format!("'{v}'::uuid"),
            PgArg::Uuids(v) => format!(
                "'{{{}}}'::uuid[]",
                join(v.iter().map(ToString::to_string).collect())
            ),
            PgArg::Bools(v) => format!(
                "'{{{}}}'::bool[]",
                join(
                    v.iter()
                        .map(|b| if *b { "t" } else { "f" }.to_string())
                        .collect()
                )
            ),
            PgArg::Text(v) => text(v),
            PgArg::Texts(v) => format!(
                "ARRAY[{}]::text[]",
                join(
                    v.iter()
                        .map(|t| t.as_deref().map_or_else(|| "NULL".to_string(), text))
                        .collect()
                )
            ),
            PgArg::Time(v) => format!("'{}'::timestamptz", v.to_rfc3339()),
        }
    }
}

/// Statement `step` of the raw confirm on PostgreSQL with its parameters; with `explain`,
/// `EXPLAIN (ANALYZE, BUFFERS) EXECUTE` of the statement prepared as `bench_confirm_{step}`
/// (see [`pg_prepare`]) with the same values as literals: an EXPLAIN of the statement
/// itself would plan it for its values, not as the generic plan the raw transactions run.
fn pg_confirm_query(
    step: usize,
    explain: bool,
    reset_id: Uuid,
    now: chrono::DateTime<Utc>,
    users: &[Uuid],
    w: &Writes,
    reason: &str,
) -> anyhow::Result<PgQuery> {
    use PgArg::*;
    let statements = sql::raw_confirm(true);
    let stmt = statements.get(step).context("no such step")?;
    let customers = || Uuids(w.customer_ids.clone());
    let args = match step {
        0 | 2 | 3 => vec![Uuid(reset_id)],
        1 => vec![Text(SUBJECT.into())],
        4 | 5 => vec![Uuids(users.to_vec()), customers()],
        6 => vec![Uuids(w.delete.clone()), customers()],
        7 => vec![Uuids(w.deactivate.clone()), customers(), Time(now)],
        8 => vec![
            Time(now),
            Uuids(w.users.clone()),
            Bools(w.required.clone()),
            customers(),
        ],
        9 => vec![
            Time(now),
            Text(SUBJECT.into()),
            Uuid(reset_id),
            Text(reason.into()),
            Uuids(w.event_ids.clone()),
            Uuids(w.event_customers.clone()),
            Uuids(w.users.clone()),
            Texts(w.details.iter().cloned().map(Some).collect()),
            Texts(w.external_subjects.clone()),
            Bools(w.required_after.clone()),
        ],
        _ => vec![Uuid(reset_id), Text(SUBJECT.into()), Time(now)],
    };
    Ok(pg_query(
        stmt,
        explain,
        &format!("bench_confirm_{step}"),
        args,
    ))
}

/// `stmt` with `args` bound, or (`explain`) `EXPLAIN (ANALYZE, BUFFERS) EXECUTE name(args)`.
fn pg_query(stmt: &sql::Named, explain: bool, name: &str, args: Vec<PgArg>) -> PgQuery {
    if explain {
        let literals: Vec<String> = args.iter().map(PgArg::literal).collect();
        return sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE {name}({})",
            literals.join(", ")
        )));
    }
    args.into_iter()
        .fold(sqlx::query(stmt.sql), |q, arg| arg.bind(q))
}

/// `PREPARE name(types) AS sql`, for [`pg_query`]'s explain (names are unique per run:
/// a prepared statement outlives the transaction; [`pg_deallocate`] drops it).
async fn pg_prepare(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    stmt: &sql::Named,
    name: &str,
) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE {name}({}) AS {}",
        stmt.params, stmt.sql
    )))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn pg_deallocate(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    name: &str,
) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DEALLOCATE {name}")))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn plan_text(lines: Vec<(String,)>) -> String {
    lines
        .into_iter()
        .map(|(l,)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn raw_confirm_pg(
    pool: &sqlx::PgPool,
    reset_id: Uuid,
    etag: &str,
    explain: Option<&mut Vec<(String, String)>>,
) -> anyhow::Result<ConfirmOutcome> {
    if let Some(plans) = explain {
        // The writes of a normal pass (rolled back), then every statement explained, in
        // order, in one transaction that is rolled back too.
        let (loaded, users, methods, now) = pg_confirm_reads(pool, reset_id, None).await?;
        let w = plan_writes(&loaded, etag, &users, &methods)?;
        let ids: Vec<Uuid> = loaded.items.iter().map(|i| i.0).collect();
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql::PG_TUNE).execute(&mut *tx).await?;
        for (step, stmt) in sql::raw_confirm(true).iter().enumerate() {
            let name = format!("bench_confirm_{step}");
            pg_prepare(&mut tx, stmt, &name).await?;
            let q = pg_confirm_query(step, true, reset_id, now, &ids, &w, &loaded.reset.5)?;
            let lines: Vec<(String,)> = rows(q.fetch_all(&mut *tx).await?)?;
            pg_deallocate(&mut tx, &name).await?;
            plans.push((format!("confirm: {}", stmt.name), plan_text(lines)));
        }
        tx.rollback().await?;
        return Ok(ConfirmOutcome {
            statements: 0,
            users_reset: 0,
            deleted: 0,
            deactivated: 0,
        });
    }
    let mut tx = pool.begin().await?;
    let (loaded, users, methods, now) = pg_confirm_reads(pool, reset_id, Some(&mut tx)).await?;
    let w = plan_writes(&loaded, etag, &users, &methods)?;
    let ids: Vec<Uuid> = loaded.items.iter().map(|i| i.0).collect();
    let reason = loaded.reset.5.clone();
    let mut affected = [0u64; 5];
    for (slot, step) in affected.iter_mut().zip(6..=10) {
        *slot = pg_confirm_query(step, false, reset_id, now, &ids, &w, &reason)?
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.rollback().await?;
    ensure_planned_writes(affected, &w)?;
    let [deleted, deactivated, ..] = affected;
    Ok(ConfirmOutcome {
        // PG_TUNE and the 11 statements.
        statements: 12,
        users_reset: w.users.len() as u64,
        deleted,
        deactivated,
    })
}

/// The six reads (and locks) of a confirm, on `tx` (or, for the explain pass, in a
/// transaction of their own that is rolled back).
async fn pg_confirm_reads(
    pool: &sqlx::PgPool,
    reset_id: Uuid,
    tx: Option<&mut sqlx::Transaction<'static, Postgres>>,
) -> anyhow::Result<(
    Loaded,
    Vec<LockedUserRow>,
    Vec<LockedMethodRow>,
    chrono::DateTime<Utc>,
)> {
    let mut own = None;
    let tx = match tx {
        Some(tx) => tx,
        None => own.insert(pool.begin().await?),
    };
    sqlx::raw_sql(sql::PG_TUNE).execute(&mut **tx).await?;
    let now = Utc::now();
    let none = Writes::default();
    let q = |step| pg_confirm_query(step, false, reset_id, now, &[], &none, "");
    let reset: ResetRow = FromRow::from_row(
        &q(0)?
            .fetch_optional(&mut **tx)
            .await?
            .context("no such reset")?,
    )?;
    let roles: Vec<PgRow> = q(1)?.fetch_all(&mut **tx).await?;
    let customers: Vec<LockedCustomerRow> = rows(q(2)?.fetch_all(&mut **tx).await?)?;
    let items: Vec<ItemRow> = rows(q(3)?.fetch_all(&mut **tx).await?)?;
    let ids: Vec<Uuid> = items.iter().map(|i| i.0).collect();
    let customer_ids: Vec<Uuid> = customers.iter().map(|c| c.0).collect();
    let with_ids = Writes {
        customer_ids,
        ..Writes::default()
    };
    let users: Vec<LockedUserRow> = rows(
        pg_confirm_query(4, false, reset_id, now, &ids, &with_ids, "")?
            .fetch_all(&mut **tx)
            .await?,
    )?;
    let methods: Vec<LockedMethodRow> = rows(
        pg_confirm_query(5, false, reset_id, now, &ids, &with_ids, "")?
            .fetch_all(&mut **tx)
            .await?,
    )?;
    if let Some(own) = own {
        own.rollback().await?;
    }
    Ok((
        Loaded {
            reset,
            roles: roles.len(),
            customers,
            items,
        },
        users,
        methods,
        now,
    ))
}

/// Statement `step` of the raw confirm on SQLite with its parameters (lists as JSON).
/// The plan's users and customers as JSON lists of hex ids.
#[derive(Clone, Copy)]
struct Lists<'a> {
    users: &'a str,
    customers: &'a str,
}

fn sqlite_confirm_query(
    step: usize,
    prefix: &str,
    reset_id: Uuid,
    now: chrono::DateTime<Utc>,
    Lists { users, customers }: Lists<'_>,
    w: &Writes,
    reason: &str,
) -> anyhow::Result<SqliteQuery> {
    let statements = sql::raw_confirm(false);
    let stmt = statements.get(step).context("no such step")?;
    let q = sqlx::query(sqlx::AssertSqlSafe(format!("{prefix}{}", stmt.sql)));
    Ok(match step {
        0 | 2 | 3 => q.bind(reset_id),
        1 => q.bind(SUBJECT),
        4 | 5 => q.bind(users.to_string()).bind(customers.to_string()),
        6 => q.bind(hex_json(&w.delete)).bind(customers.to_string()),
        7 => q
            .bind(hex_json(&w.deactivate))
            .bind(customers.to_string())
            .bind(now),
        8 => {
            let required: Vec<Uuid> = w
                .users
                .iter()
                .zip(&w.required)
                .filter(|(_, r)| **r)
                .map(|(u, _)| *u)
                .collect();
            q.bind(now)
                .bind(hex_json(&w.users))
                .bind(hex_json(&required))
                .bind(customers.to_string())
        }
        9 => {
            let events: Vec<serde_json::Value> = w
                .event_ids
                .iter()
                .zip(&w.event_customers)
                .zip(&w.users)
                .zip(&w.details)
                .zip(&w.external_subjects)
                .zip(&w.required_after)
                .map(|(((((id, customer), user), details), subject), required)| {
                    serde_json::json!([
                        id.simple().to_string(),
                        customer.simple().to_string(),
                        user.simple().to_string(),
                        details,
                        subject,
                        required
                    ])
                })
                .collect();
            q.bind(now)
                .bind(SUBJECT)
                .bind(reset_id)
                .bind(reason.to_string())
                .bind(serde_json::to_string(&events)?)
        }
        _ => q.bind(reset_id).bind(SUBJECT).bind(now),
    })
}

async fn raw_confirm_sqlite(
    pool: &sqlx::SqlitePool,
    reset_id: Uuid,
    etag: &str,
    explain: Option<&mut Vec<(String, String)>>,
) -> anyhow::Result<ConfirmOutcome> {
    let now = Utc::now();
    let none = Writes::default();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let empty = Lists {
        users: "[]",
        customers: "[]",
    };
    let q = |step| sqlite_confirm_query(step, "", reset_id, now, empty, &none, "");
    let reset: ResetRow = FromRow::from_row(
        &q(0)?
            .fetch_optional(&mut *tx)
            .await?
            .context("no such reset")?,
    )?;
    let roles: Vec<SqliteRow> = q(1)?.fetch_all(&mut *tx).await?;
    let customers: Vec<LockedCustomerRow> = rows(q(2)?.fetch_all(&mut *tx).await?)?;
    let items: Vec<ItemRow> = rows(q(3)?.fetch_all(&mut *tx).await?)?;
    let ids: Vec<Uuid> = items.iter().map(|i| i.0).collect();
    let customer_ids: Vec<Uuid> = customers.iter().map(|c| c.0).collect();
    let (users_json, customers_json) = (hex_json(&ids), hex_json(&customer_ids));
    let lists = Lists {
        users: &users_json,
        customers: &customers_json,
    };
    let users: Vec<LockedUserRow> = rows(
        sqlite_confirm_query(4, "", reset_id, now, lists, &none, "")?
            .fetch_all(&mut *tx)
            .await?,
    )?;
    let methods: Vec<LockedMethodRow> = rows(
        sqlite_confirm_query(5, "", reset_id, now, lists, &none, "")?
            .fetch_all(&mut *tx)
            .await?,
    )?;
    let loaded = Loaded {
        reset,
        roles: roles.len(),
        customers,
        items,
    };
    let w = plan_writes(&loaded, etag, &users, &methods)?;
    let reason = loaded.reset.5.clone();
    if let Some(plans) = explain {
        for (step, stmt) in sql::raw_confirm(false).iter().enumerate() {
            let q = sqlite_confirm_query(
                step,
                "EXPLAIN QUERY PLAN ",
                reset_id,
                now,
                lists,
                &w,
                &reason,
            )?;
            let lines: Vec<(i64, i64, i64, String)> = rows(q.fetch_all(&mut *tx).await?)?;
            plans.push((format!("confirm: {}", stmt.name), sqlite_plan(&lines)));
        }
        tx.rollback().await?;
        return Ok(ConfirmOutcome {
            statements: 0,
            users_reset: 0,
            deleted: 0,
            deactivated: 0,
        });
    }
    let mut affected = [0u64; 5];
    for (slot, step) in affected.iter_mut().zip(6..=10) {
        *slot = sqlite_confirm_query(step, "", reset_id, now, lists, &w, &reason)?
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.rollback().await?;
    ensure_planned_writes(affected, &w)?;
    let [deleted, deactivated, ..] = affected;
    Ok(ConfirmOutcome {
        statements: 11,
        users_reset: w.users.len() as u64,
        deleted,
        deactivated,
    })
}

/// An `EXPLAIN QUERY PLAN` answer as an indented tree.
pub fn sqlite_plan(lines: &[(i64, i64, i64, String)]) -> String {
    let mut depth: HashMap<i64, usize> = HashMap::new();
    let mut out = Vec::new();
    for (id, parent, _, detail) in lines {
        let d = depth.get(parent).map_or(0, |d| d + 1);
        depth.insert(*id, d);
        out.push(format!("{}{detail}", "  ".repeat(d)));
    }
    out.join("\n")
}

/// The raw read's statements explained (PostgreSQL: `EXPLAIN (ANALYZE, BUFFERS)`).
async fn explain_read(
    pool: &Pool,
    customers: &[Uuid],
    users: &[Uuid],
    plans: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let postgres = matches!(pool, Pool::Postgres(_));
    for (step, stmt) in sql::raw_read(postgres).iter().enumerate() {
        let plan = match pool {
            Pool::Postgres(p) => {
                let name = format!("bench_read_{step}");
                let mut tx = p.begin().await?;
                sqlx::raw_sql(sql::PG_TUNE).execute(&mut *tx).await?;
                pg_prepare(&mut tx, stmt, &name).await?;
                let args = match step {
                    0 => vec![
                        PgArg::Text(SUBJECT.into()),
                        PgArg::Uuids(customers.to_vec()),
                    ],
                    1 => vec![PgArg::Uuids(customers.to_vec())],
                    _ => vec![
                        PgArg::Uuids(users.to_vec()),
                        PgArg::Uuids(customers.to_vec()),
                    ],
                };
                let q = pg_query(stmt, true, &name, args);
                let lines: Vec<(String,)> = rows(q.fetch_all(&mut *tx).await?)?;
                pg_deallocate(&mut tx, &name).await?;
                tx.rollback().await?;
                plan_text(lines)
            }
            Pool::Sqlite(p) => {
                let q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN QUERY PLAN {}",
                    stmt.sql
                )));
                let q = match step {
                    0 => q.bind(SUBJECT).bind(hex_json(customers)),
                    1 => q.bind(hex_json(customers)),
                    _ => q.bind(hex_json(users)).bind(hex_json(customers)),
                };
                let lines: Vec<(i64, i64, i64, String)> = rows(p.fetch_all(q).await?)?;
                sqlite_plan(&lines)
            }
        };
        plans.push((format!("read: {}", stmt.name), plan));
    }
    Ok(())
}

fn print_plans(pool: &Pool, case: &Case, plans: &[(String, String)]) {
    let how = match pool {
        Pool::Postgres(_) => "EXPLAIN (ANALYZE, BUFFERS), in one transaction rolled back",
        Pool::Sqlite(_) => "EXPLAIN QUERY PLAN",
    };
    println!(
        "\n== Plans of the raw statements for one round of case {} ({how}) ==",
        case.label()
    );
    for (name, plan) in plans {
        println!("\n-- {name}\n{}", abbreviate(plan));
    }
    println!();
}

/// The plan with every long array literal (`'{...}'`) cut to its size.
pub fn abbreviate(plan: &str) -> String {
    let mut out = String::with_capacity(plan.len().min(64 * 1024));
    let mut rest = plan;
    while let Some(start) = rest.find("'{") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        match from.find("}'") {
            Some(end) if end > 120 => {
                let inner = from.get(2..end).unwrap_or_default();
                let n = inner.split(',').count();
                out.push_str(&format!("'{{... {n} values ...}}'"));
                rest = from.get(end + 2..).unwrap_or_default();
            }
            Some(end) => {
                out.push_str(from.get(..end + 2).unwrap_or_default());
                rest = from.get(end + 2..).unwrap_or_default();
            }
            None => {
                out.push_str(from);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
