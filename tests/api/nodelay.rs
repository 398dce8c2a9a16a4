//! TCP_NODELAY, read back with `getsockopt` (Linux): on the socket the server accepted for a
//! gRPC client, and on the server's PostgreSQL connections. Without it a response or a
//! statement that spans several TCP segments waits ~40 ms for a delayed ACK.

use std::sync::{Arc, Mutex};

use mfa_reset::net;
use sea_orm::{ConnectionTrait, Statement};
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, TestApp, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_grpc_connections_have_nodelay() {
    run(Backend::Sqlite, |app| Box::pin(accepted_connection(app))).await
}

async fn accepted_connection(app: &TestApp) {
    // The client's own socket leaves Nagle on, so only the server can have set the option on
    // its side.
    let client_port = Arc::new(Mutex::new(None));
    let seen = client_port.clone();
    let channel = Endpoint::from_shared(app.endpoint.clone())
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |uri: http::Uri| {
            let seen = seen.clone();
            async move {
                let host = uri.host().unwrap_or("127.0.0.1").to_string();
                let stream =
                    tokio::net::TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?;
                stream.set_nodelay(false)?;
                *seen.lock().expect("port") = Some(stream.local_addr()?.port());
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect");
    // Kept until the end: dropping the last handle closes the connection.
    let mut health = HealthClient::new(channel);
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("health");

    let client_port = client_port.lock().expect("port").expect("connected");
    let server_port = app
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("server port");
    assert_eq!(
        net::nodelay_of(client_port, Some(server_port)),
        Some(false),
        "the client's socket is found and keeps its own setting"
    );
    assert_eq!(
        net::nodelay_of(server_port, Some(client_port)),
        Some(true),
        "the server's accepted socket has TCP_NODELAY"
    );
    drop(health);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_have_nodelay() {
    run(Backend::Postgres, |app| Box::pin(postgres_connections(app))).await
}

async fn postgres_connections(app: &TestApp) {
    // `app.db` is opened by `store::connect`, as the server's own pool is. Several pooled
    // connections at once, so that more than the first one is checked.
    let transactions = futures::future::join_all((0..3).map(|_| async {
        use sea_orm::TransactionTrait;
        let txn = app.db.begin().await.expect("begin");
        let row = txn
            .query_one_raw(Statement::from_string(
                app.db.get_database_backend(),
                "SELECT inet_client_port() AS port",
            ))
            .await
            .expect("query")
            .expect("a row");
        let port: i32 = row.try_get("", "port").expect("port");
        (txn, port)
    }))
    .await;
    let mut ports: Vec<u16> = transactions
        .iter()
        .map(|(_txn, port)| u16::try_from(*port).expect("a TCP port"))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "three connections");
    for port in ports {
        assert_eq!(
            net::nodelay_of(port, None),
            Some(true),
            "the PostgreSQL connection on local port {port} has TCP_NODELAY"
        );
    }
}
