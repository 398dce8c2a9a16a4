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
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::{
    codec::CompressionEncoding,
    server::NamedService,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{
        AppState, audit_log::AuditLogService, authentication_methods::AuthenticationMethodsService,
        customers::CustomersService, paging::PageTokens, users::UsersService, watch::Watchers,
    },
    auth::{ServerSecret, TokenVerifier},
    config::Settings,
    layers::Layers,
    proto::{
        FILE_DESCRIPTOR_SET, google_rpc_file_descriptor_set,
        v1::{
            audit_log_server::AuditLogServer,
            authentication_methods_server::AuthenticationMethodsServer,
            customers_server::CustomersServer, users_server::UsersServer,
        },
    },
    store,
};

/// The fully qualified names of the `mfareset.v1` services, as health reports them.
pub const SERVICE_NAMES: [&str; 4] = [
    <CustomersServer<CustomersService> as NamedService>::NAME,
    <UsersServer<UsersService> as NamedService>::NAME,
    <AuthenticationMethodsServer<AuthenticationMethodsService> as NamedService>::NAME,
    <AuditLogServer<AuditLogService> as NamedService>::NAME,
];

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    shutting_down: tokio::sync::watch::Sender<bool>,
    statements: Arc<AtomicU64>,
    settings: Settings,
    state: Arc<AppState>,
    verifier: Arc<TokenVerifier>,
    tls: Option<ServerTlsConfig>,
    metrics_listener: Option<TcpListener>,
    _gauges: crate::metrics::Gauges,
}

impl Application {
    /// Opens (and migrates) the database, loads or creates the server secret, sets up
    /// token verification, reads the TLS files and binds the listener (port 0 picks a free
    /// port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let tls = settings
            .transport
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
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
        let (shutting_down, shutdown_seen) = tokio::sync::watch::channel(false);
        let watchers = Arc::new(Watchers::new(
            db.clone(),
            settings.watch.clone(),
            &secret.derive("audit-cursor"),
            shutdown_seen,
        ));
        let state = Arc::new(AppState {
            db,
            page_tokens: PageTokens::new(&secret.derive("page-token")),
            reset_ttl: settings.reset_ttl,
            approval_ttl: settings.approval_ttl,
            watchers,
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        let streams = state.watchers.clone();
        let gauges = crate::metrics::observe(&state.db, Arc::new(move || streams.open_count()));
        Ok(Application {
            listener,
            shutting_down,
            statements,
            settings,
            state,
            verifier,
            tls,
            metrics_listener,
            _gauges: gauges,
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
        // Prometheus scrapes until the process ends (after the gRPC server has drained), so
        // the last calls' figures can still be read during shutdown.
        let metrics = self.metrics_listener.map(|listener| {
            tracing::info!(address = ?listener.local_addr().ok(), "serving metrics on /metrics");
            tokio::spawn(crate::metrics::serve(listener))
        });
        let google_rpc = google_rpc_file_descriptor_set()?;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_file_descriptor_set(google_rpc.clone())
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        // Every service: the message size limit both ways, and gzip both ways: requests
        // accepted compressed (large selections compress well; the size limit applies after
        // decompression), answers compressed for clients that accept gzip (large summaries
        // and pages of items).
        let max = self.settings.max_message_bytes;
        macro_rules! configured {
            ($server:expr) => {
                $server
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip)
            };
        }
        let state = self.state.clone();
        let customers = configured!(CustomersServer::new(CustomersService::new(state.clone())));
        let users = configured!(UsersServer::new(UsersService::new(state.clone())));
        let methods = configured!(AuthenticationMethodsServer::new(
            AuthenticationMethodsService::new(state.clone())
        ));
        let audit_log = configured!(AuditLogServer::new(AuditLogService::new(state)));

        let layers = Layers {
            verifier: self.verifier.clone(),
            db: self.state.db.clone(),
            request_timeout: self.settings.request_timeout,
            max_concurrent_requests: self.settings.max_concurrent_requests,
            rate_limit_per_minute: self.settings.rate_limit_per_minute,
            max_message_bytes: max,
        };

        let started = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let health = health.clone();
            let started = started.clone();
            let shutting_down = self.shutting_down.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: refusing new calls, finishing in-flight ones");
                set_health(&health, ServingStatus::NotServing).await;
                // Change streams end now (UNAVAILABLE, SHUTTING_DOWN): their clients
                // reconnect elsewhere with their cursors instead of holding the grace period.
                shutting_down.send_replace(true);
                started.notify_one();
            }
        };
        let grace = self.settings.shutdown_grace;
        let grace_elapsed = async move {
            started.notified().await;
            tokio::time::sleep(grace).await;
        };

        let transport = &self.settings.transport;
        tracing::info!(
            address = %self.listener.local_addr()?,
            tls = self.tls.is_some(),
            client_certificates = transport.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            "mfa-reset serving"
        );
        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).context("setting up TLS")?;
        }
        if let Some(age) = transport.max_connection_age {
            // Long-lived clients (pooled channels) reconnect now and then, and so spread over
            // the replicas a load balancer adds: a GOAWAY at the age, the calls on the
            // connection finishing there. No grace is given to tonic: with one, tonic 0.14
            // sends no GOAWAY and cuts the connection at age + grace instead.
            server = server.max_connection_age(age);
        }
        let serve = server
            .http2_keepalive_interval(transport.http2_keepalive)
            .http2_keepalive_timeout(Some(transport.http2_keepalive_timeout))
            // Deadlines are the deadline layer's (with an ErrorInfo), not tonic's timeout.
            // Header blocks far larger than the biggest token accepted (16 KiB) still reach
            // the auth layer, which refuses the token with a gRPC status: a smaller limit
            // would answer a bare HTTP 431, and h2 ends the whole connection (GOAWAY) for a
            // block well past its limit, killing the caller's other calls.
            .http2_max_header_list_size(self.settings.max_header_list_bytes)
            .layer(layers)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(customers)
            .add_service(users)
            .add_service(methods)
            .add_service(audit_log)
            .serve_with_incoming_shutdown(
                // TCP_NODELAY on every accepted connection (see `net`): tonic's own setting
                // applies only to the listener it binds itself.
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                signal,
            );
        tokio::select! {
            result = serve => result.context("serving gRPC")?,
            () = grace_elapsed => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping unfinished calls"),
        }
        purger.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
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
