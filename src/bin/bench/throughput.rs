//! Part (b): GetUser, ListUsers (50) and the health check through the real server's layers
//! at 1 / 16 / 64 calls in flight, beside two bare tonic 0.14 servers in the same process,
//! each on its own port: (i) tonic-health answering Check with no work; (ii) a `Health` whose
//! Check does one pooled primary-key lookup of a user (the id is the request's `service`,
//! a random seeded user per call) on a pool of the service's size.
//!
//! Each cell runs `in_flight` workers, each calling in a loop for a warm-up and then
//! `duration`; a call counts when it ends within the measured window and its status is OK
//! (calls/s = those calls / the window). A worker none of whose calls ended in the window
//! (calls slower than the window: only in tiny debug runs) finishes one more, and the window
//! is stretched to its end. Workers share
//! `min(in_flight, 4)` HTTP/2 channels (worker `i` uses channel `i % 4`), one set of
//! channels per server.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use mfa_reset::proto::v1::{self as pb, users_client::UsersClient};
use rand::Rng;
use sea_orm::sqlx;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};
use uuid::Uuid;

use crate::db::Pool;

/// The in-flight levels of every target.
pub const IN_FLIGHT: [usize; 3] = [1, 16, 64];
/// Channels a target's workers share, at most.
pub const CHANNELS: usize = 4;
/// How long past its end a cell waits for a worker that has not finished a call in it.
const LONGEST: Duration = Duration::from_secs(60);

/// One target at one level.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub target: &'static str,
    pub in_flight: usize,
    pub channels: usize,
    pub ok_calls: u64,
    pub failed_calls: u64,
    pub seconds: f64,
    pub calls_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

type CallFuture = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;
type Call = Arc<dyn Fn(Channel) -> CallFuture + Send + Sync>;

/// What part (b) needs.
pub struct Setup {
    /// `http://127.0.0.1:PORT` of the real server.
    pub endpoint: String,
    pub token: MetadataValue<Ascii>,
    /// Random seeded users: `(customer id, user id)` in text form.
    pub sample: Arc<Vec<(String, String)>>,
    /// The customer ListUsers lists (a few hundred users or more).
    pub list_customer: String,
    /// A pool of the service's size on the same database, for the PK-lookup baseline.
    pub baseline_pool: Pool,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Every target at every level: the service's three, then the two baselines.
pub async fn run(setup: &Setup) -> anyhow::Result<Vec<Cell>> {
    let (bare_health, stop_bare) = serve_bare_health().await?;
    let (pk_lookup, stop_pk) = serve_pk_lookup(setup.baseline_pool.clone()).await?;
    let targets: Vec<(&'static str, String, Call)> = vec![
        ("GetUser", setup.endpoint.clone(), get_user(setup)),
        ("ListUsers(50)", setup.endpoint.clone(), list_users(setup)),
        ("health", setup.endpoint.clone(), health("".into())),
        ("bare health", bare_health, health("".into())),
        ("PK lookup", pk_lookup, pk(setup)),
    ];
    let mut cells = Vec::new();
    for (name, endpoint, call) in targets {
        let channels = connect(&endpoint, CHANNELS).await?;
        for in_flight in IN_FLIGHT {
            let cell = run_cell(name, &channels, in_flight, setup, call.clone()).await;
            eprintln!(
                "  {name} @{in_flight}: {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms{}",
                cell.calls_per_sec,
                cell.p50_ms,
                cell.p99_ms,
                if cell.failed_calls > 0 {
                    format!(
                        ", {} failed: {}",
                        cell.failed_calls,
                        cell.first_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
            cells.push(cell);
        }
    }
    let _ = stop_bare.send(());
    let _ = stop_pk.send(());
    Ok(cells)
}

async fn connect(endpoint: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            Channel::from_shared(endpoint.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {endpoint}"))?,
        );
    }
    Ok(channels)
}

async fn run_cell(
    target: &'static str,
    channels: &[Channel],
    in_flight: usize,
    setup: &Setup,
    call: Call,
) -> Cell {
    let used = channels.len().min(in_flight).max(1);
    let start = Instant::now();
    let measure_from = start + setup.warmup;
    let end = measure_from + setup.duration;
    // A worker whose calls are slower than the cell goes on until one of them has ended in
    // it (at most `LONGEST` more), so that every cell has figures.
    let hard_end = end + LONGEST;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..in_flight {
        let Some(channel) = channels.get(worker % used).cloned() else {
            continue;
        };
        let call = call.clone();
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut failed = 0u64;
            let mut first_error = None;
            let mut last_end = end;
            loop {
                let started = Instant::now();
                let measured = latencies.len() as u64 + failed;
                if started >= hard_end || (started >= end && measured > 0) {
                    break;
                }
                let result = call(channel.clone()).await;
                let ended = Instant::now();
                if ended < measure_from || (ended > end && measured > 0) {
                    continue;
                }
                last_end = last_end.max(ended);
                match result {
                    Ok(()) => latencies
                        .push(u32::try_from((ended - started).as_micros()).unwrap_or(u32::MAX)),
                    Err(status) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
            }
            (latencies, failed, first_error, last_end)
        });
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    let mut window_end = end;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((l, f, e, last)) => {
                latencies.extend(l);
                failed += f;
                window_end = window_end.max(last);
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(err) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("worker failed: {err}"));
            }
        }
    }
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let n = latencies.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        latencies.get(i).map_or(0.0, |us| f64::from(*us) / 1e3)
    };
    let seconds = (window_end - measure_from).as_secs_f64();
    Cell {
        target,
        in_flight,
        channels: used,
        ok_calls: latencies.len() as u64,
        failed_calls: failed,
        seconds,
        calls_per_sec: latencies.len() as f64 / seconds,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        first_error,
    }
}

fn authed<T>(message: T, token: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", token.clone());
    request
}

fn random_user(sample: &[(String, String)]) -> Option<&(String, String)> {
    sample.get(rand::rng().random_range(0..sample.len().max(1)))
}

fn get_user(setup: &Setup) -> Call {
    let (token, sample) = (setup.token.clone(), setup.sample.clone());
    Arc::new(move |channel| {
        let request = random_user(&sample).map(|(customer, user)| pb::GetUserRequest {
            customer_ids: vec![customer.clone()],
            user: Some(pb::get_user_request::User::UserId(user.clone())),
        });
        let token = token.clone();
        Box::pin(async move {
            let request = request.ok_or_else(|| Status::internal("no sample users"))?;
            UsersClient::new(channel)
                .get_user(authed(request, &token))
                .await?;
            Ok(())
        })
    })
}

fn list_users(setup: &Setup) -> Call {
    let (token, customer) = (setup.token.clone(), setup.list_customer.clone());
    Arc::new(move |channel| {
        let request = pb::ListUsersRequest {
            customer_ids: vec![customer.clone()],
            page_size: 50,
            ..Default::default()
        };
        let token = token.clone();
        Box::pin(async move {
            let page = UsersClient::new(channel)
                .list_users(authed(request, &token))
                .await?
                .into_inner();
            if page.users.len() != 50 {
                return Err(Status::internal(format!(
                    "a page of {} users, not 50",
                    page.users.len()
                )));
            }
            Ok(())
        })
    })
}

fn health(service: String) -> Call {
    Arc::new(move |channel| {
        let request = HealthCheckRequest {
            service: service.clone(),
        };
        Box::pin(async move {
            let answer = HealthClient::new(channel)
                .check(request)
                .await?
                .into_inner();
            if answer.status != ServingStatus::Serving as i32 {
                return Err(Status::internal(format!("status {}", answer.status)));
            }
            Ok(())
        })
    })
}

/// The PK baseline's call: Check with a random seeded user's id as `service`.
fn pk(setup: &Setup) -> Call {
    let sample = setup.sample.clone();
    Arc::new(move |channel| {
        let service = random_user(&sample).map(|(_, user)| user.clone());
        Box::pin(async move {
            let service = service.ok_or_else(|| Status::internal("no sample users"))?;
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest { service })
                .await?
                .into_inner();
            if answer.status != ServingStatus::Serving as i32 {
                return Err(Status::internal(format!("status {}", answer.status)));
            }
            Ok(())
        })
    })
}

async fn listen() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    Ok((listener, endpoint))
}

/// Baseline (i): tonic-health, nothing else.
async fn serve_bare_health() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (listener, endpoint) = listen().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _reporter = reporter;
        let served = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
        if let Err(err) = served {
            eprintln!("bare health server: {err}");
        }
    });
    Ok((endpoint, stop))
}

/// Baseline (ii): one pooled primary-key lookup per Check.
async fn serve_pk_lookup(pool: Pool) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let (listener, endpoint) = listen().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = Server::builder()
            .add_service(HealthServer::new(PkLookup { pool }))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
        if let Err(err) = served {
            eprintln!("PK lookup server: {err}");
        }
    });
    Ok((endpoint, stop))
}

/// Every column of the user, decoded, as GetUser reads it.
pub const PK_LOOKUP_PG: &str = "\
SELECT id, customer_id, external_subject, display_name, email, is_admin, \
mfa_registration_required, mfa_reset_at, created_at, updated_at FROM users WHERE id = $1";
pub const PK_LOOKUP_SQLITE: &str = "\
SELECT id, customer_id, external_subject, display_name, email, is_admin, \
mfa_registration_required, mfa_reset_at, created_at, updated_at FROM users WHERE id = ?1";

type UserRow = (
    Uuid,
    Uuid,
    Option<String>,
    String,
    String,
    bool,
    bool,
    Option<chrono::DateTime<chrono::Utc>>,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

struct PkLookup {
    pool: Pool,
}

#[tonic::async_trait]
impl Health for PkLookup {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let id = Uuid::try_parse(&request.get_ref().service)
            .map_err(|_| Status::invalid_argument("service is not a user id"))?;
        let found: Result<Option<UserRow>, sqlx::Error> = match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query_as(PK_LOOKUP_PG)
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
            Pool::Sqlite(pool) => {
                sqlx::query_as(PK_LOOKUP_SQLITE)
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
        };
        match found {
            Ok(Some(_user)) => Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            })),
            Ok(None) => Err(Status::not_found("no such user")),
            Err(err) => Err(Status::internal(err.to_string())),
        }
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}
