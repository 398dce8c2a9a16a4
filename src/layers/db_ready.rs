//! A call that needs the database first makes sure a connection can be had within its
//! deadline. The pool would wait its own acquire timeout (5 s) for one, so during an outage a
//! client with a 2 s deadline would see DEADLINE_EXCEEDED and never the UNAVAILABLE +
//! `RetryInfo` it can act on; here the wait is bounded by the call's [`Deadline`] less a
//! margin for the answer to travel, and a call that gets no connection in time is UNAVAILABLE
//! (DATABASE_UNAVAILABLE, with `RetryInfo`) before any handler runs.
//!
//! What is checked depends on what the replica has seen (authenticated calls only: health and
//! reflection never touch the database):
//!
//! - Normally, nothing when the pool has an idle connection (the handler gets it at once; if
//!   the database went away, using it fails at once), else a connection within the budget.
//! - Once a call has ended UNAVAILABLE while the pool was not simply busy (every connection
//!   open and in use: that is load, answered UNAVAILABLE too, but not a sign of an outage), the
//!   database is *suspect*: every call then takes a connection and pings it within its
//!   budget, until a ping succeeds. A pooled connection that the outage broke fails its
//!   ping (and is closed) instead of failing the handler later, and a new one that cannot be
//!   opened runs the budget out.
//!
//! A call with too little time left for any wait is not checked: it runs, and its deadline
//! answers for it.
//!
//! Not covered: a call whose check passed just before the database went away, or that lost
//! the one idle connection to a concurrent call at the very start of an outage, waits on the
//! pool within its deadline and may end DEADLINE_EXCEEDED; and an outage that leaves open
//! connections hanging (no reset) is only seen at the deadline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use sea_orm::DatabaseConnection;
use tonic::Status;
use tower::{Layer, Service, ServiceExt};

use super::BoxFuture;
use super::deadline::Deadline;
use crate::{auth::Principal, domain::DomainError, store};

/// The least and most time kept back from the deadline for the answer to reach the client.
const MARGIN: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(250));

/// Bounds the wait for a database connection by the call's deadline.
#[derive(Clone, Debug)]
pub struct DbReadyLayer {
    db: DatabaseConnection,
    suspect: Arc<AtomicBool>,
}

impl DbReadyLayer {
    /// Checks connections of `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        DbReadyLayer {
            db,
            suspect: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S> Layer<S> for DbReadyLayer {
    type Service = DbReady<S>;

    fn layer(&self, inner: S) -> DbReady<S> {
        DbReady {
            inner,
            db: self.db.clone(),
            suspect: self.suspect.clone(),
        }
    }
}

/// The service of [`DbReadyLayer`].
#[derive(Clone, Debug)]
pub struct DbReady<S> {
    inner: S,
    db: DatabaseConnection,
    /// Whether a call has ended UNAVAILABLE since the last successful ping.
    suspect: Arc<AtomicBool>,
}

/// What to make sure of before a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// A connection within the budget.
    Connection,
    /// A connection, and a round trip on it, within the budget.
    Ping,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DbReady<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        // Only authenticated calls reach a handler that uses the database.
        let authenticated = req.extensions().get::<Principal>().is_some();
        let deadline = req.extensions().get::<Deadline>().copied();
        let Some(deadline) = deadline.filter(|_| authenticated) else {
            return Box::pin(inner.oneshot(req));
        };
        let check = if self.suspect.load(Ordering::Relaxed) {
            Some(Check::Ping)
        } else if store::idle_connections(&self.db) == 0 {
            Some(Check::Connection)
        } else {
            None
        };
        let db = self.db.clone();
        let suspect = self.suspect.clone();
        Box::pin(async move {
            let budget = budget(deadline.remaining());
            if let Some(check) = check.filter(|_| !budget.is_zero()) {
                match store::connection_within(&db, budget, check == Check::Ping).await {
                    Ok(()) if check == Check::Ping => {
                        if suspect.swap(false, Ordering::Relaxed) {
                            tracing::info!("the database answers again");
                        }
                    }
                    Ok(()) => {}
                    Err(err) => {
                        if !store::pool_is_busy(&db) {
                            mark_suspect(&suspect);
                        }
                        let status = Status::from(DomainError::Unavailable(err));
                        return Ok(status.into_http());
                    }
                }
            }
            let response = inner.oneshot(req).await?;
            let unavailable =
                response.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"14");
            if unavailable && !store::pool_is_busy(&db) {
                mark_suspect(&suspect);
            }
            Ok(response)
        })
    }
}

fn mark_suspect(suspect: &AtomicBool) {
    if !suspect.swap(true, Ordering::Relaxed) {
        tracing::warn!("the database looks unavailable: checking it before every call");
    }
}

/// How long a call with `remaining` time may wait for a connection: all of it but a tenth,
/// the tenth being at least 10 ms and at most 250 ms.
fn budget(remaining: Duration) -> Duration {
    let margin = (remaining / 10).clamp(MARGIN.0, MARGIN.1);
    remaining.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_a_margin_for_the_answer() {
        let ms = Duration::from_millis;
        assert_eq!(budget(ms(2000)), ms(1800));
        assert_eq!(budget(ms(30_000)), ms(29_750));
        assert_eq!(budget(ms(50)), ms(40));
        assert_eq!(budget(ms(5)), ms(0));
    }
}
