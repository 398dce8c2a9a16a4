//! Paging and searching of every list (DESIGN.md "Lists page with page_size..."):
//! keyset pages that stay correct while rows are inserted, the page-size rules, tokens
//! that are bound to their request and grant nothing, and the filters of each list.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::future::join_all;
use mfa_reset::proto::v1::{self as pb, users_client::UsersClient};
use prost_types::Timestamp;
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::helpers::{ALL_KINDS, PROVISIONER, TestApp, assert_error, authed, violated_fields};

/// The principal that reads in these tests (roles granted per test).
const VIEWER: &str = "paging-viewer";

/// Fixtures are created this many at a time.
const BATCH: usize = 16;

// ---------------------------------------------------------------------------------------
// Fixtures and calls
// ---------------------------------------------------------------------------------------

/// A customer (ENFORCED, every kind enabled) in which [`VIEWER`] is READER.
async fn viewed_customer(app: &TestApp, name: &str) -> pb::Customer {
    let customer = app
        .create_customer(name, pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(VIEWER, Some(&customer.id), "READER").await;
    customer
}

/// A `User` message to create.
fn new_user(customer_id: &str, display_name: &str, email: &str) -> pb::User {
    pb::User {
        customer_id: customer_id.into(),
        display_name: display_name.into(),
        email: email.into(),
        ..Default::default()
    }
}

/// Creates one user through CreateUser as [`PROVISIONER`].
async fn create(
    users: &mut UsersClient<Channel>,
    token: &str,
    user: pb::User,
) -> Result<pb::User, Status> {
    users
        .create_user(authed(
            pb::CreateUserRequest {
                request_id: Default::default(),
                user: Some(user),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

/// Creates `users` through CreateUser, [`BATCH`] at a time; returns them in order.
async fn create_all(app: &TestApp, users: Vec<pb::User>) -> Vec<pb::User> {
    let token = app.token(PROVISIONER);
    let mut created = Vec::with_capacity(users.len());
    let mut users = users.into_iter().peekable();
    while users.peek().is_some() {
        let batch = users.by_ref().take(BATCH).map(|user| {
            let mut client = app.users();
            let token = token.clone();
            async move {
                create(&mut client, &token, user)
                    .await
                    .expect("create user")
            }
        });
        created.extend(join_all(batch).await);
    }
    created
}

/// Creates `count` users named `<prefix> <i>` in `customer_id`.
async fn create_many(
    app: &TestApp,
    customer_id: &str,
    prefix: &str,
    count: usize,
) -> Vec<pb::User> {
    let users = (0..count)
        .map(|i| {
            new_user(
                customer_id,
                &format!("{prefix} {i}"),
                &format!("{prefix}-{i}@example.com"),
            )
        })
        .collect();
    create_all(app, users).await
}

/// A ListUsers request over `customer_ids`.
fn users_of(customer_ids: &[&str], page_size: i32) -> pb::ListUsersRequest {
    pb::ListUsersRequest {
        customer_ids: customer_ids.iter().map(|id| id.to_string()).collect(),
        page_size,
        ..Default::default()
    }
}

/// One ListUsers call as `subject`.
async fn list_users(
    app: &TestApp,
    subject: &str,
    request: pb::ListUsersRequest,
) -> Result<pb::ListUsersResponse, Status> {
    app.users()
        .list_users(authed(request, &app.token(subject)))
        .await
        .map(|r| r.into_inner())
}

/// Every page of a ListUsers request as [`VIEWER`].
async fn user_pages(app: &TestApp, mut request: pb::ListUsersRequest) -> Vec<Vec<pb::User>> {
    let mut pages = Vec::new();
    loop {
        let page = list_users(app, VIEWER, request.clone())
            .await
            .expect("list users");
        pages.push(page.users);
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not end");
        request.page_token = page.next_page_token;
    }
}

/// The sizes of pages.
fn sizes<T>(pages: &[Vec<T>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

/// The ids of users, in order.
fn user_ids(users: &[pb::User]) -> Vec<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

/// Ids as a set.
fn id_set<'a>(ids: impl IntoIterator<Item = &'a String>) -> HashSet<String> {
    ids.into_iter().cloned().collect()
}

fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a UUID")
}

/// Asserts that ids are strictly ascending (as UUIDs, the keyset order).
fn assert_ascending(ids: &[String]) {
    for pair in ids.windows(2) {
        assert!(
            uuid(&pair[0]) < uuid(&pair[1]),
            "ids out of order: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

/// Asserts INVALID_ARGUMENT naming exactly `fields`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, fields: &[&str]) {
    let status = assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), fields, "{status:?}");
}

// ---------------------------------------------------------------------------------------
// Keyset paging under concurrent inserts
// ---------------------------------------------------------------------------------------

/// Most users the concurrent inserter creates.
const MAX_LATE_USERS: usize = 150;
/// Longest the concurrent inserter runs.
const INSERTER_DEADLINE: Duration = Duration::from_secs(15);

backend_test!(
    list_users_sees_every_user_once_while_users_are_inserted,
    list_users_sees_every_user_once_while_users_are_inserted
);
async fn list_users_sees_every_user_once_while_users_are_inserted(app: &TestApp) {
    let seen = every_user_once_while_users_are_inserted(app, "").await;
    assert_ascending(&seen);
}

backend_test!(
    list_users_in_an_explicit_order_sees_every_user_once_while_users_are_inserted,
    list_users_in_an_explicit_order_sees_every_user_once_while_users_are_inserted
);
async fn list_users_in_an_explicit_order_sees_every_user_once_while_users_are_inserted(
    app: &TestApp,
) {
    for order_by in [
        "display_name",
        "email desc",
        "create_time desc",
        "mfa_reset_time",
    ] {
        every_user_once_while_users_are_inserted(app, order_by).await;
    }
}

/// Pages through two customers' users in `order_by` while users are inserted into both;
/// asserts that every user present before paging began is seen, and none twice; returns
/// the ids in the order seen.
async fn every_user_once_while_users_are_inserted(app: &TestApp, order_by: &str) -> Vec<String> {
    let a = viewed_customer(app, &format!("Keyset A {order_by}")).await;
    let b = viewed_customer(app, &format!("Keyset B {order_by}")).await;
    let early: Vec<pb::User> = (0..40)
        .map(|i| {
            let customer = if i % 2 == 0 { &a.id } else { &b.id };
            new_user(
                customer,
                &format!("Early {i}"),
                &format!("early-{i}@example.com"),
            )
        })
        .collect();
    let early = create_all(app, early).await;
    let early_ids = id_set(early.iter().map(|u| &u.id));

    // Inserts users into both customers, one after another, until told to stop; each
    // id is recorded once its CreateUser has answered (committed).
    let late: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = tokio::spawn({
        let (mut client, token) = (app.users(), app.token(PROVISIONER));
        let (a, b) = (a.id.clone(), b.id.clone());
        let (late, stop) = (late.clone(), stop.clone());
        async move {
            let deadline = Instant::now() + INSERTER_DEADLINE;
            for i in 0..MAX_LATE_USERS {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                let customer = if i % 2 == 0 { &a } else { &b };
                let user = new_user(
                    customer,
                    &format!("Late {i}"),
                    &format!("late-{i}@example.com"),
                );
                let created = create(&mut client, &token, user)
                    .await
                    .expect("create late user");
                late.lock().expect("lock").push(created.id);
            }
        }
    });
    let inserted = || late.lock().expect("lock").clone();
    // Waits (up to 5 s) until more than `count` late users exist.
    let wait_for_insert_after = |count: usize| {
        let (late, inserter) = (&late, &inserter);
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while late.lock().expect("lock").len() <= count
                && !inserter.is_finished()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };

    // Page with page_size 7, letting at least one insert land before and between pages.
    wait_for_insert_after(0).await;
    let present = early_ids
        .union(&id_set(&inserted()))
        .cloned()
        .collect::<HashSet<_>>();
    let mut request = pb::ListUsersRequest {
        order_by: order_by.into(),
        ..users_of(&[&a.id, &b.id], 7)
    };
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let count = inserted().len();
        let page = list_users(app, VIEWER, request.clone())
            .await
            .expect("list users");
        pages += 1;
        assert!(page.users.len() <= 7);
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 200, "paging does not end");
        request.page_token = page.next_page_token;
        wait_for_insert_after(count).await;
    }
    stop.store(true, Ordering::SeqCst);
    inserter.await.expect("inserter task");
    let late = inserted();
    assert!(
        late.len() >= pages,
        "{} inserts for {pages} pages",
        late.len()
    );

    assert_eq!(
        seen.len(),
        id_set(&seen).len(),
        "{order_by:?}: an id was seen twice"
    );
    let seen_set = id_set(&seen);
    let missed: Vec<_> = present.difference(&seen_set).collect();
    assert!(
        missed.is_empty(),
        "{order_by:?}: users present before paging were missed: {missed:?}"
    );
    let known: HashSet<String> = early_ids.union(&id_set(&late)).cloned().collect();
    assert!(
        seen_set.is_subset(&known),
        "a page returned a user that was never created"
    );
    seen
}

// ---------------------------------------------------------------------------------------
// Page sizes and the last page
// ---------------------------------------------------------------------------------------

backend_test!(page_size_zero_means_fifty, page_size_zero_means_fifty);
async fn page_size_zero_means_fifty(app: &TestApp) {
    let customer = viewed_customer(app, "Sixty Users").await;
    let users = create_many(app, &customer.id, "sixty", 60).await;

    let first = list_users(app, VIEWER, users_of(&[&customer.id], 0))
        .await
        .expect("first page");
    assert_eq!(first.users.len(), 50);
    assert!(!first.next_page_token.is_empty());
    let second = list_users(
        app,
        VIEWER,
        pb::ListUsersRequest {
            page_token: first.next_page_token,
            ..users_of(&[&customer.id], 0)
        },
    )
    .await
    .expect("second page");
    assert_eq!(second.users.len(), 10);
    assert!(second.next_page_token.is_empty());
    let listed: Vec<String> = first
        .users
        .iter()
        .chain(&second.users)
        .map(|u| u.id.clone())
        .collect();
    assert_ascending(&listed);
    assert_eq!(id_set(&listed), id_set(users.iter().map(|u| &u.id)));
}

backend_test!(
    page_size_above_500_is_capped_at_500,
    page_size_above_500_is_capped_at_500
);
async fn page_size_above_500_is_capped_at_500(app: &TestApp) {
    let customer = viewed_customer(app, "Many Users").await;
    create_many(app, &customer.id, "many", 520).await;

    for page_size in [501, 1000, i32::MAX] {
        let page = list_users(app, VIEWER, users_of(&[&customer.id], page_size))
            .await
            .expect("list");
        assert_eq!(page.users.len(), 500, "page_size {page_size}");
        assert!(!page.next_page_token.is_empty());
    }
    let pages = user_pages(app, users_of(&[&customer.id], 100_000)).await;
    assert_eq!(sizes(&pages), [500, 20]);
    let ids = user_ids(&pages.concat());
    assert_ascending(&ids);
    assert_eq!(id_set(&ids).len(), 520);
}

backend_test!(
    negative_page_size_is_invalid_on_every_list,
    negative_page_size_is_invalid_on_every_list
);
async fn negative_page_size_is_invalid_on_every_list(app: &TestApp) {
    let customer = viewed_customer(app, "Negative").await;
    let token = app.token(VIEWER);
    let selection = vec![customer.id.clone()];

    assert_invalid(
        list_users(app, VIEWER, users_of(&[&customer.id], -1)).await,
        &["page_size"],
    );
    let result = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest {
                page_size: -5,
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert_invalid(result, &["page_size"]);
    let request = pb::ListUsersWithMethodsRequest {
        customer_ids: selection.clone(),
        page_size: i32::MIN,
        ..Default::default()
    };
    let result = app
        .methods()
        .list_users_with_methods(authed(request, &token))
        .await;
    assert_invalid(result, &["page_size"]);
    let request = pb::ListAuditEventsRequest {
        customer_ids: selection,
        page_size: -1,
        ..Default::default()
    };
    assert_invalid(
        app.audit().list_audit_events(authed(request, &token)).await,
        &["page_size"],
    );
}

backend_test!(
    next_page_token_is_empty_exactly_on_the_last_page,
    next_page_token_is_empty_exactly_on_the_last_page
);
async fn next_page_token_is_empty_exactly_on_the_last_page(app: &TestApp) {
    let six = viewed_customer(app, "Six").await;
    let empty = viewed_customer(app, "Empty").await;
    let users = create_many(app, &six.id, "six", 6).await;

    // A multiple of the page size: two full pages, no empty third one.
    let pages = user_pages(app, users_of(&[&six.id], 3)).await;
    assert_eq!(sizes(&pages), [3, 3]);
    let ids = user_ids(&pages.concat());
    assert_ascending(&ids);
    assert_eq!(id_set(&ids), id_set(users.iter().map(|u| &u.id)));

    // Exactly one full page.
    let page = list_users(app, VIEWER, users_of(&[&six.id], 6))
        .await
        .expect("list");
    assert_eq!((page.users.len(), page.next_page_token.as_str()), (6, ""));
    // One short of a page, and more than a page.
    assert_eq!(sizes(&user_pages(app, users_of(&[&six.id], 7)).await), [6]);
    assert_eq!(
        sizes(&user_pages(app, users_of(&[&six.id], 4)).await),
        [4, 2]
    );
    // Nothing at all: one empty page.
    let page = list_users(app, VIEWER, users_of(&[&empty.id], 3))
        .await
        .expect("list");
    assert_eq!((page.users.len(), page.next_page_token.as_str()), (0, ""));
}

// ---------------------------------------------------------------------------------------
// Page tokens: bound to their request, granting nothing
// ---------------------------------------------------------------------------------------

backend_test!(
    page_token_only_continues_the_request_that_made_it,
    page_token_only_continues_the_request_that_made_it
);
async fn page_token_only_continues_the_request_that_made_it(app: &TestApp) {
    const TWIN: &str = "paging-twin";
    let a = viewed_customer(app, "Token A").await;
    let b = viewed_customer(app, "Token B").await;
    for customer in [&a, &b] {
        app.grant(TWIN, Some(&customer.id), "READER").await;
    }
    create_many(app, &a.id, "token-a", 3).await;
    create_many(app, &b.id, "token-b", 3).await;

    let request = users_of(&[&a.id, &b.id], 2);
    let first = list_users(app, VIEWER, request.clone())
        .await
        .expect("first page");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    // Opaque: the keyset cursor (the page's last id) cannot be read out of it.
    let last = uuid(&first.users.last().expect("a full page").id);
    let decoded = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
    assert!(!token.contains(&last.simple().to_string()));
    assert!(!decoded.windows(16).any(|w| w == last.as_bytes()));
    let with_token = |request: pb::ListUsersRequest| pb::ListUsersRequest {
        page_token: token.clone(),
        ..request
    };

    // Other filters.
    let other_query = pb::ListUsersRequest {
        query: "token".into(),
        ..request.clone()
    };
    assert_invalid(
        list_users(app, VIEWER, with_token(other_query)).await,
        &["page_token"],
    );
    let other_state = pb::ListUsersRequest {
        mfa_states: vec![pb::MfaState::NotRegistered.into()],
        ..request.clone()
    };
    assert_invalid(
        list_users(app, VIEWER, with_token(other_state)).await,
        &["page_token"],
    );
    let fewer_customers = users_of(&[&a.id], 2);
    assert_invalid(
        list_users(app, VIEWER, with_token(fewer_customers)).await,
        &["page_token"],
    );

    // Another principal with the very same roles.
    assert_invalid(
        list_users(app, TWIN, with_token(request.clone())).await,
        &["page_token"],
    );

    // A token of another RPC over the same selection.
    let methods_request = pb::ListUsersWithMethodsRequest {
        customer_ids: request.customer_ids.clone(),
        page_size: 2,
        ..Default::default()
    };
    let methods_token = app
        .methods()
        .list_users_with_methods(authed(methods_request, &app.token(VIEWER)))
        .await
        .expect("list users with methods")
        .into_inner()
        .next_page_token;
    assert!(!methods_token.is_empty());
    let foreign = pb::ListUsersRequest {
        page_token: methods_token,
        ..request.clone()
    };
    assert_invalid(list_users(app, VIEWER, foreign).await, &["page_token"]);

    // Garbage and tampered tokens.
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for bad in [
        "not a token!",
        "AAAA",
        &"A".repeat(200),
        &tampered,
        &token[..token.len() - 4],
    ] {
        let request = pb::ListUsersRequest {
            page_token: bad.to_string(),
            ..request.clone()
        };
        assert_invalid(list_users(app, VIEWER, request).await, &["page_token"]);
    }

    // The same request with another page_size continues where the first page ended
    // (AIP-158).
    let resized = pb::ListUsersRequest {
        page_size: 3,
        ..with_token(request.clone())
    };
    let second = list_users(app, VIEWER, resized)
        .await
        .expect("same request, other page_size");
    assert_eq!(second.users.len(), 3);
    let ids: Vec<String> = first
        .users
        .iter()
        .chain(&second.users)
        .map(|u| u.id.clone())
        .collect();
    assert_ascending(&ids);
    assert!(!second.next_page_token.is_empty());
}

backend_test!(
    page_token_grants_nothing_after_a_role_is_revoked,
    page_token_grants_nothing_after_a_role_is_revoked
);
async fn page_token_grants_nothing_after_a_role_is_revoked(app: &TestApp) {
    let a = viewed_customer(app, "Revoke A").await;
    let b = viewed_customer(app, "Revoke B").await;
    create_many(app, &a.id, "revoke-a", 3).await;
    create_many(app, &b.id, "revoke-b", 3).await;

    let request = users_of(&[&a.id, &b.id], 2);
    let first = list_users(app, VIEWER, request.clone())
        .await
        .expect("first page");
    assert!(!first.next_page_token.is_empty());

    app.revoke(VIEWER, Some(&b.id), "READER").await;
    let next = pb::ListUsersRequest {
        page_token: first.next_page_token,
        ..request
    };
    let status = assert_error(
        list_users(app, VIEWER, next).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
    assert!(status.message().contains(&b.id), "{status:?}");
    assert!(!status.message().contains(&a.id), "{status:?}");
}

// ---------------------------------------------------------------------------------------
// ListCustomers
// ---------------------------------------------------------------------------------------

/// Every page of ListCustomers as `subject`.
async fn customer_pages(app: &TestApp, subject: &str, page_size: i32) -> Vec<Vec<pb::Customer>> {
    let token = app.token(subject);
    let mut request = pb::ListCustomersRequest {
        page_size,
        page_token: String::new(),
    };
    let mut pages = Vec::new();
    loop {
        let page = app
            .customers()
            .list_customers(authed(request.clone(), &token))
            .await
            .expect("list customers")
            .into_inner();
        pages.push(page.customers);
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
        request.page_token = page.next_page_token;
    }
}

backend_test!(
    list_customers_pages_through_the_customers_the_caller_has_a_role_in,
    list_customers_pages_through_the_customers_the_caller_has_a_role_in
);
async fn list_customers_pages_through_the_customers_the_caller_has_a_role_in(app: &TestApp) {
    const SOME: &str = "paging-some-customers";
    const EVERY: &str = "paging-every-customer";
    const NOBODY: &str = "paging-nobody";
    let mut customers = Vec::new();
    for i in 0..7 {
        let kinds = [pb::MethodKind::Phone];
        customers.push(
            app.create_customer(&format!("Tenant {i}"), pb::MfaPolicy::Optional, &kinds)
                .await,
        );
    }
    for customer in &customers[..4] {
        app.grant(SOME, Some(&customer.id), "READER").await;
    }
    // Two roles in one customer still list it once.
    app.grant(SOME, Some(&customers[1].id), "AUTHENTICATION_ADMIN")
        .await;
    app.grant(SOME, Some(&customers[4].id), "AUTHENTICATION_ADMIN")
        .await;
    app.grant(EVERY, None, "READER").await;
    app.grant(EVERY, Some(&customers[0].id), "AUTHENTICATION_ADMIN")
        .await;

    let pages = customer_pages(app, SOME, 2).await;
    assert_eq!(sizes(&pages), [2, 2, 1]);
    let listed: Vec<pb::Customer> = pages.concat();
    let ids: Vec<String> = listed.iter().map(|c| c.id.clone()).collect();
    assert_ascending(&ids);
    assert_eq!(id_set(&ids), id_set(customers[..5].iter().map(|c| &c.id)));
    let roles_of = |id: &str| {
        listed
            .iter()
            .find(|c| c.id == id)
            .expect("listed")
            .caller_roles
            .clone()
    };
    assert_eq!(
        roles_of(&customers[1].id),
        [
            pb::Role::Reader as i32,
            pb::Role::AuthenticationAdmin as i32
        ]
    );
    assert_eq!(
        roles_of(&customers[4].id),
        [pb::Role::AuthenticationAdmin as i32]
    );

    // A role on `*` sees every customer.
    let pages = customer_pages(app, EVERY, 3).await;
    assert_eq!(sizes(&pages), [3, 3, 1]);
    let ids: Vec<String> = pages.concat().iter().map(|c| c.id.clone()).collect();
    assert_ascending(&ids);
    assert_eq!(id_set(&ids), id_set(customers.iter().map(|c| &c.id)));

    // No role anywhere: one empty page.
    assert_eq!(sizes(&customer_pages(app, NOBODY, 2).await), [0]);

    // The caller's token is the caller's own.
    let first = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest {
                page_size: 2,
                page_token: String::new(),
            },
            &app.token(SOME),
        ))
        .await
        .expect("first page")
        .into_inner();
    let replayed = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest {
                page_size: 2,
                page_token: first.next_page_token,
            },
            &app.token(EVERY),
        ))
        .await;
    assert_invalid(replayed, &["page_token"]);
}

// ---------------------------------------------------------------------------------------
// ListAuditEvents
// ---------------------------------------------------------------------------------------

const UPDATER: &str = "paging-audit-updater";

/// Every page of a ListAuditEvents request as [`VIEWER`].
async fn audit_pages(
    app: &TestApp,
    mut request: pb::ListAuditEventsRequest,
) -> Vec<Vec<pb::AuditEvent>> {
    let token = app.token(VIEWER);
    let mut pages = Vec::new();
    loop {
        let page = app
            .audit()
            .list_audit_events(authed(request.clone(), &token))
            .await
            .expect("list audit events")
            .into_inner();
        pages.push(page.audit_events);
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
        request.page_token = page.next_page_token;
    }
}

/// All events of a ListAuditEvents request (every page, page_size 2), checked to be
/// newest first.
async fn audit_events(app: &TestApp, request: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    let events = audit_pages(
        app,
        pb::ListAuditEventsRequest {
            page_size: 2,
            ..request
        },
    )
    .await
    .concat();
    for pair in events.windows(2) {
        assert!(
            uuid(&pair[0].id) > uuid(&pair[1].id),
            "not newest first: {pair:?}"
        );
    }
    events
}

fn audit_request(customer_id: &str) -> pb::ListAuditEventsRequest {
    pb::ListAuditEventsRequest {
        customer_ids: vec![customer_id.into()],
        ..Default::default()
    }
}

/// `items`, sorted.
fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// (action, user id) of each event, in order.
fn what(events: &[pb::AuditEvent]) -> Vec<(pb::AuditAction, String)> {
    events
        .iter()
        .map(|e| (e.action(), e.user_id.clone()))
        .collect()
}

async fn register(app: &TestApp, user: &pb::User, kind: pb::MethodKind, label: &str) {
    app.register_method(user, kind, pb::MethodScope::User, label)
        .await;
}

async fn rename(app: &TestApp, subject: &str, user: &pb::User, name: &str) {
    let request = pb::UpdateUserRequest {
        request_id: Default::default(),
        user: Some(pb::User {
            display_name: name.into(),
            ..user.clone()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    };
    app.users()
        .update_user(authed(request, &app.token(subject)))
        .await
        .expect("update user");
}

fn later(ts: &Timestamp, micros: i32) -> Timestamp {
    let nanos = ts.nanos + micros * 1000;
    Timestamp {
        seconds: ts.seconds + i64::from(nanos / 1_000_000_000),
        nanos: nanos % 1_000_000_000,
    }
}

/// Lets the clock move on to another millisecond, so that batches of events are apart.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

backend_test!(
    list_audit_events_pages_newest_first_and_filters_by_user_actor_action_and_time,
    list_audit_events_pages_newest_first_and_filters_by_user_actor_action_and_time
);
async fn list_audit_events_pages_newest_first_and_filters_by_user_actor_action_and_time(
    app: &TestApp,
) {
    use pb::AuditAction as A;
    // Batch 1: the customer and two users.
    let customer = viewed_customer(app, "Audited").await;
    app.grant(UPDATER, Some(&customer.id), "PROVISIONER").await;
    let [u1, u2] = <[pb::User; 2]>::try_from(create_many(app, &customer.id, "audited", 2).await)
        .expect("two users");
    tick().await;
    // Batch 2: a third user, a method each for the first two.
    let u3 = app
        .create_user(&customer.id, "Audited Three", false, "")
        .await;
    register(app, &u1, pb::MethodKind::Phone, "+1 555 000 0001").await;
    register(app, &u2, pb::MethodKind::Fido2, "YubiKey").await;
    tick().await;
    // Batch 3: a fourth user, and the first renamed by someone else.
    let u4 = app
        .create_user(&customer.id, "Audited Four", false, "")
        .await;
    rename(app, UPDATER, &u1, "Audited Renamed").await;
    // Noise in a customer outside the selection.
    let elsewhere = viewed_customer(app, "Elsewhere").await;
    create_many(app, &elsewhere.id, "elsewhere", 2).await;

    let pages = audit_pages(
        app,
        pb::ListAuditEventsRequest {
            page_size: 3,
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(sizes(&pages), [3, 3, 2]);
    let events = pages.concat();
    for pair in events.windows(2) {
        assert!(
            uuid(&pair[0].id) > uuid(&pair[1].id),
            "not newest first: {pair:?}"
        );
    }
    assert!(events.iter().all(|e| e.customer_id == customer.id));
    let batch1 = sorted(vec![
        (A::CustomerCreated, String::new()),
        (A::UserCreated, u1.id.clone()),
        (A::UserCreated, u2.id.clone()),
    ]);
    let batch2 = sorted(vec![
        (A::UserCreated, u3.id.clone()),
        (A::MethodRegistered, u1.id.clone()),
        (A::MethodRegistered, u2.id.clone()),
    ]);
    let batch3 = sorted(vec![
        (A::UserCreated, u4.id.clone()),
        (A::UserUpdated, u1.id.clone()),
    ]);
    // Events of one millisecond have no order among themselves (u1 and u2 were created
    // concurrently), so the batches, which are milliseconds apart, compare as sets.
    let listed = what(&events);
    assert_eq!(sorted(listed[..2].to_vec()), batch3);
    assert_eq!(sorted(listed[2..5].to_vec()), batch2);
    assert_eq!(sorted(listed[5..].to_vec()), batch1);

    // By user.
    let by_user = audit_events(
        app,
        pb::ListAuditEventsRequest {
            user_id: u1.id.clone(),
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(
        what(&by_user),
        [
            (A::UserUpdated, u1.id.clone()),
            (A::MethodRegistered, u1.id.clone()),
            (A::UserCreated, u1.id.clone())
        ]
    );
    // By actor.
    let by_actor = audit_events(
        app,
        pb::ListAuditEventsRequest {
            actor: UPDATER.into(),
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(what(&by_actor), [(A::UserUpdated, u1.id.clone())]);
    assert_eq!(by_actor[0].actor, UPDATER);
    let by_provisioner = audit_events(
        app,
        pb::ListAuditEventsRequest {
            actor: PROVISIONER.into(),
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(by_provisioner.len(), 7);
    assert!(by_provisioner.iter().all(|e| e.actor == PROVISIONER));
    // By action.
    let by_action = audit_events(
        app,
        pb::ListAuditEventsRequest {
            actions: vec![A::MethodRegistered.into()],
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(
        sorted(what(&by_action)),
        sorted(vec![
            (A::MethodRegistered, u1.id.clone()),
            (A::MethodRegistered, u2.id.clone())
        ])
    );
    // Combined.
    let combined = audit_events(
        app,
        pb::ListAuditEventsRequest {
            user_id: u2.id.clone(),
            actions: vec![A::UserCreated.into()],
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(what(&combined), [(A::UserCreated, u2.id.clone())]);

    // By time: batch 2 starts with the third user's creation, batch 3 with the fourth's.
    let start_of = |user: &pb::User| {
        events
            .iter()
            .find(|e| e.action() == A::UserCreated && e.user_id == user.id)
            .and_then(|e| e.occur_time)
            .expect("creation event")
    };
    let (batch2_start, batch3_start) = (start_of(&u3), start_of(&u4));
    let window = audit_events(
        app,
        pb::ListAuditEventsRequest {
            start_time: Some(batch2_start),
            end_time: Some(batch3_start),
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(sorted(what(&window)), batch2);
    let since = audit_events(
        app,
        pb::ListAuditEventsRequest {
            start_time: Some(batch3_start),
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(sorted(what(&since)), batch3);
    let until = audit_events(
        app,
        pb::ListAuditEventsRequest {
            end_time: Some(batch2_start),
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(sorted(what(&until)), batch1);
    // The window pages like any list.
    let window_pages = audit_pages(
        app,
        pb::ListAuditEventsRequest {
            start_time: Some(batch2_start),
            end_time: Some(batch3_start),
            page_size: 1,
            ..audit_request(&customer.id)
        },
    )
    .await;
    assert_eq!(sizes(&window_pages), [1, 1, 1]);
    assert_eq!(window_pages.concat(), window);
}

backend_test!(
    audit_time_window_is_exact_below_a_millisecond,
    audit_time_window_is_exact_below_a_millisecond
);
async fn audit_time_window_is_exact_below_a_millisecond(app: &TestApp) {
    let customer = viewed_customer(app, "Microseconds").await;
    // An event whose microsecond is not the last of its millisecond, so that one
    // microsecond later is still the same millisecond.
    let mut event = None;
    for i in 0..5 {
        let user = app
            .create_user(&customer.id, &format!("Micro {i}"), false, "")
            .await;
        let request = pb::ListAuditEventsRequest {
            user_id: user.id,
            ..audit_request(&customer.id)
        };
        let created = audit_events(app, request).await.remove(0);
        let at = created.occur_time.expect("occur_time");
        if at.nanos / 1000 % 1000 != 999 {
            event = Some(created);
            break;
        }
    }
    let event = event.expect("an event not at the end of its millisecond");
    let at = event.occur_time.expect("occur_time");
    let just_after = later(&at, 1);
    let about = |start_time, end_time| pb::ListAuditEventsRequest {
        user_id: event.user_id.clone(),
        start_time,
        end_time,
        ..audit_request(&customer.id)
    };
    let includes = |events: Vec<pb::AuditEvent>| events.iter().any(|e| e.id == event.id);

    assert!(
        includes(audit_events(app, about(Some(at), None)).await),
        "at or after its own time"
    );
    assert!(
        !includes(audit_events(app, about(None, Some(at))).await),
        "not before its own time"
    );
    assert!(
        includes(audit_events(app, about(None, Some(just_after))).await),
        "an event at {at:?} occurred before end_time {just_after:?}, but was left out"
    );
    assert!(
        !includes(audit_events(app, about(Some(just_after), None)).await),
        "an event at {at:?} occurred before start_time {just_after:?}, but was listed"
    );
}

// ---------------------------------------------------------------------------------------
// ListUsersWithMethods
// ---------------------------------------------------------------------------------------

/// Every page of a ListUsersWithMethods request as [`VIEWER`].
async fn methods_pages(
    app: &TestApp,
    mut request: pb::ListUsersWithMethodsRequest,
) -> Vec<Vec<pb::UserMethods>> {
    let token = app.token(VIEWER);
    let mut pages = Vec::new();
    loop {
        let page = app
            .methods()
            .list_users_with_methods(authed(request.clone(), &token))
            .await
            .expect("list users with methods")
            .into_inner();
        pages.push(page.users);
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
        request.page_token = page.next_page_token;
    }
}

backend_test!(
    list_users_with_methods_pages_and_filters_by_kind_and_mfa_state,
    list_users_with_methods_pages_and_filters_by_kind_and_mfa_state
);
async fn list_users_with_methods_pages_and_filters_by_kind_and_mfa_state(app: &TestApp) {
    use pb::MethodKind as K;
    let customer = viewed_customer(app, "Methods").await;
    // The hardware token is deactivated, not deleted: an AUTHENTICATION_ADMIN does it.
    const DELETER: &str = "paging-deleter";
    app.grant(DELETER, Some(&customer.id), "AUTHENTICATION_ADMIN")
        .await;
    let users = create_many(app, &customer.id, "methods", 5).await;
    let [phone, two, none, hardware, email] = <[pb::User; 5]>::try_from(users).expect("five users");
    register(app, &phone, K::Phone, "+1 555 000 0002").await;
    register(app, &two, K::Fido2, "YubiKey 5").await;
    register(app, &two, K::Email, "two@example.com").await;
    let token = app
        .register_method(
            &hardware,
            K::HardwareOath,
            pb::MethodScope::Org,
            "serial 1234",
        )
        .await;
    let request = pb::DeleteAuthenticationMethodRequest {
        request_id: Default::default(),
        customer_id: customer.id.clone(),
        method_id: token.id,
        reason: "lost".into(),
    };
    let disposition = app
        .methods()
        .delete_authentication_method(authed(request, &app.token(DELETER)))
        .await
        .expect("deactivate hardware token")
        .into_inner()
        .disposition();
    assert_eq!(disposition, pb::MethodDisposition::Deactivate);
    register(app, &email, K::Email, "email@example.com").await;

    let all = |page_size| pb::ListUsersWithMethodsRequest {
        customer_ids: vec![customer.id.clone()],
        page_size,
        ..Default::default()
    };
    let pages = methods_pages(app, all(2)).await;
    assert_eq!(sizes(&pages), [2, 2, 1]);
    let listed = pages.concat();
    let ids: Vec<String> = listed
        .iter()
        .map(|u| u.user.as_ref().expect("user").id.clone())
        .collect();
    assert_ascending(&ids);
    let kinds_of = |user: &pb::User| -> Vec<K> {
        let entry = listed
            .iter()
            .find(|u| u.user.as_ref().is_some_and(|x| x.id == user.id));
        let mut kinds: Vec<K> = entry
            .expect("listed")
            .authentication_methods
            .iter()
            .map(|m| m.kind())
            .collect();
        kinds.sort();
        kinds
    };
    assert_eq!(kinds_of(&phone), [K::Phone]);
    assert_eq!(kinds_of(&two), [K::Email, K::Fido2]);
    assert_eq!(kinds_of(&none), []);
    assert_eq!(kinds_of(&hardware), [K::HardwareOath]);
    for entry in &listed {
        let user = entry.user.as_ref().expect("user");
        assert!(
            entry
                .authentication_methods
                .iter()
                .all(|m| m.user_id == user.id && m.customer_id == customer.id)
        );
    }

    // Sorted display names ("methods 0" to "methods 4", in the order above); the list's
    // own order is by id, which concurrent creation does not fix.
    let names = |pages: Vec<Vec<pb::UserMethods>>| -> Vec<String> {
        sorted(
            pages
                .concat()
                .into_iter()
                .map(|u| u.user.expect("user").display_name)
                .collect(),
        )
    };
    let by_kinds = |kinds: &[K], page_size| pb::ListUsersWithMethodsRequest {
        method_kinds: kinds.iter().map(|k| *k as i32).collect(),
        ..all(page_size)
    };
    assert_eq!(
        names(methods_pages(app, by_kinds(&[K::Phone], 0)).await),
        [phone.display_name.as_str()]
    );
    assert_eq!(
        names(methods_pages(app, by_kinds(&[K::Email], 1)).await),
        [two.display_name.as_str(), email.display_name.as_str()]
    );
    assert_eq!(
        names(methods_pages(app, by_kinds(&[K::Phone, K::Fido2], 1)).await),
        [phone.display_name.as_str(), two.display_name.as_str()]
    );
    // Only active methods count: the deactivated token matches no kind.
    assert!(names(methods_pages(app, by_kinds(&[K::HardwareOath], 0)).await).is_empty());

    let by_state = |state: pb::MfaState, page_size| pb::ListUsersWithMethodsRequest {
        mfa_states: vec![state.into()],
        ..all(page_size)
    };
    let registered = methods_pages(app, by_state(pb::MfaState::Registered, 2)).await;
    assert_eq!(sizes(&registered), [2, 1]);
    assert_eq!(
        names(registered),
        [
            phone.display_name.as_str(),
            two.display_name.as_str(),
            email.display_name.as_str()
        ]
    );
    let not_registered = methods_pages(app, by_state(pb::MfaState::NotRegistered, 1)).await;
    assert_eq!(sizes(&not_registered), [1, 1]);
    let not_registered = not_registered.concat();
    assert!(
        not_registered
            .iter()
            .all(|u| u.user.as_ref().expect("user").mfa_state() == pb::MfaState::NotRegistered)
    );
    assert_eq!(
        names(vec![not_registered]),
        [none.display_name.as_str(), hardware.display_name.as_str()]
    );
}

// ---------------------------------------------------------------------------------------
// ListUsers search
// ---------------------------------------------------------------------------------------

backend_test!(
    list_users_search_matches_word_prefixes_substrings_and_accents_inside_the_selection,
    list_users_search_matches_word_prefixes_substrings_and_accents_inside_the_selection
);
async fn list_users_search_matches_word_prefixes_substrings_and_accents_inside_the_selection(
    app: &TestApp,
) {
    let customer = viewed_customer(app, "Search").await;
    let second = viewed_customer(app, "Search Second").await;
    let outside = viewed_customer(app, "Search Elsewhere").await;
    let people = [
        ("Alice Archer", "aa@example.com"),
        ("ALINA Bloom", "bloom@example.com"),
        ("Zed Zulu", "alibaba@example.com"),
        ("Bob Alison", "bob@example.com"),
        ("100% Sure", "sure@example.com"),
        ("1000 Islands", "islands@example.com"),
        ("a_b Tester", "tester@example.com"),
        ("Émile Zola", "emile@example.com"),
        ("Back\\slash", "backslash@example.com"),
        ("Thi Nguyễn", "thi.nguyen@contoso.example"),
        ("Nguyen Van An", "an.nguyen@contoso.example"),
        ("Nguyen", "n@fabrikam.example"),
        ("Hanguyen Le", "hle@fabrikam.example"),
        ("Kim Ngu", "kim@fabrikam.example"),
        ("Jürgen Straße", "js@example.com"),
    ];
    let users = people
        .iter()
        .map(|(name, email)| new_user(&customer.id, name, email))
        .collect();
    create_all(app, users).await;
    create_all(
        app,
        vec![new_user(&second.id, "Mai Nguyen", "mai@contoso.example")],
    )
    .await;
    // Outside the selection: matches every search below, and is never found.
    create_all(
        app,
        vec![
            new_user(&outside.id, "Alice Nguyen", "alice.nguyen@contoso.example"),
            new_user(&outside.id, "Émile Hanguyen", "emile@elsewhere.example"),
        ],
    )
    .await;

    let search = |query: &str, page_size: i32| {
        let request = pb::ListUsersRequest {
            query: query.into(),
            ..users_of(&[&customer.id, &second.id], page_size)
        };
        async move {
            let pages = user_pages(app, request).await;
            let names: Vec<String> = pages.concat().into_iter().map(|u| u.display_name).collect();
            (names, pages.len())
        }
    };
    let cases: &[(&str, &[&str])] = &[
        // A last name, at the start or the end of the name, and in the address.
        (
            "nguyen",
            &[
                "Hanguyen Le",
                "Mai Nguyen",
                "Nguyen",
                "Nguyen Van An",
                "Thi Nguyễn",
            ],
        ),
        // Accents, either way round, and case.
        (
            "NGUYỄN",
            &[
                "Hanguyen Le",
                "Mai Nguyen",
                "Nguyen",
                "Nguyen Van An",
                "Thi Nguyễn",
            ],
        ),
        ("emile", &["Émile Zola"]),
        ("ÉMI", &["Émile Zola"]),
        ("émile z", &["Émile Zola"]),
        ("strasse", &["Jürgen Straße"]),
        ("jurg", &["Jürgen Straße"]),
        // A domain, with or without what a user types around it.
        (
            "contoso.example",
            &["Mai Nguyen", "Nguyen Van An", "Thi Nguyễn"],
        ),
        ("@Contoso", &["Mai Nguyen", "Nguyen Van An", "Thi Nguyễn"]),
        ("fabrikam", &["Hanguyen Le", "Kim Ngu", "Nguyen"]),
        // Any word prefix, however short.
        (
            "ng",
            &[
                "Kim Ngu",
                "Mai Nguyen",
                "Nguyen",
                "Nguyen Van An",
                "Thi Nguyễn",
            ],
        ),
        (
            "ali",
            &["ALINA Bloom", "Alice Archer", "Bob Alison", "Zed Zulu"],
        ),
        ("archer", &["Alice Archer"]),
        ("alice a", &["Alice Archer"]),
        ("AA@EXAMPLE", &["Alice Archer"]),
        // Substrings from three characters on; shorter only at a word start.
        ("lison", &["Bob Alison"]),
        (
            "uye",
            &[
                "Hanguyen Le",
                "Mai Nguyen",
                "Nguyen",
                "Nguyen Van An",
                "Thi Nguyễn",
            ],
        ),
        ("uy", &[]),
        ("baba", &["Zed Zulu"]),
        // Punctuation separates words; it is never a wildcard.
        ("100%", &["100% Sure", "1000 Islands"]),
        ("1_0", &[]),
        ("a_b", &["ALINA Bloom", "a_b Tester"]),
        ("back\\", &["Back\\slash"]),
        // Never across the name and the address.
        ("archer aa", &[]),
        ("fabrikam example nobody", &[]),
    ];
    for (query, expected) in cases {
        let (names, _) = search(query, 0).await;
        assert_eq!(sorted(names), *expected, "query {query:?}");
    }
    // Text that folds to nothing searches for nothing: every user of the selection.
    let (everyone, _) = search(" %_@ ", 0).await;
    assert_eq!(everyone.len(), people.len() + 1);

    // Ranked: the exact name, then word prefixes by name, then substrings; and a ranked
    // list pages in that order, one row a page, across the ranks.
    let (ranked, pages) = search("Nguyen", 1).await;
    assert_eq!(
        ranked,
        [
            "Nguyen",
            "Mai Nguyen",
            "Nguyen Van An",
            "Thi Nguyễn",
            "Hanguyen Le"
        ]
    );
    assert_eq!(pages, 5);
    let (exact_address, _) = search("kim@fabrikam.example", 0).await;
    assert_eq!(exact_address[0], "Kim Ngu", "the exact address first");

    // A search's token is bound to its text.
    let first = list_users(
        app,
        VIEWER,
        pb::ListUsersRequest {
            query: "nguyen".into(),
            ..users_of(&[&customer.id, &second.id], 2)
        },
    )
    .await
    .unwrap();
    let other_text = pb::ListUsersRequest {
        query: "ngu".into(),
        page_token: first.next_page_token,
        ..users_of(&[&customer.id, &second.id], 2)
    };
    assert_invalid(list_users(app, VIEWER, other_text).await, &["page_token"]);
}

backend_test!(
    list_users_order_by_sorts_pages_and_binds_the_token_to_the_order,
    list_users_order_by_sorts_pages_and_binds_the_token_to_the_order
);
async fn list_users_order_by_sorts_pages_and_binds_the_token_to_the_order(app: &TestApp) {
    let customer = viewed_customer(app, "Order By").await;
    let people = [
        ("Carol Nguyen", "a.carol@example.com"),
        ("alice Nguyen", "d.alice@example.com"),
        ("Émile Nguyen", "b.emile@example.com"),
        ("Bob Nguyen", "c.bob@example.com"),
        ("Nguyen", "e.nguyen@example.com"),
    ];
    // One after another, so that creation order is the order of `people`.
    let (mut client, token) = (app.users(), app.token(PROVISIONER));
    for (name, email) in people {
        create(&mut client, &token, new_user(&customer.id, name, email))
            .await
            .expect("create user");
    }
    let ordered = |order_by: &str, query: &str| {
        let request = pb::ListUsersRequest {
            order_by: order_by.into(),
            query: query.into(),
            ..users_of(&[&customer.id], 1)
        };
        async move {
            let pages = user_pages(app, request).await;
            assert!(pages.iter().all(|page| page.len() <= 1));
            let names: Vec<String> = pages.concat().into_iter().map(|u| u.display_name).collect();
            names
        }
    };
    let by_name = [
        "alice Nguyen",
        "Bob Nguyen",
        "Carol Nguyen",
        "Émile Nguyen",
        "Nguyen",
    ];
    assert_eq!(ordered("display_name", "").await, by_name);
    assert_eq!(ordered("display_name asc", "").await, by_name);
    let mut reversed = by_name;
    reversed.reverse();
    assert_eq!(ordered("display_name desc", "").await, reversed);
    assert_eq!(
        ordered("email", "").await,
        [
            "Carol Nguyen",
            "Émile Nguyen",
            "Bob Nguyen",
            "alice Nguyen",
            "Nguyen"
        ]
    );
    let created: Vec<&str> = people.iter().map(|(name, _)| *name).collect();
    assert_eq!(ordered("create_time", "").await, created);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(ordered("create_time desc", "").await, newest_first);
    // Never reset: all tie, broken by id.
    assert_eq!(ordered("mfa_reset_time", "").await, created);
    // An explicit order replaces a search's ranking (the exact "Nguyen" would come first).
    assert_eq!(ordered("display_name", "nguyen").await, by_name);

    // A token is bound to its order.
    let first = list_users(
        app,
        VIEWER,
        pb::ListUsersRequest {
            order_by: "display_name".into(),
            ..users_of(&[&customer.id], 2)
        },
    )
    .await
    .unwrap();
    let other_order = pb::ListUsersRequest {
        order_by: "email".into(),
        page_token: first.next_page_token.clone(),
        ..users_of(&[&customer.id], 2)
    };
    assert_invalid(list_users(app, VIEWER, other_order).await, &["page_token"]);
    let no_order = pb::ListUsersRequest {
        page_token: first.next_page_token,
        ..users_of(&[&customer.id], 2)
    };
    assert_invalid(list_users(app, VIEWER, no_order).await, &["page_token"]);
    for bad in ["name", "display_name up", "email desc asc"] {
        let request = pb::ListUsersRequest {
            order_by: bad.into(),
            ..users_of(&[&customer.id], 2)
        };
        assert_invalid(list_users(app, VIEWER, request).await, &["order_by"]);
    }
    // ListUsersWithMethods takes the same order.
    let with_methods = app
        .methods()
        .list_users_with_methods(authed(
            pb::ListUsersWithMethodsRequest {
                customer_ids: vec![customer.id.clone()],
                order_by: "display_name desc".into(),
                ..Default::default()
            },
            &app.token(VIEWER),
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = (with_methods.users.iter())
        .map(|u| u.user.as_ref().unwrap().display_name.as_str())
        .collect();
    assert_eq!(names, reversed);
}
