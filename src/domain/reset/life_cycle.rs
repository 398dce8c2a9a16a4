//! The rest of a reset's life: cancelling it, reading it, listing a selection's resets and
//! paging through a reset's items.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::{
    MfaReset, PlanItem, ResetState, SkipReason, load_visible, move_state, per_customer,
    precheck_requester, require_requester, state_error, stored,
};
use crate::{
    domain::{
        Caller, DomainResult,
        audit::{self, AuditDetails},
        idempotency::{self, Answer, Idempotency},
        ids::{CustomerId, ResetId},
        model::Action,
        paging::{Page, PageRequest},
        selection::Selection,
    },
    store::{
        self,
        entities::mfa_resets,
        resets::{ItemFilter, ListFilter},
    },
};

/// Cancels a PENDING or AWAITING_APPROVAL reset (requester only), with a RESET_CANCELLED
/// audit event per customer of it. Cancelling a cancelled reset returns it.
pub async fn cancel(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, MfaReset>,
    id: ResetId,
    reason: &str,
) -> DomainResult<Answer<MfaReset>> {
    precheck_requester(db, caller, id).await?;
    idempotency::write(db, caller, idempotency, async |txn| {
        let (mut reset, _) = load_visible(txn, caller, id, true).await?;
        require_requester(caller, &reset)?;
        let previous_state = match reset.state {
            ResetState::Pending | ResetState::AwaitingApproval => reset.state,
            ResetState::Cancelled => return Ok(reset),
            _ => return Err(state_error(&reset)),
        };
        let now = crate::domain::now();
        move_state(
            txn,
            id,
            &[previous_state],
            ResetState::Cancelled,
            [
                (
                    mfa_resets::Column::CancelledBy,
                    caller.subject.clone().into(),
                ),
                (mfa_resets::Column::CancelledAt, now.into()),
            ],
        )
        .await?;
        let events = per_customer(caller, &reset, reason, now, |_| {
            AuditDetails::ResetCancelled { previous_state }
        });
        audit::record(txn, events).await?;
        reset.state = ResetState::Cancelled;
        reset.cancelled = Some((caller.subject.clone(), now));
        Ok(reset)
    })
    .await
}

/// A reset, for anyone holding a role in each of its customers.
pub async fn get(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: ResetId,
) -> DomainResult<MfaReset> {
    Ok(load_visible(db, caller, id, false).await?.0)
}

/// What a reset did to one of its users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Their MFA is reset.
    Reset,
    /// They are left alone.
    Skipped,
}

/// Filters of [`list_items`]; they combine with AND.
#[derive(Clone, Debug, Default)]
pub struct ItemQuery {
    /// Only items of these customers (empty: every customer of the reset).
    pub customer_ids: Vec<CustomerId>,
    /// Only items with this outcome.
    pub outcome: Option<ItemOutcome>,
    /// Only skipped items with one of these reasons (empty: every reason).
    pub skip_reasons: Vec<SkipReason>,
}

/// One page of a reset's items, in summary order, with the reset they belong to.
pub async fn list_items(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: ResetId,
    query: &ItemQuery,
    page: PageRequest<i32>,
) -> DomainResult<(MfaReset, Page<PlanItem, i32>)> {
    let (reset, _) = load_visible(db, caller, id, false).await?;
    let filter = ItemFilter {
        customer_ids: query.customer_ids.clone(),
        skipped: query.outcome.map(|o| o == ItemOutcome::Skipped),
        skip_reasons: query.skip_reasons.clone(),
    };
    let rows = store::resets::items(db, id, Some(&filter), page.after, Some(page.size + 1)).await?;
    let page =
        Page::from_rows(rows, page.size, |row| row.position).try_map(stored::item_from_model)?;
    Ok((reset, page))
}

/// Filters of [`list`]; they combine with AND.
#[derive(Clone, Debug, Default)]
pub struct ResetQuery {
    /// Only these states (empty: every state).
    pub states: Vec<ResetState>,
    /// Only resets requested by this principal.
    pub requested_by: Option<String>,
    /// Only resets awaiting approval that the caller may approve.
    pub approvable_by_caller: bool,
}

/// One page of the resets of a selection, newest first. A reset is listed only when every
/// one of its customers is in the selection (where the caller holds a role, checked by
/// resolving it).
pub async fn list(
    db: &impl ConnectionTrait,
    caller: &Caller,
    customer_ids: &[CustomerId],
    query: &ResetQuery,
    page: PageRequest<ResetId>,
) -> DomainResult<Page<MfaReset, ResetId>> {
    let selection = Selection::resolve(db, &caller.subject, customer_ids, Action::Read).await?;
    let now = store::db_now(db).await?;
    let mut filter = ListFilter {
        customer_ids: selection.ids(),
        requested_by: query.requested_by.clone(),
        ..ListFilter::default()
    };
    for state in &query.states {
        match state {
            ResetState::Pending | ResetState::AwaitingApproval => filter.open_states.push(*state),
            ResetState::Expired => filter.expired = true,
            ResetState::Confirmed | ResetState::Cancelled | ResetState::Rejected => {
                filter.final_states.push(*state)
            }
        }
    }
    if query.approvable_by_caller {
        // Awaiting approval, not the caller's own, and only in customers where the caller's
        // roles allow the reset (admins' resets: where they may reset admins), and not
        // resetting the caller's own user.
        let allowed = |action| {
            selection
                .customers()
                .iter()
                .filter(|c| selection.grants().allows(c.id, action))
                .map(|c| c.id)
                .collect()
        };
        filter.approvable_by = Some(store::resets::Approver {
            subject: caller.subject.clone(),
            may_reset: allowed(Action::ResetMfa),
            may_reset_admins: allowed(Action::ResetAdminMfa),
        });
    }
    let rows = store::resets::list(db, &filter, now, page.after, page.size + 1).await?;
    Page::from_rows(rows, page.size, |row| ResetId::from(row.id))
        .try_map(|model| stored::reset_from_model(model, now))
}
