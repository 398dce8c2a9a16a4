//! `mfareset.v1.Users`. Its reset RPCs are decoded and encoded in [`super::resets`], which
//! the AuthenticationMethods service shares.

use tonic::{Request, Response, Status};

use super::{
    State, caller, convert,
    paging::Binding,
    record_customers,
    reply::Reply,
    resets::{self, SummarizeFields},
    validate::Violations,
};
use crate::{
    domain::{
        ids::{CustomerId, UserId},
        model::{MethodKind, MfaState, User},
        paging::PageRequest,
        users::{self, DeletedUser, NewUser, UserQuery, UserRef, UserUpdate},
    },
    proto::v1::{self as pb, users_server::Users},
};

/// Most external subjects one list request may filter by.
const MAX_EXTERNAL_SUBJECTS: usize = 500;
/// Longest external subject.
const MAX_EXTERNAL_SUBJECT_LEN: usize = 255;

/// The Users service.
#[derive(Clone, Debug)]
pub struct UsersService {
    state: State,
}

impl UsersService {
    /// A service over `state`.
    pub fn new(state: State) -> Self {
        UsersService { state }
    }
}

/// The user filters that the user lists (and a reset by filter) share: search text, MFA
/// states and method kinds, under `prefix` (`""` or e.g. `filter.`).
pub(crate) fn user_query(
    v: &mut Violations,
    prefix: &str,
    query: &str,
    mfa_states: &[i32],
    method_kinds: &[i32],
) -> Option<UserQuery> {
    let text = v.optional_text(&format!("{prefix}query"), query, 200);
    let mfa_states =
        v.enum_list::<pb::MfaState, MfaState>(&format!("{prefix}mfa_states"), mfa_states);
    let method_kinds =
        v.enum_list::<pb::MethodKind, MethodKind>(&format!("{prefix}method_kinds"), method_kinds);
    Some(UserQuery {
        search: text,
        mfa_states: mfa_states?,
        method_kinds: method_kinds?,
        external_subjects: Vec::new(),
        order_by: None,
    })
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = v.selection("customer_ids", &req.customer_ids);
        let query = user_query(&mut v, "", &req.query, &req.mfa_states, &[]);
        let subjects = v.distinct_texts(
            "external_subjects",
            &req.external_subjects,
            MAX_EXTERNAL_SUBJECTS,
            MAX_EXTERNAL_SUBJECT_LEN,
        );
        let size = v.page_size("page_size", req.page_size);
        let order = v.user_order("order_by", &req.order_by);
        let binding = Binding::of(
            "ListUsers",
            &caller.subject,
            &pb::ListUsersRequest {
                page_size: 0,
                page_token: String::new(),
                ..req.clone()
            },
        );
        let after = v.user_cursor(&self.state.page_tokens, &binding, &req.page_token);
        let (ids, mut query, external_subjects, size, order, after) =
            v.finish((ids, query, subjects, size, order, after))?;
        query.external_subjects = external_subjects;
        query.order_by = order;
        record_customers(&ids);
        let page = users::list_for(
            &self.state.db,
            &caller.subject,
            &ids,
            &query,
            PageRequest { size, after },
        )
        .await?;
        Ok(Response::new(pb::ListUsersResponse {
            next_page_token: (self.state.page_tokens).seal_user(&binding, page.next.as_ref()),
            users: page.items.iter().map(convert::user).collect(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        use pb::get_user_request::User as Which;
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = v.selection("customer_ids", &req.customer_ids);
        let user = match &req.user {
            None => {
                v.add("user_id", "is required (or external_subject)");
                None
            }
            Some(Which::UserId(id)) => v.id("user_id", id, UserId::parse).map(UserRef::Id),
            Some(Which::ExternalSubject(subject)) => {
                let subject = v.text("external_subject", subject, 1, MAX_EXTERNAL_SUBJECT_LEN);
                Some(UserRef::ExternalSubject(subject))
            }
        };
        let (ids, user) = v.finish((ids, user))?;
        record_customers(&ids);
        let user = users::get_for(&self.state.db, &caller.subject, &ids, &user).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(convert::user(&user)),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key("mfareset.v1.Users/CreateUser", &req, |r| {
            std::mem::take(&mut r.request_id)
        });
        let Some(user) = v.required("user", &req.user) else {
            return Err(v.refusal().into());
        };
        let customer_id = v.id("user.customer_id", &user.customer_id, CustomerId::parse);
        let display_name = v.text("user.display_name", &user.display_name, 1, 200);
        let email = v.email("user.email", &user.email);
        let external_subject = v.optional_text(
            "user.external_subject",
            &user.external_subject,
            MAX_EXTERNAL_SUBJECT_LEN,
        );
        let (key, customer_id) = v.finish((key, customer_id))?;
        record_customers(&[customer_id]);
        let new = NewUser {
            customer_id,
            display_name,
            email,
            external_subject,
            admin: user.admin,
        };
        let reply = Reply::new(|user: &User| pb::CreateUserResponse {
            user: Some(convert::user(user)),
        });
        let answer = users::create(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            new,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key("mfareset.v1.Users/UpdateUser", &req, |r| {
            std::mem::take(&mut r.request_id)
        });
        let Some(user) = v.required("user", &req.user) else {
            return Err(v.refusal().into());
        };
        let customer_id = v.id("user.customer_id", &user.customer_id, CustomerId::parse);
        let user_id = v.id("user.id", &user.id, UserId::parse);
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "name at least one field to update");
        }
        let mut update = UserUpdate::default();
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "display_name" => {
                    update.display_name =
                        Some(v.text("user.display_name", &user.display_name, 1, 200))
                }
                "email" => update.email = Some(v.email("user.email", &user.email)),
                "external_subject" => {
                    update.external_subject = Some(v.optional_text(
                        "user.external_subject",
                        &user.external_subject,
                        MAX_EXTERNAL_SUBJECT_LEN,
                    ))
                }
                "admin" => update.admin = Some(user.admin),
                other => v.add(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "{other:?} cannot be updated; use display_name, email, external_subject or admin"
                    ),
                ),
            }
        }
        let (key, customer_id, user_id) = v.finish((key, customer_id, user_id))?;
        record_customers(&[customer_id]);
        let reply = Reply::new(|user: &User| pb::UpdateUserResponse {
            user: Some(convert::user(user)),
        });
        let answer = users::update(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            customer_id,
            user_id,
            update,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key("mfareset.v1.Users/DeleteUser", &req, |r| {
            std::mem::take(&mut r.request_id)
        });
        let customer_id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let user_id = v.id("user_id", &req.user_id, UserId::parse);
        let reason = v.text("reason", &req.reason, 0, 500);
        let (key, customer_id, user_id) = v.finish((key, customer_id, user_id))?;
        record_customers(&[customer_id]);
        let reply = Reply::new(|deleted: &DeletedUser| pb::DeleteUserResponse {
            user: Some(convert::user(&deleted.user)),
            methods_deleted_count: convert::count(deleted.methods_deleted),
        });
        let answer = users::delete(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            customer_id,
            user_id,
            &reason,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn summarize_mfa_reset(
        &self,
        request: Request<pb::UsersSummarizeMfaResetRequest>,
    ) -> Result<Response<pb::UsersSummarizeMfaResetResponse>, Status> {
        use pb::users_summarize_mfa_reset_request::Target;
        let caller = caller(&request)?;
        let req = request.into_inner();
        let fields = SummarizeFields {
            rpc: "mfareset.v1.Users/SummarizeMfaReset",
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
        let digest_of = pb::UsersSummarizeMfaResetRequest {
            request_id: String::new(),
            ..req.clone()
        };
        let answer = resets::summarize(&self.state, &caller, fields, &digest_of).await?;
        Ok(Response::new(answer))
    }

    async fn confirm_mfa_reset(
        &self,
        request: Request<pb::UsersConfirmMfaResetRequest>,
    ) -> Result<Response<pb::UsersConfirmMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let reset = resets::confirm(
            &self.state,
            &caller,
            "mfareset.v1.Users/ConfirmMfaReset",
            &req.reset_id,
            &req.etag,
            &req.request_id,
        )
        .await?;
        Ok(Response::new(pb::UsersConfirmMfaResetResponse {
            mfa_reset: Some(reset),
        }))
    }

    async fn cancel_mfa_reset(
        &self,
        request: Request<pb::CancelMfaResetRequest>,
    ) -> Result<Response<pb::CancelMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let answer = resets::cancel(&self.state, &caller, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn get_mfa_reset(
        &self,
        request: Request<pb::GetMfaResetRequest>,
    ) -> Result<Response<pb::GetMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let reset = resets::get(&self.state, &caller, &request.into_inner().reset_id).await?;
        Ok(Response::new(pb::GetMfaResetResponse {
            mfa_reset: Some(reset),
        }))
    }

    async fn list_mfa_reset_items(
        &self,
        request: Request<pb::ListMfaResetItemsRequest>,
    ) -> Result<Response<pb::ListMfaResetItemsResponse>, Status> {
        let caller = caller(&request)?;
        let answer = resets::list_items(&self.state, &caller, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_mfa_resets(
        &self,
        request: Request<pb::ListMfaResetsRequest>,
    ) -> Result<Response<pb::ListMfaResetsResponse>, Status> {
        let caller = caller(&request)?;
        let answer = resets::list(&self.state, &caller, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn approve_mfa_reset(
        &self,
        request: Request<pb::ApproveMfaResetRequest>,
    ) -> Result<Response<pb::ApproveMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let answer = resets::approve(&self.state, &caller, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn reject_mfa_reset(
        &self,
        request: Request<pb::RejectMfaResetRequest>,
    ) -> Result<Response<pb::RejectMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let answer = resets::reject(&self.state, &caller, request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}
