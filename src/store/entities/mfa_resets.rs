//! `mfa_resets`: a stored summary (plan) of an MFA reset and its life cycle. Only
//! `requested_by` may confirm or cancel it, before `expires_at`, with its `etag` (a digest of the
//! planned state). `state` is `PENDING`, `AWAITING_APPROVAL`, `CONFIRMED`, `CANCELLED` or
//! `REJECTED` (checked by the database; EXPIRED is derived from `expires_at`). The customers it covers and its per-user items live in
//! `mfa_reset_customers` and `mfa_reset_items`, and go with it.

use sea_orm::entity::prelude::*;

/// One reset summary.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mfa_resets")]
pub struct Model {
    /// The reset id (UUID v7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The subject of the principal who asked for the summary.
    pub requested_by: String,
    /// The stored life-cycle state (see the module documentation).
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub state: String,
    /// The reset scope option, e.g. `ALL` or `ORG_LEVEL`.
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub scope: String,
    /// Comma-separated method kinds to reset; empty means every kind.
    pub method_kinds: String,
    /// The caller's reason, copied into every audit event of the reset.
    #[sea_orm(column_type = "String(StringLen::N(500))")]
    pub reason: String,
    /// Digest of the planned state; the confirm must present it.
    pub etag: String,
    /// The request id of the Summarize call, if any.
    pub request_id: Option<String>,
    /// When the summary was made.
    pub created_at: DateTimeUtc,
    /// After this instant the summary can no longer be confirmed.
    pub expires_at: DateTimeUtc,
    /// When the reset was applied.
    pub confirmed_at: Option<DateTimeUtc>,
    /// When the reset was cancelled.
    pub cancelled_at: Option<DateTimeUtc>,
    /// JSON: the totals and per-customer summary shown when the reset was summarized.
    #[sea_orm(column_type = "Text")]
    pub summary: String,
    /// Whether applying the reset needs a second administrator's approval.
    pub approval_required: bool,
    /// JSON: the user filter the reset was summarized by, if it was.
    #[sea_orm(column_type = "Text", nullable)]
    pub target_filter: Option<String>,
    /// Who confirmed the reset (its requester).
    pub confirmed_by: Option<String>,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// When it was approved and applied.
    pub approved_at: Option<DateTimeUtc>,
    /// Who cancelled it (its requester).
    pub cancelled_by: Option<String>,
    /// Who rejected it.
    pub rejected_by: Option<String>,
    /// When it was rejected.
    pub rejected_at: Option<DateTimeUtc>,
    /// Why it was rejected.
    #[sea_orm(column_type = "String(StringLen::N(500))", nullable)]
    pub rejection_reason: Option<String>,
}

/// A reset has its customers and its items.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The customers the reset covers.
    #[sea_orm(has_many = "super::mfa_reset_customers::Entity")]
    MfaResetCustomers,
    /// The per-user planned items.
    #[sea_orm(has_many = "super::mfa_reset_items::Entity")]
    MfaResetItems,
}

impl Related<super::mfa_reset_customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MfaResetCustomers.def()
    }
}

impl Related<super::mfa_reset_items::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MfaResetItems.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
