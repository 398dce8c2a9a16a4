//! A database outage, without touching the shared PostgreSQL server: the server under test
//! reaches its database through an in-process TCP proxy, and the test cuts the proxy (every
//! open connection is dropped, and new ones are accepted but never answered, as behind a
//! network partition) and then restores it.
//!
//! While the database is away, a call with a 2 s deadline gets UNAVAILABLE, reason
//! DATABASE_UNAVAILABLE, with a RetryInfo, before its deadline (the pool alone would wait its
//! 5 s acquire timeout, and the client would see only DEADLINE_EXCEEDED); once the proxy is
//! back the same server serves again, without a restart.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mfa_reset::{config::Settings, proto::v1 as pb};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::*;

/// A TCP proxy to `upstream` that can be cut and restored.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut: the connections of earlier generations end.
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let accepting = (up.clone(), generation.clone());
        tokio::spawn(async move {
            let (up, generation) = accepting;
            // Connections accepted while cut: held open, never answered, dropped on restore.
            let mut black_holed: Vec<TcpStream> = Vec::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up.load(Ordering::SeqCst) {
                    black_holed.push(client);
                    continue;
                }
                black_holed.clear();
                let mut cut = generation.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Where `url`'s `host:port` is: its start and end.
fn authority(url: &str) -> (usize, usize) {
    let start = url
        .find('@')
        .or_else(|| url.find("://").map(|i| i + 2))
        .expect("a URL")
        + 1;
    let end = start + url[start..].find('/').expect("a database path");
    (start, end)
}

async fn list_customers(app: &TestApp, timeout: &str) -> Result<(), Status> {
    let mut request = authed(pb::ListCustomersRequest::default(), &app.token(PROVISIONER));
    request
        .metadata_mut()
        .insert("grpc-timeout", timeout.parse().expect("timeout"));
    app.customers().list_customers(request).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_calls_are_unavailable_before_their_deadline() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        eprintln!("{POSTGRES_URL_VAR} is not set: skipping the outage test");
        return;
    };
    let (start, end) = authority(&database.url);
    let proxy = Proxy::start(database.url[start..end].to_string()).await;
    let url = format!(
        "{}{}{}",
        &database.url[..start],
        proxy.addr,
        &database.url[end..]
    );
    let app = TestApp::spawn_on(url, Settings::default_for_tests).await;
    app.create_customer(
        "Before The Outage",
        pb::MfaPolicy::Enforced,
        &[pb::MethodKind::Phone],
    )
    .await;
    list_customers(&app, "2S")
        .await
        .expect("served before the outage");

    proxy.cut();
    // Each call, whether it meets a dropped pooled connection or has to open a new one.
    for call in 0..4 {
        let started = Instant::now();
        let status = list_customers(&app, "2S")
            .await
            .expect_err("no database, no answer");
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "call {call}: {status:?}");
        assert!(elapsed < Duration::from_secs(2), "call {call}: {elapsed:?}");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "DATABASE_UNAVAILABLE", "call {call}");
        assert!(details.retry_info().is_some(), "call {call}: no RetryInfo");
        assert!(!status.message().contains("127.0.0.1"), "{status:?}");
    }
    // Health has nothing to do with the database and keeps answering.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health during the outage");

    proxy.restore();
    let started = Instant::now();
    loop {
        match list_customers(&app, "2S").await {
            Ok(()) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "still unavailable 15 s after the database came back: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    app.stop().await;
    database.drop_now().await;
}
