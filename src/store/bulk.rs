//! Set-based statements whose text and parameter count do not grow with the rows they touch:
//! a list of ids, or of rows, travels as one bound parameter. A 10,000-user confirm so makes
//! as many statements as a 10-user one, no statement nears a backend's bound-parameter limit
//! (SQLite: 32,766), and neither side builds or parses thousands of placeholders.
//!
//! - A list of ids: a `uuid[]` on PostgreSQL (`column = ANY($1)`), a JSON array of hex
//!   strings on SQLite (`column IN (SELECT unhex(value) FROM json_each(?))`; ids are 16-byte
//!   blobs there).
//! - Rows to insert: one JSON array of rows (each an array of cells, in column order), read
//!   by `jsonb_array_elements` on PostgreSQL and `json_each` on SQLite. Cells are encoded as
//!   each backend's driver would bind them: ids as 32 hex digits, times as RFC 3339 (what
//!   sqlx writes to SQLite, and what PostgreSQL reads), booleans as JSON booleans.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, Statement, Value,
    sea_query::{ArrayType, Expr},
};
use serde_json::Value as Json;
use uuid::Uuid;

/// `column IN ids`, with the ids as one parameter.
pub(crate) fn among(
    db: &impl ConnectionTrait,
    column: Expr,
    ids: impl IntoIterator<Item = Uuid>,
) -> Expr {
    among_on(db.get_database_backend(), column, ids)
}

/// [`among`] for a statement built before it meets a connection.
pub(crate) fn among_on(
    backend: DbBackend,
    column: Expr,
    ids: impl IntoIterator<Item = Uuid>,
) -> Expr {
    match backend {
        DbBackend::Postgres => {
            let ids = ids.into_iter().map(|id| Value::Uuid(Some(id))).collect();
            let array = Value::Array(ArrayType::Uuid, Some(Box::new(ids)));
            Expr::cust_with_exprs("$1 = ANY($2)", [column, Expr::val(array)])
        }
        _ => Expr::cust_with_exprs(
            "? IN (SELECT unhex(value) FROM json_each(?))",
            [column, Expr::val(hex_ids(ids))],
        ),
    }
}

/// `column IN texts`, with the texts as one parameter.
pub(crate) fn among_texts<'a>(
    db: &impl ConnectionTrait,
    column: Expr,
    texts: impl IntoIterator<Item = &'a str>,
) -> Expr {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let texts = texts
                .into_iter()
                .map(|t| Value::String(Some(t.to_owned())))
                .collect();
            let array = Value::Array(ArrayType::String, Some(Box::new(texts)));
            Expr::cust_with_exprs("$1 = ANY($2)", [column, Expr::val(array)])
        }
        _ => {
            let texts: Vec<Json> = texts.into_iter().map(Json::from).collect();
            Expr::cust_with_exprs(
                "? IN (SELECT value FROM json_each(?))",
                [column, Expr::val(Json::Array(texts).to_string())],
            )
        }
    }
}

/// `ids` as a JSON array of 32-digit hex strings.
fn hex_ids(ids: impl IntoIterator<Item = Uuid>) -> String {
    let ids: Vec<Json> = ids.into_iter().map(uuid_cell).collect();
    Json::Array(ids).to_string()
}

/// The SQL type of a column written by [`insert_rows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `uuid` / 16-byte blob.
    Uuid,
    /// Text.
    Text,
    /// Integer.
    Integer,
    /// Boolean.
    Bool,
    /// `timestamptz` / RFC 3339 text.
    Time,
}

/// A table's name and the columns [`insert_rows`] fills, in cell order.
pub(crate) struct Columns {
    /// The table.
    pub table: &'static str,
    /// Each column and its type.
    pub columns: &'static [(&'static str, Kind)],
}

/// An id cell.
pub(crate) fn uuid_cell(id: Uuid) -> Json {
    Json::String(id.simple().to_string())
}

/// An optional id cell.
pub(crate) fn opt_uuid_cell(id: Option<Uuid>) -> Json {
    id.map_or(Json::Null, uuid_cell)
}

/// A time cell.
pub(crate) fn time_cell(time: DateTime<Utc>) -> Json {
    Json::String(time.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

/// An optional time cell.
pub(crate) fn opt_time_cell(time: Option<DateTime<Utc>>) -> Json {
    time.map_or(Json::Null, time_cell)
}

/// An optional text cell.
pub(crate) fn opt_text_cell(text: Option<String>) -> Json {
    text.map_or(Json::Null, Json::String)
}

/// Inserts `rows` (each with one cell per column of `into`) in one statement; nothing when
/// there are none.
pub(crate) async fn insert_rows(
    db: &impl ConnectionTrait,
    into: &Columns,
    rows: Vec<Json>,
) -> Result<(), DbErr> {
    insert_rows_with(db, into, rows, &Extra::default()).await
}

/// What [`insert_rows_with`] adds to a plain insert: a `WITH` clause before it, a table
/// joined to the rows, and columns computed from that table rather than read from a cell.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extra<'a> {
    /// `WITH ...` before the `INSERT`, or empty.
    pub with: &'a str,
    /// ` CROSS JOIN ...` after the rows' source, or empty.
    pub join: &'a str,
    /// Each added column and the expression that fills it.
    pub columns: &'a [(&'a str, &'a str)],
}

/// [`insert_rows`] with an [`Extra`]; nothing when there are no rows.
pub(crate) async fn insert_rows_with(
    db: &impl ConnectionTrait,
    into: &Columns,
    rows: Vec<Json>,
    extra: &Extra<'_>,
) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let names: Vec<String> = (into.columns.iter().map(|(c, _)| *c))
        .chain(extra.columns.iter().map(|(c, _)| *c))
        .map(|c| format!("\"{c}\""))
        .collect();
    let cells: Vec<String> = (into.columns.iter().enumerate())
        .map(|(i, (_, kind))| cell_sql(backend, i, *kind))
        .chain(extra.columns.iter().map(|(_, expr)| (*expr).to_string()))
        .collect();
    let source = match backend {
        DbBackend::Postgres => "jsonb_array_elements($1::jsonb) AS e",
        _ => "json_each(?) AS e",
    };
    let sql = format!(
        "{} INSERT INTO \"{}\" ({}) SELECT {} FROM {source}{}",
        extra.with,
        into.table,
        names.join(", "),
        cells.join(", "),
        extra.join,
    );
    let rows = Json::Array(rows).to_string();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql.trim_start(),
        [rows.into()],
    ))
    .await?;
    Ok(())
}

/// The expression that reads cell `i` of row `e`.
fn cell_sql(backend: DbBackend, i: usize, kind: Kind) -> String {
    match backend {
        DbBackend::Postgres => match kind {
            Kind::Uuid => format!("(e ->> {i})::uuid"),
            Kind::Text => format!("e ->> {i}"),
            Kind::Integer => format!("(e ->> {i})::integer"),
            Kind::Bool => format!("(e ->> {i})::boolean"),
            Kind::Time => format!("(e ->> {i})::timestamptz"),
        },
        // `->>` gives JSON strings as text, numbers as numbers, booleans as 1/0 (how SQLite
        // keeps booleans) and null as NULL.
        _ => match kind {
            Kind::Uuid => format!("unhex(e.value ->> {i})"),
            Kind::Text | Kind::Integer | Kind::Bool | Kind::Time => format!("e.value ->> {i}"),
        },
    }
}
