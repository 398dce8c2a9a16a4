//! `mfareset.v1.Customers`.

use tonic::{Request, Response, Status};

use super::{State, caller, convert, paging::Binding, record_customers, validate::Violations};
use crate::{
    domain::{
        customers::{self, NewCustomer},
        ids::CustomerId,
        model::{MethodKind, MfaPolicy},
        paging::PageRequest,
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
        v.finish()?;
        let page =
            customers::list_visible(&self.state.db, &caller, PageRequest { size, after }).await?;
        Ok(Response::new(pb::ListCustomersResponse {
            next_page_token: self.state.page_tokens.seal_id(&binding, page.next),
            customers: page.items.into_iter().map(convert::customer).collect(),
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
        v.finish()?;
        let Some(id) = id else { unreachable_invalid()? };
        record_customers(&[id]);
        let customer = customers::get(&self.state.db, &caller, id).await?;
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(convert::customer(customer)),
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
        v.finish()?;
        record_customers(&ids);
        let (selected, description) =
            customers::describe_selection(&self.state.db, &caller, &ids).await?;
        let mut response = pb::DescribeSelectionResponse {
            customers: selected.into_iter().map(convert::customer).collect(),
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
        let id = v.id("customer_id", &req.customer_id, CustomerId::parse);
        let policy = v.enum_value::<pb::MfaPolicy>("mfa_policy", req.mfa_policy, true);
        let reason = v.text("reason", &req.reason, 0, 500);
        v.finish()?;
        let (Some(id), Some(policy)) = (id, policy.and_then(|p| MfaPolicy::try_from(p).ok()))
        else {
            unreachable_invalid()?
        };
        record_customers(&[id]);
        let customer =
            customers::set_mfa_policy(&self.state.db, &caller, id, policy, &reason).await?;
        Ok(Response::new(pb::SetMfaPolicyResponse {
            customer: Some(convert::customer(customer)),
        }))
    }

    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::CreateCustomerResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let Some(customer) = req.customer else {
            v.add("customer", "is required");
            v.finish()?;
            unreachable_invalid()?
        };
        let name = v.text("customer.name", &customer.name, 1, 200);
        let policy =
            v.enum_value::<pb::MfaPolicy>("customer.mfa_policy", customer.mfa_policy, true);
        if customer.enabled_method_kinds.is_empty() {
            v.add(
                "customer.enabled_method_kinds",
                "enable at least one method kind",
            );
        }
        let kinds: Vec<MethodKind> = customer
            .enabled_method_kinds
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                v.enum_value::<pb::MethodKind>(
                    &format!("customer.enabled_method_kinds[{i}]"),
                    *raw,
                    true,
                )
            })
            .filter_map(|k| MethodKind::try_from(k).ok())
            .collect();
        v.finish()?;
        let Some(mfa_policy) = policy.and_then(|p| MfaPolicy::try_from(p).ok()) else {
            unreachable_invalid()?
        };
        let created = customers::create(
            &self.state.db,
            &caller,
            NewCustomer {
                name,
                mfa_policy,
                enabled_method_kinds: kinds,
            },
        )
        .await?;
        Ok(Response::new(pb::CreateCustomerResponse {
            customer: Some(convert::customer(created)),
        }))
    }
}

/// For `let ... else` after `Violations::finish` succeeded: every value was parsed,
/// so this is never reached; if it were, it is a bug, reported as INTERNAL.
pub(crate) fn unreachable_invalid<T>() -> Result<T, Status> {
    Err(
        crate::domain::DomainError::Internal(anyhow::anyhow!("validated request lost a value"))
            .into(),
    )
}
