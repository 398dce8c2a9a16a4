//! Storage: sea-orm entities, the migrations, the queries the domain needs (one module per
//! resource), and opening the database.
//!
//! One schema runs on SQLite (the embedded default, a file in the data directory, created on
//! first start) and on PostgreSQL (production). [`connect`] opens a pool tuned for either,
//! [`migrate`] brings the schema up to date, and [`begin_write`] starts a transaction that is
//! going to write, in the way each backend needs.

pub mod audit;
mod bulk;
pub mod customers;
pub mod entities;
pub mod feed;
pub mod idempotency;
pub mod ids;
pub mod methods;
pub mod migration;
pub mod resets;
pub mod roles;
pub mod search;
pub mod users;
pub mod values;

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, RuntimeErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use self::migration::Migrator;

/// How long a SQLite statement waits for another connection's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// SQLite in WAL mode has many readers and one writer; a few connections are plenty.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Longer than [`SQLITE_BUSY_TIMEOUT`], so a request queued behind a waiting writer still gets
/// a connection rather than a pool timeout.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(35);

const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// A request that cannot get a connection this quickly fails (UNAVAILABLE) instead of queueing.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle for this long is pinged before use (it may have been dropped by a proxy);
/// busy connections are handed out without the extra round trip.
const POSTGRES_PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);
const POSTGRES_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const POSTGRES_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
const APPLICATION_NAME: &str = "mfa-reset";

/// Key of the PostgreSQL advisory lock that serialises [`migrate`] across replicas.
/// (The bytes of "mfareset".)
const MIGRATION_LOCK_KEY: i64 = 0x6d66_6172_6573_6574;

/// Opens a connection pool for `database_url`.
///
/// Accepts `sqlite:` URLs (e.g. `sqlite://data/mfa-reset.db?mode=rwc`; the file and its
/// directory are created when missing; WAL journal, foreign keys on, 30 s busy timeout,
/// `synchronous = NORMAL` on every pooled connection) and `postgres://` / `postgresql://` URLs
/// (up to 10 connections, 5 s acquire timeout). SQL statements are logged at debug level only.
/// Error messages never repeat the URL, which may hold a password.
pub async fn connect(database_url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with_pool(database_url, None).await
}

/// [`connect`] with at most `max_connections` pooled connections (for PostgreSQL; a
/// SQLite file has one writer, and a few readers are plenty).
pub async fn connect_with_pool(
    database_url: &str,
    max_connections: Option<u32>,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(database_url);
    options
        .sqlx_logging(true)
        .sqlx_logging_level(parse_level("debug")?);
    match backend_of(database_url)? {
        DbBackend::Sqlite => {
            create_sqlite_directory(database_url).await?;
            options
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .min_connections(1)
                .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
                // A local file: nothing to lose in transit, so no ping on checkout.
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .foreign_keys(true)
                        .busy_timeout(SQLITE_BUSY_TIMEOUT)
                        .synchronous(SqliteSynchronous::Normal)
                });
        }
        _ => {
            // Fail on a malformed URL here, where the message can leave the URL out.
            PgConnectOptions::from_str(database_url)
                .map_err(|e| conn_err(format!("invalid PostgreSQL URL: {e}")))?;
            options
                .max_connections(max_connections.unwrap_or(POSTGRES_MAX_CONNECTIONS).max(1))
                .min_connections(1)
                .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                .test_before_acquire_if_idle_for(POSTGRES_PING_IF_IDLE_FOR)
                .idle_timeout(POSTGRES_IDLE_TIMEOUT)
                .max_lifetime(POSTGRES_MAX_LIFETIME)
                .set_application_name(APPLICATION_NAME)
                // No JIT: it pays off for long analytical queries, and here only adds ~50 ms
                // of compilation to a large reset's statements that cross its cost threshold.
                .map_sqlx_postgres_opts(|connect| connect.options([("jit", "off")]))
                // TCP_NODELAY, which sqlx-core 0.9.0 leaves off (see `net`).
                .map_sqlx_postgres_pool_opts(|pool| {
                    pool.after_connect(|connection, _| {
                        Box::pin(crate::net::nodelay_for_postgres(connection))
                    })
                });
        }
    }
    Database::connect(options).await
}

/// Applies every pending migration, all in one transaction.
///
/// Safe to run on every start and from many replicas at once: on PostgreSQL an advisory lock
/// makes concurrent runs wait for each other, and on SQLite the transaction takes the write lock
/// up front. A failure leaves the schema as it was.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = begin_write(db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
        ))
        .await?;
    }
    Migrator::up(&txn, None).await?;
    commit(txn).await
}

/// Commits `txn` in a task of its own, so that the COMMIT, once sent, is seen through even if
/// the caller's future is dropped (a call cut off at its deadline, or a client gone): the
/// outcome is then the database's, not an abandoned connection's. Every commit goes through
/// here (clippy's `disallowed-methods` refuses `DatabaseTransaction::commit` elsewhere).
pub async fn commit(txn: DatabaseTransaction) -> Result<(), DbErr> {
    #[allow(clippy::disallowed_methods)]
    let committing = tokio::spawn(async move {
        let committed = txn.commit().await;
        if let Err(err) = &committed {
            // Logged here too: the caller may be gone.
            tracing::warn!(error = %err, "commit failed");
        }
        committed
    });
    committing
        .await
        .map_err(|err| DbErr::Custom(format!("the commit task did not finish: {err}")))?
}

/// The database's clock now (on PostgreSQL the statement's start, not the transaction's: a
/// transaction may have waited for locks since it began). Whether a reset has
/// expired is the database's call, not each replica's: this is the `now` it is judged by, and
/// the state change of a confirm or cancel checks it again in its `UPDATE`.
pub async fn db_now(db: &impl ConnectionTrait) -> Result<chrono::DateTime<chrono::Utc>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => "SELECT strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') AS now",
        _ => "SELECT statement_timestamp() AS now",
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::Custom("the database did not tell the time".into()))?;
    row.try_get("", "now")
}

/// `column`, a timestamp, is later than the database's clock now.
pub(crate) fn later_than_db_now(
    backend: DbBackend,
    column: impl sea_orm::sea_query::IntoColumnRef,
) -> sea_orm::sea_query::Expr {
    use sea_orm::sea_query::{Expr, ExprTrait};
    match backend {
        // Stored as RFC 3339 text, with as many fraction digits as the value needs: compared
        // as instants, not as text.
        DbBackend::Sqlite => {
            Expr::cust_with_expr("julianday(?) > julianday('now')", Expr::col(column))
        }
        _ => Expr::col(column).gt(Expr::cust("statement_timestamp()")),
    }
}

/// Connections of `db`'s pool that are idle now: a call that starts now gets one without
/// waiting or connecting.
pub fn idle_connections(db: &DatabaseConnection) -> usize {
    match db.get_database_backend() {
        DbBackend::Postgres => db.get_postgres_connection_pool().num_idle(),
        DbBackend::Sqlite => db.get_sqlite_connection_pool().num_idle(),
        _ => 0,
    }
}

/// Waits at most `budget` for a pooled connection of `db` (and, with `ping`, for a round trip
/// on it), then gives it back: whether the database can serve a call now. The pool alone
/// would wait its acquire timeout, whatever the caller's deadline. Running out of time is
/// `ConnectionAcquire(Timeout)`, as the pool's own timeout is; a connection that fails its
/// ping is closed.
pub async fn connection_within(
    db: &DatabaseConnection,
    budget: Duration,
    ping: bool,
) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => check(db.get_postgres_connection_pool(), budget, ping).await,
        DbBackend::Sqlite => check(db.get_sqlite_connection_pool(), budget, ping).await,
        _ => Ok(()),
    }
}

async fn check<DB: sea_orm::sqlx::Database>(
    pool: &sea_orm::sqlx::Pool<DB>,
    budget: Duration,
    ping: bool,
) -> Result<(), DbErr> {
    use sea_orm::sqlx::{Connection, Error};
    let timed_out = || DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
    let failed = |err: Error| match err {
        Error::PoolTimedOut => timed_out(),
        Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        err => DbErr::Conn(RuntimeErr::SqlxError(err.into())),
    };
    let deadline = tokio::time::Instant::now() + budget;
    let mut connection = tokio::time::timeout_at(deadline, pool.acquire())
        .await
        .map_err(|_| timed_out())?
        .map_err(failed)?;
    if ping {
        match tokio::time::timeout_at(deadline, connection.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                // Broken: not back into the pool.
                connection.close_on_drop();
                return Err(failed(err));
            }
            // Slow, not known broken: the pool checks it again before it is reused.
            Err(_) => return Err(timed_out()),
        }
    }
    Ok(())
}

/// Whether every connection `db`'s pool may open is open and in use: a caller waiting for one
/// is waiting on load, not on a database that cannot be reached.
pub fn pool_is_busy(db: &DatabaseConnection) -> bool {
    fn busy<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> bool {
        pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
    }
    match db.get_database_backend() {
        DbBackend::Postgres => busy(db.get_postgres_connection_pool()),
        DbBackend::Sqlite => busy(db.get_sqlite_connection_pool()),
        _ => false,
    }
}

tokio::task_local! {
    /// When the call being served must be done by (set by the deadline layer around it).
    static CALL_DEADLINE: tokio::time::Instant;
}

/// Runs `work` (a call) knowing it must be done by `deadline`: the write transactions it
/// begins on PostgreSQL wait for locks, and run statements, no longer than that.
pub async fn within_deadline<F: Future>(deadline: tokio::time::Instant, work: F) -> F::Output {
    CALL_DEADLINE.scope(deadline, work).await
}

/// Begins a transaction that is going to write.
///
/// On SQLite this is `BEGIN IMMEDIATE`: the write lock is taken (waiting up to the busy timeout)
/// before the first read, so a transaction that reads and then writes cannot fail half-way with
/// `SQLITE_BUSY` because another connection wrote in between. On PostgreSQL it is a plain
/// `BEGIN` (READ COMMITTED), and within a call (see [`within_deadline`]) its `lock_timeout`
/// and `statement_timeout` are the time the call has left: a call given up at its deadline
/// does not leave a transaction behind that waits for locks while holding others.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let backend = db.get_database_backend();
    let sqlite_transaction_mode = match backend {
        DbBackend::Sqlite => Some(SqliteTransactionMode::Immediate),
        _ => None,
    };
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode,
            ..TransactionOptions::default()
        })
        .await?;
    if backend == DbBackend::Postgres {
        // Generic plans: a write names its rows by key (or by arrays of keys), and a custom
        // plan for a 10,000-id array costs ~25 ms of planning per statement, estimating every
        // element, to choose the index probes a generic plan uses anyway.
        let mut settings = String::from("SET LOCAL plan_cache_mode = force_generic_plan");
        if let Ok(deadline) = CALL_DEADLINE.try_with(|deadline| *deadline) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ms = left.as_millis().clamp(1, i32::MAX as u128);
            settings.push_str(&format!(
                "; SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
            ));
        }
        txn.execute_unprepared(&settings).await?;
    }
    Ok(txn)
}

/// `column IN (customer_ids)`: the tenancy filter of a query that also names its rows by
/// id (users by id, methods by user id). SQLite would otherwise probe its
/// `(customer_id, ...)` index once for every pair of the two lists (500 customers times
/// 2,000 ids is a million probes); the unary `+` keeps the filter but leaves the index
/// choice to the id list. On PostgreSQL the ids travel as one array.
pub(crate) fn within_customers<E, C>(
    db: &impl ConnectionTrait,
    entity: E,
    column: C,
    customer_ids: &[ids::CustomerId],
) -> sea_orm::sea_query::Expr
where
    E: sea_orm::sea_query::IntoIden,
    C: sea_orm::sea_query::IntoIden,
{
    use sea_orm::sea_query::{Expr, ExprTrait};
    let column = Expr::col((entity, column));
    match db.get_database_backend() {
        // `?` is where sea-query's SQLite builder puts the column (`$1` would be a bind
        // parameter there, and silently match every row).
        DbBackend::Sqlite => Expr::cust_with_expr("+?", column).is_in(customer_ids.iter().copied()),
        // One array parameter, not 500: with a generic plan, a list of parameters is
        // estimated and searched element by element.
        _ => bulk::among(db, column, customer_ids.iter().map(|&id| id.into())),
    }
}

/// `url` (a PostgreSQL server URL) with its database, the path, replaced by `database` and
/// its query kept: how tests and the bench reach the database they create for themselves.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let server = base
        .get(start..)
        .and_then(|rest| rest.find('/'))
        .and_then(|slash| base.get(..start + slash))
        .unwrap_or(base);
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// The backend a URL names, judged by its scheme alone.
fn backend_of(database_url: &str) -> Result<DbBackend, DbErr> {
    let scheme = database_url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(DbBackend::Sqlite),
        Some("postgres" | "postgresql") => Ok(DbBackend::Postgres),
        _ => Err(conn_err(
            "unsupported database URL: expected sqlite: or postgres://".to_owned(),
        )),
    }
}

/// SQLite creates a missing file but not a missing directory; create it, so that a fresh data
/// directory works on first start. In-memory databases have no directory.
async fn create_sqlite_directory(database_url: &str) -> Result<(), DbErr> {
    let options = SqliteConnectOptions::from_str(database_url)
        .map_err(|e| conn_err(format!("invalid SQLite URL: {e}")))?;
    let Some(directory) = options.get_filename().parent() else {
        return Ok(());
    };
    if directory.as_os_str().is_empty() {
        return Ok(());
    }
    tokio::fs::create_dir_all(directory).await.map_err(|e| {
        conn_err(format!(
            "cannot create database directory {}: {e}",
            directory.display()
        ))
    })
}

/// sea-orm takes the `log` crate's `LevelFilter`; parsing it lets this crate name a level
/// without depending on `log` directly.
fn parse_level<L>(level: &str) -> Result<L, DbErr>
where
    L: FromStr,
    L::Err: Display,
{
    level
        .parse()
        .map_err(|e| conn_err(format!("invalid log level {level:?}: {e}")))
}

fn conn_err(message: String) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(message))
}

#[cfg(test)]
mod tests;
