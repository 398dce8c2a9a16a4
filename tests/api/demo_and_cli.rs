//! `serve --demo` seeding and the operator subcommands of the binary.

use std::process::Command;

use mfa_reset::{
    demo,
    proto::v1::{self as pb},
    store::entities::{authentication_methods, customers, role_assignments, users},
};
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder};

use crate::helpers::*;

/// Everything seeding writes, as comparable rows.
async fn snapshot(db: &DatabaseConnection) -> Vec<String> {
    let mut rows = Vec::new();
    for c in customers::Entity::find()
        .order_by_asc(customers::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        rows.push(format!(
            "customer {} {} {} {}",
            c.id, c.name, c.mfa_policy, c.enabled_method_kinds
        ));
    }
    for u in users::Entity::find()
        .order_by_asc(users::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        rows.push(format!(
            "user {} {} {} {}",
            u.id, u.customer_id, u.email, u.is_admin
        ));
    }
    for m in authentication_methods::Entity::find()
        .order_by_asc(authentication_methods::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        rows.push(format!(
            "method {} {} {} {} {}",
            m.id, m.user_id, m.kind, m.scope, m.state
        ));
    }
    for r in role_assignments::Entity::find()
        .order_by_asc(role_assignments::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        rows.push(format!("role {} {:?} {}", r.subject, r.customer_id, r.role));
    }
    rows
}

backend_test!(demo_seeding_twice_leaves_the_same_data);
async fn demo_seeding_twice_leaves_the_same_data(app: &TestApp) {
    let first = demo::seed(&app.db).await.unwrap();
    let before = snapshot(&app.db).await;
    let second = demo::seed(&app.db).await.unwrap();
    assert_eq!(snapshot(&app.db).await, before);
    assert_eq!(
        first.customer_id(demo::NORTHWIND),
        second.customer_id(demo::NORTHWIND)
    );
    let users = before.iter().filter(|r| r.starts_with("user ")).count();
    assert!((55..=70).contains(&users), "about sixty users, got {users}");
    let kinds: std::collections::BTreeSet<&str> = before
        .iter()
        .filter(|r| r.starts_with("method "))
        .filter_map(|r| r.split(' ').nth(3))
        .collect();
    assert_eq!(kinds.len(), 7, "every method kind appears: {kinds:?}");
}

backend_test!(demo_admin_holds_a_different_role_in_each_demo_customer);
async fn demo_admin_holds_a_different_role_in_each_demo_customer(app: &TestApp) {
    let seeded = demo::seed(&app.db).await.unwrap();
    let listed = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token(demo::DEMO_ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .customers;
    let role_of = |name: &str| {
        listed
            .iter()
            .find(|c| c.display_name == name)
            .map(|c| c.caller_roles.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        role_of(demo::NORTHWIND),
        [i32::from(pb::Role::PrivilegedAuthenticationAdmin)]
    );
    assert_eq!(
        role_of(demo::CONTOSO),
        [i32::from(pb::Role::AuthenticationAdmin)]
    );
    assert_eq!(role_of(demo::FABRIKAM), [i32::from(pb::Role::Reader)]);
    assert!(role_of(demo::TAILSPIN).is_empty());
    assert_eq!(listed.len(), 3);
    // Contoso needs a second administrator from 3 users; demo-approver is one.
    let contoso = listed.iter().find(|c| c.display_name == demo::CONTOSO);
    assert_eq!(contoso.map(|c| c.approval_threshold), Some(3));
    let approver_roles: Vec<(String, Vec<i32>)> = app
        .customers()
        .list_customers(authed(
            pb::ListCustomersRequest::default(),
            &app.token(demo::DEMO_APPROVER),
        ))
        .await
        .unwrap()
        .into_inner()
        .customers
        .into_iter()
        .map(|c| (c.display_name, c.caller_roles))
        .collect();
    assert_eq!(
        approver_roles,
        [
            (
                demo::NORTHWIND.to_string(),
                vec![i32::from(pb::Role::PrivilegedAuthenticationAdmin)]
            ),
            (
                demo::CONTOSO.to_string(),
                vec![i32::from(pb::Role::AuthenticationAdmin)]
            ),
        ]
    );

    // demo-admin is also a user of Northwind (for the SELF rule), and some users have no MFA.
    let northwind = seeded.customer_id(demo::NORTHWIND).unwrap().to_string();
    let users = app
        .users()
        .list_users(authed(
            pb::ListUsersRequest {
                customer_ids: vec![northwind],
                page_size: 100,
                ..Default::default()
            },
            &app.token(demo::DEMO_ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(users.iter().any(|u| u.external_subject == demo::DEMO_ADMIN));
    assert!(
        users
            .iter()
            .any(|u| u.mfa_state == i32::from(pb::MfaState::NotRegistered))
    );
    assert!(
        users
            .iter()
            .any(|u| u.admin && u.external_subject != demo::DEMO_ADMIN)
    );
}

/// Runs the binary's `grant` / `revoke` on `app`'s database as operator `actor`.
fn operator(app: &TestApp, actor: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mfa-reset"))
        .args(["--database-url", &app.database_url, "--log", "warn"])
        .args(args)
        .args(["--actor", actor])
        .output()
        .expect("run mfa-reset");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

backend_test!(role_grants_and_revokes_by_operators_are_audited);
async fn role_grants_and_revokes_by_operators_are_audited(app: &TestApp) {
    let kinds = [pb::MethodKind::Phone];
    let acme = app
        .create_customer("Acme", pb::MfaPolicy::Enforced, &kinds)
        .await
        .id;
    let globex = app
        .create_customer("Globex", pb::MfaPolicy::Enforced, &kinds)
        .await
        .id;
    for customer in [&acme, &globex] {
        app.grant(ADMIN, Some(customer), "READER").await;
    }
    let role = ["--subject", "helpdesk", "--role", "AUTHENTICATION_ADMIN"];
    fn on<'a>(customer: &'a str, role: &[&'a str]) -> Vec<&'a str> {
        [&["grant", "--customer", customer][..], role].concat()
    }
    operator(app, "alice", &on(&acme, &role));
    // Granting a role already held changes nothing and records nothing.
    assert!(operator(app, "alice", &on(&acme, &role)).contains("nothing changed"));
    operator(
        app,
        "bob",
        &[
            "grant",
            "--customer",
            "*",
            "--subject",
            "ops",
            "--role",
            "READER",
        ],
    );
    operator(
        app,
        "carol",
        &[&["revoke", "--customer", acme.as_str()][..], &role[..]].concat(),
    );

    let roles = |events: &[pb::AuditEvent]| -> Vec<(String, String, bool, String)> {
        events
            .iter()
            .filter_map(|e| {
                let (subject, role) = match e.details.as_ref()? {
                    pb::audit_event::Details::RoleGranted(d) => (d.subject.clone(), d.role),
                    pb::audit_event::Details::RoleRevoked(d) => (d.subject.clone(), d.role),
                    _ => return None,
                };
                let role = pb::Role::try_from(role).unwrap().as_str_name().to_string();
                Some((
                    e.actor.clone(),
                    e.customer_id.clone(),
                    e.all_customers,
                    format!("{:?} {subject} {role}", e.action()),
                ))
            })
            .collect()
    };
    // Newest first: the revoke, the `*` grant (in every customer's log), the grant.
    let in_acme = audit_events(app, &[&acme], pb::AuditAction::Unspecified, "").await;
    assert_eq!(
        roles(&in_acme),
        [
            (
                "carol".into(),
                acme.clone(),
                false,
                "RoleRevoked helpdesk ROLE_AUTHENTICATION_ADMIN".into()
            ),
            (
                "bob".into(),
                String::new(),
                true,
                "RoleGranted ops ROLE_READER".into()
            ),
            (
                "alice".into(),
                acme.clone(),
                false,
                "RoleGranted helpdesk ROLE_AUTHENTICATION_ADMIN".into()
            ),
        ]
    );
    let in_globex = audit_events(app, &[&globex], pb::AuditAction::RoleGranted, "").await;
    assert_eq!(
        roles(&in_globex),
        [(
            "bob".into(),
            String::new(),
            true,
            "RoleGranted ops ROLE_READER".into()
        )]
    );
}

fn binary(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mfa-reset"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log", "warn"])
        .args(args)
        .output()
        .expect("run mfa-reset")
}

/// The binary as a script runs it: no `--log`, so only what the subcommand answers.
fn script(data_dir: &std::path::Path, args: &[&str]) -> (serde_json::Value, String) {
    let output = crate::replicas::binary()
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json"])
        .args(args)
        .output()
        .expect("run mfa-reset");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"));
    (value, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_subcommands_print_only_their_answer_and_json_on_request() {
    let dir =
        std::env::temp_dir().join(format!("mfa-reset-json-{}", uuid::Uuid::now_v7().simple()));
    // The first command creates and migrates the database: its INFO lines stay out too.
    let (migrated, stderr) = script(&dir, &["migrate"]);
    assert_eq!(migrated, serde_json::json!({ "up_to_date": true }));
    assert!(stderr.is_empty(), "no log lines by default: {stderr}");
    let (granted, stderr) = script(
        &dir,
        &[
            "grant",
            "--subject",
            "ops",
            "--customer",
            "*",
            "--role",
            "READER",
            "--actor",
            "alice",
        ],
    );
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(
        granted,
        serde_json::json!({
            "subject": "ops", "role": "READER", "customer": "*", "changed": true, "actor": "alice"
        })
    );
    let (again, _) = script(
        &dir,
        &[
            "grant",
            "--subject",
            "ops",
            "--customer",
            "*",
            "--role",
            "READER",
            "--actor",
            "alice",
        ],
    );
    assert_eq!(again["changed"], false);
    let (roles, _) = script(&dir, &["roles"]);
    assert_eq!(
        roles,
        serde_json::json!([{ "subject": "ops", "customer": "*", "role": "READER" }])
    );
    let (token, _) = script(&dir, &["token", "--subject", "ops"]);
    assert_eq!(token["subject"], "ops");
    assert_eq!(
        token["token"].as_str().map(|t| t.split('.').count()),
        Some(3)
    );
    let (purged, _) = script(&dir, &["purge-resets", "--older-than-days", "90"]);
    assert_eq!(purged["purged"], 0);
    assert!(purged["cutoff"].is_string());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_grant_list_and_revoke_roles_and_mint_tokens_with_the_binary() {
    let dir = std::env::temp_dir().join(format!("mfa-reset-cli-{}", uuid::Uuid::now_v7().simple()));
    let granted = binary(
        &dir,
        &[
            "grant",
            "--subject",
            "ops",
            "--customer",
            "*",
            "--role",
            "reader",
        ],
    );
    assert!(granted.status.success(), "{granted:?}");
    assert!(String::from_utf8_lossy(&granted.stdout).contains("ops READER on *: granted"));
    let again = binary(
        &dir,
        &[
            "grant",
            "--subject",
            "ops",
            "--customer",
            "*",
            "--role",
            "READER",
        ],
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing changed"));

    let roles = binary(&dir, &["roles"]);
    let listing = String::from_utf8_lossy(&roles.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("ops") && l.contains('*') && l.ends_with("READER")),
        "{listing}"
    );

    let bad_role = binary(
        &dir,
        &[
            "grant",
            "--subject",
            "ops",
            "--customer",
            "*",
            "--role",
            "GOD",
        ],
    );
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));
    let unknown_customer = binary(
        &dir,
        &[
            "grant",
            "--subject",
            "ops",
            "--customer",
            &uuid::Uuid::now_v7().to_string(),
            "--role",
            "READER",
        ],
    );
    assert!(!unknown_customer.status.success());

    // A token minted by the binary is accepted by a server on the same data directory.
    let token = binary(&dir, &["token", "--subject", "ops"]);
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let mut settings = <mfa_reset::config::Settings as TestSettings>::default_for_tests(format!(
        "sqlite://{}",
        dir.join("mfa-reset.db").display()
    ));
    settings.secret_file = dir.join("secret.key");
    let app = TestApp::spawn_with(settings).await;
    let listed = app
        .customers()
        .list_customers(authed(pb::ListCustomersRequest::default(), &token))
        .await;
    assert!(listed.is_ok(), "{listed:?}");
    app.stop().await;

    let revoked = binary(
        &dir,
        &[
            "revoke",
            "--subject",
            "ops",
            "--customer",
            "*",
            "--role",
            "READER",
        ],
    );
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("revoked"));
    let roles = binary(&dir, &["roles", "--subject", "ops"]);
    assert_eq!(
        String::from_utf8_lossy(&roles.stdout).lines().count(),
        1,
        "only the header is left"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_purge_finished_resets_and_keep_pending_and_awaiting_ones() {
    let database = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let app = TestApp::spawn_on(
        database.url.clone(),
        <mfa_reset::config::Settings as TestSettings>::default_for_tests,
    )
    .await;
    let w = world(&app).await;
    let summarize = |user: &pb::User| {
        let mut users = app.users();
        let request = pb::UsersSummarizeMfaResetRequest {
            customer_ids: vec![w.enforced.id.clone()],
            target: users_by_id(vec![user.id.clone()]),
            reason: "purge test".into(),
            ..Default::default()
        };
        let token = app.token(ADMIN);
        async move {
            users
                .summarize_mfa_reset(authed(request, &token))
                .await
                .expect("summarize")
                .into_inner()
                .mfa_reset
                .expect("reset")
        }
    };
    let cancelled = summarize(&w.alice).await;
    app.users()
        .cancel_mfa_reset(authed(
            pb::CancelMfaResetRequest {
                reason: Default::default(),
                request_id: Default::default(),
                reset_id: cancelled.id.clone(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("cancel");
    let pending = summarize(&w.root).await;
    // And one awaiting approval (a threshold of 1 in `enforced`, confirmed by its requester).
    app.customers()
        .set_approval_threshold(authed(
            pb::SetApprovalThresholdRequest {
                customer_id: w.enforced.id.clone(),
                approval_threshold: 1,
                ..Default::default()
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("set a threshold");
    let awaiting = summarize(&w.alice).await;
    let awaiting = app
        .users()
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: awaiting.id.clone(),
                etag: awaiting.etag.clone(),
                request_id: String::new(),
            },
            &app.token(ADMIN),
        ))
        .await
        .expect("confirm into awaiting approval")
        .into_inner()
        .mfa_reset
        .expect("reset");
    assert_eq!(awaiting.state(), pb::MfaResetState::AwaitingApproval);

    let dir =
        std::env::temp_dir().join(format!("mfa-reset-purge-{}", uuid::Uuid::now_v7().simple()));
    let purged = binary(
        &dir,
        &[
            "--database-url",
            &database.url,
            "purge-resets",
            "--older-than-days",
            "0",
        ],
    );
    assert!(purged.status.success(), "{purged:?}");
    assert!(
        String::from_utf8_lossy(&purged.stdout).contains("purged 1 finished"),
        "{purged:?}"
    );

    let get = |id: String| {
        let mut users = app.users();
        let token = app.token(ADMIN);
        async move {
            users
                .get_mfa_reset(authed(pb::GetMfaResetRequest { reset_id: id }, &token))
                .await
        }
    };
    assert_error(
        get(cancelled.id.clone()).await,
        tonic::Code::NotFound,
        "NOT_FOUND",
    );
    let kept = get(pending.id.clone())
        .await
        .expect("pending reset kept")
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(kept.state, i32::from(pb::MfaResetState::Pending));
    let kept = get(awaiting.id.clone())
        .await
        .expect("awaiting reset kept")
        .into_inner()
        .mfa_reset
        .unwrap();
    assert_eq!(kept.state(), pb::MfaResetState::AwaitingApproval);
    app.stop().await;
    database.drop_now().await;
    let _ = std::fs::remove_dir_all(&dir);
}
