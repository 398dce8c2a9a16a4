//! Seeding the design's shape, set-based: `INSERT ... SELECT` over `generate_series`
//! (PostgreSQL) or a recursive CTE (SQLite), in batches of [`BATCH`] users with their
//! methods (two batches at a time on PostgreSQL), never row by row and never through gRPC.
//!
//! Every row is a function of its number: user `g` (0 ≤ g < users) belongs to customer
//! `c = floor(customers · u²)` with `u` a multiplicative hash of `g` in [0, 1), so tenants
//! range from a few dozen users to ~2% of all users, interleaved in creation order; it has
//! `(h / 128) % 7` methods (0 to 6, three on average; one user in seven has none), of
//! weighted kinds (phones and authenticator apps most common, one in ten a hardware token),
//! 40% of scope ORG, one in 23 DEACTIVATED. One user in 50 is an admin, one in five has no
//! external subject, one in 33 was reset before; users without methods in ENFORCED
//! customers (seven in ten) must register half the time. Ids are UUIDs with the v7 layout
//! (a millisecond timestamp that grows with the row number, version 7, variant 10, hashed
//! low bits), so ids sort in creation order as the service's own `Uuid::now_v7()` ids do;
//! the methods insert recomputes the user and customer ids from `g`, so the composite
//! foreign key `(customer_id, user_id)` holds by construction. The schema's CHECK, unique
//! and foreign key constraints stay in place and are checked on every row, and the search
//! keys are written as the service writes them (on SQLite, the triggers fill the FTS index).
//! [`one_customer`] adds one more tenant, all of whose users are numbered after the others:
//! the design's largest customer (part (d)).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::sqlx;

use crate::db::Pool;

/// Users per INSERT (with their methods in a second one).
pub const BATCH: u64 = 100_000;

/// Every method kind, enabled in every customer.
pub const ALL_KINDS: &str =
    "PHONE,AUTHENTICATOR_APP,SOFTWARE_OATH,HARDWARE_OATH,EMAIL,FIDO2,RECOVERY_CODES";

/// The weighted kinds a method's kind is drawn from.
const KIND_SLOTS: [&str; 10] = [
    "PHONE",
    "PHONE",
    "AUTHENTICATOR_APP",
    "AUTHENTICATOR_APP",
    "AUTHENTICATOR_APP",
    "SOFTWARE_OATH",
    "HARDWARE_OATH",
    "EMAIL",
    "FIDO2",
    "RECOVERY_CODES",
];

const FIRST_NAMES: [&str; 24] = [
    "Ada", "Ben", "Chloe", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jasmin", "Kenji",
    "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Viktor",
    "Wen", "Yara",
];

const LAST_NAMES: [&str; 30] = [
    "Abbott", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ito", "Jansen",
    "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quintero", "Rossi", "Schmidt",
    "Tanaka", "Umar", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Novak", "Silva", "Murphy", "Kim",
];

/// What seeding made and how long it took.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    pub customers: u64,
    pub users: u64,
    pub methods: u64,
    pub insert_time: Duration,
    /// Summed over the batches (which may run two at a time).
    pub users_time: Duration,
    pub methods_time: Duration,
    pub analyze_time: Duration,
}

/// Where the ids' timestamps start: customers first, then users, then methods, all in the
/// past.
struct Clock {
    customers_ms: i64,
    users_ms: i64,
    methods_ms: i64,
}

impl Clock {
    fn new(now: DateTime<Utc>, customers: u64, users: u64) -> Clock {
        let customers_ms = now.timestamp_millis() - 30 * 24 * 3600 * 1000;
        let users_ms = customers_ms + customers as i64 + 1000;
        let methods_ms = users_ms + users as i64 + 1000;
        Clock {
            customers_ms,
            users_ms,
            methods_ms,
        }
    }
}

/// Seeds `customers` customers and `users` users with their methods, then analyzes.
pub async fn run(pool: &Pool, customers: u64, users: u64) -> anyhow::Result<Seeded> {
    anyhow::ensure!(
        customers > 0 && users >= customers,
        "need users >= customers > 0"
    );
    // As the service stamps rows: to the microsecond, which both backends keep exactly.
    let now = mfa_reset::domain::now();
    let clock = Clock::new(now, customers, users);
    let started = Instant::now();
    let mut seeded = Seeded {
        customers: exec(pool, &customers_sql(pool, &clock, 0, customers), now).await?,
        ..Seeded::default()
    };
    let batches = (0..users.div_ceil(BATCH)).map(|b| Rows {
        customers,
        from: b * BATCH,
        to: ((b + 1) * BATCH).min(users),
        only: None,
    });
    insert_users(pool, &clock, now, batches, &mut seeded, started).await?;
    seeded.insert_time = started.elapsed();
    seeded.analyze_time = analyze(pool).await?;
    Ok(seeded)
}

/// Seeds one more customer, number `customers` (after the `customers` that [`run`] seeded),
/// with `users` users numbered from `first_user` on (after [`run`]'s), then analyzes: one
/// large tenant, created last.
pub async fn one_customer(
    pool: &Pool,
    customers: u64,
    first_user: u64,
    users: u64,
) -> anyhow::Result<Seeded> {
    // As the service stamps rows: to the microsecond, which both backends keep exactly.
    let now = mfa_reset::domain::now();
    let clock = Clock::new(now, customers + 1, first_user + users);
    let started = Instant::now();
    let mut seeded = Seeded {
        customers: exec(
            pool,
            &customers_sql(pool, &clock, customers, customers + 1),
            now,
        )
        .await?,
        ..Seeded::default()
    };
    let end = first_user + users;
    let batches = (0..users.div_ceil(BATCH)).map(|b| Rows {
        customers: customers + 1,
        from: first_user + b * BATCH,
        to: (first_user + (b + 1) * BATCH).min(end),
        only: Some(customers),
    });
    insert_users(pool, &clock, now, batches, &mut seeded, started).await?;
    seeded.insert_time = started.elapsed();
    seeded.analyze_time = analyze(pool).await?;
    Ok(seeded)
}

/// Batches of users then their methods; on PostgreSQL two batches at a time (one per core:
/// the inserts are CPU-bound in the server), on SQLite one (a single writer).
async fn insert_users(
    pool: &Pool,
    clock: &Clock,
    now: DateTime<Utc>,
    mut batches: impl Iterator<Item = Rows>,
    seeded: &mut Seeded,
    started: Instant,
) -> anyhow::Result<()> {
    let parallel = match pool {
        Pool::Postgres(_) => 2,
        Pool::Sqlite(_) => 1,
    };
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < parallel {
            let Some(rows) = batches.next() else {
                break;
            };
            let users_sql = users_sql(pool, clock, rows);
            let methods_sql = methods_sql(pool, clock, rows);
            let pool = pool.clone();
            running.spawn(async move {
                let started = Instant::now();
                let users = exec(&pool, &users_sql, now)
                    .await
                    .context("seeding users")?;
                let users_time = started.elapsed();
                let methods = exec(&pool, &methods_sql, now)
                    .await
                    .context("seeding methods")?;
                anyhow::Ok((users, methods, users_time, started.elapsed() - users_time))
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (users, methods, users_time, methods_time) = done??;
        seeded.users += users;
        seeded.methods += methods;
        seeded.users_time += users_time;
        seeded.methods_time += methods_time;
        eprint!(
            "\rseeding: {} users, {} methods ({:.0} s)",
            seeded.users,
            seeded.methods,
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    Ok(())
}

async fn analyze(pool: &Pool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    match pool {
        // VACUUM as well: it sets the hint bits and the visibility map of the new rows, so
        // neither the first measured reads nor an autovacuum started mid-run pay for them.
        Pool::Postgres(pool) => {
            sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await?;
        }
        Pool::Sqlite(pool) => {
            sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
            sqlx::raw_sql("ANALYZE").execute(pool).await?;
        }
    }
    Ok(started.elapsed())
}

async fn exec(pool: &Pool, sql: &str, now: DateTime<Utc>) -> anyhow::Result<u64> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    Ok(match pool {
        Pool::Postgres(pool) => sqlx::query(sql)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
        Pool::Sqlite(pool) => sqlx::query(sql)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
    })
}

fn pg_text_array(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    format!("(ARRAY[{}])", quoted.join(","))
}

fn json_text_array(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("'[{}]'", quoted.join(","))
}

/// A v7-layout UUID from a millisecond expression and a hash (PostgreSQL: an md5 hex
/// string).
fn pg_uuid(ms: &str, md5: &str) -> String {
    format!(
        "(lpad(to_hex({ms}), 12, '0') || '7' || substr({md5}, 1, 3) \
         || substr('89ab', 1 + (({ms}) % 4)::int, 1) || substr({md5}, 4, 15))::uuid"
    )
}

/// A v7-layout UUID as a 16-byte BLOB (SQLite, sea-orm's encoding) from a millisecond
/// expression and an integer expression unique per row.
fn sqlite_uuid(ms: &str, n: &str) -> String {
    format!(
        "unhex(printf('%012x', {ms}) || '7' \
         || printf('%03x', (({n}) * 2246822519 + 374761393) % 4096) \
         || substr('89ab', 1 + ({ms}) % 4, 1) \
         || printf('%07x', (({n}) * 3266489917 + 668265263) % 268435456) \
         || printf('%08x', (({n}) * 2654435761 + 1013904223) % 4294967296))"
    )
}

/// Customer `c`'s id, as both inserts compute it.
fn customer_id(pool: &Pool, clock: &Clock, c: &str) -> String {
    let ms = format!("({} + {c})", clock.customers_ms);
    match pool {
        Pool::Postgres(_) => pg_uuid(&ms, &format!("md5('c' || {c})")),
        Pool::Sqlite(_) => sqlite_uuid(&ms, &format!("{c} + 7777777")),
    }
}

/// User `g`'s id, as both inserts compute it.
fn user_id(pool: &Pool, clock: &Clock, g: &str) -> String {
    let ms = format!("({} + {g})", clock.users_ms);
    match pool {
        Pool::Postgres(_) => pg_uuid(&ms, &format!("md5('u' || {g})")),
        Pool::Sqlite(_) => sqlite_uuid(&ms, g),
    }
}

/// Customers number `from..to`.
fn customers_sql(pool: &Pool, clock: &Clock, from: u64, to: u64) -> String {
    let id = customer_id(pool, clock, "t.c");
    let series = match pool {
        Pool::Postgres(_) => format!("generate_series({from}, {}) AS t(c)", to - 1),
        Pool::Sqlite(_) => format!(
            "(WITH RECURSIVE s(c) AS (SELECT {from} UNION ALL SELECT c + 1 FROM s WHERE c + 1 < {to}) \
             SELECT c FROM s) AS t"
        ),
    };
    let name = match pool {
        Pool::Postgres(_) => "'Customer ' || lpad(t.c::text, 5, '0') || ' (bench)'",
        Pool::Sqlite(_) => "printf('Customer %05d (bench)', t.c)",
    };
    format!(
        "INSERT INTO customers (id, name, mfa_policy, enabled_method_kinds, created_at, \
         updated_at, approval_threshold) \
         SELECT {id}, {name}, \
         CASE WHEN t.c % 10 < 7 THEN 'ENFORCED' ELSE 'OPTIONAL' END, '{ALL_KINDS}', $1, $1, 0 \
         FROM {series}"
    )
}

/// Users number `from..to`: of the customers `0..customers` as the module says, or all of
/// customer `only`.
#[derive(Clone, Copy, Debug)]
struct Rows {
    customers: u64,
    from: u64,
    to: u64,
    only: Option<u64>,
}

/// The numbered rows with their hash `h1`, customer `c` and method count `m`, as a FROM item
/// named `k` (columns g, h1, c, m).
fn numbered(pool: &Pool, rows: Rows) -> String {
    let Rows {
        customers,
        from,
        to,
        only,
    } = rows;
    let last = customers - 1;
    match pool {
        Pool::Postgres(_) => format!(
            "(SELECT s.g, a.h1, {c} AS c, (a.h1 / 128) % 7 AS m \
             FROM generate_series({from}::bigint, {end}::bigint) AS s(g) \
             CROSS JOIN LATERAL (SELECT (s.g * 2654435761) % 4294967296 AS h1) AS a) AS k",
            c = only.map_or_else(
                || format!("least({last}, floor({customers} * power(a.h1 / 4294967296.0, 2))::bigint)"),
                |c| c.to_string()
            ),
            end = to - 1,
        ),
        Pool::Sqlite(_) => format!(
            "(WITH RECURSIVE s(g) AS (SELECT {from} UNION ALL SELECT g + 1 FROM s WHERE g + 1 < {to}), \
               a AS (SELECT g, (g * 2654435761) % 4294967296 AS h1 FROM s) \
             SELECT g, h1, {c} AS c, (h1 / 128) % 7 AS m FROM a) AS k",
            c = only.map_or_else(
                || format!(
                    "min({last}, CAST({customers} * (h1 / 4294967296.0) * (h1 / 4294967296.0) AS INTEGER))"
                ),
                |c| c.to_string()
            ),
        ),
    }
}

fn users_sql(pool: &Pool, clock: &Clock, rows: Rows) -> String {
    let id = user_id(pool, clock, "k.g");
    let customer = customer_id(pool, clock, "k.c");
    let rows = numbered(pool, rows);
    let name = match pool {
        Pool::Postgres(_) => format!(
            "({}[1 + k.g % 24] || ' ' || {}[1 + (k.g / 24) % 30])",
            pg_text_array(&FIRST_NAMES),
            pg_text_array(&LAST_NAMES)
        ),
        Pool::Sqlite(_) => format!(
            "(({} ->> (k.g % 24)) || ' ' || ({} ->> ((k.g / 24) % 30)))",
            json_text_array(&FIRST_NAMES),
            json_text_array(&LAST_NAMES)
        ),
    };
    format!(
        "INSERT INTO users (id, customer_id, external_subject, display_name, display_name_folded, \
         email, is_admin, mfa_registration_required, mfa_reset_at, created_at, updated_at, \
         search_key) \
         SELECT {id}, {customer}, \
         CASE WHEN (k.h1 / 1024) % 5 = 0 THEN NULL ELSE 'idp|user-' || k.g END, \
         {name}, lower({name}), 'user' || k.g || '@customer' || k.c || '.example', \
         (k.h1 / 16) % 50 = 0, \
         k.m = 0 AND k.c % 10 < 7 AND k.g % 2 = 0, \
         CASE WHEN k.g % 33 = 0 THEN $1 END, $1, $1, \
         ' ' || lower({name}) || ' | user' || k.g || ' customer' || k.c || ' example' \
         FROM {rows}"
    )
}

fn methods_sql(pool: &Pool, clock: &Clock, rows: Rows) -> String {
    let user = user_id(pool, clock, "k.g");
    let customer = customer_id(pool, clock, "k.c");
    let rows = numbered(pool, rows);
    let ms = format!("({} + k.g * 8 + j.j)", clock.methods_ms);
    let (id, slots, pad7, pad8) = match pool {
        Pool::Postgres(_) => (
            pg_uuid(&ms, "md5('m' || k.g || '.' || j.j)"),
            format!(
                "{}[1 + ((k.h1 / 8192) + j.j * 3) % 10]",
                pg_text_array(&KIND_SLOTS)
            ),
            "lpad((k.g % 10000000)::text, 7, '0')".to_string(),
            "lpad((k.g % 100000000)::text, 8, '0')".to_string(),
        ),
        Pool::Sqlite(_) => (
            sqlite_uuid(&ms, "k.g * 8 + j.j + 100000000"),
            format!(
                "({} ->> (((k.h1 / 8192) + j.j * 3) % 10))",
                json_text_array(&KIND_SLOTS)
            ),
            "printf('%07d', k.g % 10000000)".to_string(),
            "printf('%08d', k.g % 100000000)".to_string(),
        ),
    };
    let join = match pool {
        Pool::Postgres(_) => "JOIN generate_series(0, 5) AS j(j) ON j.j < k.m",
        Pool::Sqlite(_) => {
            "JOIN (SELECT 0 AS j UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
             UNION ALL SELECT 4 UNION ALL SELECT 5) AS j ON j.j < k.m"
        }
    };
    // The kind is computed once per row in an inner select, then labelled.
    format!(
        "INSERT INTO authentication_methods (id, customer_id, user_id, kind, scope, label, state, \
         secret_ref, created_at, updated_at, last_used_at) \
         SELECT id, customer_id, user_id, kind, scope, \
         CASE kind \
           WHEN 'PHONE' THEN '+1 555 ' || pad7 \
           WHEN 'EMAIL' THEN 'user' || g || '@mail.example' \
           WHEN 'HARDWARE_OATH' THEN 'Token ' || pad8 \
           WHEN 'FIDO2' THEN 'Security key ' || (j + 1) \
           WHEN 'AUTHENTICATOR_APP' THEN 'Phone app ' || (j + 1) \
           WHEN 'SOFTWARE_OATH' THEN 'TOTP app' \
           ELSE 'Recovery codes' END, \
         state, \
         CASE WHEN kind IN ('AUTHENTICATOR_APP', 'SOFTWARE_OATH', 'HARDWARE_OATH', 'FIDO2') \
           THEN 'kms://mfa/' || g || '/' || j END, \
         $1, $1, CASE WHEN (g + j) % 3 = 0 THEN NULL ELSE $1 END \
         FROM (SELECT {id} AS id, {customer} AS customer_id, {user} AS user_id, \
           {slots} AS kind, \
           CASE WHEN ((k.h1 / 65536) + j.j) % 5 < 2 THEN 'ORG' ELSE 'USER' END AS scope, \
           CASE WHEN (k.g + j.j * 7) % 23 = 0 THEN 'DEACTIVATED' ELSE 'ACTIVE' END AS state, \
           {pad7} AS pad7, {pad8} AS pad8, k.g AS g, j.j AS j \
           FROM {rows} {join}) AS r"
    )
}
