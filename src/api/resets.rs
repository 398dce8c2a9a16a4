//! The reset RPCs, shared by the Users and AuthenticationMethods services (one engine, two
//! doors): decoding their requests and encoding `MfaReset` and its items.

use prost::Message;
use tonic::Status;

use super::{
    AppState,
    convert::{count, kind_counts, timestamp, wire},
    paging::Binding,
    record_customers, record_reset,
    reply::Reply,
    users::user_query,
    validate::Violations,
};
use crate::{
    domain::{
        Caller,
        ids::{CustomerId, ResetId, UserId},
        model::{MethodKind, MfaPolicy, ResetScope},
        paging::PageRequest,
        reset::{
            self, ItemOutcome, ItemQuery, MfaReset, PlanItem, ResetOptions, ResetQuery,
            ResetRequest, ResetState, ResetTarget, SkipReason, Summarized, UserRefs, plan::Counts,
        },
    },
    proto::v1 as pb,
};

/// Longest external subject.
const MAX_EXTERNAL_SUBJECT_LEN: usize = 255;

/// Most bytes of items in one answer. Pages are cut by size as well as by count, so that no
/// answer nears gRPC's default 4 MiB limit, whatever the users' methods and labels.
const ITEM_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// How a summarize request names its users, whichever service received it.
pub enum Target<'a> {
    /// One by one.
    Users(&'a pb::UserReferences),
    /// By a filter.
    Filter(&'a pb::UserFilter),
}

/// The fields every summarize request has, whichever service received it.
pub struct SummarizeFields<'a> {
    /// The RPC's full name (the request id's key is per RPC).
    pub rpc: &'static str,
    /// `customer_ids`.
    pub customer_ids: &'a [String],
    /// `target`.
    pub users: Option<Target<'a>>,
    /// `options`.
    pub options: Option<&'a pb::MfaResetOptions>,
    /// `reason`.
    pub reason: &'a str,
    /// `page_size`.
    pub page_size: i32,
    /// `request_id`.
    pub request_id: &'a str,
}

/// The binding of `ListMfaResetItems` tokens: the caller, the reset and the filters.
fn items_binding(
    subject: &str,
    reset_id: ResetId,
    request: &pb::ListMfaResetItemsRequest,
) -> Binding {
    Binding::of(
        "ListMfaResetItems",
        subject,
        &pb::ListMfaResetItemsRequest {
            reset_id: reset_id.to_string(),
            page_size: 0,
            page_token: String::new(),
            ..request.clone()
        },
    )
}

fn reset_scope(v: &mut Violations, options: Option<&pb::MfaResetOptions>) -> Option<ResetOptions> {
    let default = pb::MfaResetOptions::default();
    let options = options.unwrap_or(&default);
    let scope = v.enum_value::<pb::ResetScope, ResetScope>("options.scope", options.scope, false);
    let method_kinds =
        v.enum_list::<pb::MethodKind, MethodKind>("options.method_kinds", &options.method_kinds);
    Some(ResetOptions {
        scope: scope?.unwrap_or(ResetScope::All),
        method_kinds: method_kinds?,
    })
}

fn target(v: &mut Violations, users: Option<Target<'_>>) -> Option<ResetTarget> {
    match users {
        None => {
            v.add("users", "is required: name the users, or give a filter");
            None
        }
        Some(Target::Users(refs)) => {
            let total = refs.user_ids.len() + refs.external_subjects.len();
            if total == 0 {
                v.add("users", "name at least one user");
                return None;
            }
            if total > reset::MAX_USERS_PER_RESET {
                v.add(
                    "users",
                    format!("name at most {} users", reset::MAX_USERS_PER_RESET),
                );
                return None;
            }
            let ids = v.distinct_ids(
                "users.user_ids",
                &refs.user_ids,
                0,
                reset::MAX_USERS_PER_RESET,
                "user",
                UserId::parse,
            );
            let subjects = v.distinct_texts(
                "users.external_subjects",
                &refs.external_subjects,
                reset::MAX_USERS_PER_RESET,
                MAX_EXTERNAL_SUBJECT_LEN,
            );
            Some(ResetTarget::Users(UserRefs {
                ids: ids?,
                external_subjects: subjects?,
            }))
        }
        Some(Target::Filter(filter)) => {
            // A list treats such text as no search (every user); a reset must not: "@"
            // would reset the whole selection.
            let searchable = filter.query.trim().is_empty()
                || crate::store::search::Search::new(&filter.query).is_some();
            if !searchable {
                v.add(
                    "filter.query",
                    "holds no letter or digit, so it matches nothing a reset can name; give \
                     text to search for, or none",
                );
            }
            user_query(
                v,
                "filter.",
                &filter.query,
                &filter.mfa_states,
                &filter.method_kinds,
            )
            .map(ResetTarget::Filter)
        }
    }
}

/// `SummarizeMfaReset`, answered as the Users service's response (the AuthenticationMethods
/// response has the same fields, numbered alike). `rest` is the request without its
/// `request_id`.
pub async fn summarize(
    state: &AppState,
    caller: &Caller,
    fields: SummarizeFields<'_>,
    rest: &impl Message,
) -> Result<pb::UsersSummarizeMfaResetResponse, Status> {
    let mut v = Violations::new();
    let key = v.request_key_of(fields.rpc, fields.request_id, rest);
    let customer_ids = v.selection("customer_ids", fields.customer_ids);
    let target = target(&mut v, fields.users);
    let options = reset_scope(&mut v, fields.options);
    let reason = v.text("reason", fields.reason, 1, 500);
    let first_page = v.page_size("page_size", fields.page_size);
    let (key, customer_ids, target, options, first_page) =
        v.finish((key, customer_ids, target, options, first_page))?;
    record_customers(&customer_ids);
    let request = ResetRequest {
        customer_ids,
        target,
        options,
        reason,
    };
    let reply = Reply::new(|summarized: &Summarized| {
        let reset_id = summarized.reset.id;
        record_reset(reset_id);
        let (items, next) = encode_items(
            &summarized.reset,
            summarized.items.items.clone(),
            0,
            summarized.items.next,
        );
        let binding = items_binding(
            &caller.subject,
            reset_id,
            &pb::ListMfaResetItemsRequest::default(),
        );
        pb::UsersSummarizeMfaResetResponse {
            mfa_reset: Some(encode_reset(&summarized.reset)),
            items,
            next_page_token: next
                .map(|position| state.page_tokens.seal(&binding, &position.to_be_bytes()))
                .unwrap_or_default(),
        }
    });
    let answer = reset::summarize(
        &state.db,
        caller,
        reply.idempotency(key.as_ref()),
        request,
        state.reset_ttl,
        first_page,
    )
    .await?;
    reply.respond(answer)
}

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

/// `reset_id`, recorded on the call's span once valid.
fn reset_id(v: &mut Violations, text: &str) -> Option<ResetId> {
    let id = v.id("reset_id", text, ResetId::parse);
    if let Some(id) = id {
        record_reset(id);
    }
    id
}

/// `ConfirmMfaReset` of either service.
pub async fn confirm(
    state: &AppState,
    caller: &Caller,
    rpc: &'static str,
    reset_id_text: &str,
    etag: &str,
    request_id: &str,
) -> Result<pb::MfaReset, Status> {
    let mut v = Violations::new();
    let rest = pb::UsersConfirmMfaResetRequest {
        reset_id: reset_id_text.to_string(),
        etag: etag.to_string(),
        request_id: String::new(),
    };
    let key = v.request_key_of(rpc, request_id, &rest);
    let id = reset_id(&mut v, reset_id_text);
    if etag.is_empty() {
        v.add("etag", "is required: pass the etag the summary returned");
    }
    let (key, id) = v.finish((key, id))?;
    let reply = Reply::new(encode_reset);
    let answer = reset::confirm(
        &state.db,
        caller,
        reply.idempotency(key.as_ref()),
        id,
        etag,
        state.approval_ttl,
    )
    .await?;
    reply.respond(answer)
}

/// `ApproveMfaReset`.
pub async fn approve(
    state: &AppState,
    caller: &Caller,
    request: pb::ApproveMfaResetRequest,
) -> Result<pb::ApproveMfaResetResponse, Status> {
    let mut v = Violations::new();
    let key = v.request_key("mfareset.v1.Users/ApproveMfaReset", &request, |r| {
        std::mem::take(&mut r.request_id)
    });
    let id = reset_id(&mut v, &request.reset_id);
    if request.etag.is_empty() {
        v.add("etag", "is required: pass the etag GetMfaReset returned");
    }
    let (key, id) = v.finish((key, id))?;
    let reply = Reply::new(|reset: &MfaReset| pb::ApproveMfaResetResponse {
        mfa_reset: Some(encode_reset(reset)),
    });
    let answer = reset::approve(
        &state.db,
        caller,
        reply.idempotency(key.as_ref()),
        id,
        &request.etag,
    )
    .await?;
    reply.respond(answer)
}

/// `RejectMfaReset`.
pub async fn reject(
    state: &AppState,
    caller: &Caller,
    request: pb::RejectMfaResetRequest,
) -> Result<pb::RejectMfaResetResponse, Status> {
    let mut v = Violations::new();
    let key = v.request_key("mfareset.v1.Users/RejectMfaReset", &request, |r| {
        std::mem::take(&mut r.request_id)
    });
    let id = reset_id(&mut v, &request.reset_id);
    let reason = v.text("reason", &request.reason, 1, 500);
    let (key, id) = v.finish((key, id))?;
    let reply = Reply::new(|reset: &MfaReset| pb::RejectMfaResetResponse {
        mfa_reset: Some(encode_reset(reset)),
    });
    let answer = reset::reject(
        &state.db,
        caller,
        reply.idempotency(key.as_ref()),
        id,
        &reason,
    )
    .await?;
    reply.respond(answer)
}

/// `CancelMfaReset`.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    request: pb::CancelMfaResetRequest,
) -> Result<pb::CancelMfaResetResponse, Status> {
    let mut v = Violations::new();
    let key = v.request_key("mfareset.v1.Users/CancelMfaReset", &request, |r| {
        std::mem::take(&mut r.request_id)
    });
    let id = reset_id(&mut v, &request.reset_id);
    let reason = v.text("reason", &request.reason, 0, 500);
    let (key, id) = v.finish((key, id))?;
    let reply = Reply::new(|reset: &MfaReset| pb::CancelMfaResetResponse {
        mfa_reset: Some(encode_reset(reset)),
    });
    let answer = reset::cancel(
        &state.db,
        caller,
        reply.idempotency(key.as_ref()),
        id,
        &reason,
    )
    .await?;
    reply.respond(answer)
}

/// `GetMfaReset`.
pub async fn get(
    state: &AppState,
    caller: &Caller,
    reset_id_text: &str,
) -> Result<pb::MfaReset, Status> {
    let mut v = Violations::new();
    let id = reset_id(&mut v, reset_id_text);
    let id = v.finish(id)?;
    Ok(encode_reset(&reset::get(&state.db, caller, id).await?))
}

/// `ListMfaResetItems`.
pub async fn list_items(
    state: &AppState,
    caller: &Caller,
    request: pb::ListMfaResetItemsRequest,
) -> Result<pb::ListMfaResetItemsResponse, Status> {
    let mut v = Violations::new();
    let id = reset_id(&mut v, &request.reset_id);
    let customer_ids = v.distinct_ids(
        "customer_ids",
        &request.customer_ids,
        0,
        crate::domain::selection::MAX_SELECTED_CUSTOMERS,
        "customer",
        CustomerId::parse,
    );
    let outcome = v.enum_value::<pb::MfaResetItemOutcome, ItemOutcomeFilter>(
        "outcome",
        request.outcome,
        false,
    );
    let skip_reasons =
        v.enum_list::<pb::SkipReason, SkipReason>("skip_reasons", &request.skip_reasons);
    if !request.skip_reasons.is_empty()
        && request.outcome == i32::from(pb::MfaResetItemOutcome::Reset)
    {
        v.add(
            "skip_reasons",
            "filters skipped items; it cannot be combined with outcome RESET",
        );
    }
    let size = v.page_size("page_size", request.page_size);
    let (id, customer_ids, outcome, skip_reasons, size) =
        v.finish((id, customer_ids, outcome, skip_reasons, size))?;
    // Bound to the canonical id, as the summary's token is, whatever case the caller used.
    let binding = items_binding(&caller.subject, id, &request);
    let mut v = Violations::new();
    let after = v.position(&state.page_tokens, &binding, &request.page_token);
    let after = v.finish(after)?;
    let query = ItemQuery {
        customer_ids,
        outcome: outcome.map(|o| o.0),
        skip_reasons,
    };
    let (reset, page) =
        reset::list_items(&state.db, caller, id, &query, PageRequest { size, after }).await?;
    let first_position = after.map_or(0, |a| a + 1);
    let (items, next) = encode_items(&reset, page.items, first_position, page.next);
    Ok(pb::ListMfaResetItemsResponse {
        next_page_token: next
            .map(|position| state.page_tokens.seal(&binding, &position.to_be_bytes()))
            .unwrap_or_default(),
        items,
    })
}

/// The outcome filter of `ListMfaResetItems`, decoded like any enum.
struct ItemOutcomeFilter(ItemOutcome);

impl TryFrom<pb::MfaResetItemOutcome> for ItemOutcomeFilter {
    type Error = ();
    fn try_from(value: pb::MfaResetItemOutcome) -> Result<Self, ()> {
        match value {
            pb::MfaResetItemOutcome::Reset => Ok(ItemOutcomeFilter(ItemOutcome::Reset)),
            pb::MfaResetItemOutcome::Skipped => Ok(ItemOutcomeFilter(ItemOutcome::Skipped)),
            pb::MfaResetItemOutcome::Unspecified => Err(()),
        }
    }
}

/// `ListMfaResets`.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    request: pb::ListMfaResetsRequest,
) -> Result<pb::ListMfaResetsResponse, Status> {
    let mut v = Violations::new();
    let ids = v.selection("customer_ids", &request.customer_ids);
    let states = v.enum_list::<pb::MfaResetState, ResetState>("states", &request.states);
    let requested_by = v.optional_text("requested_by", &request.requested_by, 255);
    let size = v.page_size("page_size", request.page_size);
    let binding = Binding::of(
        "ListMfaResets",
        &caller.subject,
        &pb::ListMfaResetsRequest {
            page_size: 0,
            page_token: String::new(),
            ..request.clone()
        },
    );
    let after = v.cursor(&state.page_tokens, &binding, &request.page_token);
    let (ids, states, size, after) = v.finish((ids, states, size, after))?;
    record_customers(&ids);
    let query = ResetQuery {
        states,
        requested_by,
        approvable_by_caller: request.approvable_by_caller,
    };
    let page = reset::list(&state.db, caller, &ids, &query, PageRequest { size, after }).await?;
    Ok(pb::ListMfaResetsResponse {
        next_page_token: state.page_tokens.seal_id(&binding, page.next),
        mfa_resets: page.items.iter().map(encode_reset).collect(),
    })
}

fn encode_counts(c: &Counts) -> pb::MfaResetCounts {
    pb::MfaResetCounts {
        user_count: count(c.users),
        users_to_reset_count: count(c.users_to_reset),
        users_skipped_count: count(c.users_skipped),
        users_skipped_by_reason: c
            .skipped_by_reason
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| pb::SkipReasonCount {
                skip_reason: wire::<_, pb::SkipReason>(*reason),
                user_count: count(*n),
            })
            .collect(),
        users_to_register_count: count(c.users_to_register),
        methods_to_delete_count: count(c.methods_to_delete()),
        methods_to_delete_by_kind: kind_counts(&c.to_delete),
        methods_to_deactivate_count: count(c.methods_to_deactivate()),
        methods_to_deactivate_by_kind: kind_counts(&c.to_deactivate),
        methods_to_keep_count: count(c.methods_to_keep),
    }
}

fn by(
    who_when: &Option<(String, chrono::DateTime<chrono::Utc>)>,
) -> (String, Option<prost_types::Timestamp>) {
    match who_when {
        Some((who, when)) => (who.clone(), Some(timestamp(*when))),
        None => (String::new(), None),
    }
}

/// A reset for the wire.
pub fn encode_reset(reset: &MfaReset) -> pb::MfaReset {
    let (confirmed_by, confirm_time) = by(&reset.confirmed);
    let (approved_by, approve_time) = by(&reset.approved);
    let (cancelled_by, cancel_time) = by(&reset.cancelled);
    let (rejected_by, reject_time) = by(&reset.rejected);
    pb::MfaReset {
        id: reset.id.to_string(),
        state: wire::<_, pb::MfaResetState>(reset.state),
        customer_ids: reset.customer_ids.iter().map(ToString::to_string).collect(),
        options: Some(pb::MfaResetOptions {
            scope: wire::<_, pb::ResetScope>(reset.options.scope),
            method_kinds: reset
                .options
                .method_kinds
                .iter()
                .map(|k| wire::<_, pb::MethodKind>(*k))
                .collect(),
        }),
        reason: reset.reason.clone(),
        etag: reset.etag.clone(),
        requested_by: reset.requested_by.clone(),
        create_time: Some(timestamp(reset.created_at)),
        expire_time: Some(timestamp(reset.expires_at)),
        totals: Some(encode_counts(&reset.summary.totals())),
        customer_summaries: reset
            .summary
            .customers
            .iter()
            .map(|c| pb::MfaResetCustomerSummary {
                customer_id: c.customer_id.to_string(),
                display_name: c.display_name.clone(),
                mfa_policy: wire::<_, pb::MfaPolicy>(c.mfa_policy),
                next_step: match c.mfa_policy {
                    MfaPolicy::Enforced => pb::NextStep::RegisterAtNextSignIn,
                    MfaPolicy::Optional => pb::NextStep::NoneMfaOff,
                }
                .into(),
                counts: Some(encode_counts(&c.counts)),
                approval_required: c.approval_required(),
                approval_threshold: count(c.approval_threshold),
            })
            .collect(),
        approval_required: reset.approval_required,
        filter: reset.filter.as_ref().map(|f| pb::UserFilter {
            query: f.search.clone().unwrap_or_default(),
            mfa_states: f
                .mfa_states
                .iter()
                .map(|s| wire::<_, pb::MfaState>(*s))
                .collect(),
            method_kinds: (f.method_kinds.iter())
                .map(|k| wire::<_, pb::MethodKind>(*k))
                .collect(),
        }),
        confirmed_by,
        confirm_time,
        approved_by,
        approve_time,
        cancelled_by,
        cancel_time,
        rejected_by,
        reject_time,
        rejection_reason: reset.rejection_reason.clone().unwrap_or_default(),
    }
}

/// An item of `reset` for the wire (labels were masked when planned).
pub fn encode_item(reset: &MfaReset, item: PlanItem) -> pb::MfaResetItem {
    pb::MfaResetItem {
        mfa_registration_required_after: reset.registration_required_after(&item),
        user_id: item.user_id.to_string(),
        customer_id: item.customer_id.to_string(),
        display_name: item.display_name,
        external_subject: item.external_subject.unwrap_or_default(),
        admin: item.admin,
        outcome: match item.skip_reason {
            None => pb::MfaResetItemOutcome::Reset,
            Some(_) => pb::MfaResetItemOutcome::Skipped,
        }
        .into(),
        skip_reason: item
            .skip_reason
            .map(wire::<_, pb::SkipReason>)
            .unwrap_or_default(),
        methods: item
            .methods
            .into_iter()
            .map(|m| pb::PlannedMethod {
                method_id: m.id.to_string(),
                kind: wire::<_, pb::MethodKind>(m.kind),
                scope: wire::<_, pb::MethodScope>(m.scope),
                label: m.label,
                state: wire::<_, pb::MethodState>(m.state),
                disposition: wire::<_, pb::MethodDisposition>(m.disposition),
            })
            .collect(),
    }
}
