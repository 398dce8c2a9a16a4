//! The service's metrics, through OpenTelemetry's metrics API: exported over OTLP where
//! traces are (`--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_*` variables), and
//! served in Prometheus' text format on `--metrics-listen` (`GET /metrics`).
//!
//! | instrument | kind | attributes |
//! | --- | --- | --- |
//! | `rpc.server.call.duration` (s) | histogram | `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code` |
//! | `mfa_reset.resets` | counter | `outcome`: summarized, confirmed, awaiting_approval, approved, rejected, cancelled, stale |
//! | `mfa_reset.users.reset` | counter | |
//! | `mfa_reset.rate_limited` | counter | |
//! | `db.client.connection.count` | gauge | `db.client.connection.state`: idle, used |
//! | `db.client.connection.max` | gauge | |
//! | `mfa_reset.watch.streams` | gauge | (open change streams) |
//!
//! Instruments are made once per process from the global meter provider ([`install`] sets
//! it); without one (the in-process tests) they record nothing. Counts made inside a write
//! transaction are recorded once it commits ([`after_commit`]); RPC labels come only from
//! this server's own RPC names ([`rpc_of`]).

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, ObservableGauge},
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use sea_orm::DatabaseConnection;

const METER: &str = "mfa-reset";

/// The registry `/metrics` serves, once [`install`] made one.
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();
static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

struct Instruments {
    rpc_duration: Histogram<f64>,
    resets: Counter<u64>,
    users_reset: Counter<u64>,
    rate_limited: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter(METER);
        Instruments {
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description(
                    "Duration of the calls this server answered, by RPC and status code",
                )
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
                .build(),
            resets: meter
                .u64_counter("mfa_reset.resets")
                .with_description("MFA resets by what happened to them")
                .build(),
            users_reset: meter
                .u64_counter("mfa_reset.users.reset")
                .with_description("Users whose MFA a confirmed or approved reset reset")
                .build(),
            rate_limited: meter
                .u64_counter("mfa_reset.rate_limited")
                .with_description("Calls refused for their principal's rate limit")
                .build(),
        }
    })
}

/// What happened to a reset, for `mfa_reset.resets`.
#[derive(Clone, Copy, Debug)]
pub enum ResetOutcome {
    /// A summary was stored.
    Summarized,
    /// Applied by its requester's confirm.
    Confirmed,
    /// Confirmed by its requester, now awaiting approval.
    AwaitingApproval,
    /// Approved and applied.
    Approved,
    /// Rejected by an approver.
    Rejected,
    /// Cancelled by its requester.
    Cancelled,
    /// A confirm or approval refused because the plan was stale.
    Stale,
}

impl ResetOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ResetOutcome::Summarized => "summarized",
            ResetOutcome::Confirmed => "confirmed",
            ResetOutcome::AwaitingApproval => "awaiting_approval",
            ResetOutcome::Approved => "approved",
            ResetOutcome::Rejected => "rejected",
            ResetOutcome::Cancelled => "cancelled",
            ResetOutcome::Stale => "stale",
        }
    }
}

/// A count made inside a transaction, held until it commits.
#[derive(Clone, Copy, Debug)]
enum Deferred {
    Reset(ResetOutcome),
    UsersReset(usize),
}

tokio::task_local! {
    /// The counts of the write transaction running in this task (see [`after_commit`]).
    static PENDING: std::cell::RefCell<Vec<Deferred>>;
}

/// Runs `work` (a write transaction) so that the counts made inside it are recorded only if
/// it returns Ok, that is once it has committed; a rolled-back or failed one counts nothing.
pub async fn after_commit<T, E>(work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let (result, pending) = PENDING
        .scope(std::cell::RefCell::new(Vec::new()), async {
            let result = work.await;
            let pending = PENDING.with(|p| p.take());
            (result, pending)
        })
        .await;
    if result.is_ok() {
        pending.into_iter().for_each(record);
    }
    result
}

fn defer(count: Deferred) {
    // Outside a transaction's scope (nothing to wait for), record at once.
    if PENDING.try_with(|p| p.borrow_mut().push(count)).is_err() {
        record(count);
    }
}

fn record(count: Deferred) {
    match count {
        Deferred::Reset(outcome) => instruments()
            .resets
            .add(1, &[KeyValue::new("outcome", outcome.as_str())]),
        Deferred::UsersReset(users) => instruments().users_reset.add(users as u64, &[]),
    }
}

/// Counts one reset outcome, once its transaction commits (see [`after_commit`]).
pub fn reset(outcome: ResetOutcome) {
    defer(Deferred::Reset(outcome));
}

/// Counts a confirm or approval refused as stale: at once, since its transaction is rolled
/// back by the refusal.
pub fn stale_plan() {
    record(Deferred::Reset(ResetOutcome::Stale));
}

/// Counts the users a reset reset, once its transaction commits.
pub fn users_reset(users: usize) {
    defer(Deferred::UsersReset(users));
}

/// Counts a call refused by the rate limit.
pub fn rate_limited() {
    instruments().rate_limited.add(1, &[]);
}

/// The `(service, method)` a request path names when this server has that RPC; any other
/// path (unknown, mistyped, a scan) is `("_OTHER", "_OTHER")`, as OpenTelemetry's RPC
/// conventions say, so that no caller can add metric series or span names.
pub fn rpc_of(path: &str) -> (&str, &str) {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        use prost::Message as _;
        let mut known: std::collections::HashSet<String> = [
            "grpc.health.v1.Health/Check",
            "grpc.health.v1.Health/Watch",
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) {
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    });
    let rpc = path.trim_start_matches('/');
    match rpc.split_once('/') {
        Some(split) if known.contains(rpc) => split,
        _ => ("_OTHER", "_OTHER"),
    }
}

/// Records one call's duration and status code; `path` is its request path.
pub fn rpc_finished(path: &str, code: i32, duration: Duration) {
    let (service, method) = rpc_of(path);
    instruments().rpc_duration.record(
        duration.as_secs_f64(),
        &[
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_string()),
            KeyValue::new("rpc.method", method.to_string()),
            KeyValue::new("rpc.grpc.status_code", i64::from(code)),
        ],
    );
}

/// Gauges read when metrics are collected; they observe as long as this lives.
#[must_use = "the gauges observe only while this is kept"]
pub struct Gauges {
    _gauges: Vec<ObservableGauge<u64>>,
}

/// Registers the gauges of this replica: its database pool and its open change streams.
pub fn observe(
    db: &DatabaseConnection,
    open_streams: Arc<dyn Fn() -> usize + Send + Sync>,
) -> Gauges {
    let meter = opentelemetry::global::meter(METER);
    let pool = db.clone();
    let connections = meter
        .u64_observable_gauge("db.client.connection.count")
        .with_description("Connections of this replica's database pool, by state")
        .with_callback(move |observer| {
            if let Some((size, idle)) = pool_stats(&pool) {
                observer.observe(idle, &[KeyValue::new("db.client.connection.state", "idle")]);
                observer.observe(
                    size.saturating_sub(idle),
                    &[KeyValue::new("db.client.connection.state", "used")],
                );
            }
        })
        .build();
    let pool = db.clone();
    let max = meter
        .u64_observable_gauge("db.client.connection.max")
        .with_description("The most connections this replica's database pool opens")
        .with_callback(move |observer| {
            if let Some(max) = pool_max(&pool) {
                observer.observe(max, &[]);
            }
        })
        .build();
    let streams = meter
        .u64_observable_gauge("mfa_reset.watch.streams")
        .with_description("Change streams (WatchAuditEvents) open on this replica")
        .with_callback(move |observer| observer.observe(open_streams() as u64, &[]))
        .build();
    Gauges {
        _gauges: vec![connections, max, streams],
    }
}

/// (connections open, of which idle) of the pool.
fn pool_stats(db: &DatabaseConnection) -> Option<(u64, u64)> {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            Some((u64::from(pool.size()), pool.num_idle() as u64))
        }
        sea_orm::DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            Some((u64::from(pool.size()), pool.num_idle() as u64))
        }
        _ => None,
    }
}

fn pool_max(db: &DatabaseConnection) -> Option<u64> {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => Some(u64::from(
            db.get_postgres_connection_pool()
                .options()
                .get_max_connections(),
        )),
        sea_orm::DbBackend::Sqlite => Some(u64::from(
            db.get_sqlite_connection_pool()
                .options()
                .get_max_connections(),
        )),
        _ => None,
    }
}

/// Shuts the meter provider down (a last export) when dropped.
#[derive(Debug, Default)]
pub struct MetricsGuard {
    provider: Option<SdkMeterProvider>,
}

impl Drop for MetricsGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("failed to shut down OpenTelemetry metric export: {error}");
            }
        }
    }
}

/// Sets the global meter provider: a Prometheus reader when `prometheus` (for
/// `--metrics-listen`), and OTLP export every 30 s (or `OTEL_METRIC_EXPORT_INTERVAL`) when
/// `otlp` names where (`Some(None)`: the standard `OTEL_EXPORTER_OTLP_*` variables say).
/// Nothing when neither is asked for. Needs a Tokio runtime for OTLP.
pub fn install(
    prometheus: bool,
    otlp: Option<Option<&str>>,
    resource: opentelemetry_sdk::Resource,
) -> anyhow::Result<MetricsGuard> {
    if !prometheus && otlp.is_none() {
        return Ok(MetricsGuard::default());
    }
    let mut provider = SdkMeterProvider::builder().with_resource(resource);
    if prometheus {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .context("building the Prometheus exporter")?;
        provider = provider.with_reader(exporter);
        let _ = REGISTRY.set(registry);
    }
    if let Some(endpoint) = otlp {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        let exporter = match endpoint {
            Some(endpoint) => exporter.with_endpoint(endpoint),
            None => exporter,
        };
        let exporter = exporter
            .build()
            .context("building the OTLP metric exporter")?;
        provider = provider.with_reader(PeriodicReader::builder(exporter).build());
    }
    let provider = provider.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    // Instruments made before this would record nowhere: make them now, from this provider.
    let _ = instruments();
    Ok(MetricsGuard {
        provider: Some(provider),
    })
}

/// Most scrapes served at once; more connections are closed at once.
const MAX_SCRAPES: usize = 16;

/// Serves `GET /metrics` (Prometheus text format, HTTP/1.1) on `listener`, until the task
/// is aborted (which ends its connections too). One request per connection, its headers
/// within 10 s, at most [`MAX_SCRAPES`] at once: an idle or slow client holds nothing.
pub async fn serve(listener: tokio::net::TcpListener) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let answer = |path: &str| {
        let Some(registry) = REGISTRY.get() else {
            return (
                StatusCode::NOT_FOUND,
                "metrics are not collected\n".to_string(),
            );
        };
        if path != "/metrics" {
            return (StatusCode::NOT_FOUND, "see /metrics\n".to_string());
        }
        let mut text = String::new();
        match prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text) {
            Ok(()) => (StatusCode::OK, text),
            Err(error) => {
                tracing::warn!(error = %error, "encoding metrics failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding failed\n".to_string(),
                )
            }
        }
    };
    let scrapes = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(error = %error, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = scrapes.clone().try_acquire_owned() else {
            tracing::debug!("too many metrics connections; closing one");
            continue;
        };
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (status, body) = answer(request.uri().path());
            let response = Response::builder()
                .status(status)
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(body)));
            async move { response }
        });
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false);
            let serving = builder.serve_connection(TokioIo::new(stream), service);
            // A client that reads its answer slowly gets 30 s in all.
            match tokio::time::timeout(Duration::from_secs(30), serving).await {
                Ok(Err(error)) => tracing::debug!(error = %error, "metrics connection ended"),
                Err(_) => tracing::debug!("metrics connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Binds `--metrics-listen`.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))
}
