//! `mfareset.v1.AuditLog`.

use tonic::{Request, Response, Status};

use super::{
    State, caller,
    convert::{self, from_timestamp},
    paging::Binding,
    record_customers,
    validate::Violations,
};
use crate::{
    domain::{
        audit::{self, AuditQuery},
        ids::UserId,
        model::{Action, AuditAction},
        paging::PageRequest,
        selection::Selection,
    },
    proto::v1::{self as pb, audit_log_server::AuditLog},
};

/// The AuditLog service.
#[derive(Clone, Debug)]
pub struct AuditLogService {
    state: State,
}

impl AuditLogService {
    /// A service over `state`.
    pub fn new(state: State) -> Self {
        AuditLogService { state }
    }
}

#[tonic::async_trait]
impl AuditLog for AuditLogService {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = v.selection("customer_ids", &req.customer_ids);
        let user_id = v.optional_id("user_id", &req.user_id, UserId::parse);
        let actor = v.optional_text("actor", &req.actor, 255);
        let action = v
            .enum_value::<pb::AuditAction>("action", req.action, false)
            .and_then(|a| AuditAction::try_from(a).ok());
        let mut time = |field: &str, ts: &Option<prost_types::Timestamp>| {
            ts.as_ref().and_then(|ts| {
                let at = from_timestamp(ts);
                if at.is_none() {
                    v.add(field, "is not a valid timestamp");
                }
                at
            })
        };
        let start_time = time("start_time", &req.start_time);
        let end_time = time("end_time", &req.end_time);
        if let (Some(start), Some(end)) = (start_time, end_time) {
            if end <= start {
                v.add("end_time", "must be after start_time");
            }
        }
        let size = v.page_size("page_size", req.page_size);
        let binding = Binding::of(
            "ListAuditEvents",
            &caller.subject,
            &pb::ListAuditEventsRequest {
                page_size: 0,
                page_token: String::new(),
                ..req.clone()
            },
        );
        let after = v.cursor(&self.state.page_tokens, &binding, &req.page_token);
        v.finish()?;
        record_customers(&ids);
        let selection =
            Selection::resolve(&self.state.db, &caller.subject, &ids, Action::Read).await?;
        let query = AuditQuery {
            user_id,
            actor,
            action,
            start_time,
            end_time,
        };
        let page = audit::list(
            &self.state.db,
            &selection,
            &query,
            PageRequest { size, after },
        )
        .await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            next_page_token: self.state.page_tokens.seal_id(&binding, page.next),
            events: page.items.into_iter().map(convert::audit_event).collect(),
        }))
    }
}
