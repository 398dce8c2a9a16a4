//! Verification against configured public keys (PEM files, JWKS): each algorithm, key
//! selection by `kid`, and the refusal of HS256 once public keys are configured.

use jsonwebtoken::jwk::{Jwk, JwkSet};

use super::*;

#[test]
fn hs256_token_is_refused_when_a_public_key_is_configured() {
    let dir = TempDir::new("jwt-confusion");
    let verifier = pem_verifier(&dir, &[RSA_PUBLIC, EC_PUBLIC, ED_PUBLIC]);
    // The classic attack: HMAC-sign with the public key's PEM bytes as the secret.
    for public in [RSA_PUBLIC, EC_PUBLIC, ED_PUBLIC] {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(public),
            None,
            &claims("mallory"),
        );
        assert_eq!(
            verifier.verify(&token),
            Err(AuthError::Invalid("algorithm not accepted"))
        );
    }
    // The server secret is ignored once public keys are configured.
    let secret = ServerSecret::from_bytes([5u8; 32]);
    let settings = AuthSettings {
        public_key_files: vec![dir.write("k.pem", RSA_PUBLIC)],
        ..settings()
    };
    let verifier = TokenVerifier::new(&settings, Some(&secret)).unwrap();
    let token = mint_dev_token(&secret, "alice", Duration::from_secs(60), ISS, AUD).unwrap();
    assert_eq!(reason(verifier.verify(&token)), "TOKEN_INVALID");
}

#[test]
fn rs256_es256_and_eddsa_tokens_verify_against_pem_public_keys() {
    let dir = TempDir::new("jwt-pem");
    let verifier = pem_verifier(&dir, &[RSA_PUBLIC, EC_PUBLIC, ED_PUBLIC]);
    let signers = [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        ),
    ];
    for (alg, key) in &signers {
        let token = sign(*alg, key, None, &claims("svc-sync"));
        assert_eq!(
            verifier.verify(&token).unwrap().subject(),
            "svc-sync",
            "{alg:?}"
        );
        let expired = sign(
            *alg,
            key,
            None,
            &with(claims("x"), "exp", json!(now() - 3600)),
        );
        assert_eq!(
            verifier.verify(&expired),
            Err(AuthError::Expired),
            "{alg:?}"
        );
    }
}

#[test]
fn token_whose_algorithm_is_not_the_keys_is_refused() {
    let dir = TempDir::new("jwt-alg-mismatch");
    let verifier = pem_verifier(&dir, &[RSA_PUBLIC]);
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let token = sign(Algorithm::ES256, &ec, None, &claims("alice"));
    assert_eq!(reason(verifier.verify(&token)), "TOKEN_INVALID");
    // Same RSA key, other RSA algorithm: the key is bound to RS256 only.
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    for alg in [Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, &rsa, None, &claims("alice"));
        assert_eq!(reason(verifier.verify(&token)), "TOKEN_INVALID", "{alg:?}");
    }
}

#[test]
fn jwks_selects_the_key_by_kid() {
    let mut rsa = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    rsa.common.key_id = Some("r1".into());
    let mut ec = Jwk::from_encoding_key(
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        Algorithm::ES256,
    )
    .unwrap();
    ec.common.key_id = Some("e1".into());
    let ed_x = DecodingKey::from_ed_pem(ED_PUBLIC)
        .unwrap()
        .as_bytes()
        .to_vec();
    let ed: Jwk = serde_json::from_value(json!({
        "kty": "OKP", "crv": "Ed25519", "x": b64(&ed_x), "kid": "d1", "use": "sig", "alg": "EdDSA"
    }))
    .unwrap();
    let hmac = json!({"kty": "oct", "k": b64(b"shared"), "kid": "h1"});
    let mut jwks = serde_json::to_value(JwkSet {
        keys: vec![rsa, ec, ed],
    })
    .unwrap();
    jwks["keys"].as_array_mut().unwrap().push(hmac);
    let dir = TempDir::new("jwt-jwks");
    let path = dir.write("jwks.json", jwks.to_string().as_bytes());
    let verifier = TokenVerifier::new(
        &AuthSettings {
            jwks_file: Some(path),
            ..settings()
        },
        None,
    )
    .unwrap();

    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let ed_key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
    let ok = [
        (Algorithm::RS256, &rsa_key, "r1"),
        (Algorithm::ES256, &ec_key, "e1"),
        (Algorithm::EdDSA, &ed_key, "d1"),
    ];
    for (alg, key, kid) in ok {
        let token = sign(alg, key, Some(kid), &claims("alice"));
        assert_eq!(verifier.verify(&token).unwrap().subject(), "alice", "{kid}");
    }
    let wrong_kid = sign(Algorithm::ES256, &ec_key, Some("r1"), &claims("alice"));
    assert_eq!(
        verifier.verify(&wrong_kid),
        Err(AuthError::Invalid("algorithm not accepted"))
    );
    let unknown = sign(Algorithm::RS256, &rsa_key, Some("zz"), &claims("alice"));
    assert_eq!(
        verifier.verify(&unknown),
        Err(AuthError::Invalid("unknown key id"))
    );
    let no_kid = sign(Algorithm::RS256, &rsa_key, None, &claims("alice"));
    assert_eq!(
        verifier.verify(&no_kid),
        Err(AuthError::Invalid("token names no key id"))
    );
    let hmac = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"shared"),
        Some("h1"),
        &claims("alice"),
    );
    assert_eq!(reason(verifier.verify(&hmac)), "TOKEN_INVALID");
}

#[test]
fn settings_without_a_usable_key_or_issuer_are_refused() {
    let secret = ServerSecret::from_bytes([1u8; 32]);
    assert!(TokenVerifier::new(&settings(), None).is_err());
    assert!(
        TokenVerifier::new(
            &AuthSettings {
                issuer: " ".into(),
                ..settings()
            },
            Some(&secret)
        )
        .is_err()
    );
    assert!(
        TokenVerifier::new(
            &AuthSettings {
                audience: String::new(),
                ..settings()
            },
            Some(&secret)
        )
        .is_err()
    );
    assert!(
        TokenVerifier::new(
            &AuthSettings {
                leeway_seconds: 86_400,
                ..settings()
            },
            Some(&secret)
        )
        .is_err()
    );
    let missing = AuthSettings {
        public_key_files: vec!["/nonexistent/key.pem".into()],
        ..settings()
    };
    assert!(TokenVerifier::new(&missing, Some(&secret)).is_err());
    let dir = TempDir::new("jwt-private");
    let private = AuthSettings {
        public_key_files: vec![dir.write("k.pem", RSA_PRIVATE)],
        ..settings()
    };
    assert!(TokenVerifier::new(&private, Some(&secret)).is_err());
}
