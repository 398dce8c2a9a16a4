//! Part (d): search, sorting and the customer selector's counts (issue 13), through gRPC.
//!
//! 1. Seeds one more customer, created last, with `--large-customer-users` users (default
//!    100,000, three methods each on average) named as the others are (24 first names x 30
//!    last names), then `VACUUM (ANALYZE)` / `ANALYZE` again.
//! 2. For two selections, that customer alone and 500 customers spread evenly over the
//!    seeded set (every fourth), times ListUsers (page 50, one call in flight) for each kind
//!    of search text and order an administrator uses, each kind cycling through a few texts
//!    drawn from the seeded names and addresses. Each cell runs for the throughput cell's
//!    duration (at least [`MIN_CALLS`] calls, at most [`MAX_CALLS`]); the baseline, measured
//!    in the same run and interleaved with the others (first, and again last), is the same
//!    call without search text: a page in id order. Every call must be OK and every page
//!    must hold only users of the selection that match the text.
//! 3. The customer selector: ListCustomers at pages of 50 and 500 over every customer (each
//!    customer once per pass: 41 pages of 50, or 5 of 500, at 2,001 customers), beside the
//!    counts statement alone and the read of a page of customers alone, on the bench's own
//!    pool, for the same pages.
//! 4. The plans: `EXPLAIN (ANALYZE, BUFFERS)` (PostgreSQL) or `EXPLAIN QUERY PLAN` (SQLite)
//!    of the statement the service runs for a first page (`domain::users::list_statement`,
//!    the selection check included) and of the counts of a page of 500 customers.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mfa_reset::{
    domain::{self, users::UserQuery},
    proto::v1::{self as pb, customers_client::CustomersClient, users_client::UsersClient},
    store::{self, ids::CustomerId, search::Search, users::UserFilter},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, sqlx};
use serde::Serialize;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{SUBJECT, authed, db::Pool, seed, watch::percentile};

/// Calls per cell, at least (however long they take) and at most.
pub const MIN_CALLS: usize = 5;
pub const MAX_CALLS: usize = 400;
/// The page every ListUsers call asks for.
const PAGE: i32 = 50;

/// What part (d) needs.
pub struct Setup<'a> {
    pub pool: &'a Pool,
    pub db: &'a DatabaseConnection,
    pub channel: Channel,
    pub token: &'a str,
    /// Customers and users seeded so far (the new customer and its users are numbered on).
    pub customers: u64,
    pub users: u64,
    pub large_customer_users: u64,
    pub cell: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    pub large_customer: LargeCustomer,
    pub selections: Vec<SelectionResult>,
    pub counts: Vec<CountsCell>,
    pub plans: Vec<Explained>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LargeCustomer {
    pub id: String,
    pub users: u64,
    pub methods: u64,
    pub insert_secs: f64,
    pub analyze_secs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SelectionResult {
    pub name: String,
    pub customers: usize,
    pub users: u64,
    pub cells: Vec<QueryCell>,
}

/// One kind of search text or order on one selection.
#[derive(Clone, Debug, Serialize)]
pub struct QueryCell {
    pub kind: &'static str,
    /// The texts (or the order) the calls cycle through.
    pub texts: Vec<String>,
    /// Users of the selection that the first text matches (all of them without text).
    pub matching_users: u64,
    pub calls: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// p50 over the baseline's p50 (ListUsers without search text, the same selection).
    pub vs_baseline_p50: f64,
}

/// ListCustomers at one page size beside its two parts alone.
#[derive(Clone, Debug, Serialize)]
pub struct CountsCell {
    pub page_size: usize,
    pub pages_per_pass: usize,
    pub customers: usize,
    pub list_customers: Timing,
    /// `store::customers::user_counts` of the same pages, on the bench's own pool.
    pub counts_alone: Timing,
    /// The same pages of customers read without their counts, on the bench's own pool.
    pub page_alone: Timing,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Timing {
    pub calls: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explained {
    pub name: String,
    pub plan: String,
}

/// Runs part (d).
pub async fn run(ctx: &Setup<'_>) -> anyhow::Result<SearchReport> {
    eprintln!(
        "  seeding one more customer of {} users ...",
        ctx.large_customer_users
    );
    let seeded =
        seed::one_customer(ctx.pool, ctx.customers, ctx.users, ctx.large_customer_users).await?;
    let all = customer_ids(ctx.pool).await?;
    let large = *all.last().context("no customers")?;
    let large_customer = LargeCustomer {
        id: large.to_string(),
        users: seeded.users,
        methods: seeded.methods,
        insert_secs: seeded.insert_time.as_secs_f64(),
        analyze_secs: seeded.analyze_time.as_secs_f64(),
    };
    eprintln!(
        "  seeded {} users, {} methods in {:.1} s (+{:.1} s analyze)",
        seeded.users, seeded.methods, large_customer.insert_secs, large_customer.analyze_secs
    );
    // The seeded customers, without the large one, every fourth: 500 of 2,000.
    let seeded_set = all.get(..all.len() - 1).unwrap_or_default();
    let step = (seeded_set.len() / 500).max(1);
    let spread: Vec<Uuid> = seeded_set.iter().step_by(step).take(500).copied().collect();

    let mut selections = Vec::new();
    let mut plans = Vec::new();
    for (name, ids, domain) in [
        (
            "1 customer".to_string(),
            vec![large],
            format!("customer{}.example", ctx.customers),
        ),
        (
            format!("{} customers", spread.len()),
            spread.clone(),
            // A domain of one customer of the selection (and the prefix of a few others').
            format!("customer{}", step * 17 % seeded_set.len().max(1)),
        ),
    ] {
        eprintln!("  ListUsers on {name}");
        let selection = Selection::new(ctx, &ids).await?;
        selections.push(selection.measure(ctx, name.clone(), &domain).await?);
        for (kind, text) in [("last name", "nakamura"), ("substring", "kamu")] {
            plans.push(Explained {
                name: format!("ListUsers on {name}, {kind} \"{text}\""),
                plan: explain(ctx.db, &list_statement(ctx.db, &ids, text)).await?,
            });
        }
        if name == "1 customer" {
            plans.push(Explained {
                name: format!("ListUsers on {name}, domain \"{domain}\" (every user matches)"),
                plan: explain(ctx.db, &list_statement(ctx.db, &ids, &domain)).await?,
            });
        }
    }

    eprintln!("  ListCustomers");
    let mut counts = Vec::new();
    for page_size in [50, 500] {
        counts.push(counts_cell(ctx, &all, page_size).await?);
    }
    let page: Vec<CustomerId> = all.iter().take(500).map(|&id| id.into()).collect();
    plans.push(Explained {
        name: format!("the counts of a page of {} customers", page.len()),
        plan: explain(
            ctx.db,
            &store::customers::user_counts_statement(ctx.db.get_database_backend(), &page),
        )
        .await?,
    });
    Ok(SearchReport {
        large_customer,
        selections,
        counts,
        plans,
    })
}

/// Every customer id, in id order (the large customer, created last, is last).
async fn customer_ids(pool: &Pool) -> anyhow::Result<Vec<Uuid>> {
    const SQL: &str = "SELECT id FROM customers ORDER BY id";
    let rows: Vec<(Uuid,)> = match pool {
        Pool::Postgres(p) => sqlx::query_as(SQL).fetch_all(p).await?,
        Pool::Sqlite(p) => sqlx::query_as(SQL).fetch_all(p).await?,
    };
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One selection and what its cells need.
struct Selection {
    ids: Vec<Uuid>,
    /// The same, as the store takes them.
    customer_ids: Vec<CustomerId>,
    /// Its users.
    users: u64,
    /// E-mail local parts of a few of its users, as an admin who knows the address types
    /// them.
    locals: Vec<String>,
}

/// A cell's request: search text and an order, and the users of the selection the text
/// matches.
#[derive(Clone)]
struct Ask {
    query: String,
    order_by: String,
    matching: u64,
}

impl Selection {
    async fn new(ctx: &Setup<'_>, ids: &[Uuid]) -> anyhow::Result<Selection> {
        let customer_ids: Vec<CustomerId> = ids.iter().map(|&id| id.into()).collect();
        let users = count(ctx.db, &customer_ids, None).await?;
        let locals = sample_locals(ctx.pool, ids).await?;
        ensure!(!locals.is_empty(), "the selection has no users");
        Ok(Selection {
            ids: ids.to_vec(),
            customer_ids,
            users,
            locals,
        })
    }

    async fn measure(
        &self,
        ctx: &Setup<'_>,
        name: String,
        domain: &str,
    ) -> anyhow::Result<SelectionResult> {
        let texts = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let kinds: Vec<(&'static str, Vec<String>, &str)> = vec![
            ("no text (baseline)", vec![String::new()], ""),
            (
                "last name",
                texts(&["nakamura", "okafor", "kowalski", "silva"]),
                "",
            ),
            (
                "full name",
                texts(&["Priya Nakamura", "Omar Okafor", "Lena Kowalski"]),
                "",
            ),
            (
                "first name, 2 letters",
                texts(&["pr", "ke", "ro", "ma"]),
                "",
            ),
            ("one letter", texts(&["n", "k"]), ""),
            ("substring", texts(&["kamu", "walsk", "afo", "ilva"]), ""),
            ("e-mail local part", self.locals.clone(), ""),
            ("domain", vec![domain.to_string()], ""),
            ("no match", texts(&["nguyen", "zqxw"]), ""),
            (
                "last name, by e-mail",
                texts(&["nakamura", "okafor"]),
                "email",
            ),
            ("order by name", vec![String::new()], "display_name"),
            (
                "order by creation, newest first",
                vec![String::new()],
                "create_time desc",
            ),
        ];
        let mut cells = Vec::new();
        let mut baseline = Vec::new();
        for (kind, texts, order_by) in &kinds {
            let mut asks = Vec::new();
            for query in texts {
                asks.push(Ask {
                    query: query.clone(),
                    order_by: order_by.to_string(),
                    matching: count(ctx.db, &self.customer_ids, Search::new(query)).await?,
                });
            }
            let mut samples = self.time(ctx, &asks).await?;
            samples.sort_by(f64::total_cmp);
            eprintln!("    {kind}: p50 {:.2} ms", percentile(&samples, 0.5));
            if baseline.is_empty() {
                baseline = samples.clone();
            }
            let matching = asks.first().map_or(0, |a| a.matching);
            cells.push((*kind, texts.clone(), matching, samples));
        }
        // The baseline again, last, so that a machine that slowed down shows.
        let asks = [Ask {
            query: String::new(),
            order_by: String::new(),
            matching: self.users,
        }];
        baseline.extend(self.time(ctx, &asks).await?);
        baseline.sort_by(f64::total_cmp);
        let base_p50 = percentile(&baseline, 0.5).max(f64::MIN_POSITIVE);
        let cells = cells
            .into_iter()
            .enumerate()
            .map(|(i, (kind, texts, matching_users, mut samples))| {
                if i == 0 {
                    samples = baseline.clone();
                }
                let p50 = percentile(&samples, 0.5);
                QueryCell {
                    kind,
                    texts,
                    matching_users,
                    calls: samples.len(),
                    p50_ms: p50,
                    p99_ms: percentile(&samples, 0.99),
                    vs_baseline_p50: p50 / base_p50,
                }
            })
            .collect();
        Ok(SelectionResult {
            name,
            customers: self.ids.len(),
            users: self.users,
            cells,
        })
    }

    /// Calls ListUsers one at a time, cycling through `asks`, for the cell's duration; every
    /// page must be full (or hold every match) and hold only users of the selection.
    async fn time(&self, ctx: &Setup<'_>, asks: &[Ask]) -> anyhow::Result<Vec<f64>> {
        let mut client = UsersClient::new(ctx.channel.clone());
        let customer_ids: Vec<String> = self.ids.iter().map(Uuid::to_string).collect();
        let selected: std::collections::HashSet<&str> =
            customer_ids.iter().map(String::as_str).collect();
        let mut samples = Vec::new();
        let started = Instant::now();
        for ask in asks.iter().cycle() {
            let done = samples.len() >= MAX_CALLS
                || (samples.len() >= MIN_CALLS.max(asks.len()) && started.elapsed() >= ctx.cell);
            if done {
                break;
            }
            let request = pb::ListUsersRequest {
                customer_ids: customer_ids.clone(),
                query: ask.query.clone(),
                page_size: PAGE,
                order_by: ask.order_by.clone(),
                ..Default::default()
            };
            let call = Instant::now();
            let page = client
                .list_users(authed(request, ctx.token)?)
                .await
                .with_context(|| format!("ListUsers {:?} {:?}", ask.query, ask.order_by))?
                .into_inner();
            samples.push(call.elapsed().as_secs_f64() * 1e3);
            let expected = ask.matching.min(PAGE as u64);
            ensure!(
                page.users.len() as u64 == expected,
                "ListUsers {:?} returned {} users, not {expected}",
                ask.query,
                page.users.len()
            );
            if let Some(user) =
                (page.users.iter()).find(|u| !selected.contains(u.customer_id.as_str()))
            {
                anyhow::bail!(
                    "ListUsers returned a user of customer {} outside the selection",
                    user.customer_id
                );
            }
        }
        Ok(samples)
    }
}

/// Users of `customer_ids` that `search` matches (all of them without), as the service
/// counts them.
async fn count(
    db: &DatabaseConnection,
    customer_ids: &[CustomerId],
    search: Option<Search>,
) -> anyhow::Result<u64> {
    let filter = UserFilter {
        search,
        ..UserFilter::default()
    };
    Ok(store::users::count_matching(db, customer_ids, &filter).await?)
}

/// The e-mail local parts of up to four users of the selection, picked at random.
async fn sample_locals(pool: &Pool, ids: &[Uuid]) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String,)> = match pool {
        Pool::Postgres(p) => {
            sqlx::query_as(
                "SELECT email FROM users WHERE customer_id = ANY($1) ORDER BY random() LIMIT 4",
            )
            .bind(ids)
            .fetch_all(p)
            .await?
        }
        Pool::Sqlite(p) => {
            let json = serde_json::to_string(
                &ids.iter()
                    .map(|id| id.simple().to_string())
                    .collect::<Vec<_>>(),
            )?;
            sqlx::query_as(
                "SELECT email FROM users WHERE customer_id IN \
                 (SELECT unhex(value) FROM json_each(?1)) ORDER BY random() LIMIT 4",
            )
            .bind(json)
            .fetch_all(p)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .filter_map(|(email,)| email.split_once('@').map(|(local, _)| local.to_string()))
        .collect())
}

fn list_statement(db: &DatabaseConnection, ids: &[Uuid], text: &str) -> Statement {
    let customer_ids: Vec<CustomerId> = ids.iter().map(|&id| id.into()).collect();
    let query = UserQuery {
        search: Some(text.to_string()),
        ..UserQuery::default()
    };
    domain::users::list_statement(
        db.get_database_backend(),
        SUBJECT,
        &customer_ids,
        &query,
        PAGE as u64,
    )
}

/// The plan of `statement`, run with its values: `EXPLAIN (ANALYZE, BUFFERS)` on PostgreSQL,
/// `EXPLAIN QUERY PLAN` on SQLite.
async fn explain(db: &DatabaseConnection, statement: &Statement) -> anyhow::Result<String> {
    let backend = db.get_database_backend();
    let postgres = backend == sea_orm::DbBackend::Postgres;
    let prefix = if postgres {
        "EXPLAIN (ANALYZE, BUFFERS)"
    } else {
        "EXPLAIN QUERY PLAN"
    };
    let explained = Statement {
        sql: format!("{prefix} {}", statement.sql),
        ..statement.clone()
    };
    let rows = db.query_all_raw(explained).await?;
    if postgres {
        let lines = (rows.iter())
            .map(|row| row.try_get_by_index::<String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::resets::abbreviate(&lines.join("\n")))
    } else {
        let lines = (rows.iter())
            .map(|row| {
                Ok((
                    row.try_get_by_index::<i64>(0)?,
                    row.try_get_by_index::<i64>(1)?,
                    row.try_get_by_index::<i64>(2)?,
                    row.try_get_by_index::<String>(3)?,
                ))
            })
            .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
        Ok(crate::resets::sqlite_plan(&lines))
    }
}

/// ListCustomers over every customer at `page_size`, in whole passes, beside the counts of
/// the same pages and the same pages read alone.
async fn counts_cell(
    ctx: &Setup<'_>,
    all: &[Uuid],
    page_size: usize,
) -> anyhow::Result<CountsCell> {
    let mut client = CustomersClient::new(ctx.channel.clone());
    let mut samples = Vec::new();
    // Each page of the first pass: the id it follows, and its customers.
    let mut pages: Vec<(Option<CustomerId>, Vec<CustomerId>)> = Vec::new();
    let started = Instant::now();
    loop {
        let mut token = String::new();
        let mut after = None;
        loop {
            let request = pb::ListCustomersRequest {
                page_size: i32::try_from(page_size)?,
                page_token: token,
            };
            let call = Instant::now();
            let page = client
                .list_customers(authed(request, ctx.token)?)
                .await
                .context("ListCustomers")?
                .into_inner();
            samples.push(call.elapsed().as_secs_f64() * 1e3);
            ensure!(
                page.customers.iter().all(|c| c.user_counts.is_some()),
                "ListCustomers returned a customer without its counts"
            );
            let ids = (page.customers.iter())
                .map(|c| c.id.parse::<Uuid>().map(CustomerId::from))
                .collect::<Result<Vec<_>, _>>()?;
            let next = ids.last().copied();
            if pages.iter().map(|(_, ids)| ids.len()).sum::<usize>() < all.len() {
                pages.push((after, ids));
            }
            after = next;
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let seen: usize = pages.iter().map(|(_, ids)| ids.len()).sum();
        ensure!(
            seen == all.len(),
            "ListCustomers listed {seen} customers, not {}",
            all.len()
        );
        if samples.len() >= MAX_CALLS
            || (samples.len() >= MIN_CALLS && started.elapsed() >= ctx.cell)
        {
            break;
        }
    }
    let limit = page_size as u64 + 1;
    let counts_alone = time_pages(ctx, &pages, |db, (_, ids)| {
        Box::pin(async move {
            store::customers::user_counts(db, ids).await?;
            Ok(())
        })
    })
    .await?;
    let page_alone = time_pages(ctx, &pages, |db, (after, _)| {
        Box::pin(async move {
            store::customers::list_visible(db, SUBJECT, true, *after, limit).await?;
            Ok(())
        })
    })
    .await?;
    samples.sort_by(f64::total_cmp);
    Ok(CountsCell {
        page_size,
        pages_per_pass: pages.len(),
        customers: all.len(),
        list_customers: timing(&samples),
        counts_alone,
        page_alone,
    })
}

type PageFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>>;

type Pages = [(Option<CustomerId>, Vec<CustomerId>)];

/// Runs `f` on each page in turn, for whole passes, until the cell's duration is reached.
async fn time_pages<'a>(
    ctx: &Setup<'a>,
    pages: &'a Pages,
    f: impl Fn(&'a DatabaseConnection, &'a (Option<CustomerId>, Vec<CustomerId>)) -> PageFuture<'a>,
) -> anyhow::Result<Timing> {
    let mut samples = Vec::new();
    let started = Instant::now();
    'passes: loop {
        for page in pages {
            let call = Instant::now();
            f(ctx.db, page).await?;
            samples.push(call.elapsed().as_secs_f64() * 1e3);
            if samples.len() >= MAX_CALLS {
                break 'passes;
            }
        }
        if samples.len() >= MIN_CALLS && started.elapsed() >= ctx.cell {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(timing(&samples))
}

fn timing(sorted: &[f64]) -> Timing {
    Timing {
        calls: sorted.len(),
        p50_ms: percentile(sorted, 0.5),
        p99_ms: percentile(sorted, 0.99),
    }
}

impl SearchReport {
    pub fn print(&self) {
        let l = &self.large_customer;
        println!(
            "\n(d) Search, sorting and the selector's counts (issue 13; ListUsers pages of {PAGE}, one call in flight)"
        );
        println!(
            "  one more customer: {} users, {} methods in {:.1} s (+{:.1} s analyze)",
            l.users, l.methods, l.insert_secs, l.analyze_secs
        );
        for s in &self.selections {
            println!("\n  ListUsers on {} ({} users)", s.name, s.users);
            println!(
                "  {:<32} {:>9} {:>6} {:>9} {:>9} {:>9}  texts",
                "kind", "matching", "calls", "p50 ms", "p99 ms", "p50 ratio"
            );
            for c in &s.cells {
                println!(
                    "  {:<32} {:>9} {:>6} {:>9.2} {:>9.2} {:>8.2}x  {}",
                    c.kind,
                    c.matching_users,
                    c.calls,
                    c.p50_ms,
                    c.p99_ms,
                    c.vs_baseline_p50,
                    c.texts.join(", ")
                );
            }
        }
        println!(
            "  matching: users of the selection that the first text matches; p50 ratio: over the baseline's p50 (no text, same selection)"
        );
        println!("\n  ListCustomers (with the counts) beside the counts alone and the page alone");
        println!(
            "  {:<6} {:>6} {:>9} | {:>13} {:>13} | {:>13} {:>13} | {:>13} {:>13} | {:>7} {:>7}",
            "page",
            "pages",
            "customers",
            "list p50 ms",
            "list p99 ms",
            "counts p50",
            "counts p99",
            "page p50",
            "page p99",
            "counts/",
            "list/"
        );
        for c in &self.counts {
            let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
            println!(
                "  {:<6} {:>6} {:>9} | {:>13.2} {:>13.2} | {:>13.2} {:>13.2} | {:>13.2} {:>13.2} | {:>6.2}x {:>6.2}x",
                c.page_size,
                c.pages_per_pass,
                c.customers,
                c.list_customers.p50_ms,
                c.list_customers.p99_ms,
                c.counts_alone.p50_ms,
                c.counts_alone.p99_ms,
                c.page_alone.p50_ms,
                c.page_alone.p99_ms,
                ratio(c.counts_alone.p50_ms, c.page_alone.p50_ms),
                ratio(c.list_customers.p50_ms, c.page_alone.p50_ms),
            );
        }
        println!("  counts/ and list/: p50 over the page's p50 (the page of customers read alone)");
        for p in &self.plans {
            println!("\n  -- plan: {}\n{}", p.name, indent(&p.plan));
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
