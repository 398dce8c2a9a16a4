//! `authentication_methods`: one enrolled second factor of a user. It refers to its user by
//! `(customer_id, user_id)`, so a method can never belong to a user of another customer, and it
//! goes when its user goes. `label` is the raw display label (masking happens above the store);
//! `secret_ref` is an opaque reference to wherever the secret lives: this table never holds
//! secret material. `scope` is `USER` or `ORG`, `state` is `ACTIVE` or `DEACTIVATED` (checked
//! by the database).

use sea_orm::entity::prelude::*;

/// One enrolled authentication method.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "authentication_methods")]
pub struct Model {
    /// The method id (UUID v7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The customer of the method's user.
    pub customer_id: Uuid,
    /// The user who enrolled the method.
    pub user_id: Uuid,
    /// The method kind, e.g. `PHONE`, `HARDWARE_OATH`, `FIDO2`.
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub kind: String,
    /// `USER` or `ORG`.
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub scope: String,
    /// The raw display label (unmasked).
    pub label: String,
    /// `ACTIVE` or `DEACTIVATED`.
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub state: String,
    /// Opaque reference to where the secret is kept; never the secret itself.
    pub secret_ref: Option<String>,
    /// When the method was enrolled.
    pub created_at: DateTimeUtc,
    /// When the method last changed.
    pub updated_at: DateTimeUtc,
    /// When the method was last used to sign in, if known.
    pub last_used_at: Option<DateTimeUtc>,
}

/// A method belongs to one user of one customer.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The method's user, matched on both `customer_id` and `user_id`.
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "(Column::CustomerId, Column::UserId)",
        to = "(super::users::Column::CustomerId, super::users::Column::Id)",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
