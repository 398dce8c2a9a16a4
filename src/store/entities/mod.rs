//! sea-orm entities, one module per table, with fields named exactly as the columns.
//!
//! Ids are `Uuid` (v7, made by the application); timestamps are `DateTimeUtc`. Enumerated
//! values (policy, scope, state, kinds) are stored as their upper-case names; the domain parses
//! them into its own types, so these structs stay plain rows.

pub mod audit_events;
pub mod authentication_methods;
pub mod customers;
pub mod idempotency_keys;
pub mod mfa_reset_customers;
pub mod mfa_reset_items;
pub mod mfa_resets;
pub mod role_assignments;
pub mod users;

/// The entity types under short names, for `use crate::store::entities::prelude::*`.
pub mod prelude {
    pub use super::audit_events::Entity as AuditEvents;
    pub use super::authentication_methods::Entity as AuthenticationMethods;
    pub use super::customers::Entity as Customers;
    pub use super::idempotency_keys::Entity as IdempotencyKeys;
    pub use super::mfa_reset_customers::Entity as MfaResetCustomers;
    pub use super::mfa_reset_items::Entity as MfaResetItems;
    pub use super::mfa_resets::Entity as MfaResets;
    pub use super::role_assignments::Entity as RoleAssignments;
    pub use super::users::Entity as Users;
}
