//! How the two-phase reset scales: time and SQL statements of SummarizeMfaReset and
//! ConfirmMfaReset for growing numbers of users and customers, through the real server
//! and gRPC. Prints a table; per-user time should stay flat and statement counts should
//! not grow with users (DESIGN.md "Scale it is built for").
//!
//! `cargo bench --bench reset_scale` (SQLite), and on PostgreSQL too with
//! `MFA_RESET_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test`.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use mfa_reset::{
    auth::{AuthSettings, ServerSecret, mint_dev_token},
    config::Settings,
    proto::v1::{self as pb, users_client::UsersClient},
    server::Application,
    store::{
        self,
        entities::{authentication_methods, customers, users},
    },
};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};
use tonic::{Request, transport::Channel};
use uuid::Uuid;

const SUBJECT: &str = "bench-admin";

struct Case {
    users: usize,
    customers: usize,
}

const CASES: &[Case] = &[
    Case {
        users: 10,
        customers: 1,
    },
    Case {
        users: 1_000,
        customers: 1,
    },
    Case {
        users: 1_000,
        customers: 50,
    },
    Case {
        users: 10_000,
        customers: 1,
    },
    Case {
        users: 10_000,
        customers: 500,
    },
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut backends = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("MFA_RESET_TEST_POSTGRES_URL") {
        backends.push(("postgres", Some(url)));
    }
    println!(
        "backend   users customers | summarize ms  per-user µs  stmts | confirm ms  per-user µs  stmts"
    );
    for (name, admin_url) in backends {
        for case in CASES {
            let dir =
                std::env::temp_dir().join(format!("mfa-reset-bench-{}", Uuid::now_v7().simple()));
            std::fs::create_dir_all(&dir)?;
            let (url, cleanup) = match &admin_url {
                None => (format!("sqlite://{}", dir.join("bench.db").display()), None),
                Some(admin_url) => {
                    let db_name = format!("mfa_reset_bench_{}", Uuid::now_v7().simple());
                    let admin = store::connect(admin_url).await?;
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE \"{db_name}\""))
                        .await?;
                    let base = admin_url
                        .rsplit_once('/')
                        .map_or(admin_url.as_str(), |(b, _)| b);
                    (format!("{base}/{db_name}"), Some((admin, db_name)))
                }
            };
            let result = run_case(&url, &dir, case).await;
            if let Some((admin, db_name)) = cleanup {
                admin
                    .execute_unprepared(&format!(
                        "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
                    ))
                    .await?;
            }
            let _ = std::fs::remove_dir_all(&dir);
            let (summarize, s_stmts, confirm, c_stmts) = result?;
            let per_user = |d: Duration| d.as_secs_f64() * 1e6 / case.users as f64;
            println!(
                "{name:<8} {:>6} {:>9} | {:>12.1} {:>12.1} {:>6} | {:>10.1} {:>12.1} {:>6}",
                case.users,
                case.customers,
                summarize.as_secs_f64() * 1e3,
                per_user(summarize),
                s_stmts,
                confirm.as_secs_f64() * 1e3,
                per_user(confirm),
                c_stmts,
            );
        }
    }
    Ok(())
}

async fn run_case(
    url: &str,
    dir: &std::path::Path,
    case: &Case,
) -> anyhow::Result<(Duration, u64, Duration, u64)> {
    let settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        database_url: url.to_string(),
        db_max_connections: 10,
        max_header_list_bytes: 512 * 1024,
        secret_file: dir.join("secret.key"),
        auth: AuthSettings {
            issuer: "mfa-reset".into(),
            audience: "mfa-reset".into(),
            public_key_files: vec![],
            jwks_file: None,
            leeway_seconds: 0,
        },
        request_timeout: Duration::from_secs(300),
        max_concurrent_requests: 16,
        max_message_bytes: 4 * 1024 * 1024,
        rate_limit_per_minute: 0,
        shutdown_grace: Duration::from_secs(5),
        reset_ttl: Duration::from_secs(900),
        request_id_purge_interval: Duration::from_secs(3600),
    };
    let app = Application::build(settings).await?;
    let addr = app.local_addr()?;
    let statements = app.statement_counter();
    let db = store::connect(url).await?;
    let (customer_ids, user_ids) = seed(&db, case).await?;
    store::roles::grant(
        &db,
        SUBJECT,
        None,
        mfa_reset::domain::model::Role::PrivilegedAuthenticationAdmin,
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let secret = ServerSecret::load_or_create(&dir.join("secret.key"))?;
    let token = mint_dev_token(
        &secret,
        SUBJECT,
        Duration::from_secs(3600),
        "mfa-reset",
        "mfa-reset",
    )?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = UsersClient::new(channel);

    let before = statements.load(Ordering::Relaxed);
    let started = Instant::now();
    let summary = client
        .summarize_mfa_reset(authed(
            pb::UsersSummarizeMfaResetRequest {
                customer_ids: customer_ids.iter().map(ToString::to_string).collect(),
                target: Some(pb::users_summarize_mfa_reset_request::Target::Users(
                    pb::UserReferences {
                        user_ids: user_ids.iter().map(ToString::to_string).collect(),
                        external_subjects: vec![],
                    },
                )),
                reason: "bench".into(),
                page_size: 500,
                ..Default::default()
            },
            &token,
        ))
        .await?
        .into_inner();
    let summarize_time = started.elapsed();
    let summarize_statements = statements.load(Ordering::Relaxed) - before;
    let reset = summary
        .mfa_reset
        .ok_or_else(|| anyhow::anyhow!("no reset"))?;

    let before = statements.load(Ordering::Relaxed);
    let started = Instant::now();
    client
        .confirm_mfa_reset(authed(
            pb::UsersConfirmMfaResetRequest {
                reset_id: reset.id,
                etag: reset.etag,
                request_id: String::new(),
            },
            &token,
        ))
        .await?;
    let confirm_time = started.elapsed();
    let confirm_statements = statements.load(Ordering::Relaxed) - before;
    let _ = stop.send(());
    server.await??;
    Ok((
        summarize_time,
        summarize_statements,
        confirm_time,
        confirm_statements,
    ))
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Customers, users (one in ten an admin) and two methods each (a phone, deleted, and a
/// hardware token, deactivated), with multi-row inserts.
async fn seed(db: &DatabaseConnection, case: &Case) -> anyhow::Result<(Vec<Uuid>, Vec<Uuid>)> {
    let now = chrono::Utc::now();
    let customer_ids: Vec<Uuid> = (0..case.customers).map(|_| Uuid::now_v7()).collect();
    for chunk in customer_ids.chunks(1000) {
        customers::Entity::insert_many(chunk.iter().enumerate().map(|(i, id)| {
            customers::ActiveModel::from(customers::Model {
                id: *id,
                name: format!("Bench {id} {i}"),
                mfa_policy: "ENFORCED".into(),
                enabled_method_kinds: "PHONE,HARDWARE_OATH".into(),
                created_at: now,
                updated_at: now,
                approval_threshold: 0,
            })
        }))
        .exec_without_returning(db)
        .await?;
    }
    let users: Vec<users::Model> = (0..case.users)
        .map(|i| {
            let id = Uuid::now_v7();
            users::Model {
                id,
                customer_id: customer_ids[i % customer_ids.len()],
                external_subject: None,
                display_name: format!("User {i}"),
                display_name_folded: format!("user {i}"),
                email: format!("user{i}@bench.example"),
                is_admin: i % 10 == 0,
                mfa_registration_required: false,
                mfa_reset_at: None,
                created_at: now,
                updated_at: now,
            }
        })
        .collect();
    let user_ids = users.iter().map(|u| u.id).collect();
    let methods: Vec<authentication_methods::Model> = users
        .iter()
        .flat_map(|u| {
            [
                ("PHONE", "+1 555 123 4567"),
                ("HARDWARE_OATH", "serial 12345678"),
            ]
            .map(|(kind, label)| authentication_methods::Model {
                id: Uuid::now_v7(),
                customer_id: u.customer_id,
                user_id: u.id,
                kind: kind.into(),
                scope: "USER".into(),
                label: label.into(),
                state: "ACTIVE".into(),
                secret_ref: None,
                created_at: now,
                updated_at: now,
                last_used_at: None,
            })
        })
        .collect();
    for chunk in users.chunks(1000) {
        users::Entity::insert_many(chunk.iter().cloned().map(users::ActiveModel::from))
            .exec_without_returning(db)
            .await?;
    }
    for chunk in methods.chunks(1000) {
        authentication_methods::Entity::insert_many(
            chunk
                .iter()
                .cloned()
                .map(authentication_methods::ActiveModel::from),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok((customer_ids, user_ids))
}
