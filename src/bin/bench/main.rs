//! `bench`: the performance benchmark of issue 9, run against the real server in-process.
//!
//! ```sh
//! # SQLite (a file in a fresh temp directory, removed afterwards)
//! cargo run --release --bin bench -- --backend sqlite
//! # PostgreSQL (a fresh database `mfa_reset_bench_<id>` on that server, dropped afterwards)
//! cargo run --release --bin bench -- --backend postgres \
//!     --postgres-url postgres://postgres@127.0.0.1:5432/test
//! # (or set MFA_RESET_TEST_POSTGRES_URL instead of --postgres-url)
//! # Smaller, and all figures as JSON, with the raw statements and their plans:
//! cargo run --release --bin bench -- --backend postgres --users 200000 --json bench.json --print-sql
//! # Seconds, tiny sizes (what the test suite runs, `tests/api/bench_smoke.rs`):
//! cargo run --bin bench -- --smoke --backend sqlite
//! ```
//!
//! One run:
//!
//! 1. Builds the service exactly as `main` does (`Settings`, `Application::build`, which
//!    migrates, `run_until_stopped`), rate limit off, on a fresh database, and seeds it
//!    set-based (`--users`, default 1,000,000 users with ~3 methods each, over `--customers`,
//!    default 2,000; see `seed`), then `VACUUM (ANALYZE)` / `ANALYZE`. The bench principal holds
//!    PRIVILEGED_AUTHENTICATION_ADMIN on `*`.
//! 2. (a) For each `--cases` entry `NxC` and each of `--rounds` rounds, picks N users never
//!    used before in the run (N/C from each of C random customers, each user with an active
//!    method) and runs, in this order on those rows: the raw read (the reads of a summarize in
//!    one hand-written transaction), `SummarizeMfaReset` (by user ids, first page 500), the raw
//!    confirm (the reads, locks and writes of a confirm in one set-based transaction, then
//!    ROLLBACK), `ConfirmMfaReset` with the summary's id and etag. Wall time of each, SQL
//!    statements (the server's counter for gRPC), the process's peak RSS during each gRPC call;
//!    medians per case. Every call must be OK, else the run fails with the status.
//! 3. (b) GetUser, ListUsers (50) and health through the server's layers, and two bare tonic
//!    servers (health with no work; one pooled PK lookup), at 1 / 16 / 64 in flight for
//!    `--duration-secs` each (see `throughput`).
//! 4. (c) The change stream (see `watch`): delivery latency of the largest case's reset to a
//!    watcher, the audit clock's cost to 1 / 16 / 64 concurrent writers, and the RSS with
//!    `--stalled-streams` streams that read nothing while events are committed.
//! 5. (d) Search, sorting and the customer selector's counts (see `search`): one more
//!    customer of `--large-customer-users` users, ListUsers with each kind of search text
//!    and order on it and on 500 customers of the seeded set, ListCustomers at pages of 50
//!    and 500 beside its counts alone, and the plans of those statements.
//! 6. Prints a table, writes every figure to `--json`, and marks each of the issue's targets
//!    `met` or `NOT met` (or `not measured`); a missed target is not an error exit.
//!
//! `BENCH_RSS_TRACE=1` prints the process's RSS (after `malloc_trim`) at each step of a round.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod db;
mod report;
mod resets;
mod search;
mod seed;
mod sql;
mod throughput;
mod watch;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use mfa_reset::{
    auth::{AuthSettings, ServerSecret, mint_dev_token},
    config::Settings,
    server::Application,
    store::{self, values::Role},
};
use sea_orm::sqlx;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

use crate::db::{Backend, Pool, Target};

/// The principal the bench calls as.
pub const SUBJECT: &str = "bench-admin";
/// The service's database pool (the `serve` default), and the PK baseline's.
const DB_MAX_CONNECTIONS: u32 = 10;
/// Random seeded users GetUser and the PK baseline pick from.
const SAMPLE_USERS: i64 = 10_000;

/// A part of the run (all by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Resets through gRPC beside raw SQL.
    A,
    /// Throughput of reads and health, beside bare servers.
    B,
    /// The change stream.
    C,
    /// Search, sorting and the customer selector's counts.
    D,
}

/// Benchmarks mfa-reset at the design's scale (issues 9, 10 and 13).
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// The database backend.
    #[arg(long, value_enum)]
    backend: Backend,
    /// A PostgreSQL server URL (its database is only used to create and drop the bench's own).
    #[arg(long, env = "MFA_RESET_TEST_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Users to seed (three methods each on average).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Customers to seed.
    #[arg(long, default_value_t = 2_000)]
    customers: u64,
    /// Reset cases, USERSxCUSTOMERS, comma-separated.
    #[arg(long, default_value = "100x1,1000x50,10000x500")]
    cases: String,
    /// Rounds per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each throughput cell.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tiny sizes, finishing in seconds: 2,000 users, 20 customers, cases 10x1,100x5,
    /// 1 round, 0.5 s cells, one more customer of 1,000 users for part (d).
    #[arg(long)]
    smoke: bool,
    /// Print the raw SQL statements and, for one round of the largest case, their plans
    /// (PostgreSQL: EXPLAIN (ANALYZE, BUFFERS) in a rolled-back transaction).
    #[arg(long)]
    print_sql: bool,
    /// Leave the database (and the temp directory) behind for inspection, and say where.
    #[arg(long)]
    keep_database: bool,
    /// Change streams that read nothing while part (c) commits events.
    #[arg(long, default_value_t = 20)]
    stalled_streams: usize,
    /// The parts to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c,d")]
    parts: Vec<Part>,
    /// Users of the one customer part (d) adds before it searches.
    #[arg(long, default_value_t = 100_000)]
    large_customer_users: u64,
    /// PostgreSQL: log every statement on the bench database with its duration to the
    /// server's log, and print the wall-clock window of each gRPC reset call, to break a
    /// call's time down by statement.
    #[arg(long)]
    pg_log_statements: bool,
}

/// The sizes of a run.
struct Plan {
    users: u64,
    customers: u64,
    cases: Vec<resets::Case>,
    rounds: usize,
    warmup: Duration,
    cell: Duration,
    large_customer_users: u64,
}

impl Plan {
    fn from(args: &Args) -> anyhow::Result<Plan> {
        let plan = if args.smoke {
            Plan {
                users: 2_000,
                customers: 20,
                cases: resets::parse_cases("10x1,100x5")?,
                rounds: 1,
                warmup: Duration::from_millis(100),
                cell: Duration::from_millis(500),
                large_customer_users: 1_000,
            }
        } else {
            anyhow::ensure!(args.duration_secs > 0.0, "--duration-secs must be positive");
            let cell = Duration::from_secs_f64(args.duration_secs);
            Plan {
                users: args.users,
                customers: args.customers,
                cases: resets::parse_cases(&args.cases)?,
                rounds: args.rounds.max(1),
                warmup: (cell / 5).min(Duration::from_secs(1)),
                cell,
                large_customer_users: args.large_customer_users.max(1),
            }
        };
        anyhow::ensure!(
            plan.customers >= 1 && plan.users >= plan.customers,
            "need --users >= --customers >= 1"
        );
        for case in &plan.cases {
            anyhow::ensure!(
                case.customers as u64 <= plan.customers,
                "case {} selects more customers than seeded",
                case.label()
            );
        }
        Ok(plan)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::from(&args)?;
    if args.print_sql {
        print_sql();
    }
    let target = Target::create(
        args.backend,
        args.postgres_url.as_deref(),
        args.pg_log_statements,
    )
    .await?;
    let result = bench(&plan, &target, &args).await;
    if args.keep_database {
        eprintln!("kept {}", target.describe());
    } else {
        target.drop_now().await;
    }
    let report = result?;
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}

/// Adds the bearer token to a request.
pub fn authed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn bench(plan: &Plan, target: &Target, args: &Args) -> anyhow::Result<report::Report> {
    let secret_file = target.dir.join("secret.key");
    let settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        database_url: target.url.clone(),
        db_max_connections: DB_MAX_CONNECTIONS,
        secret_file: secret_file.clone(),
        auth: AuthSettings {
            issuer: "mfa-reset".into(),
            audience: "mfa-reset".into(),
            public_key_files: vec![],
            jwks_file: None,
            leeway_seconds: 30,
        },
        request_timeout: Duration::from_secs(600),
        max_concurrent_requests: 256,
        max_message_bytes: 4 * 1024 * 1024,
        max_header_list_bytes: 512 * 1024,
        rate_limit_per_minute: 0,
        shutdown_grace: Duration::from_secs(5),
        reset_ttl: Duration::from_secs(3600),
        approval_ttl: Duration::from_secs(24 * 3600),
        request_id_purge_interval: Duration::from_secs(3600),
        // Room for the stalled streams of part (c), all the bench principal's.
        watch: mfa_reset::config::WatchSettings {
            max_streams_per_principal: 256,
            ..mfa_reset::config::WatchSettings::default()
        },
        transport: mfa_reset::config::TransportSettings::default(),
        metrics_listen: None,
    };
    // Builds (and migrates) first: the schema is the service's own.
    let app = Application::build(settings)
        .await
        .context("building the application")?;
    let endpoint = format!("http://{}", app.local_addr()?);
    let statements = app.statement_counter();

    // The bench's own pool, configured as the service's (nodelay on PostgreSQL, WAL on SQLite).
    let bench_db = store::connect_with_pool(&target.url, Some(DB_MAX_CONNECTIONS)).await?;
    let pool = Pool::of(&bench_db)?;
    let database = database_version(&pool).await?;
    eprintln!(
        "seeding {} customers, {} users on {} ...",
        plan.customers,
        plan.users,
        args.backend.name()
    );
    let seeded = seed::run(&pool, plan.customers, plan.users).await?;
    eprintln!(
        "seeded {} customers, {} users, {} methods in {:.1} s (+{:.1} s analyze)",
        seeded.customers,
        seeded.users,
        seeded.methods,
        seeded.insert_time.as_secs_f64(),
        seeded.analyze_time.as_secs_f64()
    );
    store::roles::grant(
        &bench_db,
        SUBJECT,
        None,
        Role::PrivilegedAuthenticationAdmin,
    )
    .await?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let outcome = measure(
        plan,
        &pool,
        &bench_db,
        &seeded,
        &target.url,
        &endpoint,
        &secret_file,
        statements,
        args,
    )
    .await;
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("warning: the server stopped with {err:#}"),
        Err(err) => eprintln!("warning: the server task failed: {err}"),
    }
    bench_db.close().await.ok();
    let Measured {
        cases,
        cells,
        list_size,
        watch,
        search,
    } = outcome?;

    let ratios = report::ratios(&cases, &cells);
    let targets = report::targets(&cases, &ratios);
    Ok(report::Report {
        machine: report::Machine::here(database),
        backend: args.backend.name(),
        smoke: args.smoke,
        rounds: plan.rounds,
        cell_secs: plan.cell.as_secs_f64(),
        warmup_secs: plan.warmup.as_secs_f64(),
        db_max_connections: DB_MAX_CONNECTIONS,
        list_users_customer_size: list_size,
        seeding: (&seeded).into(),
        cases,
        throughput: cells,
        ratios,
        targets,
        watch,
        search,
        notes: report::NOTES.to_vec(),
    })
}

/// The figures of the parts that ran (empty, or `None`, for the others).
struct Measured {
    cases: Vec<resets::CaseResult>,
    cells: Vec<throughput::Cell>,
    list_size: u64,
    watch: Option<watch::WatchReport>,
    search: Option<search::SearchReport>,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    plan: &Plan,
    pool: &Pool,
    bench_db: &sea_orm::DatabaseConnection,
    seeded: &seed::Seeded,
    url: &str,
    endpoint: &str,
    secret_file: &std::path::Path,
    statements: Arc<std::sync::atomic::AtomicU64>,
    args: &Args,
) -> anyhow::Result<Measured> {
    let secret = ServerSecret::load_or_create(secret_file)?;
    let token = mint_dev_token(
        &secret,
        SUBJECT,
        Duration::from_secs(24 * 3600),
        "mfa-reset",
        "mfa-reset",
    )?;
    let channel = Channel::from_shared(endpoint.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to the server")?;
    let runs = |part| args.parts.contains(&part);
    let mut measured = Measured {
        cases: Vec::new(),
        cells: Vec::new(),
        list_size: 0,
        watch: None,
        search: None,
    };

    if runs(Part::A) {
        eprintln!("(a) resets");
        measured.cases = resets::run(
            &resets::Setup {
                pool,
                channel: channel.clone(),
                token: &token,
                statements,
                rounds: plan.rounds,
                print_sql: args.print_sql,
                print_windows: args.pg_log_statements,
            },
            &plan.cases,
        )
        .await?;
    }

    if runs(Part::B) {
        eprintln!("(b) throughput");
        let (list_customer, list_size) = list_customer(pool).await?;
        let setup = throughput::Setup {
            endpoint: endpoint.to_string(),
            token: format!("Bearer {token}").parse()?,
            sample: Arc::new(sample_users(pool).await?),
            list_customer: list_customer.to_string(),
            // A pool of the service's size, configured as the service's.
            baseline_pool: Pool::of(
                &store::connect_with_pool(url, Some(DB_MAX_CONNECTIONS)).await?,
            )?,
            warmup: plan.warmup,
            duration: plan.cell,
        };
        measured.cells = throughput::run(&setup).await?;
        measured.list_size = list_size;
    }

    if runs(Part::C) {
        eprintln!("(c) change stream");
        let largest = plan
            .cases
            .iter()
            .max_by_key(|c| c.users)
            .cloned()
            .context("no case")?;
        let db = store::connect_with_pool(url, Some(4)).await?;
        let watched = watch::run(&watch::Setup {
            pool,
            db: &db,
            channel: channel.clone(),
            token: &token,
            case: largest,
            cell: plan.cell,
            stalled_streams: if args.smoke { 2 } else { args.stalled_streams },
            stalled_batches: if args.smoke {
                [2_000, 4_000]
            } else {
                [50_000, 50_000]
            },
            settle: if args.smoke {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(2)
            },
        })
        .await?;
        db.close().await.ok();
        measured.watch = Some(watched);
    }

    // Last: it adds a customer, which the other parts do not expect.
    if runs(Part::D) {
        eprintln!("(d) search and counts");
        measured.search = Some(
            search::run(&search::Setup {
                pool,
                db: bench_db,
                channel,
                token: &token,
                customers: seeded.customers,
                users: seeded.users,
                large_customer_users: plan.large_customer_users,
                cell: plan.cell,
            })
            .await?,
        );
    }
    Ok(measured)
}

async fn database_version(pool: &Pool) -> anyhow::Result<String> {
    Ok(match pool {
        Pool::Postgres(p) => {
            let (v,): (String,) = sqlx::query_as("SHOW server_version").fetch_one(p).await?;
            format!("PostgreSQL {v}")
        }
        Pool::Sqlite(p) => {
            let (v,): (String,) = sqlx::query_as("SELECT sqlite_version()")
                .fetch_one(p)
                .await?;
            format!("SQLite {v}")
        }
    })
}

/// Random seeded users, as `(customer id, user id)` text.
async fn sample_users(pool: &Pool) -> anyhow::Result<Vec<(String, String)>> {
    let rows: Vec<(Uuid, Uuid)> = match pool {
        Pool::Postgres(p) => {
            sqlx::query_as("SELECT customer_id, id FROM users ORDER BY random() LIMIT $1")
                .bind(SAMPLE_USERS)
                .fetch_all(p)
                .await?
        }
        Pool::Sqlite(p) => {
            sqlx::query_as("SELECT customer_id, id FROM users ORDER BY random() LIMIT ?1")
                .bind(SAMPLE_USERS)
                .fetch_all(p)
                .await?
        }
    };
    anyhow::ensure!(!rows.is_empty(), "no users seeded");
    Ok(rows
        .into_iter()
        .map(|(c, u)| (c.to_string(), u.to_string()))
        .collect())
}

/// The customer whose size is nearest 500 users among those with at least 300 (else the
/// largest): what ListUsers lists.
async fn list_customer(pool: &Pool) -> anyhow::Result<(Uuid, u64)> {
    const SIZES: &str = "SELECT customer_id, count(*) FROM users GROUP BY customer_id";
    let sizes: Vec<(Uuid, i64)> = match pool {
        Pool::Postgres(p) => sqlx::query_as(SIZES).fetch_all(p).await?,
        Pool::Sqlite(p) => sqlx::query_as(SIZES).fetch_all(p).await?,
    };
    let best = sizes
        .iter()
        .filter(|(_, n)| *n >= 300)
        .min_by_key(|(_, n)| (n - 500).abs())
        .or_else(|| sizes.iter().max_by_key(|(_, n)| *n))
        .context("no customers")?;
    anyhow::ensure!(best.1 >= 51, "no customer has more than 50 users");
    Ok((best.0, u64::try_from(best.1).unwrap_or(0)))
}

/// `--print-sql`: every raw statement, as the docs show them.
fn print_sql() {
    for (backend, postgres) in [("PostgreSQL", true), ("SQLite", false)] {
        println!("== Raw read ({backend}: one transaction) ==");
        for s in sql::raw_read(postgres) {
            println!("-- {}\n{};\n", s.name, s.sql);
        }
        println!(
            "== Raw confirm ({backend}: one transaction{}, then ROLLBACK) ==",
            if postgres { "" } else { ", BEGIN IMMEDIATE" }
        );
        for s in sql::raw_confirm(postgres) {
            println!("-- {}\n{};\n", s.name, s.sql);
        }
    }
    println!(
        "== PK-lookup baseline ==\n{};\n{};\n",
        throughput::PK_LOOKUP_PG,
        throughput::PK_LOOKUP_SQLITE
    );
}
