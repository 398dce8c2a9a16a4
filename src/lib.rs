//! mfa-reset: a gRPC service for multi-tenant MFA administration.
//!
//! Data flows one way: [`api`] (gRPC edge) -> [`domain`] (rules) -> [`store`] (sea-orm).
//! [`server`] composes the services with health, reflection and the tower [`layers`];
//! [`config`] holds every setting; [`telemetry`] sets up tracing and OpenTelemetry;
//! [`auth`] verifies bearer tokens; [`tls`] reads certificates; [`cli`] runs the operator
//! subcommands; [`demo`] seeds demo data.

// Outside tests, a panic is never how an error is reported: every fallible step returns one.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod layers;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
