//! `audit_events`: the audit log, one row per thing that happened in a customer. Ids are UUID
//! v7, so newest-first paging is `ORDER BY id DESC` within a customer. The user, method and reset
//! an event names carry no foreign key: the record outlives them. A reset's events are written
//! in the transaction that applies it. `details` is a JSON object whose shape the action
//! decides. `customer_id` is NULL for an event about a role on every customer (`*`).

use sea_orm::entity::prelude::*;

/// One audit event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// The event id (UUID v7: time-ordered).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The customer the event happened in; `None` for a role on every customer (`*`).
    pub customer_id: Option<Uuid>,
    /// When it happened.
    pub occurred_at: DateTimeUtc,
    /// The subject of the principal who did it.
    pub actor: String,
    /// What happened, e.g. `MFA_RESET`, `METHOD_DELETED`.
    #[sea_orm(column_type = "String(StringLen::N(48))")]
    pub action: String,
    /// The user it concerns, if any.
    pub user_id: Option<Uuid>,
    /// The method it concerns, if any.
    pub method_id: Option<Uuid>,
    /// The reset it is part of, if any.
    pub reset_id: Option<Uuid>,
    /// The caller's reason, if one was given.
    #[sea_orm(column_type = "String(StringLen::N(500))")]
    pub reason: Option<String>,
    /// The `x-request-id` of the call that caused it, if any (log correlation).
    pub request_id: Option<String>,
    /// JSON object with the event's particulars.
    #[sea_orm(column_type = "Text")]
    pub details: String,
    /// The user's external subject, for an event about a user.
    pub external_subject: Option<String>,
    /// For an event about a user: whether they must register MFA after the change.
    pub mfa_registration_required: Option<bool>,
    /// For an event about a user: their last MFA reset after the change.
    pub mfa_reset_at: Option<DateTimeUtc>,
    /// The commit-order stamp of the transaction that wrote it (the `audit_clock` value it
    /// took); 0 for events written before the change stream. Set by the insert, not by the
    /// caller.
    pub commit_seq: i64,
}

/// An event belongs to its customer.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The customer.
    #[sea_orm(
        belongs_to = "super::customers::Entity",
        from = "Column::CustomerId",
        to = "super::customers::Column::Id"
    )]
    Customer,
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
