//! `mfareset.v1.AuditLog`.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    State, caller,
    convert::{self, from_timestamp},
    paging::Binding,
    record_customers,
    validate::Violations,
    watch::cursor_expired,
};
use crate::{
    domain::{
        DomainError,
        audit::{
            self, AuditQuery,
            watch::{self, Clock, Position, Scope, WatchQuery},
        },
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

/// The change stream of `WatchAuditEvents`.
pub type AuditEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchAuditEventsResponse, Status>> + Send + 'static>>;

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
        let actions = v.enum_list::<pb::AuditAction, AuditAction>("actions", &req.actions);
        let mut time = |field: &str, ts: &Option<prost_types::Timestamp>| match ts {
            None => Some(None),
            Some(ts) => {
                let at = from_timestamp(ts);
                if at.is_none() {
                    v.add(field, "is not a valid timestamp");
                }
                at.map(Some)
            }
        };
        let start_time = time("start_time", &req.start_time);
        let end_time = time("end_time", &req.end_time);
        if let (Some(Some(start)), Some(Some(end))) = (start_time, end_time) {
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
        let (ids, user_id, actions, start_time, end_time, size, after) =
            v.finish((ids, user_id, actions, start_time, end_time, size, after))?;
        record_customers(&ids);
        let selection =
            Selection::resolve(&self.state.db, &caller.subject, &ids, Action::Read).await?;
        let query = AuditQuery {
            user_id,
            actor,
            actions,
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
            audit_events: page.items.iter().map(convert::audit_event).collect(),
        }))
    }

    type WatchAuditEventsStream = AuditEventStream;

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let watchers = &self.state.watchers;
        let mut v = Violations::new();
        let scope = if req.all_customers {
            if !req.customer_ids.is_empty() {
                v.add("customer_ids", "must be empty when all_customers is set");
            }
            Some(Scope::All)
        } else {
            v.selection("customer_ids", &req.customer_ids)
                .map(Scope::Customers)
        };
        let user_id = v.optional_id("user_id", &req.user_id, UserId::parse);
        let actions = v.enum_list::<pb::AuditAction, AuditAction>("actions", &req.actions);
        let cursor = if req.after_cursor.is_empty() {
            Some(None)
        } else {
            if req.start_at_oldest {
                v.add("start_at_oldest", "cannot be set with after_cursor");
            }
            let position = watchers.open_cursor(&req.after_cursor);
            if position.is_none() {
                v.add(
                    "after_cursor",
                    "is not a cursor of this service's change stream",
                );
            }
            position.map(Some)
        };
        let heartbeat = match &req.heartbeat_interval {
            None => Some(None),
            Some(d) => match std::time::Duration::try_from(*d) {
                Ok(d) => Some(Some(d)),
                Err(_) => {
                    v.add(
                        "heartbeat_interval",
                        "must be a valid, non-negative duration",
                    );
                    None
                }
            },
        };
        let (scope, user_id, actions, cursor, heartbeat) =
            v.finish((scope, user_id, actions, cursor, heartbeat))?;
        if let Scope::Customers(ids) = &scope {
            record_customers(ids);
        }
        let db = &self.state.db;
        watch::authorize(db, &caller.subject, &scope).await?;
        let slot = watchers.claim(&caller.subject)?;
        let clock = Clock::read(db).await?;
        let (start, accepted) = match cursor {
            None => clock.start(req.start_at_oldest),
            Some(position) if clock.expired(position, Position::OLDEST) => {
                return Err(cursor_expired());
            }
            Some(position) if position.seq > clock.latest => {
                return Err(DomainError::invalid(
                    "after_cursor",
                    "is ahead of this audit log (a cursor of another database?)",
                )
                .into());
            }
            Some(position) => (position, Position::OLDEST),
        };
        let query = WatchQuery {
            scope,
            user_id,
            actions,
        };
        let outlet = watchers.start(
            db.clone(),
            caller.subject,
            query,
            (start, accepted),
            watchers.heartbeat(heartbeat),
            slot,
        );
        Ok(Response::new(Box::pin(outlet)))
    }
}
