//! Four-eyes approval of large resets: the customer's threshold, who sets it, and what a
//! summary decides from it.

use mfa_reset::proto::v1::{self as pb};
use tonic::{Code, Status};

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
