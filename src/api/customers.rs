//! `mfareset.v1.Customers`.

use tonic::{Request, Response, Status};

use super::{
    State, caller, convert, paging::Binding, record_customers, reply::Reply, validate::Violations,
};
use crate::{
    domain::{
        customers::{self, NewCustomer, Setting, VisibleCustomer},
        ids::CustomerId,
        model::{MethodKind, MfaPolicy},
        paging::PageRequest,
        reset::MAX_USERS_PER_RESET,
        selection::Offer,
    },
    proto::v1::{self as pb, customers_server::Customers},
};

/// The Customers service.
#[derive(Clone, Debug)]
pub struct CustomersService {
    state: State,
}

impl CustomersService {
    /// A service over `state`.
    pub fn new(state: State) -> Self {
        CustomersService { state }
    }
}

#[tonic::async_trait]
impl Customers for CustomersService {
    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = v.page_size("page_size", req.page_size);
        let binding = Binding::of(
            "ListCustomers",
            &caller.subject,
            &pb::ListCustomersRequest {
                page_size: 0,
                page_token: String::new(),
            },
        );
        let after = v.cursor(&self.state.page_tokens, &binding, &req.page_token);
        let (size, after) = v.finish((size, after))?;
        let page =
            customers::list_visible(&self.state.db, &caller, PageRequest { size, after }).await?;
        Ok(Response::new(pb::ListCustomersResponse {
            next_page_token: self.state.page_tokens.seal_id(&binding, page.next),
            customers: page.items.iter().map(convert::customer).collect(),
        }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let id = v.finish(id)?;
        record_customers(&[id]);
        let customer = customers::get(&self.state.db, &caller, id).await?;
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(convert::customer(&customer)),
        }))
    }

    async fn describe_selection(
        &self,
        request: Request<pb::DescribeSelectionRequest>,
    ) -> Result<Response<pb::DescribeSelectionResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let ids = v.selection("customer_ids", &req.customer_ids);
        let ids = v.finish(ids)?;
        record_customers(&ids);
        let (selected, description) =
            customers::describe_selection(&self.state.db, &caller, &ids).await?;
        let mut response = pb::DescribeSelectionResponse {
            customers: selected.iter().map(convert::customer).collect(),
            ..Default::default()
        };
        for offer in description.common {
            match offer {
                Offer::Action(a) => response.common_actions.push(pb::Action::from(a).into()),
                Offer::ResetScope(s) => response
                    .common_reset_scopes
                    .push(pb::ResetScope::from(s).into()),
                Offer::MethodKind(k) => response
                    .common_method_kinds
                    .push(pb::MethodKind::from(k).into()),
            }
        }
        response.gaps = description
            .gaps
            .into_iter()
            .map(|(offer, lacking)| pb::SelectionGap {
                item: Some(convert::gap_item(offer)),
                customer_ids: lacking.iter().map(ToString::to_string).collect(),
            })
            .collect();
        Ok(Response::new(response))
    }

    async fn set_mfa_policy(
        &self,
        request: Request<pb::SetMfaPolicyRequest>,
    ) -> Result<Response<pb::SetMfaPolicyResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key("mfareset.v1.Customers/SetMfaPolicy", &req, |r| {
            std::mem::take(&mut r.request_id)
        });
        let id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let policy = v.required_enum::<pb::MfaPolicy, MfaPolicy>("mfa_policy", req.mfa_policy);
        let reason = v.text("reason", &req.reason, 0, 500);
        let (key, id, policy) = v.finish((key, id, policy))?;
        record_customers(&[id]);
        let reply = Reply::new(|customer: &VisibleCustomer| pb::SetMfaPolicyResponse {
            customer: Some(convert::customer(customer)),
        });
        let answer = customers::set(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            id,
            Setting::MfaPolicy(policy),
            &reason,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn set_approval_threshold(
        &self,
        request: Request<pb::SetApprovalThresholdRequest>,
    ) -> Result<Response<pb::SetApprovalThresholdResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key("mfareset.v1.Customers/SetApprovalThreshold", &req, |r| {
            std::mem::take(&mut r.request_id)
        });
        let id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let max = MAX_USERS_PER_RESET;
        let threshold = match u32::try_from(req.approval_threshold) {
            Ok(t) if t as usize <= max => Some(t),
            _ => {
                v.add(
                    "approval_threshold",
                    format!("must be 0 (never) to {max}, the most users one reset may cover"),
                );
                None
            }
        };
        let reason = v.text("reason", &req.reason, 0, 500);
        let (key, id, threshold) = v.finish((key, id, threshold))?;
        record_customers(&[id]);
        let reply = Reply::new(
            |customer: &VisibleCustomer| pb::SetApprovalThresholdResponse {
                customer: Some(convert::customer(customer)),
            },
        );
        let answer = customers::set(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            id,
            Setting::ApprovalThreshold(threshold),
            &reason,
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }

    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::CreateCustomerResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = v.request_key("mfareset.v1.Customers/CreateCustomer", &req, |r| {
            std::mem::take(&mut r.request_id)
        });
        let Some(customer) = v.required("customer", &req.customer) else {
            return Err(v.refusal().into());
        };
        let display_name = v.text("customer.display_name", &customer.display_name, 1, 200);
        let policy =
            v.required_enum::<pb::MfaPolicy, MfaPolicy>("customer.mfa_policy", customer.mfa_policy);
        if customer.enabled_method_kinds.is_empty() {
            v.add(
                "customer.enabled_method_kinds",
                "enable at least one method kind",
            );
        }
        let kinds = v.enum_list::<pb::MethodKind, MethodKind>(
            "customer.enabled_method_kinds",
            &customer.enabled_method_kinds,
        );
        let (key, mfa_policy, enabled_method_kinds) = v.finish((key, policy, kinds))?;
        let reply = Reply::new(|customer: &VisibleCustomer| pb::CreateCustomerResponse {
            customer: Some(convert::customer(customer)),
        });
        let answer = customers::create(
            &self.state.db,
            &caller,
            reply.idempotency(key.as_ref()),
            NewCustomer {
                display_name,
                mfa_policy,
                enabled_method_kinds,
            },
        )
        .await?;
        Ok(Response::new(reply.respond(answer)?))
    }
}
