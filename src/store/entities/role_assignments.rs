//! `role_assignments`: what a principal (`subject`, the token's `sub`) may do in one customer,
//! or in every customer, present and future, when `customer_id` is NULL (`*`). Kept in the
//! database so that a revoke takes effect on the next request. A subject holds a role at most
//! once per customer, and at most once as `*` (a partial unique index); deleting a customer
//! deletes the assignments that name it.

use sea_orm::entity::prelude::*;

/// One (principal, customer or `*`, role) grant.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "role_assignments")]
pub struct Model {
    /// The assignment id (UUID v7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The principal's subject (`sub`).
    pub subject: String,
    /// The customer, or `None` for `*` (every customer).
    pub customer_id: Option<Uuid>,
    /// The role name, e.g. `READER`, `AUTHENTICATION_ADMIN`.
    #[sea_orm(column_type = "String(StringLen::N(48))")]
    pub role: String,
    /// When the role was granted.
    pub created_at: DateTimeUtc,
}

/// An assignment belongs to its customer (unless it is `*`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The customer the assignment names.
    #[sea_orm(
        belongs_to = "super::customers::Entity",
        from = "Column::CustomerId",
        to = "super::customers::Column::Id",
        on_delete = "Cascade"
    )]
    Customer,
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
