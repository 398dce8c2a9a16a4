//! `rpc.server.call.duration` for every call: from the request's arrival to its status, which
//! comes in the headers (a trailers-only answer) or in the trailers once the body is sent. A
//! call whose body is dropped before its status (the client went away) counts as CANCELLED.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, trace::grpc_status};

/// Records each call's duration and status code; see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut pending = Pending {
            path: request.uri().path().to_string(),
            started: Instant::now(),
            done: false,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            if let Some(code) = grpc_status(response.headers()) {
                pending.finish(code);
            }
            Ok(response.map(|inner| Body::new(MeasuredBody { inner, pending })))
        })
    }
}

/// A call not yet recorded.
struct Pending {
    path: String,
    started: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: i32) {
        if !self.done {
            self.done = true;
            crate::metrics::rpc_finished(&self.path, code, self.started.elapsed());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Dropped before any status was seen: the client cancelled (or the connection went).
        self.finish(tonic::Code::Cancelled as i32);
    }
}

pin_project_lite::pin_project! {
    struct MeasuredBody<B> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for MeasuredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                this.pending.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
