//! The benchmark binary (`src/bin/bench/`) at tiny sizes, so that it cannot rot: it must
//! seed, run every reset case, throughput cell and search cell with OK calls only, and write
//! the JSON the docs are made from, on SQLite, and on PostgreSQL when
//! `MFA_RESET_TEST_POSTGRES_URL` is set.

use std::process::Command;

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::POSTGRES_URL_VAR;

const CASES: [(u64, u64); 2] = [(10, 1), (100, 5)];
const TARGETS: [&str; 5] = [
    "GetUser",
    "ListUsers(50)",
    "health",
    "bare health",
    "PK lookup",
];
const IN_FLIGHT: [u64; 3] = [1, 16, 64];

#[test]
fn bench_smoke_sqlite() {
    smoke(&["--backend", "sqlite"]);
}

#[test]
fn bench_smoke_postgres() {
    let Some(url) = std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("{POSTGRES_URL_VAR} is not set: skipping the PostgreSQL bench smoke run");
        return;
    };
    smoke(&["--backend", "postgres", "--postgres-url", &url]);
}

fn smoke(backend: &[&str]) {
    let json = std::env::temp_dir().join(format!("mfa-reset-bench-{}.json", Uuid::now_v7()));
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(backend)
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON")).expect("valid JSON");
    let _ = std::fs::remove_file(&json);

    assert_eq!(report["smoke"], true);
    assert!(
        report["seeding"]["users"].as_u64() == Some(2_000),
        "{report:#}"
    );
    assert!(report["seeding"]["methods"].as_u64() > Some(0));
    let cases = report["cases"].as_array().expect("cases");
    for (users, customers) in CASES {
        let case = cases
            .iter()
            .find(|c| c["users"] == users && c["customers"] == customers)
            .unwrap_or_else(|| panic!("case {users}x{customers} missing: {report:#}"));
        for field in [
            "median_raw_read_ms",
            "median_summarize_ms",
            "median_raw_confirm_ms",
            "median_confirm_ms",
            "summarize_ratio",
            "confirm_ratio",
        ] {
            assert!(
                case[field].as_f64().is_some_and(|v| v > 0.0),
                "{field} of {users}x{customers}: {case:#}"
            );
        }
        let rounds = case["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 1);
        for round in rounds {
            assert_eq!(round["users_reset"], users, "{round:#}");
            assert!(round["confirm_statements"].as_u64() > Some(0));
            assert!(round["summarize_statements"].as_u64() > Some(0));
        }
    }
    let cells = report["throughput"].as_array().expect("throughput");
    for target in TARGETS {
        for in_flight in IN_FLIGHT {
            let cell = cells
                .iter()
                .find(|c| c["target"] == target && c["in_flight"] == in_flight)
                .unwrap_or_else(|| panic!("cell {target}@{in_flight} missing: {report:#}"));
            for field in ["calls_per_sec", "p50_ms", "p99_ms"] {
                assert!(
                    cell[field].as_f64().is_some_and(|v| v > 0.0),
                    "{field} of {target}@{in_flight}: {cell:#}"
                );
            }
            assert_eq!(cell["failed_calls"], 0, "{cell:#}");
        }
    }
    let search = &report["search"];
    assert_eq!(search["large_customer"]["users"], 1_000, "{search:#}");
    let selections = search["selections"].as_array().expect("selections");
    assert_eq!(selections.len(), 2, "{search:#}");
    for selection in selections {
        let cells = selection["cells"].as_array().expect("cells");
        assert!(cells.len() >= 10, "{selection:#}");
        for cell in cells {
            assert!(cell["calls"].as_u64() >= Some(5), "{cell:#}");
            assert!(cell["p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{cell:#}");
        }
        let none = cells
            .iter()
            .find(|c| c["kind"] == "no match")
            .expect("no match");
        assert_eq!(none["matching_users"], 0, "{none:#}");
    }
    let counts = search["counts"].as_array().expect("counts");
    assert_eq!(counts.len(), 2, "{search:#}");
    for cell in counts {
        // The smoke run's 20 customers and the large one.
        assert_eq!(cell["customers"], 21, "{cell:#}");
        for part in ["list_customers", "counts_alone", "page_alone"] {
            assert!(
                cell[part]["p50_ms"].as_f64().is_some_and(|v| v > 0.0),
                "{cell:#}"
            );
        }
    }
    let plans = search["plans"].as_array().expect("plans");
    assert!(plans.len() >= 5, "{search:#}");
    assert!(
        plans
            .iter()
            .all(|p| !p["plan"].as_str().unwrap_or("").is_empty())
    );
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 8, "{report:#}");
    for target in targets {
        let status = target["status"].as_str().expect("status");
        assert!(
            ["met", "NOT met", "not measured"].contains(&status),
            "{target:#}"
        );
    }
    assert!(stdout.contains("Targets"), "{stdout}");
}
