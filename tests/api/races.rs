//! Rules that read before they write hold under concurrent calls (32 at once), on both
//! backends: what a rule reads is locked first (PostgreSQL; SQLite writes one at a time).
//!
//! - At most 50 methods per user, however many registrations race.
//! - Each MFA policy change audits the policy it really replaced.
//! - A confirm applies under roles that stay until it commits: a revoke made meanwhile
//!   waits for it, and a confirm that starts after the revoke is refused.

use futures::future::join_all;
use mfa_reset::{
    domain::{ids::CustomerId, model::Role, roles},
    proto::v1 as pb,
    store,
};
use prost_types::Timestamp;
use sea_orm::{ConnectionTrait, DbBackend};
use tonic::Code;

use crate::helpers::*;

/// Calls made at once.
const CONCURRENT: usize = 32;

async fn registrations_race_for_the_last_method_slots(app: &TestApp) {
    let customer = app
        .create_customer("Cap Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(ADMIN, Some(&customer.id), "READER").await;
    let user = app.create_user(&customer.id, "Many Keys", false, "").await;
    // 5 free slots, fewer than the pool's 10 connections: without the lock, every one of
    // 10 registrations counted at once would see a free slot.
    for i in 0..45 {
        app.register_method(
            &user,
            pb::MethodKind::Fido2,
            pb::MethodScope::User,
            &format!("key {i}"),
        )
        .await;
    }
    let token = app.token(PROVISIONER);
    // PostgreSQL: the customer held FOR UPDATE while the registrations start, so that they
    // all overlap (a new method's foreign key waits for it, after the count is taken).
    // SQLite takes one writer at a time anyway.
    let hold = if app.db.get_database_backend() == DbBackend::Postgres {
        let hold = store::begin_write(&app.db).await.expect("begin");
        hold.execute_unprepared(&format!(
            "SELECT id FROM customers WHERE id = '{}' FOR UPDATE",
            customer.id
        ))
        .await
        .expect("hold the customer");
        Some(hold)
    } else {
        None
    };
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if let Some(hold) = hold {
            store::commit(hold).await.expect("release");
        }
    };
    let registrations = join_all((0..CONCURRENT).map(|i| {
        let mut methods = app.methods();
        let request = pb::RegisterAuthenticationMethodRequest {
            customer_id: customer.id.clone(),
            user_id: user.id.clone(),
            kind: pb::MethodKind::Fido2.into(),
            scope: pb::MethodScope::User.into(),
            label: format!("racing key {i}"),
            ..Default::default()
        };
        let token = token.clone();
        async move {
            methods
                .register_authentication_method(authed(request, &token))
                .await
        }
    }));
    let (results, ()) = tokio::join!(registrations, release);
    let registered = results.iter().filter(|r| r.is_ok()).count();
    for result in results.into_iter().filter(Result::is_err) {
        assert_error(result, Code::FailedPrecondition, "TOO_MANY_METHODS");
    }
    assert_eq!(registered, 5, "exactly the 5 free slots are taken");
    let held = app
        .methods()
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                customer_ids: vec![customer.id.clone()],
                user_id: user.id.clone(),
                page_size: 100,
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("list methods")
        .into_inner()
        .authentication_methods
        .len();
    assert_eq!(held, 50);
}
backend_test!(registrations_race_for_the_last_method_slots);

async fn concurrent_policy_changes_each_audit_the_policy_they_replaced(app: &TestApp) {
    let customer = app
        .create_customer("Policy Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(ADMIN, Some(&customer.id), "PRIVILEGED_AUTHENTICATION_ADMIN")
        .await;
    let token = app.token(ADMIN);
    let results = join_all((0..CONCURRENT).map(|i| {
        let mut customers = app.customers();
        let policy = if i % 2 == 0 {
            pb::MfaPolicy::Optional
        } else {
            pb::MfaPolicy::Enforced
        };
        let request = pb::SetMfaPolicyRequest {
            customer_id: customer.id.clone(),
            mfa_policy: policy.into(),
            reason: format!("flip {i}"),
            ..Default::default()
        };
        let token = token.clone();
        async move { customers.set_mfa_policy(authed(request, &token)).await }
    }))
    .await;
    for result in results {
        result.expect("every change is served");
    }
    // Oldest first: each event's previous policy is the one the event before set.
    let mut events = audit_events(app, &[&customer.id], pb::AuditAction::MfaPolicySet, "").await;
    events.reverse();
    let mut policy = pb::MfaPolicy::Enforced;
    for event in &events {
        let Some(pb::audit_event::Details::MfaPolicySet(set)) = &event.details else {
            panic!("no details on {event:?}");
        };
        assert_eq!(set.previous_mfa_policy(), policy, "{events:#?}");
        assert_ne!(
            set.mfa_policy(),
            policy,
            "a change that changes nothing is not audited"
        );
        policy = set.mfa_policy();
    }
    assert!(!events.is_empty());
    let now = app
        .customers()
        .get_customer(authed(
            pb::GetCustomerRequest {
                customer_id: customer.id.clone(),
            },
            &token,
        ))
        .await
        .expect("get customer")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(now.mfa_policy(), policy, "the last event is the policy now");
}
backend_test!(concurrent_policy_changes_each_audit_the_policy_they_replaced);

fn seconds(t: &Option<Timestamp>) -> (i64, i32) {
    t.as_ref().map(|t| (t.seconds, t.nanos)).expect("a time")
}

async fn a_revoke_waits_for_the_confirms_made_under_the_role(app: &TestApp) {
    let customer = app
        .create_customer("Revoke Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(ADMIN, Some(&customer.id), "PRIVILEGED_AUTHENTICATION_ADMIN")
        .await;
    let token = app.token(ADMIN);
    let mut resets = Vec::new();
    for i in 0..CONCURRENT {
        let user = app
            .create_user(&customer.id, &format!("User {i}"), false, "")
            .await;
        app.register_method(
            &user,
            pb::MethodKind::Phone,
            pb::MethodScope::Org,
            "+1 555 0100",
        )
        .await;
        let reset = app
            .users()
            .summarize_mfa_reset(authed(
                pb::UsersSummarizeMfaResetRequest {
                    customer_ids: vec![customer.id.clone()],
                    target: users_by_id(vec![user.id.clone()]),
                    reason: "lost phone".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("summarize")
            .into_inner()
            .mfa_reset
            .expect("reset");
        resets.push(reset);
    }
    // All confirms at once; the role is revoked as soon as the first has answered, while
    // the others are in flight.
    let (first_done, first) = tokio::sync::oneshot::channel::<()>();
    let first_done = std::sync::Mutex::new(Some(first_done));
    let confirms = join_all(resets.iter().map(|reset| {
        let mut users = app.users();
        let request = pb::UsersConfirmMfaResetRequest {
            reset_id: reset.id.clone(),
            etag: reset.etag.clone(),
            ..Default::default()
        };
        let token = token.clone();
        let first_done = &first_done;
        async move {
            let result = users.confirm_mfa_reset(authed(request, &token)).await;
            if let Some(done) = first_done.lock().expect("lock").take() {
                let _ = done.send(());
            }
            result
        }
    }));
    let revoke = async {
        let _ = first.await;
        roles::revoke(
            &app.db,
            "operator",
            ADMIN,
            Some(CustomerId::parse(&customer.id).expect("id")),
            Role::PrivilegedAuthenticationAdmin,
        )
        .await
        .expect("revoke")
    };
    let (results, _) = tokio::join!(confirms, revoke);

    // Read as the provisioner: the admin's role is gone.
    let events = app
        .audit()
        .list_audit_events(authed(
            pb::ListAuditEventsRequest {
                customer_ids: vec![customer.id.clone()],
                page_size: 1000,
                ..Default::default()
            },
            &app.token(PROVISIONER),
        ))
        .await
        .expect("list audit events")
        .into_inner()
        .audit_events;
    let revoked = events
        .iter()
        .find(|e| e.action() == pb::AuditAction::RoleRevoked)
        .expect("the revoke is audited");
    let mut confirmed = 0;
    for (reset, result) in resets.iter().zip(results) {
        match result {
            Ok(_) => {
                confirmed += 1;
                let applied = events
                    .iter()
                    .find(|e| e.reset_id == reset.id)
                    .expect("a confirmed reset is audited");
                assert!(
                    seconds(&applied.occur_time) < seconds(&revoked.occur_time),
                    "reset {} was applied after the revoke of the role it was applied under",
                    reset.id
                );
            }
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(events.iter().all(|e| e.reset_id != reset.id));
            }
        }
    }
    eprintln!("{confirmed} of {CONCURRENT} confirms committed before the revoke");
}
backend_test!(a_revoke_waits_for_the_confirms_made_under_the_role);
