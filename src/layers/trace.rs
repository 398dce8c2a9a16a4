//! The span of each call, as OpenTelemetry's RPC conventions describe it: a SERVER span named
//! after the RPC (`mfareset.v1.Users/ConfirmMfaReset`), with `rpc.system`, `rpc.service`,
//! `rpc.method` and, once the call ends, `rpc.grpc.status_code`. It continues the caller's
//! trace when the request carries a W3C `traceparent` (and `tracestate`), and its status is
//! an error only for what went wrong on this side (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
//! UNAVAILABLE, DATA_LOSS), never for the caller's own mistakes. Later layers and handlers
//! fill in the principal, the customer ids and the reset id. Never contact data.
//!
//! One log line per call, when it ends, with its code: INFO, or DEBUG for health checks and
//! reflection (probes call every few seconds).

use std::time::Duration;

use http::{HeaderMap, Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::HeaderExtractor;
use tower_http::classify::GrpcFailureClass;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::api::REQUEST_ID_HEADER;

/// Services whose calls are logged at DEBUG.
const INFRASTRUCTURE: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The span of a call; see the module documentation.
pub fn make_span<B>(request: &Request<B>) -> Span {
    // Named after the RPC only when this server has it (a scan of made-up paths makes no
    // new span names); the path itself is kept as an attribute.
    let (service, method) = crate::metrics::rpc_of(request.uri().path());
    let rpc = format!("{service}/{method}");
    let rpc = if service == "_OTHER" {
        "_OTHER"
    } else {
        rpc.as_str()
    };
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    macro_rules! rpc_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "rpc",
                otel.name = %rpc,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
                url.path = %request.uri().path(),
                request_id = %request_id,
                trace_id = tracing::field::Empty,
                principal = tracing::field::Empty,
                customer_ids = tracing::field::Empty,
                reset_id = tracing::field::Empty,
            )
        };
    }
    let span = if INFRASTRUCTURE.contains(&service) {
        rpc_span!(Level::DEBUG)
    } else {
        rpc_span!(Level::INFO)
    };
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let caller_trace = parent.span().span_context().clone();
    // Fails only when the span is disabled (filtered out), which leaves nothing to continue.
    let _ = span.set_parent(parent);
    // The trace id for log lines: this span's, when spans are exported; else the caller's.
    let own = span.context().span().span_context().clone();
    let trace = if own.is_valid() { own } else { caller_trace };
    if trace.is_valid() {
        span.record("trace_id", trace.trace_id().to_string().as_str());
    }
    span
}

/// A trailers-only answer (an error, or a stream that ended at once) ends the call here.
pub fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    if let Some(code) = grpc_status(response.headers()) {
        finish(code, latency, span);
    }
}

/// Any other answer ends with its trailers.
pub fn on_eos(trailers: Option<&HeaderMap>, duration: Duration, span: &Span) {
    if let Some(code) = trailers.and_then(grpc_status) {
        finish(code, duration, span);
    }
}

/// A body that failed without a status (the client went away, the connection broke): a
/// status code was never sent, so only a DEBUG line says so. Statuses are handled above.
pub fn on_failure(failure: GrpcFailureClass, latency: Duration, span: &Span) {
    if let GrpcFailureClass::Error(error) = failure {
        tracing::debug!(parent: span, error = %error, latency_ms = latency.as_millis(), "call ended without a status");
    }
}

/// The `grpc-status` of headers or trailers, if they carry one.
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Whether `code` means this server failed (OpenTelemetry's gRPC server conventions, minus
/// UNIMPLEMENTED, which here is a path or RPC the caller should not have called).
fn server_error(code: i32) -> bool {
    use tonic::Code;
    matches!(
        Code::from(code),
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn finish(code: i32, latency: Duration, span: &Span) {
    span.record("rpc.grpc.status_code", code);
    if server_error(code) {
        span.record("otel.status_code", "error");
    }
    let name = tonic::Code::from(code).description();
    let latency_ms = latency.as_millis();
    if span.metadata().is_some_and(|m| *m.level() == Level::DEBUG) {
        tracing::debug!(parent: span, code, status = name, latency_ms, "call finished");
    } else {
        tracing::info!(parent: span, code, status = name, latency_ms, "call finished");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_server_are_errors() {
        for code in [2, 4, 13, 14, 15] {
            assert!(server_error(code), "{code}");
        }
        for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 16] {
            assert!(!server_error(code), "{code}");
        }
    }

    #[test]
    fn the_status_is_read_from_headers_or_trailers() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(14));
        headers.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(grpc_status(&headers), None);
    }
}
