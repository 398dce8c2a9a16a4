//! Replicas: `mfa-reset serve` processes over one PostgreSQL database, as a load balancer
//! would put them, for the tests that need a second process.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use futures::FutureExt;
use mfa_reset::auth::{ServerSecret, mint_dev_token};
use tonic::transport::Channel;
use uuid::Uuid;

use mfa_reset::proto::v1::{
    self as pb, authentication_methods_client::AuthenticationMethodsClient,
    customers_client::CustomersClient, users_client::UsersClient,
};

use crate::helpers::{
    ALL_KINDS, AUDIENCE, Backend, ISSUER, POSTGRES_URL_VAR, TestDatabase, authed,
};

/// Two replicas over one fresh PostgreSQL database, sharing one secret (page tokens and
/// bearer tokens of one are valid on the other), and what a test needs to drive them.
pub struct Pair {
    /// The database's URL.
    pub database_url: String,
    /// A scratch directory for the replicas' data and logs.
    pub root: PathBuf,
    /// The replicas, listening.
    pub replicas: [Replica; 2],
    /// The secret both replicas share.
    pub secret: ServerSecret,
}

/// A token for `subject` signed with `secret`, valid for ten minutes.
pub fn token_with(secret: &ServerSecret, subject: &str) -> String {
    mint_dev_token(secret, subject, Duration::from_secs(600), ISSUER, AUDIENCE).expect("token")
}

impl Pair {
    /// A token for `subject`, valid on both replicas for ten minutes.
    pub fn token(&self, subject: &str) -> String {
        token_with(&self.secret, subject)
    }

    /// Runs the binary as an operator would on the pair's database.
    pub fn operator(&self, args: &[&str]) {
        operator(&self.database_url, &self.root, args);
    }

    /// Grants `role` to `subject` on `customer` (`*` for every customer) with the binary.
    pub fn grant(&self, subject: &str, customer: &str, role: &str) {
        self.operator(&[
            "grant",
            "--subject",
            subject,
            "--customer",
            customer,
            "--role",
            role,
        ]);
    }

    /// Through `channel`: an ENFORCED customer named `name` with every kind enabled, the
    /// `roles` granted in it, and one user per `(display name, external subject)` with a
    /// phone. Provisioned by `replica-provisioner` (PROVISIONER on `*`).
    pub async fn customer_with_users(
        &self,
        channel: &Channel,
        name: &str,
        roles: &[(&str, &str)],
        users: &[(&str, &str)],
    ) -> (pb::Customer, Vec<pb::User>) {
        let provisioner = "replica-provisioner";
        self.grant(provisioner, "*", "PROVISIONER");
        let token = self.token(provisioner);
        let customer = CustomersClient::new(channel.clone())
            .create_customer(authed(
                pb::CreateCustomerRequest {
                    customer: Some(pb::Customer {
                        display_name: name.into(),
                        mfa_policy: pb::MfaPolicy::Enforced.into(),
                        enabled_method_kinds: ALL_KINDS.iter().map(|k| (*k).into()).collect(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &token,
            ))
            .await
            .expect("create customer")
            .into_inner()
            .customer
            .expect("customer");
        for (subject, role) in roles {
            self.grant(subject, &customer.id, role);
        }
        let mut created = Vec::new();
        for (i, (display_name, subject)) in users.iter().enumerate() {
            let user = UsersClient::new(channel.clone())
                .create_user(authed(
                    pb::CreateUserRequest {
                        user: Some(pb::User {
                            customer_id: customer.id.clone(),
                            display_name: display_name.to_string(),
                            email: format!("replica.user.{i}@example.com"),
                            external_subject: subject.to_string(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    &token,
                ))
                .await
                .expect("create user")
                .into_inner()
                .user
                .expect("user");
            AuthenticationMethodsClient::new(channel.clone())
                .register_authentication_method(authed(
                    pb::RegisterAuthenticationMethodRequest {
                        customer_id: customer.id.clone(),
                        user_id: user.id.clone(),
                        kind: pb::MethodKind::Phone.into(),
                        scope: pb::MethodScope::User.into(),
                        label: format!("+1 555 222 {:04}", 3333 + i),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .expect("register a phone");
            created.push(user);
        }
        (customer, created)
    }
}

/// Runs `test` against two fresh replicas on PostgreSQL (skipped when no server is
/// configured), then stops them and drops the database, printing their logs on failure.
pub async fn with_two_replicas<F>(test: F)
where
    F: for<'a> FnOnce(&'a mut Pair) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
{
    if !std::env::var(POSTGRES_URL_VAR).is_ok_and(|u| !u.is_empty()) {
        eprintln!("{POSTGRES_URL_VAR} is not set: skipping a two-process PostgreSQL test");
        return;
    }
    let database = TestDatabase::create(Backend::Postgres)
        .await
        .expect("a PostgreSQL test database");
    let root = std::env::temp_dir().join(format!("mfa-reset-replicas-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&root).expect("temp dir");
    let secret_file = root.join("shared").join("secret.key");
    let [port_a, port_b] = free_ports();
    let mut pair = Pair {
        replicas: [
            Replica::start("a", port_a, &database.url, &secret_file, &root),
            Replica::start("b", port_b, &database.url, &secret_file, &root),
        ],
        database_url: database.url.clone(),
        root: root.clone(),
        secret: ServerSecret::from_bytes([0; 32]),
    };
    let outcome = std::panic::AssertUnwindSafe(async {
        for replica in pair.replicas.iter_mut() {
            replica.wait_until_listening().await;
        }
        pair.secret = ServerSecret::load_or_create(&secret_file).expect("the replicas' secret");
        test(&mut pair).await
    })
    .catch_unwind()
    .await;
    for replica in &mut pair.replicas {
        if replica.child.try_wait().ok().flatten().is_none() {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
        if outcome.is_err() {
            let log = std::fs::read_to_string(&replica.log).unwrap_or_default();
            eprintln!("--- replica {} log ---\n{log}", replica.name);
        }
    }
    database.drop_now().await;
    let _ = std::fs::remove_dir_all(&root);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A child process killed when this is dropped, so that a failing test leaves no server
/// behind holding its ports.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `N` distinct free TCP ports on 127.0.0.1 (free when asked; the servers bind them right
/// after). The listeners are held together so that no port is handed out twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"));
    listeners.map(|l| l.local_addr().expect("local address").port())
}

/// The `mfa-reset` binary, without the environment a developer's shell may set that would
/// override the flags a test passes (`MFA_RESET_*`), export telemetry (`OTEL_*`) or change
/// the logs (`RUST_LOG`).
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mfa-reset"));
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("MFA_RESET_") || name.starts_with("OTEL_") || name == "RUST_LOG" {
            command.env_remove(&var);
        }
    }
    command
}

/// One `mfa-reset serve` process.
pub struct Replica {
    /// A name for logs.
    pub name: &'static str,
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Replica {
    /// Starts `mfa-reset serve` on `port` over `database_url` with a shared secret file.
    pub fn start(
        name: &'static str,
        port: u16,
        database_url: &str,
        secret_file: &Path,
        root: &Path,
    ) -> Replica {
        let addr = format!("127.0.0.1:{port}");
        let log = root.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = binary()
            .args(["serve", "--listen", &addr, "--database-url", database_url])
            .arg("--secret-file")
            .arg(secret_file)
            .arg("--data-dir")
            .arg(root.join(format!("{name}-data")))
            .args(["--log", "warn"])
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start mfa-reset serve");
        Replica {
            name,
            child,
            addr,
            log,
        }
    }

    /// Waits (at most 30 s) until the process accepts TCP connections.
    pub async fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                panic!("replica {} exited before listening: {status}", self.name);
            }
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {} did not listen on {} within 30 s",
                self.name,
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A channel to it.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// SIGTERM, then the exit status (at most 15 s later).
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid}: {kill}");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "replica {} did not exit within 15 s of SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Runs the binary as an operator would (`grant`, ...) and asserts it succeeded.
pub fn operator(database_url: &str, root: &Path, args: &[&str]) {
    let output = binary()
        .args(["--database-url", database_url])
        .arg("--data-dir")
        .arg(root.join("operator-data"))
        .args(["--log", "warn"])
        .args(args)
        .output()
        .expect("run mfa-reset");
    assert!(
        output.status.success(),
        "mfa-reset {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
