//! `mfa_reset_customers`: the selection of a reset, one row per customer it covers. Lets a
//! reset be found (and its items checked) per customer; rows go with their reset. Every item of
//! a reset must name one of these customers (enforced by a foreign key on `mfa_reset_items`).

use sea_orm::entity::prelude::*;

/// One (reset, customer) pair.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mfa_reset_customers")]
pub struct Model {
    /// The reset.
    #[sea_orm(primary_key, auto_increment = false)]
    pub reset_id: Uuid,
    /// A customer the reset covers.
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: Uuid,
}

/// The row joins a reset to a customer.
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
    /// The customer.
    #[sea_orm(
        belongs_to = "super::customers::Entity",
        from = "Column::CustomerId",
        to = "super::customers::Column::Id"
    )]
    Customer,
}

impl Related<super::mfa_resets::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MfaReset.def()
    }
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
