//! The selection rules of DESIGN.md: a request acts inside the customers it names,
//! only where the principal holds a role, and only with what applies to all of them.

use std::collections::HashMap;

use sea_orm::ConnectionTrait;

use super::{
    error::{Details, DomainError, DomainResult, Violation},
    ids::CustomerId,
    model::{Action, Customer, MethodKind, MfaPolicy, ResetScope, Role},
    reason::Reason,
};
use crate::store;

/// Most customers one request may select.
pub const MAX_SELECTED_CUSTOMERS: usize = 500;

/// The roles a principal holds: on every customer (`*`) and per customer.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    everywhere: Vec<Role>,
    per_customer: HashMap<CustomerId, Vec<Role>>,
}

impl Grants {
    /// Loads the principal's assignments on `customer_ids` and on `*`. Read on every
    /// call, so that a revoked role takes effect at once.
    pub async fn load(
        db: &impl ConnectionTrait,
        subject: &str,
        customer_ids: &[CustomerId],
    ) -> DomainResult<Grants> {
        let mut grants = Grants::default();
        for assignment in store::roles::assignments_for(db, subject, customer_ids).await? {
            let Some(role) = Role::parse(&assignment.role) else {
                tracing::warn!(role = %assignment.role, "ignoring unknown role in role_assignments");
                continue;
            };
            match assignment.customer_id {
                None => grants.everywhere.push(role),
                Some(customer) => (grants.per_customer)
                    .entry(customer.into())
                    .or_default()
                    .push(role),
            }
        }
        Ok(grants)
    }

    /// Whether the principal holds a role on every customer.
    pub fn has_any_everywhere(&self) -> bool {
        !self.everywhere.is_empty()
    }

    /// Whether the principal holds `role` on every customer (`*`).
    pub fn holds_everywhere(&self, role: Role) -> bool {
        self.everywhere.contains(&role)
    }

    /// The roles held in one customer, directly or through `*`, sorted and distinct.
    pub fn roles_in(&self, customer: CustomerId) -> Vec<Role> {
        let mut roles = self.everywhere.clone();
        if let Some(direct) = self.per_customer.get(&customer) {
            roles.extend(direct);
        }
        roles.sort();
        roles.dedup();
        roles
    }

    /// Whether any role held in `customer` allows `action`.
    pub fn allows(&self, customer: CustomerId, action: Action) -> bool {
        self.roles_in(customer)
            .iter()
            .any(|role| role.allows(action))
    }
}

/// The customers a request selected, each checked to exist and to be one where the
/// principal holds a role, in the order requested.
#[derive(Clone, Debug)]
pub struct Selection {
    customers: Vec<Customer>,
    grants: Grants,
}

impl Selection {
    /// Resolves `customer_ids` for `subject` and requires `action` in every one of them.
    ///
    /// Rule 1 comes first: a customer without any role is PERMISSION_DENIED naming only
    /// ids the request contained, whether or not the customer exists, so that a caller
    /// cannot probe for customers. Then a customer the caller could see but that does
    /// not exist is NOT_FOUND, and a role too weak for `action` is PERMISSION_DENIED.
    pub async fn resolve(
        db: &impl ConnectionTrait,
        subject: &str,
        customer_ids: &[CustomerId],
        action: Action,
    ) -> DomainResult<Selection> {
        let grants = Grants::load(db, subject, customer_ids).await?;
        let without_role: Vec<CustomerId> = customer_ids
            .iter()
            .copied()
            .filter(|id| grants.roles_in(*id).is_empty())
            .collect();
        if !without_role.is_empty() {
            return Err(DomainError::PermissionDenied {
                reason: Reason::NoRole,
                message: format!("no role in customer(s) {}", join(&without_role)),
                customer_ids: without_role,
                action: None,
            });
        }
        let mut found: HashMap<CustomerId, Customer> =
            store::customers::find_many(db, customer_ids)
                .await?
                .into_iter()
                .map(|model| {
                    let customer = super::customers::from_model(model)?;
                    Ok((customer.id, customer))
                })
                .collect::<DomainResult<_>>()?;
        let mut customers = Vec::with_capacity(customer_ids.len());
        for id in customer_ids {
            match found.remove(id) {
                Some(customer) => customers.push(customer),
                None => return Err(DomainError::not_found("mfareset.v1.Customer", id)),
            }
        }
        let selection = Selection { customers, grants };
        selection.require(action)?;
        Ok(selection)
    }

    /// The one customer of a selection of one (what single-customer calls resolve);
    /// INTERNAL, never a panic, if it is not that.
    pub fn only(&self) -> DomainResult<&Customer> {
        match self.customers.as_slice() {
            [customer] => Ok(customer),
            _ => Err(DomainError::Internal(anyhow::anyhow!(
                "a selection of {} customers where one was resolved",
                self.customers.len()
            ))),
        }
    }

    /// The selected customers, in request order.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    /// The selected customer ids, in request order.
    pub fn ids(&self) -> Vec<CustomerId> {
        self.customers.iter().map(|c| c.id).collect()
    }

    /// The selected customer with this id, if selected.
    pub fn get(&self, id: CustomerId) -> Option<&Customer> {
        self.customers.iter().find(|c| c.id == id)
    }

    /// The principal's grants.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// PERMISSION_DENIED (ROLE_TOO_WEAK) naming the customers where no role allows
    /// `action`.
    pub fn require(&self, action: Action) -> DomainResult<()> {
        let lacking: Vec<CustomerId> = self
            .customers
            .iter()
            .map(|c| c.id)
            .filter(|id| !self.grants.allows(*id, action))
            .collect();
        if lacking.is_empty() {
            return Ok(());
        }
        Err(DomainError::PermissionDenied {
            reason: Reason::RoleTooWeak,
            message: format!(
                "your role does not allow {} in customer(s) {}",
                action.as_str(),
                join(&lacking)
            ),
            customer_ids: lacking,
            action: Some(action),
        })
    }

    /// What applies in every selected customer, and what does not (with where).
    pub fn describe(&self) -> SelectionDescription {
        let mut description = SelectionDescription::default();
        for &action in Action::ALL {
            let lacking = self.lacking(|c| self.grants.allows(c.id, action));
            description.push(Offer::Action(action), lacking);
        }
        for &scope in ResetScope::ALL {
            let lacking = self.lacking(|c| scope_applies(scope, c));
            description.push(Offer::ResetScope(scope), lacking);
        }
        for &kind in MethodKind::ALL {
            let lacking = self.lacking(|c| c.enabled_method_kinds.contains(&kind));
            description.push(Offer::MethodKind(kind), lacking);
        }
        description
    }

    /// FAILED_PRECONDITION (OPTION_NOT_COMMON) naming the customers where a requested
    /// reset option does not apply: the same answer `describe` gives as gaps, with one
    /// violation per option and customer.
    pub fn require_reset_options(
        &self,
        scope: ResetScope,
        kinds: &[MethodKind],
    ) -> DomainResult<()> {
        // (the option's contract name, a phrase, where it does not apply)
        let mut not_common: Vec<(String, String, Vec<CustomerId>)> = Vec::new();
        let lacking = self.lacking(|c| scope_applies(scope, c));
        if !lacking.is_empty() {
            not_common.push((
                format!("RESET_SCOPE_{}", scope.as_str()),
                format!("scope {}", scope.as_str()),
                lacking,
            ));
        }
        for &kind in kinds {
            let lacking = self.lacking(|c| c.enabled_method_kinds.contains(&kind));
            if !lacking.is_empty() {
                not_common.push((
                    format!("METHOD_KIND_{}", kind.as_str()),
                    format!("method kind {}", kind.as_str()),
                    lacking,
                ));
            }
        }
        if not_common.is_empty() {
            return Ok(());
        }
        let mut customer_ids: Vec<CustomerId> = not_common
            .iter()
            .flat_map(|(_, _, ids)| ids.iter().copied())
            .collect();
        customer_ids.sort();
        customer_ids.dedup();
        let message = not_common
            .iter()
            .map(|(_, option, ids)| format!("{option} does not apply in customer(s) {}", join(ids)))
            .collect::<Vec<_>>()
            .join("; ");
        let violations = not_common
            .iter()
            .flat_map(|(kind, option, ids)| {
                ids.iter().map(move |id| {
                    Violation::new(
                        kind.clone(),
                        format!("customers/{id}"),
                        format!("{option} does not apply in this customer"),
                    )
                })
            })
            .collect();
        Err(DomainError::FailedPrecondition {
            reason: Reason::OptionNotCommon,
            message,
            details: Details {
                violations,
                metadata: Vec::new(),
            }
            .with("customer_ids", list_ids(&customer_ids))
            .with("customer_count", customer_ids.len()),
        })
    }

    fn lacking(&self, applies: impl Fn(&Customer) -> bool) -> Vec<CustomerId> {
        self.customers
            .iter()
            .filter(|c| !applies(c))
            .map(|c| c.id)
            .collect()
    }
}

/// Whether a reset scope applies in a customer: org-level MFA exists only where MFA is
/// enforced.
fn scope_applies(scope: ResetScope, customer: &Customer) -> bool {
    match scope {
        ResetScope::All => true,
        ResetScope::OrgLevel => customer.mfa_policy == MfaPolicy::Enforced,
    }
}

/// An action or reset option a selection may or may not offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// An action of the principal's roles.
    Action(Action),
    /// A reset scope.
    ResetScope(ResetScope),
    /// A method kind usable in reset options.
    MethodKind(MethodKind),
}

/// The result of [`Selection::describe`].
#[derive(Clone, Debug, Default)]
pub struct SelectionDescription {
    /// Offered in every selected customer.
    pub common: Vec<Offer>,
    /// Not offered everywhere, with the customers lacking it.
    pub gaps: Vec<(Offer, Vec<CustomerId>)>,
}

impl SelectionDescription {
    fn push(&mut self, offer: Offer, lacking: Vec<CustomerId>) {
        if lacking.is_empty() {
            self.common.push(offer);
        } else {
            self.gaps.push((offer, lacking));
        }
    }
}

/// Ids listed in a message before "and N more": a message travels in HTTP/2 trailers,
/// which clients cap (8 to 16 KiB), and a selection may hold 500 ids.
const MAX_LISTED_IDS: usize = 10;

/// Ids in a metadata value: comma-separated, at most [`MAX_METADATA_IDS`] (a `*_count` key
/// beside it tells the whole number).
pub const MAX_METADATA_IDS: usize = 50;

/// The comma-separated metadata form of `ids`, capped at [`MAX_METADATA_IDS`].
pub fn list_ids(ids: &[CustomerId]) -> String {
    ids.iter()
        .take(MAX_METADATA_IDS)
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn join(ids: &[CustomerId]) -> String {
    let mut text = ids
        .iter()
        .take(MAX_LISTED_IDS)
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > MAX_LISTED_IDS {
        text.push_str(&format!(" and {} more", ids.len() - MAX_LISTED_IDS));
    }
    text
}
