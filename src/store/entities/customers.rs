//! `customers`: the tenants. One row per customer with its MFA settings: the `mfa_policy`
//! (`ENFORCED` or `OPTIONAL`, checked by the database) and the method kinds it has enabled.
//! Names are unique across the service. `approval_threshold` (0: never) is the size from which
//! a reset needs four-eyes approval.

use sea_orm::entity::prelude::*;

/// One customer (tenant) and its MFA settings.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    /// The customer id (UUID v7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Display name; unique.
    #[sea_orm(unique)]
    pub name: String,
    /// `ENFORCED` or `OPTIONAL`.
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub mfa_policy: String,
    /// Comma-separated enabled method kinds, e.g. `PHONE,EMAIL,HARDWARE_OATH`.
    pub enabled_method_kinds: String,
    /// When the customer was created.
    pub created_at: DateTimeUtc,
    /// When the customer's settings last changed.
    pub updated_at: DateTimeUtc,
    /// Resets of at least this many of the customer's users need a second administrator's
    /// approval; 0 means never.
    pub approval_threshold: i32,
}

/// A customer owns its users and the role assignments that name it.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The customer's users.
    #[sea_orm(has_many = "super::users::Entity")]
    Users,
    /// Role assignments naming this customer (not the `*` ones).
    #[sea_orm(has_many = "super::role_assignments::Entity")]
    RoleAssignments,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Users.def()
    }
}

impl Related<super::role_assignments::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RoleAssignments.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
