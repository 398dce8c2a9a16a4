//! What the server offers beside the `mfareset.v1` RPCs themselves: health, reflection
//! (v1 and v1alpha), request ids, the message size limit, graceful shutdown, and the
//! binary's `serve` command from start to SIGTERM.

use std::{
    panic::AssertUnwindSafe,
    path::Path,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use futures::FutureExt;
use mfa_reset::{
    auth::{ServerSecret, mint_dev_token},
    config::Settings,
    proto::v1 as pb,
    server::SERVICE_NAMES,
    store,
};
use prost::Message;
use prost_types::FileDescriptorProto;
use sea_orm::{ConnectionTrait, DbBackend};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{
    ADMIN, AUDIENCE, Backend, ISSUER, POSTGRES_URL_VAR, PROVISIONER, TestApp, TestDatabase,
    TestSettings, assert_error, authed,
};

// Health, reflection and refused calls touch no storage: SQLite only. Request ids,
// the size limit and shutdown are checked around real queries, on both backends.

/// Like `backend_test!`, but on SQLite only (`<name>::sqlite`): for behaviour settled
/// before any query runs, where a second backend would test nothing new.
macro_rules! sqlite_only_test {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::helpers::run(crate::helpers::Backend::Sqlite, |app| {
                    Box::pin(super::$body(app))
                })
                .await
            }
        }
    };
}

/// The header the request id travels in, both ways.
const REQUEST_ID: &str = "x-request-id";

async fn health_of(channel: &Channel, service: &str) -> Result<ServingStatus, Status> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

// Health.

async fn health_reports_every_service_serving(app: &TestApp) {
    assert_eq!(
        SERVICE_NAMES,
        [
            "mfareset.v1.Customers",
            "mfareset.v1.Users",
            "mfareset.v1.AuthenticationMethods",
            "mfareset.v1.AuditLog",
        ]
    );
    for service in std::iter::once("").chain(SERVICE_NAMES) {
        let status = health_of(&app.channel, service)
            .await
            .unwrap_or_else(|status| panic!("health of {service:?}: {status:?}"));
        assert_eq!(status, ServingStatus::Serving, "health of {service:?}");
    }
}
sqlite_only_test!(
    health_reports_every_service_serving,
    health_reports_every_service_serving
);

// Reflection, v1 and v1alpha: the same questions, the same answers.

/// A reflection question, whatever the protocol version.
#[derive(Clone, Debug)]
enum Ask {
    ListServices,
    FileContainingSymbol(String),
    FileByFilename(String),
}

/// A reflection answer, whatever the protocol version.
#[derive(Debug)]
enum Answer {
    Services(Vec<String>),
    Files(Vec<Vec<u8>>),
}

/// Defines `mod $name { pub async fn ask(channel, asks) -> Vec<Answer> }` for one version
/// of the reflection protocol: every question on one stream, the answers in order.
macro_rules! reflection_client {
    ($name:ident, $($pb:ident)::+) => {
        mod $name {
            use $($pb)::+::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            use tonic::transport::Channel;

            use super::{Answer, Ask};

            pub async fn ask(channel: &Channel, asks: Vec<Ask>) -> Vec<Answer> {
                let count = asks.len();
                let requests: Vec<ServerReflectionRequest> = asks
                    .into_iter()
                    .map(|ask| ServerReflectionRequest {
                        host: String::new(),
                        message_request: Some(match ask {
                            Ask::ListServices => MessageRequest::ListServices(String::new()),
                            Ask::FileContainingSymbol(symbol) => {
                                MessageRequest::FileContainingSymbol(symbol)
                            }
                            Ask::FileByFilename(name) => MessageRequest::FileByFilename(name),
                        }),
                    })
                    .collect();
                let mut stream = ServerReflectionClient::new(channel.clone())
                    .server_reflection_info(tokio_stream::iter(requests))
                    .await
                    .expect("reflection call")
                    .into_inner();
                let mut answers = Vec::with_capacity(count);
                while let Some(response) = stream.message().await.expect("reflection answer") {
                    answers.push(match response.message_response.expect("an answer") {
                        MessageResponse::ListServicesResponse(list) => {
                            Answer::Services(list.service.into_iter().map(|s| s.name).collect())
                        }
                        MessageResponse::FileDescriptorResponse(files) => {
                            Answer::Files(files.file_descriptor_proto)
                        }
                        other => panic!("unexpected reflection answer {other:?}"),
                    });
                }
                assert_eq!(answers.len(), count, "one answer per question");
                answers
            }
        }
    };
}

reflection_client!(reflection_v1, tonic_reflection::pb::v1);
reflection_client!(reflection_v1alpha, tonic_reflection::pb::v1alpha);

#[derive(Clone, Copy, Debug)]
enum Version {
    V1,
    V1alpha,
}

async fn reflect(app: &TestApp, version: Version, asks: Vec<Ask>) -> Vec<Answer> {
    match version {
        Version::V1 => reflection_v1::ask(&app.channel, asks).await,
        Version::V1alpha => reflection_v1alpha::ask(&app.channel, asks).await,
    }
}

/// The decoded file descriptors of one answer.
fn files(answer: Answer) -> Vec<FileDescriptorProto> {
    let Answer::Files(files) = answer else {
        panic!("expected file descriptors, got {answer:?}");
    };
    assert!(!files.is_empty(), "no file descriptor in the answer");
    files
        .iter()
        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a FileDescriptorProto"))
        .collect()
}

async fn lists_every_service(app: &TestApp, version: Version) {
    let mut answers = reflect(app, version, vec![Ask::ListServices]).await;
    let Answer::Services(services) = answers.remove(0) else {
        panic!("expected the service list");
    };
    for expected in SERVICE_NAMES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(
            services.iter().any(|s| s == expected),
            "{version:?}: {expected} missing from {services:?}"
        );
    }
}

/// `FileContainingSymbol("mfareset.v1.Users")` gives the file of the Users service, with
/// SummarizeMfaReset and its doc comment; every file it imports, transitively, can be
/// fetched by name, so a tool can build every request without the `.proto` files.
async fn describes_users_with_docs(app: &TestApp, version: Version) {
    let symbol = Ask::FileContainingSymbol("mfareset.v1.Users".into());
    let mut answers = reflect(app, version, vec![symbol]).await;
    let found = files(answers.remove(0));
    let file = found
        .iter()
        .find(|f| f.package() == "mfareset.v1" && f.service.iter().any(|s| s.name() == "Users"))
        .unwrap_or_else(|| panic!("{version:?}: no file declares mfareset.v1.Users"));
    let (service_index, users) = file
        .service
        .iter()
        .enumerate()
        .find(|(_, s)| s.name() == "Users")
        .expect("Users");
    let method_index = users
        .method
        .iter()
        .position(|m| m.name() == "SummarizeMfaReset")
        .unwrap_or_else(|| panic!("{version:?}: Users has no SummarizeMfaReset"));
    let method = &users.method[method_index];
    assert_eq!(
        method.input_type(),
        ".mfareset.v1.UsersSummarizeMfaResetRequest"
    );
    assert_eq!(
        method.output_type(),
        ".mfareset.v1.UsersSummarizeMfaResetResponse"
    );

    // Source comments: FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2.
    let info = file
        .source_code_info
        .as_ref()
        .unwrap_or_else(|| panic!("{version:?}: no source_code_info, tools show no docs"));
    let comment_at = |path: &[i32]| {
        info.location
            .iter()
            .find(|l| l.path == path)
            .map(|l| l.leading_comments().to_string())
            .unwrap_or_default()
    };
    let service_index = i32::try_from(service_index).expect("index");
    let method_index = i32::try_from(method_index).expect("index");
    assert!(
        comment_at(&[6, service_index]).contains("users of a selection of customers"),
        "{version:?}: the Users service has no doc comment"
    );
    assert!(
        comment_at(&[6, service_index, 2, method_index]).contains("Plans an MFA reset"),
        "{version:?}: SummarizeMfaReset has no doc comment"
    );

    // Every import, transitively, by file name, as grpcurl fetches them.
    let mut known: Vec<String> = found.iter().map(|f| f.name().to_string()).collect();
    let mut wanted: Vec<String> = found.iter().flat_map(|f| f.dependency.clone()).collect();
    assert!(
        wanted.iter().any(|d| d == "mfareset/v1/mfa_reset.proto"),
        "{version:?}: {wanted:?}"
    );
    while let Some(name) = wanted.pop() {
        if known.contains(&name) {
            continue;
        }
        let mut answers = reflect(app, version, vec![Ask::FileByFilename(name.clone())]).await;
        let fetched = files(answers.remove(0));
        assert_eq!(fetched[0].name(), name, "{version:?}");
        wanted.extend(fetched.iter().flat_map(|f| f.dependency.clone()));
        known.extend(fetched.iter().map(|f| f.name().to_string()));
    }
    assert!(
        known
            .iter()
            .any(|k| k == "google/protobuf/field_mask.proto"),
        "{version:?}: {known:?}"
    );
}

/// The error details every status carries resolve by their canonical names, as tools that
/// decode `grpc-status-details-bin` ask for them (the symbol, then the file by name).
async fn serves_error_details_under_canonical_names(app: &TestApp, version: Version) {
    let mut answers = reflect(
        app,
        version,
        vec![
            Ask::FileContainingSymbol("google.rpc.ErrorInfo".into()),
            Ask::FileByFilename("google/rpc/error_details.proto".into()),
            Ask::FileByFilename("google/rpc/status.proto".into()),
            Ask::FileContainingSymbol("mfareset.v1.ErrorReason".into()),
        ],
    )
    .await;
    let by_symbol = files(answers.remove(0));
    assert_eq!(
        by_symbol[0].name(),
        "google/rpc/error_details.proto",
        "{version:?}"
    );
    let by_name = files(answers.remove(0));
    assert!(
        by_name[0]
            .message_type
            .iter()
            .any(|m| m.name() == "PreconditionFailure"),
        "{version:?}"
    );
    assert_eq!(
        files(answers.remove(0))[0].name(),
        "google/rpc/status.proto"
    );
    let reasons = files(answers.remove(0));
    assert_eq!(reasons[0].name(), "mfareset/v1/error_reason.proto");
}

async fn reflection_v1_serves_error_details_under_canonical_names(app: &TestApp) {
    serves_error_details_under_canonical_names(app, Version::V1).await;
}
sqlite_only_test!(
    reflection_v1_serves_error_details_under_canonical_names,
    reflection_v1_serves_error_details_under_canonical_names
);

async fn reflection_v1alpha_serves_error_details_under_canonical_names(app: &TestApp) {
    serves_error_details_under_canonical_names(app, Version::V1alpha).await;
}
sqlite_only_test!(
    reflection_v1alpha_serves_error_details_under_canonical_names,
    reflection_v1alpha_serves_error_details_under_canonical_names
);

async fn reflection_v1_lists_every_service(app: &TestApp) {
    lists_every_service(app, Version::V1).await;
}
sqlite_only_test!(
    reflection_v1_lists_every_service,
    reflection_v1_lists_every_service
);

async fn reflection_v1alpha_lists_every_service(app: &TestApp) {
    lists_every_service(app, Version::V1alpha).await;
}
sqlite_only_test!(
    reflection_v1alpha_lists_every_service,
    reflection_v1alpha_lists_every_service
);

async fn reflection_v1_describes_users_with_docs(app: &TestApp) {
    describes_users_with_docs(app, Version::V1).await;
}
sqlite_only_test!(
    reflection_v1_describes_users_with_docs,
    reflection_v1_describes_users_with_docs
);

async fn reflection_v1alpha_describes_users_with_docs(app: &TestApp) {
    describes_users_with_docs(app, Version::V1alpha).await;
}
sqlite_only_test!(
    reflection_v1alpha_describes_users_with_docs,
    reflection_v1alpha_describes_users_with_docs
);

// Request ids.

fn with_request_id<T>(mut request: Request<T>, id: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert(REQUEST_ID, id.parse().expect("header value"));
    request
}

fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get(REQUEST_ID)
        .unwrap_or_else(|| panic!("no {REQUEST_ID} in {metadata:?}"))
        .to_str()
        .expect("ASCII request id")
        .to_string()
}

async fn request_id_sent_by_the_client_comes_back(app: &TestApp) {
    let request = authed(pb::ListCustomersRequest::default(), &app.token(ADMIN));
    let response = app
        .customers()
        .list_customers(with_request_id(request, "my-id-123"))
        .await
        .expect("list customers");
    assert_eq!(request_id_of(response.metadata()), "my-id-123");
}
backend_test!(
    request_id_sent_by_the_client_comes_back,
    request_id_sent_by_the_client_comes_back
);

async fn request_id_is_generated_when_the_client_sends_none(app: &TestApp) {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let request = authed(pb::ListCustomersRequest::default(), &app.token(ADMIN));
        let response = app
            .customers()
            .list_customers(request)
            .await
            .expect("list customers");
        let id = request_id_of(response.metadata());
        assert!(!id.is_empty());
        Uuid::parse_str(&id).unwrap_or_else(|_| panic!("generated id {id:?} is not a UUID"));
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1], "every call gets its own id");
}
backend_test!(
    request_id_is_generated_when_the_client_sends_none,
    request_id_is_generated_when_the_client_sends_none
);

async fn request_id_comes_back_on_errors(app: &TestApp) {
    let unauthenticated = Request::new(pb::ListCustomersRequest::default());
    let result = app
        .customers()
        .list_customers(with_request_id(unauthenticated, "failing-call-7"))
        .await;
    let status = assert_error(result, Code::Unauthenticated, "TOKEN_MISSING");
    assert_eq!(request_id_of(status.metadata()), "failing-call-7");

    let result = app
        .customers()
        .list_customers(pb::ListCustomersRequest::default())
        .await;
    let status = assert_error(result, Code::Unauthenticated, "TOKEN_MISSING");
    assert!(!request_id_of(status.metadata()).is_empty());

    // An error from a handler, past the auth layer, too.
    let request = authed(
        pb::ListCustomersRequest {
            page_size: -1,
            ..Default::default()
        },
        &app.token(ADMIN),
    );
    let result = app
        .customers()
        .list_customers(with_request_id(request, "failing-call-8"))
        .await;
    let status = assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(request_id_of(status.metadata()), "failing-call-8");
}
backend_test!(
    request_id_comes_back_on_errors,
    request_id_comes_back_on_errors
);

// The reset RPCs sit behind the same auth layer as every other `mfareset.v1` RPC.

async fn reset_rpcs_require_a_token(app: &TestApp) {
    let mut users = app.users();
    let mut methods = app.methods();
    let refused = |result: Result<(), Status>, rpc: &str| {
        let status = assert_error(result, Code::Unauthenticated, "TOKEN_MISSING");
        assert!(!status.message().is_empty(), "{rpc}: {status:?}");
    };
    refused(
        users
            .summarize_mfa_reset(pb::UsersSummarizeMfaResetRequest::default())
            .await
            .map(drop),
        "Users.SummarizeMfaReset",
    );
    refused(
        users
            .confirm_mfa_reset(pb::UsersConfirmMfaResetRequest::default())
            .await
            .map(drop),
        "Users.ConfirmMfaReset",
    );
    refused(
        users
            .cancel_mfa_reset(pb::CancelMfaResetRequest::default())
            .await
            .map(drop),
        "Users.CancelMfaReset",
    );
    refused(
        users
            .get_mfa_reset(pb::GetMfaResetRequest::default())
            .await
            .map(drop),
        "Users.GetMfaReset",
    );
    refused(
        users
            .list_mfa_reset_items(pb::ListMfaResetItemsRequest::default())
            .await
            .map(drop),
        "Users.ListMfaResetItems",
    );
    refused(
        methods
            .summarize_mfa_reset(pb::AuthenticationMethodsSummarizeMfaResetRequest::default())
            .await
            .map(drop),
        "AuthenticationMethods.SummarizeMfaReset",
    );
    refused(
        methods
            .confirm_mfa_reset(pb::AuthenticationMethodsConfirmMfaResetRequest::default())
            .await
            .map(drop),
        "AuthenticationMethods.ConfirmMfaReset",
    );
}
sqlite_only_test!(reset_rpcs_require_a_token, reset_rpcs_require_a_token);

// The message size limit.

async fn oversized_request_is_refused_and_the_server_keeps_serving(app: &TestApp) {
    let token = app.token(ADMIN);
    let request = pb::ListUsersRequest {
        customer_ids: vec![Uuid::now_v7().to_string()],
        query: "x".repeat(5 * 1024 * 1024),
        ..Default::default()
    };
    let result = app.users().list_users(authed(request, &token)).await;
    // Over the 4 MiB limit: RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE), with an ErrorInfo.
    let status = assert_error(result, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("info");
    assert_eq!(
        info.metadata["max_message_bytes"],
        (4 * 1024 * 1024).to_string()
    );

    // The same channel still works, for the same RPC and others.
    let request = pb::ListUsersRequest {
        customer_ids: vec![Uuid::now_v7().to_string()],
        query: "x".repeat(100),
        ..Default::default()
    };
    let result = app.users().list_users(authed(request, &token)).await;
    assert_error(result, Code::PermissionDenied, "NO_ROLE");
    app.customers()
        .list_customers(authed(pb::ListCustomersRequest::default(), &token))
        .await
        .expect("the server keeps serving");
    assert_eq!(
        health_of(&app.channel, "").await.expect("health"),
        ServingStatus::Serving
    );
}
backend_test!(
    oversized_request_is_refused_and_the_server_keeps_serving,
    oversized_request_is_refused_and_the_server_keeps_serving
);

// Graceful shutdown.

mod graceful_shutdown_lets_an_in_flight_call_finish {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::graceful_shutdown_lets_an_in_flight_call_finish(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::graceful_shutdown_lets_an_in_flight_call_finish(Backend::Postgres).await;
    }
}

/// Builds its own app (it needs to stop it mid-test), runs the scenario, and cleans up
/// whether it passed or not.
async fn graceful_shutdown_lets_an_in_flight_call_finish(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        eprintln!("{POSTGRES_URL_VAR} is not set: skipping the PostgreSQL run of this test");
        return;
    };
    let settings = Settings::default_for_tests(database.url.clone());
    let secret_dir = settings.secret_file.parent().map(Path::to_path_buf);
    let mut app = TestApp::spawn_with(settings).await;
    let outcome = AssertUnwindSafe(in_flight_call_survives_shutdown(&mut app))
        .catch_unwind()
        .await;
    drop(app);
    database.drop_now().await;
    if let Some(dir) = secret_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The first health check on `channel` that fails, once shutdown has begun. A check that
/// was already under way may still be answered, NOT_SERVING; SERVING never.
async fn first_refusal(channel: &Channel) -> Status {
    let started = Instant::now();
    loop {
        match health_of(channel, "").await {
            Err(status) => return status,
            Ok(ServingStatus::NotServing) => {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "new calls still answered 1 s after shutdown began"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(other) => panic!("health during shutdown: {other:?}"),
        }
    }
}

/// Whether `err` comes down to a refused TCP connection.
fn is_connection_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = err.source();
    }
    false
}

async fn in_flight_call_survives_shutdown(app: &mut TestApp) {
    // Hold the write lock CreateCustomer needs, so that the call stays in flight.
    let lock = store::begin_write(&app.db).await.expect("begin");
    if app.db.get_database_backend() == DbBackend::Postgres {
        lock.execute_unprepared("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock customers");
    }

    // A watcher of health, from before the shutdown.
    let mut watch = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch health")
        .into_inner();
    let first = watch.message().await.expect("health").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let mut customers = app.customers();
    let create = authed(
        pb::CreateCustomerRequest {
            request_id: Default::default(),
            customer: Some(pb::Customer {
                display_name: "In Flight Co".into(),
                mfa_policy: pb::MfaPolicy::Enforced.into(),
                enabled_method_kinds: vec![pb::MethodKind::Phone.into()],
                ..Default::default()
            }),
        },
        &app.token(PROVISIONER),
    );
    let call = tokio::spawn(async move { customers.create_customer(create).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call.is_finished(),
        "CreateCustomer should wait for the lock"
    );

    let channel = app.channel.clone();
    let endpoint = app.endpoint.clone();
    let meanwhile = async move {
        // Health turns NOT_SERVING as soon as shutdown starts.
        let update = tokio::time::timeout(Duration::from_secs(2), watch.message())
            .await
            .expect("a health update within 2 s")
            .expect("health update")
            .expect("a status");
        assert_eq!(update.status(), ServingStatus::NotServing);
        drop(watch);
        assert!(!call.is_finished(), "CreateCustomer is still in flight");

        // New calls are refused: the open connection has been told to go away
        // (CANCELLED, or NOT_SERVING for a call that was already on its way), and the
        // listener is closed (UNAVAILABLE: connection refused). These are transport
        // errors, produced on the client side: there is no server answer to carry an
        // ErrorInfo.
        let refused = first_refusal(&channel).await;
        assert!(
            matches!(refused.code(), Code::Cancelled | Code::Unavailable),
            "{refused:?}"
        );
        let again = health_of(&channel, "")
            .await
            .expect_err("a second new call is refused too");
        assert_eq!(again.code(), Code::Unavailable, "{again:?}");
        let fresh = Channel::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect_err("a new connection is refused");
        assert!(is_connection_refused(&fresh), "{fresh:?}");
        assert!(!call.is_finished(), "CreateCustomer is still in flight");

        store::commit(lock).await.expect("release the lock");
        call.await.expect("call task")
    };
    let (stopped, created) = tokio::time::timeout(
        Duration::from_secs(10),
        futures::future::join(app.shutdown(), meanwhile),
    )
    .await
    .expect("shutdown within 10 s");
    let created = created
        .expect("the in-flight call completes")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(created.display_name, "In Flight Co");
    stopped.expect("the server stops cleanly");
    let stored = store::customers::find_by_name(&app.db, "In Flight Co")
        .await
        .expect("read customers");
    assert!(stored.is_some(), "the in-flight call's write is committed");
}

// The binary.

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Waits up to `limit` for the child to exit.
async fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return Some(status);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_until_sigterm_and_exits_cleanly() {
    let root = std::env::temp_dir().join(format!("mfa-reset-bin-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&root).expect("temp dir");
    // Not created beforehand: `serve` creates it on first start.
    let data_dir = root.join("data");
    let log_path = root.join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfa-reset"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["serve", "--listen", &addr])
        .env_remove("MFA_RESET_DATABASE_URL")
        .env_remove("MFA_RESET_SECRET_FILE")
        .env_remove("MFA_RESET_JWT_PUBLIC_KEYS")
        .env_remove("MFA_RESET_JWKS_FILE")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start mfa-reset serve");

    let outcome = AssertUnwindSafe(serve_then_terminate(&mut child, &addr, &data_dir))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        eprintln!("--- mfa-reset serve log ---\n{log}");
    }
    let _ = std::fs::remove_dir_all(&root);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn serve_then_terminate(child: &mut Child, addr: &str, data_dir: &Path) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!("mfa-reset serve exited before listening: {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "mfa-reset serve did not listen on {addr} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    assert_eq!(
        health_of(&channel, "").await.expect("health"),
        ServingStatus::Serving
    );

    // First start created the secret (owner-only) and the database in the data directory.
    let secret_file = data_dir.join("secret.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_file)
            .expect("secret.key exists")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "secret.key mode");
    assert!(
        data_dir.join("mfa-reset.db").is_file(),
        "mfa-reset.db exists"
    );
    // And verifies tokens signed with that secret.
    let secret = ServerSecret::load_or_create(&secret_file).expect("read secret");
    let token = mint_dev_token(
        &secret,
        "binary-tester",
        Duration::from_secs(60),
        ISSUER,
        AUDIENCE,
    )
    .expect("token");
    pb::customers_client::CustomersClient::new(channel.clone())
        .list_customers(authed(pb::ListCustomersRequest::default(), &token))
        .await
        .expect("a token from the data directory's secret is accepted");

    // SIGTERM, with the client's connection still open: a clean, prompt exit.
    let pid = child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill}");
    let status = wait_for_exit(child, Duration::from_secs(10))
        .await
        .expect("mfa-reset exits within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    drop(channel);
    assert!(secret_file.is_file(), "secret.key is kept");
    assert!(
        data_dir.join("mfa-reset.db").is_file(),
        "mfa-reset.db is kept"
    );
}
