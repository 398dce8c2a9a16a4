//! The typed ids the rules work with. They are defined with the rows they name, in
//! [`crate::store::ids`], so that the store's functions take them too: a user id can never be
//! passed where a customer id is meant, at any layer.

pub use crate::store::ids::*;
