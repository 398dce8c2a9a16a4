//! The tower layers every call passes through, composed by [`Layers`] and nowhere else.
//!
//! Outermost first:
//!
//! 1. [`request_id`]: a client's `x-request-id` is kept if it is short and safe, else a new
//!    one is minted; either way it is echoed back and names the call's span.
//! 2. [`trace`]: one SERVER span per call, named after the RPC, continuing the caller's
//!    trace (principal, customers and reset filled in later), and one log line as it ends.
//! 3. [`rpc_metrics`]: each call's duration by RPC and final status code.
//! 4. [`complete`]: any status without an `ErrorInfo` (tonic's, another layer's) gets one.
//! 5. [`deadline`]: the call's deadline (`grpc-timeout`, capped by the server's timeout),
//!    answered DEADLINE_EXCEEDED when passed; everything inside waits within it.
//! 6. The global concurrency limit.
//! 7. Authentication ([`crate::auth::AuthLayer`]): every path but health and reflection.
//! 8. [`rate_limit`]: per principal.
//! 9. [`db_ready`]: a connection within the deadline, or UNAVAILABLE + RetryInfo.
//!
//! Handlers never see a call that skipped any of these.

pub mod complete;
pub mod db_ready;
pub mod deadline;
pub mod rate_limit;
pub mod request_id;
pub mod rpc_metrics;
pub mod trace;

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{HeaderName, Request, Response};
use sea_orm::DatabaseConnection;
use tonic::body::Body;
use tower::{
    Layer, Service, ServiceBuilder, limit::GlobalConcurrencyLimitLayer, util::BoxCloneSyncService,
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    api::REQUEST_ID_HEADER,
    auth::{AuthLayer, TokenVerifier},
};

/// The future of a layer's service: boxed, as the inner service's future is awaited in it.
pub type BoxFuture<R, E> = std::pin::Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'static>>;

/// What the layers need to know.
#[derive(Clone, Debug)]
pub struct Layers {
    /// Token verification.
    pub verifier: Arc<TokenVerifier>,
    /// The database, for the readiness check.
    pub db: DatabaseConnection,
    /// The longest a call may take (its `grpc-timeout` may make it shorter).
    pub request_timeout: Duration,
    /// Calls served at once, over all connections; more wait (within their deadline).
    pub max_concurrent_requests: usize,
    /// Calls per principal and minute; 0 turns limiting off.
    pub rate_limit_per_minute: u32,
    /// The request size limit, named in MESSAGE_TOO_LARGE.
    pub max_message_bytes: usize,
}

/// Every call's service: the layers around the routes, boxed so that the stack has one name.
pub type Stacked = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

impl<S> Layer<S> for Layers
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = Stacked;

    fn layer(&self, routes: S) -> Stacked {
        let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
        let stack = ServiceBuilder::new()
            // Names the body type the trace layer wraps the response in.
            .map_response(|response: Response<_>| response.map(Body::new))
            .map_request(request_id::drop_unsafe::<Body>)
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(trace::make_span)
                    .on_response(trace::on_response)
                    .on_eos(trace::on_eos)
                    .on_failure(trace::on_failure),
            )
            .layer(rpc_metrics::RpcMetricsLayer)
            .layer(complete::CompleteLayer::new(self.max_message_bytes))
            .layer(deadline::DeadlineLayer::new(self.request_timeout))
            .layer(GlobalConcurrencyLimitLayer::new(
                self.max_concurrent_requests,
            ))
            .layer(AuthLayer::new(self.verifier.clone()))
            .layer(rate_limit::RateLimitLayer::per_minute(
                self.rate_limit_per_minute,
            ))
            .layer(db_ready::DbReadyLayer::new(self.db.clone()))
            .service(routes);
        BoxCloneSyncService::new(stack)
    }
}
