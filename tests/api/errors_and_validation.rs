//! Errors (DESIGN.md "Errors", "Selection rules"): every INVALID_ARGUMENT names every
//! violated field at once, the selection rules answer PERMISSION_DENIED or NOT_FOUND
//! without revealing what lies outside the selection, duplicates are ALREADY_EXISTS
//! naming the field, and no error carries internal detail.

use futures::future::join_all;
use mfa_reset::proto::v1 as pb;
use prost_types::{FieldMask, Timestamp};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{
    ADMIN, PROVISIONER, TestApp, World, assert_error, authed, by_id, violated_fields, world,
};

// ---------------------------------------------------------------------------------------
// Calls and checks
// ---------------------------------------------------------------------------------------

/// Asserts the code and ErrorInfo reason, and that the status carries no internal
/// detail: never INTERNAL, and no SQL, driver or backend words in its message or
/// details.
fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) -> Status {
    assert_ne!(code, Code::Internal, "no test here expects INTERNAL");
    let status = assert_error(result, code, reason);
    let details = status.get_error_details();
    let mut texts = vec![status.message().to_string()];
    if let Some(bad_request) = details.bad_request() {
        texts.extend(
            bad_request
                .field_violations
                .iter()
                .map(|v| v.description.clone()),
        );
    }
    if let Some(info) = details.error_info() {
        texts.extend(info.metadata.values().cloned());
    }
    for text in texts {
        let lower = text.to_lowercase();
        for word in [
            "select \"",
            "select *",
            "insert into",
            "delete from",
            "from \"",
            "constraint",
            "duplicate key",
            "sqlstate",
            "returned from database",
            "sqlx",
            "sea_orm",
            "sea-orm",
            "dberr",
            "sqlite",
            "postgres",
            "violates",
            "panicked",
        ] {
            assert!(!lower.contains(word), "{word:?} leaks in {status:?}");
        }
    }
    status
}

/// Asserts INVALID_ARGUMENT naming exactly `fields`, in this order.
fn expect_invalid<T: std::fmt::Debug>(result: Result<T, Status>, fields: &[&str]) -> Status {
    let status = expect_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), fields, "{status:?}");
    status
}

/// Every UUID in `text`.
fn uuids_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .filter(|word| word.len() == 36 && Uuid::parse_str(word).is_ok())
        .map(str::to_string)
        .collect()
}

fn random_id() -> String {
    Uuid::now_v7().to_string()
}

fn ids(customers: &[&pb::Customer]) -> Vec<String> {
    customers.iter().map(|c| c.id.clone()).collect()
}

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

async fn get_user(
    app: &TestApp,
    subject: &str,
    customer_ids: Vec<String>,
    user_id: &str,
) -> Result<pb::User, Status> {
    let request = pb::GetUserRequest {
        customer_ids,
        user: Some(by_id(user_id)),
    };
    app.users()
        .get_user(authed(request, &app.token(subject)))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn get_customer(app: &TestApp, subject: &str, id: &str) -> Result<pb::Customer, Status> {
    let request = pb::GetCustomerRequest {
        customer_id: id.into(),
    };
    app.customers()
        .get_customer(authed(request, &app.token(subject)))
        .await
        .map(|r| r.into_inner().customer.expect("customer"))
}

async fn create_user(app: &TestApp, subject: &str, user: pb::User) -> Result<pb::User, Status> {
    app.users()
        .create_user(authed(
            pb::CreateUserRequest {
                request_id: Default::default(),
                user: Some(user),
            },
            &app.token(subject),
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn update_user(
    app: &TestApp,
    user: pb::User,
    paths: Option<&[&str]>,
) -> Result<pb::User, Status> {
    let request = pb::UpdateUserRequest {
        request_id: Default::default(),
        user: Some(user),
        update_mask: paths.map(|paths| FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    app.users()
        .update_user(authed(request, &app.token(PROVISIONER)))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

fn new_user(customer_id: &str, display_name: &str, email: &str, subject: &str) -> pb::User {
    pb::User {
        customer_id: customer_id.into(),
        display_name: display_name.into(),
        email: email.into(),
        external_subject: subject.into(),
        ..Default::default()
    }
}

async fn register(
    app: &TestApp,
    request: pb::RegisterAuthenticationMethodRequest,
) -> Result<pb::AuthenticationMethod, Status> {
    app.methods()
        .register_authentication_method(authed(request, &app.token(PROVISIONER)))
        .await
        .map(|r| r.into_inner().authentication_method.expect("method"))
}

/// A principal with READER on `*`.
const STAR_READER: &str = "errors-star-reader";

// ---------------------------------------------------------------------------------------
// INVALID_ARGUMENT names every violated field at once
// ---------------------------------------------------------------------------------------

backend_test!(
    list_users_names_every_violated_field_at_once,
    list_users_names_every_violated_field_at_once
);
async fn list_users_names_every_violated_field_at_once(app: &TestApp) {
    let valid = random_id();
    let request = pb::ListUsersRequest {
        customer_ids: vec!["nope".into(), valid.clone(), valid],
        page_size: -1,
        mfa_states: vec![99],
        ..Default::default()
    };
    let status = expect_invalid(
        list_users(app, ADMIN, request).await,
        &[
            "customer_ids[0]",
            "customer_ids[2]",
            "mfa_states[0]",
            "page_size",
        ],
    );
    let descriptions: Vec<String> = status
        .get_error_details()
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.description.clone())
        .collect();
    assert!(
        descriptions.iter().all(|d| !d.is_empty()),
        "{descriptions:?}"
    );
}

backend_test!(
    create_user_names_every_violated_field_at_once,
    create_user_names_every_violated_field_at_once
);
async fn create_user_names_every_violated_field_at_once(app: &TestApp) {
    let user = new_user("not-a-customer", "", "not-an-email", "");
    expect_invalid(
        create_user(app, PROVISIONER, user).await,
        &["user.customer_id", "user.display_name", "user.email"],
    );
    let missing = app
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                request_id: Default::default(),
                user: None,
            },
            &app.token(PROVISIONER),
        ))
        .await;
    expect_invalid(missing, &["user"]);
}

backend_test!(
    register_method_names_every_violated_field_at_once,
    register_method_names_every_violated_field_at_once
);
async fn register_method_names_every_violated_field_at_once(app: &TestApp) {
    let w = world(app).await;
    let request = pb::RegisterAuthenticationMethodRequest {
        request_id: Default::default(),
        customer_id: w.enforced.id.clone(),
        user_id: w.alice.id.clone(),
        kind: pb::MethodKind::Unspecified.into(),
        scope: 42,
        label: String::new(),
        secret_ref: String::new(),
    };
    expect_invalid(register(app, request).await, &["kind", "scope", "label"]);
    let request = pb::RegisterAuthenticationMethodRequest {
        request_id: Default::default(),
        customer_id: String::new(),
        user_id: "alice".into(),
        kind: 77,
        scope: pb::MethodScope::User.into(),
        label: "  ".into(),
        secret_ref: String::new(),
    };
    expect_invalid(
        register(app, request).await,
        &["customer_id", "user_id", "kind", "label"],
    );
}

backend_test!(
    other_requests_name_every_violated_field_too,
    other_requests_name_every_violated_field_too
);
async fn other_requests_name_every_violated_field_too(app: &TestApp) {
    let token = app.token(ADMIN);
    let request = pb::ListUsersWithMethodsRequest {
        customer_ids: vec![random_id()],
        method_kinds: vec![pb::MethodKind::Phone.into(), 0, 99],
        mfa_states: vec![-3],
        ..Default::default()
    };
    let result = app
        .methods()
        .list_users_with_methods(authed(request, &token))
        .await;
    expect_invalid(
        result,
        &["mfa_states[0]", "method_kinds[1]", "method_kinds[2]"],
    );

    let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
    let request = pb::ListAuditEventsRequest {
        customer_ids: vec![],
        user_id: "someone".into(),
        actions: vec![99],
        start_time: at(2_000_000_000),
        end_time: at(1_000_000_000),
        page_size: -1,
        ..Default::default()
    };
    let result = app.audit().list_audit_events(authed(request, &token)).await;
    expect_invalid(
        result,
        &[
            "customer_ids",
            "user_id",
            "actions[0]",
            "end_time",
            "page_size",
        ],
    );

    let customer = pb::Customer {
        display_name: String::new(),
        mfa_policy: 9,
        ..Default::default()
    };
    let request = pb::CreateCustomerRequest {
        request_id: Default::default(),
        customer: Some(customer),
    };
    let result = app
        .customers()
        .create_customer(authed(request, &app.token(PROVISIONER)))
        .await;
    expect_invalid(
        result,
        &[
            "customer.display_name",
            "customer.mfa_policy",
            "customer.enabled_method_kinds",
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Selections and ids
// ---------------------------------------------------------------------------------------

backend_test!(
    empty_or_oversized_selections_and_malformed_ids_are_invalid,
    empty_or_oversized_selections_and_malformed_ids_are_invalid
);
async fn empty_or_oversized_selections_and_malformed_ids_are_invalid(app: &TestApp) {
    let w = world(app).await;
    let users_of = |customer_ids: Vec<String>| pb::ListUsersRequest {
        customer_ids,
        ..Default::default()
    };

    expect_invalid(
        list_users(app, ADMIN, users_of(vec![])).await,
        &["customer_ids"],
    );
    let too_many: Vec<String> = (0..501).map(|_| random_id()).collect();
    expect_invalid(
        list_users(app, ADMIN, users_of(too_many)).await,
        &["customer_ids"],
    );
    let selection = vec![w.enforced.id.clone()];
    let simple = Uuid::parse_str(&w.alice.id)
        .expect("uuid")
        .simple()
        .to_string();
    for bad in ["", "not-a-uuid", &simple, &format!("{{{}}}", w.alice.id)] {
        let result = get_user(app, ADMIN, selection.clone(), bad).await;
        expect_invalid(result, &["user_id"]);
    }
    let result = get_user(app, ADMIN, vec!["enforced".into()], "alice").await;
    expect_invalid(result, &["customer_ids[0]", "user_id"]);
    expect_invalid(get_customer(app, ADMIN, "enforced").await, &["customer_id"]);
}

backend_test!(
    errors_about_a_selection_of_500_customers_reach_the_client,
    errors_about_a_selection_of_500_customers_reach_the_client
);
/// A selection may hold 500 customers, so an error about each of them must still fit in
/// the response trailers (`grpc-message` and `grpc-status-details-bin` are HTTP/2
/// headers, which clients limit to 8 to 16 KiB).
async fn errors_about_a_selection_of_500_customers_reach_the_client(app: &TestApp) {
    let w = world(app).await;
    let users_of = |customer_ids: Vec<String>| pb::ListUsersRequest {
        customer_ids,
        ..Default::default()
    };

    // No role in 499 of them.
    let mut selection: Vec<String> = (0..499).map(|_| random_id()).collect();
    selection.push(w.enforced.id.clone());
    let result = list_users(app, ADMIN, users_of(selection.clone())).await;
    let status = expect_error(result, Code::PermissionDenied, "NO_ROLE");
    assert!(
        uuids_in(status.message())
            .iter()
            .all(|id| selection.contains(id))
    );

    // 500 malformed ids.
    let malformed: Vec<String> = (0..500).map(|i| format!("customer-{i}")).collect();
    let status = expect_error(
        list_users(app, ADMIN, users_of(malformed)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status).first().map(String::as_str),
        Some("customer_ids[0]")
    );

    // The channel still works.
    list_users(app, ADMIN, users_of(ids(&[&w.enforced])))
        .await
        .expect("list users");
}

backend_test!(
    a_customer_without_a_role_is_permission_denied_naming_only_requested_ids,
    a_customer_without_a_role_is_permission_denied_naming_only_requested_ids
);
async fn a_customer_without_a_role_is_permission_denied_naming_only_requested_ids(app: &TestApp) {
    let w = world(app).await;
    let missing = random_id();
    let requested = vec![w.enforced.id.clone(), w.other.id.clone(), missing.clone()];
    let request = pb::ListUsersRequest {
        customer_ids: requested.clone(),
        ..Default::default()
    };
    let status = expect_error(
        list_users(app, ADMIN, request).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
    let named = uuids_in(status.message());
    assert!(
        named.contains(&w.other.id) && named.contains(&missing),
        "{status:?}"
    );
    assert!(named.iter().all(|id| requested.contains(id)), "{status:?}");
    // Not the customers the caller may see, nor any other.
    assert!(!named.contains(&w.enforced.id), "{status:?}");
    for id in ids(&[&w.optional, &w.no_hardware]) {
        assert!(!status.message().contains(&id), "{status:?}");
    }

    // The same for every RPC with a selection.
    let token = app.token(ADMIN);
    let selection = vec![w.other.id.clone()];
    let request = pb::ListUsersWithMethodsRequest {
        customer_ids: selection.clone(),
        ..Default::default()
    };
    let result = app
        .methods()
        .list_users_with_methods(authed(request, &token))
        .await;
    expect_error(result, Code::PermissionDenied, "NO_ROLE");
    let request = pb::ListAuditEventsRequest {
        customer_ids: selection.clone(),
        ..Default::default()
    };
    let result = app.audit().list_audit_events(authed(request, &token)).await;
    expect_error(result, Code::PermissionDenied, "NO_ROLE");
    let result = get_user(app, ADMIN, selection.clone(), &w.stranger.id).await;
    expect_error(result, Code::PermissionDenied, "NO_ROLE");
    let request = pb::DescribeSelectionRequest {
        customer_ids: selection,
    };
    let result = app
        .customers()
        .describe_selection(authed(request, &token))
        .await;
    expect_error(result, Code::PermissionDenied, "NO_ROLE");

    // A role that does not allow the action is another reason.
    let user = new_user(&w.enforced.id, "New Person", "new.person@example.com", "");
    expect_error(
        create_user(app, ADMIN, user).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
}

backend_test!(
    an_unknown_customer_is_permission_denied_unless_the_caller_holds_a_star_role,
    an_unknown_customer_is_permission_denied_unless_the_caller_holds_a_star_role
);
async fn an_unknown_customer_is_permission_denied_unless_the_caller_holds_a_star_role(
    app: &TestApp,
) {
    let w = world(app).await;
    app.grant(STAR_READER, None, "READER").await;
    let missing = random_id();
    let request = |ids: &[&str]| pb::ListUsersRequest {
        customer_ids: ids.iter().map(|id| id.to_string()).collect(),
        ..Default::default()
    };

    // Without `*`, a customer that does not exist looks like one without a role: no probing.
    let status = expect_error(
        list_users(app, ADMIN, request(&[&missing])).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
    assert!(status.message().contains(&missing), "{status:?}");
    let result = list_users(app, ADMIN, request(&[&w.enforced.id, &missing])).await;
    expect_error(result, Code::PermissionDenied, "NO_ROLE");

    // With `*`, the caller may see every customer, so a missing one is NOT_FOUND.
    let status = expect_error(
        list_users(app, STAR_READER, request(&[&w.enforced.id, &missing])).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let info = status
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("ResourceInfo");
    assert_eq!(info.resource_name, missing);
    assert_eq!(uuids_in(status.message()), [missing.as_str()]);
    // And the customers that exist are listed.
    let listed = list_users(app, STAR_READER, request(&[&w.other.id]))
        .await
        .expect("list");
    assert_eq!(listed.users.len(), 1);
}

backend_test!(
    a_user_outside_the_selection_is_not_found_even_where_it_exists,
    a_user_outside_the_selection_is_not_found_even_where_it_exists
);
async fn a_user_outside_the_selection_is_not_found_even_where_it_exists(app: &TestApp) {
    let w = world(app).await;
    app.grant(STAR_READER, None, "READER").await;
    let enforced = ids(&[&w.enforced]);
    let two = ids(&[&w.enforced, &w.optional]);

    // The stranger exists, in a customer outside the selection.
    for (subject, selection) in [(ADMIN, &enforced), (ADMIN, &two), (STAR_READER, &enforced)] {
        let result = get_user(app, subject, selection.clone(), &w.stranger.id).await;
        let status = expect_error(result, Code::NotFound, "NOT_FOUND");
        assert!(!status.message().contains(&w.other.id), "{status:?}");
        let request = pb::ListAuthenticationMethodsRequest {
            page_size: Default::default(),
            page_token: Default::default(),
            customer_ids: selection.clone(),
            user_id: w.stranger.id.clone(),
        };
        let result = app
            .methods()
            .list_authentication_methods(authed(request, &app.token(subject)))
            .await;
        expect_error(result, Code::NotFound, "NOT_FOUND");
    }
    // Bob exists in `optional`, which the caller may read, but did not select.
    expect_error(
        get_user(app, ADMIN, enforced.clone(), &w.bob.id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_error(
        get_user(app, ADMIN, enforced.clone(), &random_id()).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    // Inside the selection, all of them are found.
    get_user(app, ADMIN, two, &w.bob.id)
        .await
        .expect("bob in the selection");
    let everyone = ids(&[&w.other]);
    get_user(app, STAR_READER, everyone, &w.stranger.id)
        .await
        .expect("stranger in the selection");
}

backend_test!(
    get_customer_without_a_role_is_not_found,
    get_customer_without_a_role_is_not_found
);
async fn get_customer_without_a_role_is_not_found(app: &TestApp) {
    let w = world(app).await;
    let status = expect_error(
        get_customer(app, ADMIN, &w.other.id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let missing = random_id();
    let unknown = expect_error(
        get_customer(app, ADMIN, &missing).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    // An existing customer and a missing one answer alike.
    assert_eq!(
        status.message().replace(&w.other.id, "ID"),
        unknown.message().replace(&missing, "ID")
    );
    let seen = get_customer(app, ADMIN, &w.no_hardware.id)
        .await
        .expect("a customer with a role");
    assert_eq!(seen.caller_roles, [pb::Role::Reader as i32]);
}

// ---------------------------------------------------------------------------------------
// ALREADY_EXISTS
// ---------------------------------------------------------------------------------------

backend_test!(
    taken_email_or_subject_is_already_exists_naming_the_field,
    taken_email_or_subject_is_already_exists_naming_the_field
);
async fn taken_email_or_subject_is_already_exists_naming_the_field(app: &TestApp) {
    let w = world(app).await;
    let taken_email = w.alice.email.to_uppercase();
    assert_ne!(taken_email, w.alice.email);

    let user = new_user(&w.enforced.id, "Alice Again", &taken_email, "");
    let status = expect_error(
        create_user(app, PROVISIONER, user).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_eq!(violated_fields(&status), ["user.email"]);
    let user = new_user(
        &w.enforced.id,
        "Alice Twin",
        "alice.twin@example.com",
        "alice-sub",
    );
    let status = expect_error(
        create_user(app, PROVISIONER, user).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_eq!(violated_fields(&status), ["user.external_subject"]);

    // Both are unique per customer only.
    let user = new_user(&w.other.id, "Alice Elsewhere", &taken_email, "alice-sub");
    let created = create_user(app, PROVISIONER, user)
        .await
        .expect("same e-mail, other customer");
    assert_eq!(created.email, w.alice.email);

    // Updating onto a taken value is the same error.
    let onto_alice = pb::User {
        email: taken_email,
        ..w.root.clone()
    };
    let status = expect_error(
        update_user(app, onto_alice, Some(&["email"])).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_eq!(violated_fields(&status), ["user.email"]);
    let onto_alice = pb::User {
        external_subject: "alice-sub".into(),
        ..w.root.clone()
    };
    let status = expect_error(
        update_user(app, onto_alice, Some(&["external_subject"])).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    assert_eq!(violated_fields(&status), ["user.external_subject"]);

    // Customer names are unique across the service.
    let customer = pb::Customer {
        display_name: w.enforced.display_name.clone(),
        mfa_policy: pb::MfaPolicy::Optional.into(),
        enabled_method_kinds: vec![pb::MethodKind::Phone.into()],
        ..Default::default()
    };
    let request = pb::CreateCustomerRequest {
        request_id: Default::default(),
        customer: Some(customer),
    };
    let result = app
        .customers()
        .create_customer(authed(request, &app.token(PROVISIONER)))
        .await;
    let status = expect_error(result, Code::AlreadyExists, "ALREADY_EXISTS");
    assert_eq!(violated_fields(&status), ["customer.display_name"]);
}

backend_test!(
    racing_creates_of_one_email_make_one_user_and_already_exists_for_the_rest,
    racing_creates_of_one_email_make_one_user_and_already_exists_for_the_rest
);
async fn racing_creates_of_one_email_make_one_user_and_already_exists_for_the_rest(app: &TestApp) {
    let customer = app
        .create_customer("Racing", pb::MfaPolicy::Optional, &[pb::MethodKind::Phone])
        .await;
    let results = join_all((0..8).map(|i| {
        let email = if i % 2 == 0 {
            "racer@example.com"
        } else {
            "Racer@EXAMPLE.com"
        };
        let user = new_user(&customer.id, &format!("Racer {i}"), email, "");
        create_user(app, PROVISIONER, user)
    }))
    .await;
    let (created, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(created.len(), 1, "{refused:?}");
    for result in refused {
        let status = expect_error(result, Code::AlreadyExists, "ALREADY_EXISTS");
        assert_eq!(violated_fields(&status), ["user.email"]);
    }
}

// ---------------------------------------------------------------------------------------
// FAILED_PRECONDITION
// ---------------------------------------------------------------------------------------

backend_test!(
    registering_a_kind_the_customer_has_not_enabled_is_failed_precondition,
    registering_a_kind_the_customer_has_not_enabled_is_failed_precondition
);
async fn registering_a_kind_the_customer_has_not_enabled_is_failed_precondition(app: &TestApp) {
    let World { optional, bob, .. } = world(app).await;
    let request = pb::RegisterAuthenticationMethodRequest {
        request_id: Default::default(),
        customer_id: optional.id.clone(),
        user_id: bob.id.clone(),
        kind: pb::MethodKind::HardwareOath.into(),
        scope: pb::MethodScope::Org.into(),
        label: "serial 55512345".into(),
        secret_ref: String::new(),
    };
    let status = expect_error(
        register(app, request).await,
        Code::FailedPrecondition,
        "METHOD_KIND_NOT_ENABLED",
    );
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("method_kind").map(String::as_str),
        Some("METHOD_KIND_HARDWARE_OATH"),
        "{status:?}"
    );
    assert_eq!(
        info.metadata.get("customer_id"),
        Some(&optional.id),
        "{status:?}"
    );
    // Nothing was registered.
    let user = crate::helpers::get_user(app, &optional.id, &bob.id)
        .await
        .expect("bob");
    assert_eq!(user.active_method_count, 0);
}

// ---------------------------------------------------------------------------------------
// UpdateUser masks
// ---------------------------------------------------------------------------------------

backend_test!(
    update_user_refuses_unknown_mask_paths_and_empty_masks,
    update_user_refuses_unknown_mask_paths_and_empty_masks
);
async fn update_user_refuses_unknown_mask_paths_and_empty_masks(app: &TestApp) {
    let w = world(app).await;
    let renamed = pb::User {
        display_name: "Alice Renamed".into(),
        ..w.alice.clone()
    };

    expect_invalid(
        update_user(app, renamed.clone(), Some(&["nickname"])).await,
        &["update_mask.paths[0]"],
    );
    expect_invalid(
        update_user(
            app,
            renamed.clone(),
            Some(&["display_name", "mfa_state", "id"]),
        )
        .await,
        &["update_mask.paths[1]", "update_mask.paths[2]"],
    );
    expect_invalid(
        update_user(app, renamed.clone(), Some(&[])).await,
        &["update_mask"],
    );
    expect_invalid(
        update_user(app, renamed.clone(), None).await,
        &["update_mask"],
    );
    // A named field is validated; an unnamed one is ignored.
    let bad_email = pb::User {
        email: "nope".into(),
        ..renamed.clone()
    };
    expect_invalid(
        update_user(app, bad_email.clone(), Some(&["email"])).await,
        &["user.email"],
    );
    let updated = update_user(app, bad_email, Some(&["display_name"]))
        .await
        .expect("update");
    assert_eq!(
        (updated.display_name.as_str(), updated.email.as_str()),
        ("Alice Renamed", w.alice.email.as_str())
    );
    // Nothing changed by the refused updates but the one that succeeded.
    let alice = crate::helpers::get_user(app, &w.enforced.id, &w.alice.id)
        .await
        .expect("alice");
    assert_eq!(alice.display_name, "Alice Renamed");
}
