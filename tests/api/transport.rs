//! How connections are served: TLS and mutual TLS (a bearer token still required), gzip
//! answers for clients that accept them, connections replaced after their maximum age, and
//! the `health` subcommand that container health checks run.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use mfa_reset::{
    config::{Settings, TlsFiles, TransportSettings},
    proto::v1::{self as pb, customers_client::CustomersClient},
    server::Application,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::{
    Code,
    codec::CompressionEncoding,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use uuid::Uuid;

use crate::helpers::*;

/// A CA, a server certificate it signed (for `localhost` and 127.0.0.1) and a client
/// certificate it signed, as PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn create() -> Pki {
        let dir = std::env::temp_dir().join(format!("mfa-reset-pki-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mfa-reset test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, common_name: &str| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "mfa-reset server",
        );
        let (client_cert, client_key) = leaf(vec!["sign-in-service".into()], "sign-in-service");
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            dir,
        }
    }

    fn server_files(&self, require_client_certificates: bool) -> TlsFiles {
        TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: require_client_certificates.then(|| self.ca.clone()),
        }
    }

    fn client_tls(&self, with_certificate: bool) -> ClientTlsConfig {
        let read = |path: &Path| std::fs::read(path).expect("read pem");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .domain_name("localhost");
        if with_certificate {
            tls.identity(Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ))
        } else {
            tls
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server over a fresh SQLite database with these transport settings; stopped on drop.
struct Served {
    addr: std::net::SocketAddr,
    secret: mfa_reset::auth::ServerSecret,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    database: Option<TestDatabase>,
}

impl Served {
    async fn start(transport: TransportSettings) -> Served {
        let database = TestDatabase::create(Backend::Sqlite)
            .await
            .expect("sqlite database");
        let settings = Settings {
            transport,
            ..Settings::default_for_tests(database.url.clone())
        };
        let secret_file = settings.secret_file.clone();
        let app = Application::build(settings).await.expect("build");
        let addr = app.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Served {
            addr,
            secret: mfa_reset::auth::ServerSecret::load_or_create(&secret_file).expect("secret"),
            stop: Some(stop),
            handle: Some(handle),
            database: Some(database),
        }
    }

    fn token(&self, subject: &str) -> String {
        crate::replicas::token_with(&self.secret, subject)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("clean shutdown");
        }
        if let Some(database) = self.database.take() {
            database.drop_now().await;
        }
    }
}

/// ListCustomers over `channel` as a principal without roles: OK with an empty list.
async fn list_customers(channel: Channel, token: &str) -> Result<usize, tonic::Status> {
    CustomersClient::new(channel)
        .list_customers(authed(pb::ListCustomersRequest::default(), token))
        .await
        .map(|r| r.into_inner().customers.len())
}

async fn tls_channel(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("endpoint")
        .tls_config(tls)
        .expect("client tls")
        .connect_timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// Whether a call over `channel` succeeds.
async fn reaches(channel: Result<Channel, String>, token: &str) -> bool {
    match channel {
        Ok(channel) => list_customers(channel, token).await.is_ok(),
        Err(_) => false,
    }
}

/// `mfa-reset health` with `args`: (exit success, stdout).
fn health(args: &[&str]) -> (bool, String) {
    let output = crate::replicas::binary()
        .args(["--log", "warn", "health"])
        .args(args)
        .output()
        .expect("run mfa-reset health");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_every_client_that_trusts_the_certificate() {
    let pki = Pki::create();
    let served = Served::start(TransportSettings {
        tls: Some(pki.server_files(false)),
        ..TransportSettings::default()
    })
    .await;
    let token = served.token("tls-client");
    assert!(
        reaches(
            tls_channel(served.addr, pki.client_tls(false)).await,
            &token
        )
        .await,
        "a client trusting the CA, without a certificate of its own"
    );
    // Plaintext against a TLS port does not reach the service.
    let plain = Endpoint::from_shared(format!("http://{}", served.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string());
    assert!(!reaches(plain, &token).await, "plaintext is refused");
    // A client that does not trust the certificate refuses it.
    let untrusted = Endpoint::from_shared(format!("https://localhost:{}", served.addr.port()))
        .expect("endpoint")
        .tls_config(ClientTlsConfig::new().domain_name("localhost"))
        .expect("client tls")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string());
    assert!(
        !reaches(untrusted, &token).await,
        "an untrusted certificate"
    );

    let addr = format!("localhost:{}", served.addr.port());
    let ca = pki.ca.to_string_lossy().into_owned();
    assert_eq!(
        health(&["--addr", &addr, "--tls-ca", &ca]),
        (true, "SERVING".to_string())
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_a_certificate_get_in_and_still_need_a_token() {
    let pki = Pki::create();
    let served = Served::start(TransportSettings {
        tls: Some(pki.server_files(true)),
        ..TransportSettings::default()
    })
    .await;
    let token = served.token("sign-in-service");
    let with_certificate = tls_channel(served.addr, pki.client_tls(true))
        .await
        .expect("a client with a certificate connects");
    assert_eq!(
        list_customers(with_certificate.clone(), &token).await.ok(),
        Some(0),
        "served (a principal without roles sees no customer)"
    );
    // The certificate authenticates the connection, not the principal.
    let anonymous = CustomersClient::new(with_certificate)
        .list_customers(pb::ListCustomersRequest::default())
        .await;
    assert_error(anonymous, Code::Unauthenticated, "TOKEN_MISSING");
    // Without a client certificate the handshake fails: no call reaches the service.
    assert!(
        !reaches(
            tls_channel(served.addr, pki.client_tls(false)).await,
            &token
        )
        .await,
        "a client without a certificate is refused"
    );

    let addr = format!("localhost:{}", served.addr.port());
    let ca = pki.ca.to_string_lossy().into_owned();
    let (cert, key) = (
        pki.client_cert.to_string_lossy().into_owned(),
        pki.client_key.to_string_lossy().into_owned(),
    );
    assert_eq!(
        health(&[
            "--addr",
            &addr,
            "--tls-ca",
            &ca,
            "--tls-client-cert",
            &cert,
            "--tls-client-key",
            &key
        ]),
        (true, "SERVING".to_string())
    );
    let (ok, _) = health(&["--addr", &addr, "--tls-ca", &ca, "--timeout-secs", "3"]);
    assert!(!ok, "health without a client certificate fails");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_tls_files_are_unusable_does_not_start() {
    let pki = Pki::create();
    std::fs::write(&pki.server_key, "not a key").expect("spoil the key");
    let database = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let settings = Settings {
        transport: TransportSettings {
            tls: Some(pki.server_files(false)),
            ..TransportSettings::default()
        },
        ..Settings::default_for_tests(database.url.clone())
    };
    let error = match Application::build(settings).await {
        Ok(_) => panic!("built with an unusable key"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("TLS"), "{error}");
    let missing = Settings {
        transport: TransportSettings {
            tls: Some(TlsFiles {
                cert: pki.dir.join("nowhere.pem"),
                ..pki.server_files(false)
            }),
            ..TransportSettings::default()
        },
        ..Settings::default_for_tests(database.url.clone())
    };
    let error = match Application::build(missing).await {
        Ok(_) => panic!("built without a certificate file"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("nowhere.pem"), "{error}");
    database.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_gzip_compressed_for_clients_that_accept_it() {
    run(Backend::Sqlite, |app| {
        Box::pin(async move {
            let request = || authed(pb::ListCustomersRequest::default(), &app.token(ADMIN));
            let compressed = CustomersClient::new(app.channel.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .list_customers(request())
                .await
                .expect("with gzip");
            assert_eq!(
                compressed
                    .metadata()
                    .get("grpc-encoding")
                    .and_then(|v| v.to_str().ok()),
                Some("gzip")
            );
            let plain = CustomersClient::new(app.channel.clone())
                .list_customers(request())
                .await
                .expect("without gzip");
            assert!(plain.metadata().get("grpc-encoding").is_none());
        })
    })
    .await;
}

fn short_lived_connections(database_url: String) -> Settings {
    Settings {
        transport: TransportSettings {
            max_connection_age: Some(Duration::from_secs(1)),
            ..TransportSettings::default()
        },
        ..Settings::default_for_tests(database_url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_their_maximum_age_connections_take_no_new_calls_and_finish_the_open_ones() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    run_with(Backend::Sqlite, short_lived_connections, |app| {
        Box::pin(async move {
            let (channel, connections) = counted_channel(app).await;
            let token = app.token(ADMIN);
            list_customers(channel.clone(), &token)
                .await
                .expect("first call");
            // A stream open on the first connection when it reaches its age.
            let mut watch = HealthClient::new(channel.clone())
                .watch(HealthCheckRequest::default())
                .await
                .expect("watch")
                .into_inner();
            watch.message().await.expect("the first status");
            assert_eq!(connections.load(Ordering::SeqCst), 1);
            tokio::time::sleep(Duration::from_millis(2500)).await;
            // Past the age the server has sent GOAWAY: a new call opens a new connection
            // (a call that raced the GOAWAY on the old one is refused unprocessed, which
            // gRPC clients retry; tonic leaves that to the caller)...
            let mut served = false;
            for _ in 0..5 {
                if list_customers(channel.clone(), &token).await.is_ok() {
                    served = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(served, "calls go on over a new connection");
            assert_eq!(
                connections.load(Ordering::SeqCst),
                2,
                "the aged connection takes no new calls"
            );
            // ...and the stream on the old one is still open (no status, no end).
            let still_open =
                tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
            assert!(still_open.is_err(), "the open stream ended: {still_open:?}");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_reports_serving_or_fails() {
    run(Backend::Sqlite, |app| {
        Box::pin(async move {
            let addr = app.endpoint.trim_start_matches("http://").to_string();
            assert_eq!(health(&["--addr", &addr]), (true, "SERVING".to_string()));
            assert_eq!(
                health(&["--addr", &addr, "--service", "mfareset.v1.Users"]),
                (true, "SERVING".to_string())
            );
            // A service the server does not know, and an address where nothing listens.
            let (ok, _) = health(&["--addr", &addr, "--service", "no.such.Service"]);
            assert!(!ok);
            let [port] = crate::replicas::free_ports();
            let (ok, _) = health(&[
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--timeout-secs",
                "2",
            ]);
            assert!(!ok);
        })
    })
    .await;
}
