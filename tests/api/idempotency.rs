//! Idempotent writes (AIP-155): a retry with the same `request_id` by the same principal
//! returns the first answer and changes nothing more; the same id with another request is
//! INVALID_ARGUMENT; a failed call stores nothing; concurrent duplicates apply once, on one
//! server or on two.

use futures::future::join_all;
use mfa_reset::proto::v1::{
    self as pb, authentication_methods_client::AuthenticationMethodsClient,
    customers_client::CustomersClient, users_client::UsersClient,
};
use sea_orm::ConnectionTrait;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{helpers::*, replicas::*};

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

fn create_user_request(customer_id: &str, name: &str, request_id: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        user: Some(pb::User {
            customer_id: customer_id.into(),
            display_name: name.into(),
            email: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

async fn create_user(
    channel: &Channel,
    token: &str,
    request: pb::CreateUserRequest,
) -> Result<pb::CreateUserResponse, tonic::Status> {
    UsersClient::new(channel.clone())
        .create_user(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

fn register_request(user: &pb::User, request_id: &str) -> pb::RegisterAuthenticationMethodRequest {
    pb::RegisterAuthenticationMethodRequest {
        customer_id: user.customer_id.clone(),
        user_id: user.id.clone(),
        kind: pb::MethodKind::Fido2.into(),
        scope: pb::MethodScope::User.into(),
        label: "YubiKey 5C".into(),
        secret_ref: String::new(),
        request_id: request_id.into(),
    }
}

async fn register(
    channel: &Channel,
    token: &str,
    request: pb::RegisterAuthenticationMethodRequest,
) -> Result<pb::RegisterAuthenticationMethodResponse, tonic::Status> {
    AuthenticationMethodsClient::new(channel.clone())
        .register_authentication_method(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

fn summarize_request(
    customer_id: &str,
    users: &[&pb::User],
    request_id: &str,
) -> pb::UsersSummarizeMfaResetRequest {
    pb::UsersSummarizeMfaResetRequest {
        customer_ids: vec![customer_id.into()],
        target: users_by_id(users.iter().map(|u| u.id.clone()).collect()),
        reason: "retried summary".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn summarize(
    channel: &Channel,
    token: &str,
    request: pb::UsersSummarizeMfaResetRequest,
) -> Result<pb::UsersSummarizeMfaResetResponse, tonic::Status> {
    UsersClient::new(channel.clone())
        .summarize_mfa_reset(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// Every user of a customer, by name, as PROVISIONER sees them.
async fn user_names(channel: &Channel, token: &str, customer_id: &str) -> Vec<String> {
    let users = UsersClient::new(channel.clone())
        .list_users(authed(
            pb::ListUsersRequest {
                customer_ids: vec![customer_id.into()],
                page_size: 500,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("list users")
        .into_inner()
        .users;
    users.into_iter().map(|u| u.display_name).collect()
}

async fn method_count(channel: &Channel, token: &str, user: &pb::User) -> usize {
    AuthenticationMethodsClient::new(channel.clone())
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                customer_ids: vec![user.customer_id.clone()],
                user_id: user.id.clone(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("list methods")
        .into_inner()
        .authentication_methods
        .len()
}

async fn reset_ids(channel: &Channel, token: &str, customer_id: &str) -> Vec<String> {
    UsersClient::new(channel.clone())
        .list_mfa_resets(authed(
            pb::ListMfaResetsRequest {
                customer_ids: vec![customer_id.into()],
                page_size: 500,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("list resets")
        .into_inner()
        .mfa_resets
        .into_iter()
        .map(|r| r.id)
        .collect()
}

backend_test!(a_retry_with_the_same_request_id_gets_the_first_answer_and_makes_nothing_new);
async fn a_retry_with_the_same_request_id_gets_the_first_answer_and_makes_nothing_new(
    app: &TestApp,
) {
    let w = world(app).await;
    let provisioner = app.token(PROVISIONER);
    let before = user_names(&app.channel, &provisioner, &w.enforced.id).await;

    // CreateUser: the retry answers exactly as the first call did, even after the user
    // changed, and no second user appears.
    let key = new_id();
    let request = create_user_request(&w.enforced.id, "Retry Rita", &key);
    let first = create_user(&app.channel, &provisioner, request.clone())
        .await
        .expect("first call");
    let user = first.user.clone().expect("user");
    app.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    display_name: "Rita Renamed".into(),
                    ..user.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
                request_id: String::new(),
            },
            &provisioner,
        ))
        .await
        .expect("rename");
    let retried = create_user(&app.channel, &provisioner, request)
        .await
        .expect("the retry succeeds");
    assert_eq!(
        retried, first,
        "the retry gets the first answer, byte for byte"
    );
    let after = user_names(&app.channel, &provisioner, &w.enforced.id).await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "one user, not two: {after:?}"
    );
    let created = audit_events(
        app,
        &[&w.enforced.id],
        pb::AuditAction::UserCreated,
        &user.id,
    )
    .await;
    assert_eq!(created.len(), 1, "one USER_CREATED event");

    // RegisterAuthenticationMethod: one method, the same answer.
    let key = new_id();
    let first = register(&app.channel, &provisioner, register_request(&user, &key))
        .await
        .expect("first registration");
    let retried = register(&app.channel, &provisioner, register_request(&user, &key))
        .await
        .expect("retried registration");
    assert_eq!(retried, first);
    assert_eq!(method_count(&app.channel, &provisioner, &user).await, 1);

    // SummarizeMfaReset: one stored summary, the same reset, etag and first page.
    let admin = app.token(ADMIN);
    let key = new_id();
    let request = summarize_request(&w.enforced.id, &[&user, &w.alice], &key);
    let first = summarize(&app.channel, &admin, request.clone())
        .await
        .expect("first summary");
    let retried = summarize(&app.channel, &admin, request)
        .await
        .expect("retried summary");
    assert_eq!(retried, first);
    let resets = reset_ids(&app.channel, &admin, &w.enforced.id).await;
    assert_eq!(
        resets,
        [first.mfa_reset.expect("reset").id],
        "one stored summary"
    );
}

backend_test!(the_same_request_id_for_another_request_is_invalid_argument);
async fn the_same_request_id_for_another_request_is_invalid_argument(app: &TestApp) {
    let w = world(app).await;
    let provisioner = app.token(PROVISIONER);
    let key = new_id();
    let first = create_user(
        &app.channel,
        &provisioner,
        create_user_request(&w.enforced.id, "Key Holder", &key),
    )
    .await
    .expect("first call");
    let other = create_user(
        &app.channel,
        &provisioner,
        create_user_request(&w.enforced.id, "Someone Else", &key),
    )
    .await;
    let status = assert_error(other, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert_eq!(violated_fields(&status), ["request_id"]);
    let names = user_names(&app.channel, &provisioner, &w.enforced.id).await;
    assert!(!names.contains(&"Someone Else".to_string()), "{names:?}");

    // The key is per RPC and per principal: the same id elsewhere is a new call.
    let user = first.user.expect("user");
    register(&app.channel, &provisioner, register_request(&user, &key))
        .await
        .expect("the same id on another RPC is another key");
    app.grant("second-provisioner", None, "PROVISIONER").await;
    let theirs = create_user(
        &app.channel,
        &app.token("second-provisioner"),
        create_user_request(&w.enforced.id, "Someone Else", &key),
    )
    .await
    .expect("the same id by another principal is another key");
    assert_ne!(theirs.user.expect("user").id, user.id);

    // A malformed id is refused before anything happens.
    let malformed = create_user(
        &app.channel,
        &provisioner,
        create_user_request(&w.enforced.id, "Malformed Key", "42"),
    )
    .await;
    let status = assert_error(malformed, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["request_id"]);
}

backend_test!(a_failed_call_remembers_nothing_so_its_retry_runs_again);
async fn a_failed_call_remembers_nothing_so_its_retry_runs_again(app: &TestApp) {
    let w = world(app).await;
    let provisioner = app.token(PROVISIONER);
    // Alice's e-mail is taken: the first call fails, and its key is not kept.
    let key = new_id();
    let request = pb::CreateUserRequest {
        user: Some(pb::User {
            customer_id: w.enforced.id.clone(),
            display_name: "Alice Again".into(),
            email: w.alice.email.clone(),
            ..Default::default()
        }),
        request_id: key.clone(),
    };
    let failed = create_user(&app.channel, &provisioner, request.clone()).await;
    assert_error(failed, Code::AlreadyExists, "ALREADY_EXISTS");
    // Free the address; the retry with the same id now does the work.
    app.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    email: "alice.moved@example.com".into(),
                    ..w.alice.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                request_id: String::new(),
            },
            &provisioner,
        ))
        .await
        .expect("free the e-mail");
    let retried = create_user(&app.channel, &provisioner, request)
        .await
        .expect("the retry of a failed call runs again");
    assert_eq!(retried.user.expect("user").email, w.alice.email);
}

backend_test!(thirty_two_identical_calls_at_once_apply_once);
async fn thirty_two_identical_calls_at_once_apply_once(app: &TestApp) {
    const CALLS: usize = 32;
    let w = world(app).await;
    let provisioner = app.token(PROVISIONER);
    let before = user_names(&app.channel, &provisioner, &w.enforced.id).await;
    let key = new_id();
    let request = create_user_request(&w.enforced.id, "Crowd Carla", &key);
    let answers =
        join_all((0..CALLS).map(|_| create_user(&app.channel, &provisioner, request.clone())))
            .await;
    let answers: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("every duplicate succeeds"))
        .collect();
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one answer for all"
    );
    let after = user_names(&app.channel, &provisioner, &w.enforced.id).await;
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    let user = answers[0].user.clone().expect("user");

    let key = new_id();
    let answers = join_all(
        (0..CALLS).map(|_| register(&app.channel, &provisioner, register_request(&user, &key))),
    )
    .await;
    let first = answers[0].clone().expect("registered");
    assert!(answers.into_iter().all(|a| a.expect("ok") == first));
    assert_eq!(method_count(&app.channel, &provisioner, &user).await, 1);

    let admin = app.token(ADMIN);
    let key = new_id();
    let request = summarize_request(&w.enforced.id, &[&user], &key);
    let answers =
        join_all((0..CALLS).map(|_| summarize(&app.channel, &admin, request.clone()))).await;
    let first = answers[0].clone().expect("summarized");
    assert!(answers.into_iter().all(|a| a.expect("ok") == first));
    assert_eq!(
        reset_ids(&app.channel, &admin, &w.enforced.id).await.len(),
        1
    );
}

backend_test!(a_key_older_than_a_day_is_forgotten);
async fn a_key_older_than_a_day_is_forgotten(app: &TestApp) {
    let w = world(app).await;
    let provisioner = app.token(PROVISIONER);
    let key = new_id();
    let request = create_user_request(&w.enforced.id, "Old Key", &key);
    let first = create_user(&app.channel, &provisioner, request.clone())
        .await
        .expect("first call");
    // A day and an hour later (the clock of the key row moved back), the same id with
    // another request is a new call, not a reuse.
    backdate_key(app, &key).await;
    let later = create_user(
        &app.channel,
        &provisioner,
        create_user_request(&w.enforced.id, "New Key Owner", &key),
    )
    .await
    .expect("an expired key is free again");
    assert_ne!(later.user, first.user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_server_process_gets_the_first_answer() {
    with_two_replicas(|pair| Box::pin(retry_on_the_other_replica(pair))).await;
}

async fn retry_on_the_other_replica(pair: &mut Pair) {
    let (provisioner, admin) = ("replica-provisioner", "replica-admin");
    pair.operator(&[
        "grant",
        "--subject",
        provisioner,
        "--customer",
        "*",
        "--role",
        "PROVISIONER",
    ]);
    let a = pair.replicas[0].channel().await;
    let b = pair.replicas[1].channel().await;
    let token = pair.token(provisioner);
    let customer = CustomersClient::new(a.clone())
        .create_customer(authed(
            pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    display_name: "Retried Co".into(),
                    mfa_policy: pb::MfaPolicy::Enforced.into(),
                    enabled_method_kinds: ALL_KINDS.iter().map(|k| (*k).into()).collect(),
                    ..Default::default()
                }),
                request_id: new_id(),
            },
            &token,
        ))
        .await
        .expect("create customer on A")
        .into_inner()
        .customer
        .expect("customer");
    pair.operator(&[
        "grant",
        "--subject",
        admin,
        "--customer",
        &customer.id,
        "--role",
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    ]);

    // Sent to A, the answer lost; retried on B.
    let key = new_id();
    let request = create_user_request(&customer.id, "Replica Rosa", &key);
    let on_a = create_user(&a, &token, request.clone())
        .await
        .expect("on A");
    let on_b = create_user(&b, &token, request)
        .await
        .expect("retried on B");
    assert_eq!(on_b, on_a);
    let user = on_a.user.expect("user");

    let key = new_id();
    let on_a = register(&a, &token, register_request(&user, &key))
        .await
        .expect("on A");
    let on_b = register(&b, &token, register_request(&user, &key))
        .await
        .expect("retried on B");
    assert_eq!(on_b, on_a);
    assert_eq!(method_count(&b, &token, &user).await, 1);

    // Both replicas at once, 16 calls each: one user.
    let key = new_id();
    let request = create_user_request(&customer.id, "Replica Crowd", &key);
    let calls = (0..32).map(|i| {
        let channel = if i % 2 == 0 { a.clone() } else { b.clone() };
        let request = request.clone();
        let token = token.clone();
        async move { create_user(&channel, &token, request).await }
    });
    let answers: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|a| a.expect("every duplicate succeeds"))
        .collect();
    assert!(answers.iter().all(|x| *x == answers[0]));
    let names = user_names(&a, &token, &customer.id).await;
    assert_eq!(
        names.iter().filter(|n| *n == "Replica Crowd").count(),
        1,
        "{names:?}"
    );

    let admin_token = pair.token(admin);
    let key = new_id();
    let request = summarize_request(&customer.id, &[&user], &key);
    let on_a = summarize(&a, &admin_token, request.clone())
        .await
        .expect("summary on A");
    let on_b = summarize(&b, &admin_token, request)
        .await
        .expect("retried on B");
    assert_eq!(on_b, on_a);
    assert_eq!(reset_ids(&b, &admin_token, &customer.id).await.len(), 1);
}

/// Moves a request id's row 25 hours into the past, past its lifetime.
async fn backdate_key(app: &TestApp, key: &str) {
    let sql = match app.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            "UPDATE idempotency_keys SET created_at = $1 WHERE request_id = $2"
        }
        _ => "UPDATE idempotency_keys SET created_at = ? WHERE request_id = ?",
    };
    let backdated = chrono::Utc::now() - chrono::Duration::hours(25);
    let key = Uuid::parse_str(key).expect("uuid");
    app.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            app.db.get_database_backend(),
            sql,
            [backdated.into(), key.into()],
        ))
        .await
        .expect("backdate the key");
}

/// Settings that purge expired request ids every 100 ms.
fn quick_purge(database_url: String) -> mfa_reset::config::Settings {
    mfa_reset::config::Settings {
        request_id_purge_interval: std::time::Duration::from_millis(100),
        ..<mfa_reset::config::Settings as TestSettings>::default_for_tests(database_url)
    }
}

async fn expired_keys_are_purged(app: &TestApp) {
    let w = world(app).await;
    let provisioner = app.token(PROVISIONER);
    let (old, fresh) = (new_id(), new_id());
    for (key, name) in [(&old, "Purged Key"), (&fresh, "Kept Key")] {
        create_user(
            &app.channel,
            &provisioner,
            create_user_request(&w.enforced.id, name, key),
        )
        .await
        .expect("create");
    }
    backdate_key(app, &old).await;
    let placeholder = match app.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => "$1",
        _ => "?",
    };
    let count = |key: &str| {
        let sql =
            format!("SELECT COUNT(*) AS n FROM idempotency_keys WHERE request_id = {placeholder}");
        let key = Uuid::parse_str(key).expect("uuid");
        let db = app.db.clone();
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_sql_and_values(
                    db.get_database_backend(),
                    sql,
                    [key.into()],
                ))
                .await
                .expect("count")
                .expect("a row");
            row.try_get::<i64>("", "n").expect("n")
        }
    };
    let started = std::time::Instant::now();
    while count(&old).await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the expired key was not purged within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count(&fresh).await, 1, "a live key stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_purged_by_every_replica_sqlite() {
    run_with(Backend::Sqlite, quick_purge, |app| {
        Box::pin(expired_keys_are_purged(app))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_purged_by_every_replica_postgres() {
    run_with(Backend::Postgres, quick_purge, |app| {
        Box::pin(expired_keys_are_purged(app))
    })
    .await;
}
