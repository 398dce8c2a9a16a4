//! Search at scale (DESIGN.md "Lists"): every user gets a normalised `search_key` (see
//! `store::search`), computed in Rust and indexed so that a search of a selection answers
//! from an index, not a scan of its customers' users.
//!
//! - `users.search_key`: `" <name words> | <e-mail words>"`, folded. Existing users are
//!   filled here, in batches of [`BACKFILL_BATCH`] keyed on id; `display_name_folded` is
//!   re-folded the same way (accents stripped), so that "then by name" sorts "Élodie" with
//!   the e's.
//! - PostgreSQL: `pg_trgm` and `btree_gin` (trusted extensions: a database owner may create
//!   them), and one GIN index on `(customer_id, search_key gin_trgm_ops)`. `LIKE '% ng%'`
//!   and `LIKE '%guy%'` are then bitmap index scans restricted to the selection's customers.
//!   The two `text_pattern_ops` prefix indexes of the first release served the old
//!   prefix-only search and go.
//! - Counts for a customer selector, from indexes alone: users per customer from the
//!   `(customer_id, id)` unique index, and two partial indexes for the users who must
//!   register again and the active methods (whose distinct users have MFA registered). No
//!   counter rows: a 500-customer confirm would make them hot.
//! - SQLite: an FTS5 table with the trigram tokenizer over `user_search`, a plain table with
//!   an `INTEGER PRIMARY KEY` that triggers on `users` keep in step. The FTS table's rowids
//!   point into `user_search`, never into `users`, whose implicit rowids `VACUUM` may
//!   renumber.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use sea_orm_migration::prelude::*;

use super::m20261201_000002_contract_v1::run;
use crate::store::search;

/// Users whose key is computed per statement when existing rows are filled.
const BACKFILL_BATCH: u64 = 1000;

/// See the module documentation.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        run(db, ADD_COLUMN).await?;
        backfill(db).await?;
        run(db, COUNT_INDEXES).await?;
        match backend {
            DbBackend::Postgres => run(db, POSTGRES_INDEX).await,
            _ => {
                run(db, SQLITE_TABLES).await?;
                for trigger in SQLITE_TRIGGERS {
                    db.execute_unprepared(trigger).await?;
                }
                run(db, SQLITE_FILL).await
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => run(db, POSTGRES_DOWN).await,
            _ => run(db, SQLITE_DOWN).await,
        }
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(FromQueryResult)]
struct Names {
    id: uuid::Uuid,
    display_name: String,
    email: String,
}

/// Computes the key (and the re-folded name) of every existing user, one statement per
/// batch: `UPDATE users SET ... = CASE id WHEN ... END WHERE id IN (...)`.
async fn backfill(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let mut after: Option<uuid::Uuid> = None;
    loop {
        let mut select = Query::select();
        select
            .columns([
                Alias::new("id"),
                Alias::new("display_name"),
                Alias::new("email"),
            ])
            .from(Alias::new("users"))
            .order_by(Alias::new("id"), Order::Asc)
            .limit(BACKFILL_BATCH);
        if let Some(after) = after {
            select.and_where(Expr::col(Alias::new("id")).gt(after));
        }
        let rows = Names::find_by_statement(backend.build(&select))
            .all(db)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(last.id);
        let mut key = CaseStatement::new();
        let mut name = CaseStatement::new();
        for row in &rows {
            let is_row = Expr::col(Alias::new("id")).eq(row.id);
            key = key.case(is_row.clone(), search::key(&row.display_name, &row.email));
            name = name.case(is_row, search::fold(&row.display_name));
        }
        let update = Query::update()
            .table(Alias::new("users"))
            .value(Alias::new("search_key"), key)
            .value(Alias::new("display_name_folded"), name)
            .and_where(Expr::col(Alias::new("id")).is_in(rows.iter().map(|row| row.id)))
            .to_owned();
        let (sql, values) = match backend {
            DbBackend::Postgres => update.build(PostgresQueryBuilder),
            _ => update.build(SqliteQueryBuilder),
        };
        let values: Vec<Value> = values.into_iter().collect();
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
}

const COUNT_INDEXES: &str = "
CREATE INDEX idx_users_registration_required ON users (customer_id)
  WHERE mfa_registration_required;
CREATE INDEX idx_authentication_methods_active ON authentication_methods (customer_id, user_id)
  WHERE state = 'ACTIVE'
";

const ADD_COLUMN: &str = "
ALTER TABLE users ADD COLUMN search_key text NOT NULL DEFAULT ''
";

const POSTGRES_INDEX: &str = "
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX idx_users_search ON users USING gin (customer_id, search_key gin_trgm_ops);
DROP INDEX idx_users_customer_name_prefix;
DROP INDEX idx_users_customer_email_prefix
";

const POSTGRES_DOWN: &str = "
DROP INDEX idx_users_registration_required;
DROP INDEX idx_authentication_methods_active;
CREATE INDEX idx_users_customer_name_prefix ON users (customer_id, display_name_folded text_pattern_ops);
CREATE INDEX idx_users_customer_email_prefix ON users (customer_id, email text_pattern_ops);
DROP INDEX idx_users_search;
ALTER TABLE users DROP COLUMN search_key
";

const SQLITE_TABLES: &str = "
CREATE TABLE user_search (
  rowid INTEGER PRIMARY KEY,
  user_id NOT NULL UNIQUE,
  customer_id NOT NULL,
  search_key text NOT NULL
);
CREATE VIRTUAL TABLE user_search_fts USING fts5(
  search_key, content = 'user_search', content_rowid = 'rowid', tokenize = 'trigram'
)
";

/// Each holds `;` inside its body: one statement each.
const SQLITE_TRIGGERS: [&str; 6] = [
    "CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
       INSERT INTO user_search (user_id, customer_id, search_key)
         VALUES (new.id, new.customer_id, new.search_key);
     END",
    "CREATE TRIGGER users_search_update AFTER UPDATE OF search_key ON users BEGIN
       UPDATE user_search SET search_key = new.search_key WHERE user_id = new.id;
     END",
    "CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
       DELETE FROM user_search WHERE user_id = old.id;
     END",
    "CREATE TRIGGER user_search_fts_insert AFTER INSERT ON user_search BEGIN
       INSERT INTO user_search_fts (rowid, search_key) VALUES (new.rowid, new.search_key);
     END",
    "CREATE TRIGGER user_search_fts_update AFTER UPDATE ON user_search BEGIN
       INSERT INTO user_search_fts (user_search_fts, rowid, search_key)
         VALUES ('delete', old.rowid, old.search_key);
       INSERT INTO user_search_fts (rowid, search_key) VALUES (new.rowid, new.search_key);
     END",
    "CREATE TRIGGER user_search_fts_delete AFTER DELETE ON user_search BEGIN
       INSERT INTO user_search_fts (user_search_fts, rowid, search_key)
         VALUES ('delete', old.rowid, old.search_key);
     END",
];

const SQLITE_FILL: &str = "
INSERT INTO user_search (user_id, customer_id, search_key)
  SELECT id, customer_id, search_key FROM users ORDER BY id
";

const SQLITE_DOWN: &str = "
DROP INDEX idx_users_registration_required;
DROP INDEX idx_authentication_methods_active;
DROP TRIGGER users_search_insert;
DROP TRIGGER users_search_update;
DROP TRIGGER users_search_delete;
DROP TABLE user_search_fts;
DROP TABLE user_search;
ALTER TABLE users DROP COLUMN search_key
";
