//! `mfareset.v1.Users`.

use tonic::{Request, Response, Status};

use super::{
    State, caller, convert,
    customers::unreachable_invalid,
    paging::Binding,
    record_customers,
    resets::{self, SummarizeFields},
    validate::Violations,
};
use crate::{
    domain::{
        ids::{CustomerId, UserId},
        model::{Action, MfaState},
        paging::PageRequest,
        selection::Selection,
        users::{self, NewUser, UserQuery, UserUpdate},
    },
    proto::v1::{self as pb, users_server::Users},
};

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

/// Decodes the optional MFA-state filter shared by the user lists.
pub(crate) fn mfa_state_filter(v: &mut Violations, raw: i32) -> Option<MfaState> {
    v.enum_value::<pb::MfaState>("mfa_state", raw, false)
        .and_then(|s| MfaState::try_from(s).ok())
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
        let prefix = v.optional_text("query", &req.query, 200);
        let mfa_state = mfa_state_filter(&mut v, req.mfa_state);
        let size = v.page_size("page_size", req.page_size);
        let binding = Binding::of(
            "ListUsers",
            &caller.subject,
            &pb::ListUsersRequest {
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
            prefix,
            mfa_state,
            method_kinds: vec![],
        };
        let page = users::list(
            &self.state.db,
            &selection,
            &query,
            PageRequest { size, after },
        )
        .await?;
        Ok(Response::new(pb::ListUsersResponse {
            next_page_token: self.state.page_tokens.seal_id(&binding, page.next),
            users: page.items.into_iter().map(convert::user).collect(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
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
        let user = users::get(&self.state.db, &selection, user_id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let Some(user) = req.user else {
            v.add("user", "is required");
            v.finish()?;
            unreachable_invalid()?
        };
        let customer_id = v.id("user.customer_id", &user.customer_id, CustomerId::parse);
        let display_name = v.text("user.display_name", &user.display_name, 1, 200);
        let email = v.email("user.email", &user.email);
        let external_subject =
            v.optional_text("user.external_subject", &user.external_subject, 255);
        v.finish()?;
        let Some(customer_id) = customer_id else {
            unreachable_invalid()?
        };
        record_customers(&[customer_id]);
        let new = NewUser {
            customer_id,
            display_name,
            email,
            external_subject,
            is_admin: user.is_admin,
        };
        let created = users::create(&self.state.db, &caller, new).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(convert::user(created)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let Some(user) = req.user else {
            v.add("user", "is required");
            v.finish()?;
            unreachable_invalid()?
        };
        let customer_id = v.id("user.customer_id", &user.customer_id, CustomerId::parse);
        let user_id = v.id("user.id", &user.id, UserId::parse);
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "name at least one field to update");
        }
        let mut update = UserUpdate::default();
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "display_name" => update.display_name = Some(v.text("user.display_name", &user.display_name, 1, 200)),
                "email" => update.email = Some(v.email("user.email", &user.email)),
                "external_subject" => {
                    update.external_subject = Some(v.optional_text("user.external_subject", &user.external_subject, 255))
                }
                "is_admin" => update.is_admin = Some(user.is_admin),
                other => v.add(
                    format!("update_mask.paths[{i}]"),
                    format!("{other:?} cannot be updated; use display_name, email, external_subject or is_admin"),
                ),
            }
        }
        v.finish()?;
        let (Some(customer_id), Some(user_id)) = (customer_id, user_id) else {
            unreachable_invalid()?
        };
        record_customers(&[customer_id]);
        let updated = users::update(&self.state.db, &caller, customer_id, user_id, update).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(convert::user(updated)),
        }))
    }

    async fn summarize_mfa_reset(
        &self,
        request: Request<pb::SummarizeMfaResetRequest>,
    ) -> Result<Response<pb::SummarizeMfaResetResponse>, Status> {
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
        Ok(Response::new(pb::SummarizeMfaResetResponse {
            mfa_reset: Some(answer.mfa_reset),
            items: answer.items,
            next_page_token: answer.next_page_token,
        }))
    }

    async fn confirm_mfa_reset(
        &self,
        request: Request<pb::ConfirmMfaResetRequest>,
    ) -> Result<Response<pb::ConfirmMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let reset = resets::confirm(&self.state, &caller, &req.reset_id, &req.etag).await?;
        Ok(Response::new(pb::ConfirmMfaResetResponse {
            mfa_reset: Some(reset),
        }))
    }

    async fn cancel_mfa_reset(
        &self,
        request: Request<pb::CancelMfaResetRequest>,
    ) -> Result<Response<pb::CancelMfaResetResponse>, Status> {
        let caller = caller(&request)?;
        let reset = resets::cancel(&self.state, &caller, &request.into_inner().reset_id).await?;
        Ok(Response::new(pb::CancelMfaResetResponse {
            mfa_reset: Some(reset),
        }))
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
}
