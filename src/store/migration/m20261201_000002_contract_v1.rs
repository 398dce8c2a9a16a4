//! The schema of contract v1: the open reset life cycle, typed audit events that carry the
//! user's state, the customer's approval threshold, and AIP-155 request ids.
//!
//! - `customers.approval_threshold` (default 0: never).
//! - `mfa_resets`: the states AWAITING_APPROVAL and REJECTED (the column widens to 32
//!   characters), who confirmed, approved,
//!   cancelled or rejected it and when, whether it needs approval, the filter it was
//!   summarized by.
//! - `mfa_reset_items`: the user's external subject when planned; and no foreign key to
//!   `users` any more, so that a user can be deleted while a reset names them (the reset then
//!   goes stale, as a plan whose user disappeared should; the item is a record of the plan).
//! - `audit_events`: `customer_id` may be NULL (a role on every customer, `*`); the user's
//!   external subject and MFA state after the change. Existing rows are backfilled where the
//!   old `details` or the users table tell.
//! - `idempotency_keys`: one row per (principal, RPC, request id), written in the transaction
//!   of the change it answers.
//!
//! Going down drops what the first release cannot hold: awaiting and rejected resets, events
//! about every customer, and the items of deleted users (their open resets are cancelled
//! first, as their plans can no longer be applied).
//!
//! PostgreSQL alters the tables in place. SQLite cannot drop a constraint, so there the reset
//! tables and the audit log are rebuilt: new tables are created, filled and renamed into
//! place (children first dropped, parents last, so no foreign-key action fires), inside the
//! migration's transaction with foreign keys on.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

/// See the module documentation.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => run(db, POSTGRES_UP).await?,
            _ => {
                run(db, SQLITE_UP_TABLES).await?;
                run(db, SQLITE_UP_COPY).await?;
                run(db, SQLITE_SWAP).await?;
                run(db, &sqlite_indexes(&RESET_INDEXES_V2)).await?;
                run(db, &sqlite_indexes(&AUDIT_INDEXES)).await?;
            }
        }
        run(db, BACKFILL_AUDIT).await?;
        create_idempotency_keys(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        manager
            .drop_table(
                Table::drop()
                    .table(IdempotencyKeys::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        match manager.get_database_backend() {
            DbBackend::Postgres => run(db, POSTGRES_DOWN).await,
            _ => {
                run(db, SQLITE_DOWN_TABLES).await?;
                run(db, SQLITE_DOWN_COPY).await?;
                run(db, SQLITE_SWAP).await?;
                run(db, &sqlite_indexes(&RESET_INDEXES_V1)).await?;
                run(db, &sqlite_indexes(&AUDIT_INDEXES)).await?;
                run(db, "ALTER TABLE customers DROP COLUMN approval_threshold").await
            }
        }
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Runs `;`-separated statements one by one (both drivers take one statement per call).
pub(super) async fn run(db: &impl ConnectionTrait, statements: &str) -> Result<(), DbErr> {
    for statement in statements
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

const POSTGRES_UP: &str = "
ALTER TABLE customers ADD COLUMN approval_threshold integer NOT NULL DEFAULT 0;
ALTER TABLE mfa_resets DROP CONSTRAINT ck_mfa_resets_state;
ALTER TABLE mfa_resets ALTER COLUMN state TYPE varchar(32);
ALTER TABLE mfa_resets ADD CONSTRAINT ck_mfa_resets_state
  CHECK (state IN ('PENDING', 'AWAITING_APPROVAL', 'CONFIRMED', 'CANCELLED', 'REJECTED'));
ALTER TABLE mfa_resets
  ADD COLUMN approval_required boolean NOT NULL DEFAULT false,
  ADD COLUMN target_filter text NULL,
  ADD COLUMN confirmed_by varchar NULL,
  ADD COLUMN approved_by varchar NULL,
  ADD COLUMN approved_at timestamp with time zone NULL,
  ADD COLUMN cancelled_by varchar NULL,
  ADD COLUMN rejected_by varchar NULL,
  ADD COLUMN rejected_at timestamp with time zone NULL,
  ADD COLUMN rejection_reason varchar(500) NULL;
UPDATE mfa_resets SET confirmed_by = requested_by WHERE confirmed_at IS NOT NULL;
UPDATE mfa_resets SET cancelled_by = requested_by WHERE cancelled_at IS NOT NULL;
ALTER TABLE mfa_reset_items DROP CONSTRAINT fk_mfa_reset_items_user;
ALTER TABLE mfa_reset_items ADD COLUMN external_subject varchar NULL;
ALTER TABLE audit_events ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE audit_events
  ADD COLUMN external_subject varchar NULL,
  ADD COLUMN mfa_registration_required boolean NULL,
  ADD COLUMN mfa_reset_at timestamp with time zone NULL
";

const POSTGRES_DOWN: &str = "
DROP INDEX IF EXISTS idx_mfa_reset_items_reset_customer;
DELETE FROM audit_events WHERE customer_id IS NULL;
ALTER TABLE audit_events
  DROP COLUMN external_subject,
  DROP COLUMN mfa_registration_required,
  DROP COLUMN mfa_reset_at;
ALTER TABLE audit_events ALTER COLUMN customer_id SET NOT NULL;
ALTER TABLE mfa_reset_items DROP COLUMN external_subject;
UPDATE mfa_resets SET state = 'CANCELLED', cancelled_at = now(), cancelled_by = requested_by
  WHERE state = 'PENDING' AND id IN (SELECT i.reset_id FROM mfa_reset_items i
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.customer_id = i.customer_id AND u.id = i.user_id));
DELETE FROM mfa_reset_items i WHERE NOT EXISTS
  (SELECT 1 FROM users u WHERE u.customer_id = i.customer_id AND u.id = i.user_id);
ALTER TABLE mfa_reset_items ADD CONSTRAINT fk_mfa_reset_items_user
  FOREIGN KEY (customer_id, user_id) REFERENCES users (customer_id, id);
DELETE FROM mfa_resets WHERE state IN ('AWAITING_APPROVAL', 'REJECTED');
ALTER TABLE mfa_resets
  DROP COLUMN approval_required,
  DROP COLUMN target_filter,
  DROP COLUMN confirmed_by,
  DROP COLUMN approved_by,
  DROP COLUMN approved_at,
  DROP COLUMN cancelled_by,
  DROP COLUMN rejected_by,
  DROP COLUMN rejected_at,
  DROP COLUMN rejection_reason;
ALTER TABLE mfa_resets DROP CONSTRAINT ck_mfa_resets_state;
ALTER TABLE mfa_resets ALTER COLUMN state TYPE varchar(16);
ALTER TABLE mfa_resets ADD CONSTRAINT ck_mfa_resets_state
  CHECK (state IN ('PENDING', 'CONFIRMED', 'CANCELLED'));
ALTER TABLE customers DROP COLUMN approval_threshold
";

/// The new SQLite tables, under `*_v2` names until the swap. Column types are those
/// sea-query gives SQLite (see the initial migration).
const SQLITE_UP_TABLES: &str = r#"
ALTER TABLE customers ADD COLUMN approval_threshold integer NOT NULL DEFAULT 0;
CREATE TABLE "mfa_resets_v2" (
  "id" uuid_text NOT NULL PRIMARY KEY,
  "requested_by" varchar NOT NULL,
  "state" varchar(32) NOT NULL CONSTRAINT "ck_mfa_resets_state"
    CHECK ("state" IN ('PENDING', 'AWAITING_APPROVAL', 'CONFIRMED', 'CANCELLED', 'REJECTED')),
  "scope" varchar(16) NOT NULL,
  "method_kinds" varchar NOT NULL,
  "reason" varchar(500) NOT NULL,
  "etag" varchar NOT NULL,
  "request_id" varchar NULL,
  "created_at" timestamp_with_timezone_text NOT NULL,
  "expires_at" timestamp_with_timezone_text NOT NULL,
  "confirmed_at" timestamp_with_timezone_text NULL,
  "cancelled_at" timestamp_with_timezone_text NULL,
  "summary" text NOT NULL,
  "approval_required" boolean NOT NULL DEFAULT FALSE,
  "target_filter" text NULL,
  "confirmed_by" varchar NULL,
  "approved_by" varchar NULL,
  "approved_at" timestamp_with_timezone_text NULL,
  "cancelled_by" varchar NULL,
  "rejected_by" varchar NULL,
  "rejected_at" timestamp_with_timezone_text NULL,
  "rejection_reason" varchar(500) NULL
);
CREATE TABLE "mfa_reset_customers_v2" (
  "reset_id" uuid_text NOT NULL,
  "customer_id" uuid_text NOT NULL,
  PRIMARY KEY ("reset_id", "customer_id"),
  FOREIGN KEY ("reset_id") REFERENCES "mfa_resets_v2" ("id") ON DELETE CASCADE,
  FOREIGN KEY ("customer_id") REFERENCES "customers" ("id")
);
CREATE TABLE "mfa_reset_items_v2" (
  "reset_id" uuid_text NOT NULL,
  "customer_id" uuid_text NOT NULL,
  "user_id" uuid_text NOT NULL,
  "position" integer NOT NULL,
  "display_name" varchar NOT NULL,
  "is_admin" boolean NOT NULL,
  "skip_reason" varchar(32) NULL,
  "planned_methods" text NOT NULL,
  "external_subject" varchar NULL,
  PRIMARY KEY ("reset_id", "user_id"),
  CONSTRAINT "uq_mfa_reset_items_reset_position" UNIQUE ("reset_id", "position"),
  FOREIGN KEY ("reset_id") REFERENCES "mfa_resets_v2" ("id") ON DELETE CASCADE,
  FOREIGN KEY ("reset_id", "customer_id")
    REFERENCES "mfa_reset_customers_v2" ("reset_id", "customer_id") ON DELETE CASCADE
);
CREATE TABLE "audit_events_v2" (
  "id" uuid_text NOT NULL PRIMARY KEY,
  "customer_id" uuid_text NULL,
  "occurred_at" timestamp_with_timezone_text NOT NULL,
  "actor" varchar NOT NULL,
  "action" varchar(48) NOT NULL,
  "user_id" uuid_text NULL,
  "method_id" uuid_text NULL,
  "reset_id" uuid_text NULL,
  "reason" varchar(500) NULL,
  "request_id" varchar NULL,
  "details" text NOT NULL,
  "external_subject" varchar NULL,
  "mfa_registration_required" boolean NULL,
  "mfa_reset_at" timestamp_with_timezone_text NULL,
  FOREIGN KEY ("customer_id") REFERENCES "customers" ("id")
)
"#;

const SQLITE_UP_COPY: &str = r#"
INSERT INTO mfa_resets_v2 (id, requested_by, state, scope, method_kinds, reason, etag,
    request_id, created_at, expires_at, confirmed_at, cancelled_at, summary,
    confirmed_by, cancelled_by)
  SELECT id, requested_by, state, scope, method_kinds, reason, etag,
    request_id, created_at, expires_at, confirmed_at, cancelled_at, summary,
    CASE WHEN confirmed_at IS NOT NULL THEN requested_by END,
    CASE WHEN cancelled_at IS NOT NULL THEN requested_by END
  FROM mfa_resets;
INSERT INTO mfa_reset_customers_v2 (reset_id, customer_id)
  SELECT reset_id, customer_id FROM mfa_reset_customers;
INSERT INTO mfa_reset_items_v2 (reset_id, customer_id, user_id, position, display_name,
    is_admin, skip_reason, planned_methods)
  SELECT reset_id, customer_id, user_id, position, display_name,
    is_admin, skip_reason, planned_methods
  FROM mfa_reset_items;
INSERT INTO audit_events_v2 (id, customer_id, occurred_at, actor, action, user_id,
    method_id, reset_id, reason, request_id, details)
  SELECT id, customer_id, occurred_at, actor, action, user_id,
    method_id, reset_id, reason, request_id, details
  FROM audit_events
"#;

/// Children are dropped before their parents, so dropping a parent deletes no rows through a
/// foreign-key action; renaming a `*_v2` parent rewrites its children's references.
const SQLITE_SWAP: &str = r#"
DROP TABLE mfa_reset_items;
DROP TABLE mfa_reset_customers;
DROP TABLE mfa_resets;
DROP TABLE audit_events;
ALTER TABLE mfa_resets_v2 RENAME TO mfa_resets;
ALTER TABLE mfa_reset_customers_v2 RENAME TO mfa_reset_customers;
ALTER TABLE mfa_reset_items_v2 RENAME TO mfa_reset_items;
ALTER TABLE audit_events_v2 RENAME TO audit_events
"#;

/// The tables of the initial migration, to go back to.
const SQLITE_DOWN_TABLES: &str = r#"
CREATE TABLE "mfa_resets_v2" (
  "id" uuid_text NOT NULL PRIMARY KEY,
  "requested_by" varchar NOT NULL,
  "state" varchar(16) NOT NULL CONSTRAINT "ck_mfa_resets_state"
    CHECK ("state" IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
  "scope" varchar(16) NOT NULL,
  "method_kinds" varchar NOT NULL,
  "reason" varchar(500) NOT NULL,
  "etag" varchar NOT NULL,
  "request_id" varchar NULL,
  "created_at" timestamp_with_timezone_text NOT NULL,
  "expires_at" timestamp_with_timezone_text NOT NULL,
  "confirmed_at" timestamp_with_timezone_text NULL,
  "cancelled_at" timestamp_with_timezone_text NULL,
  "summary" text NOT NULL
);
CREATE TABLE "mfa_reset_customers_v2" (
  "reset_id" uuid_text NOT NULL,
  "customer_id" uuid_text NOT NULL,
  PRIMARY KEY ("reset_id", "customer_id"),
  FOREIGN KEY ("reset_id") REFERENCES "mfa_resets_v2" ("id") ON DELETE CASCADE,
  FOREIGN KEY ("customer_id") REFERENCES "customers" ("id")
);
CREATE TABLE "mfa_reset_items_v2" (
  "reset_id" uuid_text NOT NULL,
  "customer_id" uuid_text NOT NULL,
  "user_id" uuid_text NOT NULL,
  "position" integer NOT NULL,
  "display_name" varchar NOT NULL,
  "is_admin" boolean NOT NULL,
  "skip_reason" varchar(32) NULL,
  "planned_methods" text NOT NULL,
  PRIMARY KEY ("reset_id", "user_id"),
  CONSTRAINT "uq_mfa_reset_items_reset_position" UNIQUE ("reset_id", "position"),
  FOREIGN KEY ("reset_id") REFERENCES "mfa_resets_v2" ("id") ON DELETE CASCADE,
  FOREIGN KEY ("reset_id", "customer_id")
    REFERENCES "mfa_reset_customers_v2" ("reset_id", "customer_id") ON DELETE CASCADE,
  FOREIGN KEY ("customer_id", "user_id") REFERENCES "users" ("customer_id", "id")
);
CREATE TABLE "audit_events_v2" (
  "id" uuid_text NOT NULL PRIMARY KEY,
  "customer_id" uuid_text NOT NULL,
  "occurred_at" timestamp_with_timezone_text NOT NULL,
  "actor" varchar NOT NULL,
  "action" varchar(48) NOT NULL,
  "user_id" uuid_text NULL,
  "method_id" uuid_text NULL,
  "reset_id" uuid_text NULL,
  "reason" varchar(500) NULL,
  "request_id" varchar NULL,
  "details" text NOT NULL,
  FOREIGN KEY ("customer_id") REFERENCES "customers" ("id")
)
"#;

const SQLITE_DOWN_COPY: &str = r#"
UPDATE mfa_resets SET state = 'CANCELLED', cancelled_at = created_at
  WHERE state = 'PENDING' AND id IN (SELECT i.reset_id FROM mfa_reset_items i
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.customer_id = i.customer_id AND u.id = i.user_id));
INSERT INTO mfa_resets_v2 (id, requested_by, state, scope, method_kinds, reason, etag,
    request_id, created_at, expires_at, confirmed_at, cancelled_at, summary)
  SELECT id, requested_by, state, scope, method_kinds, reason, etag,
    request_id, created_at, expires_at, confirmed_at, cancelled_at, summary
  FROM mfa_resets WHERE state IN ('PENDING', 'CONFIRMED', 'CANCELLED');
INSERT INTO mfa_reset_customers_v2 (reset_id, customer_id)
  SELECT reset_id, customer_id FROM mfa_reset_customers
  WHERE reset_id IN (SELECT id FROM mfa_resets_v2);
INSERT INTO mfa_reset_items_v2 (reset_id, customer_id, user_id, position, display_name,
    is_admin, skip_reason, planned_methods)
  SELECT i.reset_id, i.customer_id, i.user_id, i.position, i.display_name,
    i.is_admin, i.skip_reason, i.planned_methods
  FROM mfa_reset_items i
  WHERE i.reset_id IN (SELECT id FROM mfa_resets_v2)
    AND EXISTS (SELECT 1 FROM users u WHERE u.customer_id = i.customer_id AND u.id = i.user_id);
INSERT INTO audit_events_v2 (id, customer_id, occurred_at, actor, action, user_id,
    method_id, reset_id, reason, request_id, details)
  SELECT id, customer_id, occurred_at, actor, action, user_id,
    method_id, reset_id, reason, request_id, details
  FROM audit_events WHERE customer_id IS NOT NULL
"#;

/// Events written before this migration: the user's external subject (as it is now, the best
/// the database still knows) and, for MFA_RESET events, the state the reset left (their
/// `details` said whether registration was required; the reset time is the event's). Other
/// events keep no MFA state (NULL: not recorded).
const BACKFILL_AUDIT: &str = "
UPDATE audit_events SET external_subject =
  (SELECT u.external_subject FROM users u
    WHERE u.customer_id = audit_events.customer_id AND u.id = audit_events.user_id)
  WHERE user_id IS NOT NULL AND external_subject IS NULL;
UPDATE audit_events SET mfa_reset_at = occurred_at,
  mfa_registration_required = (details LIKE '%\"mfa_registration_required\":true%')
  WHERE action = 'MFA_RESET' AND mfa_reset_at IS NULL
";

/// `(name, table, columns)` of the indexes the SQLite swap recreates (they went with the old
/// tables).
type IndexDef = (&'static str, &'static str, &'static str);

const RESET_INDEXES_V1: [IndexDef; 2] = [
    (
        "idx_mfa_resets_requested_by",
        "mfa_resets",
        "requested_by, id",
    ),
    (
        "idx_mfa_reset_customers_customer",
        "mfa_reset_customers",
        "customer_id",
    ),
];

/// v2 adds the index that filters a reset's items by customer in position order.
const RESET_INDEXES_V2: [IndexDef; 3] = [
    RESET_INDEXES_V1[0],
    RESET_INDEXES_V1[1],
    (
        "idx_mfa_reset_items_reset_customer",
        "mfa_reset_items",
        "reset_id, customer_id, position",
    ),
];

const AUDIT_INDEXES: [IndexDef; 4] = [
    (
        "idx_audit_events_customer",
        "audit_events",
        "customer_id, id",
    ),
    (
        "idx_audit_events_customer_user",
        "audit_events",
        "customer_id, user_id, id",
    ),
    (
        "idx_audit_events_customer_actor",
        "audit_events",
        "customer_id, actor, id",
    ),
    (
        "idx_audit_events_customer_action",
        "audit_events",
        "customer_id, action, id",
    ),
];

fn sqlite_indexes(indexes: &[IndexDef]) -> String {
    indexes
        .iter()
        .map(|(name, table, columns)| format!("CREATE INDEX \"{name}\" ON \"{table}\" ({columns})"))
        .collect::<Vec<_>>()
        .join(";\n")
}

async fn create_idempotency_keys(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(IdempotencyKeys::Table)
                .col(ColumnDef::new(IdempotencyKeys::Subject).string().not_null())
                .col(
                    ColumnDef::new(IdempotencyKeys::Rpc)
                        .string_len(128)
                        .not_null(),
                )
                .col(ColumnDef::new(IdempotencyKeys::RequestId).uuid().not_null())
                .col(
                    ColumnDef::new(IdempotencyKeys::RequestDigest)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(IdempotencyKeys::Response).blob().null())
                .col(
                    ColumnDef::new(IdempotencyKeys::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(IdempotencyKeys::Subject)
                        .col(IdempotencyKeys::Rpc)
                        .col(IdempotencyKeys::RequestId),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("idx_idempotency_keys_created_at")
                .table(IdempotencyKeys::Table)
                .col(IdempotencyKeys::CreatedAt)
                .to_owned(),
        )
        .await?;
    if manager.get_database_backend() == DbBackend::Postgres {
        run(
            manager.get_connection(),
            "CREATE INDEX idx_mfa_reset_items_reset_customer \
             ON mfa_reset_items (reset_id, customer_id, position)",
        )
        .await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Subject,
    Rpc,
    RequestId,
    RequestDigest,
    Response,
    CreatedAt,
}
