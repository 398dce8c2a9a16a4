//! The gRPC edge: one file per service. Each handler decodes and validates its request
//! into domain values, calls the domain, and encodes the answer. No SQL and no business
//! rules live here.

pub mod audit_log;
pub mod authentication_methods;
pub mod codec;
pub mod convert;
pub mod customers;
pub mod paging;
pub mod reply;
pub mod resets;
pub mod status;
pub mod users;
pub mod validate;
pub mod watch;

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use tonic::{Request, Status};

use crate::{auth, domain::Caller};
use paging::PageTokens;

/// What every service shares: the database, the page-token key and the change streams open
/// on this replica. Nothing else: the service keeps no state between requests that the
/// database does not hold (a stream's position is the client's cursor).
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database pool.
    pub db: DatabaseConnection,
    /// Seals page tokens.
    pub page_tokens: PageTokens,
    /// How long a summarized reset can be confirmed.
    pub reset_ttl: Duration,
    /// How long a reset confirmed by its requester awaits approval.
    pub approval_ttl: Duration,
    /// The change streams of this replica.
    pub watchers: Arc<watch::Watchers>,
}

/// Shared handle to [`AppState`].
pub type State = Arc<AppState>;

/// The header the request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The authenticated caller of a request, with its correlation id (`x-request-id`).
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let principal = auth::principal(request)?;
    let correlation_id = request
        .metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    Ok(Caller {
        subject: principal.subject().to_string(),
        correlation_id,
    })
}

/// Records the reset a call is about on the call's span.
pub fn record_reset(id: impl std::fmt::Display) {
    tracing::Span::current().record("reset_id", id.to_string().as_str());
}

/// Records the selected customer ids on the call's span (ids only, never contact data).
pub fn record_customers(ids: &[impl std::fmt::Display]) {
    let joined = ids
        .iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    tracing::Span::current().record("customer_ids", joined.as_str());
}
