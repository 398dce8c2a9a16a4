//! Bearer tokens, checked through a real `mfareset.v1` RPC (`Customers.ListCustomers`):
//! every way a token can be missing, malformed, forged, expired or meant for someone else
//! is UNAUTHENTICATED with its own ErrorInfo reason; a server configured with public keys
//! accepts RS256 and refuses HS256 (algorithm confusion); health and reflection stay open.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    pin::Pin,
    sync::atomic::Ordering,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mfa_reset::{
    auth::{ServerSecret, mint_dev_token},
    config::Settings,
    proto::v1::{self as pb, customers_client::CustomersClient},
};
use serde_json::{Value, json};
use tonic::{Code, Request, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use tonic_types::StatusExt;

use crate::helpers::{
    ALL_KINDS, AUDIENCE, Backend, ISSUER, PROVISIONER, TestApp, TestDatabase, TestSettings,
    assert_error, authed, counted_channel,
};

// A refused token never reaches a handler (the auth layer answers), so the refusals run on
// SQLite only; tokens that are accepted run a query, and so run on both backends.

/// Like `backend_test!`, but on SQLite only (`<name>::sqlite`): for behaviour settled
/// before any query runs, where a second backend would test nothing new.
macro_rules! sqlite_only_test {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::helpers::run(crate::helpers::Backend::Sqlite, |app| {
                    Box::pin(super::$body(app))
                })
                .await
            }
        }
    };
}

/// The subject of the tokens crafted here.
const SUBJECT: &str = "token-tester";

/// The [`ServerSecret::derive`] purpose the server signs and checks HS256 tokens with
/// (src/auth/jwt.rs).
const HS256_KEY_PURPOSE: &str = "mfa-reset/jwt-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims the server accepts: its issuer and audience, valid now for an hour.
fn valid_claims() -> Value {
    let now = now();
    json!({
        "sub": SUBJECT,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    })
}

/// `valid_claims()` with `changes` applied; a `null` value removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = valid_claims();
    let object = claims.as_object_mut().expect("claims object");
    for (name, value) in changes.as_object().expect("changes object") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// `claims` signed with `algorithm` and `key`.
fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign token")
}

/// `claims` signed the way the server signs its development tokens.
fn server_signed(app: &TestApp, claims: &Value) -> String {
    let key = EncodingKey::from_secret(&app.secret.derive(HS256_KEY_PURPOSE));
    sign(Algorithm::HS256, &key, claims)
}

/// A ListCustomers request with exactly this `authorization` header value.
fn with_authorization(value: &str) -> Request<pb::ListCustomersRequest> {
    let mut request = Request::new(pb::ListCustomersRequest::default());
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("header value"));
    request
}

async fn list_customers(
    app: &TestApp,
    request: Request<pb::ListCustomersRequest>,
) -> Result<pb::ListCustomersResponse, Status> {
    app.customers()
        .list_customers(request)
        .await
        .map(tonic::Response::into_inner)
}

/// ListCustomers with `token` as the bearer token.
async fn list_customers_with(
    app: &TestApp,
    token: &str,
) -> Result<pb::ListCustomersResponse, Status> {
    list_customers(app, authed(pb::ListCustomersRequest::default(), token)).await
}

async fn missing_token_is_unauthenticated(app: &TestApp) {
    let result = list_customers(app, Request::new(pb::ListCustomersRequest::default())).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_MISSING");
}
sqlite_only_test!(
    missing_token_is_unauthenticated,
    missing_token_is_unauthenticated
);

async fn non_bearer_scheme_is_malformed(app: &TestApp) {
    let result = list_customers(app, with_authorization("Basic xyz")).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_MALFORMED");
    // A valid token does not rescue a wrong scheme.
    let result = list_customers(
        app,
        with_authorization(&format!("Token {}", app.token(SUBJECT))),
    )
    .await;
    assert_error(result, Code::Unauthenticated, "TOKEN_MALFORMED");
}
sqlite_only_test!(
    non_bearer_scheme_is_malformed,
    non_bearer_scheme_is_malformed
);

async fn bearer_without_a_token_is_malformed(app: &TestApp) {
    for value in ["Bearer", "Bearer ", "Bearer    "] {
        let result = list_customers(app, with_authorization(value)).await;
        let status = assert_error(result, Code::Unauthenticated, "TOKEN_MALFORMED");
        assert!(!status.message().is_empty(), "{value:?}: {status:?}");
    }
}
sqlite_only_test!(
    bearer_without_a_token_is_malformed,
    bearer_without_a_token_is_malformed
);

async fn bearer_scheme_is_case_insensitive(app: &TestApp) {
    let token = app.token(SUBJECT);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let result = list_customers(app, with_authorization(&format!("{scheme} {token}"))).await;
        result.unwrap_or_else(|status| panic!("{scheme}: {status:?}"));
    }
}
backend_test!(
    bearer_scheme_is_case_insensitive,
    bearer_scheme_is_case_insensitive
);

async fn two_authorization_headers_are_malformed(app: &TestApp) {
    let token = app.token(SUBJECT);
    let mut request = authed(pb::ListCustomersRequest::default(), &token);
    request.metadata_mut().append(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let result = list_customers(app, request).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_MALFORMED");
}
sqlite_only_test!(
    two_authorization_headers_are_malformed,
    two_authorization_headers_are_malformed
);

async fn token_that_is_not_a_jwt_is_malformed(app: &TestApp) {
    for token in ["not-a-jwt", "a.b.c", "%%%.%%%.%%%"] {
        let result = list_customers_with(app, token).await;
        assert_error(result, Code::Unauthenticated, "TOKEN_MALFORMED");
    }
}
sqlite_only_test!(
    token_that_is_not_a_jwt_is_malformed,
    token_that_is_not_a_jwt_is_malformed
);

async fn oversized_tokens_are_refused_and_the_connection_survives(app: &TestApp) {
    // One connection, counted, with a health watch streaming on it the whole time: an
    // HTTP/2 GOAWAY or a dropped connection would end the watch and make the channel
    // reconnect.
    let (channel, connections) = counted_channel(app).await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    assert!(
        watch
            .message()
            .await
            .expect("first health status")
            .is_some()
    );

    let mut customers = CustomersClient::new(channel);
    for size in [16 * 1024 + 1, 64 * 1024, 256 * 1024] {
        // Longer than the server reads (16 KiB): UNAUTHENTICATED from the server, unread.
        let token = format!("{}.{}.sig", "a".repeat(size / 2), "b".repeat(size / 2));
        let result = customers
            .list_customers(authed(pb::ListCustomersRequest::default(), &token))
            .await;
        let status = assert_error(result, Code::Unauthenticated, "TOKEN_TOO_LARGE");
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(info.metadata["max_token_bytes"], "16384", "{size}");
        customers
            .list_customers(authed(
                pb::ListCustomersRequest::default(),
                &app.token(SUBJECT),
            ))
            .await
            .unwrap_or_else(|status| panic!("after a {size}-byte token: {status:?}"));
    }
    let still_open = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
    assert!(still_open.is_err(), "the watch ended: {still_open:?}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the channel reconnected"
    );
}
sqlite_only_test!(
    oversized_tokens_are_refused_and_the_connection_survives,
    oversized_tokens_are_refused_and_the_connection_survives
);

async fn token_signed_with_another_servers_secret_has_an_invalid_signature(app: &TestApp) {
    let other = ServerSecret::generate().expect("secret");
    let token = mint_dev_token(&other, SUBJECT, Duration::from_secs(3600), ISSUER, AUDIENCE)
        .expect("token");
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID_SIGNATURE");
}
sqlite_only_test!(
    token_signed_with_another_servers_secret_has_an_invalid_signature,
    token_signed_with_another_servers_secret_has_an_invalid_signature
);

async fn token_signed_with_the_raw_secret_has_an_invalid_signature(app: &TestApp) {
    // Only the key derived for tokens signs them, never the secret itself.
    let key = EncodingKey::from_secret(app.secret.bytes());
    let token = sign(Algorithm::HS256, &key, &valid_claims());
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID_SIGNATURE");
}
sqlite_only_test!(
    token_signed_with_the_raw_secret_has_an_invalid_signature,
    token_signed_with_the_raw_secret_has_an_invalid_signature
);

async fn token_with_a_tampered_payload_has_an_invalid_signature(app: &TestApp) {
    let token = server_signed(app, &valid_claims());
    let forged = server_signed(app, &claims_with(json!({ "sub": PROVISIONER })));
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = forged.split('.').nth(1).expect("payload");
    let result = list_customers_with(app, &parts.join(".")).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID_SIGNATURE");
}
sqlite_only_test!(
    token_with_a_tampered_payload_has_an_invalid_signature,
    token_with_a_tampered_payload_has_an_invalid_signature
);

async fn expired_token_is_unauthenticated(app: &TestApp) {
    let expired = now() - 60;
    let token = server_signed(
        app,
        &claims_with(json!({ "iat": expired - 3600, "nbf": expired - 3600, "exp": expired })),
    );
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_EXPIRED");
}
sqlite_only_test!(
    expired_token_is_unauthenticated,
    expired_token_is_unauthenticated
);

async fn token_for_another_audience_is_invalid(app: &TestApp) {
    for audience in [json!("someone-else"), json!(["someone-else", "another"])] {
        let token = server_signed(app, &claims_with(json!({ "aud": audience })));
        let result = list_customers_with(app, &token).await;
        assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
    }
}
sqlite_only_test!(
    token_for_another_audience_is_invalid,
    token_for_another_audience_is_invalid
);

async fn token_with_audience_list_containing_ours_is_accepted(app: &TestApp) {
    let token = server_signed(app, &claims_with(json!({ "aud": ["other", AUDIENCE] })));
    list_customers_with(app, &token)
        .await
        .expect("an audience list that names this service is accepted");
}
backend_test!(
    token_with_audience_list_containing_ours_is_accepted,
    token_with_audience_list_containing_ours_is_accepted
);

async fn token_from_another_issuer_is_invalid(app: &TestApp) {
    let token = server_signed(app, &claims_with(json!({ "iss": "someone-else" })));
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
}
sqlite_only_test!(
    token_from_another_issuer_is_invalid,
    token_from_another_issuer_is_invalid
);

async fn token_not_valid_yet_is_invalid(app: &TestApp) {
    let later = now() + 600;
    let token = server_signed(app, &claims_with(json!({ "nbf": later })));
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
}
sqlite_only_test!(
    token_not_valid_yet_is_invalid,
    token_not_valid_yet_is_invalid
);

async fn token_missing_a_required_claim_is_invalid(app: &TestApp) {
    for claim in ["exp", "iss", "aud", "sub"] {
        let token = server_signed(app, &claims_with(json!({ claim: null })));
        let result = list_customers_with(app, &token).await;
        let status = assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
        assert!(!status.message().is_empty(), "without {claim}: {status:?}");
    }
    let token = server_signed(app, &claims_with(json!({ "sub": "  " })));
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
}
sqlite_only_test!(
    token_missing_a_required_claim_is_invalid,
    token_missing_a_required_claim_is_invalid
);

async fn unsigned_alg_none_token_is_invalid(app: &TestApp) {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(valid_claims().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let result = list_customers_with(app, &token).await;
        assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
    }
}
sqlite_only_test!(
    unsigned_alg_none_token_is_invalid,
    unsigned_alg_none_token_is_invalid
);

async fn token_with_another_hmac_algorithm_is_invalid(app: &TestApp) {
    let key = EncodingKey::from_secret(&app.secret.derive(HS256_KEY_PURPOSE));
    let token = sign(Algorithm::HS512, &key, &valid_claims());
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
}
sqlite_only_test!(
    token_with_another_hmac_algorithm_is_invalid,
    token_with_another_hmac_algorithm_is_invalid
);

async fn valid_token_is_accepted_as_its_subject(app: &TestApp) {
    let visible = app
        .create_customer("Visible Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.create_customer("Hidden Co", pb::MfaPolicy::Enforced, &ALL_KINDS)
        .await;
    app.grant(SUBJECT, Some(&visible.id), "READER").await;
    // The harness's dev token and one crafted here the way the server signs: the second
    // shows that the refusals above are down to the one claim each of them changes.
    for token in [app.token(SUBJECT), server_signed(app, &valid_claims())] {
        let listed = list_customers_with(app, &token)
            .await
            .expect("a valid token is accepted");
        let names: Vec<&str> = listed
            .customers
            .iter()
            .map(|c| c.display_name.as_str())
            .collect();
        assert_eq!(
            names,
            ["Visible Co"],
            "the token's subject is the principal"
        );
    }
}
backend_test!(
    valid_token_is_accepted_as_its_subject,
    valid_token_is_accepted_as_its_subject
);

async fn health_answers_without_a_token(app: &TestApp) {
    let response = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}
sqlite_only_test!(
    health_answers_without_a_token,
    health_answers_without_a_token
);

async fn reflection_answers_without_a_token(app: &TestApp) {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection needs no token")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "mfareset.v1.Customers"),
        "{list:?}"
    );
}
sqlite_only_test!(
    reflection_answers_without_a_token,
    reflection_answers_without_a_token
);

// A server that verifies tokens with a public key instead of its own secret. These test
// token verification, not storage, so they run on SQLite only.

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/testdata")
        .join(name)
}

/// Runs `test` against a fresh SQLite app configured with `rsa_public.pem`, then stops it
/// and removes its files, whether the test passed or not.
async fn with_public_key_app<F>(test: F)
where
    F: for<'a> FnOnce(&'a TestApp) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
{
    let database = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let mut settings = Settings::default_for_tests(database.url.clone());
    settings.auth.public_key_files = vec![testdata("rsa_public.pem")];
    let secret_dir = settings.secret_file.parent().map(Path::to_path_buf);
    let app = TestApp::spawn_with(settings).await;
    let outcome = AssertUnwindSafe(test(&app)).catch_unwind().await;
    app.stop().await;
    database.drop_now().await;
    if let Some(dir) = secret_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(testdata("rsa_private.pem")).expect("read RSA private key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("RSA private key");
    sign(Algorithm::RS256, &key, claims)
}

async fn accepts_rs256(app: &TestApp) {
    let token = rs256(&claims_with(json!({ "sub": PROVISIONER })));
    let created = app
        .customers()
        .create_customer(authed(
            pb::CreateCustomerRequest {
                request_id: Default::default(),
                customer: Some(pb::Customer {
                    display_name: "Key Co".into(),
                    mfa_policy: pb::MfaPolicy::Enforced.into(),
                    enabled_method_kinds: vec![pb::MethodKind::Phone.into()],
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .expect("an RS256 token from the configured key is accepted")
        .into_inner();
    assert_eq!(created.customer.expect("customer").display_name, "Key Co");
    // The same key, but the other checks still apply.
    let token = rs256(&claims_with(json!({ "aud": "someone-else" })));
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_token_is_accepted_when_public_keys_are_configured() {
    with_public_key_app(|app| Box::pin(accepts_rs256(app))).await;
}

async fn refuses_hs256(app: &TestApp) {
    // The development token the server would accept without public keys.
    let result = list_customers_with(app, &app.token(PROVISIONER)).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
    // Algorithm confusion: HS256 keyed with the public key the server trusts.
    let public_pem = std::fs::read(testdata("rsa_public.pem")).expect("read RSA public key");
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
        &claims_with(json!({ "sub": PROVISIONER })),
    );
    let result = list_customers_with(app, &token).await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_is_refused_when_public_keys_are_configured() {
    with_public_key_app(|app| Box::pin(refuses_hs256(app))).await;
}
