//! Users: find them across a selection, and provision them.

use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, SqlErr};
use uuid::Uuid;

use super::{
    Caller,
    audit::{self, AuditEvent},
    error::{DomainError, DomainResult},
    ids::{CustomerId, UserId},
    model::{Action, AuditAction, MethodKind, MfaState, User},
    paging::{Page, PageRequest},
    selection::Selection,
};
use crate::store::{self, entities::users, users::MfaStateFilter};

const RESOURCE: &str = "mfareset.v1.User";

/// Filters of a user list.
#[derive(Clone, Debug, Default)]
pub struct UserQuery {
    /// Case-insensitive prefix of the display name or e-mail.
    pub prefix: Option<String>,
    /// Only this MFA state.
    pub mfa_state: Option<MfaState>,
    /// Only users with an active method of one of these kinds.
    pub method_kinds: Vec<MethodKind>,
}

/// Reads stored users with their active method counts (one query for all of them).
pub(crate) async fn with_counts(
    db: &impl ConnectionTrait,
    customer_ids: &[Uuid],
    models: Vec<users::Model>,
) -> DomainResult<Vec<User>> {
    let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
    let counts = store::users::active_method_counts(db, customer_ids, &ids).await?;
    Ok(models
        .into_iter()
        .map(|m| {
            let active_method_count = counts.get(&m.id).copied().unwrap_or(0);
            from_model(m, active_method_count)
        })
        .collect())
}

fn from_model(m: users::Model, active_method_count: u32) -> User {
    User {
        id: m.id.into(),
        customer_id: m.customer_id.into(),
        display_name: m.display_name,
        email: m.email,
        external_subject: m.external_subject,
        is_admin: m.is_admin,
        mfa_registration_required: m.mfa_registration_required,
        mfa_reset_at: m.mfa_reset_at,
        active_method_count,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// One page of the selection's users, ordered by id.
pub async fn list(
    db: &impl ConnectionTrait,
    selection: &Selection,
    query: &UserQuery,
    page: PageRequest<Uuid>,
) -> DomainResult<Page<User, Uuid>> {
    let filter = store::users::UserFilter {
        prefix: query.prefix.as_ref().map(|p| p.to_lowercase()),
        mfa_state: query.mfa_state.map(|state| match state {
            MfaState::Registered => MfaStateFilter::Registered,
            MfaState::NotRegistered => MfaStateFilter::NotRegistered,
            MfaState::RegistrationRequired => MfaStateFilter::RegistrationRequired,
        }),
        method_kinds: query
            .method_kinds
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
    };
    let ids = selection.ids();
    let rows = store::users::list(db, &ids, &filter, page.after, page.size + 1).await?;
    let page = Page::from_rows(rows, page.size, |row| row.id);
    let users = with_counts(db, &ids, page.items).await?;
    Ok(Page {
        items: users,
        next: page.next,
    })
}

/// One user of the selection; NOT_FOUND if it is outside it, wherever else it exists.
pub async fn get(
    db: &impl ConnectionTrait,
    selection: &Selection,
    id: UserId,
) -> DomainResult<User> {
    let ids = selection.ids();
    let model = store::users::find_in(db, &ids, id.uuid())
        .await?
        .ok_or_else(|| DomainError::not_found(RESOURCE, id))?;
    Ok(with_counts(db, &ids, vec![model]).await?.remove(0))
}

/// A new user; values already validated at the edge.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Customer.
    pub customer_id: CustomerId,
    /// Display name.
    pub display_name: String,
    /// E-mail, lower-cased.
    pub email: String,
    /// Sign-in subject.
    pub external_subject: Option<String>,
    /// Administers the customer.
    pub is_admin: bool,
}

/// Creates a user (PROVISIONER), with its audit event.
pub async fn create(db: &DatabaseConnection, caller: &Caller, new: NewUser) -> DomainResult<User> {
    let txn = store::begin_write(db).await?;
    Selection::resolve(&txn, &caller.subject, &[new.customer_id], Action::Provision).await?;
    let now = super::now();
    let model = users::Model {
        id: Uuid::now_v7(),
        customer_id: new.customer_id.uuid(),
        external_subject: new.external_subject,
        display_name_folded: new.display_name.to_lowercase(),
        display_name: new.display_name,
        email: new.email,
        is_admin: new.is_admin,
        mfa_registration_required: false,
        mfa_reset_at: None,
        created_at: now,
        updated_at: now,
    };
    let model = store::users::insert(&txn, model)
        .await
        .map_err(duplicate_user)?;
    let event = AuditEvent::new(caller, new.customer_id, AuditAction::UserCreated, now)
        .user(model.id.into())
        .detail("is_admin", model.is_admin);
    audit::record(&txn, vec![event]).await?;
    txn.commit().await?;
    Ok(from_model(model, 0))
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// New display name.
    pub display_name: Option<String>,
    /// New e-mail, lower-cased.
    pub email: Option<String>,
    /// New sign-in subject (`Some(None)` clears it).
    pub external_subject: Option<Option<String>>,
    /// New admin flag.
    pub is_admin: Option<bool>,
}

/// Updates a user of `customer_id` (PROVISIONER), with an audit event naming the
/// fields that changed. An update that changes nothing records nothing.
pub async fn update(
    db: &DatabaseConnection,
    caller: &Caller,
    customer_id: CustomerId,
    id: UserId,
    update: UserUpdate,
) -> DomainResult<User> {
    let txn = store::begin_write(db).await?;
    let selection =
        Selection::resolve(&txn, &caller.subject, &[customer_id], Action::Provision).await?;
    let ids = selection.ids();
    let mut model = store::users::find_in(&txn, &ids, id.uuid())
        .await?
        .ok_or_else(|| DomainError::not_found(RESOURCE, id))?;
    let mut changed: Vec<&str> = Vec::new();
    let mut changes = users::ActiveModel::default();
    if let Some(name) = update.display_name.filter(|n| *n != model.display_name) {
        changes.display_name_folded = Set(name.to_lowercase());
        changes.display_name = Set(name);
        changed.push("display_name");
    }
    if let Some(email) = update.email.filter(|e| *e != model.email) {
        changes.email = Set(email);
        changed.push("email");
    }
    if let Some(subject) = update
        .external_subject
        .filter(|s| *s != model.external_subject)
    {
        changes.external_subject = Set(subject);
        changed.push("external_subject");
    }
    if let Some(is_admin) = update.is_admin.filter(|a| *a != model.is_admin) {
        changes.is_admin = Set(is_admin);
        changed.push("is_admin");
    }
    if !changed.is_empty() {
        let now = super::now();
        changes.updated_at = Set(now);
        store::users::update(&txn, customer_id.uuid(), id.uuid(), changes)
            .await
            .map_err(duplicate_user)?;
        model = store::users::find_in(&txn, &ids, id.uuid())
            .await?
            .ok_or_else(|| DomainError::not_found(RESOURCE, id))?;
        let event = AuditEvent::new(caller, customer_id, AuditAction::UserUpdated, now)
            .user(id)
            .detail("changed_fields", changed.clone())
            .detail("is_admin", model.is_admin);
        audit::record(&txn, vec![event]).await?;
    }
    let user = with_counts(&txn, &ids, vec![model]).await?.remove(0);
    txn.commit().await?;
    Ok(user)
}

/// A unique violation on users is a taken e-mail or external subject: ALREADY_EXISTS
/// naming the field (the index names say which).
fn duplicate_user(err: DbErr) -> DomainError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => {
            let field = if detail.contains("external_subject") {
                "user.external_subject"
            } else {
                "user.email"
            };
            DomainError::AlreadyExists {
                resource_type: RESOURCE,
                field: field.to_string(),
            }
        }
        _ => DomainError::from(err),
    }
}
