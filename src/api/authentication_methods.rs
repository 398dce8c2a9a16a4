//! `mfareset.v1.AuthenticationMethods`. Its reset RPCs are the same engine as the Users
//! service's, reached from the methods list.

use tonic::{Request, Response, Status};

use super::{
    State, caller, convert,
    paging::Binding,
    record_customers,
    reply::Reply,
    resets::{self, SummarizeFields},
    users::user_query,
    validate::Violations,
};
use crate::{
    domain::{
        ids::{CustomerId, MethodId, UserId},
        methods::{self, NewMethod},
        model::{Action, Method, MethodKind, MethodScope, Removal},
        paging::PageRequest,
        selection::Selection,
    },
    proto::v1::{self as pb, authentication_methods_server::AuthenticationMethods},
};

/// The AuthenticationMethods service.
#[derive(Clone, Debug)]
pub struct AuthenticationMethodsService {
    state: State,
}

impl AuthenticationMethodsService {
    /// A service over `state`.
    pub fn new(state: State) -> Self {
        AuthenticationMethodsService { state }
    }
}

#[tonic::async_trait]
impl AuthenticationMethods for AuthenticationMethodsService {
    async fn list_users_with_methods(
        &self,
        request: Request<pb::ListUsersWithMethodsRequest>,
    ) -> Result<Response<pb::ListUsersWithMethodsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = v.selection("customer_ids", &req.customer_ids);
        let query = user_query(&mut v, "", &req.query, &req.mfa_states, &req.method_kinds);
        let size = v.page_size("page_size", req.page_size);
        let order = v.user_order("order_by", &req.order_by);
        let binding = Binding::of(
            "ListUsersWithMethods",
            &caller.subject,
            &pb::ListUsersWithMethodsRequest {
                page_size: 0,
                page_token: String::new(),
                ..req.clone()
            },
        );
        let after = v.user_cursor(&self.state.page_tokens, &binding, &req.page_token);
        let (ids, mut query, size, order, after) = v.finish((ids, query, size, order, after))?;
        query.order_by = order;
        record_customers(&ids);
        let selection =
            Selection::resolve(&self.state.db, &caller.subject, &ids, Action::Read).await?;
        let page = methods::list_users_with_methods(
            &self.state.db,
            &selection,
            &query,
            PageRequest { size, after },
        )
        .await?;
        Ok(Response::new(pb::ListUsersWithMethodsResponse {
            next_page_token: (self.state.page_tokens).seal_user(&binding, page.next.as_ref()),
            users: page
                .items
                .iter()
                .map(|(user, methods)| pb::UserMethods {
                    user: Some(convert::user(user)),
                    authentication_methods: methods.iter().map(convert::method).collect(),
                })
                .collect(),
        }))
    }

    async fn list_authentication_methods(
        &self,
        request: Request<pb::ListAuthenticationMethodsRequest>,
    ) -> Result<Response<pb::ListAuthenticationMethodsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = v.selection("customer_ids", &req.customer_ids);
        let user_id = v.id("user_id", &req.user_id, UserId::parse);
        let size = v.page_size("page_size", req.page_size);
        let binding = Binding::of(
            "ListAuthenticationMethods",
            &caller.subject,
            &pb::ListAuthenticationMethodsRequest {
                page_size: 0,
                page_token: String::new(),
                ..req.clone()
            },
        );
        let after = v.cursor(&self.state.page_tokens, &binding, &req.page_token);
        let (ids, user_id, size, after) = v.finish((ids, user_id, size, after))?;
        record_customers(&ids);
        let selection =
            Selection::resolve(&self.state.db, &caller.subject, &ids, Action::Read).await?;
        let page = methods::list_of_user(
            &self.state.db,
            &selection,
            user_id,
            PageRequest { size, after },
        )
        .await?;
        Ok(Response::new(pb::ListAuthenticationMethodsResponse {
            next_page_token: self.state.page_tokens.seal_id(&binding, page.next),
            authentication_methods: page.items.iter().map(convert::method).collect(),
        }))
    }

    async fn register_authentication_method(
        &self,
        request: Request<pb::RegisterAuthenticationMethodRequest>,
    ) -> Result<Response<pb::RegisterAuthenticationMethodResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key(
            "mfareset.v1.AuthenticationMethods/RegisterAuthenticationMethod",
            &req,
            |r| std::mem::take(&mut r.request_id),
        );
        let customer_id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let user_id = v.id("user_id", &req.user_id, UserId::parse);
        let kind = v.required_enum::<pb::MethodKind, MethodKind>("kind", req.kind);
        let scope = v.required_enum::<pb::MethodScope, MethodScope>("scope", req.scope);
        let label = v.text("label", &req.label, 1, 200);
        let secret_ref = v.optional_text("secret_ref", &req.secret_ref, 500);
        let (key, customer_id, user_id, kind, scope) =
            v.finish((key, customer_id, user_id, kind, scope))?;
        record_customers(&[customer_id]);
        let new = NewMethod {
            customer_id,
            user_id,
            kind,
            scope,
            label,
            secret_ref,
        };
        let reply = Reply::new(|method: &Method| pb::RegisterAuthenticationMethodResponse {
            authentication_method: Some(convert::method(method)),
        });
        let answer = methods::register(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            new,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn delete_authentication_method(
        &self,
        request: Request<pb::DeleteAuthenticationMethodRequest>,
    ) -> Result<Response<pb::DeleteAuthenticationMethodResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key(
            "mfareset.v1.AuthenticationMethods/DeleteAuthenticationMethod",
            &req,
            |r| std::mem::take(&mut r.request_id),
        );
        let customer_id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let method_id = v.id("method_id", &req.method_id, MethodId::parse);
        let reason = v.text("reason", &req.reason, 0, 500);
        let (key, customer_id, method_id) = v.finish((key, customer_id, method_id))?;
        record_customers(&[customer_id]);
        let reply = Reply::new(|removal: &Removal| pb::DeleteAuthenticationMethodResponse {
            disposition: convert::wire::<_, pb::MethodDisposition>(*removal),
        });
        let answer = methods::delete(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            customer_id,
            method_id,
            &reason,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn summarize_mfa_reset(
        &self,
        request: Request<pb::AuthenticationMethodsSummarizeMfaResetRequest>,
    ) -> Result<Response<pb::AuthenticationMethodsSummarizeMfaResetResponse>, Status> {
        use pb::authentication_methods_summarize_mfa_reset_request::Target;
        let caller = caller(&request)?;
        let req = request.into_inner();
        let fields = SummarizeFields {
            rpc: "mfareset.v1.AuthenticationMethods/SummarizeMfaReset",
            customer_ids: &req.customer_ids,
            users: match &req.target {
                Some(Target::Users(users)) => Some(resets::Target::Users(users)),
                Some(Target::Filter(filter)) => Some(resets::Target::Filter(filter)),
                None => None,
            },
            options: req.options.as_ref(),
            reason: &req.reason,
            page_size: req.page_size,
            request_id: &req.request_id,
        };
        let rest = pb::AuthenticationMethodsSummarizeMfaResetRequest {
            request_id: String::new(),
            ..req.clone()
        };
        let answer = resets::summarize(&self.state, &caller, fields, &rest).await?;
        Ok(Response::new(
            pb::AuthenticationMethodsSummarizeMfaResetResponse {
                mfa_reset: answer.mfa_reset,
                items: answer.items,
                next_page_token: answer.next_page_token,
            },
        ))
    }

    async fn confirm_mfa_reset(
        &self,
        request: Request<pb::AuthenticationMethodsConfirmMfaResetRequest>,
    ) -> Result<Response<pb::AuthenticationMethodsConfirmMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let reset = resets::confirm(
            &self.state,
            &caller,
            "mfareset.v1.AuthenticationMethods/ConfirmMfaReset",
            &req.reset_id,
            &req.etag,
            &req.request_id,
        )
        .await?;
        Ok(Response::new(
            pb::AuthenticationMethodsConfirmMfaResetResponse {
                mfa_reset: Some(reset),
            },
        ))
    }
}
