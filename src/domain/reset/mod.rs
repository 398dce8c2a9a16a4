//! The two-phase MFA reset: [`summarize`] plans and stores, [`confirm`] applies exactly
//! that plan once, all or nothing; [`cancel`], [`get`] and [`list_items`] complete the
//! life cycle. Both the Users and the AuthenticationMethods services call these.
//!
//! Cost grows with the users in a reset, never with a query per user: users and methods
//! are loaded and changed with set-based statements in chunks (`store::resets::CHUNK`).

pub mod plan;
mod stored;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

use self::plan::{Summary, UserFacts};
use super::{
    Caller, DomainError, DomainResult,
    audit::{self, AuditEvent},
    ids::{CustomerId, MethodId, ResetId, UserId},
    methods,
    model::{
        Action, AuditAction, MethodKind, MethodScope, MethodState, MfaPolicy, ResetScope,
        named_enum,
    },
    paging::{Page, PageRequest},
    selection::Selection,
};
use crate::store::{self, entities::mfa_resets, resets::Lock};

const RESOURCE: &str = "mfareset.v1.MfaReset";

/// Most users one reset may name.
pub const MAX_USERS_PER_RESET: usize = 10_000;

/// Changes listed in an ABORTED message before "and N more".
const MAX_LISTED_CHANGES: usize = 20;

named_enum!(
    /// What a reset does to one method.
    Disposition {
        /// Deleted.
        Delete => "DELETE",
        /// Deactivated (hardware tokens).
        Deactivate => "DEACTIVATE",
        /// Left as it is.
        Keep => "KEEP",
    }
);

named_enum!(
    /// Why a reset leaves a user alone.
    SkipReason {
        /// No MFA to reset within the options.
        NotEnrolled => "NOT_ENROLLED",
        /// An admin, and the caller is not privileged in their customer.
        ProtectedAdmin => "PROTECTED_ADMIN",
        /// The caller themself.
        SelfUser => "SELF",
    }
);

named_enum!(
    /// The life cycle of a reset.
    ResetState {
        /// Summarized, waiting.
        Pending => "PENDING",
        /// Applied once.
        Confirmed => "CONFIRMED",
        /// Cancelled by its requester.
        Cancelled => "CANCELLED",
        /// Not confirmed in time (derived from `expires_at`, never stored).
        Expired => "EXPIRED",
    }
);

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
    /// Admin when planned.
    pub is_admin: bool,
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
    /// Last moment to confirm.
    pub expires_at: DateTime<Utc>,
    /// When confirmed.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Totals and per-customer summary.
    pub summary: Summary,
}

/// A summarize request, parsed at the edge.
#[derive(Clone, Debug)]
pub struct ResetRequest {
    /// The selection.
    pub customer_ids: Vec<CustomerId>,
    /// The users, distinct, in request order.
    pub user_ids: Vec<UserId>,
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

/// Plans the current state of `user_ids` in the selection. Users outside it are absent
/// from the map. Two queries per chunk of users, whatever the number of customers.
async fn current_plan(
    db: &impl ConnectionTrait,
    selection: &Selection,
    user_ids: &[UserId],
    options: &ResetOptions,
    caller: &Caller,
    lock: Lock,
) -> DomainResult<HashMap<UserId, PlanItem>> {
    let customer_ids = selection.ids();
    let ids: Vec<Uuid> = user_ids.iter().map(|u| u.uuid()).collect();
    let users = store::resets::users_in(db, &customer_ids, &ids, lock).await?;
    let mut methods_by_user: HashMap<UserId, Vec<_>> = HashMap::new();
    for model in store::resets::methods_of(db, &customer_ids, &ids, lock).await? {
        let method = methods::from_model(model)?;
        methods_by_user
            .entry(method.user_id)
            .or_default()
            .push(method);
    }
    Ok(users
        .into_iter()
        .map(|u| {
            let facts = UserFacts {
                id: u.id.into(),
                customer_id: u.customer_id.into(),
                display_name: u.display_name,
                is_admin: u.is_admin,
                external_subject: u.external_subject,
            };
            let may_reset_admins = selection
                .grants()
                .allows(facts.customer_id, Action::ResetAdminMfa);
            let methods = methods_by_user.remove(&facts.id).unwrap_or_default();
            let item =
                plan::plan_user(&facts, &methods, options, &caller.subject, may_reset_admins);
            (facts.id, item)
        })
        .collect())
}

/// Plans a reset and stores it as PENDING until `now + ttl`. Changes nothing else.
///
/// Runs every check the confirm will: the roles (AUTHENTICATION_ADMIN or better in every
/// selected customer), the options (common to the selection), and the users (each inside
/// the selection: NOT_FOUND otherwise, wherever else it exists).
pub async fn summarize(
    db: &DatabaseConnection,
    caller: &Caller,
    request: ResetRequest,
    ttl: std::time::Duration,
    first_page: u64,
) -> DomainResult<Summarized> {
    let selection =
        Selection::resolve(db, &caller.subject, &request.customer_ids, Action::ResetMfa).await?;
    selection.require_reset_options(request.options.scope, &request.options.method_kinds)?;
    let mut planned = current_plan(
        db,
        &selection,
        &request.user_ids,
        &request.options,
        caller,
        Lock::None,
    )
    .await?;
    let mut items = Vec::with_capacity(request.user_ids.len());
    for user_id in &request.user_ids {
        match planned.remove(user_id) {
            Some(item) => items.push(item),
            None => return Err(DomainError::not_found("mfareset.v1.User", user_id)),
        }
    }
    let id = ResetId::new();
    let now = super::now();
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15));
    let summary = plan::summarize(selection.customers(), &items);
    let etag = plan::etag(
        id,
        &request.options,
        &request.reason,
        selection.customers(),
        &items,
    );
    let model = mfa_resets::Model {
        id: id.uuid(),
        requested_by: caller.subject.clone(),
        state: ResetState::Pending.as_str().to_string(),
        scope: request.options.scope.as_str().to_string(),
        method_kinds: MethodKind::format_list(&request.options.method_kinds),
        reason: request.reason,
        etag,
        request_id: caller.request_id.clone(),
        created_at: now,
        expires_at,
        confirmed_at: None,
        cancelled_at: None,
        summary: stored::summary_json(&summary),
    };
    let rows = items
        .iter()
        .enumerate()
        .map(|(i, item)| stored::item_model(id, i as i32, item))
        .collect();
    let txn = store::begin_write(db).await?;
    store::resets::insert(&txn, model.clone(), &selection.ids(), rows).await?;
    txn.commit().await?;
    let reset = stored::reset_from_model(model, now)?;
    let size = first_page as usize;
    let next = (items.len() > size).then(|| size as i32 - 1);
    items.truncate(size);
    Ok(Summarized {
        reset,
        items: Page { items, next },
    })
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
    let model = store::resets::find(db, id.uuid(), lock)
        .await?
        .ok_or_else(|| DomainError::not_found(RESOURCE, id))?;
    let reset = stored::reset_from_model(model, super::now())?;
    if lock {
        // Before the customers are read: a policy change must not slip in between.
        let ids: Vec<Uuid> = reset.customer_ids.iter().map(|c| c.uuid()).collect();
        store::resets::lock_customers(db, &ids).await?;
    }
    match Selection::resolve(db, &caller.subject, &reset.customer_ids, Action::Read).await {
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
        "NOT_RESET_REQUESTER",
        "only the principal who summarized this reset may confirm or cancel it",
    ))
}

fn state_error(reset: &MfaReset) -> DomainError {
    match reset.state {
        ResetState::Cancelled => DomainError::precondition(
            "RESET_CANCELLED",
            "the reset was cancelled; summarize again",
        ),
        ResetState::Expired => {
            DomainError::precondition("RESET_EXPIRED", "the reset expired; summarize again")
        }
        ResetState::Confirmed => {
            DomainError::precondition("RESET_CONFIRMED", "the reset was already confirmed")
        }
        ResetState::Pending => {
            DomainError::Internal(anyhow::anyhow!("pending reset treated as final"))
        }
    }
}

/// Checks that need no lock, made before a write transaction begins, so that a caller
/// who may not confirm or cancel a reset never holds (SQLite's single) write lock.
async fn precheck_requester(
    db: &DatabaseConnection,
    caller: &Caller,
    id: ResetId,
) -> DomainResult<()> {
    let (reset, _) = load_visible(db, caller, id, false).await?;
    require_requester(caller, &reset)
}

/// Applies exactly the plan of a PENDING reset, once, in one transaction with an audit
/// event per affected user. Confirming a confirmed reset (with its etag) returns it again
/// and changes nothing; concurrent confirms queue on the reset's row lock.
///
/// On PostgreSQL the customers (shared), users and methods the plan covers are locked
/// before they are read, so nothing can change between the staleness check and the
/// writes; the writes also check that they touched exactly the planned rows.
pub async fn confirm(
    db: &DatabaseConnection,
    caller: &Caller,
    id: ResetId,
    etag: &str,
) -> DomainResult<MfaReset> {
    precheck_requester(db, caller, id).await?;
    let txn = store::begin_write(db).await?;
    let (mut reset, selection) = load_visible(&txn, caller, id, true).await?;
    require_requester(caller, &reset)?;
    // The caller's roles now, not at summary time: a revoked role takes effect here.
    selection.require(Action::ResetMfa)?;
    if etag != reset.etag {
        return Err(DomainError::Aborted {
            reason: "ETAG_MISMATCH",
            message: "the etag is not this reset's; get the reset (or summarize again) and retry"
                .into(),
        });
    }
    match reset.state {
        ResetState::Confirmed => return Ok(reset),
        ResetState::Pending => {}
        _ => return Err(state_error(&reset)),
    }
    if reset.summary.totals.users_to_reset == 0 {
        return Err(DomainError::precondition(
            "NOTHING_TO_RESET",
            "every user in this reset is skipped: MFA is not enabled for them, or they are protected",
        ));
    }
    selection.require_reset_options(reset.options.scope, &reset.options.method_kinds)?;

    let stored_items: Vec<PlanItem> = store::resets::items(&txn, id.uuid(), None, None)
        .await?
        .into_iter()
        .map(stored::item_from_model)
        .collect::<DomainResult<_>>()?;
    let user_ids: Vec<UserId> = stored_items.iter().map(|i| i.user_id).collect();
    let current = current_plan(
        &txn,
        &selection,
        &user_ids,
        &reset.options,
        caller,
        Lock::ForUpdate,
    )
    .await?;
    check_still_allowed(&stored_items, &current)?;
    let changes = plan_changes(&reset, &selection, &stored_items, &current);
    if !changes.is_empty() {
        let more = changes.len().saturating_sub(MAX_LISTED_CHANGES);
        let mut message = format!(
            "the plan is stale; summarize again. Changed: {}",
            changes
                .iter()
                .take(MAX_LISTED_CHANGES)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        return Err(DomainError::Aborted {
            reason: "PLAN_STALE",
            message,
        });
    }

    let now = super::now();
    apply(&txn, caller, &reset, &selection, &stored_items, now).await?;
    let finished = store::resets::finish_pending(
        &txn,
        id.uuid(),
        ResetState::Confirmed.as_str(),
        mfa_resets::Column::ConfirmedAt,
        now,
    )
    .await?;
    if !finished {
        return Err(lost_race());
    }
    txn.commit().await?;
    reset.state = ResetState::Confirmed;
    reset.confirmed_at = Some(now);
    Ok(reset)
}

/// The rows changed under a confirm although they were locked: never expected, but
/// refused (and rolled back) rather than half-applied.
fn lost_race() -> DomainError {
    DomainError::Aborted {
        reason: "CONCURRENT_UPDATE",
        message: "the reset or the rows it covers changed while it was being applied; get the reset and retry".into(),
    }
}

/// A role downgrade since the summary (an admin planned for reset would now be
/// protected) is a permission problem, not a stale plan.
fn check_still_allowed(
    stored: &[PlanItem],
    current: &HashMap<UserId, PlanItem>,
) -> DomainResult<()> {
    let now_protected: Vec<String> = stored
        .iter()
        .filter(|s| s.skip_reason.is_none())
        .filter(|s| {
            current
                .get(&s.user_id)
                .is_some_and(|c| c.skip_reason == Some(SkipReason::ProtectedAdmin) && s.is_admin)
        })
        .map(|s| s.customer_id.to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if now_protected.is_empty() {
        return Ok(());
    }
    Err(DomainError::PermissionDenied {
        reason: "ROLE_TOO_WEAK",
        message: format!(
            "your role no longer allows resetting admins in customer(s) {}",
            now_protected.join(", ")
        ),
    })
}

/// Everything that differs between the stored plan and the state now.
fn plan_changes(
    reset: &MfaReset,
    selection: &Selection,
    stored: &[PlanItem],
    current: &HashMap<UserId, PlanItem>,
) -> Vec<String> {
    let mut changes = Vec::new();
    for summarized in &reset.summary.customers {
        if let Some(customer) = selection.get(summarized.customer_id) {
            if customer.mfa_policy != summarized.mfa_policy {
                changes.push(format!(
                    "customer {} MFA policy changed to {}",
                    customer.id, customer.mfa_policy
                ));
            }
        }
    }
    for item in stored {
        changes.extend(plan::changes(item, current.get(&item.user_id)));
    }
    changes
}

/// The writes of a confirm: delete and deactivate the planned methods, mark the users,
/// and write one audit event per affected user. A bounded number of statements: one per
/// chunk of ids for each kind of write.
async fn apply(
    txn: &impl ConnectionTrait,
    caller: &Caller,
    reset: &MfaReset,
    selection: &Selection,
    items: &[PlanItem],
    now: DateTime<Utc>,
) -> DomainResult<()> {
    let customer_ids = selection.ids();
    let policy = |c: CustomerId| {
        selection
            .get(c)
            .map(|c| c.mfa_policy)
            .unwrap_or(MfaPolicy::Optional)
    };
    let mut delete = Vec::new();
    let mut deactivate = Vec::new();
    let mut affected = Vec::new();
    let mut registration_required = Vec::new();
    let mut events = Vec::new();
    for item in items.iter().filter(|i| i.skip_reason.is_none()) {
        let mut deleted = serde_json::Map::new();
        let mut deactivated = serde_json::Map::new();
        for m in &item.methods {
            let (ids, counts) = match m.disposition {
                Disposition::Delete => (&mut delete, &mut deleted),
                Disposition::Deactivate => (&mut deactivate, &mut deactivated),
                Disposition::Keep => continue,
            };
            ids.push(m.id.uuid());
            let count = counts.entry(m.kind.as_str()).or_insert(0.into());
            *count = (count.as_u64().unwrap_or(0) + 1).into();
        }
        let required = plan::registration_required_after(item, policy(item.customer_id));
        affected.push(item.user_id.uuid());
        if required {
            registration_required.push(item.user_id.uuid());
        }
        let mut event = AuditEvent::new(caller, item.customer_id, AuditAction::MfaReset, now)
            .user(item.user_id)
            .reason(&reset.reason)
            .detail("methods_deleted", deleted)
            .detail("methods_deactivated", deactivated)
            .detail("mfa_registration_required", required)
            .detail("scope", reset.options.scope.as_str());
        event.reset_id = Some(reset.id);
        events.push(event);
    }
    let deleted = store::resets::delete_methods(txn, &customer_ids, &delete).await?;
    let deactivated =
        store::resets::deactivate_methods(txn, &customer_ids, &deactivate, now).await?;
    if deleted != delete.len() as u64 || deactivated != deactivate.len() as u64 {
        return Err(lost_race());
    }
    store::resets::mark_users_reset(txn, &customer_ids, &affected, &registration_required, now)
        .await?;
    audit::record(txn, events).await?;
    Ok(())
}

/// Cancels a PENDING reset (requester only). Cancelling a cancelled reset returns it.
pub async fn cancel(
    db: &DatabaseConnection,
    caller: &Caller,
    id: ResetId,
) -> DomainResult<MfaReset> {
    precheck_requester(db, caller, id).await?;
    let txn = store::begin_write(db).await?;
    let (mut reset, _) = load_visible(&txn, caller, id, true).await?;
    require_requester(caller, &reset)?;
    match reset.state {
        ResetState::Pending => {}
        ResetState::Cancelled => return Ok(reset),
        _ => return Err(state_error(&reset)),
    }
    let now = super::now();
    let finished = store::resets::finish_pending(
        &txn,
        id.uuid(),
        ResetState::Cancelled.as_str(),
        mfa_resets::Column::CancelledAt,
        now,
    )
    .await?;
    if !finished {
        return Err(lost_race());
    }
    txn.commit().await?;
    reset.state = ResetState::Cancelled;
    reset.cancelled_at = Some(now);
    Ok(reset)
}

/// A reset, for anyone holding a role in each of its customers.
pub async fn get(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: ResetId,
) -> DomainResult<MfaReset> {
    Ok(load_visible(db, caller, id, false).await?.0)
}

/// One page of a reset's items, in summary order, with the reset they belong to.
pub async fn list_items(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: ResetId,
    page: PageRequest<i32>,
) -> DomainResult<(MfaReset, Page<PlanItem, i32>)> {
    let (reset, _) = load_visible(db, caller, id, false).await?;
    let rows = store::resets::items(db, id.uuid(), page.after, Some(page.size + 1)).await?;
    let page =
        Page::from_rows(rows, page.size, |row| row.position).try_map(stored::item_from_model)?;
    Ok((reset, page))
}

impl MfaReset {
    /// Whether `item`'s user will have to register MFA again once this reset is
    /// confirmed: reset, in a customer that enforced MFA at summary time, with no active
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
