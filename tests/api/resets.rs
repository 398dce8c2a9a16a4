//! The two-phase MFA reset: what a summary shows, what a confirm does, and the rules
//! both keep.

use mfa_reset::proto::v1::{self as pb};
use mfa_reset::store::entities::customers;
use prost_types::FieldMask;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::Code;

use crate::helpers::*;

fn summarize_request(
    customers: &[&pb::Customer],
    users: &[&pb::User],
) -> pb::UsersSummarizeMfaResetRequest {
    pb::UsersSummarizeMfaResetRequest {
        customer_ids: customers.iter().map(|c| c.id.clone()).collect(),
        target: users_by_id(users.iter().map(|u| u.id.clone()).collect()),
        reason: "lost phone".into(),
        ..Default::default()
    }
}

async fn summarize(
    app: &TestApp,
    subject: &str,
    request: pb::UsersSummarizeMfaResetRequest,
) -> Result<pb::UsersSummarizeMfaResetResponse, tonic::Status> {
    app.users()
        .summarize_mfa_reset(authed(request, &app.token(subject)))
        .await
        .map(|r| r.into_inner())
}

async fn methods_of(app: &TestApp, user: &pb::User) -> Vec<pb::AuthenticationMethod> {
    app.methods()
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                page_size: Default::default(),
                page_token: Default::default(),
                customer_ids: vec![user.customer_id.clone()],
                user_id: user.id.clone(),
            },
            &app.token(PROVISIONER),
        ))
        .await
        .unwrap()
        .into_inner()
        .authentication_methods
}

fn item<'a>(
    summary: &'a pb::UsersSummarizeMfaResetResponse,
    user: &pb::User,
) -> &'a pb::MfaResetItem {
    summary
        .items
        .iter()
        .find(|i| i.user_id == user.id)
        .expect("item for user")
}

fn dispositions(item: &pb::MfaResetItem) -> Vec<(pb::MethodKind, pb::MethodDisposition)> {
    item.methods
        .iter()
        .map(|m| {
            (
                pb::MethodKind::try_from(m.kind).unwrap(),
                pb::MethodDisposition::try_from(m.disposition).unwrap(),
            )
        })
        .collect()
}

backend_test!(summary_shows_every_method_and_every_skip_across_customers);
async fn summary_shows_every_method_and_every_skip_across_customers(app: &TestApp) {
    let w = world(app).await;
    let summary = summarize(
        app,
        ADMIN,
        summarize_request(
            &[&w.enforced, &w.optional],
            &[&w.alice, &w.root, &w.bob, &w.olga, &w.me],
        ),
    )
    .await
    .unwrap();
    let reset = summary.mfa_reset.as_ref().unwrap();
    assert_eq!(reset.state, i32::from(pb::MfaResetState::Pending));
    assert_eq!(reset.requested_by, ADMIN);
    assert_eq!(reset.reason, "lost phone");
    assert!(!reset.etag.is_empty());
    let ttl = reset.expire_time.unwrap().seconds - reset.create_time.unwrap().seconds;
    assert_eq!(ttl, 900, "15 minutes by default");

    use pb::{MethodDisposition as D, MethodKind as K, MfaResetItemOutcome as O, SkipReason as S};
    // PRIVILEGED in `enforced`: Alice and the admin Root are reset; the hardware token is
    // deactivated, not deleted.
    assert_eq!(
        item(&summary, &w.alice).skip_reason,
        i32::from(S::Unspecified)
    );
    assert_eq!(
        dispositions(item(&summary, &w.alice)),
        [(K::Phone, D::Delete), (K::Email, D::Delete)]
    );
    assert_eq!(
        dispositions(item(&summary, &w.root)),
        [(K::Fido2, D::Delete), (K::HardwareOath, D::Deactivate)]
    );
    // The caller's own user is skipped.
    assert_eq!(item(&summary, &w.me).skip_reason, i32::from(S::Self_));
    assert_eq!(
        dispositions(item(&summary, &w.me)),
        [(K::SoftwareOath, D::Keep)]
    );
    // AUTHENTICATION_ADMIN in `optional`: the admin Olga is protected; Bob has no MFA.
    assert_eq!(
        item(&summary, &w.olga).skip_reason,
        i32::from(S::ProtectedAdmin)
    );
    assert_eq!(
        item(&summary, &w.bob).skip_reason,
        i32::from(S::NotEnrolled)
    );
    // Users left without an active method under an enforced policy must register again.
    assert!(item(&summary, &w.alice).mfa_registration_required_after);
    assert!(item(&summary, &w.root).mfa_registration_required_after);
    assert!(
        !item(&summary, &w.me).mfa_registration_required_after,
        "skipped"
    );
    assert!(
        !item(&summary, &w.olga).mfa_registration_required_after,
        "skipped"
    );
    // Labels are masked in the summary too.
    assert_eq!(item(&summary, &w.alice).methods[0].label, "+1 ••• ••• 4567");

    // Every item says what happens to its user; only skipped ones have a reason.
    assert_eq!(item(&summary, &w.alice).outcome(), O::Reset);
    assert_eq!(item(&summary, &w.alice).skip_reason(), S::Unspecified);
    assert_eq!(item(&summary, &w.bob).outcome(), O::Skipped);
    assert!(item(&summary, &w.root).admin);
    assert_eq!(item(&summary, &w.alice).external_subject, "alice-sub");

    let reason_counts = |counts: &pb::MfaResetCounts| {
        counts
            .users_skipped_by_reason
            .iter()
            .map(|c| (c.skip_reason(), c.user_count))
            .collect::<Vec<_>>()
    };
    let totals = reset.totals.as_ref().unwrap();
    assert_eq!(
        (
            totals.user_count,
            totals.users_to_reset_count,
            totals.users_skipped_count,
            totals.users_to_register_count,
        ),
        (5, 2, 3, 2)
    );
    assert_eq!(
        reason_counts(totals),
        [(S::NotEnrolled, 1), (S::ProtectedAdmin, 1), (S::Self_, 1)]
    );
    assert_eq!(
        (
            totals.methods_to_delete_count,
            totals.methods_to_deactivate_count,
            totals.methods_to_keep_count
        ),
        (3, 1, 2)
    );
    assert_eq!(
        totals.methods_to_deactivate_by_kind,
        [pb::MethodKindCount {
            kind: K::HardwareOath.into(),
            method_count: 1
        }]
    );
    let enforced = &reset.customer_summaries[0];
    assert_eq!(enforced.display_name, "Enforced Co");
    let counts = enforced.counts.as_ref().unwrap();
    assert_eq!(
        (counts.users_to_reset_count, counts.users_skipped_count),
        (2, 1)
    );
    assert_eq!(reason_counts(counts), [(S::Self_, 1)]);
    assert_eq!(
        enforced.next_step,
        i32::from(pb::NextStep::RegisterAtNextSignIn)
    );
    assert_eq!(
        counts.methods_to_deactivate_by_kind,
        [pb::MethodKindCount {
            kind: K::HardwareOath.into(),
            method_count: 1
        }]
    );
    assert!(!enforced.approval_required && !reset.approval_required);
    let optional = &reset.customer_summaries[1];
    assert_eq!(optional.next_step, i32::from(pb::NextStep::NoneMfaOff));
    let counts = optional.counts.as_ref().unwrap();
    assert_eq!(
        (counts.users_to_reset_count, counts.users_skipped_count),
        (0, 2)
    );
    assert_eq!(
        reason_counts(counts),
        [(S::NotEnrolled, 1), (S::ProtectedAdmin, 1)]
    );

    // A summary changes nothing.
    assert_eq!(methods_of(app, &w.alice).await.len(), 2);
}

backend_test!(confirm_applies_exactly_the_summary_with_an_audit_event_per_user);
async fn confirm_applies_exactly_the_summary_with_an_audit_event_per_user(app: &TestApp) {
    let w = world(app).await;
    let summary = summarize(
        app,
        ADMIN,
        summarize_request(
            &[&w.enforced, &w.optional],
            &[&w.alice, &w.root, &w.bob, &w.olga],
        ),
    )
    .await
    .unwrap();
    let pending = summary.mfa_reset.unwrap();
    let confirmed = confirm(app, ADMIN, &pending).await.unwrap();
    assert_eq!(confirmed.state, i32::from(pb::MfaResetState::Confirmed));
    assert!(confirmed.confirm_time.is_some());
    assert_eq!(confirmed.totals, pending.totals);

    assert!(methods_of(app, &w.alice).await.is_empty());
    let root_methods = methods_of(app, &w.root).await;
    assert_eq!(root_methods.len(), 1, "the hardware token stays");
    assert_eq!(
        root_methods[0].state,
        i32::from(pb::MethodState::Deactivated)
    );
    assert_eq!(
        methods_of(app, &w.olga).await.len(),
        1,
        "the protected admin keeps her method"
    );

    let alice = get_user(app, &w.enforced.id, &w.alice.id).await.unwrap();
    assert!(
        alice.mfa_registration_required,
        "ENFORCED: must register again"
    );
    assert_eq!(
        alice.mfa_state,
        i32::from(pb::MfaState::RegistrationRequired)
    );
    assert!(alice.mfa_reset_time.is_some());
    let olga = get_user(app, &w.optional.id, &w.olga.id).await.unwrap();
    assert!(olga.mfa_reset_time.is_none(), "skipped users are untouched");

    let events = audit_events(
        app,
        &[&w.enforced.id, &w.optional.id],
        pb::AuditAction::MfaReset,
        "",
    )
    .await;
    let mut users: Vec<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    users.sort();
    let mut expected = vec![w.alice.id.as_str(), w.root.id.as_str()];
    expected.sort();
    assert_eq!(
        users, expected,
        "one event per affected user, none for skipped ones"
    );
    for event in &events {
        assert_eq!(event.reset_id, pending.id);
        assert_eq!(event.reason, "lost phone");
        assert_eq!(event.actor, ADMIN);
        assert!(!event.correlation_id.is_empty());
        assert_eq!(
            event.mfa_registration_required,
            Some(true),
            "the state after the reset"
        );
        assert_eq!(event.mfa_reset_time, confirmed.confirm_time);
    }
    let root_event = events.iter().find(|e| e.user_id == w.root.id).unwrap();
    assert_eq!(root_event.external_subject, "root-sub");
    assert_eq!(
        root_event.details,
        Some(pb::audit_event::Details::MfaReset(pb::MfaResetDetails {
            scope: pb::ResetScope::All.into(),
            methods_deleted_count: 1,
            methods_deleted_by_kind: vec![pb::MethodKindCount {
                kind: pb::MethodKind::Fido2.into(),
                method_count: 1
            }],
            methods_deactivated_count: 1,
            methods_deactivated_by_kind: vec![pb::MethodKindCount {
                kind: pb::MethodKind::HardwareOath.into(),
                method_count: 1
            }],
            requested_by: ADMIN.into(),
            approved_by: String::new(),
        })),
        "typed details: counts as integers, kinds as MethodKind"
    );
}

backend_test!(an_optional_policy_turns_mfa_off_without_requiring_registration);
async fn an_optional_policy_turns_mfa_off_without_requiring_registration(app: &TestApp) {
    let w = world(app).await;
    let carl = app
        .create_user(&w.optional.id, "Carl Cole", false, "")
        .await;
    app.register_method(
        &carl,
        pb::MethodKind::Fido2,
        pb::MethodScope::User,
        "Titan Key",
    )
    .await;
    let pending = summarize(app, ADMIN, summarize_request(&[&w.optional], &[&carl]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    confirm(app, ADMIN, &pending).await.unwrap();
    let carl = get_user(app, &w.optional.id, &carl.id).await.unwrap();
    assert!(!carl.mfa_registration_required);
    assert_eq!(carl.mfa_state, i32::from(pb::MfaState::NotRegistered));
    assert!(carl.mfa_reset_time.is_some());
}

backend_test!(org_level_and_kind_options_reset_only_what_they_name);
async fn org_level_and_kind_options_reset_only_what_they_name(app: &TestApp) {
    let w = world(app).await;
    let mut request = summarize_request(&[&w.enforced], &[&w.alice]);
    request.options = Some(pb::MfaResetOptions {
        scope: pb::ResetScope::OrgLevel.into(),
        method_kinds: vec![],
    });
    let summary = summarize(app, ADMIN, request).await.unwrap();
    use pb::{MethodDisposition as D, MethodKind as K};
    assert_eq!(
        dispositions(item(&summary, &w.alice)),
        [(K::Phone, D::Delete), (K::Email, D::Keep)]
    );
    confirm(app, ADMIN, summary.mfa_reset.as_ref().unwrap())
        .await
        .unwrap();
    let left = methods_of(app, &w.alice).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, i32::from(K::Email));
    let alice = get_user(app, &w.enforced.id, &w.alice.id).await.unwrap();
    assert!(!alice.mfa_registration_required, "an active method is left");

    let mut request = summarize_request(&[&w.enforced], &[&w.root]);
    request.options = Some(pb::MfaResetOptions {
        scope: 0,
        method_kinds: vec![K::Fido2.into()],
    });
    let summary = summarize(app, ADMIN, request).await.unwrap();
    assert_eq!(
        dispositions(item(&summary, &w.root)),
        [(K::Fido2, D::Delete), (K::HardwareOath, D::Keep)]
    );
}

backend_test!(options_not_common_to_the_selection_are_refused_naming_the_customers);
async fn options_not_common_to_the_selection_are_refused_naming_the_customers(app: &TestApp) {
    let w = world(app).await;
    app.grant(ADMIN, Some(&w.no_hardware.id), "AUTHENTICATION_ADMIN")
        .await;
    let mut request = summarize_request(&[&w.enforced, &w.optional, &w.no_hardware], &[&w.alice]);
    request.options = Some(pb::MfaResetOptions {
        scope: pb::ResetScope::OrgLevel.into(),
        method_kinds: vec![pb::MethodKind::HardwareOath.into()],
    });
    let status = assert_error(
        summarize(app, ADMIN, request).await,
        Code::FailedPrecondition,
        "OPTION_NOT_COMMON",
    );
    let details = tonic_types::StatusExt::get_error_details(&status);
    let mut named: Vec<&str> = details.error_info().unwrap().metadata["customer_ids"]
        .split(',')
        .collect();
    named.sort();
    let mut expected = vec![w.optional.id.as_str(), w.no_hardware.id.as_str()];
    expected.sort();
    assert_eq!(named, expected);
    assert!(status.message().contains("ORG_LEVEL") && status.message().contains("HARDWARE_OATH"));
    // DescribeSelection gives the same answer as gaps.
    let described = app
        .customers()
        .describe_selection(authed(
            pb::DescribeSelectionRequest {
                customer_ids: vec![
                    w.enforced.id.clone(),
                    w.optional.id.clone(),
                    w.no_hardware.id.clone(),
                ],
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let gap = described
        .gaps
        .iter()
        .find(|g| {
            g.item
                == Some(pb::selection_gap::Item::ResetScope(
                    pb::ResetScope::OrgLevel.into(),
                ))
        })
        .unwrap();
    assert!(gap.customer_ids.contains(&w.optional.id));
}

backend_test!(selection_rules_hold_for_resets);
async fn selection_rules_hold_for_resets(app: &TestApp) {
    let w = world(app).await;
    // A customer without a role in the selection.
    let denied = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced, &w.other], &[&w.alice]),
    )
    .await;
    assert_error(denied, Code::PermissionDenied, "NO_ROLE");
    // A user who exists, but in another customer.
    let outside = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced], &[&w.alice, &w.olga]),
    )
    .await;
    let status = assert_error(outside, Code::NotFound, "NOT_FOUND");
    assert!(status.message().contains(&w.olga.id));
    // READER cannot summarize.
    let reader = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.no_hardware], &[&w.alice]),
    )
    .await;
    assert_error(reader, Code::PermissionDenied, "ROLE_TOO_WEAK");
}

backend_test!(only_the_requester_confirms_or_cancels);
async fn only_the_requester_confirms_or_cancels(app: &TestApp) {
    let w = world(app).await;
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    app.grant(
        "colleague",
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    assert_error(
        confirm(app, "colleague", &pending).await,
        Code::FailedPrecondition,
        "NOT_RESET_REQUESTER",
    );
    let cancel = app
        .users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reason: Default::default(),
                request_id: Default::default(),
                reset_id: pending.id.clone(),
            },
            &app.token("colleague"),
        ))
        .await;
    assert_error(cancel, Code::FailedPrecondition, "NOT_RESET_REQUESTER");
    // Someone who cannot see the customer does not learn the reset exists.
    assert_error(
        confirm(app, "outsider", &pending).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let got = app
        .users()
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: pending.id.clone(),
            },
            &app.token("outsider"),
        ))
        .await;
    assert_error(got, Code::NotFound, "NOT_FOUND");
    // The colleague may read it.
    let got = app
        .users()
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: pending.id.clone(),
            },
            &app.token("colleague"),
        ))
        .await
        .unwrap()
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(got.state, i32::from(pb::MfaResetState::Pending));
    assert_eq!(methods_of(app, &w.alice).await.len(), 2, "nothing applied");
}

backend_test!(etags_are_required_and_must_be_the_summarys);
async fn etags_are_required_and_must_be_the_summarys(app: &TestApp) {
    let w = world(app).await;
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    let missing = app
        .users()
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: pending.id.clone(),
                etag: String::new(),
                request_id: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await;
    let status = assert_error(missing, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["etag"]);
    let wrong = pb::MfaReset {
        etag: "0".repeat(64),
        ..pending.clone()
    };
    assert_error(
        confirm(app, ADMIN, &wrong).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(methods_of(app, &w.alice).await.len(), 2);
}

backend_test!(a_cancelled_reset_cannot_be_confirmed);
async fn a_cancelled_reset_cannot_be_confirmed(app: &TestApp) {
    let w = world(app).await;
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    let cancelled = app
        .users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reason: Default::default(),
                request_id: Default::default(),
                reset_id: pending.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(cancelled.state, i32::from(pb::MfaResetState::Cancelled));
    assert!(cancelled.cancel_time.is_some());
    assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::FailedPrecondition,
        "RESET_CANCELLED",
    );
    assert_eq!(methods_of(app, &w.alice).await.len(), 2);
    // Cancelling a confirmed reset is refused.
    let other = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.root]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    confirm(app, ADMIN, &other).await.unwrap();
    let late = app
        .users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reason: Default::default(),
                request_id: Default::default(),
                reset_id: other.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await;
    assert_error(late, Code::FailedPrecondition, "RESET_CONFIRMED");
}

backend_test!(a_summary_where_everyone_is_skipped_has_nothing_to_reset);
async fn a_summary_where_everyone_is_skipped_has_nothing_to_reset(app: &TestApp) {
    let w = world(app).await;
    let summary = summarize(app, ADMIN, summarize_request(&[&w.optional], &[&w.bob]))
        .await
        .unwrap();
    assert_eq!(
        item(&summary, &w.bob).skip_reason,
        i32::from(pb::SkipReason::NotEnrolled)
    );
    let status = assert_error(
        confirm(app, ADMIN, summary.mfa_reset.as_ref().unwrap()).await,
        Code::FailedPrecondition,
        "NOTHING_TO_RESET",
    );
    assert!(status.message().contains("MFA is not enabled"));
}

/// The changes a PLAN_STALE status lists in its PreconditionFailure: (type, subject).
fn stale_changes(status: &tonic::Status) -> Vec<(String, String)> {
    let details = tonic_types::StatusExt::get_error_details(status);
    let info = details.error_info().expect("ErrorInfo");
    let changes: Vec<(String, String)> = details
        .precondition_failure()
        .expect("a PreconditionFailure lists the changes")
        .violations
        .iter()
        .map(|v| (v.r#type.clone(), v.subject.clone()))
        .collect();
    assert_eq!(info.metadata["change_count"], changes.len().to_string());
    changes
}

/// Sets `customer`'s MFA policy as [`ADMIN`].
async fn set_policy(app: &TestApp, customer: &pb::Customer, policy: pb::MfaPolicy) {
    app.customers()
        .set_mfa_policy(authed(
            pb::SetMfaPolicyRequest {
                customer_id: customer.id.clone(),
                mfa_policy: policy.into(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("set the MFA policy");
}

/// Confirms `reset` as [`ADMIN`] and expects ABORTED PLAN_STALE listing one change, of
/// `kind`, about `customer` itself.
async fn confirm_is_stale_for_one_customer(
    app: &TestApp,
    reset: &pb::MfaReset,
    kind: &str,
    customer: &pb::Customer,
) -> tonic::Status {
    let status = assert_error(
        confirm(app, ADMIN, reset).await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert_eq!(
        stale_changes(&status),
        [(kind.to_string(), format!("customers/{}", customer.id))]
    );
    status
}

fn user_subject(user: &pb::User) -> String {
    format!("customers/{}/users/{}", user.customer_id, user.id)
}

fn method_subject(user: &pb::User, method_id: &str) -> String {
    format!("{}/authenticationMethods/{method_id}", user_subject(user))
}

backend_test!(a_stale_plan_is_aborted_naming_what_changed_and_nothing_is_applied);
async fn a_stale_plan_is_aborted_naming_what_changed_and_nothing_is_applied(app: &TestApp) {
    let w = world(app).await;
    // A method added since the summary.
    let pending = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced], &[&w.alice, &w.root]),
    )
    .await
    .unwrap()
    .mfa_reset
    .unwrap();
    let added = app
        .register_method(
            &w.alice,
            pb::MethodKind::Fido2,
            pb::MethodScope::User,
            "Passkey",
        )
        .await;
    let status = assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert!(
        status.message().contains(&added.id) && status.message().contains("was added"),
        "{}",
        status.message()
    );
    assert_eq!(
        stale_changes(&status),
        [("METHOD_ADDED".into(), method_subject(&w.alice, &added.id))]
    );
    assert_eq!(
        tonic_types::StatusExt::get_error_details(&status)
            .error_info()
            .unwrap()
            .metadata["reset_id"],
        pending.id
    );
    assert_eq!(methods_of(app, &w.alice).await.len(), 3, "nothing applied");
    assert_eq!(
        methods_of(app, &w.root).await.len(),
        2,
        "nothing applied to anyone"
    );

    // A method removed since the summary.
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    app.methods()
        .delete_authentication_method(authed(
            pb::DeleteAuthenticationMethodRequest {
                request_id: Default::default(),
                customer_id: w.enforced.id.clone(),
                method_id: added.id.clone(),
                reason: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap();
    let status = assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert!(
        status.message().contains("was removed"),
        "{}",
        status.message()
    );
    assert_eq!(
        stale_changes(&status),
        [("METHOD_REMOVED".into(), method_subject(&w.alice, &added.id))]
    );

    // A method changed since the summary: the hardware token was deactivated.
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.root]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    let token = methods_of(app, &w.root)
        .await
        .into_iter()
        .find(|m| m.kind == i32::from(pb::MethodKind::HardwareOath))
        .unwrap();
    app.methods()
        .delete_authentication_method(authed(
            pb::DeleteAuthenticationMethodRequest {
                request_id: Default::default(),
                customer_id: w.enforced.id.clone(),
                method_id: token.id.clone(),
                reason: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap();
    let status = assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert!(
        status.message().contains(&token.id) && status.message().contains("changed"),
        "{}",
        status.message()
    );
    assert_eq!(
        stale_changes(&status),
        [("METHOD_CHANGED".into(), method_subject(&w.root, &token.id))]
    );
    assert_eq!(methods_of(app, &w.root).await.len(), 2, "nothing deleted");

    // A user's admin flag changed since the summary.
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    app.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                request_id: Default::default(),
                user: Some(pb::User {
                    id: w.alice.id.clone(),
                    customer_id: w.enforced.id.clone(),
                    admin: true,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["admin".into()],
                }),
            },
            &app.token(PROVISIONER),
        ))
        .await
        .unwrap();
    let status = assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert!(
        status.message().contains("admin flag"),
        "{}",
        status.message()
    );
    assert_eq!(
        stale_changes(&status),
        [("USER_ADMIN_CHANGED".into(), user_subject(&w.alice))]
    );
    assert_eq!(methods_of(app, &w.alice).await.len(), 2);
    let alice = get_user(app, &w.enforced.id, &w.alice.id).await.unwrap();
    assert!(alice.mfa_reset_time.is_none());

    // The customer's MFA policy changed since the summary.
    let pending = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced], &[&w.me, &w.root]),
    )
    .await
    .unwrap()
    .mfa_reset
    .unwrap();
    set_policy(app, &w.enforced, pb::MfaPolicy::Optional).await;
    confirm_is_stale_for_one_customer(app, &pending, "MFA_POLICY_CHANGED", &w.enforced).await;
    assert_eq!(methods_of(app, &w.root).await.len(), 2, "nothing applied");
}

backend_test!(options_that_stopped_applying_make_the_plan_stale_not_uncommon);
async fn options_that_stopped_applying_make_the_plan_stale_not_uncommon(app: &TestApp) {
    let w = world(app).await;
    // ORG_LEVEL needs an ENFORCED policy; the policy turns OPTIONAL after the summary.
    let mut request = summarize_request(&[&w.enforced], &[&w.alice]);
    request.options = Some(pb::MfaResetOptions {
        scope: pb::ResetScope::OrgLevel.into(),
        method_kinds: vec![],
    });
    let org_level = summarize(app, ADMIN, request)
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    set_policy(app, &w.enforced, pb::MfaPolicy::Optional).await;
    confirm_is_stale_for_one_customer(app, &org_level, "MFA_POLICY_CHANGED", &w.enforced).await;

    // A kind the reset names is no longer enabled in the customer (changed by the
    // customer's directory: the contract has no RPC for it).
    let pat = app.create_user(&w.optional.id, "Pat App", false, "").await;
    app.register_method(
        &pat,
        pb::MethodKind::AuthenticatorApp,
        pb::MethodScope::User,
        "Pixel",
    )
    .await;
    let mut request = summarize_request(&[&w.optional], &[&pat]);
    request.options = Some(pb::MfaResetOptions {
        scope: pb::ResetScope::All.into(),
        method_kinds: vec![pb::MethodKind::AuthenticatorApp.into()],
    });
    let by_kind = summarize(app, ADMIN, request)
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    customers::Entity::update_many()
        .col_expr(
            customers::Column::EnabledMethodKinds,
            sea_orm::sea_query::Expr::value("PHONE,EMAIL"),
        )
        .filter(customers::Column::Id.eq(uuid::Uuid::parse_str(&w.optional.id).unwrap()))
        .exec(&app.db)
        .await
        .unwrap();
    let status = confirm_is_stale_for_one_customer(
        app,
        &by_kind,
        "ENABLED_METHOD_KINDS_CHANGED",
        &w.optional,
    )
    .await;
    assert!(status.message().contains("to PHONE,EMAIL"), "{status:?}");
    assert_eq!(methods_of(app, &pat).await.len(), 1, "nothing applied");
    assert_eq!(methods_of(app, &w.alice).await.len(), 2, "nothing applied");
}

backend_test!(a_user_deleted_by_directory_sync_makes_a_pending_reset_stale);
async fn a_user_deleted_by_directory_sync_makes_a_pending_reset_stale(app: &TestApp) {
    let w = world(app).await;
    let pending = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced], &[&w.alice, &w.root]),
    )
    .await
    .unwrap()
    .mfa_reset
    .unwrap();
    app.users()
        .delete_user(authed(
            pb::DeleteUserRequest {
                customer_id: w.enforced.id.clone(),
                user_id: w.alice.id.clone(),
                ..Default::default()
            },
            &app.token(PROVISIONER),
        ))
        .await
        .expect("directory sync deletes Alice");
    let status = assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert_eq!(
        stale_changes(&status),
        [("USER_DELETED".into(), user_subject(&w.alice))]
    );
    assert_eq!(methods_of(app, &w.root).await.len(), 2, "nothing applied");
    // The stored plan still shows what it would have done.
    let items = app
        .users()
        .list_mfa_reset_items(authed(
            pb::ListMfaResetItemsRequest {
                reset_id: pending.id.clone(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].user_id, w.alice.id);
}

backend_test!(every_unknown_user_of_a_summary_is_listed_in_one_not_found);
async fn every_unknown_user_of_a_summary_is_listed_in_one_not_found(app: &TestApp) {
    let w = world(app).await;
    let unknown: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let request = pb::UsersSummarizeMfaResetRequest {
        customer_ids: vec![w.enforced.id.clone()],
        target: Some(pb::users_summarize_mfa_reset_request::Target::Users(
            pb::UserReferences {
                // Alice is found; the stranger exists, in another customer; three exist
                // nowhere; two subjects name nobody in the selection.
                user_ids: [
                    vec![w.alice.id.clone(), w.stranger.id.clone()],
                    unknown.clone(),
                ]
                .concat(),
                external_subjects: vec!["olga-sub".into(), "nobody-sub".into()],
            },
        )),
        reason: "many unknown".into(),
        ..Default::default()
    };
    let status = assert_error(
        summarize(app, ADMIN, request).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let named: Vec<String> = tonic_types::StatusExt::get_error_details_vec(&status)
        .into_iter()
        .filter_map(|d| match d {
            tonic_types::ErrorDetail::ResourceInfo(r) => Some(r.resource_name),
            _ => None,
        })
        .collect();
    let mut expected = vec![w.stranger.id.clone()];
    expected.extend(unknown);
    expected.extend([
        "external_subject/olga-sub".into(),
        "external_subject/nobody-sub".into(),
    ]);
    assert_eq!(named, expected, "every one, in request order");
    let info = tonic_types::StatusExt::get_error_details(&status)
        .error_info()
        .cloned()
        .unwrap();
    assert_eq!(info.metadata["not_found_count"], "6");
    assert_eq!(info.metadata["resource_type"], "mfareset.v1.User");
    assert!(
        !status.message().contains(&w.alice.id),
        "{}",
        status.message()
    );
}

backend_test!(a_reset_names_its_users_by_the_subjects_the_sign_in_system_knows);
async fn a_reset_names_its_users_by_the_subjects_the_sign_in_system_knows(app: &TestApp) {
    let w = world(app).await;
    let by_subject = |subjects: &[&str], ids: &[&str]| pb::UsersSummarizeMfaResetRequest {
        customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
        target: Some(pb::users_summarize_mfa_reset_request::Target::Users(
            pb::UserReferences {
                user_ids: ids.iter().map(|s| s.to_string()).collect(),
                external_subjects: subjects.iter().map(|s| s.to_string()).collect(),
            },
        )),
        reason: "by subject".into(),
        ..Default::default()
    };
    let summary = summarize(
        app,
        ADMIN,
        by_subject(&["root-sub", "alice-sub"], &[&w.olga.id]),
    )
    .await
    .unwrap();
    let order: Vec<&str> = summary.items.iter().map(|i| i.user_id.as_str()).collect();
    assert_eq!(
        order,
        [w.olga.id.as_str(), w.root.id.as_str(), w.alice.id.as_str()],
        "ids first, then subjects, each in request order"
    );
    assert_eq!(summary.items[1].external_subject, "root-sub");
    let confirmed = confirm(app, ADMIN, summary.mfa_reset.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(confirmed.state(), pb::MfaResetState::Confirmed);
    assert!(methods_of(app, &w.alice).await.is_empty());

    // Naming one user twice (by id and by subject) is INVALID_ARGUMENT.
    let twice = summarize(app, ADMIN, by_subject(&["olga-sub"], &[&w.olga.id])).await;
    let status = assert_error(twice, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["users.external_subjects[0]"]);
}

backend_test!(cancelling_records_an_event_in_every_customer_of_the_reset);
async fn cancelling_records_an_event_in_every_customer_of_the_reset(app: &TestApp) {
    let w = world(app).await;
    let pending = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced, &w.optional], &[&w.alice, &w.bob]),
    )
    .await
    .unwrap()
    .mfa_reset
    .unwrap();
    let cancelled = app
        .users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reset_id: pending.id.clone(),
                reason: "wrong ticket".into(),
                request_id: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(cancelled.state(), pb::MfaResetState::Cancelled);
    assert_eq!(cancelled.cancelled_by, ADMIN);
    assert!(cancelled.cancel_time.is_some());
    let events = audit_events(
        app,
        &[&w.enforced.id, &w.optional.id],
        pb::AuditAction::ResetCancelled,
        "",
    )
    .await;
    let mut customers: Vec<&str> = events.iter().map(|e| e.customer_id.as_str()).collect();
    customers.sort();
    let mut expected = vec![w.enforced.id.as_str(), w.optional.id.as_str()];
    expected.sort();
    assert_eq!(customers, expected, "one event per customer of the reset");
    assert!(events.iter().all(|e| e.reset_id == pending.id
        && e.reason == "wrong ticket"
        && e.details
            == Some(pb::audit_event::Details::ResetCancelled(
                pb::ResetCancelledDetails {
                    previous_state: pb::MfaResetState::Pending.into()
                }
            ))));
}

backend_test!(a_revoked_role_takes_effect_at_confirm);
async fn a_revoked_role_takes_effect_at_confirm(app: &TestApp) {
    let w = world(app).await;
    let pending = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    app.revoke(
        ADMIN,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::PermissionDenied,
        "NO_ROLE",
    );
    // Downgraded to READER: still refused.
    app.grant(ADMIN, Some(&w.enforced.id), "READER").await;
    assert_error(
        confirm(app, ADMIN, &pending).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    // Downgraded to AUTHENTICATION_ADMIN, with an admin in the plan: refused, not stale.
    app.grant(
        ADMIN,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    let with_admin = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.root]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    app.revoke(
        ADMIN,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    app.grant(ADMIN, Some(&w.enforced.id), "AUTHENTICATION_ADMIN")
        .await;
    assert_error(
        confirm(app, ADMIN, &with_admin).await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert_eq!(methods_of(app, &w.root).await.len(), 2);
    assert_eq!(methods_of(app, &w.alice).await.len(), 2);
}

backend_test!(the_methods_door_serves_the_same_reset);
async fn the_methods_door_serves_the_same_reset(app: &TestApp) {
    let w = world(app).await;
    let summary = app
        .methods()
        .summarize_mfa_reset(authed(
            pb::AuthenticationMethodsSummarizeMfaResetRequest {
                customer_ids: vec![w.enforced.id.clone()],
                target: Some(
                    pb::authentication_methods_summarize_mfa_reset_request::Target::Users(
                        pb::UserReferences {
                            user_ids: vec![w.alice.id.clone()],
                            external_subjects: vec![],
                        },
                    ),
                ),
                reason: "from the methods list".into(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    let pending = summary.mfa_reset.unwrap();
    assert_eq!(summary.items.len(), 1);
    let confirmed = app
        .methods()
        .confirm_mfa_reset(authed(
            pb::AuthenticationMethodsConfirmMfaResetRequest {
                request_id: Default::default(),
                reset_id: pending.id.clone(),
                etag: pending.etag.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(confirmed.state, i32::from(pb::MfaResetState::Confirmed));
    // The Users door sees the same reset, and confirming it there again changes nothing.
    let again = confirm(app, ADMIN, &pending).await.unwrap();
    assert_eq!(again, confirmed);
    assert!(methods_of(app, &w.alice).await.is_empty());
}

backend_test!(summary_items_page_with_a_token_bound_to_the_reset);
async fn summary_items_page_with_a_token_bound_to_the_reset(app: &TestApp) {
    let w = world(app).await;
    let users = [&w.alice, &w.root, &w.me];
    let mut request = summarize_request(&[&w.enforced], &users);
    request.page_size = 2;
    let summary = summarize(app, ADMIN, request).await.unwrap();
    assert_eq!(summary.items.len(), 2);
    assert!(!summary.next_page_token.is_empty());
    let reset_id = summary.mfa_reset.as_ref().unwrap().id.clone();
    let rest = app
        .users()
        .list_mfa_reset_items(authed(
            pb::ListMfaResetItemsRequest {
                customer_ids: Default::default(),
                outcome: Default::default(),
                skip_reasons: Default::default(),
                reset_id: reset_id.clone(),
                page_size: 2,
                page_token: summary.next_page_token.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let order: Vec<&str> = summary
        .items
        .iter()
        .chain(&rest.items)
        .map(|i| i.user_id.as_str())
        .collect();
    assert_eq!(
        order,
        users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        "request order"
    );
    // The token belongs to that reset and that caller.
    let other = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    let misused = app
        .users()
        .list_mfa_reset_items(authed(
            pb::ListMfaResetItemsRequest {
                customer_ids: Default::default(),
                outcome: Default::default(),
                skip_reasons: Default::default(),
                reset_id: other.id,
                page_size: 2,
                page_token: summary.next_page_token.clone(),
            },
            &app.token(ADMIN),
        ))
        .await;
    let status = assert_error(misused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["page_token"]);
}

backend_test!(summarize_validates_every_field_at_once);
async fn summarize_validates_every_field_at_once(app: &TestApp) {
    let w = world(app).await;
    let request = pb::UsersSummarizeMfaResetRequest {
        customer_ids: vec![w.enforced.id.clone()],
        target: users_by_id(vec!["nope".into(), w.alice.id.clone(), w.alice.id.clone()]),
        options: Some(pb::MfaResetOptions {
            scope: 9,
            method_kinds: vec![0],
        }),
        reason: String::new(),
        page_size: -1,
        request_id: "not-a-uuid".into(),
    };
    let status = assert_error(
        summarize(app, ADMIN, request).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        [
            "request_id",
            "users.user_ids[0]",
            "users.user_ids[2]",
            "options.scope",
            "options.method_kinds[0]",
            "reason",
            "page_size"
        ]
    );
    let too_long = pb::UsersSummarizeMfaResetRequest {
        reason: "x".repeat(501),
        ..summarize_request(&[&w.enforced], &[&w.alice])
    };
    let status = assert_error(
        summarize(app, ADMIN, too_long).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["reason"]);
    let nobody = summarize_request(&[&w.enforced], &[]);
    let status = assert_error(
        summarize(app, ADMIN, nobody).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["users"]);
    let no_target = pb::UsersSummarizeMfaResetRequest {
        target: None,
        ..summarize_request(&[&w.enforced], &[&w.alice])
    };
    let status = assert_error(
        summarize(app, ADMIN, no_target).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["users"]);
}

backend_test!(two_resets_of_one_user_confirmed_at_once_apply_once);
async fn two_resets_of_one_user_confirmed_at_once_apply_once(app: &TestApp) {
    let w = world(app).await;
    let first = summarize(app, ADMIN, summarize_request(&[&w.enforced], &[&w.alice]))
        .await
        .unwrap()
        .mfa_reset
        .unwrap();
    let second = summarize(
        app,
        ADMIN,
        summarize_request(&[&w.enforced], &[&w.alice, &w.root]),
    )
    .await
    .unwrap()
    .mfa_reset
    .unwrap();
    let (a, b) = tokio::join!(confirm(app, ADMIN, &first), confirm(app, ADMIN, &second));
    let outcomes = [a, b];
    let confirmed = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(confirmed, 1, "exactly one applies: {outcomes:?}");
    let refused = outcomes.into_iter().find(|r| r.is_err()).unwrap();
    assert_error(refused, Code::Aborted, "PLAN_STALE");
    let events = audit_events(
        app,
        &[&w.enforced.id],
        pb::AuditAction::MfaReset,
        &w.alice.id,
    )
    .await;
    assert_eq!(events.len(), 1, "one reset of Alice, one audit event");
}
