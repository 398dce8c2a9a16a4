//! How a plan is kept in the database: the per-customer summary as JSON on `mfa_resets`,
//! each user's planned methods as JSON on `mfa_reset_items`. Stored labels are already
//! masked. Summaries written by the first release (without skip reasons, kept methods or
//! approval thresholds) read back with those counted as zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Disposition, MfaReset, PlanItem, PlannedMethod, ResetOptions, ResetState, SkipReason,
    plan::{Counts, CustomerSummary, Summary},
};
use crate::{
    domain::{
        DomainError, DomainResult,
        ids::ResetId,
        model::{MethodKind, MethodScope, MethodState, MfaPolicy, MfaState, ResetScope},
        users::UserQuery,
    },
    store::entities::{mfa_reset_items, mfa_resets},
};

fn broken(what: &str) -> DomainError {
    DomainError::Internal(anyhow::anyhow!("stored MFA reset has an unreadable {what}"))
}

fn parse<T>(what: &str, value: &str, f: fn(&str) -> Option<T>) -> DomainResult<T> {
    f(value).ok_or_else(|| broken(what))
}

#[derive(Serialize, Deserialize)]
struct StoredMethod {
    id: Uuid,
    kind: String,
    scope: String,
    state: String,
    label: String,
    disposition: String,
}

#[derive(Serialize, Deserialize)]
struct StoredCustomer {
    customer_id: Uuid,
    customer_name: String,
    mfa_policy: String,
    #[serde(default)]
    approval_threshold: u32,
    /// Absent in summaries stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled_method_kinds: Option<Vec<String>>,
    users_to_reset: u32,
    users_skipped: u32,
    #[serde(default)]
    skipped_by_reason: BTreeMap<String, u32>,
    #[serde(default)]
    users_to_register: u32,
    methods_to_delete: BTreeMap<String, u32>,
    methods_to_deactivate: BTreeMap<String, u32>,
    #[serde(default)]
    methods_to_keep: u32,
}

/// The stored summary. The first release also stored totals; they are the sum of the
/// customers' counts and are no longer written.
#[derive(Serialize, Deserialize)]
struct StoredSummary {
    customers: Vec<StoredCustomer>,
}

fn kinds_out(counts: &BTreeMap<MethodKind, u32>) -> BTreeMap<String, u32> {
    counts
        .iter()
        .map(|(k, n)| (k.as_str().to_string(), *n))
        .collect()
}

fn kinds_in(counts: BTreeMap<String, u32>) -> DomainResult<BTreeMap<MethodKind, u32>> {
    counts
        .into_iter()
        .map(|(k, n)| Ok((parse("kind", &k, MethodKind::parse)?, n)))
        .collect()
}

/// The summary as stored JSON.
pub fn summary_json(summary: &Summary) -> String {
    let stored = StoredSummary {
        customers: summary
            .customers
            .iter()
            .map(|c| StoredCustomer {
                customer_id: c.customer_id.uuid(),
                customer_name: c.display_name.clone(),
                mfa_policy: c.mfa_policy.as_str().to_string(),
                approval_threshold: c.approval_threshold,
                enabled_method_kinds: c
                    .enabled_method_kinds
                    .as_ref()
                    .map(|kinds| kinds.iter().map(|k| k.as_str().to_string()).collect()),
                users_to_reset: c.counts.users_to_reset,
                users_skipped: c.counts.users_skipped,
                skipped_by_reason: c
                    .counts
                    .skipped_by_reason
                    .iter()
                    .map(|(r, n)| (r.as_str().to_string(), *n))
                    .collect(),
                users_to_register: c.counts.users_to_register,
                methods_to_delete: kinds_out(&c.counts.to_delete),
                methods_to_deactivate: kinds_out(&c.counts.to_deactivate),
                methods_to_keep: c.counts.methods_to_keep,
            })
            .collect(),
    };
    // Serializing these plain structs cannot fail.
    serde_json::to_string(&stored).unwrap_or_default()
}

fn summary_from_json(text: &str) -> DomainResult<Summary> {
    let stored: StoredSummary = serde_json::from_str(text).map_err(|_| broken("summary"))?;
    let customers = stored
        .customers
        .into_iter()
        .map(|c| {
            Ok(CustomerSummary {
                customer_id: c.customer_id.into(),
                display_name: c.customer_name,
                mfa_policy: parse("policy", &c.mfa_policy, MfaPolicy::parse)?,
                approval_threshold: c.approval_threshold,
                enabled_method_kinds: c
                    .enabled_method_kinds
                    .map(|kinds| {
                        kinds
                            .iter()
                            .map(|k| parse("kind", k, MethodKind::parse))
                            .collect::<DomainResult<Vec<_>>>()
                    })
                    .transpose()?,
                counts: Counts {
                    users: c.users_to_reset + c.users_skipped,
                    users_to_reset: c.users_to_reset,
                    users_skipped: c.users_skipped,
                    skipped_by_reason: c
                        .skipped_by_reason
                        .into_iter()
                        .map(|(r, n)| Ok((parse("skip reason", &r, SkipReason::parse)?, n)))
                        .collect::<DomainResult<_>>()?,
                    users_to_register: c.users_to_register,
                    to_delete: kinds_in(c.methods_to_delete)?,
                    to_deactivate: kinds_in(c.methods_to_deactivate)?,
                    methods_to_keep: c.methods_to_keep,
                },
            })
        })
        .collect::<DomainResult<_>>()?;
    Ok(Summary { customers })
}

/// An item row for `reset_id` at `position`.
pub fn item_model(reset_id: ResetId, position: i32, item: &PlanItem) -> mfa_reset_items::Model {
    let methods: Vec<StoredMethod> = item
        .methods
        .iter()
        .map(|m| StoredMethod {
            id: m.id.uuid(),
            kind: m.kind.as_str().into(),
            scope: m.scope.as_str().into(),
            state: m.state.as_str().into(),
            label: m.label.clone(),
            disposition: m.disposition.as_str().into(),
        })
        .collect();
    mfa_reset_items::Model {
        reset_id: reset_id.uuid(),
        customer_id: item.customer_id.uuid(),
        user_id: item.user_id.uuid(),
        position,
        display_name: item.display_name.clone(),
        is_admin: item.admin,
        skip_reason: item.skip_reason.map(|r| r.as_str().to_string()),
        planned_methods: serde_json::to_string(&methods).unwrap_or_default(),
        external_subject: item.external_subject.clone(),
    }
}

/// Reads an item row.
pub fn item_from_model(model: mfa_reset_items::Model) -> DomainResult<PlanItem> {
    let methods: Vec<StoredMethod> =
        serde_json::from_str(&model.planned_methods).map_err(|_| broken("item"))?;
    Ok(PlanItem {
        customer_id: model.customer_id.into(),
        user_id: model.user_id.into(),
        display_name: model.display_name,
        external_subject: model.external_subject,
        admin: model.is_admin,
        skip_reason: model
            .skip_reason
            .as_deref()
            .map(|r| parse("skip reason", r, SkipReason::parse))
            .transpose()?,
        methods: methods
            .into_iter()
            .map(|m| {
                Ok(PlannedMethod {
                    id: m.id.into(),
                    kind: parse("kind", &m.kind, MethodKind::parse)?,
                    scope: parse("scope", &m.scope, MethodScope::parse)?,
                    state: parse("state", &m.state, MethodState::parse)?,
                    label: m.label,
                    disposition: parse("disposition", &m.disposition, Disposition::parse)?,
                })
            })
            .collect::<DomainResult<_>>()?,
    })
}

/// Who did something to a reset, and when: both columns set, or neither counts.
fn by(
    who: Option<String>,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    who.zip(at)
}

/// The filter of a reset by filter, as `target_filter` keeps it (JSON).
#[derive(Serialize, Deserialize)]
struct StoredFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(default)]
    mfa_states: Vec<String>,
    #[serde(default)]
    method_kinds: Vec<String>,
}

fn filter_json(query: &UserQuery) -> String {
    let stored = StoredFilter {
        query: query.search.clone(),
        mfa_states: query
            .mfa_states
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        method_kinds: query
            .method_kinds
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn filter_from_json(json: &str) -> DomainResult<UserQuery> {
    let stored: StoredFilter = serde_json::from_str(json).map_err(|_| broken("filter"))?;
    Ok(UserQuery {
        search: stored.query,
        mfa_states: (stored.mfa_states.iter())
            .map(|s| parse("MFA state", s, MfaState::parse))
            .collect::<DomainResult<_>>()?,
        method_kinds: (stored.method_kinds.iter())
            .map(|k| parse("kind", k, MethodKind::parse))
            .collect::<DomainResult<_>>()?,
        external_subjects: Vec::new(),
        order_by: None,
    })
}

/// Reads a reset row, deriving EXPIRED from the clock. Its customers, in selection
/// order, are those of its summary.
pub fn reset_from_model(
    model: mfa_resets::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> DomainResult<MfaReset> {
    let mut state = parse("state", &model.state, ResetState::parse)?;
    if state.is_open() && now >= model.expires_at {
        state = ResetState::Expired;
    }
    let method_kinds = if model.method_kinds.is_empty() {
        Vec::new()
    } else {
        model
            .method_kinds
            .split(',')
            .map(|k| parse("kind", k, MethodKind::parse))
            .collect::<DomainResult<_>>()?
    };
    let summary = summary_from_json(&model.summary)?;
    Ok(MfaReset {
        id: model.id.into(),
        state,
        customer_ids: summary.customers.iter().map(|c| c.customer_id).collect(),
        options: ResetOptions {
            scope: parse("scope", &model.scope, ResetScope::parse)?,
            method_kinds,
        },
        reason: model.reason,
        etag: model.etag,
        requested_by: model.requested_by,
        created_at: model.created_at,
        expires_at: model.expires_at,
        approval_required: model.approval_required,
        confirmed: by(model.confirmed_by, model.confirmed_at),
        approved: by(model.approved_by, model.approved_at),
        cancelled: by(model.cancelled_by, model.cancelled_at),
        rejected: by(model.rejected_by, model.rejected_at),
        rejection_reason: model.rejection_reason,
        filter: model
            .target_filter
            .as_deref()
            .map(filter_from_json)
            .transpose()?,
        summary,
    })
}

/// A new PENDING reset row.
pub fn new_reset_model(reset: &MfaReset, request_id: Option<String>) -> mfa_resets::Model {
    mfa_resets::Model {
        id: reset.id.uuid(),
        requested_by: reset.requested_by.clone(),
        state: ResetState::Pending.as_str().to_string(),
        scope: reset.options.scope.as_str().to_string(),
        method_kinds: MethodKind::format_list(&reset.options.method_kinds),
        reason: reset.reason.clone(),
        etag: reset.etag.clone(),
        request_id,
        created_at: reset.created_at,
        expires_at: reset.expires_at,
        confirmed_at: None,
        cancelled_at: None,
        summary: summary_json(&reset.summary),
        approval_required: reset.approval_required,
        target_filter: reset.filter.as_ref().map(filter_json),
        confirmed_by: None,
        approved_by: None,
        approved_at: None,
        cancelled_by: None,
        rejected_by: None,
        rejected_at: None,
        rejection_reason: None,
    }
}
