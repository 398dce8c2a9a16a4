//! The output: a plain table on stdout, every figure as JSON, and the targets, each
//! `met`, `NOT met` or `not measured` (a case or cell the run did not include). A missed
//! target is reported, never an error exit.

use serde::Serialize;

use crate::{resets::CaseResult, seed::Seeded, throughput::Cell};

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub database: String,
}

impl Machine {
    pub fn here(database: String) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_string(), |k| k.trim().to_string()),
            database,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub figure: String,
    pub value: Option<f64>,
    pub limit: f64,
    pub status: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Seeding {
    pub customers: u64,
    pub users: u64,
    pub methods: u64,
    pub insert_secs: f64,
    /// Summed over the batches (two run at a time on PostgreSQL).
    pub users_insert_secs: f64,
    pub methods_insert_secs: f64,
    pub analyze_secs: f64,
}

impl From<&Seeded> for Seeding {
    fn from(s: &Seeded) -> Seeding {
        Seeding {
            customers: s.customers,
            users: s.users,
            methods: s.methods,
            insert_secs: s.insert_time.as_secs_f64(),
            users_insert_secs: s.users_time.as_secs_f64(),
            methods_insert_secs: s.methods_time.as_secs_f64(),
            analyze_secs: s.analyze_time.as_secs_f64(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub backend: &'static str,
    pub smoke: bool,
    pub rounds: usize,
    pub cell_secs: f64,
    pub warmup_secs: f64,
    pub db_max_connections: u32,
    pub list_users_customer_size: u64,
    pub seeding: Seeding,
    pub cases: Vec<CaseResult>,
    pub throughput: Vec<Cell>,
    pub ratios: Ratios,
    pub targets: Vec<TargetCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watch::WatchReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::search::SearchReport>,
    pub notes: Vec<&'static str>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    /// Median confirm of the largest case over that of the case with a tenth of its users.
    pub confirm_scaling: Option<Scaling>,
    pub get_user_vs_pk_lookup_at_64: Option<f64>,
    pub health_vs_bare_at_64: Option<f64>,
    pub health_p99_vs_bare_at_64: Option<f64>,
    pub list_users_p50_vs_get_user_p50_at_1: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scaling {
    pub large: String,
    pub small: String,
    pub ratio: f64,
}

pub const NOTES: [&str; 7] = [
    "raw confirm: the same reads, locks and writes as a confirm, in one transaction that is ROLLED BACK, so the gRPC confirm that follows finds the same rows",
    "PostgreSQL: after that rollback (untimed) VACUUM users, authentication_methods, audit_events, mfa_resets, so the gRPC confirm meets the rows as clean as the raw confirm did (no aborted xmax to hint, no dead versions and index entries)",
    "raw read: the reads of a summarize (roles, customers, users, methods) in one transaction; the summarize also stores the reset and its items, which the raw read does not",
    "raw transactions on PostgreSQL start with SET LOCAL plan_cache_mode = force_generic_plan, work_mem = 64MB, jit = off (index plans for = ANY of thousands of ids, in-memory sorts); the service runs with the server's defaults",
    "statements: gRPC calls from the server's statement counter (BEGIN/COMMIT not counted); raw transactions counted by the bench, BEGIN/ROLLBACK not counted",
    "peak RSS: VmHWM of the bench process (server, clients and the bench's own pool in one), after malloc_trim(0) and a reset with /proc/self/clear_refs just before the call; the RSS before the call is shown beside it",
    "the server, the clients, the baselines and the database share the machine's cores",
];

fn cell<'a>(cells: &'a [Cell], target: &str, in_flight: usize) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.target == target && c.in_flight == in_flight)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The case the targets name (10,000 users over 500 customers), or else the largest run.
fn headline(cases: &[CaseResult]) -> Option<&CaseResult> {
    cases
        .iter()
        .find(|c| c.users == 10_000 && c.customers == 500)
        .or_else(|| cases.iter().max_by_key(|c| (c.users, c.customers)))
}

pub fn ratios(cases: &[CaseResult], cells: &[Cell]) -> Ratios {
    let confirm_scaling = headline(cases).and_then(|large| {
        let small = cases
            .iter()
            .filter(|c| c.users * 10 == large.users)
            .min_by_key(|c| c.customers.abs_diff(large.customers / 10))?;
        Some(Scaling {
            large: large.case().label(),
            small: small.case().label(),
            ratio: large.median_confirm_ms / small.median_confirm_ms.max(f64::MIN_POSITIVE),
        })
    });
    let rate = |t, n| cell(cells, t, n).map(|c| c.calls_per_sec);
    let p99 = |t, n| cell(cells, t, n).map(|c| c.p99_ms);
    let p50 = |t, n| cell(cells, t, n).map(|c| c.p50_ms);
    Ratios {
        confirm_scaling,
        get_user_vs_pk_lookup_at_64: ratio(rate("GetUser", 64), rate("PK lookup", 64)),
        health_vs_bare_at_64: ratio(rate("health", 64), rate("bare health", 64)),
        health_p99_vs_bare_at_64: ratio(p99("health", 64), p99("bare health", 64)),
        list_users_p50_vs_get_user_p50_at_1: ratio(p50("ListUsers(50)", 1), p50("GetUser", 1)),
    }
}

fn check(target: String, value: Option<f64>, limit: f64, at_most: bool, unit: &str) -> TargetCheck {
    let status = match value {
        None => "not measured",
        Some(v) if (at_most && v <= limit) || (!at_most && v >= limit) => "met",
        Some(_) => "NOT met",
    };
    let figure = value.map_or_else(|| "-".to_string(), |v| format!("{v:.3}{unit}"));
    TargetCheck {
        target,
        figure,
        value,
        limit,
        status,
    }
}

pub fn targets(cases: &[CaseResult], ratios: &Ratios) -> Vec<TargetCheck> {
    let head = headline(cases);
    let label = head.map_or_else(|| "10000x500".to_string(), |c| c.case().label());
    let scaling = ratios.confirm_scaling.as_ref();
    vec![
        check(
            format!("confirm {label} <= 1.2x raw confirm"),
            head.map(|c| c.confirm_ratio),
            1.2,
            true,
            "x",
        ),
        check(
            format!("summarize {label} <= 1.2x raw read"),
            head.map(|c| c.summarize_ratio),
            1.2,
            true,
            "x",
        ),
        check(
            format!(
                "confirm time({}) / time({}) <= 11",
                scaling.map_or("10k", |s| s.large.as_str()),
                scaling.map_or("1k", |s| s.small.as_str())
            ),
            scaling.map(|s| s.ratio),
            11.0,
            true,
            "",
        ),
        check(
            "ListUsers(50) p50 <= 3x GetUser p50, 1 in flight".into(),
            ratios.list_users_p50_vs_get_user_p50_at_1,
            3.0,
            true,
            "x",
        ),
        check(
            "GetUser @64 >= 0.7x PK-lookup baseline @64 (calls/s)".into(),
            ratios.get_user_vs_pk_lookup_at_64,
            0.7,
            false,
            "x",
        ),
        check(
            "health @64 >= 0.8x bare health @64 (calls/s)".into(),
            ratios.health_vs_bare_at_64,
            0.8,
            false,
            "x",
        ),
        check(
            "health p99 @64 <= 2x bare health p99 @64".into(),
            ratios.health_p99_vs_bare_at_64,
            2.0,
            true,
            "x",
        ),
        check(
            format!("peak RSS during the {label} confirm < 200 MiB"),
            head.and_then(|c| c.max_confirm_peak_rss_kib)
                .map(|kib| kib as f64 / 1024.0),
            200.0,
            true,
            " MiB",
        ),
    ]
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}{unit}"))
}

impl Report {
    pub fn print(&self) {
        let m = &self.machine;
        println!("== mfa-reset bench ==");
        println!(
            "machine   {} ({} cores), {:.1} GiB, Linux {}",
            m.cpu, m.cores, m.memory_gib, m.kernel
        );
        println!("backend   {} ({})", self.backend, m.database);
        println!(
            "sizes     {} customers, {} users, {} methods{}",
            self.seeding.customers,
            self.seeding.users,
            self.seeding.methods,
            if self.smoke { " (--smoke)" } else { "" }
        );
        println!(
            "seeding   {:.1} s insert (batches: {:.1} s users, {:.1} s methods) + {:.1} s {}",
            self.seeding.insert_secs,
            self.seeding.users_insert_secs,
            self.seeding.methods_insert_secs,
            self.seeding.analyze_secs,
            if self.backend == "postgres" {
                "VACUUM (ANALYZE)"
            } else {
                "ANALYZE"
            }
        );
        println!(
            "settings  db pool {} connections, rate limit off, {} round(s) per case (median), {:.1} s per throughput cell after {:.1} s warm-up",
            self.db_max_connections, self.rounds, self.cell_secs, self.warmup_secs
        );

        if !self.cases.is_empty() {
            println!(
                "\n(a) SummarizeMfaReset and ConfirmMfaReset through gRPC beside raw SQL (median ms)"
            );
            println!(
                "{:<10} | {:>9} {:>10} {:>6} {:>9} | {:>11} {:>10} {:>6} {:>9} | {:>11} {:>9}",
                "case",
                "raw read",
                "summarize",
                "ratio",
                "stmts",
                "raw confirm",
                "confirm",
                "ratio",
                "stmts",
                "RSS MiB",
                "users/s"
            );
            for c in &self.cases {
                let stmts = |f: fn(&crate::resets::Round) -> u64| {
                    let mut v: Vec<u64> = c.rounds.iter().map(f).collect();
                    v.sort_unstable();
                    v.get(v.len() / 2).copied().unwrap_or(0)
                };
                println!(
                    "{:<10} | {:>9.1} {:>10.1} {:>5.2}x {:>4}/{:<4} | {:>11.1} {:>10.1} {:>5.2}x {:>4}/{:<4} | {:>5} > {:<3} {:>9.0}",
                    c.case().label(),
                    c.median_raw_read_ms,
                    c.median_summarize_ms,
                    c.summarize_ratio,
                    stmts(|r| r.raw_read_statements),
                    stmts(|r| r.summarize_statements),
                    c.median_raw_confirm_ms,
                    c.median_confirm_ms,
                    c.confirm_ratio,
                    stmts(|r| r.raw_confirm_statements),
                    stmts(|r| r.confirm_statements),
                    mib(c.max_confirm_rss_before_kib),
                    mib(c.max_confirm_peak_rss_kib),
                    c.users as f64 / (c.median_confirm_ms / 1e3).max(f64::MIN_POSITIVE),
                );
            }
            println!(
                "  stmts: raw/gRPC; RSS MiB: the bench process before the confirm > its peak during it; users/s: of the confirm"
            );
            if let Some(s) = &self.ratios.confirm_scaling {
                println!(
                    "  confirm time({}) / time({}) = {:.2}",
                    s.large, s.small, s.ratio
                );
            }
            if let Some(c) = self.cases.iter().max_by_key(|c| c.users) {
                if let Some(r) = c.rounds.first() {
                    println!(
                        "  {} per round: {} users reset, {} methods deleted, {} deactivated, {} methods read",
                        c.case().label(),
                        r.users_reset,
                        r.methods_deleted,
                        r.methods_deactivated,
                        r.methods_read
                    );
                }
            }
        }
        if !self.throughput.is_empty() {
            println!(
                "\n(b) Throughput: calls with status OK ({} channels at most per target; ListUsers lists a customer of {} users)",
                crate::throughput::CHANNELS,
                self.list_users_customer_size
            );
            println!(
                "{:<14} {:>9} {:>8} {:>11} {:>9} {:>9} {:>7}",
                "target", "in flight", "channels", "calls/s", "p50 ms", "p99 ms", "failed"
            );
            for c in &self.throughput {
                println!(
                    "{:<14} {:>9} {:>8} {:>11.0} {:>9.2} {:>9.2} {:>7}",
                    c.target,
                    c.in_flight,
                    c.channels,
                    c.calls_per_sec,
                    c.p50_ms,
                    c.p99_ms,
                    c.failed_calls
                );
            }
            let r = &self.ratios;
            println!(
                "  GetUser@64 / PK lookup@64 = {}; health@64 / bare@64 = {}; health p99@64 / bare p99@64 = {}; ListUsers p50 / GetUser p50 @1 = {}",
                opt(r.get_user_vs_pk_lookup_at_64, "x"),
                opt(r.health_vs_bare_at_64, "x"),
                opt(r.health_p99_vs_bare_at_64, "x"),
                opt(r.list_users_p50_vs_get_user_p50_at_1, "x"),
            );
        }

        if let Some(w) = &self.watch {
            println!("\n(c) Change stream (issue 10)");
            println!(
                "  delivery of a {} reset's {} MFA_RESET events to a watcher: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms after the confirm's answer ({:.0} ms; {} arrived before it)",
                w.latency.case,
                w.latency.events,
                w.latency.p50_ms,
                w.latency.p99_ms,
                w.latency.max_ms,
                w.latency.confirm_ms,
                w.latency.before_answer
            );
            println!(
                "  {:<8} {:>9} {:>11} {:>9} {:>9}",
                "writers", "clock", "commits/s", "p50 ms", "p99 ms"
            );
            for c in &w.clock {
                println!(
                    "  {:<8} {:>9} {:>11.0} {:>9.2} {:>9.2}",
                    c.writers,
                    if c.stamped { "stamped" } else { "none" },
                    c.commits_per_sec,
                    c.p50_ms,
                    c.p99_ms
                );
            }
            for pair in w.clock.chunks(2) {
                if let [none, stamped] = pair {
                    println!(
                        "  {} writers: the clock costs {:.2}x the commits/s",
                        none.writers,
                        stamped.commits_per_sec / none.commits_per_sec.max(f64::MIN_POSITIVE)
                    );
                }
            }
            println!(
                "  {} stalled streams: RSS {} MiB before; after (events committed, MiB): {}",
                w.stalled.streams,
                mib(w.stalled.rss_before_kib),
                w.stalled
                    .rss_after_kib
                    .iter()
                    .map(|(n, kib)| format!("({n}, {})", mib(*kib)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(search) = &self.search {
            search.print();
        }

        if !self.cases.is_empty() || !self.throughput.is_empty() {
            println!("\nTargets (issue 9)");
            for t in &self.targets {
                println!("  [{:<12}] {:<58} {}", t.status, t.target, t.figure);
            }
        }
        println!("\nNotes");
        for n in &self.notes {
            println!("  - {n}");
        }
    }
}
