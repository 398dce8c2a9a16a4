//! The machinery of `WatchAuditEvents` streams on this replica: how many may be open, the task
//! that carries each one forward, and how it ends.
//!
//! Each stream is a task (the producer) that reads the audit clock and then the events after
//! its position from the database, hands them to a bounded channel, and waits for the
//! [`ChangeFeed`] to say the clock moved, sending a heartbeat when nothing did. Memory per
//! stream is bounded by the channel (plus HTTP/2's flow-control window): a consumer that
//! stops reading makes the producer wait, and one that leaves the buffer full for the stall
//! timeout is ended with RESOURCE_EXHAUSTED (CONSUMER_TOO_SLOW), to resume from its cursor.
//! A stream's last status travels beside the channel ([`Outlet`]), so that it is delivered
//! after the messages already buffered even when the buffer is full.
//!
//! Roles are checked again at least every heartbeat interval, and at least every 15 s; a
//! revoked role ends the stream with PERMISSION_DENIED. A replica that shuts down ends its streams with UNAVAILABLE
//! (SHUTTING_DOWN), so that clients reconnect, with their cursor, to another one.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use sea_orm::DatabaseConnection;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_stream::Stream;
use tonic::{Code, Status};
use tonic_types::RetryInfo;
use tracing::Instrument;

use super::{convert, paging::Binding, paging::PageTokens, status::status};
use crate::{
    config::WatchSettings,
    domain::{
        Reason,
        audit::watch::{Clock, Position, WatchQuery, authorize, read_after},
    },
    proto::v1 as pb,
    store::feed::ChangeFeed,
};

/// Events read from the database in one statement.
const BATCH: u64 = 500;

/// The change streams of this replica.
pub struct Watchers {
    settings: WatchSettings,
    feed: ChangeFeed,
    cursors: PageTokens,
    open: Mutex<Open>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("settings", &self.settings)
            .field("open", &self.open_count())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_principal: HashMap<String, usize>,
}

/// The binding of every cursor: a cursor is a place in the one stream of the database,
/// valid with any selection (which is checked on its own), on every replica sharing the
/// secret.
fn cursor_binding() -> Binding {
    Binding::of("mfareset.v1.AuditLog/WatchAuditEvents", "", &())
}

impl Watchers {
    /// Streams over `db`, their cursors sealed with `cursor_key`, ended when `shutdown` turns
    /// true.
    pub fn new(
        db: DatabaseConnection,
        settings: WatchSettings,
        cursor_key: &[u8; 32],
        shutdown: watch::Receiver<bool>,
    ) -> Watchers {
        Watchers {
            feed: ChangeFeed::new(db, settings.poll),
            settings,
            cursors: PageTokens::new(cursor_key),
            open: Mutex::new(Open::default()),
            shutdown,
        }
    }

    /// Streams open now.
    pub fn open_count(&self) -> usize {
        self.lock().total
    }

    /// The heartbeat interval for a request that asks for `requested` (`None`: the default).
    pub fn heartbeat(&self, requested: Option<Duration>) -> Duration {
        match requested {
            None => self.settings.heartbeat,
            Some(d) if d.is_zero() => self.settings.heartbeat,
            Some(d) => d.clamp(WatchSettings::MIN_HEARTBEAT, WatchSettings::MAX_HEARTBEAT),
        }
    }

    /// The position sealed in `cursor`, or `None` when it is not a cursor of this stream.
    pub fn open_cursor(&self, cursor: &str) -> Option<Position> {
        let bytes = self.cursors.open(&cursor_binding(), cursor).ok()?;
        Position::from_bytes(&bytes)
    }

    fn seal(&self, position: Position) -> String {
        self.cursors.seal(&cursor_binding(), &position.to_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more stream of `subject`, or RESOURCE_EXHAUSTED (TOO_MANY_STREAMS).
    pub fn claim(self: &Arc<Self>, subject: &str) -> Result<Slot, Status> {
        let mut open = self.lock();
        let mine = open.by_principal.get(subject).copied().unwrap_or(0);
        let over = if mine >= self.settings.max_streams_per_principal {
            Some(("principal", self.settings.max_streams_per_principal))
        } else if open.total >= self.settings.max_streams {
            Some(("replica", self.settings.max_streams))
        } else {
            None
        };
        if let Some((limit, max)) = over {
            return Err(status(
                Code::ResourceExhausted,
                Reason::TooManyStreams,
                format!("{max} change streams are open for this {limit}; close one or retry later"),
                HashMap::from([
                    ("max_stream_count".into(), max.to_string()),
                    ("limit".into(), limit.into()),
                ]),
                vec![RetryInfo::new(Some(Duration::from_secs(5))).into()],
            ));
        }
        open.total += 1;
        *open.by_principal.entry(subject.to_string()).or_default() += 1;
        Ok(Slot {
            watchers: self.clone(),
            subject: subject.to_string(),
        })
    }

    /// Starts the stream of `query` for `subject` from `start`, accepting what was purged up
    /// to `accepted` (see [`Clock::expired`]), holding `slot`.
    pub fn start(
        self: &Arc<Self>,
        db: DatabaseConnection,
        subject: String,
        query: WatchQuery,
        (start, accepted): (Position, Position),
        heartbeat: Duration,
        slot: Slot,
    ) -> Outlet {
        let (tx, rx) = mpsc::channel(self.settings.buffer);
        let end = Arc::new(Mutex::new(None));
        let producer = Producer {
            db,
            subject,
            query,
            position: start,
            accepted,
            heartbeat,
            watchers: self.clone(),
            feed: self.feed.subscribe(),
            shutdown: self.shutdown.clone(),
            tx,
            last_sent: Instant::now(),
            next_check: Instant::now() + recheck_interval(heartbeat),
        };
        let last = end.clone();
        let task = tokio::spawn(
            async move {
                let _slot = slot;
                producer.run(&last).await;
            }
            .instrument(tracing::Span::current()),
        );
        Outlet {
            rx,
            end,
            producer: task,
            finished: false,
        }
    }
}

/// One open stream's place in the limits; released when its producer ends.
#[derive(Debug)]
pub struct Slot {
    watchers: Arc<Watchers>,
    subject: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.watchers.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_principal.get_mut(&self.subject) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.by_principal.remove(&self.subject);
            }
        }
    }
}

/// What tonic sends: the messages the producer buffered, then its last status. Dropping it
/// (the client went away) stops the producer.
pub struct Outlet {
    rx: mpsc::Receiver<Result<pb::WatchAuditEventsResponse, Status>>,
    end: Arc<Mutex<Option<Status>>>,
    producer: JoinHandle<()>,
    finished: bool,
}

impl Stream for Outlet {
    type Item = Result<pb::WatchAuditEventsResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                self.finished = true;
                let last = self.end.lock().unwrap_or_else(|p| p.into_inner()).take();
                // A producer ends without a status only when its client left, or when it
                // panicked: never end a stream as OK (a consumer would take it as complete).
                Poll::Ready(Some(Err(last.unwrap_or_else(|| {
                    crate::domain::DomainError::Internal(anyhow::anyhow!(
                        "a change stream's producer ended without a status"
                    ))
                    .into()
                }))))
            }
            other => other,
        }
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        self.producer.abort();
    }
}

/// What ended a producer's wait.
enum Wake {
    ShuttingDown,
    Moved,
    ClientGone,
    Due,
}

/// Why a producer stopped: with a status for the client, or because the client left.
type Ended = Option<Status>;

struct Producer {
    db: DatabaseConnection,
    subject: String,
    query: WatchQuery,
    position: Position,
    accepted: Position,
    heartbeat: Duration,
    watchers: Arc<Watchers>,
    feed: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::WatchAuditEventsResponse, Status>>,
    last_sent: Instant,
    next_check: Instant,
}

impl Producer {
    /// Runs until the stream ends, and leaves its last status in `last` (none: the client
    /// left) before the channel closes, so that the consumer reads it after the messages.
    async fn run(mut self, last: &Mutex<Option<Status>>) {
        let ended = match self.forward().await {
            Ok(never) => match never {},
            Err(ended) => ended,
        };
        if let Some(status) = ended {
            tracing::info!(code = ?status.code(), message = status.message(), "change stream ended");
            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        }
        // `self.tx` is dropped here, after the status is in place.
        drop(self);
    }

    async fn forward(&mut self) -> Result<std::convert::Infallible, Ended> {
        loop {
            let clock = Clock::read(&self.db).await.map_err(end)?;
            self.catch_up(&clock).await?;
            self.wait_past(clock.latest).await?;
        }
    }

    /// Sends every event after the position up to the clock, and moves past that stamp.
    async fn catch_up(&mut self, clock: &Clock) -> Result<(), Ended> {
        loop {
            let batch = read_after(&self.db, &self.query, self.position, clock.latest, BATCH)
                .await
                .map_err(end)?;
            // A purge that committed before this read may have deleted events of it: the
            // purged position is read after the batch (every batch: a purge may run while a
            // stream replays), and a stream behind it ends instead of skipping them.
            if Clock::read(&self.db)
                .await
                .map_err(end)?
                .expired(self.position, self.accepted)
            {
                return Err(Some(cursor_expired()));
            }
            let full = batch.len() as u64 == BATCH;
            for (position, event) in batch {
                let response = pb::WatchAuditEventsResponse {
                    cursor: self.watchers.seal(position),
                    payload: Some(pb::watch_audit_events_response::Payload::AuditEvent(
                        convert::audit_event(&event),
                    )),
                };
                self.send(response).await?;
                self.position = position;
            }
            self.check_if_due().await?;
            if !full {
                break;
            }
        }
        self.position = self.position.max(Position::end_of(clock.latest));
        Ok(())
    }

    /// Waits until the feed has seen a stamp above `seen`, sending heartbeats and checking
    /// roles meanwhile.
    async fn wait_past(&mut self, seen: i64) -> Result<(), Ended> {
        loop {
            let due = (self.last_sent + self.heartbeat).min(self.next_check);
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|down| *down) => Wake::ShuttingDown,
                // Before the feed: on a busy database the feed moves all the time (a commit
                // in any customer wakes every stream), and a stream whose events are
                // elsewhere must still send its heartbeats and check its roles.
                () = tokio::time::sleep_until(due) => Wake::Due,
                () = self.tx.closed() => Wake::ClientGone,
                // The feed is gone only when the server is.
                moved = self.feed.wait_for(|&latest| latest > seen) => match moved {
                    Ok(_) => Wake::Moved,
                    Err(_) => Wake::ShuttingDown,
                },
            };
            match wake {
                Wake::ShuttingDown => return Err(Some(shutting_down())),
                Wake::Moved => return Ok(()),
                Wake::ClientGone => return Err(None),
                Wake::Due => {
                    self.check_if_due().await?;
                    if Instant::now() >= self.last_sent + self.heartbeat {
                        let heartbeat = pb::WatchAuditEventsResponse {
                            cursor: self.watchers.seal(self.position),
                            payload: Some(pb::watch_audit_events_response::Payload::Heartbeat(
                                pb::AuditHeartbeat {
                                    send_time: Some(convert::timestamp(crate::domain::now())),
                                },
                            )),
                        };
                        self.send(heartbeat).await?;
                    }
                }
            }
        }
    }

    /// Checks the caller's roles again when a heartbeat interval has passed since the last
    /// check.
    async fn check_if_due(&mut self) -> Result<(), Ended> {
        if Instant::now() < self.next_check {
            return Ok(());
        }
        authorize(&self.db, &self.subject, &self.query.scope)
            .await
            .map_err(end)?;
        self.next_check = Instant::now() + recheck_interval(self.heartbeat);
        Ok(())
    }

    /// Hands one message to the consumer, waiting at most the stall timeout for room.
    async fn send(&mut self, response: pb::WatchAuditEventsResponse) -> Result<(), Ended> {
        let stall = self.watchers.settings.stall;
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|down| *down) => Err(Some(shutting_down())),
            sent = self.tx.send_timeout(Ok(response), stall) => match sent {
                Ok(()) => {
                    self.last_sent = Instant::now();
                    Ok(())
                }
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    Err(Some(too_slow(self.watchers.settings.buffer, stall)))
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(None),
            },
        }
    }
}

/// The longest a revoked role keeps a stream open: roles are checked at least this often,
/// however long the heartbeat interval a client asked for.
const MAX_RECHECK: Duration = Duration::from_secs(15);

/// How often a stream with `heartbeat` checks its roles.
fn recheck_interval(heartbeat: Duration) -> Duration {
    heartbeat.min(MAX_RECHECK)
}

fn end(err: crate::domain::DomainError) -> Ended {
    Some(err.into())
}

/// OUT_OF_RANGE (CURSOR_EXPIRED).
pub fn cursor_expired() -> Status {
    status(
        Code::OutOfRange,
        Reason::CursorExpired,
        "the cursor is older than the audit log's retention: events after it were purged; \
         start again without a cursor (or with start_at_oldest)",
        HashMap::new(),
        vec![],
    )
}

fn too_slow(buffer: usize, stall: Duration) -> Status {
    status(
        Code::ResourceExhausted,
        Reason::ConsumerTooSlow,
        format!(
            "the consumer left {buffer} messages unread for {} s; reconnect with the last cursor received",
            stall.as_secs()
        ),
        HashMap::from([
            ("buffered_message_count".into(), buffer.to_string()),
            ("stall_seconds".into(), stall.as_secs().to_string()),
        ]),
        vec![],
    )
}

fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        Reason::ShuttingDown,
        "this replica is shutting down; reconnect with the last cursor received",
        HashMap::new(),
        vec![],
    )
}
