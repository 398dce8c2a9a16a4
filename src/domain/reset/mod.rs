//! The two-phase MFA reset. [`summarize`] plans and stores; [`confirm`] applies exactly that
//! plan once, all or nothing, or, for a reset that needs four-eyes approval, hands it to
//! [`approve`] or [`reject`]; [`cancel`], [`get`], [`list`] and [`list_items`] complete the
//! life cycle. Both the Users and the AuthenticationMethods services call these.
//!
//! The phases live in their own files: `plan` (pure rules: what happens to each method, what
//! changed since), `summarize`, `confirm`, `approval`, `life_cycle` (cancel, get, lists) and
//! `stored` (how a plan is kept). Cost grows with the users in a reset, never with a query per user: users
//! and methods are loaded and changed with set-based statements, each list of ids or rows
//! one parameter (`store::bulk`).

mod approval;
mod confirm;
mod life_cycle;
pub mod plan;
mod stored;
mod summarize;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use self::plan::{Summary, UserFacts};
pub use self::{
    approval::{approve, reject},
    confirm::confirm,
    life_cycle::{ItemOutcome, ItemQuery, ResetQuery, cancel, get, list, list_items},
    summarize::summarize,
};
use super::{
    Caller, DomainError, DomainResult,
    audit::{AuditDetails, AuditEvent},
    error::MetadataValue,
    ids::{CustomerId, MethodId, ResetId, UserId},
    model::{Action, MethodKind, MethodScope, MethodState, ResetScope},
    paging::Page,
    reason::Reason,
    selection::Selection,
    users::{UserQuery, UserRef},
};
pub use crate::store::values::{Disposition, ResetState, SkipReason};
use crate::store::{self, entities::mfa_resets, resets::Lock};

const RESOURCE: &str = "mfareset.v1.MfaReset";

/// Most users one reset may name.
pub const MAX_USERS_PER_RESET: usize = 10_000;

impl ResetState {
    /// Whether a reset in this state may still be applied (by a confirm or an approval).
    pub fn is_open(self) -> bool {
        matches!(self, ResetState::Pending | ResetState::AwaitingApproval)
    }
}

/// What to reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetOptions {
    /// ALL or ORG_LEVEL.
    pub scope: ResetScope,
    /// Only these kinds; empty means every kind. Sorted and distinct.
    pub method_kinds: Vec<MethodKind>,
}

/// One method of a planned user and what happens to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMethod {
    /// Method.
    pub id: MethodId,
    /// Kind.
    pub kind: MethodKind,
    /// Scope.
    pub scope: MethodScope,
    /// State when planned.
    pub state: MethodState,
    /// Masked label.
    pub label: String,
    /// What happens to it.
    pub disposition: Disposition,
}

/// One user of a reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanItem {
    /// Customer.
    pub customer_id: CustomerId,
    /// User.
    pub user_id: UserId,
    /// Display name when planned.
    pub display_name: String,
    /// External subject when planned.
    pub external_subject: Option<String>,
    /// Admin when planned.
    pub admin: bool,
    /// Why skipped, if skipped.
    pub skip_reason: Option<SkipReason>,
    /// Every method with its disposition.
    pub methods: Vec<PlannedMethod>,
}

/// A stored reset.
#[derive(Clone, Debug)]
pub struct MfaReset {
    /// Id.
    pub id: ResetId,
    /// Life-cycle state (EXPIRED derived).
    pub state: ResetState,
    /// Customers of the selection, in order.
    pub customer_ids: Vec<CustomerId>,
    /// Options.
    pub options: ResetOptions,
    /// Reason.
    pub reason: String,
    /// Digest of the planned state.
    pub etag: String,
    /// Who summarized.
    pub requested_by: String,
    /// When summarized.
    pub created_at: DateTime<Utc>,
    /// Last moment to confirm or approve.
    pub expires_at: DateTime<Utc>,
    /// Whether applying it needs a second administrator's approval.
    pub approval_required: bool,
    /// Who confirmed it, and when.
    pub confirmed: Option<(String, DateTime<Utc>)>,
    /// Who approved it, and when.
    pub approved: Option<(String, DateTime<Utc>)>,
    /// Who cancelled it, and when.
    pub cancelled: Option<(String, DateTime<Utc>)>,
    /// Who rejected it, and when.
    pub rejected: Option<(String, DateTime<Utc>)>,
    /// Why it was rejected.
    pub rejection_reason: Option<String>,
    /// Per-customer summaries (and so the totals).
    pub summary: Summary,
    /// The filter that chose its users, when it was summarized by one (the users it matched
    /// then are the reset's; later matches are not added).
    pub filter: Option<UserQuery>,
}

/// Users named one by one, each list distinct (checked at the edge).
#[derive(Clone, Debug, Default)]
pub struct UserRefs {
    /// By id, in request order.
    pub ids: Vec<UserId>,
    /// By external subject, in request order.
    pub external_subjects: Vec<String>,
}

impl UserRefs {
    /// Every reference, ids first, as [`UserRef`]s.
    pub fn all(&self) -> impl Iterator<Item = UserRef> + '_ {
        (self.ids.iter().map(|id| UserRef::Id(*id))).chain(
            self.external_subjects
                .iter()
                .cloned()
                .map(UserRef::ExternalSubject),
        )
    }

    /// How many users are named.
    pub fn len(&self) -> usize {
        self.ids.len() + self.external_subjects.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which users a reset covers, as the request named them.
#[derive(Clone, Debug)]
pub enum ResetTarget {
    /// One by one, by id or external subject.
    Users(UserRefs),
    /// Every user of the selection matching a filter when the summary is made.
    Filter(UserQuery),
}

/// A summarize request, parsed at the edge.
#[derive(Clone, Debug)]
pub struct ResetRequest {
    /// The selection.
    pub customer_ids: Vec<CustomerId>,
    /// The users.
    pub target: ResetTarget,
    /// Options.
    pub options: ResetOptions,
    /// Reason (1 to 500 characters).
    pub reason: String,
}

/// A stored summary and the first page of its items.
#[derive(Clone, Debug)]
pub struct Summarized {
    /// The reset.
    pub reset: MfaReset,
    /// The first items.
    pub items: Page<PlanItem, i32>,
}

impl MfaReset {
    /// Whether `item`'s user will have to register MFA again once this reset is
    /// applied: reset, in a customer that enforced MFA at summary time, with no active
    /// method left.
    pub fn registration_required_after(&self, item: &PlanItem) -> bool {
        item.skip_reason.is_none()
            && self
                .summary
                .customers
                .iter()
                .find(|c| c.customer_id == item.customer_id)
                .is_some_and(|c| plan::registration_required_after(item, c.mfa_policy))
    }
}

/// The plan the state now gives for some users of the selection, from the requester's point
/// of view, and which of them must already register MFA again.
struct Current {
    /// Each user's plan; users outside the selection are absent.
    items: HashMap<UserId, PlanItem>,
    /// Users whose `mfa_registration_required` is set now.
    registration_required: HashSet<UserId>,
}

/// Plans the stored users `users` (already confined to the selection) with their methods:
/// one query per chunk of users, whatever the number of customers.
async fn current_plan(
    db: &impl ConnectionTrait,
    selection: &Selection,
    users: Vec<store::resets::PlanUser>,
    options: &ResetOptions,
    requester: &str,
    lock: Lock,
) -> DomainResult<Current> {
    let customer_ids = selection.ids();
    let ids: Vec<UserId> = users.iter().map(|u| u.id.into()).collect();
    let mut methods_by_user: HashMap<UserId, Vec<_>> = HashMap::new();
    for row in store::resets::methods_of(db, &customer_ids, &ids, lock).await? {
        let user_id = UserId::from(row.user_id);
        let method = plan::MethodFacts::from_row(row)?;
        methods_by_user.entry(user_id).or_default().push(method);
    }
    let mut current = Current {
        items: HashMap::with_capacity(users.len()),
        registration_required: HashSet::new(),
    };
    for u in users {
        let facts = UserFacts {
            id: u.id.into(),
            customer_id: u.customer_id.into(),
            display_name: u.display_name,
            admin: u.is_admin,
            external_subject: u.external_subject,
        };
        if u.mfa_registration_required {
            current.registration_required.insert(facts.id);
        }
        let may_reset_admins = selection
            .grants()
            .allows(facts.customer_id, Action::ResetAdminMfa);
        let methods = methods_by_user.remove(&facts.id).unwrap_or_default();
        let item = plan::plan_user(&facts, &methods, options, requester, may_reset_admins);
        current.items.insert(facts.id, item);
    }
    Ok(current)
}

/// Loads a reset for `caller` with its selection resolved (any role suffices to see it);
/// with `lock`, the reset row is locked for update and its customers for share
/// (PostgreSQL). Anyone but its requester gets NOT_FOUND unless they hold a role in each
/// of its customers (a reset reveals nothing outside what the caller may see); the
/// requester gets the selection's own answer, so a role revoked since the summary is
/// PERMISSION_DENIED.
async fn load_visible(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: ResetId,
    lock: bool,
) -> DomainResult<(MfaReset, Selection)> {
    let model = store::resets::find(db, id, lock)
        .await?
        .ok_or_else(|| DomainError::not_found(RESOURCE, id))?;
    // Expired or not by the database's clock, which the state change checks again.
    let reset = stored::reset_from_model(model, store::db_now(db).await?)?;
    // Who may see it is decided by the reset's customers as the database relates them.
    let customer_ids = store::resets::customers_of(db, id).await?;
    if lock {
        // Before the customers are read: a policy change must not slip in between.
        store::resets::lock_customers(db, &customer_ids).await?;
    }
    match Selection::resolve(db, &caller.subject, &customer_ids, Action::Read).await {
        Ok(selection) => Ok((reset, selection)),
        Err(DomainError::PermissionDenied { .. }) if reset.requested_by != caller.subject => {
            Err(DomainError::not_found(RESOURCE, id))
        }
        Err(other) => Err(other),
    }
}

/// Only the principal who summarized may confirm or cancel.
fn require_requester(caller: &Caller, reset: &MfaReset) -> DomainResult<()> {
    if reset.requested_by == caller.subject {
        return Ok(());
    }
    Err(DomainError::precondition(
        Reason::NotResetRequester,
        "only the principal who summarized this reset may confirm or cancel it",
    )
    .with_metadata("reset_id", reset.id))
}

/// Checks that need no lock, made before a write transaction begins, so that a caller who
/// may not confirm or cancel a reset never holds (SQLite's single) write lock.
async fn precheck_requester(
    db: &DatabaseConnection,
    caller: &Caller,
    id: ResetId,
) -> DomainResult<()> {
    let (reset, _) = load_visible(db, caller, id, false).await?;
    require_requester(caller, &reset)
}

/// The refusal of an action on a reset whose state does not allow it.
fn state_error(reset: &MfaReset) -> DomainError {
    let (reason, message) = match reset.state {
        ResetState::Cancelled => (
            Reason::ResetCancelled,
            "the reset was cancelled; summarize again",
        ),
        ResetState::Expired => (Reason::ResetExpired, "the reset expired; summarize again"),
        ResetState::Confirmed => (Reason::ResetConfirmed, "the reset was already applied"),
        ResetState::Rejected => (
            Reason::ResetRejected,
            "the reset was rejected by an approver; summarize again",
        ),
        ResetState::Pending | ResetState::AwaitingApproval => (
            Reason::ResetNotAwaitingApproval,
            "the reset is not awaiting approval",
        ),
    };
    DomainError::precondition(reason, message)
        .with_metadata("reset_id", reset.id)
        .with_metadata_value("state", MetadataValue::ResetState(reset.state))
}

/// Moves reset `id` from one of the states `from` to `to`, setting `set` (who and when), and
/// counts it (`mfa_reset.resets`): every state change of a reset. Refused when the reset expired meanwhile by the database's
/// clock (RESET_EXPIRED) or was changed concurrently (ABORTED); the caller's transaction
/// then rolls back.
async fn move_state<const N: usize>(
    txn: &impl ConnectionTrait,
    id: ResetId,
    from: &[ResetState],
    to: ResetState,
    set: [(mfa_resets::Column, sea_orm::Value); N],
) -> DomainResult<()> {
    if !store::resets::transition(txn, id, from, to, set).await? {
        return Err(unchanged(txn, id).await?);
    }
    use crate::metrics::ResetOutcome as O;
    let outcome = match to {
        ResetState::AwaitingApproval => Some(O::AwaitingApproval),
        ResetState::Confirmed if from.contains(&ResetState::AwaitingApproval) => Some(O::Approved),
        ResetState::Confirmed => Some(O::Confirmed),
        ResetState::Rejected => Some(O::Rejected),
        ResetState::Cancelled => Some(O::Cancelled),
        ResetState::Pending | ResetState::Expired => None,
    };
    if let Some(outcome) = outcome {
        crate::metrics::reset(outcome);
    }
    Ok(())
}

/// One audit event per customer of `reset`, by `caller`, about it and with `reason`, with
/// the details `details` gives for that customer's part of the summary.
fn per_customer(
    caller: &Caller,
    reset: &MfaReset,
    reason: &str,
    now: DateTime<Utc>,
    details: impl Fn(&plan::CustomerSummary) -> AuditDetails,
) -> Vec<AuditEvent> {
    reset
        .summary
        .customers
        .iter()
        .map(|c| {
            AuditEvent::new(caller, c.customer_id, details(c), now)
                .reset(reset.id)
                .reason(reason)
        })
        .collect()
}

/// Why the state change of reset `id` changed nothing: it expired meanwhile, by the
/// database's clock (the state change checks it), or it was changed concurrently.
async fn unchanged(db: &impl ConnectionTrait, id: ResetId) -> DomainResult<DomainError> {
    let Some(model) = store::resets::find(db, id, false).await? else {
        return Ok(lost_race());
    };
    let reset = stored::reset_from_model(model, store::db_now(db).await?)?;
    Ok(match reset.state {
        ResetState::Expired => state_error(&reset),
        _ => lost_race(),
    })
}

/// The rows changed under a write although they were locked: never expected, but refused
/// (and rolled back) rather than half-applied.
fn lost_race() -> DomainError {
    DomainError::Aborted {
        reason: Reason::ConcurrentUpdate,
        message: "the reset or the rows it covers changed while it was being applied; get the reset and retry".into(),
        details: Default::default(),
    }
}
