//! Customers: the selector list, one customer, describing a selection, the MFA policy
//! and provisioning.

use mfa_reset::proto::v1::{self as pb, selection_gap::Item};
use tonic::Code;

use crate::helpers::*;

backend_test!(lists_only_customers_the_caller_has_a_role_in);
async fn lists_only_customers_the_caller_has_a_role_in(app: &TestApp) {
    let w = world(app).await;
    let listed = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.customers.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    for expected in [&w.enforced, &w.optional, &w.no_hardware] {
        assert!(ids.contains(&expected.id.as_str()));
    }
    assert!(!ids.contains(&w.other.id.as_str()));
    assert!(listed.next_page_token.is_empty());
    let enforced = listed
        .customers
        .iter()
        .find(|c| c.id == w.enforced.id)
        .unwrap();
    assert_eq!(
        enforced.caller_roles,
        [i32::from(pb::Role::PrivilegedAuthenticationAdmin)]
    );
    assert_eq!(enforced.mfa_policy, i32::from(pb::MfaPolicy::Enforced));
    assert_eq!(enforced.enabled_method_kinds.len(), 7);

    // Nobody-in-particular sees nothing; a `*` READER sees every customer.
    let nobody = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token("nobody"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(nobody.customers.is_empty());
    app.grant("auditor", None, "READER").await;
    let everywhere = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token("auditor"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everywhere.customers.len(), 4);
}

backend_test!(gets_a_customer_only_with_a_role_there);
async fn gets_a_customer_only_with_a_role_there(app: &TestApp) {
    let w = world(app).await;
    let got = app
        .customers()
        .get_customer(authed(
            pb::GetCustomerRequest {
                customer_id: w.optional.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(got.display_name, "Optional Co");
    assert_eq!(got.caller_roles, [i32::from(pb::Role::AuthenticationAdmin)]);
    let hidden = app
        .customers()
        .get_customer(authed(
            pb::GetCustomerRequest {
                customer_id: w.other.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await;
    assert_error(hidden, Code::NotFound, "NOT_FOUND");
}

backend_test!(describes_what_a_selection_offers_in_common);
async fn describes_what_a_selection_offers_in_common(app: &TestApp) {
    let w = world(app).await;
    let ids = vec![
        w.enforced.id.clone(),
        w.optional.id.clone(),
        w.no_hardware.id.clone(),
    ];
    let described = app
        .customers()
        .describe_selection(authed(
            pb::DescribeSelectionRequest {
                customer_ids: ids.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = described
        .customers
        .iter()
        .map(|c| c.display_name.as_str())
        .collect();
    assert_eq!(
        names,
        ["Enforced Co", "Optional Co", "No Hardware Co"],
        "in request order"
    );
    // READER in no_hardware: only reading is common.
    assert_eq!(described.common_actions, [i32::from(pb::Action::Read)]);
    assert_eq!(
        described.common_reset_scopes,
        [i32::from(pb::ResetScope::All)]
    );
    assert!(
        !described
            .common_method_kinds
            .contains(&i32::from(pb::MethodKind::HardwareOath))
    );
    assert_eq!(described.common_method_kinds.len(), 6);

    let gap = |item: Item| {
        let mut ids = described
            .gaps
            .iter()
            .find(|g| g.item == Some(item))
            .unwrap_or_else(|| panic!("no gap for {item:?}"))
            .customer_ids
            .clone();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        gap(Item::MethodKind(pb::MethodKind::HardwareOath.into())),
        sorted(vec![w.optional.id.clone(), w.no_hardware.id.clone()])
    );
    assert_eq!(
        gap(Item::ResetScope(pb::ResetScope::OrgLevel.into())),
        vec![w.optional.id.clone()]
    );
    assert_eq!(
        gap(Item::Action(pb::Action::ResetMfa.into())),
        vec![w.no_hardware.id.clone()]
    );
    assert_eq!(
        gap(Item::Action(pb::Action::ResetAdminMfa.into())),
        sorted(vec![w.optional.id.clone(), w.no_hardware.id.clone()])
    );
    assert_eq!(
        gap(Item::Action(pb::Action::Provision.into())),
        sorted(ids.clone())
    );

    // One customer where the caller is PRIVILEGED: every admin action is common.
    let one = app
        .customers()
        .describe_selection(authed(
            pb::DescribeSelectionRequest {
                customer_ids: vec![w.enforced.id.clone()],
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    for action in [
        pb::Action::Read,
        pb::Action::ResetMfa,
        pb::Action::ResetAdminMfa,
        pb::Action::DeleteMethod,
        pb::Action::SetMfaPolicy,
    ] {
        assert!(
            one.common_actions.contains(&i32::from(action)),
            "{action:?}"
        );
    }
    assert_eq!(one.common_reset_scopes.len(), 2);
}

backend_test!(describing_a_selection_with_an_unassigned_customer_is_denied);
async fn describing_a_selection_with_an_unassigned_customer_is_denied(app: &TestApp) {
    let w = world(app).await;
    let denied = app
        .customers()
        .describe_selection(authed(
            pb::DescribeSelectionRequest {
                customer_ids: vec![w.enforced.id.clone(), w.other.id.clone()],
            },
            &app.token(ADMIN),
        ))
        .await;
    let status = assert_error(denied, Code::PermissionDenied, "NO_ROLE");
    assert!(status.message().contains(&w.other.id));
    assert!(
        !status.message().contains("Other Co"),
        "names nothing beyond the request's ids"
    );
}

backend_test!(privileged_admin_sets_the_policy_with_an_audit_event);
async fn privileged_admin_sets_the_policy_with_an_audit_event(app: &TestApp) {
    let w = world(app).await;
    let updated = app
        .customers()
        .set_mfa_policy(authed(
            pb::SetMfaPolicyRequest {
                request_id: Default::default(),
                customer_id: w.enforced.id.clone(),
                mfa_policy: pb::MfaPolicy::Optional.into(),
                reason: "pilot ended".into(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(updated.mfa_policy, i32::from(pb::MfaPolicy::Optional));
    let events = audit_events(app, &[&w.enforced.id], pb::AuditAction::MfaPolicySet, "").await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.actor, ADMIN);
    assert_eq!(event.reason, "pilot ended");
    assert!(!event.correlation_id.is_empty());
    assert_eq!(
        event.details,
        Some(pb::audit_event::Details::MfaPolicySet(
            pb::MfaPolicySetDetails {
                previous_mfa_policy: pb::MfaPolicy::Enforced.into(),
                mfa_policy: pb::MfaPolicy::Optional.into(),
            }
        )),
        "audit details decode as the typed message of their action"
    );
    let reread = app
        .customers()
        .get_customer(authed(
            pb::GetCustomerRequest {
                customer_id: w.enforced.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(reread.mfa_policy, i32::from(pb::MfaPolicy::Optional));
}

backend_test!(only_privileged_admins_set_the_policy);
async fn only_privileged_admins_set_the_policy(app: &TestApp) {
    let w = world(app).await;
    for customer in [&w.optional, &w.no_hardware] {
        let refused = app
            .customers()
            .set_mfa_policy(authed(
                pb::SetMfaPolicyRequest {
                    request_id: Default::default(),
                    customer_id: customer.id.clone(),
                    mfa_policy: pb::MfaPolicy::Enforced.into(),
                    reason: String::new(),
                },
                &app.token(ADMIN),
            ))
            .await;
        assert_error(refused, Code::PermissionDenied, "ROLE_TOO_WEAK");
    }
    let unassigned = app
        .customers()
        .set_mfa_policy(authed(
            pb::SetMfaPolicyRequest {
                request_id: Default::default(),
                customer_id: w.other.id.clone(),
                mfa_policy: pb::MfaPolicy::Optional.into(),
                reason: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await;
    assert_error(unassigned, Code::PermissionDenied, "NO_ROLE");
}

backend_test!(creating_customers_needs_provisioner_everywhere);
async fn creating_customers_needs_provisioner_everywhere(app: &TestApp) {
    let w = world(app).await;
    let customer = pb::Customer {
        display_name: "New Co".into(),
        mfa_policy: pb::MfaPolicy::Optional.into(),
        enabled_method_kinds: vec![pb::MethodKind::Fido2.into()],
        ..Default::default()
    };
    // PROVISIONER on one customer is not enough; neither is PRIVILEGED.
    app.grant("local-provisioner", Some(&w.enforced.id), "PROVISIONER")
        .await;
    for subject in ["local-provisioner", ADMIN] {
        let refused = app
            .customers()
            .create_customer(authed(
                pb::CreateCustomerRequest {
                    request_id: Default::default(),
                    customer: Some(customer.clone()),
                },
                &app.token(subject),
            ))
            .await;
        assert_error(refused, Code::PermissionDenied, "ROLE_TOO_WEAK");
    }
    let created = app
        .customers()
        .create_customer(authed(
            pb::CreateCustomerRequest {
                request_id: Default::default(),
                customer: Some(customer.clone()),
            },
            &app.token(PROVISIONER),
        ))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(created.display_name, "New Co");
    assert_eq!(
        created.enabled_method_kinds,
        [i32::from(pb::MethodKind::Fido2)]
    );
    assert_eq!(created.caller_roles, [i32::from(pb::Role::Provisioner)]);
    assert!(
        uuid::Uuid::parse_str(&created.id)
            .unwrap()
            .get_version_num()
            == 7
    );
}

/// A customer's user counts from `ListCustomers` and `GetCustomer`, which must agree.
async fn user_counts(app: &TestApp, customer_id: &str) -> pb::CustomerUserCounts {
    let listed = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .customers;
    let from_list = listed
        .into_iter()
        .find(|c| c.id == customer_id)
        .and_then(|c| c.user_counts)
        .expect("counts in the list");
    let got = app
        .customers()
        .get_customer(authed(
            pb::GetCustomerRequest {
                customer_id: customer_id.into(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .customer
        .and_then(|c| c.user_counts)
        .expect("counts from get");
    assert_eq!(from_list, got);
    got
}

/// The users of `customer_id` in `state` (every state when `None`), counted through
/// `ListUsers`: the rows the counts must match.
async fn listed_in_state(app: &TestApp, customer_id: &str, state: Option<pb::MfaState>) -> i32 {
    let users = app
        .users()
        .list_users(authed(
            pb::ListUsersRequest {
                customer_ids: vec![customer_id.into()],
                mfa_states: state.into_iter().map(i32::from).collect(),
                page_size: 500,
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    users.len() as i32
}

async fn assert_counts_match_rows(app: &TestApp, customer_id: &str) -> pb::CustomerUserCounts {
    let counts = user_counts(app, customer_id).await;
    let rows = pb::CustomerUserCounts {
        user_count: listed_in_state(app, customer_id, None).await,
        mfa_registered_user_count: listed_in_state(
            app,
            customer_id,
            Some(pb::MfaState::Registered),
        )
        .await,
        mfa_registration_required_user_count: listed_in_state(
            app,
            customer_id,
            Some(pb::MfaState::RegistrationRequired),
        )
        .await,
    };
    assert_eq!(counts, rows, "counts of customer {customer_id}");
    counts
}

backend_test!(customer_user_counts_match_the_rows_before_and_after_a_reset);
async fn customer_user_counts_match_the_rows_before_and_after_a_reset(app: &TestApp) {
    let w = world(app).await;
    let before = assert_counts_match_rows(app, &w.enforced.id).await;
    assert_eq!(
        (
            before.user_count,
            before.mfa_registered_user_count,
            before.mfa_registration_required_user_count
        ),
        (3, 3, 0),
        "Alice, Root and Me, each with a method"
    );
    let optional = assert_counts_match_rows(app, &w.optional.id).await;
    assert_eq!(
        (optional.user_count, optional.mfa_registered_user_count),
        (2, 1),
        "Bob has no method"
    );

    // Alice's reset (enforced policy): she must register again.
    let summary = app
        .users()
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: vec![w.enforced.id.clone()],
                target: users_by_id(vec![w.alice.id.clone()]),
                reason: "lost phone".into(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .mfa_reset
        .expect("reset");
    confirm(app, ADMIN, &summary).await.unwrap();
    app.create_user(&w.enforced.id, "New Starter", false, "")
        .await;
    let after = assert_counts_match_rows(app, &w.enforced.id).await;
    assert_eq!(
        (
            after.user_count,
            after.mfa_registered_user_count,
            after.mfa_registration_required_user_count
        ),
        (4, 2, 1)
    );
    assert_eq!(
        assert_counts_match_rows(app, &w.optional.id).await,
        optional,
        "other customers unchanged"
    );

    // Counts are for the selector: other answers leave them unset.
    let described = app
        .customers()
        .describe_selection(authed(
            pb::DescribeSelectionRequest {
                customer_ids: vec![w.enforced.id.clone()],
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(described.customers.iter().all(|c| c.user_counts.is_none()));
}
