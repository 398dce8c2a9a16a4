//! How a plan is kept in the database: the summary as JSON on `mfa_resets`, each user's
//! planned methods as JSON on `mfa_reset_items`. Stored labels are already masked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Disposition, MfaReset, PlanItem, PlannedMethod, ResetOptions, ResetState, SkipReason,
    plan::{CustomerSummary, Summary, Totals},
};
use crate::{
    domain::{
        DomainError, DomainResult,
        ids::ResetId,
        model::{MethodKind, MethodScope, MethodState, MfaPolicy, ResetScope},
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
    users_to_reset: u32,
    users_skipped: u32,
    #[serde(default)]
    users_to_register: u32,
    methods_to_delete: BTreeMap<String, u32>,
    methods_to_deactivate: BTreeMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
struct StoredTotals {
    users_requested: u32,
    users_to_reset: u32,
    users_skipped: u32,
    methods_to_delete: u32,
    methods_to_deactivate: u32,
    methods_to_keep: u32,
}

#[derive(Serialize, Deserialize)]
struct StoredSummary {
    customers: Vec<StoredCustomer>,
    totals: StoredTotals,
}

fn counts_out(counts: &BTreeMap<MethodKind, u32>) -> BTreeMap<String, u32> {
    counts
        .iter()
        .map(|(k, n)| (k.as_str().to_string(), *n))
        .collect()
}

fn counts_in(counts: BTreeMap<String, u32>) -> DomainResult<BTreeMap<MethodKind, u32>> {
    counts
        .into_iter()
        .map(|(k, n)| Ok((parse("kind", &k, MethodKind::parse)?, n)))
        .collect()
}

/// The summary as stored JSON.
pub fn summary_json(summary: &Summary) -> String {
    let t = &summary.totals;
    let stored = StoredSummary {
        customers: summary
            .customers
            .iter()
            .map(|c| StoredCustomer {
                customer_id: c.customer_id.uuid(),
                customer_name: c.customer_name.clone(),
                mfa_policy: c.mfa_policy.as_str().to_string(),
                users_to_reset: c.users_to_reset,
                users_skipped: c.users_skipped,
                users_to_register: c.users_to_register,
                methods_to_delete: counts_out(&c.methods_to_delete),
                methods_to_deactivate: counts_out(&c.methods_to_deactivate),
            })
            .collect(),
        totals: StoredTotals {
            users_requested: t.users_requested,
            users_to_reset: t.users_to_reset,
            users_skipped: t.users_skipped,
            methods_to_delete: t.methods_to_delete,
            methods_to_deactivate: t.methods_to_deactivate,
            methods_to_keep: t.methods_to_keep,
        },
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn summary_from_json(text: &str) -> DomainResult<Summary> {
    let stored: StoredSummary = serde_json::from_str(text).map_err(|_| broken("summary"))?;
    let t = stored.totals;
    Ok(Summary {
        customers: stored
            .customers
            .into_iter()
            .map(|c| {
                Ok(CustomerSummary {
                    customer_id: c.customer_id.into(),
                    customer_name: c.customer_name,
                    mfa_policy: parse("policy", &c.mfa_policy, MfaPolicy::parse)?,
                    users_to_reset: c.users_to_reset,
                    users_skipped: c.users_skipped,
                    users_to_register: c.users_to_register,
                    methods_to_delete: counts_in(c.methods_to_delete)?,
                    methods_to_deactivate: counts_in(c.methods_to_deactivate)?,
                })
            })
            .collect::<DomainResult<_>>()?,
        totals: Totals {
            users_requested: t.users_requested,
            users_to_reset: t.users_to_reset,
            users_skipped: t.users_skipped,
            methods_to_delete: t.methods_to_delete,
            methods_to_deactivate: t.methods_to_deactivate,
            methods_to_keep: t.methods_to_keep,
        },
    })
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
        is_admin: item.is_admin,
        skip_reason: item.skip_reason.map(|r| r.as_str().to_string()),
        planned_methods: serde_json::to_string(&methods).unwrap_or_default(),
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
        is_admin: model.is_admin,
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

/// Reads a reset row, deriving EXPIRED from the clock. Its customers, in selection
/// order, are those of its summary.
pub fn reset_from_model(
    model: mfa_resets::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> DomainResult<MfaReset> {
    let mut state = parse("state", &model.state, ResetState::parse)?;
    if state == ResetState::Pending && now >= model.expires_at {
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
        confirmed_at: model.confirmed_at,
        cancelled_at: model.cancelled_at,
        summary,
    })
}
