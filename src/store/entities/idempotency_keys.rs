//! `idempotency_keys`: the first answer of a mutating call that carried an AIP-155
//! `request_id`, keyed on (principal, RPC, request id). The row is inserted at the start of
//! the call's write transaction, so that a concurrent duplicate waits on the primary key, and
//! `response` (the encoded answer) is written before that transaction commits: a row with a
//! response exists exactly when the change it answers committed. Rows older than 24 hours are
//! purged.

use sea_orm::entity::prelude::*;

/// One remembered answer.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// The principal's subject (`sub`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    /// The RPC's full name, e.g. `mfareset.v1.Users/CreateUser`.
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(128))"
    )]
    pub rpc: String,
    /// The request id the client chose.
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: Uuid,
    /// Hex SHA-256 of the request without its `request_id`: the same key with another request
    /// is refused.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub request_digest: String,
    /// The encoded response message; `None` only inside the transaction that claimed the key.
    #[sea_orm(column_type = "Blob", nullable)]
    pub response: Option<Vec<u8>>,
    /// When the key was first used.
    pub created_at: DateTimeUtc,
}

/// No relations: the key names a principal and a request, not a row.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
