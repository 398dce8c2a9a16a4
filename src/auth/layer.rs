//! The tower layer that authenticates every call before any handler runs, so that a handler
//! never has to remember to. Only health checks and reflection are open: any other path,
//! including a service added later or one this server does not have, needs a valid token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use tonic::Status;
use tower::{Layer, Service};

use super::{AuthError, Principal, TokenVerifier};

/// The services that answer without a token: what load balancers, orchestrators and
/// `grpcurl`-style tools call before they hold one. Health says only whether the server
/// serves; reflection describes the public contract.
const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Adds [`AuthService`] around a tonic server's routes (`Server::builder().layer(...)`).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
}

impl AuthLayer {
    /// A layer that checks tokens with `verifier`.
    pub fn new(verifier: Arc<TokenVerifier>) -> AuthLayer {
        AuthLayer { verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// For every path but the [`OPEN_SERVICES`]: verifies `authorization: Bearer <token>`, puts
/// the [`Principal`] into the request extensions and on the current span (`principal` field),
/// or answers UNAUTHENTICATED without calling the inner service.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
}

/// The future of [`AuthService`]: the inner service's, or an immediate refusal.
pub type AuthFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = AuthFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
            return Box::pin(self.inner.call(req));
        }
        // Verification is synchronous, so it runs inside whatever span the layers outside
        // entered for this call, and the inner service is called right away (no clone).
        match authenticate(&self.verifier, req.headers()) {
            Ok(principal) => {
                tracing::Span::current().record("principal", principal.subject());
                req.extensions_mut().insert(principal);
                Box::pin(self.inner.call(req))
            }
            Err(err) => {
                tracing::debug!(reason = err.reason().as_str(), "request refused: {err}");
                let response = Status::from(err).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

/// Reads `authorization: Bearer <token>` (scheme case-insensitive, one header only) and
/// verifies the token.
fn authenticate(
    verifier: &TokenVerifier,
    headers: &http::HeaderMap,
) -> Result<Principal, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    verifier.verify(token)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use tonic::body::Body;
    use tonic_types::StatusExt;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::auth::{AuthSettings, ServerSecret, mint_dev_token};

    const ISS: &str = "issuer";
    const AUD: &str = "mfa-reset";

    fn secret() -> ServerSecret {
        ServerSecret::from_bytes([8u8; 32])
    }

    fn layer() -> AuthLayer {
        let settings = AuthSettings {
            issuer: ISS.into(),
            audience: AUD.into(),
            public_key_files: Vec::new(),
            jwks_file: None,
            leeway_seconds: 30,
        };
        AuthLayer::new(Arc::new(
            TokenVerifier::new(&settings, Some(&secret())).unwrap(),
        ))
    }

    /// An inner service that answers 200 with `x-principal: <subject>` if it got one.
    fn echo_principal() -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<Body>, Infallible>> + Send,
    > + Clone {
        service_fn(|req: http::Request<Body>| async move {
            let mut response = http::Response::new(Body::empty());
            if let Some(p) = req.extensions().get::<Principal>() {
                response
                    .headers_mut()
                    .insert("x-principal", p.subject().parse().unwrap());
            }
            Ok::<_, Infallible>(response)
        })
    }

    fn request(path: &str, authorization: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::builder().method("POST").uri(path);
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        builder.body(Body::empty()).unwrap()
    }

    async fn call(req: http::Request<Body>) -> http::Response<Body> {
        layer().layer(echo_principal()).oneshot(req).await.unwrap()
    }

    fn refusal_reason(response: &http::Response<Body>) -> String {
        assert_eq!(response.headers()["grpc-status"], "16", "UNAUTHENTICATED");
        assert!(response.headers().get("x-principal").is_none());
        let status = Status::from_header_map(response.headers()).unwrap();
        status
            .get_error_details()
            .error_info()
            .unwrap()
            .reason
            .clone()
    }

    #[tokio::test]
    async fn request_without_token_is_unauthenticated() {
        let response = call(request("/mfareset.v1.Users/ListUsers", None)).await;
        assert_eq!(refusal_reason(&response), "TOKEN_MISSING");
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.message(), "missing bearer token");
        assert_eq!(
            status.get_error_details().error_info().unwrap().domain,
            crate::api::status::ERROR_DOMAIN
        );
    }

    #[tokio::test]
    async fn valid_token_reaches_the_handler_with_the_principal() {
        let token = mint_dev_token(&secret(), "alice", Duration::from_secs(60), ISS, AUD).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let auth = format!("{scheme} {token}");
            let response = call(request("/mfareset.v1.Users/ListUsers", Some(&auth))).await;
            assert!(response.headers().get("grpc-status").is_none());
            assert_eq!(response.headers()["x-principal"], "alice");
        }
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_with_their_reason() {
        let other = ServerSecret::from_bytes([9u8; 32]);
        let forged = mint_dev_token(&other, "alice", Duration::from_secs(60), ISS, AUD).unwrap();
        let wrong_aud =
            mint_dev_token(&secret(), "alice", Duration::from_secs(60), ISS, "x").unwrap();
        let cases = [
            (format!("Bearer {forged}"), "TOKEN_INVALID_SIGNATURE"),
            (format!("Bearer {wrong_aud}"), "TOKEN_INVALID"),
            ("Bearer not-a-jwt".to_owned(), "TOKEN_MALFORMED"),
            ("Basic YWxpY2U6cHc=".to_owned(), "TOKEN_MALFORMED"),
            ("Bearer ".to_owned(), "TOKEN_MALFORMED"),
        ];
        for (auth, reason) in cases {
            let response = call(request("/mfareset.v1.Customers/GetCustomer", Some(&auth))).await;
            assert_eq!(refusal_reason(&response), reason, "{auth}");
        }
    }

    #[tokio::test]
    async fn health_and_reflection_pass_through_without_token() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            let response = call(request(path, None)).await;
            assert!(response.headers().get("grpc-status").is_none(), "{path}");
            assert!(response.headers().get("x-principal").is_none(), "{path}");
        }
    }

    #[tokio::test]
    async fn every_other_path_needs_a_token() {
        for path in [
            "/mfareset.v2.Users/ListUsers",
            "/grpc.health.v2.Health/Check",
            "/grpc.health.v1.HealthX/Check",
            "/admin.Debug/Dump",
            "/",
            "/grpc.reflection.v1.ServerReflection",
        ] {
            let response = call(request(path, None)).await;
            assert_eq!(refusal_reason(&response), "TOKEN_MISSING", "{path}");
        }
    }

    #[tokio::test]
    async fn an_oversized_token_is_refused_unread() {
        let token = "a".repeat(crate::auth::MAX_TOKEN_BYTES + 1);
        let response = call(request(
            "/mfareset.v1.Users/ListUsers",
            Some(&format!("Bearer {token}")),
        ))
        .await;
        assert_eq!(refusal_reason(&response), "TOKEN_TOO_LARGE");
    }

    /// Log output captured in memory, to see what the span carried.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn principal_is_recorded_on_the_current_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("grpc", principal = tracing::field::Empty);

        let token = mint_dev_token(&secret(), "alice", Duration::from_secs(60), ISS, AUD).unwrap();
        let mut service = layer().layer(echo_principal());
        ServiceExt::ready(&mut service).await.unwrap();
        let auth = format!("Bearer {token}");
        let response =
            span.in_scope(|| service.call(request("/mfareset.v1.Users/GetUser", Some(&auth))));
        response.await.unwrap();
        span.in_scope(|| tracing::info!("handled"));

        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("grpc{principal=\"alice\"}"), "{logs}");
    }

    #[test]
    fn layer_fits_a_tonic_server() {
        let (_, health) = tonic_health::server::health_reporter();
        let incoming = tokio_stream::empty::<Result<tokio::net::TcpStream, std::io::Error>>();
        // Only the types matter: this future is never polled.
        let _serve = tonic::transport::Server::builder()
            .layer(layer())
            .add_service(health)
            .serve_with_incoming(incoming);
    }
}
