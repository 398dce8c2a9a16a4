//! Traces and logs as an operator's collector receives them: a real `mfa-reset serve` process
//! exporting over OTLP to an in-process collector (OpenTelemetry's own gRPC service), with JSON
//! logs. Span names, kind, RPC attributes, status codes and error status, the caller's trace
//! continued from `traceparent`, the reset id, the engine's child spans, the resource, the
//! trace id in log lines, and no e-mail address or phone number anywhere.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mfa_reset::proto::v1::{
    self as pb, customers_client::CustomersClient, users_client::UsersClient,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    helpers::*,
    replicas::{binary, free_ports, operator, token_with},
};

/// What the collector received: every export request, as sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0
            .lock()
            .expect("collector lock")
            .push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let requests = self.0.lock().expect("collector lock");
        let mut spans = Vec::new();
        for request in requests.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_headers<T>(message: T, token: &str, headers: &[(&'static str, &str)]) -> Request<T> {
    let mut request = authed(message, token);
    for (name, value) in headers {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_the_collector_joined_to_the_callers_trace_and_without_contact_data() {
    // The collector.
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let collector_addr = listener.local_addr().expect("address");
    let served = collector.clone();
    let collector_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(served))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    // The server, as an operator runs it: JSON logs, OTLP export.
    let root = std::env::temp_dir().join(format!("mfa-reset-otlp-{}", Uuid::now_v7().simple()));
    let data = root.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let database_url = format!("sqlite://{}", data.join("mfa-reset.db").display());
    let [port] = free_ports();
    let addr = format!("127.0.0.1:{port}");
    let log = root.join("server.log");
    let child = binary()
        .args(["serve", "--listen", &addr])
        .args(["--database-url", &database_url])
        .arg("--data-dir")
        .arg(&data)
        .args(["--otlp-endpoint", &format!("http://{collector_addr}")])
        .args(["--log-format", "json", "--log", "info"])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start mfa-reset serve");
    let mut child = crate::replicas::KillOnDrop(child);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not listen"
        );
        assert!(
            child.0.try_wait().expect("poll").is_none(),
            "the server exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = mfa_reset::auth::ServerSecret::load_or_create(&data.join("secret.key"))
        .expect("the server's secret");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    // A customer, a user with an e-mail address and a phone, and an admin.
    let (provisioner, admin) = ("otlp-provisioner", "otlp-admin");
    operator(
        &database_url,
        &root,
        &[
            "grant",
            "--subject",
            provisioner,
            "--customer",
            "*",
            "--role",
            "PROVISIONER",
        ],
    );
    let provisioning = token_with(&secret, provisioner);
    let customer = CustomersClient::new(channel.clone())
        .create_customer(authed(
            pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    display_name: "Traced Co".into(),
                    mfa_policy: pb::MfaPolicy::Enforced.into(),
                    enabled_method_kinds: ALL_KINDS.iter().map(|k| (*k).into()).collect(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &provisioning,
        ))
        .await
        .expect("create customer")
        .into_inner()
        .customer
        .expect("customer");
    operator(
        &database_url,
        &root,
        &[
            "grant",
            "--subject",
            admin,
            "--customer",
            &customer.id,
            "--role",
            "AUTHENTICATION_ADMIN",
        ],
    );
    let (email, phone) = ("tracy.traced@example.com", "+1 555 867 5309");
    let user = UsersClient::new(channel.clone())
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    customer_id: customer.id.clone(),
                    display_name: "Tracy Traced".into(),
                    email: email.into(),
                    external_subject: "tracy-sub".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &provisioning,
        ))
        .await
        .expect("create user")
        .into_inner()
        .user
        .expect("user");
    pb::authentication_methods_client::AuthenticationMethodsClient::new(channel.clone())
        .register_authentication_method(authed(
            pb::RegisterAuthenticationMethodRequest {
                customer_id: customer.id.clone(),
                user_id: user.id.clone(),
                kind: pb::MethodKind::Phone.into(),
                scope: pb::MethodScope::User.into(),
                label: phone.into(),
                ..Default::default()
            },
            &provisioning,
        ))
        .await
        .expect("register a phone");

    // A summary and its confirm inside the caller's trace.
    let admin_token = token_with(&secret, admin);
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let mut users = UsersClient::new(channel.clone());
    let reset = users
        .summarize_mfa_reset(with_headers(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: vec![customer.id.clone()],
                target: users_by_id(vec![user.id.clone()]),
                reason: "lost phone".into(),
                ..Default::default()
            },
            &admin_token,
            &[("traceparent", &traceparent), ("tracestate", "vendor=1")],
        ))
        .await
        .expect("summarize")
        .into_inner()
        .mfa_reset
        .expect("reset");
    users
        .confirm_mfa_reset(with_headers(
            pb::UsersConfirmMfaResetRequest {
                reset_id: reset.id.clone(),
                etag: reset.etag.clone(),
                request_id: String::new(),
            },
            &admin_token,
            &[("traceparent", &traceparent)],
        ))
        .await
        .expect("confirm");
    // The caller's mistake (NOT_FOUND), and a failure on this side: DEADLINE_EXCEEDED, a
    // call that waits for the database's write lock (held here) past its deadline.
    let missing = users
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: vec![customer.id.clone()],
                user: Some(by_id(&Uuid::now_v7().to_string())),
            },
            &admin_token,
        ))
        .await;
    assert_eq!(
        missing.expect_err("not found").code(),
        tonic::Code::NotFound
    );
    let db = mfa_reset::store::connect(&database_url)
        .await
        .expect("the server's database");
    let lock = mfa_reset::store::begin_write(&db)
        .await
        .expect("hold the write lock");
    let late = CustomersClient::new(channel.clone())
        .create_customer(with_headers(
            pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    display_name: "Late Co".into(),
                    mfa_policy: pb::MfaPolicy::Optional.into(),
                    enabled_method_kinds: vec![pb::MethodKind::Phone.into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &provisioning,
            &[("grpc-timeout", "1S")],
        ))
        .await;
    assert_eq!(
        late.expect_err("past its deadline").code(),
        tonic::Code::DeadlineExceeded
    );
    lock.rollback().await.expect("release the lock");
    // The late call's handler is dropped, but its BEGIN waits on in SQLite's worker thread,
    // which holds the call's span until it ends. A write that succeeds after it (SQLite has
    // one writer) shows it has.
    CustomersClient::new(channel.clone())
        .create_customer(authed(
            pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    display_name: "After Co".into(),
                    mfa_policy: pb::MfaPolicy::Optional.into(),
                    enabled_method_kinds: vec![pb::MethodKind::Phone.into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &provisioning,
        ))
        .await
        .expect("a write after the lock");
    // Exported within the batch delay (100 ms here) once closed.
    let waited = Instant::now();
    while !collector.spans().iter().any(|(_, s)| {
        s.name == "mfareset.v1.Customers/CreateCustomer"
            && int(&s.attributes, "rpc.grpc.status_code") == Some(4)
    }) {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the late call's span was not exported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await.expect("close");
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health");

    // SIGTERM: the server flushes its spans as it exits.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let exited = Instant::now();
    while child.0.try_wait().expect("poll").is_none() {
        assert!(
            exited.elapsed() < Duration::from_secs(20),
            "the server did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = std::fs::read_to_string(&log).expect("the server's log");
    collector_task.abort();
    let _ = std::fs::remove_dir_all(&root);

    let spans = collector.spans();
    let named = |name: &str| -> Vec<&(Vec<KeyValue>, Span)> {
        spans.iter().filter(|(_, s)| s.name == name).collect()
    };
    let by_id: HashMap<Vec<u8>, &Span> =
        spans.iter().map(|(_, s)| (s.span_id.clone(), s)).collect();

    // One SERVER span per RPC, named after it, with the RPC conventions' attributes.
    let confirm = named("mfareset.v1.Users/ConfirmMfaReset");
    assert_eq!(
        confirm.len(),
        1,
        "{:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    let (resource, confirm) = confirm[0];
    assert_eq!(confirm.kind, SpanKind::Server as i32);
    assert_eq!(
        text(&confirm.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        text(&confirm.attributes, "rpc.service").as_deref(),
        Some("mfareset.v1.Users")
    );
    assert_eq!(
        text(&confirm.attributes, "rpc.method").as_deref(),
        Some("ConfirmMfaReset")
    );
    assert_eq!(int(&confirm.attributes, "rpc.grpc.status_code"), Some(0));
    assert_eq!(
        text(&confirm.attributes, "reset_id").as_deref(),
        Some(reset.id.as_str())
    );
    assert_eq!(
        text(&confirm.attributes, "principal").as_deref(),
        Some(admin)
    );
    assert_ne!(
        confirm.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    // The caller's trace, continued.
    assert_eq!(hex(&confirm.trace_id), trace_id);
    assert_eq!(hex(&confirm.parent_span_id), parent_id);
    let summarize = named("mfareset.v1.Users/SummarizeMfaReset");
    assert_eq!(summarize.len(), 1);
    assert_eq!(hex(&summarize[0].1.trace_id), trace_id);
    assert_eq!(
        text(&summarize[0].1.attributes, "customer_ids").as_deref(),
        Some(customer.id.as_str())
    );
    assert_eq!(
        text(&summarize[0].1.attributes, "reset_id").as_deref(),
        Some(reset.id.as_str())
    );
    // The resource names the service and its version.
    assert_eq!(text(resource, "service.name").as_deref(), Some("mfa-reset"));
    assert_eq!(
        text(resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // The engine's phases are children of the confirm's span.
    for phase in ["reset.lock", "reset.plan", "reset.apply", "db.commit"] {
        let children: Vec<_> = named(phase)
            .into_iter()
            .filter(|(_, s)| s.trace_id == confirm.trace_id)
            .collect();
        assert_eq!(children.len(), 1, "{phase}");
        let mut ancestor = by_id.get(&children[0].1.parent_span_id).copied();
        while let Some(span) = ancestor.filter(|s| s.span_id != confirm.span_id) {
            ancestor = by_id.get(&span.parent_span_id).copied();
        }
        assert!(
            ancestor.is_some(),
            "{phase} descends from the confirm's span"
        );
    }

    // Status: the caller's NOT_FOUND is not an error of this server; a passed deadline is.
    let get_user = named("mfareset.v1.Users/GetUser");
    assert_eq!(
        int(&get_user[0].1.attributes, "rpc.grpc.status_code"),
        Some(5)
    );
    assert_ne!(
        get_user[0].1.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let late: Vec<_> = named("mfareset.v1.Customers/CreateCustomer")
        .into_iter()
        .filter(|(_, s)| int(&s.attributes, "rpc.grpc.status_code") == Some(4))
        .collect();
    assert_eq!(
        late.len(),
        1,
        "the late CreateCustomer: {:?}",
        named("mfareset.v1.Customers/CreateCustomer")
    );
    assert_eq!(
        late[0].1.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    // Health checks are DEBUG: not exported at the INFO level.
    assert!(named("grpc.health.v1.Health/Check").is_empty());

    // Log lines carry the trace id; the confirm's "call finished" line has the caller's.
    let finished: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["message"] == "call finished")
        .collect();
    let confirm_line = finished
        .iter()
        .find(|l| l["span"]["otel.name"] == "mfareset.v1.Users/ConfirmMfaReset")
        .unwrap_or_else(|| panic!("no log line for the confirm in:\n{logs}"));
    assert_eq!(confirm_line["span"]["trace_id"], trace_id, "{confirm_line}");
    assert_eq!(confirm_line["code"], 0);
    assert!(
        finished.iter().all(|l| l["span"]["trace_id"].is_string()),
        "every call's line has a trace id"
    );

    // One INFO line per domain change: the user created (by id), the reset confirmed (with
    // its customers, users and methods).
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "change recorded"
            && l["action"] == "USER_CREATED"
            && l["user_id"] == user.id.as_str()),
        "{logs}"
    );
    let confirmed = lines
        .iter()
        .find(|l| l["message"] == "MFA reset confirmed")
        .unwrap_or_else(|| panic!("no line for the confirm in:\n{logs}"));
    assert_eq!(confirmed["reset_id"], reset.id.as_str());
    assert_eq!(confirmed["customer_ids"], customer.id.as_str());
    assert_eq!(confirmed["users"], 1);
    assert_eq!(confirmed["methods_deleted"], 1);

    // Nothing anywhere names the user's e-mail address or phone number.
    let exported = format!("{:?}", collector.0.lock().expect("collector lock"));
    for secret in [email, phone, "867 5309", "tracy.traced"] {
        assert!(!exported.contains(secret), "{secret} in the spans");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}
