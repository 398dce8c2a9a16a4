//! The first phase: resolve the users a request names, plan each of them, and store the plan
//! as a PENDING reset. Changes nothing else.

use std::collections::HashMap;

use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::{
    MAX_USERS_PER_RESET, MfaReset, PlanItem, ResetRequest, ResetState, ResetTarget, Summarized,
    UserRefs, current_plan, plan, stored,
};
use crate::{
    domain::{
        Caller, DomainError, DomainResult, FieldViolation,
        error::Details,
        idempotency::{self, Answer, Idempotency},
        ids::{ResetId, UserId},
        model::Action,
        paging::Page,
        reason::Reason,
        selection::Selection,
        users::{UserQuery, UserRef, ambiguous, store_filter},
    },
    store::{
        self,
        resets::{Lock, PlanUser},
    },
};

/// Plans a reset and stores it as PENDING until `now + ttl`. Changes nothing else.
///
/// Runs every check the confirm will: the roles (AUTHENTICATION_ADMIN or better in every
/// selected customer), the options (common to the selection), and the users (each inside
/// the selection: every one that is not is listed in one NOT_FOUND, wherever else it
/// exists). With a request id, a retry returns the first summary instead of planning again.
pub async fn summarize(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, Summarized>,
    request: ResetRequest,
    ttl: std::time::Duration,
    first_page: u64,
) -> DomainResult<Answer<Summarized>> {
    if let Some(answer) = idempotency::previous(db, caller, &idempotency).await? {
        return Ok(Answer::Replay(answer));
    }
    let selection =
        Selection::resolve(db, &caller.subject, &request.customer_ids, Action::ResetMfa).await?;
    selection.require_reset_options(request.options.scope, &request.options.method_kinds)?;
    let users = match &request.target {
        ResetTarget::Users(refs) => resolve(db, &selection, refs).await?,
        ResetTarget::Filter(query) => matching(db, &selection, query).await?,
    };
    let order: Vec<_> = users.iter().map(|u| u.id).collect();
    let mut current = current_plan(
        db,
        &selection,
        users,
        &request.options,
        &caller.subject,
        Lock::None,
    )
    .await?;
    let mut items: Vec<PlanItem> = Vec::with_capacity(order.len());
    for id in order {
        let item = current.items.remove(&id.into()).ok_or_else(|| {
            DomainError::Internal(anyhow::anyhow!("a resolved user was not planned"))
        })?;
        items.push(item);
    }

    let filter = match &request.target {
        ResetTarget::Filter(query) => Some(query.clone()),
        ResetTarget::Users(_) => None,
    };
    let id = ResetId::generate();
    let now = crate::domain::now();
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15));
    let summary = plan::summarize(selection.customers(), &items);
    let reset = MfaReset {
        id,
        state: ResetState::Pending,
        customer_ids: selection.customers().iter().map(|c| c.id).collect(),
        etag: plan::etag(
            id,
            &request.options,
            &request.reason,
            selection.customers(),
            &items,
        ),
        options: request.options,
        reason: request.reason,
        requested_by: caller.subject.clone(),
        created_at: now,
        expires_at,
        approval_required: summary.approval_required(),
        confirmed: None,
        approved: None,
        cancelled: None,
        rejected: None,
        rejection_reason: None,
        summary,
        filter,
    };
    let rows = items
        .iter()
        .enumerate()
        .map(|(i, item)| stored::item_model(id, i as i32, item))
        .collect();
    let size = first_page as usize;
    let next = (items.len() > size).then(|| size as i32 - 1);
    items.truncate(size);
    let summarized = Summarized {
        items: Page { items, next },
        reset,
    };

    let txn = store::begin_write(db).await?;
    if let Some(answer) = idempotency::claim(&txn, caller, &idempotency).await? {
        txn.rollback().await?;
        return Ok(Answer::Replay(answer));
    }
    let model = stored::new_reset_model(&summarized.reset, caller.correlation_id.clone());
    store::resets::insert(&txn, model, &selection.ids(), rows).await?;
    idempotency::remember(&txn, caller, &idempotency, &summarized).await?;
    store::commit(txn).await?;
    crate::metrics::reset(crate::metrics::ResetOutcome::Summarized);
    Ok(Answer::New(summarized))
}

/// The users of the selection that `query` matches now, in id order: at most
/// [`MAX_USERS_PER_RESET`]; more is FAILED_PRECONDITION (TOO_MANY_USERS) with the count, so
/// that the administrator narrows the filter. Two statements (three when refused).
async fn matching(
    db: &DatabaseConnection,
    selection: &Selection,
    query: &UserQuery,
) -> DomainResult<Vec<PlanUser>> {
    let customer_ids = selection.ids();
    let filter = store_filter(query);
    let max = MAX_USERS_PER_RESET as u64;
    let ids = store::users::matching_ids(db, &customer_ids, &filter, max + 1).await?;
    if ids.len() as u64 > max {
        // A second statement: users deleted in between must not bring it under the cap.
        let count =
            (store::users::count_matching(db, &customer_ids, &filter).await?).max(ids.len() as u64);
        return Err(DomainError::FailedPrecondition {
            reason: Reason::TooManyUsers,
            message: format!(
                "the filter matches {count} users; one reset covers at most {max}: narrow the filter"
            ),
            details: Details::default()
                .with("user_count", count)
                .with("max_user_count", max),
        });
    }
    let mut users = store::resets::users_in(db, &customer_ids, &ids, Lock::None).await?;
    users.sort_by_key(|u| u.id);
    Ok(users)
}

/// The stored users `refs` name inside the selection, in request order (ids first).
///
/// Every reference that names no user of the selection is listed in one NOT_FOUND; a subject
/// naming users in several selected customers is EXTERNAL_SUBJECT_AMBIGUOUS; a user named
/// twice (by id and by subject) is INVALID_ARGUMENT. One query per chunk of ids and of
/// subjects.
async fn resolve(
    db: &DatabaseConnection,
    selection: &Selection,
    refs: &UserRefs,
) -> DomainResult<Vec<PlanUser>> {
    let customer_ids = selection.ids();
    let mut by_id: HashMap<UserId, PlanUser> =
        store::resets::users_in(db, &customer_ids, &refs.ids, Lock::None)
            .await?
            .into_iter()
            .map(|u| (u.id.into(), u))
            .collect();
    let mut by_subject: HashMap<String, Vec<PlanUser>> = HashMap::new();
    if !refs.external_subjects.is_empty() {
        let found =
            store::resets::users_with_subjects(db, &customer_ids, &refs.external_subjects).await?;
        for user in found {
            if let Some(subject) = user.external_subject.clone() {
                by_subject.entry(subject).or_default().push(user);
            }
        }
    }

    let missing: Vec<String> = refs
        .all()
        .filter(|r| match r {
            UserRef::Id(id) => !by_id.contains_key(id),
            UserRef::ExternalSubject(s) => !by_subject.contains_key(s),
        })
        .map(|r| r.describe())
        .collect();
    if !missing.is_empty() {
        return Err(DomainError::NotFound {
            resource_type: "mfareset.v1.User",
            ids: missing,
        });
    }
    if let Some((subject, found)) = refs
        .external_subjects
        .iter()
        .find_map(|s| by_subject.get(s).filter(|f| f.len() > 1).map(|f| (s, f)))
    {
        let customers = found.iter().map(|u| u.customer_id.into());
        return Err(ambiguous(
            &UserRef::ExternalSubject(subject.clone()),
            customers,
        ));
    }

    let mut users = Vec::with_capacity(refs.len());
    let mut seen: HashMap<Uuid, String> = HashMap::new();
    let mut twice = Vec::new();
    for (i, id) in refs.ids.iter().enumerate() {
        if let Some(user) = by_id.remove(id) {
            seen.insert(user.id, format!("users.user_ids[{i}]"));
            users.push(user);
        }
    }
    for (i, subject) in refs.external_subjects.iter().enumerate() {
        let Some(user) = by_subject.remove(subject).and_then(|mut f| f.pop()) else {
            continue;
        };
        let field = format!("users.external_subjects[{i}]");
        match seen.get(&user.id) {
            Some(first) => twice.push(FieldViolation::new(
                field,
                format!("names the same user as {first}"),
            )),
            None => {
                seen.insert(user.id, field);
                users.push(user);
            }
        }
    }
    if !twice.is_empty() {
        return Err(DomainError::InvalidArgument {
            reason: Reason::InvalidArgument,
            violations: twice,
        });
    }
    Ok(users)
}
