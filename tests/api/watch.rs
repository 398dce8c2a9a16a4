//! `AuditLog.WatchAuditEvents`: the change stream that sign-in services consume. Events arrive
//! once per change, in commit order, on every replica, resumable from a cursor without a gap;
//! the stream is authorized when it opens and while it runs, bounded in memory, and limited.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use mfa_reset::{
    api::paging::{Binding, PageTokens},
    config::{Settings, WatchSettings},
    domain::{
        audit::{self, AuditDetails, AuditEvent, watch::Position},
        ids::CustomerId,
        model::MfaPolicy,
    },
    proto::v1::{self as pb, audit_log_client::AuditLogClient},
    store,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::helpers::*;
use crate::replicas::{Pair, token_with, with_two_replicas};

/// One response of a stream, or how it ended.
#[derive(Debug)]
enum Got {
    Event(String, Box<pb::AuditEvent>),
    Heartbeat(String),
    Ended(Status),
    Nothing,
}

/// A watch request on `customer_ids` from `after` (empty: now).
fn watch_request(customer_ids: &[&str], after: &str) -> pb::WatchAuditEventsRequest {
    pb::WatchAuditEventsRequest {
        customer_ids: customer_ids.iter().map(|id| id.to_string()).collect(),
        after_cursor: after.into(),
        ..Default::default()
    }
}

async fn open_on(
    channel: &Channel,
    token: &str,
    request: pb::WatchAuditEventsRequest,
) -> Result<Streaming<pb::WatchAuditEventsResponse>, Status> {
    AuditLogClient::new(channel.clone())
        .watch_audit_events(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn open(
    app: &TestApp,
    subject: &str,
    request: pb::WatchAuditEventsRequest,
) -> Result<Streaming<pb::WatchAuditEventsResponse>, Status> {
    open_on(&app.channel, &app.token(subject), request).await
}

/// The next response within `wait`.
async fn next(stream: &mut Streaming<pb::WatchAuditEventsResponse>, wait: Duration) -> Got {
    match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => Got::Nothing,
        Ok(Err(status)) => Got::Ended(status),
        Ok(Ok(None)) => panic!("the stream ended without a status"),
        Ok(Ok(Some(response))) => match response.payload {
            Some(pb::watch_audit_events_response::Payload::AuditEvent(event)) => {
                Got::Event(response.cursor, Box::new(event))
            }
            Some(pb::watch_audit_events_response::Payload::Heartbeat(_)) => {
                Got::Heartbeat(response.cursor)
            }
            None => panic!("a response without payload"),
        },
    }
}

/// The next `n` events (heartbeats skipped), each with its cursor; panics after `wait`.
async fn events(
    stream: &mut Streaming<pb::WatchAuditEventsResponse>,
    n: usize,
    wait: Duration,
) -> Vec<(String, pb::AuditEvent)> {
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        let left = until.saturating_duration_since(Instant::now());
        match next(stream, left).await {
            Got::Event(cursor, event) => got.push((cursor, *event)),
            Got::Heartbeat(_) => {}
            Got::Ended(status) => panic!("the stream ended after {} events: {status:?}", got.len()),
            Got::Nothing => panic!("{} of {n} events within {wait:?}: {got:?}", got.len()),
        }
    }
    got
}

/// Asserts that no event arrives within `wait` (heartbeats may).
async fn no_event(stream: &mut Streaming<pb::WatchAuditEventsResponse>, wait: Duration) {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match next(stream, left).await {
            Got::Nothing => return,
            Got::Heartbeat(_) => {}
            other => panic!("expected no event, got {other:?}"),
        }
    }
}

/// How the stream ends, within `wait` (events and heartbeats before it are counted).
async fn ending(
    stream: &mut Streaming<pb::WatchAuditEventsResponse>,
    wait: Duration,
) -> (usize, Status) {
    let until = Instant::now() + wait;
    let mut events = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match next(stream, left).await {
            Got::Ended(status) => return (events, status),
            Got::Event(..) => events += 1,
            Got::Heartbeat(_) => {}
            Got::Nothing => panic!("the stream did not end within {wait:?}"),
        }
    }
}

fn reason_of(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

async fn summarize_and_confirm(
    users_client: &mut pb::users_client::UsersClient<Channel>,
    token: &str,
    customer_ids: &[&str],
    user_ids: &[&str],
) -> pb::MfaReset {
    let summary = users_client
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: customer_ids.iter().map(|id| id.to_string()).collect(),
                target: users_by_id(user_ids.iter().map(|id| id.to_string()).collect()),
                reason: "lost phone".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("summarize")
        .into_inner()
        .mfa_reset
        .expect("reset");
    users_client
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: summary.id.clone(),
                etag: summary.etag.clone(),
                request_id: String::new(),
            },
            token,
        ))
        .await
        .expect("confirm")
        .into_inner()
        .mfa_reset
        .expect("reset")
}

backend_test!(a_watcher_receives_each_reset_user_once_within_a_second);
async fn a_watcher_receives_each_reset_user_once_within_a_second(app: &TestApp) {
    use pb::{MethodKind as K, MethodScope as S};
    let w = world(app).await;
    let carol = app
        .create_user(&w.optional.id, "Carol Cole", false, "carol-sub")
        .await;
    app.register_method(&carol, K::Phone, S::User, "+1 555 000 1111")
        .await;
    let selection = [w.enforced.id.as_str(), w.optional.id.as_str()];
    let mut stream = open(app, ADMIN, watch_request(&selection, ""))
        .await
        .expect("open");

    let reset = summarize_and_confirm(
        &mut app.users(),
        &app.token(ADMIN),
        &selection,
        &[&w.alice.id, &w.root.id, &carol.id],
    )
    .await;
    let committed = Instant::now();
    let got = events(&mut stream, 3, Duration::from_secs(5)).await;
    let latency = committed.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "the events took {latency:?}"
    );

    let by_user: HashMap<String, pb::AuditEvent> = got
        .into_iter()
        .map(|(_, e)| (e.user_id.clone(), e))
        .collect();
    assert_eq!(by_user.len(), 3, "one event per user: {by_user:?}");
    for user in [&w.alice, &w.root, &carol] {
        let event = &by_user[&user.id];
        assert_eq!(event.action(), pb::AuditAction::MfaReset);
        assert_eq!(event.reset_id, reset.id);
        assert_eq!(event.customer_id, user.customer_id);
        assert_eq!(event.external_subject, user.external_subject);
        let now = get_user(app, &user.customer_id, &user.id)
            .await
            .expect("user");
        assert_eq!(
            event.mfa_registration_required,
            Some(now.mfa_registration_required)
        );
        assert_eq!(event.mfa_reset_time, now.mfa_reset_time);
        assert!(event.mfa_reset_time.is_some());
        assert!(matches!(
            &event.details,
            Some(pb::audit_event::Details::MfaReset(d)) if d.requested_by == ADMIN
        ));
    }
    // Alice was in an ENFORCED customer: she registers again; Carol's is OPTIONAL.
    assert_eq!(by_user[&w.alice.id].mfa_registration_required, Some(true));
    assert_eq!(by_user[&carol.id].mfa_registration_required, Some(false));
    no_event(&mut stream, Duration::from_millis(700)).await;
}

backend_test!(reconnecting_with_the_last_cursor_delivers_exactly_what_committed_meanwhile);
async fn reconnecting_with_the_last_cursor_delivers_exactly_what_committed_meanwhile(
    app: &TestApp,
) {
    use pb::{MethodKind as K, MethodScope as S};
    let w = world(app).await;
    let selection = [w.enforced.id.as_str()];
    let mut stream = open(
        app,
        ADMIN,
        pb::WatchAuditEventsRequest {
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..watch_request(&selection, "")
        },
    )
    .await
    .expect("open");
    let first = app
        .register_method(&w.alice, K::AuthenticatorApp, S::User, "one")
        .await;
    let got = events(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].1.method_id, first.id);
    let cursor = got[0].0.clone();
    drop(stream);

    let second = app
        .register_method(&w.alice, K::AuthenticatorApp, S::User, "two")
        .await;
    let third = app
        .register_method(&w.root, K::Fido2, S::User, "three")
        .await;
    // An event in a customer outside the selection is not delivered.
    app.register_method(&w.stranger, K::Fido2, S::User, "elsewhere")
        .await;

    let mut resumed = open(app, ADMIN, watch_request(&selection, &cursor))
        .await
        .expect("resume");
    let got = events(&mut resumed, 2, Duration::from_secs(5)).await;
    let methods: Vec<&str> = got.iter().map(|(_, e)| e.method_id.as_str()).collect();
    assert_eq!(methods, [second.id.as_str(), third.id.as_str()]);
    no_event(&mut resumed, Duration::from_millis(500)).await;

    // A heartbeat's cursor is a place too: nothing before it is delivered again.
    let mut quiet = stream_with_heartbeat(app, &selection, &got[1].0).await;
    let heartbeat_cursor = match next(&mut quiet, Duration::from_secs(3)).await {
        Got::Heartbeat(cursor) => cursor,
        other => panic!("expected a heartbeat, got {other:?}"),
    };
    let fourth = app
        .register_method(&w.root, K::SoftwareOath, S::User, "four")
        .await;
    let mut from_heartbeat = open(app, ADMIN, watch_request(&selection, &heartbeat_cursor))
        .await
        .expect("resume from a heartbeat");
    let got = events(&mut from_heartbeat, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].1.method_id, fourth.id);

    // From the oldest retained event: everything of the selection, in commit order.
    let mut oldest = from_oldest(app, &selection).await;
    let listed = all_listed(app, &selection).await;
    let replayed = events(&mut oldest, listed.len(), Duration::from_secs(5)).await;
    let replayed: Vec<String> = replayed.into_iter().map(|(_, e)| e.id).collect();
    let mut listed_oldest_first: Vec<String> = listed.into_iter().map(|e| e.id).collect();
    listed_oldest_first.reverse();
    assert_eq!(replayed, listed_oldest_first);
}

/// A stream of `selection` as [`ADMIN`] from the oldest retained event.
async fn from_oldest(app: &TestApp, selection: &[&str]) -> Streaming<pb::WatchAuditEventsResponse> {
    let request = pb::WatchAuditEventsRequest {
        start_at_oldest: true,
        ..watch_request(selection, "")
    };
    open(app, ADMIN, request).await.expect("from the oldest")
}

/// A stream from `cursor` with a one-second heartbeat.
async fn stream_with_heartbeat(
    app: &TestApp,
    selection: &[&str],
    cursor: &str,
) -> Streaming<pb::WatchAuditEventsResponse> {
    open(
        app,
        ADMIN,
        pb::WatchAuditEventsRequest {
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..watch_request(selection, cursor)
        },
    )
    .await
    .expect("open")
}

/// Every event of `selection` that ListAuditEvents lists to [`ADMIN`], newest first.
async fn all_listed(app: &TestApp, selection: &[&str]) -> Vec<pb::AuditEvent> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .audit()
            .list_audit_events(authed(
                pb::ListAuditEventsRequest {
                    customer_ids: selection.iter().map(|id| id.to_string()).collect(),
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &app.token(ADMIN),
            ))
            .await
            .expect("list audit events")
            .into_inner();
        all.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

backend_test!(concurrent_writers_and_a_reconnecting_watcher_lose_nothing);
async fn concurrent_writers_and_a_reconnecting_watcher_lose_nothing(app: &TestApp) {
    use pb::{MethodKind as K, MethodScope as S};
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    eprintln!("disconnect points from seed {seed}");
    let w = world(app).await;
    let selection = [w.enforced.id.clone(), w.optional.id.clone()];
    let selection_ref: Vec<&str> = selection.iter().map(String::as_str).collect();
    let x = app
        .create_user(&w.enforced.id, "Xavier X", false, "x-sub")
        .await;
    let y = app
        .create_user(&w.optional.id, "Yvonne Y", false, "y-sub")
        .await;
    let before: HashSet<String> = all_listed(app, &selection_ref)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();

    // The watcher: reads, drops the stream at random points, resumes with its last cursor.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (opened, first_open) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let channel = app.channel.clone();
        let token = app.token(ADMIN);
        let selection = selection.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut delivered: Vec<String> = Vec::new();
            let mut cursor = String::new();
            let mut reconnects = 0;
            let mut quiet_after_stop = 0;
            let mut opened = Some(opened);
            loop {
                let ids: Vec<&str> = selection.iter().map(String::as_str).collect();
                let mut stream = open_on(&channel, &token, watch_request(&ids, &cursor))
                    .await
                    .expect("open");
                if let Some(opened) = opened.take() {
                    // Started "now": the writers may go.
                    let _ = opened.send(());
                }
                let take = rng.random_range(1..=8);
                let mut taken = 0;
                while taken < take {
                    match next(&mut stream, Duration::from_millis(300)).await {
                        Got::Event(c, e) => {
                            cursor = c;
                            delivered.push(e.id.clone());
                            taken += 1;
                            quiet_after_stop = 0;
                        }
                        Got::Heartbeat(c) => cursor = c,
                        Got::Ended(status) => panic!("the stream ended: {status:?}"),
                        Got::Nothing => {
                            if *stopped.borrow() {
                                quiet_after_stop += 1;
                            }
                            break;
                        }
                    }
                }
                if quiet_after_stop >= 3 {
                    return (delivered, reconnects);
                }
                reconnects += 1;
            }
        })
    };
    first_open.await.expect("the watcher's first stream");

    let admin = app.token(ADMIN);
    for round in 0..20 {
        app.register_method(&x, K::Phone, S::User, &format!("x{round}"))
            .await;
        app.register_method(&y, K::Phone, S::User, &format!("y{round}"))
            .await;
        let (enforced, optional) = (w.enforced.id.clone(), w.optional.id.clone());
        let reset_x = {
            let (mut users, admin, x, enforced) =
                (app.users(), admin.clone(), x.id.clone(), enforced.clone());
            async move { summarize_and_confirm(&mut users, &admin, &[&enforced], &[&x]).await }
        };
        let reset_y = {
            let (mut users, admin, y, optional) =
                (app.users(), admin.clone(), y.id.clone(), optional.clone());
            async move { summarize_and_confirm(&mut users, &admin, &[&optional], &[&y]).await }
        };
        let provision = async {
            let z = app
                .create_user(
                    &enforced,
                    &format!("Zed {round}"),
                    false,
                    &format!("z{round}"),
                )
                .await;
            app.register_method(&z, K::Fido2, S::User, "key").await;
            app.register_method(&w.alice, K::SoftwareOath, S::User, &format!("a{round}"))
                .await;
        };
        let provision_optional = async {
            app.create_user(&optional, &format!("Quinn {round}"), false, "")
                .await;
        };
        tokio::join!(reset_x, reset_y, provision, provision_optional);
    }
    stop.send_replace(true);
    let (delivered, reconnects) = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("the watcher finishes")
        .expect("the watcher");

    let expected: HashSet<String> = all_listed(app, &selection_ref)
        .await
        .into_iter()
        .map(|e| e.id)
        .filter(|id| !before.contains(id))
        .collect();
    let distinct: HashSet<String> = delivered.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        delivered.len(),
        "resuming from the last cursor delivers nothing twice"
    );
    let missing: Vec<&String> = expected.difference(&distinct).collect();
    let extra: Vec<&String> = distinct.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    // 20 rounds of 2 registrations, 2 resets, 2 users and 2 more registrations.
    assert_eq!(expected.len(), 20 * 8);
    assert!(
        reconnects >= 20,
        "the watcher reconnected {reconnects} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_a_cursor_of_the_one_before() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(database) = TestDatabase::create(backend).await else {
            eprintln!("{POSTGRES_URL_VAR} is not set: skipping the PostgreSQL run of this test");
            continue;
        };
        let settings = <Settings as TestSettings>::default_for_tests(database.url.clone());
        let app = TestApp::spawn_with(settings.clone()).await;
        let customer = app
            .create_customer("Restart Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
            .await;
        app.grant(ADMIN, Some(&customer.id), "READER").await;
        let mut stream = open(&app, ADMIN, watch_request(&[&customer.id], ""))
            .await
            .expect("open");
        app.create_user(&customer.id, "Before Restart", false, "")
            .await;
        let got = events(&mut stream, 1, Duration::from_secs(5)).await;
        let cursor = got[0].0.clone();
        app.stop().await;

        let app = TestApp::spawn_with(settings).await;
        let after = app
            .create_user(&customer.id, "After Restart", false, "")
            .await;
        let mut stream = open(&app, ADMIN, watch_request(&[&customer.id], &cursor))
            .await
            .expect("resume on the restarted server");
        let got = events(&mut stream, 1, Duration::from_secs(5)).await;
        assert_eq!(got[0].1.user_id, after.id, "{backend:?}");
        no_event(&mut stream, Duration::from_millis(500)).await;
        drop(stream);
        app.stop().await;
        database.drop_now().await;
    }
}

/// An event for `customer`, written by the library in `txn` as a change would write it.
async fn record_in(txn: &impl ConnectionTrait, customer: &str, reason: &str) {
    audit::record(txn, vec![event_in(customer, reason)])
        .await
        .expect("record");
}

/// An event for `customer` (its id, a v7 UUID, made now).
fn event_in(customer: &str, reason: &str) -> AuditEvent {
    let customer = CustomerId::parse(customer).expect("customer id");
    AuditEvent::by(
        "late-committer",
        Some(customer),
        AuditDetails::MfaPolicySet {
            previous: MfaPolicy::Enforced,
            policy: MfaPolicy::Enforced,
        },
        mfa_reset::domain::now(),
    )
    .reason(reason)
}

async fn xid(txn: &impl ConnectionTrait) -> i64 {
    txn.query_one_raw(Statement::from_string(
        txn.get_database_backend(),
        "SELECT txid_current() AS x",
    ))
    .await
    .expect("txid")
    .expect("row")
    .try_get("", "x")
    .expect("x")
}

async fn wait_for_a_lock_waiter(db: &DatabaseConnection) {
    let until = Instant::now() + Duration::from_secs(10);
    while waiting_for_locks(db).await < 1 {
        assert!(Instant::now() < until, "nobody waits for a lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_early_and_committed_late_is_delivered_in_commit_order() {
    run(Backend::Postgres, |app| {
        Box::pin(early_write_late_commit(app))
    })
    .await;
}

async fn early_write_late_commit(app: &TestApp) {
    use pb::{MethodKind as K, MethodScope as S};
    let w = world(app).await;
    let mut stream = open(app, ADMIN, watch_request(&[&w.enforced.id], ""))
        .await
        .expect("open");
    // A writes its event and stays open.
    let early = store::begin_write(&app.db).await.expect("begin");
    record_in(&early, &w.enforced.id, "early").await;
    // B starts later and commits as soon as it can: it waits for A at the clock.
    let later = {
        let (app_methods, token, alice) = (app.methods(), app.token(PROVISIONER), w.alice.clone());
        tokio::spawn(async move {
            let mut client = app_methods;
            client
                .register_authentication_method(authed(
                    pb::RegisterAuthenticationMethodRequest {
                        customer_id: alice.customer_id.clone(),
                        user_id: alice.id.clone(),
                        kind: K::Fido2.into(),
                        scope: S::User.into(),
                        label: "later".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .expect("register")
                .into_inner()
        })
    };
    wait_for_a_lock_waiter(&app.db).await;
    no_event(&mut stream, Duration::from_millis(300)).await;
    store::commit(early).await.expect("commit A");
    let registered = later
        .await
        .expect("B")
        .authentication_method
        .expect("method");
    let got = events(&mut stream, 2, Duration::from_secs(5)).await;
    assert_eq!(got[0].1.reason, "early");
    assert_eq!(got[1].1.method_id, registered.id);
    no_event(&mut stream, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_began_first_and_waited_for_a_row_lock_is_delivered_second() {
    run(Backend::Postgres, |app| {
        Box::pin(began_first_committed_second(app))
    })
    .await;
}

/// Takes `user`'s row lock in `txn` (PostgreSQL).
async fn lock_user(txn: &sea_orm::DatabaseTransaction, user: uuid::Uuid) {
    txn.execute_raw(Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "UPDATE users SET updated_at = updated_at WHERE id = $1",
        [user.into()],
    ))
    .await
    .expect("lock the user's row");
}

async fn began_first_committed_second(app: &TestApp) {
    let w = world(app).await;
    let mut stream = open(app, ADMIN, watch_request(&[&w.enforced.id], ""))
        .await
        .expect("open");
    let alice = uuid::Uuid::parse_str(&w.alice.id).expect("id");
    // T1 begins first (the smaller transaction id) ...
    let first = store::begin_write(&app.db).await.expect("begin T1");
    let first_xid = xid(&first).await;
    // ... T2 begins second and takes Alice's row lock ...
    let second = store::begin_write(&app.db).await.expect("begin T2");
    let second_xid = xid(&second).await;
    assert!(first_xid < second_xid);
    lock_user(&second, alice).await;
    // ... T1 waits for it, then writes its event and commits, second.
    // T1's event is made before it waits, so its id is the smaller too: neither the
    // transaction id nor the event id orders these two by commit.
    let first_event = event_in(&w.enforced.id, "began first");
    let first_event_id = first_event.id;
    let waiting = tokio::spawn(async move {
        lock_user(&first, alice).await;
        audit::record(&first, vec![first_event])
            .await
            .expect("record");
        store::commit(first).await.expect("commit T1");
    });
    wait_for_a_lock_waiter(&app.db).await;
    record_in(&second, &w.enforced.id, "began second").await;
    store::commit(second).await.expect("commit T2");
    waiting.await.expect("T1");
    let got = events(&mut stream, 2, Duration::from_secs(5)).await;
    let reasons: Vec<&str> = got.iter().map(|(_, e)| e.reason.as_str()).collect();
    assert_eq!(reasons, ["began second", "began first"], "commit order");
    assert!(
        first_event_id.to_string() < got[0].1.id,
        "T1's event id is the smaller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_a_reset_confirmed_on_the_other() {
    with_two_replicas(|pair| Box::pin(watch_across_replicas(pair))).await;
}

async fn watch_across_replicas(pair: &mut Pair) {
    let admin = "replica-admin";
    let a = pair.replicas[0].channel().await;
    let b = pair.replicas[1].channel().await;
    let (customer, users) = pair
        .customer_with_users(
            &b,
            "Replicated Co",
            &[(admin, "AUTHENTICATION_ADMIN")],
            &[("Remote Rita", "rita-sub")],
        )
        .await;
    let user = &users[0];

    let admin_token = token_with(&pair.secret, admin);
    let mut stream = open_on(
        &a,
        &admin_token,
        pb::WatchAuditEventsRequest {
            actions: vec![pb::AuditAction::MfaReset.into()],
            ..watch_request(&[&customer.id], "")
        },
    )
    .await
    .expect("open on A");
    let reset = summarize_and_confirm(
        &mut pb::users_client::UsersClient::new(b.clone()),
        &admin_token,
        &[&customer.id],
        &[&user.id],
    )
    .await;
    let committed = Instant::now();
    let got = events(&mut stream, 1, Duration::from_secs(5)).await;
    assert!(
        committed.elapsed() < Duration::from_secs(1),
        "took {:?}",
        committed.elapsed()
    );
    assert_eq!(got[0].1.reset_id, reset.id);
    assert_eq!(got[0].1.external_subject, "rita-sub");
    assert_eq!(got[0].1.mfa_registration_required, Some(true));
}

backend_test!(roles_are_checked_when_a_stream_opens_and_while_it_runs);
async fn roles_are_checked_when_a_stream_opens_and_while_it_runs(app: &TestApp) {
    let w = world(app).await;
    // Outside the caller's roles: refused at open.
    let refused = open(
        app,
        ADMIN,
        watch_request(&[&w.enforced.id, &w.other.id], ""),
    )
    .await;
    let status = assert_error(refused, Code::PermissionDenied, "NO_ROLE");
    assert!(status.message().contains(&w.other.id));
    let everything = pb::WatchAuditEventsRequest {
        all_customers: true,
        ..Default::default()
    };
    assert_error(
        open(app, ADMIN, everything.clone()).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );

    // READER is enough; revoking it ends the stream within a heartbeat or two.
    let watcher = "stream-reader";
    app.grant(watcher, Some(&w.enforced.id), "READER").await;
    let mut stream = open(
        app,
        watcher,
        pb::WatchAuditEventsRequest {
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..watch_request(&[&w.enforced.id], "")
        },
    )
    .await
    .expect("a reader may watch");
    app.revoke(watcher, Some(&w.enforced.id), "READER").await;
    let (_, status) = ending(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status), "NO_ROLE");

    // A role on `*` watches every customer, including one created after it connected.
    app.grant("everywhere-reader", None, "READER").await;
    let mut all = open(app, "everywhere-reader", everything)
        .await
        .expect("watch all");
    let later = app
        .create_customer("Later Co", pb::MfaPolicy::Optional, &ALL_KINDS)
        .await;
    let user = app
        .create_user(&later.id, "Newcomer", false, "new-sub")
        .await;
    let got = events(&mut all, 2, Duration::from_secs(5)).await;
    assert_eq!(got[0].1.action(), pb::AuditAction::CustomerCreated);
    assert_eq!(got[0].1.customer_id, later.id);
    assert_eq!(got[1].1.action(), pb::AuditAction::UserCreated);
    assert_eq!(got[1].1.user_id, user.id);
}

backend_test!(filters_by_action_and_user_and_refuses_bad_requests);
async fn filters_by_action_and_user_and_refuses_bad_requests(app: &TestApp) {
    use pb::{MethodKind as K, MethodScope as S};
    let w = world(app).await;
    let mut stream = open(
        app,
        ADMIN,
        pb::WatchAuditEventsRequest {
            user_id: w.alice.id.clone(),
            actions: vec![pb::AuditAction::MethodRegistered.into()],
            ..watch_request(&[&w.enforced.id], "")
        },
    )
    .await
    .expect("open");
    app.register_method(&w.root, K::Fido2, S::User, "not alice")
        .await;
    app.create_user(&w.enforced.id, "Not Registered", false, "")
        .await;
    let mine = app
        .register_method(&w.alice, K::Fido2, S::User, "alice's")
        .await;
    let got = events(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].1.method_id, mine.id);
    no_event(&mut stream, Duration::from_millis(500)).await;

    let invalid = |request: pb::WatchAuditEventsRequest| async move {
        let status = assert_error(
            open(app, ADMIN, request).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        violated_fields(&status)
    };
    let base = || watch_request(&[&w.enforced.id], "");
    assert_eq!(
        invalid(pb::WatchAuditEventsRequest {
            all_customers: true,
            ..base()
        })
        .await,
        ["customer_ids"]
    );
    assert_eq!(invalid(watch_request(&[], "")).await, ["customer_ids"]);
    assert_eq!(
        invalid(watch_request(&[&w.enforced.id], "not-a-cursor")).await,
        ["after_cursor"]
    );
    assert_eq!(
        invalid(pb::WatchAuditEventsRequest {
            start_at_oldest: true,
            after_cursor: got[0].0.clone(),
            ..base()
        })
        .await,
        ["start_at_oldest"]
    );
    assert_eq!(
        invalid(pb::WatchAuditEventsRequest {
            heartbeat_interval: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            ..base()
        })
        .await,
        ["heartbeat_interval"]
    );
    assert_eq!(
        invalid(pb::WatchAuditEventsRequest {
            actions: vec![999],
            ..base()
        })
        .await,
        ["actions[0]"]
    );
    assert_eq!(
        invalid(pb::WatchAuditEventsRequest {
            user_id: "nope".into(),
            ..base()
        })
        .await,
        ["user_id"]
    );
    // A well-sealed cursor past this database's clock (from another database, or one
    // restored from an older backup) is refused, not waited on.
    let cursors = PageTokens::new(&app.secret.derive("audit-cursor"));
    let binding = Binding::of("mfareset.v1.AuditLog/WatchAuditEvents", "", &());
    let ahead = Position {
        seq: 1 << 40,
        id: uuid::Uuid::nil(),
    };
    let forged = cursors.seal(&binding, &ahead.to_bytes());
    assert_eq!(
        invalid(watch_request(&[&w.enforced.id], &forged)).await,
        ["after_cursor"]
    );
}

/// Settings with a small stream buffer, a one-second stall timeout and one stream per
/// principal.
fn tight_streams(database_url: String) -> Settings {
    Settings {
        watch: WatchSettings {
            buffer: 8,
            stall: Duration::from_secs(1),
            max_streams_per_principal: 1,
            max_streams: 2,
            ..WatchSettings::default()
        },
        ..<Settings as TestSettings>::default_for_tests(database_url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_ended_and_holds_nothing() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        run_with(backend, tight_streams, |app| {
            Box::pin(stalled_consumer(app))
        })
        .await;
    }
}

async fn stalled_consumer(app: &TestApp) {
    let customer = app
        .create_customer("Busy Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(ADMIN, Some(&customer.id), "READER").await;
    let mut stalled = open(app, ADMIN, watch_request(&[&customer.id], ""))
        .await
        .expect("open");
    // 20,000 events (some 6 MB as messages) in one transaction: far more than the buffer and
    // HTTP/2's windows hold.
    const WRITTEN: usize = 20_000;
    let txn = store::begin_write(&app.db).await.expect("begin");
    let id = CustomerId::parse(&customer.id).expect("id");
    let many: Vec<AuditEvent> = (0..WRITTEN)
        .map(|i| {
            AuditEvent::by(
                "bulk-writer",
                Some(id),
                AuditDetails::MfaPolicySet {
                    previous: MfaPolicy::Enforced,
                    policy: MfaPolicy::Enforced,
                },
                mfa_reset::domain::now(),
            )
            .reason(&format!(
                "event {i} with a reason long enough to fill the windows"
            ))
        })
        .collect();
    audit::record(&txn, many).await.expect("record");
    store::commit(txn).await.expect("commit");

    // The stalled stream's slot is given back once it is ended: the principal's only stream
    // may be opened again while the first consumer still reads nothing.
    let until = Instant::now() + Duration::from_secs(10);
    let mut second = loop {
        match open(app, ADMIN, watch_request(&[&customer.id], "")).await {
            Ok(stream) => break stream,
            Err(status) => {
                assert_eq!(reason_of(&status), "TOO_MANY_STREAMS", "{status:?}");
                assert!(Instant::now() < until, "the stalled stream kept its slot");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The second may not be opened beside it (one per principal) ...
    let third = open(app, ADMIN, watch_request(&[&customer.id], "")).await;
    let status = assert_error(third, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    assert!(status.message().contains("principal"));
    // ... and the replica holds two at most.
    app.grant("someone-else", Some(&customer.id), "READER")
        .await;
    app.grant("a-third", Some(&customer.id), "READER").await;
    let _other = open(app, "someone-else", watch_request(&[&customer.id], ""))
        .await
        .expect("a second stream on the replica");
    let status = assert_error(
        open(app, "a-third", watch_request(&[&customer.id], "")).await,
        Code::ResourceExhausted,
        "TOO_MANY_STREAMS",
    );
    assert!(status.message().contains("replica"));

    // The stalled consumer, reading at last, gets what was buffered, then the reason.
    let (delivered, status) = ending(&mut stalled, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), "CONSUMER_TOO_SLOW");
    eprintln!(
        "a consumer that read nothing while {WRITTEN} events committed got {delivered} of them, then the status"
    );
    assert!(
        delivered < WRITTEN / 2,
        "{delivered} of {WRITTEN} events were held for a consumer that read none"
    );
    no_event(&mut second, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_streams_with_unavailable() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(database) = TestDatabase::create(backend).await else {
            continue;
        };
        let mut app = TestApp::spawn_with(<Settings as TestSettings>::default_for_tests(
            database.url.clone(),
        ))
        .await;
        let customer = app
            .create_customer("Closing Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
            .await;
        app.grant(ADMIN, Some(&customer.id), "READER").await;
        let mut stream = open(&app, ADMIN, watch_request(&[&customer.id], ""))
            .await
            .expect("open");
        let started = Instant::now();
        let (ended, stopped) =
            tokio::join!(ending(&mut stream, Duration::from_secs(5)), app.shutdown());
        stopped.expect("clean shutdown");
        let (_, status) = ended;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason_of(&status), "SHUTTING_DOWN");
        // Well inside the ten-second grace period the test settings give in-flight calls.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        database.drop_now().await;
    }
}

backend_test!(a_cursor_older_than_the_retention_is_out_of_range);
async fn a_cursor_older_than_the_retention_is_out_of_range(app: &TestApp) {
    let w = world(app).await;
    let selection = [w.enforced.id.as_str()];
    let mut stream = open(app, ADMIN, watch_request(&selection, ""))
        .await
        .expect("open");
    app.create_user(&w.enforced.id, "Old Oscar", false, "")
        .await;
    let old = events(&mut stream, 1, Duration::from_secs(5)).await;
    app.create_user(&w.enforced.id, "Old Olive", false, "")
        .await;
    let kept_cursor = events(&mut stream, 1, Duration::from_secs(5)).await[0]
        .0
        .clone();
    drop(stream);
    // A reset awaiting approval (set so in the database: approval is a later issue's) and an
    // event of it, as old as the others: purge-audit keeps it.
    let pending = summarize_only(app, &w.enforced.id, &w.alice.id).await;
    sql(
        &app.db,
        &format!(
            "UPDATE mfa_resets SET state = 'AWAITING_APPROVAL' WHERE id = {}",
            uuid_literal(app, uuid::Uuid::parse_str(&pending).unwrap())
        ),
    )
    .await;
    let txn = store::begin_write(&app.db).await.expect("begin");
    let event = AuditEvent::by(
        ADMIN,
        Some(CustomerId::parse(&w.enforced.id).unwrap()),
        AuditDetails::ResetApprovalRequested {
            users_to_reset: 1,
            approval_required: true,
        },
        mfa_reset::domain::now(),
    )
    .reset(mfa_reset::domain::ids::ResetId::parse(&pending).unwrap());
    audit::record(&txn, vec![event]).await.expect("record");
    store::commit(txn).await.expect("commit");
    // A retention of 0 days: everything that happened before now goes, but the awaiting
    // reset's event.
    let purged = purge_audit(app, 0);
    assert!(purged.starts_with("purged "), "{purged}");
    assert!(!purged.starts_with("purged 0 "), "{purged}");
    let everyone_else = app
        .create_user(&w.enforced.id, "Recent Rhea", false, "")
        .await;

    let expired = open(app, ADMIN, watch_request(&selection, &old[0].0)).await;
    let status = assert_error(expired, Code::OutOfRange, "CURSOR_EXPIRED");
    assert!(status.message().contains("retention"));
    // A cursor at the last event purged missed nothing: it goes on with what is left.
    let mut at_last_purged = open(app, ADMIN, watch_request(&selection, &kept_cursor))
        .await
        .expect("a cursor at the last purged event");
    let rest = events(&mut at_last_purged, 2, Duration::from_secs(5)).await;
    assert_eq!(rest[0].1.reset_id, pending);
    assert_eq!(rest[1].1.user_id, everyone_else.id);
    // From the oldest retained event: only what is left.
    let mut oldest = from_oldest(app, &selection).await;
    let got = events(&mut oldest, 2, Duration::from_secs(5)).await;
    assert_eq!(
        got[0].1.reset_id, pending,
        "the awaiting reset's event is kept"
    );
    assert_eq!(got[1].1.user_id, everyone_else.id);
    no_event(&mut oldest, Duration::from_millis(300)).await;
    // A cursor after everything purged is still good.
    let resumed = open(app, ADMIN, watch_request(&selection, &got[0].0)).await;
    assert!(resumed.is_ok(), "{resumed:?}");
}

/// Summarizes a reset of `user` in `customer` as [`ADMIN`]; returns its id.
async fn summarize_only(app: &TestApp, customer: &str, user: &str) -> String {
    app.users()
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: vec![customer.into()],
                target: users_by_id(vec![user.into()]),
                reason: "approval later".into(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("summarize")
        .into_inner()
        .mfa_reset
        .expect("reset")
        .id
}

async fn sql(db: &DatabaseConnection, statement: &str) {
    db.execute_unprepared(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

fn is_postgres(app: &TestApp) -> bool {
    app.database_url.starts_with("postgres")
}

fn uuid_literal(app: &TestApp, id: uuid::Uuid) -> String {
    if is_postgres(app) {
        format!("'{id}'::uuid")
    } else {
        format!("X'{}'", id.simple())
    }
}

/// Runs `mfa-reset purge-audit --older-than-days DAYS` on the app's database; returns what it
/// printed.
fn purge_audit(app: &TestApp, days: u32) -> String {
    let dir =
        std::env::temp_dir().join(format!("mfa-reset-purge-{}", uuid::Uuid::now_v7().simple()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mfa-reset"))
        .env_remove("MFA_RESET_DATABASE_URL")
        .args(["--database-url", &app.database_url])
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--log",
            "warn",
            "purge-audit",
            "--older-than-days",
            &days.to_string(),
        ])
        .output()
        .expect("run mfa-reset purge-audit");
    assert!(
        output.status.success(),
        "purge-audit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_by_a_replica_of_the_previous_release_reaches_live_streams() {
    run(Backend::Postgres, |app| Box::pin(unstamped_insert(app))).await;
}

/// During a rolling upgrade the previous release still inserts events without a stamp; the
/// database stamps them, so a live stream (positioned after every stamp so far) gets them.
async fn unstamped_insert(app: &TestApp) {
    let w = world(app).await;
    let mut stream = open(app, ADMIN, watch_request(&[&w.enforced.id], ""))
        .await
        .expect("open");
    let id = uuid::Uuid::now_v7();
    sql(
        &app.db,
        &format!(
            "INSERT INTO audit_events (id, customer_id, occurred_at, actor, action, details) \
             VALUES ('{id}', '{}', now(), 'old-replica', 'MFA_POLICY_SET', \
             '{{\"previous_policy\":\"ENFORCED\",\"mfa_policy\":\"ENFORCED\"}}')",
            w.enforced.id
        ),
    )
    .await;
    let got = events(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].1.id, id.to_string());
    assert_eq!(got[0].1.actor, "old-replica");
}
