//! Authentication methods: review them across a selection, register them
//! (provisioning), and delete one.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::{
    Caller,
    audit::{self, AuditDetails, AuditEvent, UserAfter},
    error::{Details, DomainError, DomainResult, MetadataValue},
    idempotency::{self, Answer, Idempotency},
    ids::{CustomerId, MethodId, UserId},
    model::{Action, Method, MethodKind, MethodScope, MethodState, Removal, User},
    paging::{Page, PageRequest},
    reason::Reason,
    selection::Selection,
    users::{self, UserCursor, UserQuery, UserRef},
};
use crate::store::{self, entities::authentication_methods, users::UserLock};

const RESOURCE: &str = "mfareset.v1.AuthenticationMethod";

/// Most methods one user may hold, so that one user's list never needs paging.
pub const MAX_METHODS_PER_USER: u64 = 50;

pub(crate) fn from_model(m: authentication_methods::Model) -> DomainResult<Method> {
    let broken = |what: &str, value: &str| {
        DomainError::Internal(anyhow::anyhow!(
            "method {} has unknown {what} {value:?}",
            m.id
        ))
    };
    Ok(Method {
        id: m.id.into(),
        customer_id: m.customer_id.into(),
        user_id: m.user_id.into(),
        kind: MethodKind::parse(&m.kind).ok_or_else(|| broken("kind", &m.kind))?,
        scope: MethodScope::parse(&m.scope).ok_or_else(|| broken("scope", &m.scope))?,
        state: MethodState::parse(&m.state).ok_or_else(|| broken("state", &m.state))?,
        has_secret_ref: m.secret_ref.is_some(),
        label: m.label,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// One page of the selection's users, each with all their methods; two queries per
/// page whatever its size.
pub async fn list_users_with_methods(
    db: &impl ConnectionTrait,
    selection: &Selection,
    query: &UserQuery,
    page: PageRequest<UserCursor>,
) -> DomainResult<Page<(User, Vec<Method>), UserCursor>> {
    let page = users::list(db, selection, query, page).await?;
    let user_ids: Vec<UserId> = page.items.iter().map(|u| u.id).collect();
    let mut by_user: HashMap<UserId, Vec<Method>> = HashMap::new();
    for model in store::methods::of_users(db, &selection.ids(), &user_ids).await? {
        let method = from_model(model)?;
        by_user.entry(method.user_id).or_default().push(method);
    }
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|user| {
                let methods = by_user.remove(&user.id).unwrap_or_default();
                (user, methods)
            })
            .collect(),
        next: page.next,
    })
}

/// One page of the methods of one user of the selection, ordered by id.
pub async fn list_of_user(
    db: &impl ConnectionTrait,
    selection: &Selection,
    user_id: UserId,
    page: PageRequest<MethodId>,
) -> DomainResult<Page<Method, MethodId>> {
    let user = users::get(db, selection, &UserRef::Id(user_id)).await?;
    let rows =
        store::methods::of_user(db, user.customer_id, user_id, page.after, page.size + 1).await?;
    Page::from_rows(rows, page.size, |row| MethodId::from(row.id)).try_map(from_model)
}

/// A method to register; values already validated at the edge.
#[derive(Clone, Debug)]
pub struct NewMethod {
    /// Customer.
    pub customer_id: CustomerId,
    /// User.
    pub user_id: UserId,
    /// Kind; must be enabled in the customer.
    pub kind: MethodKind,
    /// Scope.
    pub scope: MethodScope,
    /// Raw label.
    pub label: String,
    /// Opaque reference to the secret's keeper.
    pub secret_ref: Option<String>,
}

/// Registers a method (PROVISIONER). The user has MFA again, so their
/// `mfa_registration_required` is cleared in the same transaction.
pub async fn register(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, Method>,
    new: NewMethod,
) -> DomainResult<Answer<Method>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        let selection =
            Selection::resolve(txn, &caller.subject, &[new.customer_id], Action::Provision).await?;
        let customer = selection.only()?;
        // The user locked before its methods are counted: concurrent registrations for one
        // user take turns, so the cap holds.
        store::users::lock(txn, customer.id, new.user_id, UserLock::Change).await?;
        let user = users::get(txn, &selection, &UserRef::Id(new.user_id)).await?;
        if !customer.enabled_method_kinds.contains(&new.kind) {
            return Err(DomainError::FailedPrecondition {
                reason: Reason::MethodKindNotEnabled,
                message: format!(
                    "method kind {} is not enabled in customer {}",
                    new.kind, customer.id
                ),
                details: Details::default()
                    .with("customer_id", customer.id)
                    .with_value("method_kind", MetadataValue::MethodKind(new.kind)),
            });
        }
        if store::methods::count_of_user(txn, customer.id, user.id).await? >= MAX_METHODS_PER_USER {
            return Err(DomainError::precondition(
                Reason::TooManyMethods,
                format!("a user may hold at most {MAX_METHODS_PER_USER} methods"),
            )
            .with_metadata("max_method_count", MAX_METHODS_PER_USER));
        }
        let now = super::now();
        let model = authentication_methods::Model {
            id: MethodId::generate().uuid(),
            customer_id: customer.id.uuid(),
            user_id: user.id.uuid(),
            kind: new.kind.as_str().to_string(),
            scope: new.scope.as_str().to_string(),
            label: new.label,
            state: MethodState::Active.as_str().to_string(),
            secret_ref: new.secret_ref,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        let model = store::methods::insert(txn, model).await?;
        store::users::clear_registration_required(txn, customer.id, user.id, now).await?;
        let after = UserAfter {
            mfa_registration_required: Some(false),
            ..UserAfter::from(&user)
        };
        let details = AuditDetails::MethodRegistered {
            kind: new.kind,
            scope: new.scope,
        };
        let event = AuditEvent::new(caller, customer.id, details, now)
            .user(after)
            .method(model.id.into());
        audit::record(txn, vec![event]).await?;
        from_model(model)
    })
    .await
}

/// Deletes one method, or deactivates it for a hardware token (the customer's
/// property, kept for reassignment), with its audit event in the same transaction.
///
/// Needs DELETE_METHOD in the customer; an admin's method also needs
/// RESET_ADMIN_MFA; one's own methods are refused (recovery is not done here).
/// Deleting a hardware token that is already deactivated changes nothing.
pub async fn delete(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, Removal>,
    customer_id: CustomerId,
    method_id: MethodId,
    reason: &str,
) -> DomainResult<Answer<Removal>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        let selection =
            Selection::resolve(txn, &caller.subject, &[customer_id], Action::DeleteMethod).await?;
        let method = store::methods::find_in(txn, customer_id, method_id)
            .await?
            .ok_or_else(|| DomainError::not_found(RESOURCE, method_id))
            .and_then(from_model)?;
        let user = users::get(txn, &selection, &UserRef::Id(method.user_id)).await?;
        if user.external_subject.as_deref() == Some(caller.subject.as_str()) {
            return Err(DomainError::permission(
                Reason::SelfUser,
                "you cannot delete your own authentication methods here",
            ));
        }
        if user.admin {
            selection.require(Action::ResetAdminMfa)?;
        }
        let removal = method.kind.removal();
        let now = super::now();
        let changed = match removal {
            Removal::Delete => store::methods::delete(txn, customer_id, method_id).await?,
            Removal::Deactivate => {
                store::methods::deactivate(txn, customer_id, method_id, now).await?
            }
        };
        if changed {
            let details = AuditDetails::MethodDeleted {
                kind: method.kind,
                removal,
            };
            let event = AuditEvent::new(caller, customer_id, details, now)
                .user((&user).into())
                .method(method_id)
                .reason(reason);
            audit::record(txn, vec![event]).await?;
        }
        Ok(removal)
    })
    .await
}
