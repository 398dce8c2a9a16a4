//! When the audit clock moves: one [`ChangeFeed`] per replica wakes its change streams when a
//! transaction that wrote audit events commits, on this replica or any other.
//!
//! The feed only says "the clock is at least N now"; what was committed is read from the
//! database by each stream, so no event lives only in memory. Two sources, started with the
//! first subscriber:
//!
//! - polling: the clock row is read every `poll` interval while anyone subscribes (one primary
//!   key read per replica, however many streams); this is SQLite's way, and PostgreSQL's
//!   fallback for a lost notification or listener connection;
//! - on PostgreSQL, `LISTEN mfa_reset_audit` on a connection of its own (taken from the pool
//!   and kept: sqlx's `PgListener::connect_with`): the clock's trigger notifies with the new
//!   stamp when the writing transaction commits.

use std::{
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use sea_orm::{DatabaseConnection, DbBackend};
use tokio::{sync::watch, task::JoinHandle};

/// The channel the audit clock's trigger notifies (see the change-stream migration).
pub const CHANNEL: &str = "mfa_reset_audit";

/// The latest audit clock value this replica has seen; see the module documentation.
#[derive(Clone, Debug)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: DatabaseConnection,
    poll: Duration,
    latest: watch::Sender<i64>,
    tasks: Mutex<Option<Vec<JoinHandle<()>>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().map(Option::take).unwrap_or_default();
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
    }
}

impl ChangeFeed {
    /// A feed over `db` that polls every `poll` once subscribed to.
    pub fn new(db: DatabaseConnection, poll: Duration) -> ChangeFeed {
        ChangeFeed {
            inner: Arc::new(Inner {
                db,
                poll,
                latest: watch::Sender::new(0),
                tasks: Mutex::new(None),
            }),
        }
    }

    /// A receiver of the latest clock value seen (it only grows); starts the feed on first use.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        let receiver = self.inner.latest.subscribe();
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.is_none() {
            let weak = Arc::downgrade(&self.inner);
            let mut started = vec![tokio::spawn(poll(weak.clone()))];
            if self.inner.db.get_database_backend() == DbBackend::Postgres {
                started.push(tokio::spawn(listen(weak)));
            }
            *tasks = Some(started);
        }
        receiver
    }
}

impl Inner {
    /// Raises the latest value to `seq` (never lowers it), waking subscribers if it rose.
    fn saw(&self, seq: i64) {
        self.latest.send_if_modified(|latest| {
            let rose = seq > *latest;
            if rose {
                *latest = seq;
            }
            rose
        });
    }

    async fn read_clock(&self) {
        match super::audit::clock(&self.db).await {
            Ok(clock) => self.saw(clock.seq),
            Err(err) => tracing::debug!(error = %err, "reading the audit clock failed"),
        }
    }
}

/// Reads the clock every interval while anyone subscribes.
async fn poll(feed: Weak<Inner>) {
    let Some(interval) = feed.upgrade().map(|f| f.poll) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(feed) = feed.upgrade() else { return };
        if feed.latest.receiver_count() > 0 {
            feed.read_clock().await;
        }
    }
}

/// Listens for the clock's notifications on PostgreSQL, reconnecting after a lost connection
/// (the poll covers what was missed meanwhile).
async fn listen(feed: Weak<Inner>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let Some(pool) = feed
            .upgrade()
            .map(|f| f.db.get_postgres_connection_pool().clone())
        else {
            return;
        };
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for audit events; polling only, retrying in 5 s");
                drop(pool);
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        drop(pool);
        // Whatever committed before the LISTEN took effect.
        if let Some(feed) = feed.upgrade() {
            feed.read_clock().await;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let Some(feed) = feed.upgrade() else { return };
                    match notification.payload().parse::<i64>() {
                        Ok(seq) => feed.saw(seq),
                        Err(_) => feed.read_clock().await,
                    }
                }
                // The connection was lost; the next call reconnects. Notifications sent
                // meanwhile are lost: read the clock.
                Ok(None) => {
                    let Some(feed) = feed.upgrade() else { return };
                    feed.read_clock().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "audit LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}
