//! What the two-phase reset guarantees beyond what a summary says (DESIGN.md "The two-phase
//! reset", "Scale it is built for", "Errors"): a confirm applies its plan exactly once however
//! often and however concurrently it is called, all or nothing, on any replica, only before the
//! reset expires; its cost in SQL statements grows with neither the users nor the customers in
//! it; and a 10,000-user summary pages its items under gRPC's 4 MiB message limit.

use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures::future::join_all;
use mfa_reset::{
    config::Settings,
    proto::v1::{
        self as pb, audit_log_client::AuditLogClient,
        authentication_methods_client::AuthenticationMethodsClient,
        customers_client::CustomersClient, users_client::UsersClient,
    },
    store::entities::{authentication_methods, customers, users},
};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait};
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::{helpers::*, replicas::*};

/// The reason every reset here gives.
const REASON: &str = "lost phone";

/// gRPC's default message limit, which the server keeps (`max_message_bytes`).
const MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Calls, on any channel (the two-process test talks to servers that are not a TestApp).
// ---------------------------------------------------------------------------------------

fn summarize_request(
    customer_ids: &[String],
    user_ids: &[String],
    page_size: i32,
) -> pb::UsersSummarizeMfaResetRequest {
    pb::UsersSummarizeMfaResetRequest {
        customer_ids: customer_ids.to_vec(),
        target: users_by_id(user_ids.to_vec()),
        reason: REASON.into(),
        page_size,
        ..Default::default()
    }
}

/// `Users.SummarizeMfaReset`.
async fn summarize(
    channel: &Channel,
    token: &str,
    request: pb::UsersSummarizeMfaResetRequest,
) -> Result<pb::UsersSummarizeMfaResetResponse, Status> {
    UsersClient::new(channel.clone())
        .summarize_mfa_reset(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// `AuthenticationMethods.SummarizeMfaReset`, answered as the Users door answers.
async fn summarize_via_methods(
    channel: &Channel,
    token: &str,
    request: pb::UsersSummarizeMfaResetRequest,
) -> Result<pb::UsersSummarizeMfaResetResponse, Status> {
    let request = pb::AuthenticationMethodsSummarizeMfaResetRequest {
        target: Some(
            pb::authentication_methods_summarize_mfa_reset_request::Target::Users(
                pb::UserReferences {
                    user_ids: target_ids(&request),
                    external_subjects: vec![],
                },
            ),
        ),
        customer_ids: request.customer_ids,
        options: request.options,
        reason: request.reason,
        page_size: request.page_size,
        request_id: request.request_id,
    };
    AuthenticationMethodsClient::new(channel.clone())
        .summarize_mfa_reset(authed(request, token))
        .await
        .map(|r| {
            let r = r.into_inner();
            pb::UsersSummarizeMfaResetResponse {
                mfa_reset: r.mfa_reset,
                items: r.items,
                next_page_token: r.next_page_token,
            }
        })
}

/// `Users.ConfirmMfaReset`.
async fn confirm(
    channel: &Channel,
    token: &str,
    reset_id: &str,
    etag: &str,
) -> Result<pb::MfaReset, Status> {
    UsersClient::new(channel.clone())
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: reset_id.into(),
                etag: etag.into(),
                request_id: String::new(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().mfa_reset.expect("mfa_reset"))
}

/// `AuthenticationMethods.ConfirmMfaReset`.
async fn confirm_via_methods(
    channel: &Channel,
    token: &str,
    reset_id: &str,
    etag: &str,
) -> Result<pb::MfaReset, Status> {
    AuthenticationMethodsClient::new(channel.clone())
        .confirm_mfa_reset(authed(
            pb::AuthenticationMethodsConfirmMfaResetRequest {
                request_id: Default::default(),
                reset_id: reset_id.into(),
                etag: etag.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().mfa_reset.expect("mfa_reset"))
}

/// `Users.GetMfaReset`.
async fn get_reset(channel: &Channel, token: &str, reset_id: &str) -> pb::MfaReset {
    UsersClient::new(channel.clone())
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: reset_id.into(),
            },
            token,
        ))
        .await
        .expect("get reset")
        .into_inner()
        .mfa_reset
        .expect("mfa_reset")
}

/// One page of `Users.ListMfaResetItems`.
async fn list_items(
    channel: &Channel,
    token: &str,
    reset_id: &str,
    page_size: i32,
    page_token: &str,
) -> pb::ListMfaResetItemsResponse {
    UsersClient::new(channel.clone())
        .list_mfa_reset_items(authed(
            pb::ListMfaResetItemsRequest {
                customer_ids: Default::default(),
                outcome: Default::default(),
                skip_reasons: Default::default(),
                reset_id: reset_id.into(),
                page_size,
                page_token: page_token.into(),
            },
            token,
        ))
        .await
        .expect("list reset items")
        .into_inner()
}

/// Every audit event of the selection (newest first), optionally of one action only.
async fn audit_events(
    channel: &Channel,
    token: &str,
    customer_ids: &[String],
    action: pb::AuditAction,
) -> Vec<pb::AuditEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = AuditLogClient::new(channel.clone())
            .list_audit_events(authed(
                pb::ListAuditEventsRequest {
                    customer_ids: customer_ids.to_vec(),
                    actions: if action == pb::AuditAction::Unspecified {
                        vec![]
                    } else {
                        vec![action.into()]
                    },
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("list audit events")
            .into_inner();
        events.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// The MFA_RESET events that belong to one reset.
async fn reset_events(
    channel: &Channel,
    token: &str,
    customer_ids: &[String],
    reset_id: &str,
) -> Vec<pb::AuditEvent> {
    audit_events(channel, token, customer_ids, pb::AuditAction::MfaReset)
        .await
        .into_iter()
        .filter(|e| e.reset_id == reset_id)
        .collect()
}

/// `AuthenticationMethods.ListAuthenticationMethods`.
async fn methods_of(
    channel: &Channel,
    token: &str,
    customer_id: &str,
    user_id: &str,
) -> Vec<pb::AuthenticationMethod> {
    AuthenticationMethodsClient::new(channel.clone())
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                page_size: Default::default(),
                page_token: Default::default(),
                customer_ids: vec![customer_id.into()],
                user_id: user_id.into(),
            },
            token,
        ))
        .await
        .expect("list methods")
        .into_inner()
        .authentication_methods
}

fn state_of(reset: &pb::MfaReset) -> pb::MfaResetState {
    pb::MfaResetState::try_from(reset.state).expect("known state")
}

/// Everything a reset of some users of one customer could touch, as the API shows it: each
/// user (flags, `mfa_reset_time`, `update_time`), each of their methods, and the customer's
/// whole audit log.
#[derive(Debug, PartialEq)]
struct Observed {
    users: Vec<pb::User>,
    methods: Vec<Vec<pb::AuthenticationMethod>>,
    audit: Vec<pb::AuditEvent>,
}

async fn observe(app: &TestApp, customer_id: &str, user_ids: &[&str]) -> Observed {
    let token = app.token(ADMIN);
    let mut observed = Observed {
        users: Vec::new(),
        methods: Vec::new(),
        audit: audit_events(
            &app.channel,
            &token,
            &[customer_id.to_string()],
            pb::AuditAction::Unspecified,
        )
        .await,
    };
    for user_id in user_ids {
        observed
            .users
            .push(get_user(app, customer_id, user_id).await.expect("get user"));
        observed
            .methods
            .push(methods_of(&app.channel, &token, customer_id, user_id).await);
    }
    observed
}

// ---------------------------------------------------------------------------------------
// Exactly once.
// ---------------------------------------------------------------------------------------

backend_test!(sixty_four_concurrent_confirms_apply_once);
async fn sixty_four_concurrent_confirms_apply_once(app: &TestApp) {
    let w = world(app).await;
    let token = app.token(ADMIN);
    let selection = vec![w.enforced.id.clone()];
    let users = [w.alice.id.clone(), w.root.id.clone(), w.me.id.clone()];
    let summary = summarize(
        &app.channel,
        &token,
        summarize_request(&selection, &users, 0),
    )
    .await
    .expect("summarize")
    .mfa_reset
    .expect("mfa_reset");
    let totals = summary.totals.expect("totals");
    assert_eq!(
        (totals.users_to_reset_count, totals.users_skipped_count),
        (2, 1),
        "Alice and Root are reset; the caller's own user is skipped"
    );

    // 64 confirms at once, half through each door: one engine, one row lock.
    let calls = (0..64).map(|i| {
        let channel = app.channel.clone();
        let token = token.clone();
        let (id, etag) = (summary.id.clone(), summary.etag.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                confirm(&channel, &token, &id, &etag).await
            } else {
                confirm_via_methods(&channel, &token, &id, &etag).await
            }
        })
    });
    let confirmed: Vec<pb::MfaReset> = join_all(calls)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, joined)| {
            joined
                .expect("confirm task")
                .unwrap_or_else(|status| panic!("confirm #{i} failed: {status:?}"))
        })
        .collect();
    let first = &confirmed[0];
    assert_eq!(state_of(first), pb::MfaResetState::Confirmed);
    assert!(first.confirm_time.is_some(), "confirm_time is set");
    for (i, reset) in confirmed.iter().enumerate() {
        assert_eq!(
            reset.confirm_time, first.confirm_time,
            "confirm #{i} saw another confirm_time: applied more than once"
        );
        assert_eq!(reset, first, "confirm #{i} answered differently");
    }

    let events = reset_events(&app.channel, &token, &selection, &summary.id).await;
    let mut audited: Vec<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    audited.sort_unstable();
    let mut expected = vec![w.alice.id.as_str(), w.root.id.as_str()];
    expected.sort_unstable();
    assert_eq!(
        audited, expected,
        "exactly one MFA_RESET event per affected user, not one per confirm"
    );
    assert!(
        events
            .iter()
            .all(|e| e.reason == REASON && e.actor == ADMIN)
    );

    assert!(
        methods_of(&app.channel, &token, &w.enforced.id, &w.alice.id)
            .await
            .is_empty(),
        "Alice's phone and e-mail are deleted"
    );
    let root = methods_of(&app.channel, &token, &w.enforced.id, &w.root.id).await;
    assert_eq!(root.len(), 1, "Root's FIDO2 key is deleted: {root:?}");
    assert_eq!(root[0].kind, i32::from(pb::MethodKind::HardwareOath));
    assert_eq!(root[0].state, i32::from(pb::MethodState::Deactivated));
    let me = methods_of(&app.channel, &token, &w.enforced.id, &w.me.id).await;
    assert_eq!(me.len(), 1, "the skipped caller keeps their method");
    assert_eq!(me[0].state, i32::from(pb::MethodState::Active));
    let alice = get_user(app, &w.enforced.id, &w.alice.id).await.unwrap();
    assert!(alice.mfa_registration_required);
    assert!(alice.mfa_reset_time.is_some());
    assert_eq!(
        alice.mfa_reset_time, first.confirm_time,
        "mfa_reset_time is the one confirm's time"
    );
}

backend_test!(confirming_twice_returns_the_same_result_and_changes_nothing);
async fn confirming_twice_returns_the_same_result_and_changes_nothing(app: &TestApp) {
    let w = world(app).await;
    let token = app.token(ADMIN);
    let selection = vec![w.enforced.id.clone()];
    let everyone = [w.alice.id.as_str(), w.root.id.as_str(), w.me.id.as_str()];

    // Summarized through Users, confirmed through Users, then again through both doors.
    let alice_reset = summarize(
        &app.channel,
        &token,
        summarize_request(&selection, std::slice::from_ref(&w.alice.id), 0),
    )
    .await
    .expect("summarize through Users")
    .mfa_reset
    .expect("mfa_reset");
    let first = confirm(&app.channel, &token, &alice_reset.id, &alice_reset.etag)
        .await
        .expect("first confirm");
    assert_eq!(state_of(&first), pb::MfaResetState::Confirmed);
    let after_first = observe(app, &w.enforced.id, &everyone).await;
    let again = confirm(&app.channel, &token, &alice_reset.id, &alice_reset.etag)
        .await
        .expect("second confirm through Users");
    assert_eq!(again, first, "the second confirm returns the same reset");
    let through_methods =
        confirm_via_methods(&app.channel, &token, &alice_reset.id, &alice_reset.etag)
            .await
            .expect("confirm through AuthenticationMethods");
    assert_eq!(
        through_methods, first,
        "the other door returns the same reset"
    );
    assert_eq!(
        get_reset(&app.channel, &token, &alice_reset.id).await,
        first
    );
    assert_eq!(
        observe(app, &w.enforced.id, &everyone).await,
        after_first,
        "confirming again changes no user, method or audit event"
    );
    assert_eq!(
        reset_events(&app.channel, &token, &selection, &alice_reset.id)
            .await
            .len(),
        1
    );

    // Summarized through AuthenticationMethods, confirmed through Users, then again through
    // AuthenticationMethods and Users.
    let root_reset = summarize_via_methods(
        &app.channel,
        &token,
        summarize_request(&selection, std::slice::from_ref(&w.root.id), 0),
    )
    .await
    .expect("summarize through AuthenticationMethods")
    .mfa_reset
    .expect("mfa_reset");
    let first = confirm(&app.channel, &token, &root_reset.id, &root_reset.etag)
        .await
        .expect("confirm through Users");
    assert_eq!(state_of(&first), pb::MfaResetState::Confirmed);
    let after_first = observe(app, &w.enforced.id, &everyone).await;
    let again = confirm_via_methods(&app.channel, &token, &root_reset.id, &root_reset.etag)
        .await
        .expect("second confirm through AuthenticationMethods");
    assert_eq!(again, first);
    let again = confirm(&app.channel, &token, &root_reset.id, &root_reset.etag)
        .await
        .expect("third confirm through Users");
    assert_eq!(again, first);
    assert_eq!(observe(app, &w.enforced.id, &everyone).await, after_first);
    assert_eq!(
        reset_events(&app.channel, &token, &selection, &root_reset.id)
            .await
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// All or nothing.
// ---------------------------------------------------------------------------------------

/// Makes every insert into `audit_events` fail, from outside the server (the last write of
/// a confirm, after methods and users have been changed in its transaction).
async fn fail_audit_inserts(db: &DatabaseConnection) {
    let statements: &[&str] = match db.get_database_backend() {
        DbBackend::Sqlite => &["CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'injected'); END;"],
        DbBackend::Postgres => &[
            "CREATE FUNCTION fail_audit_insert() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN RAISE EXCEPTION 'injected'; END; $$",
            "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION fail_audit_insert()",
        ],
        other => panic!("no failure injection for {other:?}"),
    };
    for sql in statements {
        db.execute_unprepared(sql).await.expect("inject a failure");
    }
}

async fn stop_failing_audit_inserts(db: &DatabaseConnection) {
    let statements: &[&str] = match db.get_database_backend() {
        DbBackend::Sqlite => &["DROP TRIGGER fail_audit"],
        DbBackend::Postgres => &[
            "DROP TRIGGER fail_audit ON audit_events",
            "DROP FUNCTION fail_audit_insert()",
        ],
        other => panic!("no failure injection for {other:?}"),
    };
    for sql in statements {
        db.execute_unprepared(sql)
            .await
            .expect("remove the failure");
    }
}

backend_test!(a_failure_mid_confirm_leaves_every_row_as_before);
async fn a_failure_mid_confirm_leaves_every_row_as_before(app: &TestApp) {
    let w = world(app).await;
    let token = app.token(ADMIN);
    let selection = vec![w.enforced.id.clone()];
    let everyone = [w.alice.id.as_str(), w.root.id.as_str(), w.me.id.as_str()];
    let reset = summarize(
        &app.channel,
        &token,
        summarize_request(&selection, &[w.alice.id.clone(), w.root.id.clone()], 0),
    )
    .await
    .expect("summarize")
    .mfa_reset
    .expect("mfa_reset");
    let totals = reset.totals.expect("totals");
    assert_eq!(
        (
            totals.methods_to_delete_count,
            totals.methods_to_deactivate_count
        ),
        (3, 1),
        "the confirm deletes, deactivates and marks users before it audits"
    );
    let before = observe(app, &w.enforced.id, &everyone).await;

    fail_audit_inserts(&app.db).await;
    let status = assert_error(
        confirm(&app.channel, &token, &reset.id, &reset.etag).await,
        Code::Internal,
        "INTERNAL",
    );
    let message = status.message().to_lowercase();
    for leak in ["injected", "audit_events", "insert", "sql", "trigger"] {
        assert!(
            !message.contains(leak),
            "INTERNAL message leaks {leak:?}: {}",
            status.message()
        );
    }
    assert_eq!(
        observe(app, &w.enforced.id, &everyone).await,
        before,
        "a failed confirm leaves every user, method and audit event as it was"
    );
    let pending = get_reset(&app.channel, &token, &reset.id).await;
    assert_eq!(state_of(&pending), pb::MfaResetState::Pending);
    assert_eq!(pending.confirm_time, None);
    assert_eq!(pending.etag, reset.etag);

    stop_failing_audit_inserts(&app.db).await;
    let confirmed = confirm(&app.channel, &token, &reset.id, &reset.etag)
        .await
        .expect("the same confirm succeeds once the failure is gone");
    assert_eq!(state_of(&confirmed), pb::MfaResetState::Confirmed);
    assert_eq!(
        reset_events(&app.channel, &token, &selection, &reset.id)
            .await
            .len(),
        2
    );
    assert!(
        methods_of(&app.channel, &token, &w.enforced.id, &w.alice.id)
            .await
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------
// Expiry.
// ---------------------------------------------------------------------------------------

fn one_second_resets(database_url: String) -> Settings {
    Settings {
        reset_ttl: Duration::from_secs(1),
        ..Settings::default_for_tests(database_url)
    }
}

mod an_expired_reset_cannot_be_confirmed {
    use crate::helpers::{Backend, run_with};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run_with(Backend::Sqlite, super::one_second_resets, |app| {
            Box::pin(super::an_expired_reset_cannot_be_confirmed(app))
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run_with(Backend::Postgres, super::one_second_resets, |app| {
            Box::pin(super::an_expired_reset_cannot_be_confirmed(app))
        })
        .await
    }
}

async fn an_expired_reset_cannot_be_confirmed(app: &TestApp) {
    let w = world(app).await;
    let token = app.token(ADMIN);
    let selection = vec![w.enforced.id.clone()];
    let everyone = [w.alice.id.as_str(), w.root.id.as_str(), w.me.id.as_str()];
    let reset = summarize(
        &app.channel,
        &token,
        summarize_request(&selection, std::slice::from_ref(&w.alice.id), 0),
    )
    .await
    .expect("summarize")
    .mfa_reset
    .expect("mfa_reset");
    assert_eq!(state_of(&reset), pb::MfaResetState::Pending);
    let before = observe(app, &w.enforced.id, &everyone).await;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_error(
        confirm(&app.channel, &token, &reset.id, &reset.etag).await,
        Code::FailedPrecondition,
        "RESET_EXPIRED",
    );
    assert_error(
        confirm_via_methods(&app.channel, &token, &reset.id, &reset.etag).await,
        Code::FailedPrecondition,
        "RESET_EXPIRED",
    );
    let expired = get_reset(&app.channel, &token, &reset.id).await;
    assert_eq!(state_of(&expired), pb::MfaResetState::Expired);
    assert_eq!(expired.confirm_time, None);
    assert_eq!(
        observe(app, &w.enforced.id, &everyone).await,
        before,
        "nothing of an expired reset is applied"
    );
    assert!(
        reset_events(&app.channel, &token, &selection, &reset.id)
            .await
            .is_empty()
    );
}

fn two_second_resets(database_url: String) -> Settings {
    Settings {
        reset_ttl: Duration::from_secs(2),
        ..Settings::default_for_tests(database_url)
    }
}

/// PostgreSQL only: a confirm there waits on row locks after it has read the reset, which is
/// where a replica's clock could let an expired reset through (SQLite's confirm waits for its
/// write lock before reading anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_that_expires_while_its_confirm_waits_is_not_applied() {
    run_with(Backend::Postgres, two_second_resets, |app| {
        Box::pin(expires_while_its_confirm_waits(app))
    })
    .await
}

async fn expires_while_its_confirm_waits(app: &TestApp) {
    let w = world(app).await;
    let token = app.token(ADMIN);
    let selection = vec![w.enforced.id.clone()];
    let everyone = [w.alice.id.as_str(), w.root.id.as_str(), w.me.id.as_str()];
    let reset = summarize(
        &app.channel,
        &token,
        summarize_request(&selection, std::slice::from_ref(&w.alice.id), 0),
    )
    .await
    .expect("summarize")
    .mfa_reset
    .expect("mfa_reset");
    let before = observe(app, &w.enforced.id, &everyone).await;

    // Hold Alice's row: the confirm reads the (unexpired) reset, then waits for it.
    let lock = mfa_reset::store::begin_write(&app.db).await.expect("begin");
    lock.execute_unprepared(&format!(
        "SELECT id FROM users WHERE id = '{}' FOR UPDATE",
        w.alice.id
    ))
    .await
    .expect("lock alice");
    let channel = app.channel.clone();
    let (id, etag) = (reset.id.clone(), reset.etag.clone());
    let confirming = tokio::spawn({
        let token = token.clone();
        async move { confirm(&channel, &token, &id, &etag).await }
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!confirming.is_finished(), "the confirm waits for the lock");
    mfa_reset::store::commit(lock).await.expect("release");

    let result = confirming.await.expect("confirm task");
    assert_error(result, Code::FailedPrecondition, "RESET_EXPIRED");
    let expired = get_reset(&app.channel, &token, &reset.id).await;
    assert_eq!(state_of(&expired), pb::MfaResetState::Expired);
    assert_eq!(
        observe(app, &w.enforced.id, &everyone).await,
        before,
        "nothing of a reset that expired before its confirm finished is applied"
    );
}

// ---------------------------------------------------------------------------------------
// Lock order (PostgreSQL).
// ---------------------------------------------------------------------------------------

/// Deadlocks PostgreSQL has detected in the current database so far.
async fn deadlocks(db: &DatabaseConnection) -> i64 {
    db.execute_unprepared("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush statistics");
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        ))
        .await
        .expect("read pg_stat_database")
        .expect("a row");
    row.try_get("", "deadlocks").expect("deadlocks")
}

/// An active phone for each of `user_ids` (of `customer_id`), as a directory sync adds them.
async fn give_phones(db: &DatabaseConnection, customer_id: &str, user_ids: &[String]) {
    let now = chrono::Utc::now();
    let customer_id = Uuid::parse_str(customer_id).expect("customer id");
    let rows = user_ids.iter().map(|user| {
        authentication_methods::ActiveModel::from(authentication_methods::Model {
            id: Uuid::now_v7(),
            customer_id,
            user_id: Uuid::parse_str(user).expect("user id"),
            kind: "PHONE".into(),
            scope: "ORG".into(),
            label: "+1 555 0100".into(),
            state: "ACTIVE".into(),
            secret_ref: None,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        })
    });
    insert_in_chunks(db, rows.collect()).await;
}

/// Fails the test after 10 s of waiting for something.
fn still_waiting(since: Instant, what: &str) {
    assert!(since.elapsed() < Duration::from_secs(10), "never {what}");
}

/// A summary's items take key-share locks on their users (the foreign key), and a confirm
/// locks its users for update in id order: items inserted in another order deadlock with
/// it. Forced here: the confirm is held half-way through its users (the test holds one of
/// them), and a summary naming the same users in descending id order starts meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_never_deadlocks_with_a_confirm_of_its_users() {
    run(Backend::Postgres, |app| Box::pin(forced_overlap(app))).await
}

async fn forced_overlap(app: &TestApp) {
    let seeded = seed(
        app,
        "forced",
        1,
        40,
        &[("PHONE", "ORG", "+1 555 0100")],
        ADMIN,
    )
    .await;
    let token = app.token(ADMIN);
    let mut descending = seeded.user_ids.clone();
    descending.sort();
    descending.reverse();
    let request = || summarize_request(&seeded.customer_ids, &descending, 0);
    let deadlocks_before = deadlocks(&app.db).await;
    let first = summarize(&app.channel, &token, request())
        .await
        .expect("summarize")
        .mfa_reset
        .expect("mfa_reset");

    // The twentieth user in id order, held FOR SHARE: the confirm's FOR UPDATE waits there,
    // a summary's key-share locks do not.
    let middle = &descending[20];
    let hold = mfa_reset::store::begin_write(&app.db).await.expect("begin");
    hold.execute_unprepared(&format!(
        "SELECT id FROM users WHERE id = '{middle}' FOR SHARE"
    ))
    .await
    .expect("hold a user");
    let confirming = tokio::spawn({
        let (channel, token) = (app.channel.clone(), token.clone());
        let (id, etag) = (first.id.clone(), first.etag.clone());
        async move { confirm(&channel, &token, &id, &etag).await }
    });
    let since = Instant::now();
    while waiting_for_locks(&app.db).await < 1 {
        still_waiting(since, "the confirm waits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summarizing = tokio::spawn({
        let (channel, token, request) = (app.channel.clone(), token.clone(), request());
        async move { summarize(&channel, &token, request).await }
    });
    let since = Instant::now();
    while !summarizing.is_finished() && waiting_for_locks(&app.db).await < 2 {
        still_waiting(since, "the summary waits or finishes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mfa_reset::store::commit(hold).await.expect("release");

    let confirmed = confirming.await.expect("task").expect("confirm");
    assert_eq!(state_of(&confirmed), pb::MfaResetState::Confirmed);
    summarizing
        .await
        .expect("task")
        .expect("the overlapping summary");
    assert_eq!(
        deadlocks(&app.db).await,
        deadlocks_before,
        "PostgreSQL saw a deadlock"
    );
}

/// Unforced: rounds of a confirm and a summary of the same users started together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_summaries_and_confirms_never_deadlock() {
    run(Backend::Postgres, |app| Box::pin(overlapping_rounds(app))).await
}

async fn overlapping_rounds(app: &TestApp) {
    const ROUNDS: usize = 200;
    let seeded = seed(app, "lock order", 1, 8, &[], ADMIN).await;
    let token = app.token(ADMIN);
    let mut descending = seeded.user_ids.clone();
    descending.sort();
    descending.reverse();
    let request = || summarize_request(&seeded.customer_ids, &descending, 0);
    let deadlocks_before = deadlocks(&app.db).await;
    for round in 0..ROUNDS {
        give_phones(&app.db, &seeded.customer_ids[0], &descending).await;
        let first = summarize(&app.channel, &token, request())
            .await
            .unwrap_or_else(|s| panic!("round {round}: summarize: {s:?}"))
            .mfa_reset
            .expect("mfa_reset");
        let (confirmed, second) = tokio::join!(
            confirm(&app.channel, &token, &first.id, &first.etag),
            summarize(&app.channel, &token, request()),
        );
        let confirmed = confirmed.unwrap_or_else(|s| panic!("round {round}: confirm: {s:?}"));
        assert_eq!(state_of(&confirmed), pb::MfaResetState::Confirmed);
        second.unwrap_or_else(|s| panic!("round {round}: overlapping summarize: {s:?}"));
    }
    assert_eq!(
        deadlocks(&app.db).await,
        deadlocks_before,
        "PostgreSQL saw deadlocks"
    );
}

// ---------------------------------------------------------------------------------------
// Replicas: one PostgreSQL, two processes.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_made_on_one_process_is_confirmed_on_another() {
    with_two_replicas(|pair| Box::pin(summarize_on_a_confirm_on_b(pair))).await;
}

async fn summarize_on_a_confirm_on_b(pair: &mut Pair) {
    let (database_url, root) = (pair.database_url.clone(), pair.root.clone());
    let (database_url, root) = (database_url.as_str(), root.as_path());
    let token = |subject: &str| token_with(&pair.secret, subject);
    let replicas = &mut pair.replicas;
    let (provisioner, admin) = ("replica-provisioner", "replica-admin");
    operator(
        database_url,
        root,
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
    let a = replicas[0].channel().await;
    let b = replicas[1].channel().await;

    let customer = CustomersClient::new(a.clone())
        .create_customer(authed(
            pb::CreateCustomerRequest {
                request_id: Default::default(),
                customer: Some(pb::Customer {
                    display_name: "Replicated Co".into(),
                    mfa_policy: pb::MfaPolicy::Enforced.into(),
                    enabled_method_kinds: ALL_KINDS.iter().map(|k| (*k).into()).collect(),
                    ..Default::default()
                }),
            },
            &token(provisioner),
        ))
        .await
        .expect("create customer on A")
        .into_inner()
        .customer
        .expect("customer");
    operator(
        database_url,
        root,
        &[
            "grant",
            "--subject",
            admin,
            "--customer",
            &customer.id,
            "--role",
            "PRIVILEGED_AUTHENTICATION_ADMIN",
        ],
    );
    let mut user_ids = Vec::new();
    for i in 0..3 {
        let user = UsersClient::new(a.clone())
            .create_user(authed(
                pb::CreateUserRequest {
                    request_id: Default::default(),
                    user: Some(pb::User {
                        customer_id: customer.id.clone(),
                        display_name: format!("Replica User {i}"),
                        email: format!("replica.user.{i}@example.com"),
                        ..Default::default()
                    }),
                },
                &token(provisioner),
            ))
            .await
            .expect("create user on A")
            .into_inner()
            .user
            .expect("user");
        for (kind, label) in [
            (pb::MethodKind::Phone, format!("+1 555 010 000{i}")),
            (pb::MethodKind::HardwareOath, format!("serial 1000000{i}")),
        ] {
            AuthenticationMethodsClient::new(a.clone())
                .register_authentication_method(authed(
                    pb::RegisterAuthenticationMethodRequest {
                        request_id: Default::default(),
                        customer_id: customer.id.clone(),
                        user_id: user.id.clone(),
                        kind: kind.into(),
                        scope: pb::MethodScope::Org.into(),
                        label,
                        secret_ref: String::new(),
                    },
                    &token(provisioner),
                ))
                .await
                .expect("register method on A");
        }
        user_ids.push(user.id);
    }
    let selection = vec![customer.id.clone()];

    // Summarize on A, one item per page, so that B has to continue A's page token.
    let summary = summarize(
        &a,
        &token(admin),
        summarize_request(&selection, &user_ids, 1),
    )
    .await
    .expect("summarize on A");
    let reset = summary.mfa_reset.expect("mfa_reset");
    assert_eq!(state_of(&reset), pb::MfaResetState::Pending);
    assert_eq!(summary.items.len(), 1);
    assert_eq!(summary.items[0].user_id, user_ids[0]);
    assert!(
        !summary.next_page_token.is_empty(),
        "a page token for the rest"
    );
    let rest = list_items(&b, &token(admin), &reset.id, 0, &summary.next_page_token).await;
    let rest_ids: Vec<&str> = rest.items.iter().map(|i| i.user_id.as_str()).collect();
    assert_eq!(
        rest_ids,
        [user_ids[1].as_str(), user_ids[2].as_str()],
        "B continues A's page"
    );
    assert!(rest.next_page_token.is_empty());

    let confirmed = confirm(&b, &token(admin), &reset.id, &reset.etag)
        .await
        .expect("confirm on B");
    assert_eq!(state_of(&confirmed), pb::MfaResetState::Confirmed);
    let seen_on_a = get_reset(&a, &token(admin), &reset.id).await;
    assert_eq!(state_of(&seen_on_a), pb::MfaResetState::Confirmed);
    assert_eq!(seen_on_a, confirmed, "A sees the reset B confirmed");
    assert_eq!(
        reset_events(&a, &token(admin), &selection, &reset.id)
            .await
            .len(),
        3
    );
    let left = methods_of(&a, &token(admin), &customer.id, &user_ids[0]).await;
    assert_eq!(left.len(), 1, "the phone is deleted: {left:?}");
    assert_eq!(left[0].state, i32::from(pb::MethodState::Deactivated));
    drop((a, b));

    for replica in replicas.iter_mut() {
        let status = replica.terminate().await;
        assert_eq!(
            status.code(),
            Some(0),
            "replica {} exit status {status}",
            replica.name
        );
    }
}

// ---------------------------------------------------------------------------------------
// Scale: data seeded straight into the database (fast), every assertion through gRPC.
// ---------------------------------------------------------------------------------------

/// Every method kind, as `customers.enabled_method_kinds` stores them.
const ALL_KIND_NAMES: &str =
    "PHONE,AUTHENTICATOR_APP,SOFTWARE_OATH,HARDWARE_OATH,EMAIL,FIDO2,RECOVERY_CODES";

/// Rows per seeding insert: 1,000 rows of 12 columns stay under both backends' limits on
/// bound parameters.
const SEED_ROWS_PER_INSERT: usize = 1_000;

/// Seeded customers and users, users in the order a request names them.
pub(crate) struct Seeded {
    pub(crate) customer_ids: Vec<String>,
    pub(crate) user_ids: Vec<String>,
}

async fn insert_in_chunks<A>(db: &DatabaseConnection, rows: Vec<A>)
where
    A: ActiveModelTrait + Send,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(SEED_ROWS_PER_INSERT).collect();
        <A::Entity as EntityTrait>::insert_many(chunk)
            .exec_without_returning(db)
            .await
            .expect("seed rows");
    }
}

/// Seeds `customers` ENFORCED customers with every kind enabled, and `users` users spread
/// over them round-robin, each with one method per `(kind, scope, label)`; grants
/// `subject` PRIVILEGED_AUTHENTICATION_ADMIN in each customer.
pub(crate) async fn seed(
    app: &TestApp,
    label: &str,
    customers: usize,
    users: usize,
    methods: &[(&str, &str, &str)],
    subject: &str,
) -> Seeded {
    let now = chrono::Utc::now();
    let customer_rows: Vec<customers::Model> = (0..customers)
        .map(|i| customers::Model {
            approval_threshold: Default::default(),
            id: Uuid::now_v7(),
            name: format!("{label} customer {i}"),
            mfa_policy: "ENFORCED".into(),
            enabled_method_kinds: ALL_KIND_NAMES.into(),
            created_at: now,
            updated_at: now,
        })
        .collect();
    let customer_ids: Vec<Uuid> = customer_rows.iter().map(|c| c.id).collect();
    insert_in_chunks(
        &app.db,
        customer_rows
            .into_iter()
            .map(customers::ActiveModel::from)
            .collect(),
    )
    .await;
    let user_rows: Vec<users::Model> = (0..users)
        .map(|i| {
            let name = format!("{label} user {i}");
            let email = format!("{}.user.{i}@example.com", label.replace(' ', ".")).to_lowercase();
            users::Model {
                id: Uuid::now_v7(),
                customer_id: customer_ids[i % customers],
                external_subject: None,
                display_name_folded: mfa_reset::store::search::fold(&name),
                search_key: mfa_reset::store::search::key(&name, &email),
                email,
                display_name: name,
                is_admin: false,
                mfa_registration_required: false,
                mfa_reset_at: None,
                created_at: now,
                updated_at: now,
            }
        })
        .collect();
    let method_rows: Vec<authentication_methods::ActiveModel> = user_rows
        .iter()
        .flat_map(|user| {
            methods.iter().map(move |(kind, scope, label)| {
                authentication_methods::Model {
                    id: Uuid::now_v7(),
                    customer_id: user.customer_id,
                    user_id: user.id,
                    kind: (*kind).into(),
                    scope: (*scope).into(),
                    label: (*label).into(),
                    state: "ACTIVE".into(),
                    secret_ref: None,
                    created_at: now,
                    updated_at: now,
                    last_used_at: None,
                }
                .into()
            })
        })
        .collect();
    let user_ids = user_rows.iter().map(|u| u.id.to_string()).collect();
    insert_in_chunks(
        &app.db,
        user_rows
            .into_iter()
            .map(users::ActiveModel::from)
            .collect(),
    )
    .await;
    insert_in_chunks(&app.db, method_rows).await;
    for id in &customer_ids {
        app.grant(
            subject,
            Some(&id.to_string()),
            "PRIVILEGED_AUTHENTICATION_ADMIN",
        )
        .await;
    }
    Seeded {
        customer_ids: customer_ids.iter().map(Uuid::to_string).collect(),
        user_ids,
    }
}

/// Statements the server ran for one summarize and one confirm of one reset.
#[derive(Debug, Clone, Copy)]
struct Cost {
    users: usize,
    customers: usize,
    summarize: u64,
    confirm: u64,
}

/// 10 and 5,000 users, 1 and 50 customers: more users than SQLite binds in one statement
/// at nine columns a row, and than the 2,000-id chunks the engine once cut lists into.
const COST_CASES: [(usize, usize); 4] = [(10, 1), (5_000, 1), (10, 50), (5_000, 50)];

backend_test!(statement_count_does_not_grow_with_users);
async fn statement_count_does_not_grow_with_users(app: &TestApp) {
    let backend = app.db.get_database_backend();
    let subject = "scale-admin";
    let token = app.token(subject);
    let started = Instant::now();
    let mut costs = Vec::new();
    for (case, (users, customers)) in COST_CASES.into_iter().enumerate() {
        let seeded = seed(
            app,
            &format!("cost {case}"),
            customers,
            users,
            &[
                ("PHONE", "ORG", "+1 555 010 0199"),
                ("HARDWARE_OATH", "ORG", "serial 88412231"),
            ],
            subject,
        )
        .await;

        let before = app.statements.load(Ordering::SeqCst);
        let summary = summarize(
            &app.channel,
            &token,
            summarize_request(&seeded.customer_ids, &seeded.user_ids, 0),
        )
        .await
        .expect("summarize");
        let summarize_count = app.statements.load(Ordering::SeqCst) - before;
        let reset = summary.mfa_reset.expect("mfa_reset");
        let totals = reset.totals.expect("totals");
        assert_eq!(totals.users_to_reset_count as usize, users);
        assert_eq!(
            totals.methods_to_delete_count as usize, users,
            "one phone each"
        );
        assert_eq!(
            totals.methods_to_deactivate_count as usize, users,
            "one hardware token each"
        );

        let before = app.statements.load(Ordering::SeqCst);
        let confirmed = confirm(&app.channel, &token, &reset.id, &reset.etag)
            .await
            .expect("confirm");
        let confirm_count = app.statements.load(Ordering::SeqCst) - before;
        assert_eq!(state_of(&confirmed), pb::MfaResetState::Confirmed);

        // The confirm applied: every user audited once, a sample user's phone gone and
        // hardware token deactivated.
        let events = reset_events(&app.channel, &token, &seeded.customer_ids, &reset.id).await;
        let audited: HashSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
        assert_eq!(events.len(), users, "one MFA_RESET event per user");
        assert_eq!(audited.len(), users);
        let sample = users / 2;
        let left = methods_of(
            &app.channel,
            &token,
            &seeded.customer_ids[sample % customers],
            &seeded.user_ids[sample],
        )
        .await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].kind, i32::from(pb::MethodKind::HardwareOath));
        assert_eq!(left[0].state, i32::from(pb::MethodState::Deactivated));

        let cost = Cost {
            users,
            customers,
            summarize: summarize_count,
            confirm: confirm_count,
        };
        eprintln!(
            "statement count [{backend:?}] {:>5} users x {:>2} customers: \
             summarize {:>3}, confirm {:>3}",
            cost.users, cost.customers, cost.summarize, cost.confirm
        );
        costs.push(cost);
    }
    eprintln!(
        "statement count [{backend:?}]: 4 cases seeded, summarized, confirmed and checked in {:.1?}",
        started.elapsed()
    );

    let [small_one, large_one, small_many, large_many] = [costs[0], costs[1], costs[2], costs[3]];
    // Every list of ids or rows is one parameter of one statement, so the counts must be
    // EQUAL to those of 10 users, not merely close.
    for (small, large) in [(small_one, large_one), (small_many, large_many)] {
        assert_eq!(
            (large.summarize, large.confirm),
            (small.summarize, small.confirm),
            "statements grew with users: {large:?} vs {small:?}"
        );
    }
    for (one, many) in [(small_one, small_many), (large_one, large_many)] {
        assert_eq!(
            (many.summarize, many.confirm),
            (one.summarize, one.confirm),
            "statements grew with customers: {many:?} vs {one:?}"
        );
    }
}

backend_test!(ten_thousand_user_summary_pages_its_items_under_the_message_limit);
async fn ten_thousand_user_summary_pages_its_items_under_the_message_limit(app: &TestApp) {
    const USERS: usize = 10_000;
    const CUSTOMERS: usize = 20;
    let backend = app.db.get_database_backend();
    let subject = "bulk-admin";
    let token = app.token(subject);

    let started = Instant::now();
    let seeded = seed(
        app,
        "bulk",
        CUSTOMERS,
        USERS,
        &[
            ("PHONE", "ORG", "+1 555 010 0199"),
            ("HARDWARE_OATH", "ORG", "serial 88412231"),
            ("FIDO2", "USER", "YubiKey 5"),
        ],
        subject,
    )
    .await;
    let seeding = started.elapsed();

    let started = Instant::now();
    let summary = summarize(
        &app.channel,
        &token,
        summarize_request(&seeded.customer_ids, &seeded.user_ids, 500),
    )
    .await
    .expect("a 10,000-user summary fits the message limit");
    let summarizing = started.elapsed();
    let summary_bytes = prost::Message::encoded_len(&summary);
    assert!(
        summary_bytes < MESSAGE_LIMIT,
        "summary is {summary_bytes} bytes"
    );
    let reset = summary.mfa_reset.clone().expect("mfa_reset");
    let totals = reset.totals.expect("totals");
    assert_eq!(totals.user_count as usize, USERS);
    assert_eq!(totals.users_to_reset_count as usize, USERS);
    assert_eq!(totals.users_skipped_count, 0);
    assert_eq!(totals.methods_to_delete_count as usize, 2 * USERS);
    assert_eq!(totals.methods_to_deactivate_count as usize, USERS);
    assert_eq!(reset.customer_summaries.len(), CUSTOMERS);
    assert_eq!(
        summary.items.len(),
        500,
        "the first page holds page_size items"
    );
    assert!(!summary.next_page_token.is_empty());

    let started = Instant::now();
    let mut visited: Vec<String> = summary.items.iter().map(|i| i.user_id.clone()).collect();
    let mut page_token = summary.next_page_token.clone();
    let mut largest_page = 0;
    while !page_token.is_empty() {
        let page = list_items(&app.channel, &token, &reset.id, 500, &page_token).await;
        largest_page = largest_page.max(prost::Message::encoded_len(&page));
        assert!(!page.items.is_empty(), "no empty page before the last");
        visited.extend(page.items.into_iter().map(|i| i.user_id));
        page_token = page.next_page_token;
    }
    let walking = started.elapsed();
    assert!(largest_page < MESSAGE_LIMIT);
    let distinct: HashSet<&String> = visited.iter().collect();
    assert_eq!(distinct.len(), USERS, "every user is visited once");
    assert_eq!(visited, seeded.user_ids, "items come in request order");

    let started = Instant::now();
    let confirmed = confirm(&app.channel, &token, &reset.id, &reset.etag)
        .await
        .expect("confirm 10,000 users");
    let confirming = started.elapsed();
    assert_eq!(state_of(&confirmed), pb::MfaResetState::Confirmed);
    let events = reset_events(&app.channel, &token, &seeded.customer_ids, &reset.id).await;
    let audited: HashSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(events.len(), USERS, "one MFA_RESET event per user");
    assert_eq!(audited.len(), USERS);
    let left = methods_of(
        &app.channel,
        &token,
        &seeded.customer_ids[0],
        &seeded.user_ids[0],
    )
    .await;
    assert_eq!(left.len(), 1, "phone and key deleted: {left:?}");
    assert_eq!(left[0].state, i32::from(pb::MethodState::Deactivated));

    eprintln!(
        "10,000-user reset [{backend:?}]: seed {seeding:.1?}, summarize {summarizing:.1?} \
         ({summary_bytes} bytes), walk {} items {walking:.1?} (largest page {largest_page} bytes), \
         confirm {confirming:.1?}",
        visited.len()
    );
}
