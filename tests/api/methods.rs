//! Authentication methods: review, register, delete one; roles and masking.

use mfa_reset::proto::v1::{self as pb};
use tonic::Code;

use crate::helpers::*;

async fn methods_of(
    app: &TestApp,
    customer_id: &str,
    user_id: &str,
) -> Vec<pb::AuthenticationMethod> {
    app.methods()
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                page_size: Default::default(),
                page_token: Default::default(),
                customer_ids: vec![customer_id.into()],
                user_id: user_id.into(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .authentication_methods
}

async fn delete(
    app: &TestApp,
    subject: &str,
    customer_id: &str,
    method_id: &str,
) -> Result<pb::DeleteAuthenticationMethodResponse, tonic::Status> {
    app.methods()
        .delete_authentication_method(authed(
            pb::DeleteAuthenticationMethodRequest {
                request_id: Default::default(),
                customer_id: customer_id.into(),
                method_id: method_id.into(),
                reason: "lost phone".into(),
            },
            &app.token(subject),
        ))
        .await
        .map(|r| r.into_inner())
}

backend_test!(labels_are_masked_in_every_response);
async fn labels_are_masked_in_every_response(app: &TestApp) {
    let w = world(app).await;
    let alice = methods_of(app, &w.enforced.id, &w.alice.id).await;
    let labels: Vec<&str> = alice.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["+1 ••• ••• 4567", "a•••@example.com"]);
    let root = methods_of(app, &w.enforced.id, &w.root.id).await;
    let labels: Vec<&str> = root.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["YubiKey 5", "serial ••••2231"]);

    let page = app
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
    let everything = format!("{page:?}");
    assert!(!everything.contains("4567") || everything.contains("••• ••• 4567"));
    assert!(
        !everything.contains("555 123"),
        "phone number leaked: {everything}"
    );
    assert!(!everything.contains("alice@example.com"), "e-mail leaked");
    assert!(!everything.contains("88412231"), "serial leaked");
}

backend_test!(lists_users_with_their_methods_filtered_by_kind);
async fn lists_users_with_their_methods_filtered_by_kind(app: &TestApp) {
    let w = world(app).await;
    let page = app
        .methods()
        .list_users_with_methods(authed(
            pb::ListUsersWithMethodsRequest {
                customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
                method_kinds: vec![
                    pb::MethodKind::Fido2.into(),
                    pb::MethodKind::AuthenticatorApp.into(),
                ],
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let users: Vec<&str> = page
        .users
        .iter()
        .map(|u| u.user.as_ref().unwrap().display_name.as_str())
        .collect();
    assert_eq!(users, ["Root Admin", "Olga Admin"]);
    assert_eq!(
        page.users[0].authentication_methods.len(),
        2,
        "every method of a matching user is listed"
    );
}

backend_test!(registering_a_method_clears_registration_required_and_is_audited);
async fn registering_a_method_clears_registration_required_and_is_audited(app: &TestApp) {
    let w = world(app).await;
    let method = app
        .register_method(
            &w.bob,
            pb::MethodKind::Phone,
            pb::MethodScope::User,
            "+1 202 555 0175",
        )
        .await;
    assert_eq!(method.label, "+1 ••• ••• 0175");
    assert_eq!(method.state, i32::from(pb::MethodState::Active));
    let e164 = app
        .register_method(
            &w.bob,
            pb::MethodKind::Phone,
            pb::MethodScope::User,
            "+12025550199",
        )
        .await;
    assert_eq!(
        e164.label, "+•••••••0199",
        "a number without separators is masked too"
    );
    let bob = get_user(app, &w.optional.id, &w.bob.id).await.unwrap();
    assert_eq!(bob.mfa_state, i32::from(pb::MfaState::Registered));
    assert_eq!(bob.active_method_count, 2);
    let events = audit_events(
        app,
        &[&w.optional.id],
        pb::AuditAction::MethodRegistered,
        &w.bob.id,
    )
    .await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].method_id, e164.id, "newest first");
    assert_eq!(events[1].method_id, method.id);
    assert!(
        !format!("{events:?}").contains("5550"),
        "audit carries no contact data"
    );
}

backend_test!(authentication_admin_deletes_a_method_of_a_non_admin);
async fn authentication_admin_deletes_a_method_of_a_non_admin(app: &TestApp) {
    let w = world(app).await;
    let phone = app
        .register_method(
            &w.bob,
            pb::MethodKind::Phone,
            pb::MethodScope::User,
            "+1 202 555 0175",
        )
        .await;
    let deleted = delete(app, ADMIN, &w.optional.id, &phone.id).await.unwrap();
    assert_eq!(
        deleted.disposition,
        i32::from(pb::MethodDisposition::Delete)
    );
    assert!(methods_of(app, &w.optional.id, &w.bob.id).await.is_empty());
    let events = audit_events(app, &[&w.optional.id], pb::AuditAction::MethodDeleted, "").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].method_id, phone.id);
    assert_eq!(events[0].reason, "lost phone");
    // A second delete of the same method finds nothing.
    assert_error(
        delete(app, ADMIN, &w.optional.id, &phone.id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

backend_test!(an_admins_method_needs_a_privileged_admin);
async fn an_admins_method_needs_a_privileged_admin(app: &TestApp) {
    let w = world(app).await;
    // AUTHENTICATION_ADMIN in `optional`: Olga is an admin there.
    let olga_app = &methods_of(app, &w.optional.id, &w.olga.id).await[0];
    assert_error(
        delete(app, ADMIN, &w.optional.id, &olga_app.id).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert_eq!(
        methods_of(app, &w.optional.id, &w.olga.id).await.len(),
        1,
        "nothing deleted"
    );
    // PRIVILEGED in `enforced`: Root is an admin there; the hardware token is deactivated.
    let root_methods = methods_of(app, &w.enforced.id, &w.root.id).await;
    let token = root_methods
        .iter()
        .find(|m| m.kind == i32::from(pb::MethodKind::HardwareOath))
        .unwrap();
    let result = delete(app, ADMIN, &w.enforced.id, &token.id).await.unwrap();
    assert_eq!(
        result.disposition,
        i32::from(pb::MethodDisposition::Deactivate)
    );
    let after = methods_of(app, &w.enforced.id, &w.root.id).await;
    let token_after = after
        .iter()
        .find(|m| m.id == token.id)
        .expect("kept for reassignment");
    assert_eq!(token_after.state, i32::from(pb::MethodState::Deactivated));
    let root = get_user(app, &w.enforced.id, &w.root.id).await.unwrap();
    assert_eq!(root.active_method_count, 1);
}

backend_test!(nobody_deletes_their_own_method_and_readers_delete_nothing);
async fn nobody_deletes_their_own_method_and_readers_delete_nothing(app: &TestApp) {
    let w = world(app).await;
    let mine = &methods_of(app, &w.enforced.id, &w.me.id).await[0];
    assert_error(
        delete(app, ADMIN, &w.enforced.id, &mine.id).await,
        Code::PermissionDenied,
        "SELF",
    );
    let reader_target = app
        .create_user(&w.no_hardware.id, "Rita Reader", false, "")
        .await;
    let method = app
        .register_method(
            &reader_target,
            pb::MethodKind::Email,
            pb::MethodScope::User,
            "rita@example.com",
        )
        .await;
    assert_error(
        delete(app, ADMIN, &w.no_hardware.id, &method.id).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    // A provisioner registers methods but cannot delete them.
    assert_error(
        delete(app, PROVISIONER, &w.no_hardware.id, &method.id).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    // A method of another customer is outside the named customer: NOT_FOUND.
    let strangers = app
        .methods()
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                page_size: Default::default(),
                page_token: Default::default(),
                customer_ids: vec![w.other.id.clone()],
                user_id: w.stranger.id.clone(),
            },
            &app.token(PROVISIONER),
        ))
        .await
        .unwrap()
        .into_inner()
        .authentication_methods;
    assert_error(
        delete(app, ADMIN, &w.enforced.id, &strangers[0].id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

backend_test!(a_revoked_role_takes_effect_on_the_next_call);
async fn a_revoked_role_takes_effect_on_the_next_call(app: &TestApp) {
    let w = world(app).await;
    assert!(get_user(app, &w.optional.id, &w.bob.id).await.is_ok());
    app.revoke(ADMIN, Some(&w.optional.id), "AUTHENTICATION_ADMIN")
        .await;
    assert_error(
        get_user(app, &w.optional.id, &w.bob.id).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
}
