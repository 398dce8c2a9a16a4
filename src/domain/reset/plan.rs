//! Planning a reset: what happens to each method of each user, who is skipped and why,
//! and what changed between a stored plan and the state now. Pure functions over loaded
//! rows, so the rules are tested without a database and the summary and the confirm
//! cannot disagree: both call [`plan_user`].

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::{Disposition, PlanItem, PlannedMethod, ResetOptions, SkipReason};
use crate::{
    domain::{
        DomainError, DomainResult,
        ids::{CustomerId, MethodId, ResetId, UserId},
        masking::mask_label,
        model::{
            Customer, MethodKind, MethodScope, MethodState, MfaPolicy, Removal, ResetScope,
            named_enum,
        },
    },
    store,
};

/// The facts about one user that decide their plan.
#[derive(Clone, Debug)]
pub struct UserFacts {
    /// The user.
    pub id: UserId,
    /// Their customer.
    pub customer_id: CustomerId,
    /// Display name (shown in the summary).
    pub display_name: String,
    /// Admin of their customer.
    pub admin: bool,
    /// Their sign-in subject, compared with the caller's for SELF.
    pub external_subject: Option<String>,
}

/// The facts about one method that decide its disposition.
#[derive(Clone, Debug)]
pub struct MethodFacts {
    /// The method.
    pub id: MethodId,
    /// Kind.
    pub kind: MethodKind,
    /// Scope.
    pub scope: MethodScope,
    /// State.
    pub state: MethodState,
    /// Label, unmasked (masked in the plan).
    pub label: String,
}

impl MethodFacts {
    /// From a stored row; INTERNAL if it holds a value this version does not know.
    pub fn from_row(row: store::resets::PlanMethod) -> DomainResult<MethodFacts> {
        let broken = |what: &str, value: &str| {
            DomainError::Internal(anyhow::anyhow!(
                "method {} has unknown {what} {value:?}",
                row.id
            ))
        };
        Ok(MethodFacts {
            id: row.id.into(),
            kind: MethodKind::parse(&row.kind).ok_or_else(|| broken("kind", &row.kind))?,
            scope: MethodScope::parse(&row.scope).ok_or_else(|| broken("scope", &row.scope))?,
            state: MethodState::parse(&row.state).ok_or_else(|| broken("state", &row.state))?,
            label: row.label,
        })
    }
}

/// Whether `method` falls inside the reset's options.
fn in_scope(method: &MethodFacts, options: &ResetOptions) -> bool {
    method.state == MethodState::Active
        && (options.scope == ResetScope::All || method.scope == MethodScope::Org)
        && (options.method_kinds.is_empty() || options.method_kinds.contains(&method.kind))
}

/// Plans one user. Skip reasons are checked in the order SELF, PROTECTED_ADMIN,
/// NOT_ENROLLED; a skipped user keeps every method.
pub fn plan_user(
    user: &UserFacts,
    methods: &[MethodFacts],
    options: &ResetOptions,
    caller_subject: &str,
    may_reset_admins: bool,
) -> PlanItem {
    let skip_reason = if user.external_subject.as_deref() == Some(caller_subject) {
        Some(SkipReason::SelfUser)
    } else if user.admin && !may_reset_admins {
        Some(SkipReason::ProtectedAdmin)
    } else if !methods.iter().any(|m| in_scope(m, options)) {
        Some(SkipReason::NotEnrolled)
    } else {
        None
    };
    let methods = methods
        .iter()
        .map(|m| PlannedMethod {
            id: m.id,
            kind: m.kind,
            scope: m.scope,
            state: m.state,
            label: mask_label(m.kind, &m.label),
            disposition: match (skip_reason, in_scope(m, options)) {
                (None, true) => match m.kind.removal() {
                    Removal::Delete => Disposition::Delete,
                    Removal::Deactivate => Disposition::Deactivate,
                },
                _ => Disposition::Keep,
            },
        })
        .collect();
    PlanItem {
        customer_id: user.customer_id,
        user_id: user.id,
        display_name: user.display_name.clone(),
        external_subject: user.external_subject.clone(),
        admin: user.admin,
        skip_reason,
        methods,
    }
}

/// Whether a planned user will have to register MFA again: their customer enforces MFA
/// and no active method is left to them.
pub fn registration_required_after(item: &PlanItem, policy: MfaPolicy) -> bool {
    policy == MfaPolicy::Enforced
        && !item
            .methods
            .iter()
            .any(|m| m.state == MethodState::Active && m.disposition == Disposition::Keep)
}

/// The counts of a reset, in the same shape for one customer and for the whole reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Users named.
    pub users: u32,
    /// Users whose MFA changes.
    pub users_to_reset: u32,
    /// Users left alone.
    pub users_skipped: u32,
    /// Users left alone, by reason.
    pub skipped_by_reason: BTreeMap<SkipReason, u32>,
    /// Reset users who will have to register MFA again (no active method left, MFA
    /// enforced).
    pub users_to_register: u32,
    /// Methods deleted, by kind.
    pub to_delete: BTreeMap<MethodKind, u32>,
    /// Methods deactivated, by kind.
    pub to_deactivate: BTreeMap<MethodKind, u32>,
    /// Methods kept.
    pub methods_to_keep: u32,
}

impl Counts {
    /// Methods deleted in all.
    pub fn methods_to_delete(&self) -> u32 {
        self.to_delete.values().sum()
    }

    /// Methods deactivated in all.
    pub fn methods_to_deactivate(&self) -> u32 {
        self.to_deactivate.values().sum()
    }

    /// Adds `other` to these counts.
    fn add(&mut self, other: &Counts) {
        self.users += other.users;
        self.users_to_reset += other.users_to_reset;
        self.users_skipped += other.users_skipped;
        self.users_to_register += other.users_to_register;
        self.methods_to_keep += other.methods_to_keep;
        for (reason, n) in &other.skipped_by_reason {
            *self.skipped_by_reason.entry(*reason).or_default() += n;
        }
        for (kind, n) in &other.to_delete {
            *self.to_delete.entry(*kind).or_default() += n;
        }
        for (kind, n) in &other.to_deactivate {
            *self.to_deactivate.entry(*kind).or_default() += n;
        }
    }

    /// Counts one planned user of a customer with `policy`.
    fn count(&mut self, item: &PlanItem, policy: MfaPolicy) {
        self.users += 1;
        match item.skip_reason {
            Some(reason) => {
                self.users_skipped += 1;
                *self.skipped_by_reason.entry(reason).or_default() += 1;
            }
            None => {
                self.users_to_reset += 1;
                if registration_required_after(item, policy) {
                    self.users_to_register += 1;
                }
            }
        }
        for m in &item.methods {
            match m.disposition {
                Disposition::Delete => *self.to_delete.entry(m.kind).or_default() += 1,
                Disposition::Deactivate => *self.to_deactivate.entry(m.kind).or_default() += 1,
                Disposition::Keep => self.methods_to_keep += 1,
            }
        }
    }
}

/// One customer's part of a summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerSummary {
    /// Customer.
    pub customer_id: CustomerId,
    /// Display name when summarized.
    pub display_name: String,
    /// Policy when summarized.
    pub mfa_policy: MfaPolicy,
    /// Approval threshold when summarized (0: never).
    pub approval_threshold: u32,
    /// Enabled method kinds when summarized, in contract order (`None`: a summary stored
    /// before they were kept).
    pub enabled_method_kinds: Option<Vec<MethodKind>>,
    /// The counts here.
    pub counts: Counts,
}

impl CustomerSummary {
    /// Whether this customer's part makes the reset need approval: it resets at least the
    /// customer's (non-zero) threshold of users.
    pub fn approval_required(&self) -> bool {
        self.approval_threshold > 0 && self.counts.users_to_reset >= self.approval_threshold
    }
}

/// The reviewed summary: per customer, in selection order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Per customer.
    pub customers: Vec<CustomerSummary>,
}

impl Summary {
    /// The counts over the whole reset.
    pub fn totals(&self) -> Counts {
        let mut totals = Counts::default();
        for c in &self.customers {
            totals.add(&c.counts);
        }
        totals
    }

    /// Whether the reset needs approval (any of its customers' thresholds is met).
    pub fn approval_required(&self) -> bool {
        self.customers
            .iter()
            .any(CustomerSummary::approval_required)
    }
}

/// `kinds` in contract order, once each: how enabled kinds are compared.
pub fn sorted_kinds(kinds: &[MethodKind]) -> Vec<MethodKind> {
    let mut sorted = kinds.to_vec();
    sorted.sort_by_key(|kind| MethodKind::ALL.iter().position(|k| k == kind));
    sorted.dedup();
    sorted
}

/// Summarizes `items` over the selected `customers`.
pub fn summarize(customers: &[Customer], items: &[PlanItem]) -> Summary {
    let mut per: Vec<CustomerSummary> = customers
        .iter()
        .map(|c| CustomerSummary {
            customer_id: c.id,
            display_name: c.display_name.clone(),
            mfa_policy: c.mfa_policy,
            approval_threshold: c.approval_threshold,
            enabled_method_kinds: Some(sorted_kinds(&c.enabled_method_kinds)),
            counts: Counts::default(),
        })
        .collect();
    let index: HashMap<CustomerId, usize> = per
        .iter()
        .enumerate()
        .map(|(i, c)| (c.customer_id, i))
        .collect();
    for item in items {
        if let Some(summary) = index.get(&item.customer_id).and_then(|&i| per.get_mut(i)) {
            let policy = summary.mfa_policy;
            summary.counts.count(item, policy);
        }
    }
    Summary { customers: per }
}

/// The etag of a plan: a digest of the reset id, its options and reason, each
/// customer's policy and approval threshold, and every planned item. Any change to what the
/// confirm would do changes it; another summary of the same state gets another etag.
pub fn etag(
    reset_id: ResetId,
    options: &ResetOptions,
    reason: &str,
    customers: &[Customer],
    items: &[PlanItem],
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(reset_id.uuid().as_bytes());
    field(options.scope.as_str().as_bytes());
    field(MethodKind::format_list(&options.method_kinds).as_bytes());
    field(reason.as_bytes());
    for c in customers {
        field(c.id.uuid().as_bytes());
        field(c.mfa_policy.as_str().as_bytes());
        field(&c.approval_threshold.to_be_bytes());
    }
    for item in items {
        field(item.user_id.uuid().as_bytes());
        field(&[u8::from(item.admin)]);
        field(
            item.skip_reason
                .map(|r| r.as_str())
                .unwrap_or_default()
                .as_bytes(),
        );
        for m in &item.methods {
            field(m.id.uuid().as_bytes());
            field(m.kind.as_str().as_bytes());
            field(m.scope.as_str().as_bytes());
            field(m.state.as_str().as_bytes());
            field(m.disposition.as_str().as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

named_enum!(
    /// What kind of change made a plan stale (the `type` of a PLAN_STALE violation).
    ChangeKind {
        /// A user of the plan no longer exists.
        UserDeleted => "USER_DELETED",
        /// A user's admin flag changed.
        UserAdminChanged => "USER_ADMIN_CHANGED",
        /// A user has a method the plan did not show.
        MethodAdded => "METHOD_ADDED",
        /// A method the plan showed is gone.
        MethodRemoved => "METHOD_REMOVED",
        /// A method the plan showed changed kind, scope or state.
        MethodChanged => "METHOD_CHANGED",
        /// A customer's MFA policy changed.
        MfaPolicyChanged => "MFA_POLICY_CHANGED",
        /// The method kinds a customer enables changed.
        EnabledMethodKindsChanged => "ENABLED_METHOD_KINDS_CHANGED",
        /// What the plan would do to a user changed for another reason.
        PlanChanged => "PLAN_CHANGED",
    }
);

/// One difference between a stored plan and the state now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// In which customer.
    pub customer_id: CustomerId,
    /// About which user, if one.
    pub user_id: Option<UserId>,
    /// About which method, if one.
    pub method_id: Option<MethodId>,
    /// In words.
    pub description: String,
}

impl Change {
    /// What the change is about, as a relative resource name.
    pub fn subject(&self) -> String {
        let mut subject = format!("customers/{}", self.customer_id);
        if let Some(user) = self.user_id {
            subject.push_str(&format!("/users/{user}"));
        }
        if let Some(method) = self.method_id {
            subject.push_str(&format!("/authenticationMethods/{method}"));
        }
        subject
    }
}

/// What differs between the stored plan of a user and the plan the state now gives. Empty
/// when nothing the confirm would do has changed.
pub fn changes(stored: &PlanItem, current: Option<&PlanItem>) -> Vec<Change> {
    let user = stored.user_id;
    let change = |kind, method_id, description: String| Change {
        kind,
        customer_id: stored.customer_id,
        user_id: Some(user),
        method_id,
        description,
    };
    let Some(current) = current else {
        return vec![change(
            ChangeKind::UserDeleted,
            None,
            format!("user {user} no longer exists"),
        )];
    };
    let mut changes = Vec::new();
    if stored.admin != current.admin {
        changes.push(change(
            ChangeKind::UserAdminChanged,
            None,
            format!("user {user} admin flag changed to {}", current.admin),
        ));
    }
    let before: HashMap<_, _> = stored.methods.iter().map(|m| (m.id, m)).collect();
    let after: HashMap<_, _> = current.methods.iter().map(|m| (m.id, m)).collect();
    for m in &stored.methods {
        match after.get(&m.id) {
            None => changes.push(change(
                ChangeKind::MethodRemoved,
                Some(m.id),
                format!("method {} ({}) of user {user} was removed", m.id, m.kind),
            )),
            Some(now) if (now.kind, now.scope, now.state) != (m.kind, m.scope, m.state) => changes
                .push(change(
                    ChangeKind::MethodChanged,
                    Some(m.id),
                    format!("method {} ({}) of user {user} changed", m.id, m.kind),
                )),
            Some(_) => {}
        }
    }
    for m in &current.methods {
        if !before.contains_key(&m.id) {
            changes.push(change(
                ChangeKind::MethodAdded,
                Some(m.id),
                format!("method {} ({}) of user {user} was added", m.id, m.kind),
            ));
        }
    }
    if changes.is_empty()
        && (stored.skip_reason, dispositions(stored))
            != (current.skip_reason, dispositions(current))
    {
        changes.push(change(
            ChangeKind::PlanChanged,
            None,
            format!("the plan for user {user} changed"),
        ));
    }
    changes
}

fn dispositions(item: &PlanItem) -> Vec<Disposition> {
    item.methods.iter().map(|m| m.disposition).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(kind: MethodKind, scope: MethodScope) -> MethodFacts {
        MethodFacts {
            id: MethodId::generate(),
            kind,
            scope,
            label: "+1 555 123 4567".into(),
            state: MethodState::Active,
        }
    }

    fn user(admin: bool, subject: &str) -> UserFacts {
        UserFacts {
            id: UserId::generate(),
            customer_id: CustomerId::generate(),
            display_name: "U".into(),
            admin,
            external_subject: Some(subject.into()),
        }
    }

    const ALL: ResetOptions = ResetOptions {
        scope: ResetScope::All,
        method_kinds: Vec::new(),
    };

    #[test]
    fn hardware_tokens_are_deactivated_and_the_rest_deleted() {
        let methods = [
            method(MethodKind::HardwareOath, MethodScope::Org),
            method(MethodKind::Phone, MethodScope::User),
        ];
        let item = plan_user(&user(false, "u"), &methods, &ALL, "caller", false);
        assert_eq!(item.skip_reason, None);
        let d: Vec<_> = item.methods.iter().map(|m| m.disposition).collect();
        assert_eq!(d, [Disposition::Deactivate, Disposition::Delete]);
        assert_eq!(
            item.methods[1].label, "+1 ••• ••• 4567",
            "labels are stored masked"
        );
    }

    #[test]
    fn skip_reasons_come_in_order_self_admin_not_enrolled() {
        let methods = [method(MethodKind::Phone, MethodScope::User)];
        assert_eq!(
            plan_user(&user(true, "caller"), &methods, &ALL, "caller", false).skip_reason,
            Some(SkipReason::SelfUser)
        );
        assert_eq!(
            plan_user(&user(true, "u"), &methods, &ALL, "caller", false).skip_reason,
            Some(SkipReason::ProtectedAdmin)
        );
        assert_eq!(
            plan_user(&user(true, "u"), &methods, &ALL, "caller", true).skip_reason,
            None
        );
        assert_eq!(
            plan_user(&user(false, "u"), &[], &ALL, "caller", false).skip_reason,
            Some(SkipReason::NotEnrolled)
        );
    }

    #[test]
    fn org_level_and_kind_options_narrow_what_is_reset() {
        let methods = [
            method(MethodKind::Phone, MethodScope::User),
            method(MethodKind::Fido2, MethodScope::Org),
        ];
        let org = ResetOptions {
            scope: ResetScope::OrgLevel,
            method_kinds: vec![],
        };
        let item = plan_user(&user(false, "u"), &methods, &org, "caller", false);
        let d: Vec<_> = item.methods.iter().map(|m| m.disposition).collect();
        assert_eq!(d, [Disposition::Keep, Disposition::Delete]);
        let phones = ResetOptions {
            scope: ResetScope::All,
            method_kinds: vec![MethodKind::Phone],
        };
        let item = plan_user(&user(false, "u"), &methods, &phones, "caller", false);
        let d: Vec<_> = item.methods.iter().map(|m| m.disposition).collect();
        assert_eq!(d, [Disposition::Delete, Disposition::Keep]);
        let email_only = ResetOptions {
            scope: ResetScope::All,
            method_kinds: vec![MethodKind::Email],
        };
        assert_eq!(
            plan_user(&user(false, "u"), &methods, &email_only, "c", false).skip_reason,
            Some(SkipReason::NotEnrolled)
        );
    }

    #[test]
    fn registration_is_required_only_under_enforced_policy_with_nothing_left() {
        let methods = [
            method(MethodKind::Phone, MethodScope::User),
            method(MethodKind::Fido2, MethodScope::Org),
        ];
        let all = plan_user(&user(false, "u"), &methods, &ALL, "caller", false);
        assert!(registration_required_after(&all, MfaPolicy::Enforced));
        assert!(!registration_required_after(&all, MfaPolicy::Optional));
        let org = ResetOptions {
            scope: ResetScope::OrgLevel,
            method_kinds: vec![],
        };
        let partial = plan_user(&user(false, "u"), &methods, &org, "caller", false);
        assert!(!registration_required_after(&partial, MfaPolicy::Enforced));
    }

    #[test]
    fn changes_name_added_removed_and_admin_flag() {
        let facts = user(false, "u");
        let phone = method(MethodKind::Phone, MethodScope::User);
        let stored = plan_user(&facts, std::slice::from_ref(&phone), &ALL, "c", true);
        assert!(changes(&stored, Some(&stored.clone())).is_empty());
        let email = method(MethodKind::Email, MethodScope::User);
        let added = plan_user(&facts, &[phone.clone(), email.clone()], &ALL, "c", true);
        let change = &changes(&stored, Some(&added))[0];
        assert_eq!(change.kind, ChangeKind::MethodAdded);
        assert_eq!(change.method_id, Some(email.id));
        assert_eq!(
            change.subject(),
            format!(
                "customers/{}/users/{}/authenticationMethods/{}",
                facts.customer_id, facts.id, email.id
            )
        );
        let removed = plan_user(&facts, &[], &ALL, "c", true);
        assert_eq!(
            changes(&stored, Some(&removed))[0].kind,
            ChangeKind::MethodRemoved
        );
        let promoted = plan_user(
            &UserFacts {
                admin: true,
                ..facts.clone()
            },
            &[phone],
            &ALL,
            "c",
            true,
        );
        assert_eq!(
            changes(&stored, Some(&promoted))[0].kind,
            ChangeKind::UserAdminChanged
        );
        let gone = &changes(&stored, None)[0];
        assert_eq!(gone.kind, ChangeKind::UserDeleted);
        assert_eq!(
            gone.subject(),
            format!("customers/{}/users/{}", facts.customer_id, facts.id)
        );
    }
}
