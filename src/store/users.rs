//! Queries on `users`. Every query is confined to the customer ids it is given.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, SelectModel, Selector, Statement,
    sea_query::{Alias, BinOper, Expr, ExprTrait, Query, SubQueryStatement},
};

use super::{
    entities::{
        authentication_methods as methods,
        users::{ActiveModel, Column, Entity, Model},
    },
    ids::{CustomerId, UserId},
    search::{Rank, Search},
    values::{MethodKind, MethodState},
};

/// The MFA state a list is filtered by; see `domain::model::MfaState` for meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaStateFilter {
    /// Flag clear, at least one active method.
    Registered,
    /// Flag clear, no active method.
    NotRegistered,
    /// Flag set.
    RegistrationRequired,
}

/// Filters of a user list. All are optional and combine with AND; the values of one
/// filter combine with OR.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Search text: matches ranked as [`super::search`] says; results in rank order.
    pub search: Option<Search>,
    /// MFA states (empty: every state).
    pub mfa_states: Vec<MfaStateFilter>,
    /// Only users with an active method of one of these kinds.
    pub method_kinds: Vec<MethodKind>,
    /// Only users with one of these external subjects.
    pub external_subjects: Vec<String>,
    /// An explicit order, replacing the default one (and a search's ranking).
    pub order: Option<UserOrder>,
}

impl UserFilter {
    /// The cursor kind a page of this list continues with.
    pub fn cursor_fits(&self, cursor: &Cursor) -> bool {
        match cursor {
            Cursor::Sorted { .. } => self.order.is_some(),
            Cursor::Ranked { .. } => self.order.is_none() && self.search.is_some(),
            Cursor::Id(_) => self.order.is_none() && self.search.is_none(),
        }
    }
}

/// What a list may be ordered by instead of its default order (ties broken by id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// The folded display name.
    DisplayName,
    /// The e-mail address.
    Email,
    /// When the user was created.
    CreateTime,
    /// When the user's MFA was last reset; never reset sorts as the earliest.
    MfaResetTime,
}

/// An explicit order of a user list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserOrder {
    /// By what.
    pub key: SortKey,
    /// Largest first.
    pub descending: bool,
}

/// What a never-reset user's `mfa_reset_at` sorts as.
fn never_reset() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::UNIX_EPOCH
}

impl SortKey {
    /// The expression a list is ordered by.
    fn expr(self) -> Expr {
        match self {
            SortKey::DisplayName => Expr::col((Entity, Column::DisplayNameFolded)),
            SortKey::Email => Expr::col((Entity, Column::Email)),
            SortKey::CreateTime => Expr::col((Entity, Column::CreatedAt)),
            SortKey::MfaResetTime => {
                Expr::col((Entity, Column::MfaResetAt)).if_null(Expr::val(never_reset()))
            }
        }
    }

    /// The value of the key in `user`.
    fn value_of(self, user: &Model) -> SortValue {
        match self {
            SortKey::DisplayName => SortValue::Text(user.display_name_folded.clone()),
            SortKey::Email => SortValue::Text(user.email.clone()),
            SortKey::CreateTime => SortValue::Time(user.created_at),
            SortKey::MfaResetTime => SortValue::Time(user.mfa_reset_at.unwrap_or_else(never_reset)),
        }
    }
}

/// The value of a [`SortKey`] in one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortValue {
    /// A text key.
    Text(String),
    /// A time key.
    Time(chrono::DateTime<chrono::Utc>),
}

impl SortValue {
    fn expr(&self) -> Expr {
        match self {
            SortValue::Text(text) => Expr::val(text.clone()),
            SortValue::Time(time) => Expr::val(*time),
        }
    }
}

/// Where a list of users continues: after the last row of the previous page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// After this id: a list without search text, in id order.
    Id(UserId),
    /// After this place in a search's order: rank, folded name, id.
    Ranked {
        /// The row's [`Rank`].
        rank: Rank,
        /// Its `display_name_folded`.
        name: String,
        /// Its id.
        id: UserId,
    },
    /// After this place in an explicit order: its key's value, then id.
    Sorted {
        /// The row's value of the order's key.
        value: SortValue,
        /// Its id.
        id: UserId,
    },
}

/// The condition of one MFA state.
fn mfa_state_condition(state: MfaStateFilter) -> Condition {
    match state {
        MfaStateFilter::RegistrationRequired => {
            Condition::all().add(Column::MfaRegistrationRequired.eq(true))
        }
        MfaStateFilter::Registered => Condition::all()
            .add(Column::MfaRegistrationRequired.eq(false))
            .add(active_method_exists(&[])),
        MfaStateFilter::NotRegistered => Condition::all()
            .add(Column::MfaRegistrationRequired.eq(false))
            .add(active_method_exists(&[]).not()),
    }
}

/// `FROM authentication_methods WHERE <active, of this user>`, correlated on the user's
/// `(customer_id, id)` so that it uses the methods' tenant index; the caller says what it
/// selects.
fn active_methods_of_user() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .from(methods::Entity)
        .and_where(
            Expr::col((methods::Entity, methods::Column::CustomerId))
                .equals((Entity, Column::CustomerId)),
        )
        .and_where(
            Expr::col((methods::Entity, methods::Column::UserId)).equals((Entity, Column::Id)),
        )
        .and_where(
            Expr::col((methods::Entity, methods::Column::State)).eq(MethodState::Active.as_str()),
        )
        .to_owned()
}

/// `EXISTS (an active method of this user [of these kinds])`.
fn active_method_exists(kinds: &[MethodKind]) -> Expr {
    let mut sub = active_methods_of_user();
    sub.expr(Expr::val(1));
    if !kinds.is_empty() {
        sub.and_where(
            Expr::col((methods::Entity, methods::Column::Kind))
                .is_in(kinds.iter().map(|k| k.as_str())),
        );
    }
    Expr::exists(sub.to_owned())
}

/// `column LIKE '<pattern>'`, the pattern written into the statement rather than bound. A
/// plan made for a bound pattern (PostgreSQL's generic plan, which a connection switches to
/// after five calls of a statement) cannot tell that the trigram index narrows the search to
/// a few rows, so across 500 customers it read every tenant's matches from the heap (59 ms
/// instead of 11 at 200,000 users; docs/PERFORMANCE.md). A folded pattern holds only letters,
/// digits, spaces, `|` and `%` ([`Search`]); a quote is doubled all the same.
fn like(column: Expr, pattern: &str) -> Expr {
    let literal = format!("'{}'", pattern.replace('\'', "''"));
    column.binary(BinOper::Like, Expr::cust(literal))
}

/// `CASE ... END`: the [`Rank`] of a matching user.
fn rank_of(search: &Search) -> Expr {
    let key = || Expr::col((Entity, Column::SearchKey));
    let [name, email] = search.exact_patterns();
    Expr::case(
        like(key(), &name).or(like(key(), &email)),
        Rank::Exact as i32,
    )
    .case(
        like(key(), &search.word_prefix_pattern()),
        Rank::WordPrefix as i32,
    )
    .finally(Rank::Substring as i32)
    .into()
}

/// Whether SQLite's FTS5 trigram table serves `search`: a pattern with at least three
/// characters in a row. A one-character word prefix (`"% a%"`) has two, and is matched on
/// the selected customers' rows, read from the `customer_id` index.
fn uses_fts(backend: DbBackend, search: &Search) -> bool {
    backend == DbBackend::Sqlite && search.pattern().trim_matches('%').chars().count() >= 3
}

/// The users of `customer_ids` matching `search`, from an index. On PostgreSQL the trigram
/// GIN index on `(customer_id, search_key)` serves the LIKE itself. On SQLite (see
/// [`uses_fts`]) the FTS5 table's matches are narrowed to the selection on `user_search`
/// (whose `customer_id` is the user's: no call moves a user to another customer), and the
/// read is driven by their ids ([`filtered`]).
fn matching(backend: DbBackend, customer_ids: &[CustomerId], search: &Search) -> Condition {
    let pattern = search.pattern();
    let mut condition =
        Condition::all().add(like(Expr::col((Entity, Column::SearchKey)), &pattern));
    if uses_fts(backend, search) {
        let fts = Query::select()
            .column(Alias::new("rowid"))
            .from(Alias::new("user_search_fts"))
            .and_where(like(
                Expr::col((Alias::new("user_search_fts"), Alias::new("search_key"))),
                &pattern,
            ))
            .to_owned();
        let users = Query::select()
            .column((Alias::new("user_search"), Alias::new("user_id")))
            .from(Alias::new("user_search"))
            .and_where(
                Expr::col((Alias::new("user_search"), Alias::new("customer_id")))
                    .is_in(customer_ids.iter().copied()),
            )
            .and_where(Expr::col((Alias::new("user_search"), Alias::new("rowid"))).in_subquery(fts))
            .to_owned();
        condition = condition.add(Expr::col((Entity, Column::Id)).in_subquery(users));
    }
    condition
}

/// One page of users of `customer_ids` matching `filter`, keyset-paged after `after`.
/// Without search text the order is by id: time-ordered, so pages stay stable while users
/// are being inserted (a row is never seen twice, and rows present when paging began are all
/// seen). With search text it is by rank, then folded name, then id.
pub async fn list(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
    after: Option<&Cursor>,
    limit: u64,
    guard: Option<&ReadGuard<'_>>,
) -> Result<Vec<Listed>, DbErr> {
    let backend = db.get_database_backend();
    (list_select(backend, customer_ids, filter, after, limit, guard))
        .all(db)
        .await
}

/// The statement [`list`] runs, with its values: what the bench shows the plan of.
pub fn list_statement(
    backend: DbBackend,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
    after: Option<&Cursor>,
    limit: u64,
    guard: Option<&ReadGuard<'_>>,
) -> Statement {
    list_select(backend, customer_ids, filter, after, limit, guard).into_statement(backend)
}

fn list_select(
    backend: DbBackend,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
    after: Option<&Cursor>,
    limit: u64,
    guard: Option<&ReadGuard<'_>>,
) -> Selector<SelectModel<Listed>> {
    use sea_orm::Order;
    let rank = match &filter.search {
        Some(search) => rank_of(search),
        None => Expr::val(Rank::Exact as i32),
    };
    let id = || Expr::col((Entity, Column::Id));
    let mut condition = filtered(backend, customer_ids, filter);
    // The order, and the keyset condition of a page that follows another.
    let order: Vec<(Expr, Order)> = if let Some(order) = filter.order {
        if let Some(Cursor::Sorted { value, id: after }) = after {
            let place = Expr::tuple([order.key.expr(), id()]);
            let after = Expr::tuple([value.expr(), Expr::val(after.uuid())]);
            condition = condition.add(if order.descending {
                place.lt(after)
            } else {
                place.gt(after)
            });
        }
        let direction = if order.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        vec![(order.key.expr(), direction.clone()), (id(), direction)]
    } else {
        match after {
            None | Some(Cursor::Sorted { .. }) => {}
            Some(Cursor::Id(after)) => condition = condition.add(Column::Id.gt(*after)),
            Some(Cursor::Ranked {
                rank: r,
                name,
                id: after,
            }) => {
                let place = Expr::tuple([
                    rank.clone(),
                    Expr::col((Entity, Column::DisplayNameFolded)),
                    id(),
                ]);
                let after = Expr::tuple([
                    Expr::val(*r as i32),
                    Expr::val(name.clone()),
                    Expr::val(after.uuid()),
                ]);
                condition = condition.add(place.gt(after));
            }
        }
        if filter.search.is_some() {
            vec![
                (rank.clone(), Order::Asc),
                (Expr::col((Entity, Column::DisplayNameFolded)), Order::Asc),
                (id(), Order::Asc),
            ]
        } else {
            id_order(backend, customer_ids, filter)
        }
    };
    let mut query = Entity::find()
        .column_as(active_method_count(), "active_method_count")
        .column_as(rank, "search_rank");
    if backend == DbBackend::Sqlite {
        // The page's ids first, from the rows alone, then those rows with their counts.
        // SQLite computes every output column before it sorts, so in one select it counted
        // the methods of each of the selection's users (700 ms for 500 customers of 263,257
        // users, without text; docs/PERFORMANCE.md).
        let mut ids = Query::select();
        ids.column((Entity, Column::Id))
            .from(Entity)
            .cond_where(condition);
        for (expr, direction) in &order {
            ids.order_by_expr(expr.clone(), direction.clone());
        }
        ids.limit(limit);
        query = query.filter(id().in_subquery(ids));
    } else {
        query = query.filter(condition);
    }
    if let Some(guard) = guard {
        query = query.filter(guard.condition(customer_ids));
    }
    for (expr, direction) in order {
        query = query.order_by(expr, direction);
    }
    query.limit(limit).into_model::<Listed>()
}

/// The id order of a list without text or explicit order, as the database should read it
/// (see [`by_customer_then_id`]).
fn id_order(
    backend: DbBackend,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
) -> Vec<(Expr, sea_orm::Order)> {
    let id = (Expr::col((Entity, Column::Id)), sea_orm::Order::Asc);
    if by_customer_then_id(backend, customer_ids, filter) {
        vec![
            (Expr::col((Entity, Column::CustomerId)), sea_orm::Order::Asc),
            id,
        ]
    } else {
        vec![id]
    }
}

/// Whether a list in id order is read as `ORDER BY customer_id, id` from the
/// `(customer_id, id)` index: the same order when one customer is selected. In id order alone
/// PostgreSQL walks the primary key and filters by customer, betting that the customer's rows
/// are spread through it; a large customer created last has them all at the end, and its
/// first page took 150-200 ms at 1.1 M users (it grows with the table; docs/PERFORMANCE.md).
fn by_customer_then_id(
    backend: DbBackend,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
) -> bool {
    let one_customer = customer_ids
        .first()
        .is_some_and(|first| customer_ids.iter().all(|id| id == first));
    backend == DbBackend::Postgres
        && one_customer
        && filter.search.is_none()
        && filter.order.is_none()
}

/// The users of `customer_ids` that `filter` matches.
fn filtered(backend: DbBackend, customer_ids: &[CustomerId], filter: &UserFilter) -> Condition {
    let tenancy = if filter.search.as_ref().is_some_and(|s| uses_fts(backend, s)) {
        // The same condition, but `+` keeps SQLite from reading by `(customer_id, id)`: it
        // probed every selected customer for every match of every customer (500 x 10,000
        // probes, 1.2 s at 200,000 users), where reading the selection's matches by id takes
        // 23 ms.
        Expr::cust(r#"+"users"."customer_id""#).is_in(customer_ids.iter().map(|&id| Expr::val(id)))
    } else if by_customer_then_id(backend, customer_ids, filter) {
        // An array, which PostgreSQL does not fold into `customer_id = X`: with an equality
        // the planner drops `customer_id` from `ORDER BY customer_id, id` and walks the
        // primary key, filtering by customer (see `list_select`).
        super::bulk::among_on(
            backend,
            Expr::col((Entity, Column::CustomerId)),
            customer_ids.iter().map(|id| id.uuid()),
        )
    } else {
        Column::CustomerId.is_in(customer_ids.iter().copied())
    };
    let mut condition = Condition::all().add(tenancy);
    if let Some(search) = &filter.search {
        condition = condition.add(matching(backend, customer_ids, search));
    }
    if !filter.mfa_states.is_empty() {
        let any = (filter.mfa_states.iter()).fold(Condition::any(), |any, state| {
            any.add(mfa_state_condition(*state))
        });
        condition = condition.add(any);
    }
    if !filter.external_subjects.is_empty() {
        condition =
            condition.add(Column::ExternalSubject.is_in(filter.external_subjects.iter().cloned()));
    }
    if !filter.method_kinds.is_empty() {
        condition = condition.add(active_method_exists(&filter.method_kinds));
    }
    condition
}

/// The ids of the first `limit` users of `customer_ids` that `filter` matches, in id order
/// (a reset by filter): one statement.
pub async fn matching_ids(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
    limit: u64,
) -> Result<Vec<UserId>, DbErr> {
    let backend = db.get_database_backend();
    let mut query = (Entity::find().select_only().column(Column::Id)).filter(filtered(
        backend,
        customer_ids,
        filter,
    ));
    for (expr, direction) in id_order(backend, customer_ids, filter) {
        query = query.order_by(expr, direction);
    }
    let ids = query
        .limit(limit)
        .into_tuple::<uuid::Uuid>()
        .all(db)
        .await?;
    Ok(ids.into_iter().map(UserId::from).collect())
}

/// How many users of `customer_ids` `filter` matches.
pub async fn count_matching(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    filter: &UserFilter,
) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    Entity::find()
        .filter(filtered(db.get_database_backend(), customer_ids, filter))
        .count(db)
        .await
}

/// A row of [`list`]: the user, its count of active methods, and its rank in a search.
#[derive(Debug, FromQueryResult)]
pub struct Listed {
    /// The row.
    #[sea_orm(nested)]
    pub user: Model,
    /// Active methods of the user.
    pub active_method_count: i64,
    /// Its [`Rank`] (as an integer) when the list has search text; 0 otherwise.
    pub search_rank: i32,
}

impl Listed {
    /// The cursor that continues after this row of a list with `filter`.
    pub fn cursor(&self, filter: &UserFilter) -> Cursor {
        let id = UserId::from(self.user.id);
        if let Some(order) = filter.order {
            return Cursor::Sorted {
                value: order.key.value_of(&self.user),
                id,
            };
        }
        if filter.search.is_none() {
            return Cursor::Id(id);
        }
        Cursor::Ranked {
            rank: Rank::from_i32(self.search_rank),
            name: self.user.display_name_folded.clone(),
            id,
        }
    }
}

/// The users of `customer_ids` with one of these external subjects (a subject is unique
/// within a customer, so at most one user per customer and subject); one query.
pub async fn by_external_subjects(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    subjects: &[String],
) -> Result<Vec<Model>, DbErr> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    Entity::find()
        .filter(Column::CustomerId.is_in(customer_ids.iter().copied()))
        .filter(super::bulk::among_texts(
            db,
            sea_orm::sea_query::Expr::col((Entity, Column::ExternalSubject)),
            subjects.iter().map(String::as_str),
        ))
        .order_by_asc(Column::Id)
        .all(db)
        .await
}

/// Deletes one user of `customer_id` and their methods (explicitly, so that the count is
/// known; the foreign key would cascade anyway); returns how many methods went with them.
pub async fn delete(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: UserId,
) -> Result<u32, DbErr> {
    let methods = methods::Entity::delete_many()
        .filter(methods::Column::CustomerId.eq(customer_id))
        .filter(methods::Column::UserId.eq(id))
        .exec(db)
        .await?
        .rows_affected;
    Entity::delete_many()
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(u32::try_from(methods).unwrap_or(u32::MAX))
}

/// How [`lock`] locks a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserLock {
    /// Against other changes of the user and what it holds (`FOR NO KEY UPDATE`).
    Change,
    /// For deleting it (`FOR UPDATE`).
    Delete,
}

/// Locks user `id` of `customer_id` until the transaction ends (PostgreSQL). What is read
/// about the user after this (its methods, say) is the latest, and stays so. Confirms lock
/// their users first too, then their methods: the same order, so the two never deadlock.
pub async fn lock(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: UserId,
    how: UserLock,
) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    let lock = match how {
        UserLock::Change => sea_orm::sea_query::LockType::NoKeyUpdate,
        UserLock::Delete => sea_orm::sea_query::LockType::Update,
    };
    Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .lock(lock)
        .into_tuple::<uuid::Uuid>()
        .all(db)
        .await?;
    Ok(())
}

/// The user with `id` if it belongs to one of `customer_ids`.
pub async fn find_in(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    id: UserId,
) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(Column::CustomerId.is_in(customer_ids.iter().copied()))
        .filter(Column::Id.eq(id))
        .one(db)
        .await
}

/// A user row with its count of active methods, read in the same statement.
#[derive(Debug, FromQueryResult)]
pub struct Counted {
    /// The row.
    #[sea_orm(nested)]
    pub user: Model,
    /// Active methods of the user.
    pub active_method_count: i64,
}

/// `(SELECT COUNT(*) ... active methods of this user)`, correlated with the `users` row.
fn active_method_count() -> Expr {
    let mut sub = active_methods_of_user();
    sub.expr(Expr::col((methods::Entity, methods::Column::Id)).count());
    Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(sub)))
}

/// The selection check of a read, made by the read itself: rows come back only when every
/// customer of the read exists and `subject` holds one of `roles` in it, directly or on
/// every customer (`*`). An empty answer then means "not allowed, or nothing there": the
/// caller resolves the selection to say which (one round trip when all is well).
#[derive(Clone, Debug)]
pub struct ReadGuard<'a> {
    /// The caller.
    pub subject: &'a str,
    /// The roles that allow the read.
    pub roles: Vec<&'static str>,
}

impl ReadGuard<'_> {
    /// `(SELECT COUNT(*) FROM customers WHERE id IN (...) AND <a role there>) = N`.
    fn condition(&self, customer_ids: &[CustomerId]) -> Expr {
        use super::entities::{customers, role_assignments as roles};
        let holds_role = |direct: bool| {
            let scope = if direct {
                Expr::col((roles::Entity, roles::Column::CustomerId))
                    .equals((customers::Entity, customers::Column::Id))
            } else {
                Expr::col((roles::Entity, roles::Column::CustomerId)).is_null()
            };
            Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from(roles::Entity)
                    .and_where(Expr::col((roles::Entity, roles::Column::Subject)).eq(self.subject))
                    .and_where(scope)
                    .and_where(
                        Expr::col((roles::Entity, roles::Column::Role))
                            .is_in(self.roles.iter().copied()),
                    )
                    .to_owned(),
            )
        };
        let allowed = Query::select()
            .expr(Expr::col((customers::Entity, customers::Column::Id)).count())
            .from(customers::Entity)
            .and_where(
                Expr::col((customers::Entity, customers::Column::Id))
                    .is_in(customer_ids.iter().copied()),
            )
            .and_where(holds_role(false).or(holds_role(true)))
            .to_owned();
        let distinct: std::collections::HashSet<_> = customer_ids.iter().collect();
        Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(allowed)))
            .eq(distinct.len() as i64)
    }
}

/// The users of `customer_ids` that `user` names (by id, or by external subject: at most
/// one per customer), with their active method counts, in one statement; none unless
/// `guard` (when given) holds.
pub async fn find_counted(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user: UserKey<'_>,
    guard: Option<&ReadGuard<'_>>,
) -> Result<Vec<Counted>, DbErr> {
    let mut query = Entity::find()
        .column_as(active_method_count(), "active_method_count")
        .filter(Column::CustomerId.is_in(customer_ids.iter().copied()));
    query = match user {
        UserKey::Id(id) => query.filter(Column::Id.eq(id)),
        UserKey::ExternalSubject(subject) => query.filter(Column::ExternalSubject.eq(subject)),
    };
    if let Some(guard) = guard {
        query = query.filter(guard.condition(customer_ids));
    }
    query
        .order_by_asc(Column::Id)
        .into_model::<Counted>()
        .all(db)
        .await
}

/// How [`find_counted`] names a user.
#[derive(Clone, Copy, Debug)]
pub enum UserKey<'a> {
    /// By id.
    Id(UserId),
    /// By external subject.
    ExternalSubject(&'a str),
}

#[derive(Debug, FromQueryResult)]
struct ActiveCount {
    user_id: uuid::Uuid,
    active: i64,
}

/// Active method counts of the given users (absent means zero), in one query.
pub async fn active_method_counts(
    db: &impl ConnectionTrait,
    customer_ids: &[CustomerId],
    user_ids: &[UserId],
) -> Result<HashMap<UserId, u32>, DbErr> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = methods::Entity::find()
        .select_only()
        .column(methods::Column::UserId)
        .column_as(methods::Column::Id.count(), "active")
        .filter(super::within_customers(
            db,
            methods::Entity,
            methods::Column::CustomerId,
            customer_ids,
        ))
        .filter(methods::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(methods::Column::State.eq(MethodState::Active.as_str()))
        .group_by(methods::Column::UserId)
        .into_model::<ActiveCount>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let count = u32::try_from(row.active).unwrap_or(u32::MAX);
            (UserId::from(row.user_id), count)
        })
        .collect())
}

/// Inserts a user.
pub async fn insert(db: &impl ConnectionTrait, user: Model) -> Result<Model, DbErr> {
    let active: ActiveModel = user.clone().into();
    Entity::insert(active).exec_without_returning(db).await?;
    Ok(user)
}

/// Writes the columns set in `changes` (and only those, so that a concurrent reset's
/// `mfa_reset_at` or registration flag is never overwritten with a stale value) of one
/// user of `customer_id`.
pub async fn update(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: UserId,
    changes: ActiveModel,
) -> Result<(), DbErr> {
    Entity::update_many()
        .set(changes)
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Clears `mfa_registration_required` of one user: they registered a method.
pub async fn clear_registration_required(
    db: &impl ConnectionTrait,
    customer_id: CustomerId,
    id: UserId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::MfaRegistrationRequired, Expr::value(false))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::CustomerId.eq(customer_id))
        .filter(Column::Id.eq(id))
        .filter(Column::MfaRegistrationRequired.eq(true))
        .exec(db)
        .await?;
    Ok(())
}
