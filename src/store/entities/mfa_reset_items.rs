//! `mfa_reset_items`: the per-user part of a reset summary, one row per user, numbered by
//! `position` (unique within the reset) so that the summary pages by keyset. A user appears at
//! most once per reset; the item's customer is one of the reset's customers. The item is a
//! record of the plan and outlives its user (no foreign key to `users`): a user deleted while a
//! reset names them makes the reset stale. `planned_methods` is a JSON array written by the domain (each
//! method and its disposition); `skip_reason` is set when the user is skipped (`NOT_ENROLLED`,
//! `PROTECTED_ADMIN`, `SELF`).

use sea_orm::entity::prelude::*;

/// One user's planned reset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mfa_reset_items")]
pub struct Model {
    /// The reset.
    #[sea_orm(primary_key, auto_increment = false)]
    pub reset_id: Uuid,
    /// The user's customer.
    pub customer_id: Uuid,
    /// The user.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// Order within the reset, from 0; unique per reset.
    pub position: i32,
    /// The user's display name when the summary was made.
    pub display_name: String,
    /// Whether the user was an admin when the summary was made (a change makes the plan stale).
    pub is_admin: bool,
    /// Why the user is skipped, or `None` when the user is reset.
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub skip_reason: Option<String>,
    /// JSON array of the user's methods and their dispositions.
    #[sea_orm(column_type = "Text")]
    pub planned_methods: String,
    /// The user's external subject when planned.
    pub external_subject: Option<String>,
}

/// An item belongs to a reset and names a user of one of its customers.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The reset.
    #[sea_orm(
        belongs_to = "super::mfa_resets::Entity",
        from = "Column::ResetId",
        to = "super::mfa_resets::Column::Id",
        on_delete = "Cascade"
    )]
    MfaReset,
    /// The user, matched on both `customer_id` and `user_id`.
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "(Column::CustomerId, Column::UserId)",
        to = "(super::users::Column::CustomerId, super::users::Column::Id)"
    )]
    User,
}

impl Related<super::mfa_resets::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MfaReset.def()
    }
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
