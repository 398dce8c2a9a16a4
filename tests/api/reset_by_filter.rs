//! SummarizeMfaReset by filter: every user of the selection that the filter matches at
//! summary time, at most 10,000; confirm applies exactly the users the summary listed.

use std::collections::BTreeSet;

use mfa_reset::proto::v1::{self as pb, users_summarize_mfa_reset_request::Target};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;
use crate::reset_guarantees::seed;

use pb::{MethodKind as K, MethodScope as S};

fn by_filter(customer_ids: &[&str], query: &str, kinds: &[K]) -> pb::UsersSummarizeMfaResetRequest {
    pb::UsersSummarizeMfaResetRequest {
        customer_ids: customer_ids.iter().map(|id| id.to_string()).collect(),
        target: Some(Target::Filter(pb::UserFilter {
            query: query.into(),
            method_kinds: kinds.iter().map(|k| (*k).into()).collect(),
            ..Default::default()
        })),
        reason: "SMS provider breach".into(),
        page_size: 500,
        ..Default::default()
    }
}

async fn summarize(
    app: &TestApp,
    request: pb::UsersSummarizeMfaResetRequest,
) -> Result<pb::UsersSummarizeMfaResetResponse, tonic::Status> {
    app.users()
        .summarize_mfa_reset(authed(request, &app.token(ADMIN)))
        .await
        .map(|r| r.into_inner())
}

fn item_ids(summary: &pb::UsersSummarizeMfaResetResponse) -> BTreeSet<String> {
    summary.items.iter().map(|i| i.user_id.clone()).collect()
}

fn ids<'a>(users: impl IntoIterator<Item = &'a pb::User>) -> BTreeSet<String> {
    users.into_iter().map(|u| u.id.clone()).collect()
}

backend_test!(a_reset_by_filter_covers_exactly_the_users_it_matched_at_summary_time);
async fn a_reset_by_filter_covers_exactly_the_users_it_matched_at_summary_time(app: &TestApp) {
    let selected_a = app
        .create_customer("Filter A", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    let selected_b = app
        .create_customer("Filter B", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    let outside = app
        .create_customer("Filter Outside", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    for customer in [&selected_a, &selected_b, &outside] {
        app.grant(ADMIN, Some(&customer.id), "AUTHENTICATION_ADMIN")
            .await;
    }
    let thi = app
        .create_user(&selected_a.id, "Thi Nguyễn", false, "")
        .await;
    app.register_method(&thi, K::Phone, S::Org, "+1 555 010 0001")
        .await;
    let an = app
        .create_user(&selected_a.id, "An Nguyen", false, "")
        .await;
    app.register_method(&an, K::Fido2, S::User, "YubiKey").await;
    let bob = app
        .create_user(&selected_a.id, "Bob Phone", false, "")
        .await;
    app.register_method(&bob, K::Phone, S::User, "+1 555 010 0002")
        .await;
    app.register_method(&bob, K::Email, S::User, "bob@example.com")
        .await;
    let mai = app
        .create_user(&selected_b.id, "Mai Nguyen", false, "")
        .await;
    app.register_method(&mai, K::Phone, S::Org, "+1 555 010 0003")
        .await;
    let tam = app.create_user(&outside.id, "Tam Nguyen", false, "").await;
    app.register_method(&tam, K::Phone, S::Org, "+1 555 010 0004")
        .await;
    let selection = [selected_a.id.as_str(), selected_b.id.as_str()];

    // Every PHONE user of the selection, and no one outside it.
    let phones = summarize(app, by_filter(&selection, "", &[K::Phone]))
        .await
        .unwrap();
    assert_eq!(item_ids(&phones), ids([&thi, &bob, &mai]));
    // Search text and kinds together: the Nguyens with a phone.
    let summary = summarize(app, by_filter(&selection, "nguyen", &[K::Phone]))
        .await
        .unwrap();
    assert_eq!(item_ids(&summary), ids([&thi, &mai]));
    let reset = summary.mfa_reset.clone().unwrap();
    let totals = reset.totals.clone().unwrap();
    assert_eq!((totals.user_count, totals.users_to_reset_count), (2, 2));
    // The stored summary records the filter, and says so when read back.
    let expected_filter = pb::UserFilter {
        query: "nguyen".into(),
        method_kinds: vec![K::Phone.into()],
        ..Default::default()
    };
    assert_eq!(reset.filter.as_ref(), Some(&expected_filter));
    let read = app
        .users()
        .get_mfa_reset(authed(
            pb::GetMfaResetRequest {
                reset_id: reset.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(read.filter, Some(expected_filter));

    // An starts matching after the summary: not added.
    app.register_method(&an, K::Phone, S::User, "+1 555 010 0005")
        .await;
    let confirmed = confirm(app, ADMIN, &reset).await.unwrap();
    assert_eq!(confirmed.state, i32::from(pb::MfaResetState::Confirmed));
    let reset_users: BTreeSet<String> =
        audit_events(app, &selection, pb::AuditAction::MfaReset, "")
            .await
            .into_iter()
            .map(|e| e.user_id)
            .collect();
    assert_eq!(reset_users, ids([&thi, &mai]));
    for (user, active) in [(&thi, 0), (&mai, 0), (&an, 2), (&bob, 2)] {
        let now = get_user(app, &user.customer_id, &user.id).await.unwrap();
        assert_eq!(now.active_method_count, active, "{}", user.display_name);
    }
    let tam_now = get_user(app, &outside.id, &tam.id).await.unwrap();
    assert_eq!(tam_now.active_method_count, 1, "outside the selection");

    // A matched user who changes after the summary makes it stale: nothing applied.
    let again = summarize(app, by_filter(&selection, "", &[K::Phone]))
        .await
        .unwrap();
    assert_eq!(item_ids(&again), ids([&an, &bob]));
    app.register_method(&bob, K::Fido2, S::User, "Passkey")
        .await;
    let stale = confirm(app, ADMIN, again.mfa_reset.as_ref().unwrap()).await;
    assert_error(stale, Code::Aborted, "PLAN_STALE");
    let bob_now = get_user(app, &bob.customer_id, &bob.id).await.unwrap();
    assert_eq!(bob_now.active_method_count, 3, "nothing applied");

    // A filter that matches nobody summarizes nobody, and cannot be confirmed.
    let nobody = summarize(app, by_filter(&selection, "zzyzx", &[]))
        .await
        .unwrap();
    assert!(nobody.items.is_empty());
    let refused = confirm(app, ADMIN, nobody.mfa_reset.as_ref().unwrap()).await;
    assert_error(refused, Code::FailedPrecondition, "NOTHING_TO_RESET");

    // Bad filter fields are named as the filter's.
    let mut bad = by_filter(&selection, &"x".repeat(201), &[]);
    if let Some(Target::Filter(filter)) = &mut bad.target {
        filter.mfa_states = vec![0];
    }
    let status = assert_error(
        summarize(app, bad).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        ["filter.query", "filter.mfa_states[0]"]
    );
}

backend_test!(a_filter_matching_more_than_ten_thousand_users_is_refused_with_the_count);
async fn a_filter_matching_more_than_ten_thousand_users_is_refused_with_the_count(app: &TestApp) {
    let phone = [("PHONE", "USER", "+1 555 010 0100")];
    let seeded = seed(app, "breach", 2, 10_001, &phone, ADMIN).await;
    let both: Vec<&str> = seeded.customer_ids.iter().map(String::as_str).collect();
    let status = assert_error(
        summarize(app, by_filter(&both, "", &[K::Phone])).await,
        Code::FailedPrecondition,
        "TOO_MANY_USERS",
    );
    let details = status.get_error_details();
    let metadata = &details.error_info().unwrap().metadata;
    assert_eq!(
        metadata.get("user_count").map(String::as_str),
        Some("10001")
    );
    assert_eq!(
        metadata.get("max_user_count").map(String::as_str),
        Some("10000")
    );
    assert!(status.message().contains("10001"), "{status:?}");

    // Narrowed to one customer (users are spread round-robin): 5,001 users, all of them.
    let narrowed = summarize(app, by_filter(&both[..1], "", &[K::Phone]))
        .await
        .unwrap();
    let totals = narrowed.mfa_reset.unwrap().totals.unwrap();
    assert_eq!(
        (totals.user_count, totals.users_to_reset_count),
        (5_001, 5_001)
    );
}

backend_test!(filter_text_without_a_letter_or_digit_is_refused_not_widened_to_everyone);
async fn filter_text_without_a_letter_or_digit_is_refused_not_widened_to_everyone(app: &TestApp) {
    let customer = app
        .create_customer("Filter Symbols", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(ADMIN, Some(&customer.id), "AUTHENTICATION_ADMIN")
        .await;
    let user = app.create_user(&customer.id, "Ana Symbol", false, "").await;
    app.register_method(&user, K::Phone, S::User, "+1 555 010 0003")
        .await;
    // A list treats "@" as no search, and lists the user; a reset refuses it.
    for text in ["@", " -- ", "%_"] {
        let status = assert_error(
            summarize(app, by_filter(&[&customer.id], text, &[])).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), ["filter.query"], "{text:?}");
    }
    // Blank text is no text: every user of the selection that the other filters match.
    let summary = summarize(app, by_filter(&[&customer.id], "  ", &[K::Phone]))
        .await
        .unwrap();
    assert_eq!(item_ids(&summary), BTreeSet::from([user.id.clone()]));
}
