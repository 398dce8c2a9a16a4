//! The reset RPCs, shared by the Users and AuthenticationMethods services (one engine,
//! two doors): decoding their requests and encoding `MfaReset` and its items.

use tonic::Status;

use super::{
    AppState, convert::timestamp, customers::unreachable_invalid, paging::Binding,
    record_customers, validate::Violations,
};
use crate::{
    domain::{
        Caller,
        ids::{ResetId, UserId},
        model::{MethodKind, ResetScope},
        paging::PageRequest,
        reset::{
            self, Disposition, MfaReset, PlanItem, ResetOptions, ResetRequest, ResetState,
            SkipReason,
        },
    },
    proto::v1 as pb,
};

/// The fields every summarize request has, whichever service received it.
pub struct SummarizeFields {
    /// `customer_ids`.
    pub customer_ids: Vec<String>,
    /// `user_ids`.
    pub user_ids: Vec<String>,
    /// `options`.
    pub options: Option<pb::MfaResetOptions>,
    /// `reason`.
    pub reason: String,
    /// `page_size`.
    pub page_size: i32,
}

/// What a summarize answers, whichever service received it.
pub struct SummarizeAnswer {
    /// The stored reset.
    pub mfa_reset: pb::MfaReset,
    /// Its first items.
    pub items: Vec<pb::MfaResetItem>,
    /// Token for `ListMfaResetItems`.
    pub next_page_token: String,
}

/// The binding of `ListMfaResetItems` tokens: the reset and the caller.
fn items_binding(subject: &str, reset_id: &str) -> Binding {
    Binding::of(
        "ListMfaResetItems",
        subject,
        &pb::ListMfaResetItemsRequest {
            reset_id: reset_id.to_string(),
            page_size: 0,
            page_token: String::new(),
        },
    )
}

/// `SummarizeMfaReset`.
pub async fn summarize(
    state: &AppState,
    caller: &Caller,
    fields: SummarizeFields,
) -> Result<SummarizeAnswer, Status> {
    let mut v = Violations::new();
    let customer_ids = v.selection("customer_ids", &fields.customer_ids);
    let user_ids = v.distinct_ids(
        "user_ids",
        &fields.user_ids,
        reset::MAX_USERS_PER_RESET,
        "user",
        UserId::parse,
    );
    let options = fields.options.unwrap_or_default();
    let scope = v
        .enum_value::<pb::ResetScope>("options.scope", options.scope, false)
        .and_then(|s| ResetScope::try_from(s).ok())
        .unwrap_or(ResetScope::All);
    let mut method_kinds: Vec<MethodKind> = options
        .method_kinds
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            v.enum_value::<pb::MethodKind>(&format!("options.method_kinds[{i}]"), *raw, true)
        })
        .filter_map(|k| MethodKind::try_from(k).ok())
        .collect();
    method_kinds.sort();
    method_kinds.dedup();
    let reason = v.text("reason", &fields.reason, 1, 500);
    let first_page = v.page_size("page_size", fields.page_size);
    v.finish()?;
    record_customers(&customer_ids);
    let request = ResetRequest {
        customer_ids,
        user_ids,
        options: ResetOptions {
            scope,
            method_kinds,
        },
        reason,
    };
    let summarized =
        reset::summarize(&state.db, caller, request, state.reset_ttl, first_page).await?;
    let reset_id = summarized.reset.id.to_string();
    let (items, next) = encode_items(
        &summarized.reset,
        summarized.items.items,
        0,
        summarized.items.next,
    );
    let next_page_token = next
        .map(|position| {
            state.page_tokens.seal(
                &items_binding(&caller.subject, &reset_id),
                &position.to_be_bytes(),
            )
        })
        .unwrap_or_default();
    Ok(SummarizeAnswer {
        mfa_reset: encode_reset(summarized.reset),
        items,
        next_page_token,
    })
}

/// Most bytes of items in one answer. Pages are cut by size as well as by count, so that
/// no answer nears gRPC's default 4 MiB limit, whatever the users' methods and labels.
const ITEM_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Encodes a page of items that starts at `first_position`, cutting it short (and
/// continuing after its last item) when it would exceed [`ITEM_PAGE_BYTES`].
fn encode_items(
    reset: &MfaReset,
    items: Vec<PlanItem>,
    first_position: i32,
    next: Option<i32>,
) -> (Vec<pb::MfaResetItem>, Option<i32>) {
    let total = items.len();
    let mut encoded = Vec::with_capacity(total);
    let mut bytes = 0;
    for item in items {
        let item = encode_item(reset, item);
        let len = prost::Message::encoded_len(&item);
        if !encoded.is_empty() && bytes + len > ITEM_PAGE_BYTES {
            break;
        }
        bytes += len;
        encoded.push(item);
    }
    let next = if encoded.len() < total {
        Some(first_position + encoded.len() as i32 - 1)
    } else {
        next
    };
    (encoded, next)
}

fn reset_id(v: &mut Violations, text: &str) -> Option<ResetId> {
    v.id("reset_id", text, ResetId::parse)
}

/// `ConfirmMfaReset`.
pub async fn confirm(
    state: &AppState,
    caller: &Caller,
    reset_id_text: &str,
    etag: &str,
) -> Result<pb::MfaReset, Status> {
    let mut v = Violations::new();
    let id = reset_id(&mut v, reset_id_text);
    if etag.is_empty() {
        v.add("etag", "is required: pass the etag the summary returned");
    }
    v.finish()?;
    let Some(id) = id else { unreachable_invalid()? };
    Ok(encode_reset(
        reset::confirm(&state.db, caller, id, etag).await?,
    ))
}

/// `CancelMfaReset`.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    reset_id_text: &str,
) -> Result<pb::MfaReset, Status> {
    let mut v = Violations::new();
    let id = reset_id(&mut v, reset_id_text);
    v.finish()?;
    let Some(id) = id else { unreachable_invalid()? };
    Ok(encode_reset(reset::cancel(&state.db, caller, id).await?))
}

/// `GetMfaReset`.
pub async fn get(
    state: &AppState,
    caller: &Caller,
    reset_id_text: &str,
) -> Result<pb::MfaReset, Status> {
    let mut v = Violations::new();
    let id = reset_id(&mut v, reset_id_text);
    v.finish()?;
    let Some(id) = id else { unreachable_invalid()? };
    Ok(encode_reset(reset::get(&state.db, caller, id).await?))
}

/// `ListMfaResetItems`.
pub async fn list_items(
    state: &AppState,
    caller: &Caller,
    request: pb::ListMfaResetItemsRequest,
) -> Result<pb::ListMfaResetItemsResponse, Status> {
    let mut v = Violations::new();
    let id = reset_id(&mut v, &request.reset_id);
    let size = v.page_size("page_size", request.page_size);
    // Bound to the canonical id, as the summary's token is, whatever case the caller used.
    let canonical = id.map(|id| id.to_string()).unwrap_or_default();
    let binding = items_binding(&caller.subject, &canonical);
    let after = match request.page_token.as_str() {
        "" => None,
        token => match state.page_tokens.open(&binding, token) {
            Ok(bytes) => match <[u8; 4]>::try_from(bytes.as_slice()) {
                Ok(bytes) => Some(i32::from_be_bytes(bytes)),
                Err(_) => {
                    v.add("page_token", "is malformed");
                    None
                }
            },
            Err(violation) => {
                v.add(violation.field, violation.description);
                None
            }
        },
    };
    v.finish()?;
    let Some(id) = id else { unreachable_invalid()? };
    let (reset, page) =
        reset::list_items(&state.db, caller, id, PageRequest { size, after }).await?;
    let first_position = after.map_or(0, |a| a + 1);
    let (items, next) = encode_items(&reset, page.items, first_position, page.next);
    Ok(pb::ListMfaResetItemsResponse {
        next_page_token: next
            .map(|position| state.page_tokens.seal(&binding, &position.to_be_bytes()))
            .unwrap_or_default(),
        items,
    })
}

/// A reset for the wire.
pub fn encode_reset(reset: MfaReset) -> pb::MfaReset {
    let t = &reset.summary.totals;
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let kind_counts = |counts: &std::collections::BTreeMap<MethodKind, u32>| {
        counts
            .iter()
            .map(|(k, n)| pb::MethodKindCount {
                kind: pb::MethodKind::from(*k).into(),
                count: count(*n),
            })
            .collect()
    };
    pb::MfaReset {
        id: reset.id.to_string(),
        state: match reset.state {
            ResetState::Pending => pb::MfaResetState::Pending,
            ResetState::Confirmed => pb::MfaResetState::Confirmed,
            ResetState::Cancelled => pb::MfaResetState::Cancelled,
            ResetState::Expired => pb::MfaResetState::Expired,
        }
        .into(),
        customer_ids: reset.customer_ids.iter().map(ToString::to_string).collect(),
        options: Some(pb::MfaResetOptions {
            scope: pb::ResetScope::from(reset.options.scope).into(),
            method_kinds: reset
                .options
                .method_kinds
                .iter()
                .map(|k| pb::MethodKind::from(*k).into())
                .collect(),
        }),
        reason: reset.reason,
        etag: reset.etag,
        requested_by: reset.requested_by,
        created_at: Some(timestamp(reset.created_at)),
        expires_at: Some(timestamp(reset.expires_at)),
        confirmed_at: reset.confirmed_at.map(timestamp),
        cancelled_at: reset.cancelled_at.map(timestamp),
        totals: Some(pb::MfaResetTotals {
            users_requested: count(t.users_requested),
            users_to_reset: count(t.users_to_reset),
            users_skipped: count(t.users_skipped),
            methods_to_delete: count(t.methods_to_delete),
            methods_to_deactivate: count(t.methods_to_deactivate),
            methods_to_keep: count(t.methods_to_keep),
        }),
        customers: reset
            .summary
            .customers
            .iter()
            .map(|c| pb::MfaResetCustomerSummary {
                customer_id: c.customer_id.to_string(),
                customer_name: c.customer_name.clone(),
                mfa_policy: pb::MfaPolicy::from(c.mfa_policy).into(),
                users_to_reset: count(c.users_to_reset),
                users_skipped: count(c.users_skipped),
                users_to_register: count(c.users_to_register),
                methods_to_delete: kind_counts(&c.methods_to_delete),
                methods_to_deactivate: kind_counts(&c.methods_to_deactivate),
                next_step: match c.mfa_policy {
                    crate::domain::model::MfaPolicy::Enforced => pb::NextStep::RegisterAtNextSignIn,
                    crate::domain::model::MfaPolicy::Optional => pb::NextStep::NoneMfaOff,
                }
                .into(),
            })
            .collect(),
    }
}

/// An item of `reset` for the wire (labels were masked when planned).
pub fn encode_item(reset: &MfaReset, item: PlanItem) -> pb::MfaResetItem {
    pb::MfaResetItem {
        mfa_registration_required_after: reset.registration_required_after(&item),
        user_id: item.user_id.to_string(),
        customer_id: item.customer_id.to_string(),
        display_name: item.display_name,
        skip_reason: match item.skip_reason {
            None => pb::SkipReason::Unspecified,
            Some(SkipReason::NotEnrolled) => pb::SkipReason::NotEnrolled,
            Some(SkipReason::ProtectedAdmin) => pb::SkipReason::ProtectedAdmin,
            Some(SkipReason::SelfUser) => pb::SkipReason::Self_,
        }
        .into(),
        methods: item
            .methods
            .into_iter()
            .map(|m| pb::PlannedMethod {
                method_id: m.id.to_string(),
                kind: pb::MethodKind::from(m.kind).into(),
                scope: pb::MethodScope::from(m.scope).into(),
                label: m.label,
                disposition: match m.disposition {
                    Disposition::Delete => pb::MethodDisposition::Delete,
                    Disposition::Deactivate => pb::MethodDisposition::Deactivate,
                    Disposition::Keep => pb::MethodDisposition::Keep,
                }
                .into(),
            })
            .collect(),
    }
}
