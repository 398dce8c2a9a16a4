//! Users: find them across a selection (by id, by the external subject the sign-in system
//! knows, or by search), and provision them (create, update, delete).

use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, SqlErr};

use super::{
    Caller,
    audit::{self, AuditDetails, AuditEvent, UserAfter},
    error::{Details, DomainError, DomainResult, Violation},
    idempotency::{self, Answer, Idempotency},
    ids::{CustomerId, UserId},
    model::{Action, MethodKind, MfaState, Role, User},
    paging::{Page, PageRequest},
    reason::Reason,
    selection::{Selection, list_ids},
};
use crate::store::{
    self,
    entities::users,
    search::{self, Search},
    users::{MfaStateFilter, UserLock},
};

pub use crate::store::users::{Cursor as UserCursor, SortKey, SortValue, UserOrder};

const RESOURCE: &str = "mfareset.v1.User";

/// Filters of a user list; they combine with AND, the values of one filter with OR.
#[derive(Clone, Debug, Default)]
pub struct UserQuery {
    /// Search text, matched as DESIGN.md "Lists" says (see `store::search`).
    pub search: Option<String>,
    /// Only these MFA states (empty: every state).
    pub mfa_states: Vec<MfaState>,
    /// Only users with an active method of one of these kinds.
    pub method_kinds: Vec<MethodKind>,
    /// Only users with one of these external subjects.
    pub external_subjects: Vec<String>,
    /// Lists only: an explicit order, replacing the default one (and a search's ranking).
    pub order_by: Option<UserOrder>,
}

/// How a request names one user: by id, or by the subject the sign-in system knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserRef {
    /// By id.
    Id(UserId),
    /// By `external_subject` (unique within a customer).
    ExternalSubject(String),
}

impl UserRef {
    /// How NOT_FOUND names it: the id, or `external_subject/<subject>`.
    pub fn describe(&self) -> String {
        match self {
            UserRef::Id(id) => id.to_string(),
            UserRef::ExternalSubject(subject) => format!("external_subject/{subject}"),
        }
    }
}

/// Reads stored users with their active method counts (one query for all of them).
pub(crate) async fn with_counts(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    models: Vec<users::Model>,
) -> DomainResult<Vec<User>> {
    let ids: Vec<UserId> = models.iter().map(|m| m.id.into()).collect();
    let counts = store::users::active_method_counts(db, customer_ids, &ids).await?;
    Ok(models
        .into_iter()
        .map(|m| {
            let active_method_count = counts.get(&m.id.into()).copied().unwrap_or(0);
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
        admin: m.is_admin,
        mfa_registration_required: m.mfa_registration_required,
        mfa_reset_at: m.mfa_reset_at,
        active_method_count,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// The store's form of the filters.
pub(crate) fn store_filter(query: &UserQuery) -> store::users::UserFilter {
    store::users::UserFilter {
        search: query.search.as_deref().and_then(Search::new),
        mfa_states: query
            .mfa_states
            .iter()
            .map(|state| match state {
                MfaState::Registered => MfaStateFilter::Registered,
                MfaState::NotRegistered => MfaStateFilter::NotRegistered,
                MfaState::RegistrationRequired => MfaStateFilter::RegistrationRequired,
            })
            .collect(),
        method_kinds: query.method_kinds.clone(),
        external_subjects: query.external_subjects.clone(),
        order: query.order_by,
    }
}

/// One page of the selection's users with their counts of active methods, in one statement:
/// in id order, or, with search text, best matches first (see `store::users::list`).
pub async fn list(
    db: &impl ConnectionTrait,
    selection: &Selection,
    query: &UserQuery,
    page: PageRequest<UserCursor>,
) -> DomainResult<Page<User, UserCursor>> {
    list_guarded(db, &selection.ids(), query, page, None).await
}

/// [`list`] for a caller who has not resolved the selection yet: the read checks the
/// selection itself (see [`get_for`]); an empty page resolves it, so that a refusal is
/// still told from an empty list.
pub async fn list_for(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_ids: &[CustomerId],
    query: &UserQuery,
    page: PageRequest<UserCursor>,
) -> DomainResult<Page<User, UserCursor>> {
    let guard = read_guard(subject);
    let page = list_guarded(db, customer_ids, query, page, Some(&guard)).await?;
    if page.items.is_empty() {
        Selection::resolve(db, subject, customer_ids, Action::Read).await?;
    }
    Ok(page)
}

/// The statement [`list_for`] runs for the first page of `page_size` users, with its
/// values: what the bench shows the database's plan of (`EXPLAIN`).
pub fn list_statement(
    backend: sea_orm::DbBackend,
    subject: &str,
    customer_ids: &[CustomerId],
    query: &UserQuery,
    page_size: u64,
) -> sea_orm::Statement {
    let guard = read_guard(subject);
    let filter = store_filter(query);
    store::users::list_statement(
        backend,
        customer_ids,
        &filter,
        None,
        page_size + 1,
        Some(&guard),
    )
}

async fn list_guarded(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    query: &UserQuery,
    page: PageRequest<UserCursor>,
    guard: Option<&store::users::ReadGuard<'_>>,
) -> DomainResult<Page<User, UserCursor>> {
    let filter = store_filter(query);
    let after = page.after.as_ref();
    if after.is_some_and(|after| !filter.cursor_fits(after)) {
        // Only a token of an earlier release, which had no ranked or sorted lists, can get
        // here: a token is bound to the request's search text and order.
        return Err(DomainError::invalid(
            "page_token",
            "is not a page token of this request (made by an earlier release?)",
        ));
    }
    let rows = store::users::list(db, customer_ids, &filter, after, page.size + 1, guard).await?;
    let page = Page::from_rows(rows, page.size, |row| row.cursor(&filter));
    Ok(Page {
        items: (page.items.into_iter())
            .map(|row| from_model(row.user, count(row.active_method_count)))
            .collect(),
        next: page.next,
    })
}

/// The stored row of one user of the selection, named by id or external subject.
/// NOT_FOUND if it is outside the selection, wherever else it exists; a subject naming users
/// in several selected customers is FAILED_PRECONDITION (EXTERNAL_SUBJECT_AMBIGUOUS).
async fn find(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user: &UserRef,
) -> DomainResult<users::Model> {
    let mut found = match user {
        UserRef::Id(id) => store::users::find_in(db, customer_ids, *id)
            .await?
            .into_iter()
            .collect(),
        UserRef::ExternalSubject(subject) => {
            store::users::by_external_subjects(db, customer_ids, std::slice::from_ref(subject))
                .await?
        }
    };
    match found.len() {
        0 => Err(DomainError::not_found(RESOURCE, user.describe())),
        1 => Ok(found.remove(0)),
        _ => Err(ambiguous(user, found.iter().map(|u| u.customer_id.into()))),
    }
}

/// EXTERNAL_SUBJECT_AMBIGUOUS naming the selected customers where `user`'s subject is used.
pub(crate) fn ambiguous(
    user: &UserRef,
    found_in: impl IntoIterator<Item = CustomerId>,
) -> DomainError {
    let mut customers: Vec<CustomerId> = found_in.into_iter().collect();
    customers.sort();
    customers.dedup();
    let violations = customers
        .iter()
        .map(|c| {
            Violation::new(
                "EXTERNAL_SUBJECT_AMBIGUOUS",
                format!("customers/{c}"),
                "a user of this customer has the external subject",
            )
        })
        .collect();
    DomainError::FailedPrecondition {
        reason: Reason::ExternalSubjectAmbiguous,
        message: format!(
            "{} names users in {} of the selected customers; select one, or name the user by id",
            user.describe(),
            customers.len()
        ),
        details: Details {
            violations,
            metadata: Vec::new(),
        }
        .with("customer_ids", list_ids(&customers))
        .with("customer_count", customers.len()),
    }
}

/// One user of the selection, by id or external subject (see [`find`] for the errors), with
/// its count of active methods: one statement.
pub async fn get(
    db: &impl ConnectionTrait,
    selection: &Selection,
    user: &UserRef,
) -> DomainResult<User> {
    let found = find_counted(db, &selection.ids(), user, None).await?;
    only_one(user, found)
}

/// [`get`] for a caller who has not resolved the selection yet: the read checks the
/// selection itself ([`store::users::ReadGuard`]), so that a permitted read of an existing
/// user is one statement on one pooled connection. When it finds nothing, the selection is
/// resolved to tell a refusal (PERMISSION_DENIED, or NOT_FOUND for a customer) from a user
/// that is not there.
pub async fn get_for(
    db: &impl ConnectionTrait,
    subject: &str,
    customer_ids: &[CustomerId],
    user: &UserRef,
) -> DomainResult<User> {
    let guard = read_guard(subject);
    let found = find_counted(db, customer_ids, user, Some(&guard)).await?;
    if found.is_empty() {
        Selection::resolve(db, subject, customer_ids, Action::Read).await?;
    }
    only_one(user, found)
}

/// The guard of a read that any role allows.
fn read_guard(subject: &str) -> store::users::ReadGuard<'_> {
    store::users::ReadGuard {
        subject,
        roles: Role::ALL
            .iter()
            .filter(|role| role.allows(Action::Read))
            .map(|role| role.as_str())
            .collect(),
    }
}

async fn find_counted(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user: &UserRef,
    guard: Option<&store::users::ReadGuard<'_>>,
) -> DomainResult<Vec<store::users::Counted>> {
    let key = match user {
        UserRef::Id(id) => store::users::UserKey::Id(*id),
        UserRef::ExternalSubject(subject) => store::users::UserKey::ExternalSubject(subject),
    };
    Ok(store::users::find_counted(db, customer_ids, key, guard).await?)
}

/// The one user found, NOT_FOUND if none, EXTERNAL_SUBJECT_AMBIGUOUS if several.
fn only_one(user: &UserRef, mut found: Vec<store::users::Counted>) -> DomainResult<User> {
    match found.len() {
        0 => Err(DomainError::not_found(RESOURCE, user.describe())),
        1 => Ok(counted(found.remove(0))),
        _ => Err(ambiguous(
            user,
            found.iter().map(|c| c.user.customer_id.into()),
        )),
    }
}

fn counted(row: store::users::Counted) -> User {
    from_model(row.user, count(row.active_method_count))
}

/// A count read from the database, as the contract carries it.
fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The only element of a one-element list, without a panic if it is not.
fn one(mut users: Vec<User>) -> DomainResult<User> {
    users
        .pop()
        .ok_or_else(|| DomainError::Internal(anyhow::anyhow!("a counted user went missing")))
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
    pub admin: bool,
}

/// Creates a user (PROVISIONER), with its audit event.
pub async fn create(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, User>,
    new: NewUser,
) -> DomainResult<Answer<User>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        Selection::resolve(txn, &caller.subject, &[new.customer_id], Action::Provision).await?;
        let now = super::now();
        let model = users::Model {
            id: UserId::generate().uuid(),
            customer_id: new.customer_id.uuid(),
            external_subject: new.external_subject,
            display_name_folded: search::fold(&new.display_name),
            search_key: search::key(&new.display_name, &new.email),
            display_name: new.display_name,
            email: new.email,
            is_admin: new.admin,
            mfa_registration_required: false,
            mfa_reset_at: None,
            created_at: now,
            updated_at: now,
        };
        let model = store::users::insert(txn, model)
            .await
            .map_err(duplicate_user)?;
        let user = from_model(model, 0);
        let details = AuditDetails::UserCreated { admin: user.admin };
        let event = AuditEvent::new(caller, new.customer_id, details, now).user((&user).into());
        audit::record(txn, vec![event]).await?;
        Ok(user)
    })
    .await
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
    pub admin: Option<bool>,
}

/// Updates a user of `customer_id` (PROVISIONER), with an audit event naming the fields
/// that changed. An update that changes nothing records nothing.
pub async fn update(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, User>,
    customer_id: CustomerId,
    id: UserId,
    update: UserUpdate,
) -> DomainResult<Answer<User>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        let selection =
            Selection::resolve(txn, &caller.subject, &[customer_id], Action::Provision).await?;
        let ids = selection.ids();
        // Locked before it is read, so the fields audited as changed are the ones that were.
        store::users::lock(txn, customer_id, id, UserLock::Change).await?;
        let mut model = find(txn, &ids, &UserRef::Id(id)).await?;
        let mut changed: Vec<&str> = Vec::new();
        let mut changes = users::ActiveModel::default();
        if let Some(name) = update.display_name.filter(|n| *n != model.display_name) {
            changes.display_name_folded = Set(search::fold(&name));
            changes.display_name = Set(name);
            changed.push("display_name");
        }
        if let Some(email) = update.email.filter(|e| *e != model.email) {
            changes.email = Set(email);
            changed.push("email");
        }
        if changes.display_name.is_set() || changes.email.is_set() {
            let name = changes
                .display_name
                .try_as_ref()
                .unwrap_or(&model.display_name);
            let email = changes.email.try_as_ref().unwrap_or(&model.email);
            changes.search_key = Set(search::key(name, email));
        }
        if let Some(subject) = update
            .external_subject
            .filter(|s| *s != model.external_subject)
        {
            changes.external_subject = Set(subject);
            changed.push("external_subject");
        }
        if let Some(admin) = update.admin.filter(|a| *a != model.is_admin) {
            changes.is_admin = Set(admin);
            changed.push("admin");
        }
        let now = super::now();
        if !changed.is_empty() {
            changes.updated_at = Set(now);
            store::users::update(txn, customer_id, id, changes)
                .await
                .map_err(duplicate_user)?;
            model = find(txn, &ids, &UserRef::Id(id)).await?;
        }
        let user = one(with_counts(txn, &ids, vec![model]).await?)?;
        if !changed.is_empty() {
            let details = AuditDetails::UserUpdated {
                changed_fields: changed.iter().map(|f| f.to_string()).collect(),
                admin: user.admin,
            };
            let event = AuditEvent::new(caller, customer_id, details, now).user((&user).into());
            audit::record(txn, vec![event]).await?;
        }
        Ok(user)
    })
    .await
}

/// What a delete removed.
#[derive(Clone, Debug)]
pub struct DeletedUser {
    /// The user as they were just before.
    pub user: User,
    /// Methods deleted with them.
    pub methods_deleted: u32,
}

/// Deletes a user of `customer_id` and their methods (PROVISIONER, for directory sync), with
/// a USER_DELETED audit event, in one transaction. A reset that names the user keeps its
/// item, and goes stale: its confirm finds the user gone.
pub async fn delete(
    db: &DatabaseConnection,
    caller: &Caller,
    idempotency: Idempotency<'_, DeletedUser>,
    customer_id: CustomerId,
    id: UserId,
    reason: &str,
) -> DomainResult<Answer<DeletedUser>> {
    idempotency::write(db, caller, idempotency, async |txn| {
        let selection =
            Selection::resolve(txn, &caller.subject, &[customer_id], Action::Provision).await?;
        let ids = selection.ids();
        // The user first, then its methods: the order in which a confirm locks them.
        store::users::lock(txn, customer_id, id, UserLock::Delete).await?;
        let model = find(txn, &ids, &UserRef::Id(id)).await?;
        let user = one(with_counts(txn, &ids, vec![model]).await?)?;
        let methods_deleted = store::users::delete(txn, customer_id, id).await?;
        let now = super::now();
        let details = AuditDetails::UserDeleted {
            admin: user.admin,
            methods_deleted,
        };
        let event = AuditEvent::new(caller, customer_id, details, now)
            .user(UserAfter::from(&user))
            .reason(reason);
        audit::record(txn, vec![event]).await?;
        Ok(DeletedUser {
            user,
            methods_deleted,
        })
    })
    .await
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
