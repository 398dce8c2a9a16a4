//! The hand-written SQL the service is measured against: the "raw read" (what a summarize
//! reads) and the "raw confirm" (what a confirm reads, locks and writes), one transaction each,
//! every list of ids in one statement: `= ANY($n::uuid[])` and `unnest(...)` on PostgreSQL,
//! one JSON parameter expanded by `json_each` on SQLite (UUIDs are 16-byte BLOBs there, sent
//! as hex and `unhex`ed; no bound-parameter limit applies). `--print-sql` prints them.

/// One statement of a raw transaction, by name.
pub struct Named {
    pub name: &'static str,
    pub sql: &'static str,
    /// The parameter types (PostgreSQL), for `PREPARE` in the explain pass.
    pub params: &'static str,
}

/// The first statement of every raw PostgreSQL transaction: plans made for the statement
/// and not for the values of its arrays (planning `= ANY` of a 10,000-element array value
/// by value costs ~25 ms a statement, and its estimates pick sequential scans where a few
/// thousand index probes are cheaper); sorts of a confirm's 35,000 methods in memory; no
/// JIT compilation (~50 ms for a statement that crosses its cost threshold).
pub const PG_TUNE: &str = "SET LOCAL plan_cache_mode = force_generic_plan; \
SET LOCAL work_mem = '64MB'; SET LOCAL jit = off";

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// The caller's roles on the selection and on `*`.
pub const PG_READ_ROLES: &str = "\
SELECT customer_id, role FROM role_assignments \
WHERE subject = $1 AND (customer_id IS NULL OR customer_id = ANY($2::uuid[]))";

/// The selected customers.
pub const PG_READ_CUSTOMERS: &str = "\
SELECT id, name, mfa_policy, enabled_method_kinds, approval_threshold FROM customers \
WHERE id = ANY($1::uuid[]) ORDER BY id";

/// The named users, within the selection.
pub const PG_READ_USERS: &str = "\
SELECT id, customer_id, external_subject, display_name, is_admin, mfa_registration_required \
FROM users WHERE id = ANY($1::uuid[]) AND customer_id = ANY($2::uuid[]) ORDER BY id";

/// Their methods.
pub const PG_READ_METHODS: &str = "\
SELECT id, customer_id, user_id, kind, scope, state, label FROM authentication_methods \
WHERE user_id = ANY($1::uuid[]) AND customer_id = ANY($2::uuid[]) ORDER BY user_id, id";

/// The reset, locked (concurrent confirms of it queue here), and whether it is unexpired by
/// the database's clock.
pub const PG_LOCK_RESET: &str = "\
SELECT state, etag, requested_by, scope, method_kinds, reason, \
expires_at > statement_timestamp() AS open FROM mfa_resets WHERE id = $1 FOR UPDATE";

/// The caller's roles, locked for share (a revoke waits for the confirm).
pub const PG_LOCK_ROLES: &str = "\
SELECT id, customer_id, role FROM role_assignments WHERE subject = $1 ORDER BY id FOR SHARE";

/// The reset's customers, locked for share (no policy change until the confirm commits).
pub const PG_LOCK_CUSTOMERS: &str = "\
SELECT c.id, c.mfa_policy, c.enabled_method_kinds FROM customers c \
JOIN mfa_reset_customers rc ON rc.customer_id = c.id \
WHERE rc.reset_id = $1 ORDER BY c.id FOR SHARE OF c";

/// The stored plan: one item per user with its planned methods (JSON).
pub const PG_READ_ITEMS: &str = "\
SELECT user_id, customer_id, is_admin, skip_reason, planned_methods FROM mfa_reset_items \
WHERE reset_id = $1 ORDER BY position";

/// The plan's users, locked in id order.
pub const PG_LOCK_USERS: &str = "\
SELECT id, customer_id, external_subject, is_admin, mfa_registration_required FROM users \
WHERE id = ANY($1::uuid[]) AND customer_id = ANY($2::uuid[]) ORDER BY id FOR UPDATE";

/// Their methods, locked in id order.
pub const PG_LOCK_METHODS: &str = "\
SELECT id, customer_id, user_id, kind, state FROM authentication_methods \
WHERE user_id = ANY($1::uuid[]) AND customer_id = ANY($2::uuid[]) ORDER BY id FOR UPDATE";

/// The planned deletions.
pub const PG_DELETE_METHODS: &str = "\
DELETE FROM authentication_methods WHERE id = ANY($1::uuid[]) AND customer_id = ANY($2::uuid[])";

/// The planned deactivations (hardware tokens).
pub const PG_DEACTIVATE_METHODS: &str = "\
UPDATE authentication_methods SET state = 'DEACTIVATED', updated_at = $3 \
WHERE id = ANY($1::uuid[]) AND customer_id = ANY($2::uuid[]) AND state = 'ACTIVE'";

/// One update of every reset user: reset time, and registration required where the plan
/// says so.
pub const PG_UPDATE_USERS: &str = "\
UPDATE users AS u SET mfa_reset_at = $1, updated_at = $1, \
mfa_registration_required = u.mfa_registration_required OR r.required \
FROM unnest($2::uuid[], $3::bool[]) AS r(id, required) \
WHERE u.id = r.id AND u.customer_id = ANY($4::uuid[])";

/// One MFA_RESET audit event per reset user, from arrays.
pub const PG_INSERT_AUDIT: &str = "\
INSERT INTO audit_events (id, customer_id, occurred_at, actor, action, user_id, method_id, \
reset_id, reason, request_id, details, external_subject, mfa_registration_required, mfa_reset_at) \
SELECT e.id, e.customer_id, $1, $2, 'MFA_RESET', e.user_id, NULL, $3, $4, NULL, e.details, \
e.external_subject, e.required, $1 \
FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::text[], $9::text[], $10::bool[]) \
AS e(id, customer_id, user_id, details, external_subject, required)";

/// The state change, provided the reset is still pending and unexpired.
pub const PG_CONFIRM_RESET: &str = "\
UPDATE mfa_resets SET state = 'CONFIRMED', confirmed_by = $2, confirmed_at = $3 \
WHERE id = $1 AND state = 'PENDING' AND expires_at > statement_timestamp()";

// ---------------------------------------------------------------------------------------
// SQLite (inside BEGIN IMMEDIATE: the write lock is the only lock; no row locks exist)
// ---------------------------------------------------------------------------------------

pub const SQLITE_READ_ROLES: &str = "\
SELECT customer_id, role FROM role_assignments WHERE subject = ?1 \
AND (customer_id IS NULL OR customer_id IN (SELECT unhex(value) FROM json_each(?2)))";

pub const SQLITE_READ_CUSTOMERS: &str = "\
SELECT id, name, mfa_policy, enabled_method_kinds, approval_threshold FROM customers \
WHERE id IN (SELECT unhex(value) FROM json_each(?1)) ORDER BY id";

/// `+customer_id`: the tenancy filter stays, but the plan probes the id index (as the
/// service does).
pub const SQLITE_READ_USERS: &str = "\
SELECT id, customer_id, external_subject, display_name, is_admin, mfa_registration_required \
FROM users WHERE id IN (SELECT unhex(value) FROM json_each(?1)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?2)) ORDER BY id";

pub const SQLITE_READ_METHODS: &str = "\
SELECT id, customer_id, user_id, kind, scope, state, label FROM authentication_methods \
WHERE user_id IN (SELECT unhex(value) FROM json_each(?1)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?2)) ORDER BY user_id, id";

pub const SQLITE_LOCK_RESET: &str = "\
SELECT state, etag, requested_by, scope, method_kinds, reason, \
julianday(expires_at) > julianday('now') AS open FROM mfa_resets WHERE id = ?1";

pub const SQLITE_LOCK_ROLES: &str = "\
SELECT id, customer_id, role FROM role_assignments WHERE subject = ?1 ORDER BY id";

pub const SQLITE_LOCK_CUSTOMERS: &str = "\
SELECT c.id, c.mfa_policy, c.enabled_method_kinds FROM customers c \
JOIN mfa_reset_customers rc ON rc.customer_id = c.id WHERE rc.reset_id = ?1 ORDER BY c.id";

pub const SQLITE_READ_ITEMS: &str = "\
SELECT user_id, customer_id, is_admin, skip_reason, planned_methods FROM mfa_reset_items \
WHERE reset_id = ?1 ORDER BY position";

pub const SQLITE_LOCK_USERS: &str = "\
SELECT id, customer_id, external_subject, is_admin, mfa_registration_required FROM users \
WHERE id IN (SELECT unhex(value) FROM json_each(?1)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?2)) ORDER BY id";

/// No ORDER BY: without row locks there is no lock order to keep.
pub const SQLITE_LOCK_METHODS: &str = "\
SELECT id, customer_id, user_id, kind, state FROM authentication_methods \
WHERE user_id IN (SELECT unhex(value) FROM json_each(?1)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?2))";

pub const SQLITE_DELETE_METHODS: &str = "\
DELETE FROM authentication_methods WHERE id IN (SELECT unhex(value) FROM json_each(?1)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?2))";

pub const SQLITE_DEACTIVATE_METHODS: &str = "\
UPDATE authentication_methods SET state = 'DEACTIVATED', updated_at = ?3 \
WHERE id IN (SELECT unhex(value) FROM json_each(?1)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?2)) AND state = 'ACTIVE'";

pub const SQLITE_UPDATE_USERS: &str = "\
UPDATE users SET mfa_reset_at = ?1, updated_at = ?1, \
mfa_registration_required = mfa_registration_required \
OR id IN (SELECT unhex(value) FROM json_each(?3)) \
WHERE id IN (SELECT unhex(value) FROM json_each(?2)) \
AND +customer_id IN (SELECT unhex(value) FROM json_each(?4))";

/// `?5` is a JSON array of `[id, customer_id, user_id, details, external_subject,
/// required]` arrays.
pub const SQLITE_INSERT_AUDIT: &str = "\
INSERT INTO audit_events (id, customer_id, occurred_at, actor, action, user_id, method_id, \
reset_id, reason, request_id, details, external_subject, mfa_registration_required, mfa_reset_at) \
SELECT unhex(e.value ->> 0), unhex(e.value ->> 1), ?1, ?2, 'MFA_RESET', unhex(e.value ->> 2), \
NULL, ?3, ?4, NULL, e.value ->> 3, e.value ->> 4, e.value ->> 5, ?1 FROM json_each(?5) AS e";

pub const SQLITE_CONFIRM_RESET: &str = "\
UPDATE mfa_resets SET state = 'CONFIRMED', confirmed_by = ?2, confirmed_at = ?3 \
WHERE id = ?1 AND state = 'PENDING' AND julianday(expires_at) > julianday('now')";

/// The raw read's statements, in order.
pub fn raw_read(postgres: bool) -> [Named; 4] {
    if postgres {
        [
            Named {
                name: "roles",
                sql: PG_READ_ROLES,
                params: "text, uuid[]",
            },
            Named {
                name: "customers",
                sql: PG_READ_CUSTOMERS,
                params: "uuid[]",
            },
            Named {
                name: "users",
                sql: PG_READ_USERS,
                params: "uuid[], uuid[]",
            },
            Named {
                name: "methods",
                sql: PG_READ_METHODS,
                params: "uuid[], uuid[]",
            },
        ]
    } else {
        [
            Named {
                name: "roles",
                sql: SQLITE_READ_ROLES,
                params: "",
            },
            Named {
                name: "customers",
                sql: SQLITE_READ_CUSTOMERS,
                params: "",
            },
            Named {
                name: "users",
                sql: SQLITE_READ_USERS,
                params: "",
            },
            Named {
                name: "methods",
                sql: SQLITE_READ_METHODS,
                params: "",
            },
        ]
    }
}

/// The raw confirm's statements, in order.
pub fn raw_confirm(postgres: bool) -> [Named; 11] {
    if postgres {
        [
            Named {
                name: "lock reset",
                sql: PG_LOCK_RESET,
                params: "uuid",
            },
            Named {
                name: "lock roles",
                sql: PG_LOCK_ROLES,
                params: "text",
            },
            Named {
                name: "lock customers",
                sql: PG_LOCK_CUSTOMERS,
                params: "uuid",
            },
            Named {
                name: "read plan items",
                sql: PG_READ_ITEMS,
                params: "uuid",
            },
            Named {
                name: "lock users",
                sql: PG_LOCK_USERS,
                params: "uuid[], uuid[]",
            },
            Named {
                name: "lock methods",
                sql: PG_LOCK_METHODS,
                params: "uuid[], uuid[]",
            },
            Named {
                name: "delete methods",
                sql: PG_DELETE_METHODS,
                params: "uuid[], uuid[]",
            },
            Named {
                name: "deactivate methods",
                sql: PG_DEACTIVATE_METHODS,
                params: "uuid[], uuid[], timestamptz",
            },
            Named {
                name: "update users",
                sql: PG_UPDATE_USERS,
                params: "timestamptz, uuid[], bool[], uuid[]",
            },
            Named {
                name: "insert audit events",
                sql: PG_INSERT_AUDIT,
                params: "timestamptz, text, uuid, text, uuid[], uuid[], uuid[], text[], text[], bool[]",
            },
            Named {
                name: "confirm reset",
                sql: PG_CONFIRM_RESET,
                params: "uuid, text, timestamptz",
            },
        ]
    } else {
        [
            Named {
                name: "read reset",
                sql: SQLITE_LOCK_RESET,
                params: "",
            },
            Named {
                name: "read roles",
                sql: SQLITE_LOCK_ROLES,
                params: "",
            },
            Named {
                name: "read customers",
                sql: SQLITE_LOCK_CUSTOMERS,
                params: "",
            },
            Named {
                name: "read plan items",
                sql: SQLITE_READ_ITEMS,
                params: "",
            },
            Named {
                name: "read users",
                sql: SQLITE_LOCK_USERS,
                params: "",
            },
            Named {
                name: "read methods",
                sql: SQLITE_LOCK_METHODS,
                params: "",
            },
            Named {
                name: "delete methods",
                sql: SQLITE_DELETE_METHODS,
                params: "",
            },
            Named {
                name: "deactivate methods",
                sql: SQLITE_DEACTIVATE_METHODS,
                params: "",
            },
            Named {
                name: "update users",
                sql: SQLITE_UPDATE_USERS,
                params: "",
            },
            Named {
                name: "insert audit events",
                sql: SQLITE_INSERT_AUDIT,
                params: "",
            },
            Named {
                name: "confirm reset",
                sql: SQLITE_CONFIRM_RESET,
                params: "",
            },
        ]
    }
}
