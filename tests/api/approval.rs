//! Four-eyes approval of large resets: the customer's threshold, who sets it, and what a
//! summary decides from it; the requester's confirm into AWAITING_APPROVAL, approval by
//! another administrator (exactly once, stale plans refused, roles of both checked),
//! rejection, cancellation and expiry while awaiting.

use mfa_reset::proto::v1::{self as pb};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::*;

async fn set_threshold(
    app: &TestApp,
    subject: &str,
    customer_id: &str,
    threshold: i32,
    request_id: &str,
) -> Result<pb::Customer, Status> {
    app.customers()
        .set_approval_threshold(authed(
            pb::SetApprovalThresholdRequest {
                customer_id: customer_id.into(),
                approval_threshold: threshold,
                reason: "large resets need two admins".into(),
                request_id: request_id.into(),
            },
            &app.token(subject),
        ))
        .await
        .map(|r| r.into_inner().customer.expect("customer"))
}

async fn summarize(app: &TestApp, customers: &[&str], users: &[&str]) -> pb::MfaReset {
    app.users()
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: customers.iter().map(|c| c.to_string()).collect(),
                target: users_by_id(users.iter().map(|u| u.to_string()).collect()),
                reason: "approval".into(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("summarize")
        .into_inner()
        .mfa_reset
        .expect("reset")
}

backend_test!(a_privileged_admin_sets_the_threshold_audited_and_idempotent);
async fn a_privileged_admin_sets_the_threshold_audited_and_idempotent(app: &TestApp) {
    let w = world(app).await;
    let key = uuid::Uuid::now_v7().to_string();
    let set = set_threshold(app, ADMIN, &w.enforced.id, 2, &key)
        .await
        .expect("PRIVILEGED_AUTHENTICATION_ADMIN sets it");
    assert_eq!(set.approval_threshold, 2);
    // A retry with the same request id: the first answer, nothing more; the same id for
    // another threshold is refused.
    let retried = set_threshold(app, ADMIN, &w.enforced.id, 2, &key)
        .await
        .expect("retry");
    assert_eq!(retried, set);
    let reused = set_threshold(app, ADMIN, &w.enforced.id, 3, &key).await;
    assert_error(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    // The same value again changes nothing and records nothing.
    set_threshold(app, ADMIN, &w.enforced.id, 2, "")
        .await
        .expect("same value");

    let events = audit_events(
        app,
        &[&w.enforced.id],
        pb::AuditAction::ApprovalThresholdSet,
        "",
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, ADMIN);
    assert_eq!(events[0].reason, "large resets need two admins");
    assert!(matches!(
        &events[0].details,
        Some(pb::audit_event::Details::ApprovalThresholdSet(d))
            if d.previous_approval_threshold == 0 && d.approval_threshold == 2
    ));

    // GetCustomer and DescribeSelection show it.
    let got = app
        .customers()
        .get_customer(authed(
            pb::GetCustomerRequest {
                customer_id: w.enforced.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("get customer")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(got.approval_threshold, 2);
    let described = app
        .customers()
        .describe_selection(authed(
            pb::DescribeSelectionRequest {
                customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("describe")
        .into_inner();
    let thresholds: Vec<i32> = described
        .customers
        .iter()
        .map(|c| c.approval_threshold)
        .collect();
    assert_eq!(thresholds, [2, 0]);
}

backend_test!(only_a_privileged_admin_of_the_customer_sets_a_valid_threshold);
async fn only_a_privileged_admin_of_the_customer_sets_a_valid_threshold(app: &TestApp) {
    let w = world(app).await;
    // AUTHENTICATION_ADMIN, READER, nothing.
    let weak = set_threshold(app, ADMIN, &w.optional.id, 5, "").await;
    assert_error(weak, Code::PermissionDenied, "ROLE_TOO_WEAK");
    let reader = set_threshold(app, ADMIN, &w.no_hardware.id, 5, "").await;
    assert_error(reader, Code::PermissionDenied, "ROLE_TOO_WEAK");
    let none = set_threshold(app, ADMIN, &w.other.id, 5, "").await;
    assert_error(none, Code::PermissionDenied, "NO_ROLE");
    let provisioner = set_threshold(app, PROVISIONER, &w.enforced.id, 5, "").await;
    assert_error(provisioner, Code::PermissionDenied, "ROLE_TOO_WEAK");

    for (threshold, field) in [(-1, "approval_threshold"), (10_001, "approval_threshold")] {
        let status = assert_error(
            set_threshold(app, ADMIN, &w.enforced.id, threshold, "").await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), [field], "{threshold}");
    }
    let status = assert_error(
        set_threshold(app, ADMIN, "nope", 1, "").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["customer_id"]);
    assert_eq!(
        set_threshold(app, ADMIN, &w.enforced.id, 10_000, "")
            .await
            .expect("the largest")
            .approval_threshold,
        10_000
    );
    // Nothing changed where the caller was refused.
    let events = audit_events(
        app,
        &[&w.optional.id],
        pb::AuditAction::ApprovalThresholdSet,
        "",
    )
    .await;
    assert!(events.is_empty());
}

backend_test!(a_summary_at_the_threshold_needs_approval_and_keeps_its_decision);
async fn a_summary_at_the_threshold_needs_approval_and_keeps_its_decision(app: &TestApp) {
    let w = world(app).await;
    set_threshold(app, ADMIN, &w.enforced.id, 2, "")
        .await
        .expect("set");
    let selection = [w.enforced.id.as_str(), w.optional.id.as_str()];

    // Below the threshold: Alice alone (Bob in Contoso has no MFA: skipped, not counted).
    let below = summarize(app, &selection, &[&w.alice.id, &w.bob.id]).await;
    assert!(!below.approval_required);
    // At it: Alice and Root, two users reset in Northwind-like `enforced`.
    let at = summarize(app, &selection, &[&w.alice.id, &w.root.id]).await;
    assert!(at.approval_required);
    let enforced = at
        .customer_summaries
        .iter()
        .find(|c| c.customer_id == w.enforced.id)
        .expect("the enforced customer's part");
    assert!(enforced.approval_required);
    assert_eq!(enforced.approval_threshold, 2);
    let optional = at
        .customer_summaries
        .iter()
        .find(|c| c.customer_id == w.optional.id)
        .expect("the optional customer's part");
    assert!(!optional.approval_required);

    // A later threshold changes no reset already summarized.
    set_threshold(app, ADMIN, &w.enforced.id, 0, "")
        .await
        .expect("off");
    let again = app
        .users()
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: at.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("get")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert!(again.approval_required);
    assert_eq!(again.etag, at.etag);
    // And the one below stays confirmable.
    let confirmed = app
        .users()
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: below.id.clone(),
                etag: below.etag.clone(),
                request_id: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("confirm below the threshold")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert_eq!(confirmed.state(), pb::MfaResetState::Confirmed);
}

// ---------------------------------------------------------------------------------------
// Request, approve, reject.
// ---------------------------------------------------------------------------------------

/// A second administrator: PRIVILEGED in `enforced`, AUTHENTICATION_ADMIN in `optional`,
/// like [`ADMIN`], so that they may approve what ADMIN requests there.
const APPROVER: &str = "approver-principal";

/// The world with a threshold of 2 in `enforced`, [`APPROVER`] granted, and Oscar: a
/// non-admin of `optional` with a phone, so that a reset can span two customers.
struct ApprovalWorld {
    w: World,
    oscar: pb::User,
}

async fn approval_world(app: &TestApp) -> ApprovalWorld {
    let w = world(app).await;
    set_threshold(app, ADMIN, &w.enforced.id, 2, "")
        .await
        .expect("set the threshold");
    grant_approver(app, APPROVER, &w).await;
    let oscar = app
        .create_user(&w.optional.id, "Oscar Ortiz", false, "oscar-sub")
        .await;
    app.register_method(
        &oscar,
        pb::MethodKind::Phone,
        pb::MethodScope::User,
        "+1 555 987 6543",
    )
    .await;
    ApprovalWorld { w, oscar }
}

async fn grant_approver(app: &TestApp, subject: &str, w: &World) {
    app.grant(
        subject,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    app.grant(subject, Some(&w.optional.id), "AUTHENTICATION_ADMIN")
        .await;
}

impl ApprovalWorld {
    fn selection(&self) -> [&str; 2] {
        [&self.w.enforced.id, &self.w.optional.id]
    }

    /// Alice and Root (an admin) in `enforced`, Oscar in `optional`: three users reset, two
    /// in `enforced`, whose threshold is 2. And ADMIN's own user, skipped (SELF) as ADMIN
    /// planned it: an approval that re-planned from the approver's point of view would
    /// differ, and be stale.
    async fn large_reset(&self, app: &TestApp) -> pb::MfaReset {
        let reset = summarize(
            app,
            &self.selection(),
            &[
                &self.w.alice.id,
                &self.w.root.id,
                &self.oscar.id,
                &self.w.me.id,
            ],
        )
        .await;
        assert!(reset.approval_required);
        assert_eq!(
            reset.totals.as_ref().map(|t| t.users_to_reset_count),
            Some(3)
        );
        reset
    }

    /// [`ApprovalWorld::large_reset`], confirmed by its requester.
    async fn awaiting(&self, app: &TestApp) -> pb::MfaReset {
        let reset = self.large_reset(app).await;
        let awaiting = confirm(app, ADMIN, &reset).await.expect("request approval");
        assert_eq!(awaiting.state(), pb::MfaResetState::AwaitingApproval);
        awaiting
    }

    fn reset_users(&self) -> [&pb::User; 3] {
        [&self.w.alice, &self.w.root, &self.oscar]
    }
}

async fn approve(
    app: &TestApp,
    subject: &str,
    reset: &pb::MfaReset,
    request_id: &str,
) -> Result<pb::MfaReset, Status> {
    app.users()
        .approve_mfa_reset(authed(
            pb::ApproveMfaResetRequest {
                reset_id: reset.id.clone(),
                etag: reset.etag.clone(),
                request_id: request_id.into(),
            },
            &app.token(subject),
        ))
        .await
        .map(|r| r.into_inner().mfa_reset.expect("reset"))
}

async fn reject(
    app: &TestApp,
    subject: &str,
    reset: &pb::MfaReset,
    reason: &str,
) -> Result<pb::MfaReset, Status> {
    app.users()
        .reject_mfa_reset(authed(
            pb::RejectMfaResetRequest {
                reset_id: reset.id.clone(),
                reason: reason.into(),
                request_id: String::new(),
            },
            &app.token(subject),
        ))
        .await
        .map(|r| r.into_inner().mfa_reset.expect("reset"))
}

async fn get_reset(app: &TestApp, subject: &str, reset: &pb::MfaReset) -> pb::MfaReset {
    app.users()
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: reset.id.clone(),
            },
            &app.token(subject),
        ))
        .await
        .expect("get the reset")
        .into_inner()
        .mfa_reset
        .expect("reset")
}

/// How many active methods `user` has, read by the provisioner.
async fn active_methods(app: &TestApp, user: &pb::User) -> usize {
    app.methods()
        .list_authentication_methods(authed(
            pb::ListAuthenticationMethodsRequest {
                customer_ids: vec![user.customer_id.clone()],
                user_id: user.id.clone(),
                ..Default::default()
            },
            &app.token(PROVISIONER),
        ))
        .await
        .expect("list methods")
        .into_inner()
        .authentication_methods
        .iter()
        .filter(|m| m.state() == pb::MethodState::Active)
        .count()
}

/// Asserts that none of the reset's users lost a method and `reset` has no MFA_RESET event.
async fn nothing_applied(
    app: &TestApp,
    aw: &ApprovalWorld,
    before: &[usize],
    reset: &pb::MfaReset,
) {
    for (user, count) in aw.reset_users().into_iter().zip(before) {
        assert_eq!(
            active_methods(app, user).await,
            *count,
            "{} kept every method",
            user.display_name
        );
    }
    let applied: Vec<_> = audit_events(app, &aw.selection(), pb::AuditAction::MfaReset, "")
        .await
        .into_iter()
        .filter(|e| e.reset_id == reset.id)
        .collect();
    assert!(applied.is_empty(), "{applied:?}");
}

async fn method_counts(app: &TestApp, aw: &ApprovalWorld) -> Vec<usize> {
    let mut counts = Vec::new();
    for user in aw.reset_users() {
        counts.push(active_methods(app, user).await);
    }
    counts
}

/// The approver's inbox over the world's two customers.
async fn inbox(app: &TestApp, subject: &str, aw: &ApprovalWorld) -> Vec<String> {
    app.users()
        .list_mfa_resets(authed(
            pb::ListMfaResetsRequest {
                customer_ids: aw.selection().iter().map(|c| c.to_string()).collect(),
                approvable_by_caller: true,
                ..Default::default()
            },
            &app.token(subject),
        ))
        .await
        .expect("inbox")
        .into_inner()
        .mfa_resets
        .into_iter()
        .map(|r| r.id)
        .collect()
}

backend_test!(the_requesters_confirm_awaits_approval_and_applies_nothing);
async fn the_requesters_confirm_awaits_approval_and_applies_nothing(app: &TestApp) {
    let aw = approval_world(app).await;
    let before = method_counts(app, &aw).await;
    let reset = aw.large_reset(app).await;
    let awaiting = confirm(app, ADMIN, &reset).await.expect("confirm");
    assert_eq!(awaiting.state(), pb::MfaResetState::AwaitingApproval);
    assert_eq!(awaiting.confirmed_by, ADMIN);
    assert_eq!(awaiting.etag, reset.etag, "the plan is unchanged");
    assert!(awaiting.approved_by.is_empty() && awaiting.approve_time.is_none());
    // The expiry moved from the summary's 15 minutes to the approval window (24 h).
    let confirmed_at = awaiting.confirm_time.expect("confirm time").seconds;
    let expires = awaiting.expire_time.expect("expire time").seconds;
    assert!(
        (expires - confirmed_at - 24 * 3600).abs() <= 2,
        "expires {expires}, confirmed {confirmed_at}"
    );
    assert_eq!(get_reset(app, APPROVER, &reset).await, awaiting);
    nothing_applied(app, &aw, &before, &reset).await;

    // One RESET_APPROVAL_REQUESTED per customer, saying which threshold asks for it.
    let events = audit_events(
        app,
        &aw.selection(),
        pb::AuditAction::ResetApprovalRequested,
        "",
    )
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!(event.actor, ADMIN);
        assert_eq!(event.reset_id, reset.id);
        assert_eq!(event.reason, "approval");
        let Some(pb::audit_event::Details::ResetApprovalRequested(d)) = &event.details else {
            panic!("details: {event:?}");
        };
        let in_enforced = event.customer_id == aw.w.enforced.id;
        assert_eq!(d.approval_required, in_enforced, "{event:?}");
        assert_eq!(d.users_to_reset_count, if in_enforced { 2 } else { 1 });
    }

    // Confirming again returns it and records nothing more.
    let again = confirm(app, ADMIN, &reset).await.expect("confirm again");
    assert_eq!(again, awaiting);
    let events = audit_events(
        app,
        &aw.selection(),
        pb::AuditAction::ResetApprovalRequested,
        "",
    )
    .await;
    assert_eq!(events.len(), 2);

    // It is in the approver's inbox, not in the requester's; the requester may not decide it.
    assert_eq!(inbox(app, APPROVER, &aw).await, vec![reset.id.clone()]);
    assert!(inbox(app, ADMIN, &aw).await.is_empty());
    let own = approve(app, ADMIN, &reset, "").await;
    let status = assert_error(own, Code::FailedPrecondition, "SELF_APPROVAL");
    assert!(
        status.message().contains("another administrator"),
        "{status:?}"
    );
    let own = reject(app, ADMIN, &reset, "changed my mind").await;
    assert_error(own, Code::FailedPrecondition, "SELF_APPROVAL");
    nothing_applied(app, &aw, &before, &reset).await;

    // The requester may still cancel it; then nobody can approve it.
    let cancelled = app
        .users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reset_id: reset.id.clone(),
                reason: "asked the wrong customer".into(),
                request_id: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("cancel while awaiting")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert_eq!(cancelled.state(), pb::MfaResetState::Cancelled);
    let cancel_events =
        audit_events(app, &aw.selection(), pb::AuditAction::ResetCancelled, "").await;
    assert_eq!(cancel_events.len(), 2);
    assert!(cancel_events.iter().all(|e| matches!(
        &e.details,
        Some(pb::audit_event::Details::ResetCancelled(d))
            if d.previous_state() == pb::MfaResetState::AwaitingApproval
    )));
    let late = approve(app, APPROVER, &reset, "").await;
    assert_error(late, Code::FailedPrecondition, "RESET_CANCELLED");
    assert!(inbox(app, APPROVER, &aw).await.is_empty());
    nothing_applied(app, &aw, &before, &reset).await;
}

backend_test!(an_approval_applies_the_plan_exactly_once_naming_both_principals);
async fn an_approval_applies_the_plan_exactly_once_naming_both_principals(app: &TestApp) {
    let aw = approval_world(app).await;
    let approvers: Vec<String> = (0..4).map(|i| format!("approver-{i}")).collect();
    for approver in &approvers {
        grant_approver(app, approver, &aw.w).await;
    }
    let reset = aw.awaiting(app).await;

    // 32 approvals at once, by four approvers: every one answers CONFIRMED, by one of them.
    let calls = (0..32).map(|i| {
        let approver = approvers[i % approvers.len()].clone();
        let reset = reset.clone();
        async move { approve(app, &approver, &reset, "").await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut winners = std::collections::BTreeSet::new();
    for answer in answers {
        let answer = answer.expect("every approval answers the approved reset");
        assert_eq!(answer.state(), pb::MfaResetState::Confirmed);
        assert_eq!(
            answer.confirmed_by, ADMIN,
            "the requester stays the confirmer"
        );
        assert!(answer.approve_time.is_some());
        winners.insert(answer.approved_by);
    }
    assert_eq!(winners.len(), 1, "one approval applied it: {winners:?}");
    let winner = winners.pop_first().expect("a winner");
    assert!(approvers.contains(&winner));

    // Applied once: every user reset, one MFA_RESET each naming both principals; ADMIN's own
    // user skipped, as ADMIN's summary planned.
    for user in aw.reset_users() {
        assert_eq!(active_methods(app, user).await, 0, "{}", user.display_name);
    }
    assert_eq!(active_methods(app, &aw.w.me).await, 1);
    let events = audit_events(app, &aw.selection(), pb::AuditAction::MfaReset, "").await;
    let mut reset_users: Vec<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    reset_users.sort();
    let mut expected: Vec<&str> = aw.reset_users().iter().map(|u| u.id.as_str()).collect();
    expected.sort();
    assert_eq!(reset_users, expected, "one event per user");
    for event in &events {
        assert_eq!(event.actor, winner);
        assert_eq!(event.reset_id, reset.id);
        let Some(pb::audit_event::Details::MfaReset(d)) = &event.details else {
            panic!("details: {event:?}");
        };
        assert_eq!(d.requested_by, ADMIN);
        assert_eq!(d.approved_by, winner);
    }
    let approved = audit_events(app, &aw.selection(), pb::AuditAction::ResetApproved, "").await;
    assert_eq!(approved.len(), 2, "one per customer: {approved:?}");
    for event in &approved {
        let Some(pb::audit_event::Details::ResetApproved(d)) = &event.details else {
            panic!("details: {event:?}");
        };
        assert_eq!(d.requested_by, ADMIN);
        let expected = if event.customer_id == aw.w.enforced.id {
            2
        } else {
            1
        };
        assert_eq!(d.users_reset_count, expected);
    }
    let got = get_reset(app, ADMIN, &reset).await;
    assert_eq!(got.state(), pb::MfaResetState::Confirmed);
    assert_eq!(got.approved_by, winner);
    assert!(inbox(app, APPROVER, &aw).await.is_empty());

    // Approving again (another approver, or a retry) returns it and changes nothing;
    // rejecting it now is refused.
    let again = approve(app, APPROVER, &reset, "")
        .await
        .expect("approve again");
    assert_eq!(again.approved_by, winner);
    let too_late = reject(app, APPROVER, &reset, "too late").await;
    assert_error(too_late, Code::FailedPrecondition, "RESET_CONFIRMED");
    let events = audit_events(app, &aw.selection(), pb::AuditAction::MfaReset, "").await;
    assert_eq!(events.len(), 3);
}

backend_test!(approvers_need_a_role_allowing_the_reset_and_must_not_be_among_its_users);
async fn approvers_need_a_role_allowing_the_reset_and_must_not_be_among_its_users(app: &TestApp) {
    let aw = approval_world(app).await;
    let w = &aw.w;
    // READER in `optional`: may see the reset, may not approve it.
    let reader = "reader-approver";
    app.grant(
        reader,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    app.grant(reader, Some(&w.optional.id), "READER").await;
    // AUTHENTICATION_ADMIN in `enforced`, where the reset resets Root, an admin.
    let weak = "weak-approver";
    app.grant(weak, Some(&w.enforced.id), "AUTHENTICATION_ADMIN")
        .await;
    app.grant(weak, Some(&w.optional.id), "AUTHENTICATION_ADMIN")
        .await;
    // No role in `optional`: the reset is not theirs to see.
    let outsider = "outsider-approver";
    app.grant(
        outsider,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    // Oscar's own principal, with every role needed.
    grant_approver(app, "oscar-sub", w).await;

    let before = method_counts(app, &aw).await;
    let reset = aw.awaiting(app).await;
    for subject in [reader, weak, "oscar-sub"] {
        assert!(inbox(app, subject, &aw).await.is_empty(), "{subject}");
    }
    assert_eq!(inbox(app, APPROVER, &aw).await, vec![reset.id.clone()]);

    let status = assert_error(
        approve(app, reader, &reset, "").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert!(status.message().contains(&w.optional.id), "{status:?}");
    assert_error(
        reject(app, reader, &reset, "no").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    let status = assert_error(
        approve(app, weak, &reset, "").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("info");
    assert_eq!(info.metadata["customer_ids"], w.enforced.id, "{status:?}");
    assert!(status.message().contains("admins"), "{status:?}");
    assert_error(
        reject(app, weak, &reset, "no").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert_error(
        approve(app, outsider, &reset, "").await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let status = assert_error(
        approve(app, "oscar-sub", &reset, "").await,
        Code::PermissionDenied,
        "SELF",
    );
    assert!(status.message().contains("your own"), "{status:?}");
    assert_error(
        reject(app, "oscar-sub", &reset, "no").await,
        Code::PermissionDenied,
        "SELF",
    );
    nothing_applied(app, &aw, &before, &reset).await;

    // The requester's roles count too: with ADMIN's role in `optional` revoked, nobody can
    // approve what ADMIN asked for there.
    app.revoke(ADMIN, Some(&w.optional.id), "AUTHENTICATION_ADMIN")
        .await;
    let status = assert_error(
        approve(app, APPROVER, &reset, "").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert!(status.message().contains("requester"), "{status:?}");
    app.grant(ADMIN, Some(&w.optional.id), "AUTHENTICATION_ADMIN")
        .await;
    nothing_applied(app, &aw, &before, &reset).await;
    // And the requester's right to reset admins: downgraded in `enforced`.
    app.revoke(
        ADMIN,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    app.grant(ADMIN, Some(&w.enforced.id), "AUTHENTICATION_ADMIN")
        .await;
    let status = assert_error(
        approve(app, APPROVER, &reset, "").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert!(status.message().contains("requester's role"), "{status:?}");
    nothing_applied(app, &aw, &before, &reset).await;
    app.grant(
        ADMIN,
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;

    // Still awaiting: an approver with the roles applies it.
    assert_eq!(
        get_reset(app, ADMIN, &reset).await.state(),
        pb::MfaResetState::AwaitingApproval
    );
    let key = uuid::Uuid::now_v7().to_string();
    let approved = approve(app, APPROVER, &reset, &key).await.expect("approve");
    assert_eq!(approved.state(), pb::MfaResetState::Confirmed);
    assert_eq!(approved.approved_by, APPROVER);
    // The request id is remembered: reused for another request, it is refused.
    let other = pb::MfaReset {
        etag: "another etag".into(),
        ..reset.clone()
    };
    assert_error(
        approve(app, APPROVER, &other, &key).await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );
    // Once approved, those who could not approve it still cannot: no OK for them.
    assert_error(
        approve(app, "oscar-sub", &reset, "").await,
        Code::PermissionDenied,
        "SELF",
    );
    assert_error(
        approve(app, weak, &reset, "").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
    assert_error(
        reject(app, reader, &reset, "no").await,
        Code::PermissionDenied,
        "ROLE_TOO_WEAK",
    );
}

backend_test!(an_approval_after_a_change_is_stale_and_the_reset_can_still_be_rejected);
async fn an_approval_after_a_change_is_stale_and_the_reset_can_still_be_rejected(app: &TestApp) {
    let aw = approval_world(app).await;
    // Approve and reject want a reset that awaits approval, and name their fields.
    let pending = aw.large_reset(app).await;
    assert_error(
        approve(app, APPROVER, &pending, "").await,
        Code::FailedPrecondition,
        "RESET_NOT_AWAITING_APPROVAL",
    );
    assert_error(
        reject(app, APPROVER, &pending, "no").await,
        Code::FailedPrecondition,
        "RESET_NOT_AWAITING_APPROVAL",
    );
    let status = assert_error(
        app.users()
            .approve_mfa_reset(authed(
                pb::ApproveMfaResetRequest {
                    reset_id: "nope".into(),
                    ..Default::default()
                },
                &app.token(APPROVER),
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["reset_id", "etag"]);
    let status = assert_error(
        reject(app, APPROVER, &pending, " ").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["reason"]);

    // A reset below the threshold is its requester's to confirm; once confirmed, approving
    // or rejecting it is still not something it awaits.
    let small = summarize(app, &[&aw.w.enforced.id], &[&aw.w.alice.id]).await;
    assert!(!small.approval_required);
    assert_error(
        approve(app, APPROVER, &small, "").await,
        Code::FailedPrecondition,
        "RESET_NOT_AWAITING_APPROVAL",
    );
    let small = confirm(app, ADMIN, &small)
        .await
        .expect("confirm the small one");
    assert_eq!(small.state(), pb::MfaResetState::Confirmed);
    assert_error(
        approve(app, APPROVER, &small, "").await,
        Code::FailedPrecondition,
        "RESET_NOT_AWAITING_APPROVAL",
    );
    assert_error(
        reject(app, APPROVER, &small, "no").await,
        Code::FailedPrecondition,
        "RESET_NOT_AWAITING_APPROVAL",
    );
    // Alice has nothing left; a phone again, for the large reset.
    app.register_method(
        &aw.w.alice,
        pb::MethodKind::Phone,
        pb::MethodScope::User,
        "+1 555 123 0000",
    )
    .await;

    let reset = aw.awaiting(app).await;
    let wrong_etag = pb::MfaReset {
        etag: pending.etag.clone(),
        ..reset.clone()
    };
    assert_error(
        approve(app, APPROVER, &wrong_etag, "").await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    // Alice registers a new method while the reset waits: the plan is stale.
    let added = app
        .register_method(
            &aw.w.alice,
            pb::MethodKind::Fido2,
            pb::MethodScope::User,
            "Passkey",
        )
        .await;
    let before = method_counts(app, &aw).await;
    let status = assert_error(
        approve(app, APPROVER, &reset, "").await,
        Code::Aborted,
        "PLAN_STALE",
    );
    assert!(status.message().contains(&added.id), "{status:?}");
    nothing_applied(app, &aw, &before, &reset).await;
    assert_eq!(
        get_reset(app, APPROVER, &reset).await.state(),
        pb::MfaResetState::AwaitingApproval,
        "a stale approval leaves the reset awaiting"
    );

    // Rejected, with the approver's reason; a second reject returns it; approve is refused.
    let rejected = reject(app, APPROVER, &reset, "Alice re-enrolled; ask again")
        .await
        .expect("reject");
    assert_eq!(rejected.state(), pb::MfaResetState::Rejected);
    assert_eq!(rejected.rejected_by, APPROVER);
    assert_eq!(rejected.rejection_reason, "Alice re-enrolled; ask again");
    assert!(rejected.reject_time.is_some());
    assert_eq!(get_reset(app, ADMIN, &reset).await, rejected);
    let again = reject(app, APPROVER, &reset, "again").await.expect("again");
    assert_eq!(again, rejected);
    assert_error(
        approve(app, APPROVER, &reset, "").await,
        Code::FailedPrecondition,
        "RESET_REJECTED",
    );
    nothing_applied(app, &aw, &before, &reset).await;
    let events = audit_events(app, &aw.selection(), pb::AuditAction::ResetRejected, "").await;
    assert_eq!(events.len(), 2, "one per customer: {events:?}");
    for event in &events {
        assert_eq!(event.actor, APPROVER);
        assert_eq!(event.reason, "Alice re-enrolled; ask again");
        assert!(matches!(
            &event.details,
            Some(pb::audit_event::Details::ResetRejected(d)) if d.requested_by == ADMIN
        ));
    }

    // The change stream carries every step, in order.
    let mut stream = app
        .audit()
        .watch_audit_events(authed(
            pb::WatchAuditEventsRequest {
                customer_ids: vec![aw.w.enforced.id.clone()],
                start_at_oldest: true,
                actions: vec![
                    pb::AuditAction::ResetApprovalRequested.into(),
                    pb::AuditAction::ResetRejected.into(),
                ],
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut actions = Vec::new();
    while actions.len() < 2 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
            .await
            .expect("an event in time")
            .expect("the stream")
            .expect("a message");
        if let Some(pb::watch_audit_events_response::Payload::AuditEvent(event)) = message.payload {
            assert_eq!(event.reset_id, reset.id);
            actions.push(event.action());
        }
    }
    assert_eq!(
        actions,
        [
            pb::AuditAction::ResetApprovalRequested,
            pb::AuditAction::ResetRejected
        ]
    );
}

backend_test!(approve_reject_and_cancel_at_once_end_in_exactly_one_outcome);
async fn approve_reject_and_cancel_at_once_end_in_exactly_one_outcome(app: &TestApp) {
    let aw = approval_world(app).await;
    let reset = aw.awaiting(app).await;
    let approvals = (0..6).map(|_| approve(app, APPROVER, &reset, ""));
    let rejections = (0..6).map(|_| reject(app, APPROVER, &reset, "no"));
    let cancels = (0..6).map(|_| async {
        app.users()
            .cancel_mfa_reset(authed(
                pb::CancelMfaResetRequest {
                    reset_id: reset.id.clone(),
                    reason: "withdrawn".into(),
                    request_id: String::new(),
                },
                &app.token(ADMIN),
            ))
            .await
            .map(|r| r.into_inner().mfa_reset.expect("reset"))
    });
    let (approved, rejected, cancelled) = tokio::join!(
        futures::future::join_all(approvals),
        futures::future::join_all(rejections),
        futures::future::join_all(cancels),
    );
    let outcome = get_reset(app, ADMIN, &reset).await.state();
    // Whoever won, every call of its kind answers it; every other call is refused with the
    // state it found.
    let (winners, losers, reason) = match outcome {
        pb::MfaResetState::Confirmed => {
            (approved, [rejected, cancelled].concat(), "RESET_CONFIRMED")
        }
        pb::MfaResetState::Rejected => (rejected, [approved, cancelled].concat(), "RESET_REJECTED"),
        pb::MfaResetState::Cancelled => {
            (cancelled, [approved, rejected].concat(), "RESET_CANCELLED")
        }
        other => panic!("no outcome: {other:?}"),
    };
    for answer in winners {
        assert_eq!(answer.expect("the winning kind answers").state(), outcome);
    }
    for answer in losers {
        assert_error(answer, Code::FailedPrecondition, reason);
    }
    let applied: Vec<_> = audit_events(app, &aw.selection(), pb::AuditAction::MfaReset, "")
        .await
        .into_iter()
        .filter(|e| e.reset_id == reset.id)
        .collect();
    let expected = if outcome == pb::MfaResetState::Confirmed {
        3
    } else {
        0
    };
    assert_eq!(applied.len(), expected, "{outcome:?}");
    let mut decisions = 0;
    for action in [
        pb::AuditAction::ResetApproved,
        pb::AuditAction::ResetRejected,
        pb::AuditAction::ResetCancelled,
    ] {
        decisions += audit_events(app, &aw.selection(), action, "")
            .await
            .into_iter()
            .filter(|e| e.reset_id == reset.id)
            .count();
    }
    assert_eq!(decisions, 2, "one decision, one event per customer");
}

fn short_windows(database_url: String) -> mfa_reset::config::Settings {
    mfa_reset::config::Settings {
        reset_ttl: std::time::Duration::from_secs(3),
        approval_ttl: std::time::Duration::from_secs(8),
        ..<mfa_reset::config::Settings as TestSettings>::default_for_tests(database_url)
    }
}

mod a_reset_awaiting_approval_expires_after_the_approval_window {
    use crate::helpers::{Backend, run_with};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run_with(Backend::Sqlite, super::short_windows, |app| {
            Box::pin(super::expires_after_the_window(app))
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run_with(Backend::Postgres, super::short_windows, |app| {
            Box::pin(super::expires_after_the_window(app))
        })
        .await
    }
}

/// Sleeps until `at` (a server timestamp) has passed by `margin`.
async fn sleep_past(at: &prost_types::Timestamp, margin: std::time::Duration) {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::new(at.seconds as u64, at.nanos as u32)
        + margin;
    if let Ok(left) = at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

async fn expires_after_the_window(app: &TestApp) {
    let aw = approval_world(app).await;
    // A first reset of two other users of `enforced` (its threshold is 2).
    let mut others = Vec::new();
    for name in ["Eve Early", "Finn Fast"] {
        let user = app.create_user(&aw.w.enforced.id, name, false, "").await;
        app.register_method(
            &user,
            pb::MethodKind::Phone,
            pb::MethodScope::User,
            "+1 555 000 1111",
        )
        .await;
        others.push(user);
    }
    let first = summarize(app, &[&aw.w.enforced.id], &[&others[0].id, &others[1].id]).await;
    assert!(first.approval_required);
    // Both summarized with 3 s to confirm, confirmed at once: now 8 s to approve.
    let first = confirm(app, ADMIN, &first).await.expect("confirm");
    let before = method_counts(app, &aw).await;
    let second = aw.awaiting(app).await;
    for reset in [&first, &second] {
        let confirmed = reset.confirm_time.expect("confirmed").seconds;
        let expires = reset.expire_time.expect("expires").seconds;
        assert!(
            (expires - confirmed - 8).abs() <= 1,
            "the window moved: {reset:?}"
        );
    }
    // Past the summary's 3 s, within the window: the first can still be approved.
    sleep_past(
        &first.create_time.expect("created"),
        std::time::Duration::from_millis(3500),
    )
    .await;
    assert_eq!(
        get_reset(app, ADMIN, &second).await.state(),
        pb::MfaResetState::AwaitingApproval
    );
    let approved = approve(app, APPROVER, &first, "").await.expect("approve");
    assert_eq!(approved.state(), pb::MfaResetState::Confirmed);
    for user in &others {
        assert_eq!(active_methods(app, user).await, 0);
    }

    // Past the second's window: expired, nothing applied, out of the inbox.
    sleep_past(
        &second.expire_time.expect("expires"),
        std::time::Duration::from_millis(300),
    )
    .await;
    assert_error(
        approve(app, APPROVER, &second, "").await,
        Code::FailedPrecondition,
        "RESET_EXPIRED",
    );
    assert_error(
        reject(app, APPROVER, &second, "late").await,
        Code::FailedPrecondition,
        "RESET_EXPIRED",
    );
    assert_eq!(
        get_reset(app, ADMIN, &second).await.state(),
        pb::MfaResetState::Expired
    );
    assert!(inbox(app, APPROVER, &aw).await.is_empty());
    for (user, count) in aw.reset_users().into_iter().zip(&before) {
        assert_eq!(
            active_methods(app, user).await,
            *count,
            "{}",
            user.display_name
        );
    }
}

// ---------------------------------------------------------------------------------------
// Two server processes (PostgreSQL).
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_awaiting_approval_on_one_process_is_approved_on_another() {
    crate::replicas::with_two_replicas(|pair| Box::pin(approve_on_the_other_replica(pair))).await;
}

async fn approve_on_the_other_replica(pair: &mut crate::replicas::Pair) {
    use pb::users_client::UsersClient;
    let (requester, approvers) = (
        "replica-requester",
        ["replica-approver-a", "replica-approver-b"],
    );
    let a = pair.replicas[0].channel().await;
    let b = pair.replicas[1].channel().await;
    let (customer, users) = pair
        .customer_with_users(
            &a,
            "Four Eyes Co",
            &[
                (requester, "PRIVILEGED_AUTHENTICATION_ADMIN"),
                (approvers[0], "AUTHENTICATION_ADMIN"),
                (approvers[1], "AUTHENTICATION_ADMIN"),
            ],
            &[("Ann Replica", "ann-sub"), ("Ben Replica", "ben-sub")],
        )
        .await;
    let requester_token = pair.token(requester);
    pb::customers_client::CustomersClient::new(a.clone())
        .set_approval_threshold(authed(
            pb::SetApprovalThresholdRequest {
                customer_id: customer.id.clone(),
                approval_threshold: 2,
                reason: "two admins for two users".into(),
                request_id: String::new(),
            },
            &requester_token,
        ))
        .await
        .expect("set the threshold on A");

    // Requested on A.
    let mut on_a = UsersClient::new(a.clone());
    let reset = on_a
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: vec![customer.id.clone()],
                target: users_by_id(users.iter().map(|u| u.id.clone()).collect()),
                reason: "lost phones".into(),
                ..Default::default()
            },
            &requester_token,
        ))
        .await
        .expect("summarize on A")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert!(reset.approval_required);
    let awaiting = on_a
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: reset.id.clone(),
                etag: reset.etag.clone(),
                request_id: String::new(),
            },
            &requester_token,
        ))
        .await
        .expect("confirm on A")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert_eq!(awaiting.state(), pb::MfaResetState::AwaitingApproval);

    // In B's inbox; approved 16 times on each process at once, applied once.
    let inbox = UsersClient::new(b.clone())
        .list_mfa_resets(authed(
            pb::ListMfaResetsRequest {
                customer_ids: vec![customer.id.clone()],
                approvable_by_caller: true,
                ..Default::default()
            },
            &pair.token(approvers[1]),
        ))
        .await
        .expect("inbox on B")
        .into_inner()
        .mfa_resets;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].id, reset.id);
    let calls = (0..32).map(|i| {
        let channel = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = pair.token(approvers[i % 2]);
        let request = pb::ApproveMfaResetRequest {
            reset_id: reset.id.clone(),
            etag: inbox[0].etag.clone(),
            request_id: String::new(),
        };
        async move {
            UsersClient::new(channel)
                .approve_mfa_reset(authed(request, &token))
                .await
                .map(|r| r.into_inner().mfa_reset.expect("reset"))
        }
    });
    let answers: Vec<pb::MfaReset> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|answer| answer.expect("every approval answers"))
        .collect();
    let winner = answers[0].approved_by.clone();
    assert!(approvers.contains(&winner.as_str()), "{winner}");
    assert!(
        answers
            .iter()
            .all(|r| r.state() == pb::MfaResetState::Confirmed && r.approved_by == winner)
    );

    // A sees it applied, once per user, naming both.
    let events = pb::audit_log_client::AuditLogClient::new(a.clone())
        .list_audit_events(authed(
            pb::ListAuditEventsRequest {
                customer_ids: vec![customer.id.clone()],
                actions: vec![pb::AuditAction::MfaReset.into()],
                ..Default::default()
            },
            &requester_token,
        ))
        .await
        .expect("audit on A")
        .into_inner()
        .audit_events;
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!(event.actor, winner);
        assert!(matches!(
            &event.details,
            Some(pb::audit_event::Details::MfaReset(d))
                if d.requested_by == requester && d.approved_by == winner
        ));
    }
    let got = on_a
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: reset.id.clone(),
            },
            &requester_token,
        ))
        .await
        .expect("get on A")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert_eq!(got.state(), pb::MfaResetState::Confirmed);
    assert_eq!(got.approved_by, winner);
}
