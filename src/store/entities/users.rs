//! `users`: the end users of one customer. `(customer_id, id)` is unique and is what every
//! record that names a user refers to, so nothing can point at a user through the wrong
//! customer. `email` is stored lower-cased and unique per customer; `external_subject` (the
//! user's own `sub`, used to refuse resetting one's own MFA) is unique per customer when set;
//! `display_name_folded` is the name folded as search folds it (lists sort by it), and
//! `search_key` the normalised text that search matches (see `store::search`).

use sea_orm::entity::prelude::*;

/// One end user and their MFA state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// The user id (UUID v7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The customer the user belongs to.
    pub customer_id: Uuid,
    /// The user's subject in the identity provider, if known.
    pub external_subject: Option<String>,
    /// The name as given.
    pub display_name: String,
    /// `display_name` folded (`store::search::fold`), for sorting by name.
    pub display_name_folded: String,
    /// E-mail address, lower-cased.
    pub email: String,
    /// Whether the user is an admin of their customer.
    pub is_admin: bool,
    /// Whether the user must register MFA at next sign-in.
    pub mfa_registration_required: bool,
    /// When the user's MFA was last reset; sign-in distrusts remembered devices older than this.
    pub mfa_reset_at: Option<DateTimeUtc>,
    /// When the user was created.
    pub created_at: DateTimeUtc,
    /// When the user last changed.
    pub updated_at: DateTimeUtc,
    /// What search matches: `store::search::key` of the name and e-mail.
    pub search_key: String,
}

/// A user belongs to a customer and owns their authentication methods.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The user's customer.
    #[sea_orm(
        belongs_to = "super::customers::Entity",
        from = "Column::CustomerId",
        to = "super::customers::Column::Id"
    )]
    Customer,
    /// The user's enrolled methods (joined on `(customer_id, user_id)`).
    #[sea_orm(has_many = "super::authentication_methods::Entity")]
    AuthenticationMethods,
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl Related<super::authentication_methods::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AuthenticationMethods.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
