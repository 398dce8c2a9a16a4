//! Four-eyes approval of large resets. A summary that meets a customer's threshold
//! (`approval_required`) is confirmed by its requester into AWAITING_APPROVAL ([`request`],
//! called by the confirm); another administrator then approves it ([`approve`]: re-planned
//! from the requester's point of view and applied by the confirm's own engine) or rejects it
//! ([`reject`]). Each step is one transaction with its audit events.

use std::collections::BTreeSet;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tracing::Instrument as _;

use super::{
    MfaReset, PlanItem, ResetState,
    confirm::{Checked, Whose, apply, check_plan, require_etag, stored_items},
    load_visible, move_state, per_customer, state_error,
};
use crate::{
    domain::{
        Caller, DomainError, DomainResult,
        audit::{self, AuditDetails},
        error::MetadataValue,
        idempotency::{self, Answer, Idempotency},
        ids::{CustomerId, ResetId},
        model::Action,
        reason::Reason,
        selection::{Selection, list_ids},
    },
    store::{self, entities::mfa_resets, resets::Lock},
};

/// The requester's confirm of a reset that needs approval, after the confirm's checks:
/// AWAITING_APPROVAL until `window` from now, with a RESET_APPROVAL_REQUESTED event per
/// customer of the reset. Nothing else changes.
pub(super) async fn request(
    txn: &impl ConnectionTrait,
    caller: &Caller,
    mut reset: MfaReset,
    window: std::time::Duration,
) -> DomainResult<MfaReset> {
    let now = crate::domain::now();
    let expires_at = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
    move_state(
        txn,
        reset.id,
        &[ResetState::Pending],
        ResetState::AwaitingApproval,
        [
            (
                mfa_resets::Column::ConfirmedBy,
                caller.subject.clone().into(),
            ),
            (mfa_resets::Column::ConfirmedAt, now.into()),
            (mfa_resets::Column::ExpiresAt, expires_at.into()),
        ],
    )
    .await?;
    let events = per_customer(caller, &reset, &reset.reason, now, |c| {
        AuditDetails::ResetApprovalRequested {
            users_to_reset: c.counts.users_to_reset,
            approval_required: c.approval_required(),
        }
    });
    audit::record(txn, events).await?;
    tracing::info!(
        reset_id = %reset.id,
        customer_ids = %list_ids(&reset.customer_ids),
        users = reset.summary.totals().users_to_reset,
        "MFA reset awaits approval"
    );
    reset.state = ResetState::AwaitingApproval;
    reset.confirmed = Some((caller.subject.clone(), now));
    reset.expires_at = expires_at;
    Ok(reset)
}

/// Approves a reset that awaits approval and applies it, all or nothing, through the
/// confirm's engine: re-planned from the requester's point of view (stale: ABORTED
/// PLAN_STALE, nothing applied, still awaiting), under the requester's roles as they are now
/// and the approver's. One MFA_RESET event per user reset (actor the approver, naming the
/// requester) and a RESET_APPROVED event per customer. Approving an approved reset returns
/// it again; concurrent approvals queue on the reset's row lock, so it is applied once.
pub async fn approve(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, MfaReset>,
    id: ResetId,
    etag: &str,
) -> DomainResult<Answer<MfaReset>> {
    let requester = precheck_approver(db, caller, id).await?;
    idempotency::write(db, caller, idempotency, async |txn| {
        // Both principals' roles held until the reset is applied, as a confirm holds the
        // requester's: a revoke of either waits, and none committed before is ignored.
        let (mut reset, approver) = async {
            store::roles::lock_assignments(txn, &[&caller.subject, &requester]).await?;
            load_visible(txn, caller, id, true).await
        }
        .instrument(tracing::info_span!("reset.lock"))
        .await?;
        require_not_requester(caller, &reset)?;
        approver.require(Action::ResetMfa)?;
        require_etag(&reset, etag)?;
        // Before anything is locked for the plan: one who may not approve waits for nothing.
        let items = stored_items(txn, id).await?;
        require_approver_of_items(caller, &approver, items.iter())?;
        match reset.state {
            ResetState::Confirmed if reset.approved.is_some() => return Ok(reset),
            ResetState::AwaitingApproval => {}
            _ => return Err(decision_refused(&reset)),
        }
        // The plan as the requester would make it now, under their roles now.
        let as_requested = Selection::resolve(
            txn,
            &reset.requested_by,
            &reset.customer_ids,
            Action::ResetMfa,
        )
        .await
        .map_err(requesters_roles)?;
        store::resets::prepare_bulk(txn).await?;
        let checked = check_plan(
            txn,
            &reset,
            items,
            &as_requested,
            Lock::ForUpdate,
            Whose::Requester,
        )
        .await?;
        require_approver_of(caller, &approver, &checked)?;

        let now = crate::domain::now();
        let applied = apply(
            txn,
            caller,
            &reset,
            &as_requested,
            &checked,
            Some(&caller.subject),
            now,
        )
        .instrument(tracing::info_span!("reset.apply"))
        .await?;
        move_state(
            txn,
            id,
            &[ResetState::AwaitingApproval],
            ResetState::Confirmed,
            [
                (
                    mfa_resets::Column::ApprovedBy,
                    caller.subject.clone().into(),
                ),
                (mfa_resets::Column::ApprovedAt, now.into()),
            ],
        )
        .await?;
        let events = per_customer(caller, &reset, &reset.reason, now, |c| {
            AuditDetails::ResetApproved {
                requested_by: reset.requested_by.clone(),
                users_reset: c.counts.users_to_reset,
            }
        });
        audit::record(txn, events).await?;
        tracing::info!(
            reset_id = %id,
            customer_ids = %list_ids(&reset.customer_ids),
            requested_by = %reset.requested_by,
            users = applied.users,
            methods_deleted = applied.methods_deleted,
            methods_deactivated = applied.methods_deactivated,
            "MFA reset approved and applied"
        );
        reset.state = ResetState::Confirmed;
        reset.approved = Some((caller.subject.clone(), now));
        Ok(reset)
    })
    .await
}

/// Rejects a reset that awaits approval (REJECTED), with `reason` and a RESET_REJECTED event
/// per customer; nothing is applied. Needs what an approval needs of the approver.
/// Rejecting a rejected reset returns it again.
pub async fn reject(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, MfaReset>,
    id: ResetId,
    reason: &str,
) -> DomainResult<Answer<MfaReset>> {
    precheck_approver(db, caller, id).await?;
    idempotency::write(db, caller, idempotency, async |txn| {
        store::roles::lock_assignments(txn, &[&caller.subject]).await?;
        let (mut reset, approver) = load_visible(txn, caller, id, true).await?;
        require_not_requester(caller, &reset)?;
        approver.require(Action::ResetMfa)?;
        let items = stored_items(txn, id).await?;
        require_approver_of_items(caller, &approver, items.iter())?;
        match reset.state {
            ResetState::Rejected => return Ok(reset),
            ResetState::AwaitingApproval => {}
            _ => return Err(decision_refused(&reset)),
        }

        let now = crate::domain::now();
        move_state(
            txn,
            id,
            &[ResetState::AwaitingApproval],
            ResetState::Rejected,
            [
                (
                    mfa_resets::Column::RejectedBy,
                    caller.subject.clone().into(),
                ),
                (mfa_resets::Column::RejectedAt, now.into()),
                (
                    mfa_resets::Column::RejectionReason,
                    reason.to_string().into(),
                ),
            ],
        )
        .await?;
        let events = per_customer(caller, &reset, reason, now, |_| {
            AuditDetails::ResetRejected {
                requested_by: reset.requested_by.clone(),
            }
        });
        audit::record(txn, events).await?;
        reset.state = ResetState::Rejected;
        reset.rejected = Some((caller.subject.clone(), now));
        reset.rejection_reason = Some(reason.to_string());
        Ok(reset)
    })
    .await
}

/// Checks that need no lock, made before a write transaction begins (see
/// `precheck_requester`); returns the reset's requester.
async fn precheck_approver(
    db: &DatabaseConnection,
    caller: &Caller,
    id: ResetId,
) -> DomainResult<String> {
    let (reset, approver) = load_visible(db, caller, id, false).await?;
    require_not_requester(caller, &reset)?;
    approver.require(Action::ResetMfa)?;
    let items = stored_items(db, id).await?;
    require_approver_of_items(caller, &approver, items.iter())?;
    Ok(reset.requested_by)
}

/// Why a reset in this state cannot be approved or rejected: a reset that needed no
/// approval is RESET_NOT_AWAITING_APPROVAL whatever its state, as a pending one is; the rest
/// say their state.
fn decision_refused(reset: &MfaReset) -> DomainError {
    if reset.approval_required || reset.state == ResetState::Pending {
        return state_error(reset);
    }
    DomainError::precondition(
        Reason::ResetNotAwaitingApproval,
        "the reset needs no approval: its requester confirms it",
    )
    .with_metadata("reset_id", reset.id)
    .with_metadata_value("state", MetadataValue::ResetState(reset.state))
}

/// FAILED_PRECONDITION (SELF_APPROVAL) for the requester: a second administrator decides.
fn require_not_requester(caller: &Caller, reset: &MfaReset) -> DomainResult<()> {
    if reset.requested_by != caller.subject {
        return Ok(());
    }
    Err(DomainError::precondition(
        Reason::SelfApproval,
        "you requested this reset: another administrator must approve or reject it (you may cancel it)",
    )
    .with_metadata("reset_id", reset.id))
}

/// The approver's part of an approval, against the plan as it is now: see
/// [`require_approver_of_items`].
fn require_approver_of(
    caller: &Caller,
    approver: &Selection,
    checked: &Checked,
) -> DomainResult<()> {
    require_approver_of_items(
        caller,
        approver,
        checked.items.iter().chain(
            checked
                .current
                .items
                .values()
                .filter(|i| i.skip_reason.is_none()),
        ),
    )
}

/// PERMISSION_DENIED unless the approver may reset admins wherever these items reset one
/// (ROLE_TOO_WEAK), and is not one of the users they reset (SELF). Skipped items count for
/// neither.
fn require_approver_of_items<'a>(
    caller: &Caller,
    approver: &Selection,
    items: impl Iterator<Item = &'a PlanItem>,
) -> DomainResult<()> {
    let mut admins_in = BTreeSet::new();
    let mut resets_approver = false;
    for item in items.filter(|i| i.skip_reason.is_none()) {
        if item.admin {
            admins_in.insert(item.customer_id);
        }
        resets_approver |= item.external_subject.as_deref() == Some(caller.subject.as_str());
    }
    if resets_approver {
        return Err(DomainError::permission(
            Reason::SelfUser,
            "this reset resets your own user's MFA: another administrator must approve it",
        ));
    }
    let lacking: Vec<CustomerId> = admins_in
        .into_iter()
        .filter(|&c| !approver.grants().allows(c, Action::ResetAdminMfa))
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    Err(DomainError::PermissionDenied {
        reason: Reason::RoleTooWeak,
        message: format!(
            "this reset resets admins in customer(s) {}, where your role does not allow {}",
            list_ids(&lacking).replace(',', ", "),
            Action::ResetAdminMfa.as_str()
        ),
        customer_ids: lacking,
        action: Some(Action::ResetAdminMfa),
    })
}

/// The requester's roles no longer allowing the reset, told to the approver as such
/// (PERMISSION_DENIED, ROLE_TOO_WEAK, naming the customers).
fn requesters_roles(error: DomainError) -> DomainError {
    match error {
        DomainError::PermissionDenied {
            customer_ids,
            action,
            ..
        } => {
            let action = action.unwrap_or(Action::ResetMfa);
            DomainError::PermissionDenied {
                reason: Reason::RoleTooWeak,
                message: format!(
                    "the requester's roles no longer allow {} in customer(s) {}: the reset cannot be approved; reject it",
                    action.as_str(),
                    list_ids(&customer_ids).replace(',', ", ")
                ),
                customer_ids,
                action: Some(action),
            }
        }
        other => other,
    }
}
