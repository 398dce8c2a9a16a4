//! The schema on a fresh SQLite file and, when `MFA_RESET_TEST_POSTGRES_URL` names an admin
//! connection, on a fresh PostgreSQL database made for the test and dropped after it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use chrono::{SubsecRound, Utc};
use futures::FutureExt;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    ModelTrait, QueryResult, Set, SqlErr, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use super::entities::{authentication_methods, customers, role_assignments, users};
use super::migration::Migrator;
use super::{connect, migrate, with_database};

const POSTGRES_URL_VAR: &str = "MFA_RESET_TEST_POSTGRES_URL";

const TABLES: [&str; 8] = [
    "customers",
    "role_assignments",
    "users",
    "authentication_methods",
    "mfa_resets",
    "mfa_reset_customers",
    "mfa_reset_items",
    "audit_events",
];

/// A database file in a directory that does not exist yet; removed when dropped.
struct SqliteFile {
    directory: PathBuf,
}

impl SqliteFile {
    fn new() -> Self {
        let directory =
            std::env::temp_dir().join(format!("mfa-reset-store-test-{}", Uuid::now_v7()));
        Self { directory }
    }

    fn url(&self) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.directory.join("data").join("mfa-reset.db").display()
        )
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

#[tokio::test]
async fn sqlite_migrates_concurrently_and_again_and_keeps_its_pragmas_on_every_connection() {
    let file = SqliteFile::new();
    let db = connect(&file.url()).await.unwrap();
    let (first, second) = tokio::join!(migrate(&db), migrate(&db));
    first.unwrap();
    second.unwrap();
    migrate(&db).await.unwrap();
    assert_tables_exist(&db).await;

    // Hold one pooled connection in a transaction so the checks also run on a second one.
    let first = db.begin().await.unwrap();
    let second = db.begin().await.unwrap();
    for conn in [&first, &second] {
        assert_eq!(pragma::<String>(conn, "journal_mode").await, "wal");
        assert_eq!(pragma::<i64>(conn, "foreign_keys").await, 1);
        assert_eq!(pragma::<i64>(conn, "busy_timeout").await, 30_000);
        assert_eq!(pragma::<i64>(conn, "synchronous").await, 1, "NORMAL");
    }
    drop((first, second));
    db.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_round_trips_rows_and_refuses_cross_customer_methods() {
    let file = SqliteFile::new();
    let db = connect(&file.url()).await.unwrap();
    migrate(&db).await.unwrap();
    exercise_schema(&db).await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_migration_down_drops_everything_and_up_restores_it() {
    let file = SqliteFile::new();
    let db = connect(&file.url()).await.unwrap();
    migrate(&db).await.unwrap();
    assert_down_then_up(&db).await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn connect_refuses_other_schemes_without_echoing_the_url() {
    let err = connect("mysql://root:hunter2@localhost/db")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = connect("postgres://root:hunter2@[bad/db")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn postgres_migrates_concurrently_round_trips_rows_and_refuses_cross_customer_methods() {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!("{POSTGRES_URL_VAR} is not set; skipping the PostgreSQL run");
        return;
    };
    with_fresh_postgres(&admin_url, |db| async move {
        // Replicas starting together: the advisory lock makes the second run wait and then
        // find nothing pending.
        let (first, second) = tokio::join!(migrate(&db), migrate(&db));
        first.unwrap();
        second.unwrap();
        migrate(&db).await.unwrap();
        assert_tables_exist(&db).await;
        exercise_schema(&db).await;
        assert_down_then_up(&db).await;
        db.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_connections_run_without_jit_and_writes_with_generic_plans() {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!("{POSTGRES_URL_VAR} is not set; skipping the PostgreSQL run");
        return;
    };
    let db = connect(&admin_url).await.unwrap();
    assert_eq!(show(&db, "jit").await, "off", "every pooled connection");
    assert_eq!(
        show(&db, "plan_cache_mode").await,
        "auto",
        "reads plan by value"
    );
    let txn = super::begin_write(&db).await.unwrap();
    assert_eq!(show(&txn, "plan_cache_mode").await, "force_generic_plan");
    txn.rollback().await.unwrap();
    assert_eq!(
        show(&db, "plan_cache_mode").await,
        "auto",
        "only for the transaction"
    );
    db.close().await.unwrap();
}

async fn show(conn: &impl ConnectionTrait, setting: &str) -> String {
    conn.query_one_raw(sea_orm::Statement::from_string(
        DbBackend::Postgres,
        format!("SHOW {setting}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index(0)
    .unwrap()
}

/// Runs `test` against a database created for it, and drops the database afterwards, whether
/// the test passed or not.
async fn with_fresh_postgres<F, Fut>(admin_url: &str, test: F)
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin = connect(admin_url).await.unwrap();
    let name = format!("mfa_reset_test_{}", Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();

    let outcome = AssertUnwindSafe(async {
        let db = connect(&with_database(admin_url, &name)).await.unwrap();
        test(db).await;
    })
    .catch_unwind()
    .await;

    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    admin.close().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn assert_tables_exist(db: &DatabaseConnection) {
    for table in TABLES {
        let count = count_rows(db, table).await;
        assert_eq!(count, 0, "{table} should exist and be empty");
    }
}

async fn assert_down_then_up(db: &DatabaseConnection) {
    Migrator::down(db, None).await.unwrap();
    for table in TABLES {
        let select = format!("SELECT COUNT(*) FROM {table}");
        let result = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), select))
            .await;
        assert!(result.is_err(), "{table} should be gone after down");
    }
    migrate(db).await.unwrap();
    assert_tables_exist(db).await;
}

/// Inserts a customer, a user and a method through the entities, reads them back, and checks
/// that the database refuses what the design forbids. Leaves the tables as it found them.
async fn exercise_schema(db: &DatabaseConnection) {
    // PostgreSQL keeps microseconds; truncate so the values read back compare equal.
    let now = Utc::now().trunc_subsecs(6);

    let customer = customers::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set("Contoso".to_owned()),
        mfa_policy: Set("ENFORCED".to_owned()),
        enabled_method_kinds: Set("PHONE,EMAIL,HARDWARE_OATH".to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        approval_threshold: Set(0),
    }
    .insert(db)
    .await
    .unwrap();
    let other_customer = customers::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set("Fabrikam".to_owned()),
        mfa_policy: Set("OPTIONAL".to_owned()),
        enabled_method_kinds: Set("PHONE".to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        approval_threshold: Set(0),
    }
    .insert(db)
    .await
    .unwrap();

    let user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        customer_id: Set(customer.id),
        external_subject: Set(Some("auth0|alice".to_owned())),
        display_name: Set("Alice Example".to_owned()),
        display_name_folded: Set("alice example".to_owned()),
        search_key: Set(" alice example | alice example com".to_owned()),
        email: Set("alice@example.com".to_owned()),
        is_admin: Set(false),
        mfa_registration_required: Set(false),
        mfa_reset_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();

    let method = method_for(customer.id, user.id, now)
        .insert(db)
        .await
        .unwrap();

    assert_eq!(
        customers::Entity::find_by_id(customer.id)
            .one(db)
            .await
            .unwrap(),
        Some(customer.clone())
    );
    assert_eq!(
        users::Entity::find_by_id(user.id).one(db).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        authentication_methods::Entity::find_by_id(method.id)
            .one(db)
            .await
            .unwrap(),
        Some(method.clone())
    );
    // The relations join on the composite key.
    assert_eq!(
        user.find_related(authentication_methods::Entity)
            .all(db)
            .await
            .unwrap(),
        vec![method.clone()]
    );
    assert_eq!(
        method.find_related(users::Entity).one(db).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        customer.find_related(users::Entity).all(db).await.unwrap(),
        vec![user.clone()]
    );

    // A method naming the user under another customer has no user to belong to.
    let cross = method_for(other_customer.id, user.id, now).insert(db).await;
    assert_foreign_key_violation(cross);
    let orphan = method_for(customer.id, Uuid::now_v7(), now)
        .insert(db)
        .await;
    assert_foreign_key_violation(orphan);

    // One `*` grant per subject and role, despite NULLs being distinct in unique indexes.
    let grant = |customer_id| role_assignments::ActiveModel {
        id: Set(Uuid::now_v7()),
        subject: Set("svc-directory-sync".to_owned()),
        customer_id: Set(customer_id),
        role: Set("PROVISIONER".to_owned()),
        created_at: Set(now),
    };
    grant(None).insert(db).await.unwrap();
    grant(Some(customer.id)).insert(db).await.unwrap();
    assert_unique_violation(grant(None).insert(db).await);
    assert_unique_violation(grant(Some(customer.id)).insert(db).await);

    // E-mail addresses are unique per customer, not across customers.
    let mut same_email = users::ActiveModel::from(user.clone());
    same_email.id = Set(Uuid::now_v7());
    same_email.external_subject = Set(None);
    assert_unique_violation(same_email.clone().insert(db).await);
    same_email.customer_id = Set(other_customer.id);
    same_email.insert(db).await.unwrap();

    // Closed value sets are checked by the database.
    let mut bad_policy = customers::ActiveModel::from(other_customer.clone());
    bad_policy.mfa_policy = Set("SOMETIMES".to_owned());
    assert!(bad_policy.update(db).await.is_err());

    // Deleting the user takes their methods along.
    user.clone().delete(db).await.unwrap();
    assert_eq!(
        count_rows(db, "authentication_methods").await,
        0,
        "methods go with their user"
    );

    // Clean up so later checks start from empty tables.
    for table in ["role_assignments", "users", "customers"] {
        db.execute_unprepared(&format!("DELETE FROM {table}"))
            .await
            .unwrap();
    }
}

fn method_for(
    customer_id: Uuid,
    user_id: Uuid,
    now: chrono::DateTime<Utc>,
) -> authentication_methods::ActiveModel {
    authentication_methods::ActiveModel {
        id: Set(Uuid::now_v7()),
        customer_id: Set(customer_id),
        user_id: Set(user_id),
        kind: Set("PHONE".to_owned()),
        scope: Set("ORG".to_owned()),
        label: Set("+1 555 010 4567".to_owned()),
        state: Set("ACTIVE".to_owned()),
        secret_ref: Set(Some("vault://mfa/phone/1".to_owned())),
        created_at: Set(now),
        updated_at: Set(now),
        last_used_at: Set(Some(now)),
    }
}

fn assert_foreign_key_violation<T: std::fmt::Debug>(result: Result<T, DbErr>) {
    let err = result.expect_err("the foreign key should refuse this row");
    assert!(
        matches!(
            err.sql_err(),
            Some(SqlErr::ForeignKeyConstraintViolation(_))
        ),
        "expected a foreign key violation, got {err:?}"
    );
}

fn assert_unique_violation<T: std::fmt::Debug>(result: Result<T, DbErr>) {
    let err = result.expect_err("the unique index should refuse this row");
    assert!(
        matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
        "expected a unique violation, got {err:?}"
    );
}

async fn count_rows(db: &impl ConnectionTrait, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn pragma<T>(conn: &impl ConnectionTrait, name: &str) -> T
where
    T: sea_orm::TryGetable,
{
    let row: QueryResult = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("PRAGMA {name}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<T>(0).unwrap()
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}

#[tokio::test]
async fn sqlite_upgrades_a_first_release_database_keeping_its_rows() {
    let file = SqliteFile::new();
    let db = connect(&file.url()).await.unwrap();
    upgrade_keeps_rows(&db).await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn postgres_upgrades_a_first_release_database_keeping_its_rows() {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!("{POSTGRES_URL_VAR} is not set; skipping the PostgreSQL run");
        return;
    };
    with_fresh_postgres(&admin_url, |db| async move {
        upgrade_keeps_rows(&db).await;
        db.close().await.unwrap();
    })
    .await;
}

/// Runs `sql` with `?` placeholders (rewritten to `$n` for PostgreSQL) and `values`.
async fn run_sql(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            let mut n = 0;
            sql.chars()
                .map(|c| {
                    if c == '?' {
                        n += 1;
                        format!("${n}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        }
        _ => sql.to_string(),
    };
    db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .unwrap();
}

/// A database written by the first release (migration 1 only, rows in its shape) is brought
/// to the current schema by `migrate` without losing a row; what the new schema allows
/// works; and going back down to the first release keeps what it can hold.
async fn upgrade_keeps_rows(db: &DatabaseConnection) {
    use super::entities::{audit_events, mfa_reset_customers, mfa_reset_items, mfa_resets};

    Migrator::up(db, Some(1)).await.unwrap();
    let now = Utc::now().trunc_subsecs(6);
    let (customer, user, confirmed, pending, event) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    run_sql(
        db,
        "INSERT INTO customers (id, name, mfa_policy, enabled_method_kinds, created_at, updated_at) \
         VALUES (?, 'Old Co', 'ENFORCED', 'PHONE', ?, ?)",
        vec![customer.into(), now.into(), now.into()],
    )
    .await;
    run_sql(
        db,
        "INSERT INTO users (id, customer_id, external_subject, display_name, display_name_folded, \
         email, is_admin, mfa_registration_required, mfa_reset_at, created_at, updated_at) \
         VALUES (?, ?, 'old|1', 'Old User', 'old user', 'old@example.com', false, true, ?, ?, ?)",
        vec![
            user.into(),
            customer.into(),
            now.into(),
            now.into(),
            now.into(),
        ],
    )
    .await;
    let summary = r#"{"customers":[{"customer_id":"CUSTOMER","customer_name":"Old Co","mfa_policy":"ENFORCED","users_to_reset":1,"users_skipped":0,"methods_to_delete":{"PHONE":1},"methods_to_deactivate":{}}],"totals":{"users_requested":1,"users_to_reset":1,"users_skipped":0,"methods_to_delete":1,"methods_to_deactivate":0,"methods_to_keep":0}}"#
        .replace("CUSTOMER", &customer.to_string());
    for (id, state, confirmed_at) in [
        (confirmed, "CONFIRMED", Some(now)),
        (pending, "PENDING", None),
    ] {
        run_sql(
            db,
            "INSERT INTO mfa_resets (id, requested_by, state, scope, method_kinds, reason, etag, \
             request_id, created_at, expires_at, confirmed_at, cancelled_at, summary) \
             VALUES (?, 'old-admin', ?, 'ALL', '', 'lost phone', 'etag', NULL, ?, ?, ?, NULL, ?)",
            vec![
                id.into(),
                state.into(),
                now.into(),
                (now + chrono::Duration::minutes(15)).into(),
                confirmed_at.into(),
                summary.clone().into(),
            ],
        )
        .await;
        run_sql(
            db,
            "INSERT INTO mfa_reset_customers (reset_id, customer_id) VALUES (?, ?)",
            vec![id.into(), customer.into()],
        )
        .await;
        run_sql(
            db,
            "INSERT INTO mfa_reset_items (reset_id, customer_id, user_id, position, display_name, \
             is_admin, skip_reason, planned_methods) VALUES (?, ?, ?, 0, 'Old User', false, NULL, '[]')",
            vec![id.into(), customer.into(), user.into()],
        )
        .await;
    }
    run_sql(
        db,
        "INSERT INTO audit_events (id, customer_id, occurred_at, actor, action, user_id, method_id, \
         reset_id, reason, request_id, details) VALUES (?, ?, ?, 'old-admin', 'MFA_RESET', ?, NULL, ?, \
         'lost phone', 'req-1', ?)",
        vec![
            event.into(),
            customer.into(),
            now.into(),
            user.into(),
            confirmed.into(),
            r#"{"methods_deactivated":{},"methods_deleted":{"PHONE":1},"mfa_registration_required":true,"scope":"ALL"}"#.into(),
        ],
    )
    .await;

    migrate(db).await.unwrap();

    let customer_row = customers::Entity::find_by_id(customer)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(customer_row.approval_threshold, 0);
    let confirmed_row = mfa_resets::Entity::find_by_id(confirmed)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(confirmed_row.state, "CONFIRMED");
    assert_eq!(confirmed_row.confirmed_by.as_deref(), Some("old-admin"));
    assert_eq!(confirmed_row.confirmed_at, Some(now));
    assert_eq!(confirmed_row.summary, summary);
    assert!(!confirmed_row.approval_required);
    let pending_row = mfa_resets::Entity::find_by_id(pending)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (pending_row.state.as_str(), pending_row.confirmed_by),
        ("PENDING", None)
    );
    assert_eq!(
        mfa_reset_items::Entity::find().all(db).await.unwrap().len(),
        2
    );
    assert_eq!(
        mfa_reset_customers::Entity::find()
            .all(db)
            .await
            .unwrap()
            .len(),
        2
    );
    let event_row = audit_events::Entity::find_by_id(event)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event_row.customer_id, Some(customer));
    assert_eq!(event_row.request_id.as_deref(), Some("req-1"));
    assert_eq!(
        event_row.external_subject.as_deref(),
        Some("old|1"),
        "backfilled"
    );
    assert_eq!(
        event_row.mfa_registration_required,
        Some(true),
        "from its details"
    );
    assert_eq!(event_row.mfa_reset_at, Some(now));
    assert_eq!(
        event_row.commit_seq, 0,
        "events from before the change stream replay first"
    );
    assert_eq!(super::audit::clock(db).await.unwrap().seq, 0);
    let user_row = users::Entity::find_by_id(user)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            user_row.search_key.as_str(),
            user_row.display_name_folded.as_str()
        ),
        (" old user | old example com", "old user"),
        "existing users get their search key"
    );
    let found = super::users::list(
        db,
        &[customer.into()],
        &super::users::UserFilter {
            search: super::search::Search::new("exam"),
            ..Default::default()
        },
        None,
        10,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        found.iter().map(|row| row.user.id).collect::<Vec<_>>(),
        [user],
        "and are found through the search index"
    );
    if db.get_database_backend() == DbBackend::Sqlite {
        let broken = db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA foreign_key_check",
            ))
            .await
            .unwrap();
        assert!(
            broken.is_empty(),
            "every foreign key holds after the rebuild"
        );
        for index in [
            "idx_audit_events_customer_action",
            "idx_mfa_resets_requested_by",
            "idx_mfa_reset_customers_customer",
            "idx_mfa_reset_items_reset_customer",
        ] {
            let found = db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND name = ?",
                    [index.into()],
                ))
                .await
                .unwrap();
            assert!(found.is_some(), "{index} exists after the rebuild");
        }
    }

    // What the new schema allows: the new states, events on every customer, and a user
    // deleted while a reset's item names them.
    run_sql(
        db,
        "UPDATE mfa_resets SET state = 'AWAITING_APPROVAL' WHERE id = ?",
        vec![pending.into()],
    )
    .await;
    let mut wildcard = audit_events::ActiveModel::from(event_row.clone());
    wildcard.id = Set(Uuid::now_v7());
    wildcard.customer_id = Set(None);
    wildcard.action = Set("ROLE_GRANTED".into());
    wildcard.insert(db).await.unwrap();
    let bad_state = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            match db.get_database_backend() {
                DbBackend::Postgres => "UPDATE mfa_resets SET state = 'BOGUS' WHERE id = $1",
                _ => "UPDATE mfa_resets SET state = 'BOGUS' WHERE id = ?",
            },
            [confirmed.into()],
        ))
        .await;
    assert!(bad_state.is_err(), "the state is still checked");
    // A pending reset of the user, then the user deleted (as directory sync does).
    let later = Uuid::now_v7();
    run_sql(
        db,
        "INSERT INTO mfa_resets (id, requested_by, state, scope, method_kinds, reason, etag, \
         created_at, expires_at, summary) VALUES (?, 'old-admin', 'PENDING', 'ALL', '', 'later', \
         'etag', ?, ?, ?)",
        vec![
            later.into(),
            now.into(),
            (now + chrono::Duration::minutes(15)).into(),
            summary.clone().into(),
        ],
    )
    .await;
    run_sql(
        db,
        "INSERT INTO mfa_reset_customers (reset_id, customer_id) VALUES (?, ?)",
        vec![later.into(), customer.into()],
    )
    .await;
    run_sql(
        db,
        "INSERT INTO mfa_reset_items (reset_id, customer_id, user_id, position, display_name, \
         is_admin, skip_reason, planned_methods) VALUES (?, ?, ?, 0, 'Old User', false, NULL, '[]')",
        vec![later.into(), customer.into(), user.into()],
    )
    .await;
    users::Entity::delete_by_id(user).exec(db).await.unwrap();
    let items = || async { mfa_reset_items::Entity::find().all(db).await.unwrap().len() };
    assert_eq!(items().await, 3, "the items outlive their user");
    // A reset still takes its customers and items with it.
    mfa_resets::Entity::delete_by_id(confirmed)
        .exec(db)
        .await
        .unwrap();
    assert_eq!(items().await, 2);
    let customers_of_resets = mfa_reset_customers::Entity::find().all(db).await.unwrap();
    assert_eq!(customers_of_resets.len(), 2);

    // Down to the first release: what it cannot hold goes (the awaiting reset, the items of
    // the deleted user, the event on every customer), and the pending reset whose user is
    // gone is cancelled rather than left with a plan it cannot apply.
    let to_first_release = u32::try_from(Migrator::migrations().len() - 1).unwrap();
    Migrator::down(db, Some(to_first_release)).await.unwrap();
    let count = |table: &'static str| async move { count_rows(db, table).await };
    assert_eq!(count("mfa_resets").await, 1);
    assert_eq!(count("mfa_reset_items").await, 0);
    assert_eq!(count("audit_events").await, 1);
    assert_eq!(count("customers").await, 1);
    let state = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT state FROM mfa_resets",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "state")
        .unwrap();
    assert_eq!(state, "CANCELLED");
    migrate(db).await.unwrap();
}
