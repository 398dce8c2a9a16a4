//! Integration tests: the real server, started the way `main` starts it, on a random
//! port over a fresh database per test, spoken to only through the generated gRPC
//! clients. Each test runs on SQLite, and on PostgreSQL too when
//! `MFA_RESET_TEST_POSTGRES_URL` is set (`.ci/run` always sets it).
//!
//! One test binary (modules below) so that the suite links once.

#[macro_use]
mod helpers;

mod approval;
mod auth_tokens;
mod bench_smoke;
mod customers;
mod demo_and_cli;
mod errors_and_validation;
mod idempotency;
mod methods;
mod metrics;
mod nodelay;
mod outage;
mod paging;
mod races;
mod random_bodies;
mod rate_limit;
mod replicas;
mod reset_by_filter;
mod reset_guarantees;
mod reset_lists;
mod resets;
mod server_features;
mod telemetry;
mod transport;
mod transport_errors;
mod users;
mod watch;
