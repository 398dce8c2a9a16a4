//! The second phase: apply exactly the stored plan, once, all or nothing, in one transaction
//! with an audit event per user reset, after checking that nothing the plan covers changed.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tracing::Instrument as _;

use super::{
    Current, Disposition, MfaReset, PlanItem, ResetState, SkipReason, current_plan, load_visible,
    lost_race, move_state, plan, precheck_requester, require_requester, state_error, stored,
};
use crate::{
    domain::{
        Caller, Details, DomainError, DomainResult, Violation,
        audit::{self, AuditDetails, AuditEvent, UserAfter},
        idempotency::{self, Answer, Idempotency},
        ids::{CustomerId, ResetId, UserId},
        model::{Action, MethodKind, MfaPolicy},
        reason::Reason,
        selection::{Selection, list_ids},
    },
    store::{self, entities::mfa_resets, resets::Lock},
};

/// Changes listed in an ABORTED message before "and N more" (the PreconditionFailure
/// lists more).
const MAX_LISTED_CHANGES: usize = 20;

/// Applies exactly the plan of a PENDING reset, once, in one transaction with an audit event
/// per affected user. Confirming a confirmed reset (with its etag) returns it again and
/// changes nothing; concurrent confirms queue on the reset's row lock.
///
/// A reset whose summary needs approval is not applied: after the same checks it moves to
/// AWAITING_APPROVAL, expiring `approval_window` from now, with a RESET_APPROVAL_REQUESTED
/// event per customer (see [`super::approve`]).
///
/// On PostgreSQL the customers (shared), users and methods the plan covers are locked before
/// they are read, so nothing can change between the staleness check and the writes; the
/// writes also check that they touched exactly the planned rows.
pub async fn confirm(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, MfaReset>,
    id: ResetId,
    etag: &str,
    approval_window: std::time::Duration,
) -> DomainResult<Answer<MfaReset>> {
    precheck_requester(db, caller, id).await?;
    idempotency::write(db, caller, idempotency, async |txn| {
        // The caller's roles held until the reset is applied: a revoke waits for it, and a
        // reset is never applied under a role revoked before it committed.
        let (mut reset, selection) = async {
            store::roles::lock_assignments(txn, &[&caller.subject]).await?;
            load_visible(txn, caller, id, true).await
        }
        .instrument(tracing::info_span!("reset.lock"))
        .await?;
        require_requester(caller, &reset)?;
        // The caller's roles now, not at summary time: a revoked role takes effect here.
        selection.require(Action::ResetMfa)?;
        require_etag(&reset, etag)?;
        match reset.state {
            ResetState::Confirmed | ResetState::AwaitingApproval => return Ok(reset),
            ResetState::Pending => {}
            _ => return Err(state_error(&reset)),
        }
        if reset.summary.totals().users_to_reset == 0 {
            return Err(DomainError::precondition(
                Reason::NothingToReset,
                "every user in this reset is skipped: MFA is not enabled for them, or they are protected",
            )
            .with_metadata("reset_id", id));
        }
        if reset.approval_required {
            // Nothing is applied, so nothing needs locking; an approval checks again.
            let items = stored_items(txn, id).await?;
            check_plan(txn, &reset, items, &selection, Lock::None, Whose::Caller).await?;
            return super::approval::request(txn, caller, reset, approval_window).await;
        }
        store::resets::prepare_bulk(txn).await?;
        let items = stored_items(txn, id).await?;
        let checked =
            check_plan(txn, &reset, items, &selection, Lock::ForUpdate, Whose::Caller).await?;
        let now = crate::domain::now();
        let applied = apply(txn, caller, &reset, &selection, &checked, None, now)
            .instrument(tracing::info_span!("reset.apply"))
            .await?;
        // Expired while it was being applied, by the database's clock: nothing is.
        move_state(
            txn,
            id,
            &[ResetState::Pending],
            ResetState::Confirmed,
            [
                (mfa_resets::Column::ConfirmedBy, caller.subject.clone().into()),
                (mfa_resets::Column::ConfirmedAt, now.into()),
            ],
        )
        .await?;
        tracing::info!(
            reset_id = %id,
            customer_ids = %crate::domain::selection::list_ids(&reset.customer_ids),
            users = applied.users,
            methods_deleted = applied.methods_deleted,
            methods_deactivated = applied.methods_deactivated,
            "MFA reset confirmed"
        );
        reset.state = ResetState::Confirmed;
        reset.confirmed = Some((caller.subject.clone(), now));
        Ok(reset)
    })
    .await
}

/// ABORTED (ETAG_MISMATCH) unless `etag` is the reset's.
pub(super) fn require_etag(reset: &MfaReset, etag: &str) -> DomainResult<()> {
    if etag == reset.etag {
        return Ok(());
    }
    Err(DomainError::Aborted {
        reason: Reason::EtagMismatch,
        message: "the etag is not this reset's; get the reset (or summarize again) and retry"
            .into(),
        details: Details::default().with("reset_id", reset.id),
    })
}

/// Whose roles a check speaks of, in its message.
#[derive(Clone, Copy, Debug)]
pub(super) enum Whose {
    /// The caller's own.
    Caller,
    /// The requester's, checked on an approval.
    Requester,
}

impl Whose {
    fn possessive(self) -> &'static str {
        match self {
            Whose::Caller => "your",
            Whose::Requester => "the requester's",
        }
    }
}

/// A stored plan checked against the state now: its items, and the plan the state gives.
pub(super) struct Checked {
    /// The stored items, in summary order.
    pub items: Vec<PlanItem>,
    /// The plan now.
    pub current: Current,
}

/// The stored items of reset `id`, in summary order.
pub(super) async fn stored_items(
    db: &impl ConnectionTrait,
    id: ResetId,
) -> DomainResult<Vec<PlanItem>> {
    store::resets::items(db, id, None, None, None)
        .await?
        .into_iter()
        .map(stored::item_from_model)
        .collect()
}

/// Re-plans the stored users (`items`) from the requester's point of view (`selection` is resolved
/// for the requester) and checks that nothing differs: a role downgrade since the summary is
/// PERMISSION_DENIED, any other difference ABORTED (PLAN_STALE), an option that no longer
/// applies FAILED_PRECONDITION. With [`Lock::ForUpdate`] the users and methods stay locked
/// until the transaction ends (PostgreSQL).
#[tracing::instrument(name = "reset.plan", skip_all, fields(users = items.len()))]
pub(super) async fn check_plan(
    txn: &impl ConnectionTrait,
    reset: &MfaReset,
    items: Vec<PlanItem>,
    selection: &Selection,
    lock: Lock,
    whose: Whose,
) -> DomainResult<Checked> {
    let user_ids: Vec<_> = items.iter().map(|i| i.user_id).collect();
    let users = store::resets::users_in(txn, &selection.ids(), &user_ids, lock).await?;
    let current = current_plan(
        txn,
        selection,
        users,
        &reset.options,
        &reset.requested_by,
        lock,
    )
    .await?;
    check_still_allowed(&items, &current.items, whose)?;
    // A changed policy or set of kinds is a stale plan, reported as such, before the
    // options are checked against the customers as they are now (which only a summary
    // stored before kinds were kept can still fail).
    stale_check(reset, selection, &items, &current.items)?;
    selection.require_reset_options(reset.options.scope, &reset.options.method_kinds)?;
    Ok(Checked { items, current })
}

/// A role downgrade since the summary (an admin planned for reset would now be
/// protected) is a permission problem, not a stale plan.
fn check_still_allowed(
    stored: &[PlanItem],
    current: &HashMap<UserId, PlanItem>,
    whose: Whose,
) -> DomainResult<()> {
    let mut now_protected: Vec<CustomerId> = stored
        .iter()
        .filter(|s| s.skip_reason.is_none() && s.admin)
        .filter(|s| {
            current
                .get(&s.user_id)
                .is_some_and(|c| c.skip_reason == Some(SkipReason::ProtectedAdmin))
        })
        .map(|s| s.customer_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if now_protected.is_empty() {
        return Ok(());
    }
    now_protected.sort();
    Err(DomainError::PermissionDenied {
        reason: Reason::RoleTooWeak,
        message: format!(
            "{} role no longer allows resetting admins in customer(s) {}",
            whose.possessive(),
            list_ids(&now_protected).replace(',', ", ")
        ),
        customer_ids: now_protected,
        action: Some(Action::ResetAdminMfa),
    })
}

/// ABORTED (PLAN_STALE) listing everything that differs between the stored plan and the state
/// now, or Ok when nothing does.
fn stale_check(
    reset: &MfaReset,
    selection: &Selection,
    stored: &[PlanItem],
    current: &HashMap<UserId, PlanItem>,
) -> DomainResult<()> {
    let mut changes = Vec::new();
    for summarized in &reset.summary.customers {
        if let Some(customer) = selection.get(summarized.customer_id) {
            if customer.mfa_policy != summarized.mfa_policy {
                changes.push(plan::Change {
                    kind: plan::ChangeKind::MfaPolicyChanged,
                    customer_id: customer.id,
                    user_id: None,
                    method_id: None,
                    description: format!(
                        "customer {} MFA policy changed to {}",
                        customer.id, customer.mfa_policy
                    ),
                });
            }
            let kinds_now = plan::sorted_kinds(&customer.enabled_method_kinds);
            if let Some(kinds_then) = &summarized.enabled_method_kinds {
                if *kinds_then != kinds_now {
                    let names = |kinds: &[MethodKind]| {
                        kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    changes.push(plan::Change {
                        kind: plan::ChangeKind::EnabledMethodKindsChanged,
                        customer_id: customer.id,
                        user_id: None,
                        method_id: None,
                        description: format!(
                            "customer {} enabled method kinds changed from {} to {}",
                            customer.id,
                            names(kinds_then),
                            names(&kinds_now)
                        ),
                    });
                }
            }
        }
    }
    for item in stored {
        changes.extend(plan::changes(item, current.get(&item.user_id)));
    }
    if changes.is_empty() {
        return Ok(());
    }
    let more = changes.len().saturating_sub(MAX_LISTED_CHANGES);
    let mut message = format!(
        "the plan is stale; summarize again. Changed: {}",
        changes
            .iter()
            .take(MAX_LISTED_CHANGES)
            .map(|c| c.description.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    let count = changes.len();
    crate::metrics::stale_plan();
    Err(DomainError::Aborted {
        reason: Reason::PlanStale,
        message,
        details: Details {
            violations: changes
                .into_iter()
                .map(|c| Violation::new(c.kind.as_str(), c.subject(), c.description))
                .collect(),
            metadata: Vec::new(),
        }
        .with("reset_id", reset.id)
        .with("change_count", count),
    })
}

/// What an apply changed, for the log line that says so.
#[derive(Clone, Copy, Debug)]
pub(super) struct Applied {
    /// Users reset.
    pub users: usize,
    /// Methods deleted.
    pub methods_deleted: usize,
    /// Hardware tokens deactivated.
    pub methods_deactivated: usize,
}

/// The writes of a confirm or an approval: delete and deactivate the planned methods, mark
/// the users, and write one audit event per affected user (naming the approver, if one):
/// one statement for each kind of write, whatever the number of users. Returns how many
/// users and methods changed.
pub(super) async fn apply(
    txn: &impl ConnectionTrait,
    caller: &Caller,
    reset: &MfaReset,
    selection: &Selection,
    checked: &Checked,
    approved_by: Option<&str>,
    now: DateTime<Utc>,
) -> DomainResult<Applied> {
    let Checked { items, current } = checked;
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
        let mut deleted = BTreeMap::new();
        let mut deactivated = BTreeMap::new();
        for m in &item.methods {
            let (ids, counts) = match m.disposition {
                Disposition::Delete => (&mut delete, &mut deleted),
                Disposition::Deactivate => (&mut deactivate, &mut deactivated),
                Disposition::Keep => continue,
            };
            ids.push(m.id);
            *counts.entry(m.kind).or_insert(0) += 1;
        }
        let required = plan::registration_required_after(item, policy(item.customer_id));
        affected.push(item.user_id);
        if required {
            registration_required.push(item.user_id);
        }
        let after = UserAfter {
            id: item.user_id,
            external_subject: current
                .items
                .get(&item.user_id)
                .and_then(|c| c.external_subject.clone()),
            mfa_registration_required: Some(
                required || current.registration_required.contains(&item.user_id),
            ),
            mfa_reset_at: Some(now),
        };
        let details = AuditDetails::MfaReset {
            scope: reset.options.scope,
            deleted,
            deactivated,
            requested_by: reset.requested_by.clone(),
            approved_by: approved_by.map(str::to_string),
        };
        let event = AuditEvent::new(caller, item.customer_id, details, now)
            .user(after)
            .reset(reset.id)
            .reason(&reset.reason);
        events.push(event);
    }
    let deleted = store::resets::delete_methods(txn, &customer_ids, &delete).await?;
    let deactivated =
        store::resets::deactivate_methods(txn, &customer_ids, &deactivate, now).await?;
    if deleted != delete.len() as u64 || deactivated != deactivate.len() as u64 {
        return Err(lost_race());
    }
    let marked =
        store::resets::mark_users_reset(txn, &customer_ids, &affected, &registration_required, now)
            .await?;
    if marked != affected.len() as u64 {
        return Err(lost_race());
    }
    audit::record(txn, events).await?;
    crate::metrics::users_reset(affected.len());
    Ok(Applied {
        users: affected.len(),
        methods_deleted: delete.len(),
        methods_deactivated: deactivate.len(),
    })
}
