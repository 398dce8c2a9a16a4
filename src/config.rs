//! Every setting of the service: its flag, its `MFA_RESET_*` environment variable and
//! its default, in one place. `main` parses the command line into [`Cli`]; tests build
//! [`Settings`] directly and start the server exactly as `main` does.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{auth::AuthSettings, telemetry::LogFormat};

/// The `mfa-reset` command line.
#[derive(Debug, Parser)]
#[command(
    name = "mfa-reset",
    version,
    about = "gRPC service for multi-tenant MFA administration"
)]
pub struct Cli {
    /// Settings every subcommand shares.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every subcommand: where the data lives, how tokens look, how to log.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory for the embedded SQLite database and the generated token secret.
    #[arg(
        long,
        env = "MFA_RESET_DATA_DIR",
        default_value = "./mfa-reset-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: a SQLite
    /// file `mfa-reset.db` in the data directory, created on first start.
    #[arg(long, env = "MFA_RESET_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// File holding the server secret (HS256 tokens, page-token encryption); created with
    /// mode 0600 when missing. Replicas behind one load balancer must share it.
    /// Default: `secret.key` in the data directory.
    #[arg(long, env = "MFA_RESET_SECRET_FILE", global = true)]
    pub secret_file: Option<PathBuf>,
    /// Expected (and, for `token`, minted) JWT issuer (`iss`).
    #[arg(
        long,
        env = "MFA_RESET_JWT_ISSUER",
        default_value = "mfa-reset",
        global = true
    )]
    pub jwt_issuer: String,
    /// Expected (and, for `token`, minted) JWT audience (`aud`).
    #[arg(
        long,
        env = "MFA_RESET_JWT_AUDIENCE",
        default_value = "mfa-reset",
        global = true
    )]
    pub jwt_audience: String,
    /// Log format.
    #[arg(
        long,
        env = "MFA_RESET_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set. Default: `info` for
    /// `serve`, `warn` for the one-shot subcommands (which print only their answer).
    #[arg(long, env = "MFA_RESET_LOG", global = true)]
    pub log: Option<String>,
    /// How the one-shot subcommands print their answer: `text` for people, `json` (one
    /// object, or an array for `roles`) for scripts.
    #[arg(
        long,
        env = "MFA_RESET_OUTPUT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub output: Output,
}

/// How a one-shot subcommand prints its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Words and tables.
    Text,
    /// JSON.
    Json,
}

impl CommonArgs {
    /// The database URL in effect: the flag, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("mfa-reset.db").display()),
        }
    }

    /// The server secret file in effect.
    pub fn secret_file(&self) -> PathBuf {
        self.secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the gRPC server (migrates the database first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Mint a development token (HS256, signed with the local server secret).
    Token(TokenArgs),
    /// Give a principal a role in one customer, or in every customer (`*`).
    Grant(RoleArgs),
    /// Take a role away from a principal.
    Revoke(RoleArgs),
    /// List role assignments.
    Roles(RolesArgs),
    /// Delete stored MFA resets (summaries and their items) that can no longer change:
    /// confirmed, cancelled, rejected or expired, and older than the retention period.
    PurgeResets(PurgeArgs),
    /// Delete audit events older than the retention period, except those of MFA resets still
    /// awaiting approval. A change-stream cursor older than what was deleted is then refused
    /// (CURSOR_EXPIRED).
    PurgeAudit(PurgeAuditArgs),
    /// Ask a running server whether it is SERVING (gRPC health): exits 0 if so, 1 if not or
    /// unreachable. For container health checks, without extra tools.
    Health(HealthArgs),
}

/// Flags of `health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server's address (`HOST:PORT`).
    #[arg(long, env = "MFA_RESET_HEALTH_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// The service to ask about (`mfareset.v1.Users`, ...); empty: the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
    /// Speak TLS, trusting this PEM CA certificate for the server's.
    #[arg(long, env = "MFA_RESET_HEALTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host of `--addr`; a
    /// container's health check on 127.0.0.1 names the certificate's DNS name here).
    #[arg(long, env = "MFA_RESET_HEALTH_TLS_SERVER_NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Client certificate (PEM) for a server that requires one, with `--tls-client-key`.
    #[arg(long, env = "MFA_RESET_HEALTH_TLS_CLIENT_CERT", requires_all = ["tls_ca", "tls_client_key"])]
    pub tls_client_cert: Option<PathBuf>,
    /// Private key of `--tls-client-cert`.
    #[arg(
        long,
        env = "MFA_RESET_HEALTH_TLS_CLIENT_KEY",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

/// Flags of `purge-audit`.
#[derive(Debug, Clone, Args)]
pub struct PurgeAuditArgs {
    /// Keep events that happened within this many days.
    #[arg(long, default_value_t = 400)]
    pub older_than_days: u32,
}

/// Flags of `purge-resets`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Keep resets made within this many days.
    #[arg(long, default_value_t = 90)]
    pub older_than_days: u32,
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MFA_RESET_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Seed demo customers, users and roles (idempotent) and print tokens for `demo-admin`
    /// and `demo-approver`.
    #[arg(long, env = "MFA_RESET_DEMO")]
    pub demo: bool,
    /// PEM public key (RSA, EC P-256 or Ed25519) to verify tokens with; repeatable.
    /// Setting any key (or a JWKS file) turns HS256 off.
    #[arg(
        long = "jwt-public-key",
        env = "MFA_RESET_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<PathBuf>,
    /// JWKS file whose keys verify tokens, selected by `kid`. Turns HS256 off.
    #[arg(long, env = "MFA_RESET_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    #[arg(long, env = "MFA_RESET_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// OTLP/gRPC endpoint to export traces and metrics to (e.g. `http://127.0.0.1:4317`);
    /// else the standard `OTEL_EXPORTER_OTLP_ENDPOINT`; off when neither is set.
    #[arg(long, env = "MFA_RESET_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Address to serve Prometheus metrics on (`GET /metrics`, plain HTTP), e.g.
    /// `0.0.0.0:9464`; off when unset.
    #[arg(long, env = "MFA_RESET_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Deadline of one call, in seconds, unless the client's `grpc-timeout` is shorter.
    #[arg(
        long,
        env = "MFA_RESET_REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub request_timeout_secs: u64,
    /// Calls served at once across all connections; more wait for a slot.
    #[arg(
        long,
        env = "MFA_RESET_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_concurrent_requests: usize,
    /// Calls one principal may make per minute on this replica (bursts up to that many);
    /// more are RESOURCE_EXHAUSTED with RetryInfo. 0 turns limiting off.
    #[arg(long, env = "MFA_RESET_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// Largest request or response message, in bytes.
    #[arg(long, env = "MFA_RESET_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest HTTP/2 header block a call may send (its metadata, the bearer token included),
    /// in bytes. Up to this size an oversized token is refused with a gRPC status (tokens over
    /// 16 KiB are TOKEN_TOO_LARGE); past it HTTP/2 refuses the stream itself, and a block far
    /// past it may make the HTTP/2 library end the whole connection.
    #[arg(long, env = "MFA_RESET_MAX_HEADER_LIST_BYTES", default_value_t = 512 * 1024)]
    pub max_header_list_bytes: u32,
    /// On SIGINT/SIGTERM, how long in-flight calls may take to finish, in seconds.
    #[arg(long, env = "MFA_RESET_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// How long a summarized MFA reset can be confirmed, in seconds.
    #[arg(long, env = "MFA_RESET_RESET_TTL_SECS", default_value_t = 15 * 60)]
    pub reset_ttl_secs: u64,
    /// How long a reset that needs four-eyes approval waits for it once its requester has
    /// confirmed it, in seconds (at most 30 days); then it expires.
    #[arg(
        long,
        env = "MFA_RESET_APPROVAL_TTL_SECS",
        default_value_t = 24 * 3600,
        value_parser = clap::value_parser!(u64).range(1..=30 * 24 * 3600)
    )]
    pub approval_ttl_secs: u64,
    /// How often this replica deletes request ids (AIP-155) older than 24 hours, in seconds.
    #[arg(long, env = "MFA_RESET_REQUEST_ID_PURGE_SECS", default_value_t = 3600)]
    pub request_id_purge_secs: u64,
    /// Largest PostgreSQL connection pool per replica (SQLite uses a small fixed pool).
    #[arg(long, env = "MFA_RESET_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// Change streams (`WatchAuditEvents`): heartbeat interval when the request sets none, in
    /// seconds (a request may ask for 1 to 600).
    #[arg(long, env = "MFA_RESET_WATCH_HEARTBEAT_SECS", default_value_t = 15)]
    pub watch_heartbeat_secs: u64,
    /// Change streams: how often this replica reads the audit clock while streams are open, in
    /// milliseconds (PostgreSQL also wakes them at once with LISTEN/NOTIFY; this is the
    /// fallback, and SQLite's way).
    #[arg(long, env = "MFA_RESET_WATCH_POLL_MS", default_value_t = 250)]
    pub watch_poll_ms: u64,
    /// Change streams: messages buffered per stream for a consumer that reads slower than
    /// events arrive.
    #[arg(long, env = "MFA_RESET_WATCH_BUFFER", default_value_t = 256)]
    pub watch_buffer: usize,
    /// Change streams: how long a full buffer may wait for its consumer before the stream is
    /// ended with RESOURCE_EXHAUSTED (CONSUMER_TOO_SLOW), in seconds.
    #[arg(long, env = "MFA_RESET_WATCH_STALL_SECS", default_value_t = 30)]
    pub watch_stall_secs: u64,
    /// Change streams open at once per principal on this replica.
    #[arg(
        long,
        env = "MFA_RESET_WATCH_MAX_STREAMS_PER_PRINCIPAL",
        default_value_t = 16
    )]
    pub watch_max_streams_per_principal: usize,
    /// Change streams open at once on this replica.
    #[arg(long, env = "MFA_RESET_WATCH_MAX_STREAMS", default_value_t = 1024)]
    pub watch_max_streams: usize,
    /// PEM certificate chain to serve TLS with (with `--tls-key`). Without it the server
    /// speaks plaintext HTTP/2 (behind a TLS-terminating proxy, or for development).
    #[arg(long, env = "MFA_RESET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "MFA_RESET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS
    /// for internal services). The bearer token still names the principal and stays
    /// required. Needs `--tls-cert`.
    #[arg(long, env = "MFA_RESET_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Interval of HTTP/2 keepalive pings on idle connections, in seconds (0: off); a
    /// client that does not answer within `--http2-keepalive-timeout-secs` is dropped.
    #[arg(long, env = "MFA_RESET_HTTP2_KEEPALIVE_SECS", default_value_t = 60)]
    pub http2_keepalive_secs: u64,
    /// How long a keepalive ping waits for its answer, in seconds.
    #[arg(
        long,
        env = "MFA_RESET_HTTP2_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub http2_keepalive_timeout_secs: u64,
    /// After this many seconds a connection is asked to close (HTTP/2 GOAWAY), so that
    /// long-lived clients reconnect and spread over replicas as they scale (0: never). Calls
    /// already on it finish there; new ones go over a new connection.
    #[arg(
        long,
        env = "MFA_RESET_MAX_CONNECTION_AGE_SECS",
        default_value_t = 1800
    )]
    pub max_connection_age_secs: u64,
}

/// Flags of `token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The principal (`sub`) the token speaks for.
    #[arg(long)]
    pub subject: String,
    /// Lifetime in seconds.
    #[arg(long = "ttl-secs", alias = "ttl", default_value_t = 8 * 3600)]
    pub ttl_secs: u64,
}

/// Flags of `grant` and `revoke`.
#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// The principal (`sub`).
    #[arg(long)]
    pub subject: String,
    /// A customer id, or `*` for every customer, present and future.
    #[arg(long)]
    pub customer: String,
    /// READER, AUTHENTICATION_ADMIN, PRIVILEGED_AUTHENTICATION_ADMIN or PROVISIONER.
    #[arg(long)]
    pub role: String,
    /// Who makes the change, as the audit log records it. Default: the OS user.
    #[arg(long, env = "MFA_RESET_ACTOR")]
    pub actor: Option<String>,
}

impl RoleArgs {
    /// The operator the audit log names: `--actor`, else the OS user (`$USER`, `$LOGNAME`),
    /// else `operator`.
    pub fn actor(&self) -> String {
        let os_user = || {
            ["USER", "LOGNAME", "USERNAME"]
                .iter()
                .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        };
        self.actor
            .clone()
            .filter(|a| !a.trim().is_empty())
            .or_else(os_user)
            .unwrap_or_else(|| "operator".to_string())
    }
}

/// Flags of `roles`.
#[derive(Debug, Clone, Args)]
pub struct RolesArgs {
    /// Only this principal's assignments.
    #[arg(long)]
    pub subject: Option<String>,
}

/// Everything the server needs, resolved from the command line (or built by tests).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Largest database connection pool.
    pub db_max_connections: u32,
    /// Server secret file.
    pub secret_file: PathBuf,
    /// Token verification.
    pub auth: AuthSettings,
    /// Deadline of one call.
    pub request_timeout: Duration,
    /// Calls served at once.
    pub max_concurrent_requests: usize,
    /// Largest message, in bytes.
    pub max_message_bytes: usize,
    /// Largest header block, in bytes.
    pub max_header_list_bytes: u32,
    /// Calls per principal and minute (0: unlimited).
    pub rate_limit_per_minute: u32,
    /// Grace period for in-flight calls at shutdown.
    pub shutdown_grace: Duration,
    /// How long a summarized reset can be confirmed.
    pub reset_ttl: Duration,
    /// How long a confirmed reset awaits approval.
    pub approval_ttl: Duration,
    /// How often expired request ids are purged.
    pub request_id_purge_interval: Duration,
    /// Change streams.
    pub watch: WatchSettings,
    /// TLS, keepalive and connection age.
    pub transport: TransportSettings,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// The server's certificate, key and (for mutual TLS) client CA, as PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to, if any.
    pub client_ca: Option<PathBuf>,
}

/// How connections are served.
#[derive(Clone, Debug)]
pub struct TransportSettings {
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// HTTP/2 keepalive ping interval (`None`: off).
    pub http2_keepalive: Option<Duration>,
    /// How long a ping waits for its answer.
    pub http2_keepalive_timeout: Duration,
    /// When a connection is asked to close (`None`: never). Its calls finish there.
    pub max_connection_age: Option<Duration>,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            tls: None,
            http2_keepalive: Some(Duration::from_secs(60)),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Some(Duration::from_secs(1800)),
        }
    }
}

/// How change streams (`WatchAuditEvents`) run.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// Heartbeat interval when the request asks for none.
    pub heartbeat: Duration,
    /// How often the audit clock is read while streams are open.
    pub poll: Duration,
    /// Messages buffered per stream.
    pub buffer: usize,
    /// How long a full buffer waits for its consumer.
    pub stall: Duration,
    /// Streams per principal.
    pub max_streams_per_principal: usize,
    /// Streams per replica.
    pub max_streams: usize,
}

impl WatchSettings {
    /// The shortest heartbeat interval a request may ask for.
    pub const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
    /// The longest.
    pub const MAX_HEARTBEAT: Duration = Duration::from_secs(600);
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            heartbeat: Duration::from_secs(15),
            poll: Duration::from_millis(250),
            buffer: 256,
            stall: Duration::from_secs(30),
            max_streams_per_principal: 16,
            max_streams: 1024,
        }
    }
}

impl Settings {
    /// Resolves the server settings from the command line.
    pub fn from_args(common: &CommonArgs, serve: &ServeArgs) -> Self {
        Settings {
            listen: serve.listen,
            database_url: common.database_url(),
            db_max_connections: serve.db_max_connections,
            secret_file: common.secret_file(),
            auth: AuthSettings {
                issuer: common.jwt_issuer.clone(),
                audience: common.jwt_audience.clone(),
                public_key_files: serve.jwt_public_keys.clone(),
                jwks_file: serve.jwks_file.clone(),
                leeway_seconds: serve.jwt_leeway_secs,
            },
            request_timeout: Duration::from_secs(serve.request_timeout_secs),
            max_concurrent_requests: serve.max_concurrent_requests,
            max_message_bytes: serve.max_message_bytes,
            max_header_list_bytes: serve.max_header_list_bytes,
            rate_limit_per_minute: serve.rate_limit_per_minute,
            shutdown_grace: Duration::from_secs(serve.shutdown_grace_secs),
            reset_ttl: Duration::from_secs(serve.reset_ttl_secs),
            approval_ttl: Duration::from_secs(serve.approval_ttl_secs),
            request_id_purge_interval: Duration::from_secs(serve.request_id_purge_secs.max(1)),
            watch: WatchSettings {
                heartbeat: Duration::from_secs(serve.watch_heartbeat_secs)
                    .clamp(WatchSettings::MIN_HEARTBEAT, WatchSettings::MAX_HEARTBEAT),
                poll: Duration::from_millis(serve.watch_poll_ms.max(10)),
                buffer: serve.watch_buffer.max(1),
                stall: Duration::from_secs(serve.watch_stall_secs.max(1)),
                max_streams_per_principal: serve.watch_max_streams_per_principal,
                max_streams: serve.watch_max_streams,
            },
            metrics_listen: serve.metrics_listen,
            transport: TransportSettings {
                tls: serve
                    .tls_cert
                    .clone()
                    .zip(serve.tls_key.clone())
                    .map(|(cert, key)| TlsFiles {
                        cert,
                        key,
                        client_ca: serve.tls_client_ca.clone(),
                    }),
                http2_keepalive: seconds_or_off(serve.http2_keepalive_secs),
                http2_keepalive_timeout: Duration::from_secs(
                    serve.http2_keepalive_timeout_secs.max(1),
                ),
                max_connection_age: seconds_or_off(serve.max_connection_age_secs),
            },
        }
    }
}

/// `secs` seconds, or `None` for 0.
fn seconds_or_off(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_put_sqlite_and_secret_in_the_data_dir() {
        let cli = Cli::parse_from(["mfa-reset", "--data-dir", "/tmp/x", "serve"]);
        assert_eq!(cli.common.database_url(), "sqlite:///tmp/x/mfa-reset.db");
        assert_eq!(cli.common.secret_file(), PathBuf::from("/tmp/x/secret.key"));
        let Command::Serve(serve) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(serve.listen.to_string(), "127.0.0.1:50051");
    }
}
