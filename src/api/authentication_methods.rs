//! `mfareset.v1.AuthenticationMethods`. Its reset RPCs are the same engine as the
//! Users service's, reached from the methods list.

use tonic::{Request, Response, Status};

use super::{
    State, caller, convert,
    customers::unreachable_invalid,
    paging::Binding,
    record_customers,
    resets::{self, SummarizeFields},
    users::mfa_state_filter,
    validate::Violations,
};
use crate::{
    domain::{
        ids::{CustomerId, MethodId, UserId},
        methods::{self, NewMethod},
        model::{Action, MethodKind, MethodScope, Removal},
        paging::PageRequest,
        selection::Selection,
        users::UserQuery,
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
        let method_kinds: Vec<MethodKind> = req
            .method_kinds
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                v.enum_value::<pb::MethodKind>(&format!("method_kinds[{i}]"), *raw, true)
            })
            .filter_map(|k| MethodKind::try_from(k).ok())
            .collect();
        let mfa_state = mfa_state_filter(&mut v, req.mfa_state);
        let size = v.page_size("page_size", req.page_size);
        let binding = Binding::of(
            "ListUsersWithMethods",
            &caller.subject,
            &pb::ListUsersWithMethodsRequest {
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
        let query = UserQuery {
            prefix: None,
            mfa_state,
            method_kinds,
        };
        let page = methods::list_users_with_methods(
            &self.state.db,
            &selection,
            &query,
            PageRequest { size, after },
        )
        .await?;
        Ok(Response::new(pb::ListUsersWithMethodsResponse {
            next_page_token: self.state.page_tokens.seal_id(&binding, page.next),
            users: page
                .items
                .into_iter()
                .map(|(user, methods)| pb::UserMethods {
                    user: Some(convert::user(user)),
                    methods: methods.into_iter().map(convert::method).collect(),
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
        v.finish()?;
        let Some(user_id) = user_id else {
            unreachable_invalid()?
        };
        record_customers(&ids);
        let selection =
            Selection::resolve(&self.state.db, &caller.subject, &ids, Action::Read).await?;
        let methods = methods::list_of_user(&self.state.db, &selection, user_id).await?;
        Ok(Response::new(pb::ListAuthenticationMethodsResponse {
            methods: methods.into_iter().map(convert::method).collect(),
        }))
    }

    async fn register_authentication_method(
        &self,
        request: Request<pb::RegisterAuthenticationMethodRequest>,
    ) -> Result<Response<pb::RegisterAuthenticationMethodResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let user_id = v.id("user_id", &req.user_id, UserId::parse);
        let kind = v
            .enum_value::<pb::MethodKind>("kind", req.kind, true)
            .and_then(|k| MethodKind::try_from(k).ok());
        let scope = v
            .enum_value::<pb::MethodScope>("scope", req.scope, true)
            .and_then(|s| MethodScope::try_from(s).ok());
        let label = v.text("label", &req.label, 1, 200);
        let secret_ref = v.optional_text("secret_ref", &req.secret_ref, 500);
        v.finish()?;
        let (Some(customer_id), Some(user_id), Some(kind), Some(scope)) =
            (customer_id, user_id, kind, scope)
        else {
            unreachable_invalid()?
        };
        record_customers(&[customer_id]);
        let new = NewMethod {
            customer_id,
            user_id,
            kind,
            scope,
            label,
            secret_ref,
        };
        let method = methods::register(&self.state.db, &caller, new).await?;
        Ok(Response::new(pb::RegisterAuthenticationMethodResponse {
            method: Some(convert::method(method)),
        }))
    }

    async fn delete_authentication_method(
        &self,
        request: Request<pb::DeleteAuthenticationMethodRequest>,
    ) -> Result<Response<pb::DeleteAuthenticationMethodResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let method_id = v.id("method_id", &req.method_id, MethodId::parse);
        let reason = v.text("reason", &req.reason, 0, 500);
        v.finish()?;
        let (Some(customer_id), Some(method_id)) = (customer_id, method_id) else {
            unreachable_invalid()?
        };
        record_customers(&[customer_id]);
        let removal =
            methods::delete(&self.state.db, &caller, customer_id, method_id, &reason).await?;
        let disposition = match removal {
            Removal::Delete => pb::MethodDisposition::Delete,
            Removal::Deactivate => pb::MethodDisposition::Deactivate,
        };
        Ok(Response::new(pb::DeleteAuthenticationMethodResponse {
            disposition: disposition.into(),
        }))
    }

    async fn summarize_mfa_reset(
        &self,
        request: Request<pb::AuthenticationMethodsSummarizeMfaResetRequest>,
    ) -> Result<Response<pb::AuthenticationMethodsSummarizeMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let fields = SummarizeFields {
            customer_ids: req.customer_ids,
            user_ids: req.user_ids,
            options: req.options,
            reason: req.reason,
            page_size: req.page_size,
        };
        let answer = resets::summarize(&self.state, &caller, fields).await?;
        Ok(Response::new(
            pb::AuthenticationMethodsSummarizeMfaResetResponse {
                mfa_reset: Some(answer.mfa_reset),
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
        let reset = resets::confirm(&self.state, &caller, &req.reset_id, &req.etag).await?;
        Ok(Response::new(
            pb::AuthenticationMethodsConfirmMfaResetResponse {
                mfa_reset: Some(reset),
            },
        ))
    }
}
