//! Every status carries an `ErrorInfo` (DESIGN.md "Errors"), including the ones our handlers
//! never see: tonic's own (a message over the size limit, a broken gRPC frame, an RPC this
//! server does not have, a compression it does not speak) and any other layer's. This layer
//! is the outermost that can still change a response: a status without
//! `grpc-status-details-bin`, in the headers (trailers-only responses) or in the trailers, is
//! replaced by its completed form:
//!
//! - OUT_OF_RANGE "decoded message length too large" (tonic, before decoding) and
//!   RESOURCE_EXHAUSTED "size limit ... exceeded while decompressing": RESOURCE_EXHAUSTED,
//!   reason MESSAGE_TOO_LARGE. gRPC's own servers answer RESOURCE_EXHAUSTED here.
//! - INTERNAL from tonic's frame decoder about the client's bytes (a truncated frame, no
//!   message, a bad compressed flag, a body that does not decompress): INVALID_ARGUMENT,
//!   MALFORMED_REQUEST. (gRPC's compression document asks for INTERNAL when the compressed
//!   flag is set without `grpc-encoding`; we answer INVALID_ARGUMENT, as for every other
//!   body the client got wrong, so that INTERNAL always means our bug.)
//! - INTERNAL from prost about a body that does not decode (health's and reflection's
//!   requests; ours have their own codec): INVALID_ARGUMENT, MALFORMED_REQUEST.
//! - Any other INTERNAL, UNKNOWN or DATA_LOSS: INTERNAL with a message that says nothing (the
//!   original goes to the log, under the call's request id).
//! - Any other code (health's NOT_FOUND for a service it does not know, reflection's
//!   NOT_FOUND for a symbol, UNIMPLEMENTED for a path no service has or an encoding the
//!   server does not speak, ...): kept, with its message, and the reason of its code.
//!
//! The matching is on tonic's messages; `tests/api/errors_and_validation.rs` produces each of
//! them through a real server, so a tonic upgrade that rewords one fails there.

use std::{
    collections::HashMap,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::{api::status::status, domain::Reason};

const DETAILS_HEADER: &str = "grpc-status-details-bin";

/// Completes statuses that lack an `ErrorInfo`; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct CompleteLayer {
    max_message_bytes: usize,
}

impl CompleteLayer {
    /// `max_message_bytes` is the request size limit, named in MESSAGE_TOO_LARGE.
    pub fn new(max_message_bytes: usize) -> Self {
        CompleteLayer { max_message_bytes }
    }
}

impl<S> Layer<S> for CompleteLayer {
    type Service = Complete<S>;

    fn layer(&self, inner: S) -> Complete<S> {
        Complete {
            inner,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// The service of [`CompleteLayer`].
#[derive(Clone, Debug)]
pub struct Complete<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Complete<S>
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

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(req);
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move {
            let mut response = future.await?;
            complete(response.headers_mut(), max_message_bytes);
            Ok(response.map(|inner| {
                Body::new(CompletedBody {
                    inner,
                    max_message_bytes,
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers are completed like headers.
    struct CompletedBody<B> {
        #[pin]
        inner: B,
        max_message_bytes: usize,
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for CompletedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let max_message_bytes = *this.max_message_bytes;
        this.inner.poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        complete(&mut trailers, max_message_bytes);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Replaces a status in `headers` (headers or trailers) that has no details by its completed
/// form. A success, or a status with details, is left as it is.
fn complete(headers: &mut HeaderMap, max_message_bytes: usize) {
    if headers.contains_key(DETAILS_HEADER) {
        return;
    }
    let Some(original) = Status::from_header_map(headers) else {
        return;
    };
    if original.code() == Code::Ok {
        return;
    }
    let completed = completed(&original, max_message_bytes);
    for name in ["grpc-status", "grpc-message", DETAILS_HEADER] {
        headers.remove(name);
    }
    if completed.add_header(headers).is_err() {
        // Our own status always encodes; should it not, a bare INTERNAL is still a status.
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(Code::Internal as i32),
        );
    }
}

/// What a status made outside our handlers becomes.
fn completed(original: &Status, max_message_bytes: usize) -> Status {
    let message = original.message();
    match original.code() {
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            too_large(max_message_bytes)
        }
        Code::ResourceExhausted if message.starts_with("Error decompressing: size limit") => {
            too_large(max_message_bytes)
        }
        Code::Internal if client_framing_error(message) => {
            tracing::debug!(detail = message, "request stream is not well-formed gRPC");
            status(
                Code::InvalidArgument,
                Reason::MalformedRequest,
                "the request is not a well-formed gRPC message of this RPC",
                HashMap::new(),
                Vec::new(),
            )
        }
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::error!(
                code = ?original.code(),
                detail = message,
                "status without details from outside the handlers"
            );
            status(
                Code::Internal,
                Reason::Internal,
                "internal error; see the server log for this request id",
                HashMap::new(),
                Vec::new(),
            )
        }
        Code::Unimplemented if message.is_empty() => status(
            Code::Unimplemented,
            Reason::Unimplemented,
            "this server has no such RPC",
            HashMap::new(),
            Vec::new(),
        ),
        code => status(code, reason_of(code), message, HashMap::new(), Vec::new()),
    }
}

/// The reason a status made outside our handlers gets for its code.
fn reason_of(code: Code) -> Reason {
    match code {
        Code::InvalidArgument | Code::OutOfRange => Reason::InvalidArgument,
        Code::NotFound => Reason::NotFound,
        Code::AlreadyExists => Reason::AlreadyExists,
        Code::Aborted => Reason::ConcurrentUpdate,
        Code::DeadlineExceeded | Code::Cancelled => Reason::DeadlineExceeded,
        Code::Unimplemented => Reason::Unimplemented,
        Code::ResourceExhausted => Reason::MessageTooLarge,
        Code::Unavailable => Reason::DatabaseUnavailable,
        Code::Unauthenticated => Reason::TokenInvalid,
        Code::PermissionDenied => Reason::RoleTooWeak,
        Code::Ok | Code::FailedPrecondition | Code::Internal | Code::Unknown | Code::DataLoss => {
            Reason::Internal
        }
    }
}

/// Messages of tonic's request decoder that blame the bytes the client sent.
fn client_framing_error(message: &str) -> bool {
    [
        "protocol error: received message with",
        "Unexpected EOF decoding stream",
        "Missing request message",
        "Error decompressing",
        "failed to decode Protobuf message",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
}

fn too_large(max_message_bytes: usize) -> Status {
    status(
        Code::ResourceExhausted,
        Reason::MessageTooLarge,
        format!(
            "the request message is larger than the {max_message_bytes} bytes this server accepts"
        ),
        HashMap::from([("max_message_bytes".into(), max_message_bytes.to_string())]),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    fn completed_headers(original: Status) -> Status {
        let mut headers = HeaderMap::new();
        original.add_header(&mut headers).unwrap();
        complete(&mut headers, 1024);
        Status::from_header_map(&headers).unwrap()
    }

    fn reason(status: &Status) -> String {
        status
            .get_error_details()
            .error_info()
            .unwrap()
            .reason
            .clone()
    }

    #[test]
    fn statuses_made_outside_the_handlers_get_their_error_info() {
        let cases = [
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
                ),
                Code::ResourceExhausted,
                "MESSAGE_TOO_LARGE",
            ),
            (
                Status::internal("Unexpected EOF decoding stream."),
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
            ),
            (
                Status::unimplemented(""),
                Code::Unimplemented,
                "UNIMPLEMENTED",
            ),
            (
                Status::not_found("service not registered"),
                Code::NotFound,
                "NOT_FOUND",
            ),
            (
                Status::internal("failed to decode Protobuf message: invalid wire type"),
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
            ),
            (
                Status::internal("Error encoding: buffer"),
                Code::Internal,
                "INTERNAL",
            ),
            (
                Status::unknown("boom at 0x1234"),
                Code::Internal,
                "INTERNAL",
            ),
        ];
        for (original, code, expected) in cases {
            let message = original.message().to_string();
            let status = completed_headers(original);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(reason(&status), expected, "{message}");
            if code == Code::Internal {
                assert!(!status.message().contains("0x1234"), "{message}");
            }
        }
        let too_large = completed_headers(Status::out_of_range(
            "Error, decoded message length too large: found 2 bytes",
        ));
        let info = too_large.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.metadata["max_message_bytes"], "1024");
    }

    #[test]
    fn successes_and_statuses_with_details_are_left_alone() {
        let mut headers = HeaderMap::new();
        complete(&mut headers, 1024);
        assert!(headers.is_empty());
        let ours = status(
            Code::NotFound,
            Reason::NotFound,
            "no such user",
            HashMap::new(),
            Vec::new(),
        );
        let mut headers = HeaderMap::new();
        ours.add_header(&mut headers).unwrap();
        let before = headers.clone();
        complete(&mut headers, 1024);
        assert_eq!(headers, before);
    }
}
