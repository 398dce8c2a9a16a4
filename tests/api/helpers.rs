//! The test harness: [`TestApp`] spawns the server like `main` does, on a fresh database,
//! and offers gRPC clients, tokens and a few fixtures built through the RPCs themselves.

use std::{future::Future, panic::AssertUnwindSafe, path::PathBuf, time::Duration};

use futures::FutureExt;
use mfa_reset::{
    auth::{AuthSettings, ServerSecret, mint_dev_token},
    config::{Settings, TransportSettings, WatchSettings},
    domain::{ids::CustomerId, model::Role},
    proto::v1::{
        self as pb, audit_log_client::AuditLogClient,
        authentication_methods_client::AuthenticationMethodsClient,
        customers_client::CustomersClient, users_client::UsersClient,
    },
    server::Application,
    store,
};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server for the second backend.
pub const POSTGRES_URL_VAR: &str = "MFA_RESET_TEST_POSTGRES_URL";

/// Issuer and audience of test tokens (the server's defaults).
pub const ISSUER: &str = "mfa-reset";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "mfa-reset";

/// The principal that provisions fixtures: PROVISIONER on `*`.
pub const PROVISIONER: &str = "test-provisioner";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a fresh temp directory.
    Sqlite,
    /// A fresh database on the server named by [`POSTGRES_URL_VAR`].
    Postgres,
}

/// Defines a test that runs once per backend: `backend_test!(name)` runs
/// `async fn name(app: &TestApp)` as `name::sqlite` and `name::postgres`.
macro_rules! backend_test {
    ($name:ident) => {
        backend_test!($name, $name);
    };
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::helpers::run(crate::helpers::Backend::Sqlite, |app| {
                    Box::pin(super::$body(app))
                })
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::helpers::run(crate::helpers::Backend::Postgres, |app| {
                    Box::pin(super::$body(app))
                })
                .await
            }
        }
    };
}

/// Runs `test` against a fresh app on `backend`, then stops the app and drops its
/// database, whether the test passed or not.
pub async fn run<F>(backend: Backend, test: F)
where
    F: for<'a> FnOnce(&'a TestApp) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
{
    run_with(backend, Settings::default_for_tests, test).await
}

/// [`run`] with settings of the test's choosing.
pub async fn run_with<F>(backend: Backend, settings: fn(String) -> Settings, test: F)
where
    F: for<'a> FnOnce(&'a TestApp) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
{
    init_logs();
    let Some(database) = TestDatabase::create(backend).await else {
        eprintln!("{POSTGRES_URL_VAR} is not set: skipping the PostgreSQL run of this test");
        return;
    };
    let app = TestApp::spawn_on(database.url.clone(), settings).await;
    let outcome = AssertUnwindSafe(test(&app)).catch_unwind().await;
    app.stop().await;
    database.drop_now().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Logs go to the test output only when `TEST_LOG` is set, so a failing test can be read.
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,mfa_reset=debug")
                .with_test_writer()
                .try_init();
        }
    });
}

/// A database created for one test.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    postgres: Option<(String, String)>,
    dir: PathBuf,
}

impl TestDatabase {
    /// A fresh database, or `None` for PostgreSQL when no server is configured.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        let dir = std::env::temp_dir().join(format!("mfa-reset-test-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        match backend {
            Backend::Sqlite => Some(TestDatabase {
                url: format!("sqlite://{}", dir.join("test.db").display()),
                postgres: None,
                dir,
            }),
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR)
                    .ok()
                    .filter(|u| !u.is_empty())?;
                let name = format!("mfa_reset_test_{}", Uuid::now_v7().simple());
                let admin = store::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                Some(TestDatabase {
                    url: store::with_database(&admin_url, &name),
                    postgres: Some((admin_url, name)),
                    dir,
                })
            }
        }
    }

    /// Drops the database (PostgreSQL) and the temp directory.
    pub async fn drop_now(self) {
        if let Some((admin_url, name)) = &self.postgres {
            if let Ok(admin) = store::connect(admin_url).await {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                admin.close().await.ok();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds test settings around a database URL.
pub trait TestSettings {
    /// Port 0, a secret in a fresh temp dir, short timeouts.
    fn default_for_tests(database_url: String) -> Settings;
}

impl TestSettings for Settings {
    fn default_for_tests(database_url: String) -> Settings {
        let dir =
            std::env::temp_dir().join(format!("mfa-reset-secret-{}", Uuid::now_v7().simple()));
        Settings {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url,
            db_max_connections: 10,
            secret_file: dir.join("secret.key"),
            auth: AuthSettings {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                public_key_files: vec![],
                jwks_file: None,
                leeway_seconds: 0,
            },
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 64,
            max_message_bytes: 4 * 1024 * 1024,
            max_header_list_bytes: 512 * 1024,
            rate_limit_per_minute: 0,
            shutdown_grace: Duration::from_secs(10),
            reset_ttl: Duration::from_secs(900),
            approval_ttl: Duration::from_secs(24 * 3600),
            request_id_purge_interval: Duration::from_secs(3600),
            watch: WatchSettings::default(),
            transport: TransportSettings::default(),
            metrics_listen: None,
        }
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// A channel to the server.
    pub channel: Channel,
    /// The server's secret (mints tokens it accepts).
    pub secret: ServerSecret,
    /// The server's database, for operator actions (grants) and assertions.
    pub db: DatabaseConnection,
    /// Its URL (for running the binary's operator subcommands on it).
    pub database_url: String,
    /// SQL statements the server has run.
    pub statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the server on `database_url` with settings from `settings`, exactly as `main`
    /// does, and grants [`PROVISIONER`] on `*` (as an operator would with `grant`).
    pub async fn spawn_on(database_url: String, settings: fn(String) -> Settings) -> TestApp {
        let settings = settings(database_url.clone());
        TestApp::spawn_with(settings).await
    }

    /// Starts the server with exactly these settings.
    pub async fn spawn_with(settings: Settings) -> TestApp {
        let secret_file = settings.secret_file.clone();
        let database_url = settings.database_url.clone();
        let app = Application::build(settings)
            .await
            .expect("build the application");
        let addr = app.local_addr().expect("local address");
        let statements = app.statement_counter();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let endpoint = format!("http://{addr}");
        let channel = Channel::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let secret = ServerSecret::load_or_create(&secret_file).expect("secret");
        let db = store::connect(&database_url)
            .await
            .expect("test connection");
        store::roles::grant(&db, PROVISIONER, None, Role::Provisioner)
            .await
            .expect("grant provisioner");
        TestApp {
            endpoint,
            channel,
            secret,
            db,
            database_url,
            statements,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown().await.expect("clean shutdown");
    }

    /// Signals shutdown and returns the server's result.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// A token for `subject`, valid for an hour.
    pub fn token(&self, subject: &str) -> String {
        mint_dev_token(
            &self.secret,
            subject,
            Duration::from_secs(3600),
            ISSUER,
            AUDIENCE,
        )
        .expect("token")
    }

    /// Customers client.
    pub fn customers(&self) -> CustomersClient<Channel> {
        CustomersClient::new(self.channel.clone())
    }

    /// Users client.
    pub fn users(&self) -> UsersClient<Channel> {
        UsersClient::new(self.channel.clone())
    }

    /// AuthenticationMethods client.
    pub fn methods(&self) -> AuthenticationMethodsClient<Channel> {
        AuthenticationMethodsClient::new(self.channel.clone())
    }

    /// AuditLog client.
    pub fn audit(&self) -> AuditLogClient<Channel> {
        AuditLogClient::new(self.channel.clone())
    }

    /// Grants `role` to `subject` on `customer` (None: `*`), as fixture setup: straight into
    /// the store, unaudited (the operator's audited `grant` is tested through the binary).
    pub async fn grant(&self, subject: &str, customer: Option<&str>, role: &str) {
        store::roles::grant(
            &self.db,
            subject,
            fixture_customer(customer),
            fixture_role(role),
        )
        .await
        .expect("grant");
    }

    /// Revokes, as fixture setup (see [`TestApp::grant`]).
    pub async fn revoke(&self, subject: &str, customer: Option<&str>, role: &str) {
        store::roles::revoke(
            &self.db,
            subject,
            fixture_customer(customer),
            fixture_role(role),
        )
        .await
        .expect("revoke");
    }

    /// Creates a customer through `CreateCustomer` as [`PROVISIONER`].
    pub async fn create_customer(
        &self,
        name: &str,
        policy: pb::MfaPolicy,
        kinds: &[pb::MethodKind],
    ) -> pb::Customer {
        let customer = pb::Customer {
            display_name: name.into(),
            mfa_policy: policy.into(),
            enabled_method_kinds: kinds.iter().map(|k| (*k).into()).collect(),
            ..Default::default()
        };
        self.customers()
            .create_customer(authed(
                pb::CreateCustomerRequest {
                    request_id: Default::default(),
                    customer: Some(customer),
                },
                &self.token(PROVISIONER),
            ))
            .await
            .expect("create customer")
            .into_inner()
            .customer
            .expect("customer")
    }

    /// Creates a user through `CreateUser` as [`PROVISIONER`].
    pub async fn create_user(
        &self,
        customer_id: &str,
        name: &str,
        admin: bool,
        external_subject: &str,
    ) -> pb::User {
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        let user = pb::User {
            customer_id: customer_id.into(),
            display_name: name.into(),
            email,
            admin,
            external_subject: external_subject.into(),
            ..Default::default()
        };
        self.users()
            .create_user(authed(
                pb::CreateUserRequest {
                    request_id: Default::default(),
                    user: Some(user),
                },
                &self.token(PROVISIONER),
            ))
            .await
            .expect("create user")
            .into_inner()
            .user
            .expect("user")
    }

    /// Registers a method through `RegisterAuthenticationMethod` as [`PROVISIONER`].
    pub async fn register_method(
        &self,
        user: &pb::User,
        kind: pb::MethodKind,
        scope: pb::MethodScope,
        label: &str,
    ) -> pb::AuthenticationMethod {
        self.methods()
            .register_authentication_method(authed(
                pb::RegisterAuthenticationMethodRequest {
                    request_id: Default::default(),
                    customer_id: user.customer_id.clone(),
                    user_id: user.id.clone(),
                    kind: kind.into(),
                    scope: scope.into(),
                    label: label.into(),
                    secret_ref: String::new(),
                },
                &self.token(PROVISIONER),
            ))
            .await
            .expect("register method")
            .into_inner()
            .authentication_method
            .expect("method")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn fixture_customer(customer: Option<&str>) -> Option<CustomerId> {
    customer.map(|id| CustomerId::parse(id).expect("customer id"))
}

fn fixture_role(role: &str) -> Role {
    Role::parse(role).expect("a role name")
}

/// `ConfirmMfaReset` of `reset` (with its etag) as `subject`.
pub async fn confirm(
    app: &TestApp,
    subject: &str,
    reset: &pb::MfaReset,
) -> Result<pb::MfaReset, Status> {
    app.users()
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: reset.id.clone(),
                etag: reset.etag.clone(),
                request_id: String::new(),
            },
            &app.token(subject),
        ))
        .await
        .map(|r| r.into_inner().mfa_reset.expect("reset"))
}

/// A channel to `app` that counts the TCP connections it opens.
pub async fn counted_channel(
    app: &TestApp,
) -> (Channel, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let channel = tonic::transport::Endpoint::from_shared(app.endpoint.clone())
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |uri: http::Uri| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let host = uri.host().unwrap_or("127.0.0.1").to_string();
                let port = uri.port_u16().unwrap_or(80);
                tokio::net::TcpStream::connect((host, port))
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .expect("connect");
    (channel, connections)
}

/// Every method kind.
pub const ALL_KINDS: [pb::MethodKind; 7] = [
    pb::MethodKind::Phone,
    pb::MethodKind::AuthenticatorApp,
    pb::MethodKind::SoftwareOath,
    pb::MethodKind::HardwareOath,
    pb::MethodKind::Email,
    pb::MethodKind::Fido2,
    pb::MethodKind::RecoveryCodes,
];

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// Asserts the status code and the ErrorInfo reason (domain `mfareset`), and returns the
/// status for further checks.
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.reason, reason, "unexpected reason on {status:?}");
    assert_eq!(info.domain, "mfa-reset.internal");
    status
}

/// The fields a BadRequest detail names, in order.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The principal most tests act as: PRIVILEGED_AUTHENTICATION_ADMIN in `enforced`,
/// AUTHENTICATION_ADMIN in `optional`, READER in `no_hardware`, nothing in `other`.
pub const ADMIN: &str = "admin-principal";

/// A small multi-customer world built through the RPCs.
pub struct World {
    /// ENFORCED, every kind enabled.
    pub enforced: pb::Customer,
    /// OPTIONAL, every kind but HARDWARE_OATH.
    pub optional: pb::Customer,
    /// ENFORCED, every kind but HARDWARE_OATH.
    pub no_hardware: pb::Customer,
    /// A customer [`ADMIN`] has no role in.
    pub other: pb::Customer,
    /// A non-admin of `enforced` with a phone and an e-mail method.
    pub alice: pb::User,
    /// An admin of `enforced` with a FIDO2 key and a hardware token.
    pub root: pb::User,
    /// A non-admin of `optional` without MFA.
    pub bob: pb::User,
    /// An admin of `optional` with an authenticator app.
    pub olga: pb::User,
    /// A user of `other`.
    pub stranger: pb::User,
    /// The user whose sign-in subject is [`ADMIN`] (in `enforced`).
    pub me: pb::User,
}

/// Builds the [`World`].
pub async fn world(app: &TestApp) -> World {
    use pb::{MethodKind as K, MethodScope as S, MfaPolicy as P};
    let without_hardware: Vec<K> = ALL_KINDS
        .iter()
        .copied()
        .filter(|k| *k != K::HardwareOath)
        .collect();
    let enforced = app
        .create_customer("Enforced Co", P::Enforced, &ALL_KINDS)
        .await;
    let optional = app
        .create_customer("Optional Co", P::Optional, &without_hardware)
        .await;
    let no_hardware = app
        .create_customer("No Hardware Co", P::Enforced, &without_hardware)
        .await;
    let other = app
        .create_customer("Other Co", P::Enforced, &ALL_KINDS)
        .await;
    app.grant(ADMIN, Some(&enforced.id), "PRIVILEGED_AUTHENTICATION_ADMIN")
        .await;
    app.grant(ADMIN, Some(&optional.id), "AUTHENTICATION_ADMIN")
        .await;
    app.grant(ADMIN, Some(&no_hardware.id), "READER").await;

    let alice = app
        .create_user(&enforced.id, "Alice Archer", false, "alice-sub")
        .await;
    app.register_method(&alice, K::Phone, S::Org, "+1 555 123 4567")
        .await;
    app.register_method(&alice, K::Email, S::User, "alice@example.com")
        .await;
    let root = app
        .create_user(&enforced.id, "Root Admin", true, "root-sub")
        .await;
    app.register_method(&root, K::Fido2, S::User, "YubiKey 5")
        .await;
    app.register_method(&root, K::HardwareOath, S::Org, "serial 88412231")
        .await;
    let bob = app.create_user(&optional.id, "Bob Baker", false, "").await;
    let olga = app
        .create_user(&optional.id, "Olga Admin", true, "olga-sub")
        .await;
    app.register_method(&olga, K::AuthenticatorApp, S::User, "Pixel 8")
        .await;
    let stranger = app
        .create_user(&other.id, "Stranger Danger", false, "")
        .await;
    app.register_method(&stranger, K::Phone, S::User, "+44 20 7946 0958")
        .await;
    let me = app
        .create_user(&enforced.id, "Me Myself", false, ADMIN)
        .await;
    app.register_method(&me, K::SoftwareOath, S::User, "Authenticator")
        .await;
    World {
        enforced,
        optional,
        no_hardware,
        other,
        alice,
        root,
        bob,
        olga,
        stranger,
        me,
    }
}

/// Re-reads a user through GetUser as [`ADMIN`].
pub async fn get_user(app: &TestApp, customer_id: &str, user_id: &str) -> Result<pb::User, Status> {
    app.users()
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: vec![customer_id.into()],
                user: Some(by_id(user_id)),
            },
            &app.token(ADMIN),
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

/// The audit events of `customer_ids` as [`ADMIN`] sees them, newest first; `action`
/// UNSPECIFIED and an empty `user_id` mean every action and every user.
pub async fn audit_events(
    app: &TestApp,
    customer_ids: &[&str],
    action: pb::AuditAction,
    user_id: &str,
) -> Vec<pb::AuditEvent> {
    app.audit()
        .list_audit_events(authed(
            pb::ListAuditEventsRequest {
                customer_ids: customer_ids.iter().map(|id| id.to_string()).collect(),
                actions: if action == pb::AuditAction::Unspecified {
                    vec![]
                } else {
                    vec![action.into()]
                },
                user_id: user_id.into(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("list audit events")
        .into_inner()
        .audit_events
}

/// `GetUser` names a user by id.
pub fn by_id(user_id: &str) -> pb::get_user_request::User {
    pb::get_user_request::User::UserId(user_id.into())
}

/// A summarize target naming users by id.
pub fn users_by_id(user_ids: Vec<String>) -> Option<pb::users_summarize_mfa_reset_request::Target> {
    Some(pb::users_summarize_mfa_reset_request::Target::Users(
        pb::UserReferences {
            user_ids,
            external_subjects: vec![],
        },
    ))
}

/// The user ids a summarize request names (none when it names them otherwise).
pub fn target_ids(request: &pb::UsersSummarizeMfaResetRequest) -> Vec<String> {
    match &request.target {
        Some(pb::users_summarize_mfa_reset_request::Target::Users(users)) => users.user_ids.clone(),
        _ => vec![],
    }
}

/// PostgreSQL: how many sessions of `db`'s database wait for a lock now.
pub async fn waiting_for_locks(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS waiting FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ))
        .await
        .expect("read pg_stat_activity")
        .expect("a row");
    row.try_get("", "waiting").expect("waiting")
}
