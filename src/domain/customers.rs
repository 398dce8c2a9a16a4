//! Customers: the selector list, one customer, what a selection offers, the MFA
//! policy, and provisioning of new customers.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::{
    Caller,
    audit::{self, AuditDetails, AuditEvent},
    error::{DomainError, DomainResult},
    idempotency::{self, Answer, Idempotency},
    ids::CustomerId,
    model::{Action, Customer, MethodKind, MfaPolicy, Role},
    paging::{Page, PageRequest},
    reason::Reason,
    selection::{Grants, Selection, SelectionDescription},
    unique_violation_as,
};
use crate::store::{self, customers::UserCounts, entities::customers};

const RESOURCE: &str = "mfareset.v1.Customer";

/// Reads a stored customer; an unknown policy is a broken database, not a client error.
pub(crate) fn from_model(model: customers::Model) -> DomainResult<Customer> {
    let mfa_policy = MfaPolicy::parse(&model.mfa_policy).ok_or_else(|| {
        DomainError::Internal(anyhow::anyhow!(
            "customer {} has unknown policy {:?}",
            model.id,
            model.mfa_policy
        ))
    })?;
    let mut enabled_method_kinds = MethodKind::parse_list(&model.enabled_method_kinds);
    enabled_method_kinds.sort();
    Ok(Customer {
        id: model.id.into(),
        display_name: model.name,
        mfa_policy,
        enabled_method_kinds,
        approval_threshold: u32::try_from(model.approval_threshold).unwrap_or(0),
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

/// A customer and the roles the caller holds in it.
#[derive(Clone, Debug)]
pub struct VisibleCustomer {
    /// The customer.
    pub customer: Customer,
    /// The caller's roles there.
    pub caller_roles: Vec<Role>,
    /// How many users it has, by MFA state, when the read counts them (the selector's
    /// list and get).
    pub user_counts: Option<UserCounts>,
}

/// One page of the customers the caller holds a role in, ordered by id.
pub async fn list_visible(
    db: &impl ConnectionTrait,
    caller: &Caller,
    page: PageRequest<CustomerId>,
) -> DomainResult<Page<VisibleCustomer, CustomerId>> {
    let everywhere = store::roles::has_any_everywhere(db, &caller.subject).await?;
    let rows =
        store::customers::list_visible(db, &caller.subject, everywhere, page.after, page.size + 1)
            .await?;
    let page =
        Page::from_rows(rows, page.size, |row| CustomerId::from(row.id)).try_map(from_model)?;
    let ids: Vec<CustomerId> = page.items.iter().map(|c| c.id).collect();
    let grants = Grants::load(db, &caller.subject, &ids).await?;
    let counts = store::customers::user_counts(db, &ids).await?;
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|customer| VisibleCustomer {
                caller_roles: grants.roles_in(customer.id),
                user_counts: Some(counts.get(&customer.id).copied().unwrap_or_default()),
                customer,
            })
            .collect(),
        next: page.next,
    })
}

/// One customer the caller holds a role in. Any other id, existing or not, is
/// NOT_FOUND: a lone id reveals nothing.
pub async fn get(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: CustomerId,
) -> DomainResult<VisibleCustomer> {
    let selection = match Selection::resolve(db, &caller.subject, &[id], Action::Read).await {
        Ok(selection) => selection,
        Err(DomainError::PermissionDenied { .. }) => {
            return Err(DomainError::not_found(RESOURCE, id));
        }
        Err(other) => return Err(other),
    };
    let customer = selection.only()?.clone();
    let counts = store::customers::user_counts(db, &[id]).await?;
    Ok(VisibleCustomer {
        caller_roles: selection.grants().roles_in(id),
        user_counts: Some(counts.get(&id).copied().unwrap_or_default()),
        customer,
    })
}

/// The selection's customers (with the caller's roles) and what it offers in common.
pub async fn describe_selection(
    db: &impl ConnectionTrait,
    caller: &Caller,
    ids: &[CustomerId],
) -> DomainResult<(Vec<VisibleCustomer>, SelectionDescription)> {
    let selection = Selection::resolve(db, &caller.subject, ids, Action::Read).await?;
    let customers = selection
        .customers()
        .iter()
        .map(|c| VisibleCustomer {
            customer: c.clone(),
            caller_roles: selection.grants().roles_in(c.id),
            user_counts: None,
        })
        .collect();
    Ok((customers, selection.describe()))
}

pub use crate::store::customers::Setting;

/// The rules of a setting change.
impl Setting {
    fn action(self) -> Action {
        match self {
            Setting::MfaPolicy(_) => Action::SetMfaPolicy,
            Setting::ApprovalThreshold(_) => Action::SetApprovalThreshold,
        }
    }

    /// The change to `customer`, as its audit details, or `None` when it already has this
    /// value.
    fn change_of(self, customer: &Customer) -> Option<AuditDetails> {
        match self {
            Setting::MfaPolicy(policy) => {
                (customer.mfa_policy != policy).then_some(AuditDetails::MfaPolicySet {
                    previous: customer.mfa_policy,
                    policy,
                })
            }
            Setting::ApprovalThreshold(threshold) => (customer.approval_threshold != threshold)
                .then_some(AuditDetails::ApprovalThresholdSet {
                    previous: customer.approval_threshold,
                    threshold,
                }),
        }
    }

    fn apply_to(self, customer: &mut Customer) {
        match self {
            Setting::MfaPolicy(policy) => customer.mfa_policy = policy,
            Setting::ApprovalThreshold(threshold) => customer.approval_threshold = threshold,
        }
    }
}

/// Changes a customer's MFA policy or approval threshold, with its audit event in the same
/// transaction. Setting the value it already has changes nothing and records nothing. A new
/// threshold changes no reset already summarized: each keeps the decision its summary stored.
pub async fn set(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, VisibleCustomer>,
    id: CustomerId,
    setting: Setting,
    reason: &str,
) -> DomainResult<Answer<VisibleCustomer>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        let selection = Selection::resolve(txn, &caller.subject, &[id], setting.action()).await?;
        // Locked, then read again: concurrent changes take turns, and each audits the value
        // it really replaced.
        store::customers::lock_for_change(txn, id).await?;
        let mut customer = match store::customers::find(txn, id).await? {
            Some(model) => from_model(model)?,
            None => return Err(DomainError::not_found(RESOURCE, id)),
        };
        if let Some(details) = setting.change_of(&customer) {
            let now = super::now();
            store::customers::set(txn, id, setting, now).await?;
            let event = AuditEvent::new(caller, id, details, now).reason(reason);
            audit::record(txn, vec![event]).await?;
            setting.apply_to(&mut customer);
            customer.updated_at = now;
        }
        Ok(VisibleCustomer {
            caller_roles: selection.grants().roles_in(id),
            user_counts: None,
            customer,
        })
    })
    .await
}

/// What a new customer is made of; values already validated at the edge.
#[derive(Clone, Debug)]
pub struct NewCustomer {
    /// Unique display name.
    pub display_name: String,
    /// MFA policy.
    pub mfa_policy: MfaPolicy,
    /// Enabled kinds (at least one).
    pub enabled_method_kinds: Vec<MethodKind>,
}

/// Creates a customer. Needs PROVISIONER on `*`: a new customer is outside every
/// per-customer assignment by definition.
pub async fn create(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, VisibleCustomer>,
    new: NewCustomer,
) -> DomainResult<Answer<VisibleCustomer>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        let grants = Grants::load(txn, &caller.subject, &[]).await?;
        if !grants.holds_everywhere(Role::Provisioner) {
            return Err(DomainError::PermissionDenied {
                reason: Reason::RoleTooWeak,
                message: "creating customers needs PROVISIONER on every customer (*)".into(),
                customer_ids: Vec::new(),
                action: Some(Action::Provision),
            });
        }
        let now = super::now();
        let id = CustomerId::generate();
        let mut kinds = new.enabled_method_kinds;
        kinds.sort();
        kinds.dedup();
        let model = customers::Model {
            id: id.uuid(),
            name: new.display_name,
            mfa_policy: new.mfa_policy.as_str().to_string(),
            enabled_method_kinds: MethodKind::format_list(&kinds),
            created_at: now,
            updated_at: now,
            approval_threshold: 0,
        };
        let model = store::customers::insert(txn, model)
            .await
            .map_err(unique_violation_as(RESOURCE, "customer.display_name"))?;
        let customer = from_model(model)?;
        let details = AuditDetails::CustomerCreated {
            display_name: customer.display_name.clone(),
            mfa_policy: customer.mfa_policy,
            enabled_method_kinds: customer.enabled_method_kinds.clone(),
        };
        audit::record(txn, vec![AuditEvent::new(caller, id, details, now)]).await?;
        Ok(VisibleCustomer {
            caller_roles: grants.roles_in(customer.id),
            user_counts: None,
            customer,
        })
    })
    .await
}
