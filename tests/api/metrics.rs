//! Metrics as Prometheus scrapes them: a real `mfa-reset serve --demo --metrics-listen`, some
//! calls through gRPC, then `GET /metrics`, read line by line.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use mfa_reset::proto::v1::{
    self as pb, customers_client::CustomersClient, users_client::UsersClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    helpers::*,
    replicas::{binary, free_ports},
};

/// `GET path` over HTTP/1.1: (status line, body).
async fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample named `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let Some(rest) = line.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_calls_by_method_and_code_resets_users_pool_and_streams() {
    let root = std::env::temp_dir().join(format!("mfa-reset-metrics-{}", Uuid::now_v7().simple()));
    let [port, metrics_port] = free_ports();
    let (addr, metrics_addr) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{metrics_port}"),
    );
    let child = binary()
        .args([
            "serve",
            "--demo",
            "--listen",
            &addr,
            "--metrics-listen",
            &metrics_addr,
        ])
        .args(["--rate-limit-per-minute", "20", "--log", "warn"])
        .arg("--data-dir")
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mfa-reset serve --demo");
    let mut child = crate::replicas::KillOnDrop(child);
    let mut exports = std::collections::HashMap::new();
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    while ![
        "TOKEN",
        "APPROVER_TOKEN",
        "CONTOSO",
        "NORTHWIND",
        "RESET_ME",
        "TEAM_1",
        "TEAM_2",
        "TEAM_3",
    ]
    .iter()
    .all(|k| exports.contains_key(*k))
    {
        let line = lines.next().expect("an export line").expect("stdout");
        if let Some((name, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            exports.insert(name.to_string(), value.to_string());
        }
    }
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "not listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let token = exports["TOKEN"].clone();
    let mut customers = CustomersClient::new(channel.clone());
    let mut users = UsersClient::new(channel.clone());

    for _ in 0..2 {
        customers
            .list_customers(authed(pb::ListCustomersRequest::default(), &token))
            .await
            .expect("list customers");
    }
    let missing = users
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: vec![exports["NORTHWIND"].clone()],
                user: Some(by_id(&Uuid::now_v7().to_string())),
            },
            &token,
        ))
        .await;
    assert_eq!(missing.expect_err("not found").code(), Code::NotFound);
    // One reset confirmed (one user), one approved (three users).
    for (selection, ids, approver) in [
        (
            vec![exports["NORTHWIND"].clone()],
            vec![exports["RESET_ME"].clone()],
            None,
        ),
        (
            vec![exports["CONTOSO"].clone()],
            vec![
                exports["TEAM_1"].clone(),
                exports["TEAM_2"].clone(),
                exports["TEAM_3"].clone(),
            ],
            Some(exports["APPROVER_TOKEN"].clone()),
        ),
    ] {
        let reset = users
            .summarize_mfa_reset(authed(
                pb::UsersSummarizeMfaResetRequest {
                    customer_ids: selection,
                    target: users_by_id(ids),
                    reason: "metrics".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("summarize")
            .into_inner()
            .mfa_reset
            .expect("reset");
        users
            .confirm_mfa_reset(authed(
                pb::UsersConfirmMfaResetRequest {
                    reset_id: reset.id.clone(),
                    etag: reset.etag.clone(),
                    request_id: String::new(),
                },
                &token,
            ))
            .await
            .expect("confirm");
        if let Some(approver) = approver {
            users
                .approve_mfa_reset(authed(
                    pb::ApproveMfaResetRequest {
                        reset_id: reset.id.clone(),
                        etag: reset.etag.clone(),
                        request_id: String::new(),
                    },
                    &approver,
                ))
                .await
                .expect("approve");
        }
    }
    // A change stream kept open while Prometheus scrapes.
    let stream = pb::audit_log_client::AuditLogClient::new(channel.clone())
        .watch_audit_events(authed(
            pb::WatchAuditEventsRequest {
                customer_ids: vec![exports["NORTHWIND"].clone()],
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("watch")
        .into_inner();
    // A principal over its rate limit (20 a minute).
    let hammer = crate::replicas::token_with(
        &mfa_reset::auth::ServerSecret::load_or_create(&root.join("secret.key")).expect("secret"),
        "hammer",
    );
    let mut limited = 0;
    for _ in 0..25 {
        let answer = customers
            .list_customers(authed(pb::ListCustomersRequest::default(), &hammer))
            .await;
        if answer.is_err_and(|s| s.code() == Code::ResourceExhausted) {
            limited += 1;
        }
    }
    assert!(limited >= 1, "the rate limit answered");

    // Made-up paths (a scan) add no series: they count as _OTHER.
    for path in ["/no.such.Service/Nope", "/mfareset.v1.Users/Nope"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let codec =
            tonic_prost::ProstCodec::<pb::ListCustomersRequest, pb::ListCustomersResponse>::default(
            );
        let answer = grpc
            .unary(
                tonic::Request::new(pb::ListCustomersRequest::default()),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await;
        assert!(answer.is_err(), "{path}");
    }

    let (status, text) = get(&metrics_addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let rpc = |method: &str, code: &str| {
        sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            &[
                ("rpc_system", "grpc"),
                (
                    "rpc_service",
                    if method == "ListCustomers" {
                        "mfareset.v1.Customers"
                    } else {
                        "mfareset.v1.Users"
                    },
                ),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(rpc("GetUser", "5"), Some(1.0), "{text}");
    assert_eq!(rpc("SummarizeMfaReset", "0"), Some(2.0));
    assert_eq!(rpc("ApproveMfaReset", "0"), Some(1.0));
    assert_eq!(rpc("ListCustomers", "8"), Some(f64::from(limited)));
    assert!(rpc("ListCustomers", "0").is_some_and(|n| n >= 2.0));
    assert!(
        text.contains("rpc_server_call_duration_seconds_bucket{"),
        "a histogram"
    );
    let other = sample(
        &text,
        "rpc_server_call_duration_seconds_count",
        &[("rpc_service", "_OTHER"), ("rpc_method", "_OTHER")],
    );
    assert_eq!(other, Some(2.0), "{text}");
    assert!(!text.contains("Nope"), "no series names a made-up path");
    let resets = |outcome: &str| sample(&text, "mfa_reset_resets_total", &[("outcome", outcome)]);
    assert_eq!(resets("summarized"), Some(2.0));
    assert_eq!(resets("confirmed"), Some(1.0));
    assert_eq!(resets("awaiting_approval"), Some(1.0));
    assert_eq!(resets("approved"), Some(1.0));
    assert_eq!(sample(&text, "mfa_reset_users_reset_total", &[]), Some(4.0));
    assert_eq!(
        sample(&text, "mfa_reset_rate_limited_total", &[]),
        Some(f64::from(limited))
    );
    assert_eq!(sample(&text, "mfa_reset_watch_streams", &[]), Some(1.0));
    let used = sample(
        &text,
        "db_client_connection_count",
        &[("db_client_connection_state", "used")],
    );
    let idle = sample(
        &text,
        "db_client_connection_count",
        &[("db_client_connection_state", "idle")],
    );
    assert!(used.is_some() && idle.is_some(), "pool gauges: {text}");
    assert!(sample(&text, "db_client_connection_max", &[]).is_some_and(|m| m >= 1.0));
    // Nothing else is served.
    let (status, _) = get(&metrics_addr, "/").await;
    assert!(status.contains("404"), "{status}");

    drop(stream);
    drop(child);
    let _ = std::fs::remove_dir_all(&root);
}
