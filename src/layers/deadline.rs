//! Each call's deadline: the client's `grpc-timeout`, capped by the server's request timeout.
//! The layer puts it into the request's extensions ([`Deadline`], for the layers and
//! handlers that must budget their waits by it) and answers DEADLINE_EXCEEDED, with an
//! `ErrorInfo` (reason DEADLINE_EXCEEDED), when the call has not answered by then.
//!
//! The client's deadline started before the request reached us, and both the client's gRPC
//! library and tonic (outside every layer of ours, with a bare CANCELLED) enforce it too; so
//! this layer answers a little ahead of it ([`answer_margin`]: a fiftieth of the timeout,
//! 5 to 100 ms) for the answer a client sees to be ours. The wait
//! for the inner services' readiness (the global concurrency limit) is inside the deadline
//! too: `poll_ready` here is always ready, and the inner service is readied in the call.
//!
//! A call cut off here has its handler dropped: a transaction not yet committed rolls back,
//! and one whose COMMIT was sent finishes it (`store::commit` runs it in a task of its own),
//! so the client's retry with the same `request_id` learns the outcome.

use std::{
    collections::HashMap,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt};

use super::BoxFuture;
use crate::{api::status::status, domain::Reason};

/// How much earlier than the deadline this layer answers: enough for the answer to reach the
/// client before its own timer (which started before the request reached us) goes off.
pub fn answer_margin(timeout: Duration) -> Duration {
    (timeout / 50).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// When a call must have answered, and the timeout it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        let now = Instant::now();
        // A year stands for "later than anything here" should a timeout not fit.
        let at = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        Deadline { at, timeout }
    }

    /// The time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// Applies [`Deadline`]s: see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    server_timeout: Duration,
}

impl DeadlineLayer {
    /// Calls take at most `server_timeout`, and at most what their `grpc-timeout` says.
    pub fn new(server_timeout: Duration) -> Self {
        DeadlineLayer { server_timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            server_timeout: self.server_timeout,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    server_timeout: Duration,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DeadlineService<S>
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
        // Readiness is awaited in `call`, within the deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let timeout = grpc_timeout(req.headers()).map_or(self.server_timeout, |client| {
            client.min(self.server_timeout)
        });
        let deadline = Deadline::after(timeout);
        req.extensions_mut().insert(deadline);
        let inner = self.inner.clone();
        Box::pin(async move {
            let answer = crate::store::within_deadline(deadline.at, inner.oneshot(req));
            let fire_at = deadline
                .at
                .checked_sub(answer_margin(timeout))
                .unwrap_or(deadline.at);
            match tokio::time::timeout_at(fire_at, answer).await {
                Ok(answer) => answer,
                Err(_) => {
                    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(timeout_ms, "deadline exceeded");
                    Ok(exceeded(timeout_ms).into_http())
                }
            }
        })
    }
}

fn exceeded(timeout_ms: u64) -> Status {
    status(
        Code::DeadlineExceeded,
        Reason::DeadlineExceeded,
        format!("the call did not finish within its deadline ({timeout_ms} ms)"),
        HashMap::from([("timeout_ms".into(), timeout_ms.to_string())]),
        Vec::new(),
    )
}

/// The `grpc-timeout` header: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`), per
/// the gRPC over HTTP/2 protocol. A malformed one is ignored, as tonic ignores it.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit = value.chars().last()?;
    let digits = value.get(..value.len() - unit.len_utf8())?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_is_read_as_the_protocol_spells_it() {
        assert_eq!(parsed("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parsed("1999m"), Some(Duration::from_millis(1999)));
        assert_eq!(parsed("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parsed("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parsed("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parsed("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "12", "1.5S", "-1S", "10s", "10x"] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn the_answer_comes_a_little_ahead_of_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(answer_margin(ms(100)), ms(5));
        assert_eq!(answer_margin(ms(2000)), ms(40));
        assert_eq!(answer_margin(ms(60_000)), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_outlives_its_deadline_is_deadline_exceeded() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let service = DeadlineLayer::new(Duration::from_secs(30)).layer(slow);
        let request = http::Request::builder()
            .header("grpc-timeout", "2S")
            .body(())
            .unwrap();
        let started = Instant::now();
        let response = service.oneshot(request).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        use tonic_types::StatusExt;
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "DEADLINE_EXCEEDED");
        assert_eq!(info.metadata["timeout_ms"], "2000");
    }
}
