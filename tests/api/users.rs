//! Users: finding them across a selection, and provisioning them.

use mfa_reset::proto::v1::{self as pb};
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

async fn list(app: &TestApp, request: pb::ListUsersRequest) -> Vec<pb::User> {
    app.users()
        .list_users(authed(request, &app.token(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .users
}

fn names(users: &[pb::User]) -> Vec<&str> {
    users.iter().map(|u| u.display_name.as_str()).collect()
}

backend_test!(lists_users_across_the_selection_only);
async fn lists_users_across_the_selection_only(app: &TestApp) {
    let w = world(app).await;
    let users = list(
        app,
        pb::ListUsersRequest {
            customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        names(&users),
        [
            "Alice Archer",
            "Root Admin",
            "Bob Baker",
            "Olga Admin",
            "Me Myself"
        ],
        "creation order"
    );
    assert!(
        users
            .iter()
            .all(|u| u.customer_id == w.enforced.id || u.customer_id == w.optional.id)
    );
    let alice = users.iter().find(|u| u.id == w.alice.id).unwrap();
    assert_eq!(alice.active_method_count, 2);
    assert_eq!(alice.mfa_state, i32::from(pb::MfaState::Registered));
    assert_eq!(alice.email, "alice.archer@example.com");
    let bob = users.iter().find(|u| u.id == w.bob.id).unwrap();
    assert_eq!(bob.mfa_state, i32::from(pb::MfaState::NotRegistered));
}

backend_test!(searches_by_name_or_email_words_and_filters_by_mfa_state);
async fn searches_by_name_or_email_words_and_filters_by_mfa_state(app: &TestApp) {
    let w = world(app).await;
    let selection = vec![w.enforced.id.clone(), w.optional.id.clone()];
    let by_name = list(
        app,
        pb::ListUsersRequest {
            customer_ids: selection.clone(),
            query: "ROOT".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&by_name), ["Root Admin"]);
    let by_email = list(
        app,
        pb::ListUsersRequest {
            customer_ids: selection.clone(),
            query: "bob.ba".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&by_email), ["Bob Baker"]);
    let last_name = list(
        app,
        pb::ListUsersRequest {
            customer_ids: selection.clone(),
            query: "archer".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&last_name), ["Alice Archer"], "any word of the name");
    let unregistered = list(
        app,
        pb::ListUsersRequest {
            customer_ids: selection.clone(),
            mfa_states: vec![pb::MfaState::NotRegistered.into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&unregistered), ["Bob Baker"]);
    let registered = list(
        app,
        pb::ListUsersRequest {
            customer_ids: selection,
            mfa_states: vec![pb::MfaState::Registered.into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        names(&registered),
        ["Alice Archer", "Root Admin", "Olga Admin", "Me Myself"]
    );
}

backend_test!(gets_a_user_only_inside_the_selection);
async fn gets_a_user_only_inside_the_selection(app: &TestApp) {
    let w = world(app).await;
    let alice = get_user(app, &w.enforced.id, &w.alice.id).await.unwrap();
    assert_eq!(alice.display_name, "Alice Archer");
    assert_eq!(alice.external_subject, "alice-sub");
    // Alice exists, but not in the selected customer: NOT_FOUND, not PERMISSION_DENIED.
    assert_error(
        get_user(app, &w.optional.id, &w.alice.id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    // The stranger's customer is not one the caller may select at all.
    assert_error(
        get_user(app, &w.other.id, &w.stranger.id).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
}

backend_test!(provisioner_creates_and_updates_users);
async fn provisioner_creates_and_updates_users(app: &TestApp) {
    let w = world(app).await;
    let token = app.token(PROVISIONER);
    let created = app
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                request_id: Default::default(),
                user: Some(pb::User {
                    customer_id: w.optional.id.clone(),
                    display_name: "  Nina Novak ".into(),
                    email: "Nina.Novak@Example.com".into(),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(created.display_name, "Nina Novak");
    assert_eq!(created.email, "nina.novak@example.com");
    assert!(!created.admin);
    assert_eq!(created.mfa_state, i32::from(pb::MfaState::NotRegistered));

    let updated = app
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                request_id: Default::default(),
                user: Some(pb::User {
                    id: created.id.clone(),
                    customer_id: w.optional.id.clone(),
                    admin: true,
                    display_name: "ignored, not in the mask".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["admin".into()],
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(updated.admin);
    assert_eq!(updated.display_name, "Nina Novak");
    let reread = get_user(app, &w.optional.id, &created.id).await.unwrap();
    assert!(reread.admin);

    // Updating a user through the wrong customer finds nothing.
    let wrong = app
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                request_id: Default::default(),
                user: Some(pb::User {
                    id: created.id.clone(),
                    customer_id: w.enforced.id.clone(),
                    admin: false,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["admin".into()],
                }),
            },
            &token,
        ))
        .await;
    assert_error(wrong, Code::NotFound, "NOT_FOUND");

    let audit = audit_events(
        app,
        &[&w.optional.id],
        pb::AuditAction::Unspecified,
        &created.id,
    )
    .await;
    let actions: Vec<i32> = audit.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            i32::from(pb::AuditAction::UserUpdated),
            i32::from(pb::AuditAction::UserCreated)
        ],
        "newest first"
    );
    assert!(audit.iter().all(|e| e.actor == PROVISIONER));
}

backend_test!(admins_and_readers_cannot_provision_users);
async fn admins_and_readers_cannot_provision_users(app: &TestApp) {
    let w = world(app).await;
    for customer in [&w.enforced, &w.no_hardware] {
        let refused = app
            .users()
            .create_user(authed(
                pb::CreateUserRequest {
                    request_id: Default::default(),
                    user: Some(pb::User {
                        customer_id: customer.id.clone(),
                        display_name: "Eve".into(),
                        email: "eve@example.com".into(),
                        ..Default::default()
                    }),
                },
                &app.token(ADMIN),
            ))
            .await;
        assert_error(refused, Code::PermissionDenied, "ROLE_TOO_WEAK");
    }
}

async fn get_by_subject(
    app: &TestApp,
    customer_ids: &[&str],
    subject: &str,
) -> Result<pb::User, tonic::Status> {
    app.users()
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: customer_ids.iter().map(|id| id.to_string()).collect(),
                user: Some(pb::get_user_request::User::ExternalSubject(subject.into())),
            },
            &app.token(ADMIN),
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

backend_test!(finds_a_user_by_the_subject_the_sign_in_system_knows);
async fn finds_a_user_by_the_subject_the_sign_in_system_knows(app: &TestApp) {
    let w = world(app).await;
    let both = [w.enforced.id.as_str(), w.optional.id.as_str()];
    let alice = get_by_subject(app, &both, "alice-sub").await.unwrap();
    assert_eq!(alice.id, w.alice.id);
    assert_eq!(alice.external_subject, "alice-sub");
    // Outside the selection it is not found, though it exists.
    let status = assert_error(
        get_by_subject(app, &[&w.optional.id], "alice-sub").await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let info = status.get_error_details();
    assert_eq!(
        info.resource_info().map(|r| r.resource_name.as_str()),
        Some("external_subject/alice-sub")
    );
    // The same subject in two selected customers names no single user.
    app.create_user(&w.optional.id, "Alice Twin", false, "alice-sub")
        .await;
    let status = assert_error(
        get_by_subject(app, &both, "alice-sub").await,
        Code::FailedPrecondition,
        "EXTERNAL_SUBJECT_AMBIGUOUS",
    );
    let details = status.get_error_details();
    let mut subjects: Vec<String> = details
        .precondition_failure()
        .expect("PreconditionFailure")
        .violations
        .iter()
        .map(|v| v.subject.clone())
        .collect();
    subjects.sort();
    let mut expected = vec![
        format!("customers/{}", w.enforced.id),
        format!("customers/{}", w.optional.id),
    ];
    expected.sort();
    assert_eq!(subjects, expected);
    assert_eq!(
        details.error_info().unwrap().metadata["customer_count"],
        "2"
    );
    // Naming one customer settles it.
    let twin = get_by_subject(app, &[&w.optional.id], "alice-sub")
        .await
        .unwrap();
    assert_eq!(twin.display_name, "Alice Twin");

    // ListUsers filters by subjects, exactly.
    let listed = list(
        app,
        pb::ListUsersRequest {
            customer_ids: both.iter().map(|id| id.to_string()).collect(),
            external_subjects: vec!["root-sub".into(), "olga-sub".into(), "alice".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&listed), ["Root Admin", "Olga Admin"]);

    // Neither id nor subject: INVALID_ARGUMENT.
    let none = app
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: vec![w.enforced.id.clone()],
                user: None,
            },
            &app.token(ADMIN),
        ))
        .await;
    let status = assert_error(none, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["user_id"]);
}

backend_test!(a_provisioner_deletes_a_user_with_their_methods_in_one_audited_change);
async fn a_provisioner_deletes_a_user_with_their_methods_in_one_audited_change(app: &TestApp) {
    let w = world(app).await;
    let delete = |subject: &str, user: &pb::User| {
        let request = pb::DeleteUserRequest {
            customer_id: user.customer_id.clone(),
            user_id: user.id.clone(),
            reason: "left the company".into(),
            request_id: String::new(),
        };
        let token = app.token(subject);
        let mut users = app.users();
        async move { users.delete_user(authed(request, &token)).await }
    };
    // Admins may reset MFA, not delete users.
    assert_error(
        delete(ADMIN, &w.alice).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    let deleted = delete(PROVISIONER, &w.alice)
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(
        deleted.user.as_ref().map(|u| u.id.as_str()),
        Some(w.alice.id.as_str())
    );
    assert_eq!(deleted.methods_deleted_count, 2);
    assert_error(
        get_user(app, &w.enforced.id, &w.alice.id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let methods = app
        .methods()
        .list_users_with_methods(authed(
            pb::ListUsersWithMethodsRequest {
                customer_ids: vec![w.enforced.id.clone()],
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        methods
            .users
            .iter()
            .all(|u| u.user.as_ref().unwrap().id != w.alice.id)
    );
    let events = audit_events(app, &[&w.enforced.id], pb::AuditAction::UserDeleted, "").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user_id, w.alice.id);
    assert_eq!(events[0].external_subject, "alice-sub");
    assert_eq!(events[0].reason, "left the company");
    assert_eq!(
        events[0].details,
        Some(pb::audit_event::Details::UserDeleted(
            pb::UserDeletedDetails {
                admin: false,
                methods_deleted_count: 2,
            }
        ))
    );
    // Gone is gone: a second delete is NOT_FOUND.
    assert_error(
        delete(PROVISIONER, &w.alice).await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

backend_test!(reads_check_their_selection_in_the_same_statement);
async fn reads_check_their_selection_in_the_same_statement(app: &TestApp) {
    use std::sync::atomic::Ordering;
    let w = world(app).await;
    let statements = || app.statements.load(Ordering::SeqCst);

    // A permitted read is one statement: the selection check, the row and its count.
    let before = statements();
    let alice = get_user(app, &w.enforced.id, &w.alice.id).await.unwrap();
    assert_eq!(statements() - before, 1, "GetUser");
    assert_eq!(alice.active_method_count, 2);
    let before = statements();
    let users = list(
        app,
        pb::ListUsersRequest {
            customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(statements() - before, 1, "ListUsers");
    assert_eq!(names(&users), ["Alice Archer", "Root Admin"]);
    assert_eq!(users[1].active_method_count, 2);

    // One selected customer without a role: nothing of the others leaks, and the refusal
    // names that customer.
    let status = assert_error(
        get_user(app, &w.other.id, &w.alice.id).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
    assert!(status.message().contains(&w.other.id), "{status:?}");
    let refused = app
        .users()
        .list_users(authed(
            pb::ListUsersRequest {
                customer_ids: vec![w.enforced.id.clone(), w.other.id.clone()],
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await;
    assert_error(refused, Code::PermissionDenied, "NO_ROLE");

    // A role on every customer (`*`) reads any of them in one statement; a customer that
    // does not exist is NOT_FOUND, and an empty page is an empty page.
    app.grant("everywhere-reader", None, "READER").await;
    let token = app.token("everywhere-reader");
    let before = statements();
    let found = app
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: vec![w.other.id.clone()],
                user: Some(by_id(&w.stranger.id)),
            },
            &token,
        ))
        .await
        .expect("a reader on * reads any customer")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(statements() - before, 1, "GetUser through a role on *");
    assert_eq!(found.id, w.stranger.id);
    let missing = uuid::Uuid::now_v7().to_string();
    let result = app
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                customer_ids: vec![missing.clone()],
                user: Some(by_id(&w.stranger.id)),
            },
            &token,
        ))
        .await;
    assert_error(result, Code::NotFound, "NOT_FOUND");
    let empty = app
        .users()
        .list_users(authed(
            pb::ListUsersRequest {
                customer_ids: vec![w.other.id.clone()],
                query: "nobody by this name".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("an empty page")
        .into_inner();
    assert!(empty.users.is_empty());
}
