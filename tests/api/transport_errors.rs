//! Statuses that no handler makes, through a real server: broken gRPC frames, compression,
//! sizes, unknown paths, deadlines and request ids. Each carries an `ErrorInfo` of our domain
//! (`src/layers/complete.rs` turns tonic's into ours, matching on tonic's messages: these
//! tests produce every one of them, so a tonic upgrade that rewords one fails here).
//!
//! The requests are raw HTTP/2 on the test's channel, so that a test can send what no
//! generated client would.

use std::io::Write as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mfa_reset::{proto::v1 as pb, store};
use sea_orm::{ConnectionTrait, DbBackend};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Service, ServiceExt};

use crate::helpers::*;

/// A gRPC length-prefixed message: the compressed flag, the length it claims, the bytes.
fn frame(flag: u8, claimed_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&claimed_len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A well-formed frame of `payload`.
fn message(payload: &[u8]) -> Vec<u8> {
    frame(0, payload.len() as u32, payload)
}

/// POSTs `body` to `path` as gRPC with `headers`, and returns the response headers and the
/// call's status (from the headers of a trailers-only answer, else from the trailers).
async fn raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (http::HeaderMap, Status) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .expect("request");
    let mut channel = app.channel.clone();
    let response = channel
        .ready()
        .await
        .expect("channel ready")
        .call(request)
        .await
        .expect("an HTTP response");
    let (parts, body) = response.into_parts();
    let trailers = body
        .collect()
        .await
        .expect("response body")
        .trailers()
        .cloned();
    let status = Status::from_header_map(&parts.headers)
        .or_else(|| trailers.as_ref().and_then(Status::from_header_map))
        .expect("a grpc-status");
    (parts.headers, status)
}

fn bearer(app: &TestApp, subject: &str) -> String {
    format!("Bearer {}", app.token(subject))
}

fn reason(status: &Status) -> String {
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "mfa-reset.internal", "{status:?}");
    info.reason
}

const LIST_CUSTOMERS: &str = "/mfareset.v1.Customers/ListCustomers";

async fn broken_frames_are_malformed_requests(app: &TestApp) {
    let auth = bearer(app, ADMIN);
    let auth = [("authorization", auth.as_str())];
    // The well-formed request, for contrast: an empty ListCustomersRequest.
    let (_, ok) = raw(app, LIST_CUSTOMERS, &auth, message(&[])).await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");

    let cases = [
        ("no message at all", Vec::new()),
        ("a frame shorter than it claims", frame(0, 10, b"abc")),
        ("half a frame header", vec![0, 0]),
        ("compressed flag without grpc-encoding", frame(1, 3, b"abc")),
        ("an undefined compressed flag", frame(2, 0, b"")),
        ("a body that does not decode", message(&[0xff, 0xff, 0xff])),
    ];
    for (case, body) in cases {
        let (_, status) = raw(app, LIST_CUSTOMERS, &auth, body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(reason(&status), "MALFORMED_REQUEST", "{case}");
        assert!(!status.message().contains("protocol"), "{case}: {status:?}");
    }
}
backend_test!(broken_frames_are_malformed_requests);

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

async fn compressed_requests_are_decompressed_within_the_size_limit(app: &TestApp) {
    let auth = bearer(app, ADMIN);
    let gzip_headers = [("authorization", auth.as_str()), ("grpc-encoding", "gzip")];
    // A gzip request is served like any other.
    let request = prost::Message::encode_to_vec(&pb::ListCustomersRequest {
        page_size: 5,
        ..Default::default()
    });
    let compressed = gzip(&request);
    let (_, ok) = raw(
        app,
        LIST_CUSTOMERS,
        &gzip_headers,
        frame(1, compressed.len() as u32, &compressed),
    )
    .await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");

    // 5 MiB that compress to a few KiB: the limit applies to what it decompresses to.
    let bomb = gzip(&vec![0u8; 5 * 1024 * 1024]);
    let (_, status) = raw(
        app,
        LIST_CUSTOMERS,
        &gzip_headers,
        frame(1, bomb.len() as u32, &bomb),
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");

    // Bytes that are not gzip.
    let (_, status) = raw(app, LIST_CUSTOMERS, &gzip_headers, frame(1, 4, b"junk")).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MALFORMED_REQUEST");

    // An encoding the server does not speak.
    let brotli = [("authorization", auth.as_str()), ("grpc-encoding", "br")];
    let (_, status) = raw(app, LIST_CUSTOMERS, &brotli, frame(1, 4, b"junk")).await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(reason(&status), "UNIMPLEMENTED");
}
backend_test!(compressed_requests_are_decompressed_within_the_size_limit);

async fn unknown_paths_need_a_token_and_are_unimplemented(app: &TestApp) {
    let auth = bearer(app, ADMIN);
    for path in [
        "/mfareset.v1.Customers/NoSuchRpc",
        "/mfareset.v2.Customers/ListCustomers",
        "/grpc.channelz.v1.Channelz/GetTopChannels",
    ] {
        // Without a token, nothing but health and reflection answers.
        let (_, status) = raw(app, path, &[], message(&[])).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
        assert_eq!(reason(&status), "TOKEN_MISSING", "{path}");
        let (_, status) = raw(app, path, &[("authorization", &auth)], message(&[])).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert_eq!(reason(&status), "UNIMPLEMENTED", "{path}");
    }
    // Health answers without one.
    let (_, status) = raw(app, "/grpc.health.v1.Health/Check", &[], message(&[])).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
}
backend_test!(unknown_paths_need_a_token_and_are_unimplemented);

async fn open_services_keep_their_own_codes_with_an_error_info(app: &TestApp) {
    let status = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(reason(&status), "NOT_FOUND");
    // A health request that does not decode: the client's mistake, not ours.
    let (_, status) = raw(
        app,
        "/grpc.health.v1.Health/Check",
        &[],
        message(&[0xff, 0xff]),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
}
backend_test!(open_services_keep_their_own_codes_with_an_error_info);

async fn a_call_past_its_deadline_is_deadline_exceeded_and_its_retry_is_exactly_once(
    app: &TestApp,
) {
    // Hold the write lock CreateCustomer needs, so that the call outlives its deadline.
    let lock = store::begin_write(&app.db).await.expect("begin");
    if app.db.get_database_backend() == DbBackend::Postgres {
        lock.execute_unprepared("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock customers");
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let create = || {
        let mut request = authed(
            pb::CreateCustomerRequest {
                request_id: request_id.clone(),
                customer: Some(pb::Customer {
                    display_name: "Deadline Co".into(),
                    mfa_policy: pb::MfaPolicy::Enforced.into(),
                    enabled_method_kinds: vec![pb::MethodKind::Phone.into()],
                    ..Default::default()
                }),
            },
            &app.token(PROVISIONER),
        );
        // The deadline as a client sends it (tonic's channel enforces it too: the server's
        // answer must come first).
        request
            .metadata_mut()
            .insert("grpc-timeout", "2S".parse().expect("timeout"));
        request
    };
    let started = std::time::Instant::now();
    let status = app
        .customers()
        .create_customer(create())
        .await
        .expect_err("the call waits for the lock past its deadline");
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "{elapsed:?} {status:?}"
    );
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "DEADLINE_EXCEEDED");
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("info");
    assert_eq!(info.metadata["timeout_ms"], "2000");

    // PostgreSQL: the abandoned call's transaction gave up waiting for the lock at the
    // deadline too (its lock_timeout), rather than queueing until the lock is released.
    if app.db.get_database_backend() == DbBackend::Postgres {
        let since = std::time::Instant::now();
        loop {
            if waiting_for_locks(&app.db).await == 0 {
                break;
            }
            assert!(
                since.elapsed() < std::time::Duration::from_secs(2),
                "the cut-off call still waits for the lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // Once the lock is gone, the retry with the same request id creates the customer once.
    store::commit(lock).await.expect("release the lock");
    let first = app
        .customers()
        .create_customer(create())
        .await
        .expect("retry");
    let again = app
        .customers()
        .create_customer(create())
        .await
        .expect("retry");
    assert_eq!(first.get_ref().customer, again.get_ref().customer);
    let named = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token(PROVISIONER),
        ))
        .await
        .expect("list")
        .into_inner()
        .customers
        .into_iter()
        .filter(|c| c.display_name == "Deadline Co")
        .count();
    assert_eq!(named, 1);
}
backend_test!(a_call_past_its_deadline_is_deadline_exceeded_and_its_retry_is_exactly_once);

async fn only_short_safe_request_ids_reach_the_audit_log(app: &TestApp) {
    let customer = app
        .create_customer("Ids Co", pb::MfaPolicy::Enforced, &[pb::MethodKind::Phone])
        .await;
    app.grant(ADMIN, Some(&customer.id), "READER").await;
    let create_user = |name: &str, request_id: &str| {
        let mut request = authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    customer_id: customer.id.clone(),
                    display_name: name.into(),
                    email: format!("{}@example.com", name.to_lowercase()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &app.token(PROVISIONER),
        );
        request
            .metadata_mut()
            .insert("x-request-id", request_id.parse().expect("ascii"));
        request
    };
    let kept = "billing:ticket-4711.retry_2";
    let long = "x".repeat(64 * 1024);
    let mut echoed = Vec::new();
    for (name, id) in [("Kept", kept), ("Long", long.as_str()), ("Odd", "a b;c")] {
        let response = app
            .users()
            .create_user(create_user(name, id))
            .await
            .expect("create user");
        let echo = response.metadata().get("x-request-id").expect("echoed id");
        echoed.push(echo.to_str().expect("ascii").to_string());
    }
    assert_eq!(echoed[0], kept);
    for minted in &echoed[1..] {
        assert!(uuid::Uuid::parse_str(minted).is_ok(), "{minted}");
    }
    let events = audit_events(app, &[&customer.id], pb::AuditAction::UserCreated, "").await;
    let mut ids: Vec<_> = events.iter().map(|e| e.correlation_id.clone()).collect();
    ids.sort();
    echoed.sort();
    assert_eq!(
        ids, echoed,
        "the audit rows carry the ids the responses named"
    );
    assert!(ids.iter().all(|id| id.len() <= 128));
}
backend_test!(only_short_safe_request_ids_reach_the_audit_log);
