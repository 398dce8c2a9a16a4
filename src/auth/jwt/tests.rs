//! Unit tests of [`super::TokenVerifier`] on the server secret (HS256), of the claims every
//! token must carry, and of [`super::mint_dev_token`]. Public-key tests are in `public_keys`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::auth::testutil::*;

const ISS: &str = "https://issuer.test";
const AUD: &str = "mfa-reset";

fn settings() -> AuthSettings {
    AuthSettings {
        issuer: ISS.into(),
        audience: AUD.into(),
        public_key_files: Vec::new(),
        jwks_file: None,
        leeway_seconds: 60,
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISS, "aud": AUD, "iat": now(), "exp": now() + 600})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A verifier on the server secret, and a function that signs claims the way it expects.
fn secret_verifier() -> (TokenVerifier, impl Fn(&Value) -> String) {
    let secret = ServerSecret::from_bytes([5u8; 32]);
    let verifier = TokenVerifier::new(&settings(), Some(&secret)).unwrap();
    let key = EncodingKey::from_secret(&hs256_key(&secret));
    (verifier, move |claims: &Value| {
        sign(Algorithm::HS256, &key, None, claims)
    })
}

fn pem_verifier(dir: &TempDir, pems: &[&[u8]]) -> TokenVerifier {
    let files = pems
        .iter()
        .enumerate()
        .map(|(i, pem)| dir.write(&format!("key{i}.pem"), pem))
        .collect();
    let settings = AuthSettings {
        public_key_files: files,
        ..settings()
    };
    TokenVerifier::new(&settings, None).unwrap()
}

fn reason(result: Result<Principal, AuthError>) -> &'static str {
    result.unwrap_err().reason().as_str()
}

#[test]
fn dev_token_round_trip_yields_the_subject() {
    let secret = ServerSecret::from_bytes([1u8; 32]);
    let verifier = TokenVerifier::new(&settings(), Some(&secret)).unwrap();
    let token = mint_dev_token(&secret, "alice", Duration::from_secs(300), ISS, AUD).unwrap();
    assert_eq!(verifier.verify(&token).unwrap().subject(), "alice");
}

#[test]
fn dev_token_carries_the_registered_claims() {
    let secret = ServerSecret::from_bytes([1u8; 32]);
    let token = mint_dev_token(&secret, "alice", Duration::from_secs(300), ISS, AUD).unwrap();
    let data = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).unwrap();
    assert_eq!(data.header.alg, Algorithm::HS256);
    let c = data.claims;
    assert_eq!(
        (c["sub"].as_str(), c["iss"].as_str(), c["aud"].as_str()),
        (Some("alice"), Some(ISS), Some(AUD))
    );
    let iat = c["iat"].as_u64().unwrap();
    assert_eq!(c["nbf"].as_u64(), Some(iat));
    assert_eq!(c["exp"].as_u64(), Some(iat + 300));
    assert!(mint_dev_token(&secret, "", Duration::from_secs(300), ISS, AUD).is_err());
    assert!(mint_dev_token(&secret, "alice", Duration::ZERO, ISS, AUD).is_err());
}

#[test]
fn expired_token_is_refused_as_expired() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&with(claims("alice"), "exp", json!(now() - 120)));
    assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
    assert_eq!(AuthError::Expired.reason().as_str(), "TOKEN_EXPIRED");
}

#[test]
fn leeway_accepts_a_token_that_expired_a_moment_ago() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&with(claims("alice"), "exp", json!(now() - 5)));
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn token_not_valid_before_a_future_time_is_refused() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&with(claims("alice"), "nbf", json!(now() + 600)));
    assert_eq!(reason(verifier.verify(&token)), "TOKEN_INVALID");
    let token = sign(&with(claims("alice"), "nbf", json!(now() - 10)));
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn wrong_audience_is_refused() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&with(claims("alice"), "aud", json!("someone-else")));
    assert_eq!(
        verifier.verify(&token),
        Err(AuthError::Invalid("audience does not match"))
    );
    let token = sign(&with(claims("alice"), "aud", json!(["someone-else", AUD])));
    assert!(
        verifier.verify(&token).is_ok(),
        "a list naming us is accepted"
    );
    let token = sign(&without(claims("alice"), "aud"));
    assert_eq!(reason(verifier.verify(&token)), "TOKEN_INVALID");
}

#[test]
fn wrong_issuer_is_refused() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&with(claims("alice"), "iss", json!("https://evil.test")));
    assert_eq!(
        verifier.verify(&token),
        Err(AuthError::Invalid("issuer does not match"))
    );
    let token = sign(&without(claims("alice"), "iss"));
    assert_eq!(reason(verifier.verify(&token)), "TOKEN_INVALID");
}

#[test]
fn token_without_expiry_is_refused() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&without(claims("alice"), "exp"));
    assert_eq!(
        verifier.verify(&token),
        Err(AuthError::Invalid("token has no expiry"))
    );
}

#[test]
fn token_without_a_subject_is_refused() {
    let (verifier, sign) = secret_verifier();
    for claims in [without(claims("x"), "sub"), claims(""), claims("  ")] {
        assert_eq!(
            verifier.verify(&sign(&claims)),
            Err(AuthError::Invalid("token has no subject"))
        );
    }
}

#[test]
fn token_signed_with_another_secret_has_an_invalid_signature() {
    let (verifier, _) = secret_verifier();
    let other = ServerSecret::from_bytes([6u8; 32]);
    let token = mint_dev_token(&other, "alice", Duration::from_secs(60), ISS, AUD).unwrap();
    assert_eq!(verifier.verify(&token), Err(AuthError::InvalidSignature));
    assert_eq!(
        AuthError::InvalidSignature.reason().as_str(),
        "TOKEN_INVALID_SIGNATURE"
    );
}

#[test]
fn tampered_claims_have_an_invalid_signature() {
    let (verifier, sign) = secret_verifier();
    let token = sign(&claims("alice"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(claims("admin").to_string().as_bytes());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(verifier.verify(&tampered), Err(AuthError::InvalidSignature));
}

#[test]
fn alg_none_token_is_refused() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims("alice").to_string().as_bytes());
    let dir = TempDir::new("jwt-none");
    let verifiers = [secret_verifier().0, pem_verifier(&dir, &[RSA_PUBLIC])];
    for verifier in &verifiers {
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert_eq!(
                verifier.verify(&token),
                Err(AuthError::Invalid("algorithm not accepted"))
            );
        }
    }
}

#[test]
fn missing_and_garbage_tokens_are_told_apart() {
    let (verifier, sign) = secret_verifier();
    assert_eq!(verifier.verify(""), Err(AuthError::Missing));
    assert_eq!(AuthError::Missing.reason().as_str(), "TOKEN_MISSING");
    for garbage in ["abc", "a.b.c", "a.b", "...."] {
        assert_eq!(
            verifier.verify(garbage),
            Err(AuthError::Malformed),
            "{garbage:.20}"
        );
    }
    assert_eq!(AuthError::Malformed.reason().as_str(), "TOKEN_MALFORMED");
    // Over the limit: refused unread, whatever it holds.
    let token = sign(&json!({"sub": "a", "iss": ISS, "aud": AUD, "exp": 4_000_000_000u64}));
    let padded = format!("{token}{}", "x".repeat(MAX_TOKEN_BYTES));
    assert_eq!(verifier.verify(&padded), Err(AuthError::TooLarge));
    assert_eq!(
        verifier.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)),
        Err(AuthError::TooLarge)
    );
    assert_eq!(AuthError::TooLarge.reason().as_str(), "TOKEN_TOO_LARGE");
}

mod public_keys;
