//! The change stream's cursor (DESIGN.md "Change events"): a stamp on every audit event that
//! follows commit order.
//!
//! - `audit_clock`: one row. Every transaction that writes audit events first increments
//!   `seq` (`UPDATE ... RETURNING`) and stamps its events with the new value; the row lock is
//!   held to commit, so a transaction that stamps later commits later, and a reader that sees
//!   stamp N sees every stamp below it. `purged_seq`/`purged_id` is the highest position
//!   `purge-audit` deleted: a cursor below it may have missed events (CURSOR_EXPIRED).
//! - `audit_events.commit_seq`: the stamp; 0 for the events written before this release (they
//!   replay first, in id order). Indexed with the id: the stream reads `(commit_seq, id)`
//!   ranges.
//! - PostgreSQL: a trigger on the clock row sends `NOTIFY mfa_reset_audit` with the new
//!   stamp, delivered when the writing transaction commits, so that watchers on every replica
//!   wake at once (they also poll the clock, should a notification be lost).
//! - PostgreSQL: an event inserted without a stamp (`commit_seq` 0: by a replica of the
//!   previous release during a rolling upgrade) is stamped by a trigger from the same clock,
//!   so that live streams see it. (SQLite has one process: no mixed versions.)

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

use super::m20261201_000002_contract_v1::run;

/// See the module documentation.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                run(db, POSTGRES_UP).await?;
                // The function body holds `;`: one statement of its own.
                db.execute_unprepared(POSTGRES_NOTIFY_FUNCTION).await?;
                run(db, POSTGRES_NOTIFY_TRIGGER).await?;
                db.execute_unprepared(POSTGRES_STAMP_FUNCTION).await?;
                run(db, POSTGRES_STAMP_TRIGGER).await
            }
            _ => run(db, SQLITE_UP).await,
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

const POSTGRES_UP: &str = "
CREATE TABLE audit_clock (
  id integer PRIMARY KEY CHECK (id = 1),
  seq bigint NOT NULL,
  purged_seq bigint NOT NULL DEFAULT 0,
  purged_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
);
INSERT INTO audit_clock (id, seq) VALUES (1, 0);
ALTER TABLE audit_events ADD COLUMN commit_seq bigint NOT NULL DEFAULT 0;
CREATE INDEX idx_audit_events_commit ON audit_events (commit_seq, id)
";

const POSTGRES_NOTIFY_FUNCTION: &str = "
CREATE FUNCTION mfa_reset_audit_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('mfa_reset_audit', NEW.seq::text);
  RETURN NULL;
END
$$";

const POSTGRES_NOTIFY_TRIGGER: &str = "
CREATE TRIGGER audit_clock_notify AFTER UPDATE OF seq ON audit_clock
  FOR EACH ROW EXECUTE FUNCTION mfa_reset_audit_notify()
";

const POSTGRES_STAMP_FUNCTION: &str = "
CREATE FUNCTION mfa_reset_audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE audit_clock SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO NEW.commit_seq;
  RETURN NEW;
END
$$";

const POSTGRES_STAMP_TRIGGER: &str = "
CREATE TRIGGER audit_events_stamp BEFORE INSERT ON audit_events
  FOR EACH ROW WHEN (NEW.commit_seq = 0) EXECUTE FUNCTION mfa_reset_audit_stamp()
";

const POSTGRES_DOWN: &str = "
DROP TRIGGER audit_events_stamp ON audit_events;
DROP FUNCTION mfa_reset_audit_stamp();
DROP TRIGGER audit_clock_notify ON audit_clock;
DROP FUNCTION mfa_reset_audit_notify();
DROP INDEX idx_audit_events_commit;
ALTER TABLE audit_events DROP COLUMN commit_seq;
DROP TABLE audit_clock
";

const SQLITE_UP: &str = "
CREATE TABLE audit_clock (
  id integer PRIMARY KEY CHECK (id = 1),
  seq integer NOT NULL,
  purged_seq integer NOT NULL DEFAULT 0,
  purged_id blob NOT NULL DEFAULT (zeroblob(16))
);
INSERT INTO audit_clock (id, seq) VALUES (1, 0);
ALTER TABLE audit_events ADD COLUMN commit_seq integer NOT NULL DEFAULT 0;
CREATE INDEX idx_audit_events_commit ON audit_events (commit_seq, id)
";

const SQLITE_DOWN: &str = "
DROP INDEX idx_audit_events_commit;
ALTER TABLE audit_events DROP COLUMN commit_seq;
DROP TABLE audit_clock
";
