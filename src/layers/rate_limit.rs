//! Per-principal rate limiting, as a tower layer behind authentication: a caller over
//! its quota gets RESOURCE_EXHAUSTED with a `RetryInfo` saying when to come back (and
//! ErrorInfo reason RATE_LIMITED), and the call never reaches a handler or the database.
//!
//! Each replica counts on its own (the quota is per replica); the counters are the only
//! state the service keeps outside the database, and losing them loses nothing.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use tonic::Code;
use tonic_types::RetryInfo;
use tower::{Layer, Service};

use super::BoxFuture;
use crate::{api::status::status, auth::Principal, domain::Reason};

/// Calls between two sweeps of idle principals out of the limiter's map.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug)]
struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    calls: AtomicU64,
}

/// Limits each principal to a number of calls per minute (bursts up to that number).
#[derive(Clone, Debug, Default)]
pub struct RateLimitLayer {
    limiter: Option<Arc<Limiter>>,
}

impl RateLimitLayer {
    /// `per_minute` calls per principal and minute; 0 turns limiting off.
    pub fn per_minute(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            Arc::new(Limiter {
                limiter: RateLimiter::keyed(Quota::per_minute(n)),
                calls: AtomicU64::new(0),
            })
        });
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<Limiter>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // Calls without a principal (health, reflection) are not limited.
        if let (Some(limiter), Some(principal)) =
            (&self.limiter, req.extensions().get::<Principal>())
        {
            if limiter.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                limiter.limiter.retain_recent();
            }
            if let Err(not_until) = limiter.limiter.check_key(&principal.subject().to_string()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tracing::info!(retry_after_ms = wait.as_millis() as u64, "rate limited");
                crate::metrics::rate_limited();
                let status = status(
                    Code::ResourceExhausted,
                    Reason::RateLimited,
                    "too many calls from this principal; retry after the delay in RetryInfo",
                    Default::default(),
                    vec![RetryInfo::new(Some(wait)).into()],
                );
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}
