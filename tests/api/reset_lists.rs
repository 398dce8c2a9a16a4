//! Lists of resets and of a reset's items: `ListMfaResets` (by state, requester, the
//! approver's inbox; only resets wholly inside the selection) and the filters of
//! `ListMfaResetItems`; and the RPCs the contract declares for later releases.

use mfa_reset::proto::v1::{self as pb};
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::helpers::*;

async fn summarize(
    app: &TestApp,
    subject: &str,
    customers: &[&pb::Customer],
    users: &[&pb::User],
) -> pb::MfaReset {
    app.users()
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: customers.iter().map(|c| c.id.clone()).collect(),
                target: users_by_id(users.iter().map(|u| u.id.clone()).collect()),
                reason: "listed".into(),
                ..Default::default()
            },
            &app.token(subject),
        ))
        .await
        .expect("summarize")
        .into_inner()
        .mfa_reset
        .expect("reset")
}

async fn list_resets(
    app: &TestApp,
    subject: &str,
    request: pb::ListMfaResetsRequest,
) -> Result<pb::ListMfaResetsResponse, tonic::Status> {
    app.users()
        .list_mfa_resets(authed(request, &app.token(subject)))
        .await
        .map(|r| r.into_inner())
}

async fn listed(
    app: &TestApp,
    subject: &str,
    customers: &[&pb::Customer],
    states: &[pb::MfaResetState],
) -> Vec<String> {
    list_resets(
        app,
        subject,
        pb::ListMfaResetsRequest {
            customer_ids: customers.iter().map(|c| c.id.clone()).collect(),
            states: states.iter().map(|s| (*s).into()).collect(),
            page_size: 500,
            ..Default::default()
        },
    )
    .await
    .expect("list resets")
    .mfa_resets
    .into_iter()
    .map(|r| r.id)
    .collect()
}

/// Sets a stored reset's row, as the life cycle would have left it.
async fn set_reset(app: &TestApp, reset: &pb::MfaReset, assignment: &str) {
    let backend = app.db.get_database_backend();
    let placeholder = match backend {
        sea_orm::DbBackend::Postgres => "$1",
        _ => "?",
    };
    let id = uuid::Uuid::parse_str(&reset.id).expect("reset id");
    app.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            format!("UPDATE mfa_resets SET {assignment} WHERE id = {placeholder}"),
            [id.into()],
        ))
        .await
        .expect("update the reset row");
}

async fn awaiting_approval(app: &TestApp, reset: &pb::MfaReset) {
    set_reset(app, reset, "state = 'AWAITING_APPROVAL'").await;
}

async fn inbox(app: &TestApp, subject: &str, customers: &[&pb::Customer]) -> Vec<String> {
    list_resets(
        app,
        subject,
        pb::ListMfaResetsRequest {
            customer_ids: customers.iter().map(|c| c.id.clone()).collect(),
            approvable_by_caller: true,
            ..Default::default()
        },
    )
    .await
    .expect("inbox")
    .mfa_resets
    .into_iter()
    .map(|r| r.id)
    .collect()
}

const SECOND: &str = "second-admin";

fn ids(resets: &[&pb::MfaReset]) -> Vec<String> {
    resets.iter().map(|r| r.id.clone()).collect()
}

backend_test!(lists_a_selections_resets_newest_first_by_state_and_requester);
async fn lists_a_selections_resets_newest_first_by_state_and_requester(app: &TestApp) {
    use pb::MfaResetState as S;
    let w = world(app).await;
    app.grant(SECOND, Some(&w.enforced.id), "AUTHENTICATION_ADMIN")
        .await;
    let confirmed = summarize(app, ADMIN, &[&w.enforced], &[&w.alice]).await;
    app.users()
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: confirmed.id.clone(),
                etag: confirmed.etag.clone(),
                request_id: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("confirm");
    let across = summarize(app, ADMIN, &[&w.enforced, &w.optional], &[&w.root, &w.bob]).await;
    let cancelled = summarize(app, ADMIN, &[&w.enforced], &[&w.root]).await;
    app.users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reset_id: cancelled.id.clone(),
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("cancel");
    let optional_only = summarize(app, ADMIN, &[&w.optional], &[&w.bob]).await;
    let expired = summarize(app, ADMIN, &[&w.enforced], &[&w.root]).await;
    set_reset(app, &expired, "expires_at = created_at").await;
    let theirs = summarize(app, SECOND, &[&w.enforced], &[&w.me]).await;

    // Only resets wholly inside the selection, newest first.
    assert_eq!(
        listed(app, ADMIN, &[&w.enforced], &[]).await,
        ids(&[&theirs, &expired, &cancelled, &confirmed]),
        "the reset that also covers Optional Co is not shown"
    );
    assert_eq!(
        listed(app, ADMIN, &[&w.optional, &w.enforced], &[]).await,
        ids(&[
            &theirs,
            &expired,
            &optional_only,
            &cancelled,
            &across,
            &confirmed
        ])
    );
    let both = [&w.enforced, &w.optional];
    assert_eq!(
        listed(app, ADMIN, &both, &[S::Pending]).await,
        ids(&[&theirs, &optional_only, &across]),
        "pending means not yet expired"
    );
    assert_eq!(
        listed(app, ADMIN, &both, &[S::Expired]).await,
        ids(&[&expired])
    );
    assert_eq!(
        listed(app, ADMIN, &both, &[S::Confirmed, S::Cancelled]).await,
        ids(&[&cancelled, &confirmed])
    );
    let by_second = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone()],
            requested_by: SECOND.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .mfa_resets;
    assert_eq!(by_second.len(), 1);
    assert_eq!(by_second[0].id, theirs.id);
    assert_eq!(by_second[0].requested_by, SECOND);
    let expired_reset = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone()],
            states: vec![S::Expired.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .mfa_resets;
    assert_eq!(expired_reset[0].state(), S::Expired);

    // Keyset pages, bound to the request.
    let first = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            page_size: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(first.mfa_resets.len(), 4);
    let second = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            page_size: 4,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        second
            .mfa_resets
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        ids(&[&across, &confirmed])
    );
    assert!(second.next_page_token.is_empty());
    let misused = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            states: vec![S::Pending.into()],
            page_token: first.next_page_token,
            ..Default::default()
        },
    )
    .await;
    let status = assert_error(misused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["page_token"]);

    // A selection with a customer where the caller has no role is refused.
    let refused = list_resets(
        app,
        SECOND,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone(), w.optional.id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_error(refused, Code::PermissionDenied, "NO_ROLE");
    let bad = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone()],
            states: vec![0, 42],
            page_size: -1,
            ..Default::default()
        },
    )
    .await;
    let status = assert_error(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        ["states[0]", "states[1]", "page_size"]
    );
}

backend_test!(the_approvers_inbox_lists_only_what_the_caller_may_approve);
async fn the_approvers_inbox_lists_only_what_the_caller_may_approve(app: &TestApp) {
    let w = world(app).await;
    app.grant(SECOND, Some(&w.enforced.id), "AUTHENTICATION_ADMIN")
        .await;
    app.grant(SECOND, Some(&w.no_hardware.id), "AUTHENTICATION_ADMIN")
        .await;
    app.grant(
        "third-admin",
        Some(&w.enforced.id),
        "PRIVILEGED_AUTHENTICATION_ADMIN",
    )
    .await;
    // By SECOND, of Alice: ADMIN (privileged) may approve it; SECOND may not (their own).
    let plain = summarize(app, SECOND, &[&w.enforced], &[&w.alice]).await;
    // By SECOND, over a customer where ADMIN is only READER: not ADMIN's to approve.
    let elsewhere = summarize(app, SECOND, &[&w.enforced, &w.no_hardware], &[&w.alice]).await;
    // By SECOND, of ADMIN's own user: ADMIN may not approve it (SELF).
    let of_admin = summarize(app, SECOND, &[&w.enforced], &[&w.me]).await;
    // By the privileged third admin, of an admin: SECOND may not reset admins.
    let admins = summarize(app, "third-admin", &[&w.enforced], &[&w.root]).await;
    // Still pending: in nobody's inbox.
    let pending = summarize(app, SECOND, &[&w.enforced], &[&w.root]).await;
    for reset in [&plain, &elsewhere, &of_admin, &admins] {
        awaiting_approval(app, reset).await;
    }

    assert_eq!(
        inbox(app, ADMIN, &[&w.enforced, &w.no_hardware]).await,
        ids(&[&admins, &plain]),
        "not its own user's reset, not one in a customer it cannot reset in"
    );
    assert_eq!(
        inbox(app, SECOND, &[&w.enforced, &w.no_hardware]).await,
        Vec::<String>::new(),
        "not its own resets, not an admin's"
    );
    assert_eq!(
        inbox(app, "third-admin", &[&w.enforced]).await,
        ids(&[&of_admin, &plain]),
        "not its own reset; the others resets wholly inside the selection"
    );
    let listed = list_resets(
        app,
        ADMIN,
        pb::ListMfaResetsRequest {
            customer_ids: vec![w.enforced.id.clone()],
            approvable_by_caller: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .mfa_resets;
    assert!(
        listed
            .iter()
            .all(|r| r.state() == pb::MfaResetState::AwaitingApproval)
    );
    assert!(!listed.iter().any(|r| r.id == pending.id));
}

backend_test!(a_resets_items_filter_by_customer_outcome_and_skip_reason);
async fn a_resets_items_filter_by_customer_outcome_and_skip_reason(app: &TestApp) {
    use pb::{MfaResetItemOutcome as O, SkipReason as S};
    let w = world(app).await;
    let reset = summarize(
        app,
        ADMIN,
        &[&w.enforced, &w.optional],
        &[&w.alice, &w.root, &w.me, &w.bob, &w.olga],
    )
    .await;
    let items = |request: pb::ListMfaResetItemsRequest| {
        let mut users = app.users();
        let token = app.token(ADMIN);
        let request = pb::ListMfaResetItemsRequest {
            reset_id: reset.id.clone(),
            ..request
        };
        async move {
            users
                .list_mfa_reset_items(authed(request, &token))
                .await
                .map(|r| r.into_inner())
        }
    };
    let users_of = |page: pb::ListMfaResetItemsResponse| -> Vec<String> {
        page.items.into_iter().map(|i| i.user_id).collect()
    };
    let optional_items = items(pb::ListMfaResetItemsRequest {
        customer_ids: vec![w.optional.id.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        users_of(optional_items),
        [w.bob.id.clone(), w.olga.id.clone()]
    );
    let reset_items = items(pb::ListMfaResetItemsRequest {
        outcome: O::Reset.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        users_of(reset_items),
        [w.alice.id.clone(), w.root.id.clone()]
    );
    let by_reason = items(pb::ListMfaResetItemsRequest {
        skip_reasons: vec![S::NotEnrolled.into(), S::Self_.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(users_of(by_reason), [w.me.id.clone(), w.bob.id.clone()]);

    // Pages of a filtered list, their token bound to the filter.
    let skipped = |page_token: String| pb::ListMfaResetItemsRequest {
        outcome: O::Skipped.into(),
        page_size: 2,
        page_token,
        ..Default::default()
    };
    let first = items(skipped(String::new())).await.unwrap();
    let token = first.next_page_token.clone();
    assert_eq!(users_of(first), [w.me.id.clone(), w.bob.id.clone()]);
    let second = items(skipped(token.clone())).await.unwrap();
    assert!(second.next_page_token.is_empty());
    assert_eq!(users_of(second), std::slice::from_ref(&w.olga.id));
    let misused = items(pb::ListMfaResetItemsRequest {
        outcome: O::Reset.into(),
        page_size: 2,
        page_token: token,
        ..Default::default()
    })
    .await;
    let status = assert_error(misused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["page_token"]);

    let contradictory = items(pb::ListMfaResetItemsRequest {
        outcome: O::Reset.into(),
        skip_reasons: vec![S::Self_.into()],
        customer_ids: vec!["nope".into()],
        ..Default::default()
    })
    .await;
    let status = assert_error(contradictory, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        ["customer_ids[0]", "skip_reasons"]
    );
}

backend_test!(one_users_methods_page_by_id);
async fn one_users_methods_page_by_id(app: &TestApp) {
    let w = world(app).await;
    app.register_method(
        &w.alice,
        pb::MethodKind::Fido2,
        pb::MethodScope::User,
        "Passkey",
    )
    .await;
    let page = |page_token: String| {
        let mut methods = app.methods();
        let request = pb::ListAuthenticationMethodsRequest {
            customer_ids: vec![w.enforced.id.clone()],
            user_id: w.alice.id.clone(),
            page_size: 2,
            page_token,
        };
        let token = app.token(ADMIN);
        async move {
            methods
                .list_authentication_methods(authed(request, &token))
                .await
                .expect("list methods")
                .into_inner()
        }
    };
    let first = page(String::new()).await;
    assert_eq!(first.authentication_methods.len(), 2);
    let second = page(first.next_page_token.clone()).await;
    assert_eq!(second.authentication_methods.len(), 1);
    assert!(second.next_page_token.is_empty());
    let mut ids: Vec<String> = first
        .authentication_methods
        .iter()
        .chain(&second.authentication_methods)
        .map(|m| m.id.clone())
        .collect();
    let in_order = ids.clone();
    ids.sort();
    assert_eq!(in_order, ids, "ordered by id");
    ids.dedup();
    assert_eq!(ids.len(), 3);
}
