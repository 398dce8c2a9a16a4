//! Builds the application: database, secret, token verifier, the four `mfareset.v1`
//! services, health, reflection (v1 and v1alpha), and the tower layers that every call
//! passes through, composed here and nowhere else. `main` and the tests start it the same
//! way: [`Application::build`], then [`Application::run_until_stopped`].

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use http::Request;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{server::NamedService, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    api::{
        AppState, REQUEST_ID_HEADER, audit_log::AuditLogService,
        authentication_methods::AuthenticationMethodsService, customers::CustomersService,
        paging::PageTokens, users::UsersService,
    },
    auth::{AuthLayer, ServerSecret, TokenVerifier},
    config::Settings,
    proto::{
        FILE_DESCRIPTOR_SET, google_rpc_file_descriptor_set,
        v1::{
            audit_log_server::AuditLogServer,
            authentication_methods_server::AuthenticationMethodsServer,
            customers_server::CustomersServer, users_server::UsersServer,
        },
    },
    rate_limit::RateLimitLayer,
    store,
};

/// The fully qualified names of the `mfareset.v1` services, as health reports them.
pub const SERVICE_NAMES: [&str; 4] = [
    <CustomersServer<CustomersService> as NamedService>::NAME,
    <UsersServer<UsersService> as NamedService>::NAME,
    <AuthenticationMethodsServer<AuthenticationMethodsService> as NamedService>::NAME,
    <AuditLogServer<AuditLogService> as NamedService>::NAME,
];

/// The largest header block a call may send.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    statements: Arc<AtomicU64>,
    settings: Settings,
    state: Arc<AppState>,
    verifier: Arc<TokenVerifier>,
}

impl Application {
    /// Opens (and migrates) the database, loads or creates the server secret, sets up
    /// token verification and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let mut db =
            store::connect_with_pool(&settings.database_url, Some(settings.db_max_connections))
                .await
                .context("connecting to the database")?;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        store::migrate(&db)
            .await
            .context("migrating the database")?;
        let secret = ServerSecret::load_or_create(&settings.secret_file).with_context(|| {
            format!(
                "loading the server secret {}",
                settings.secret_file.display()
            )
        })?;
        let verifier = Arc::new(
            TokenVerifier::new(&settings.auth, Some(&secret))
                .context("setting up token verification")?,
        );
        let state = Arc::new(AppState {
            db,
            page_tokens: PageTokens::new(&secret.derive("page-token")),
            reset_ttl: settings.reset_ttl,
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Ok(Application {
            listener,
            statements,
            settings,
            state,
            verifier,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How many SQL statements the server has run so far: what the scale tests and
    /// benchmarks measure (statements must not grow with the users in a reset).
    pub fn statement_counter(&self) -> Arc<AtomicU64> {
        self.statements.clone()
    }

    /// The database pool (for seeding demo data).
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// Serves until `shutdown` completes. Then health turns NOT_SERVING, no new calls are
    /// accepted, and in-flight calls get up to the configured grace period to finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let purger = tokio::spawn(purge_request_ids(
            self.state.db.clone(),
            self.settings.request_id_purge_interval,
        ));
        let google_rpc = google_rpc_file_descriptor_set()?;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_file_descriptor_set(google_rpc.clone())
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let max = self.settings.max_message_bytes;
        let state = self.state.clone();
        let customers = CustomersServer::new(CustomersService::new(state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let users = UsersServer::new(UsersService::new(state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let methods =
            AuthenticationMethodsServer::new(AuthenticationMethodsService::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
        let audit_log = AuditLogServer::new(AuditLogService::new(state))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);

        // Outermost first: every call gets a request id (the client's or a new one, echoed
        // back), then a span carrying it, then waits for one of the global slots, then is
        // authenticated, then counted against its principal's rate limit. Handlers never
        // see a call that skipped any of these.
        let layers = ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(
                http::HeaderName::from_static(REQUEST_ID_HEADER),
                MakeRequestUuid,
            ))
            .layer(PropagateRequestIdLayer::new(http::HeaderName::from_static(
                REQUEST_ID_HEADER,
            )))
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(rpc_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    .on_failure(DefaultOnFailure::new().level(Level::INFO)),
            )
            .layer(GlobalConcurrencyLimitLayer::new(
                self.settings.max_concurrent_requests,
            ))
            .layer(AuthLayer::new(self.verifier.clone()))
            .layer(RateLimitLayer::per_minute(
                self.settings.rate_limit_per_minute,
            ))
            .into_inner();

        let started = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let health = health.clone();
            let started = started.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: refusing new calls, finishing in-flight ones");
                set_health(&health, ServingStatus::NotServing).await;
                started.notify_one();
            }
        };
        let grace = self.settings.shutdown_grace;
        let grace_elapsed = async move {
            started.notified().await;
            tokio::time::sleep(grace).await;
        };

        tracing::info!(address = %self.listener.local_addr()?, "mfa-reset serving");
        let serve = Server::builder()
            .timeout(self.settings.request_timeout)
            // Room for the largest bearer token the verifier accepts (16 KiB) plus the
            // other headers, so an oversized token is refused by the auth layer with a
            // gRPC status rather than by HTTP/2 with a bare 431.
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .layer(layers)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(customers)
            .add_service(users)
            .add_service(methods)
            .add_service(audit_log)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), signal);
        tokio::select! {
            result = serve => result.context("serving gRPC")?,
            () = grace_elapsed => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping unfinished calls"),
        }
        purger.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Deletes request ids (AIP-155) older than their lifetime, every `interval` (first after one
/// interval, so that start-up does no work for it). Every replica runs it; a key's lifetime is
/// also checked when it is read, so a late purge changes no answer.
async fn purge_request_ids(db: DatabaseConnection, interval: std::time::Duration) {
    let first = tokio::time::Instant::now() + interval;
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match crate::domain::idempotency::purge_expired(&db).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired request ids"),
            Err(err) => tracing::warn!(error = %err, "purging expired request ids failed"),
        }
    }
}

/// Sets the overall status (`""`) and that of every `mfareset.v1` service.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// The span of one call: the RPC, the request id, and fields that later layers and
/// handlers fill in (principal, customer ids). Never contact data.
fn rpc_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "rpc",
        rpc = %request.uri().path(),
        request_id = %request_id,
        principal = tracing::field::Empty,
        customer_ids = tracing::field::Empty,
    )
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
