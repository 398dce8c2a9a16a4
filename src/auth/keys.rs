//! The public keys that production bearer tokens are verified against: PEM files and a JWKS
//! file, read once at start. Only asymmetric keys are accepted here, each bound to exactly
//! one algorithm (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA), so a token can never choose
//! how its own signature is checked.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

use super::AuthError;

/// Key files are small; anything larger is a misconfiguration, not a key.
const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

/// One trusted public key and the single algorithm it verifies.
pub(crate) struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
    /// The JWKS `kid`; `None` for PEM files (and JWKS keys without one).
    kid: Option<String>,
}

/// Every configured public key. Tokens name theirs with `kid` (JWKS); keys without a `kid`
/// are tried for any token whose algorithm matches.
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Loads every PEM file and the JWKS file. Fails if a file is unreadable, a PEM file is
    /// not a supported public key, or the JWKS holds no usable key; unusable JWKS entries
    /// (symmetric, encryption-only, other curves) are skipped with a warning.
    pub(crate) fn load(pem_files: &[PathBuf], jwks_file: Option<&Path>) -> anyhow::Result<KeySet> {
        let mut keys = Vec::new();
        for path in pem_files {
            let pem = read_key_file(path)?;
            let (algorithm, key) =
                from_pem(&pem).with_context(|| format!("public key file {}", path.display()))?;
            keys.push(VerifyingKey {
                algorithm,
                key,
                kid: None,
            });
        }
        if let Some(path) = jwks_file {
            let before = keys.len();
            load_jwks(path, &mut keys)?;
            if keys.len() == before {
                bail!("JWKS file {} holds no usable signing key", path.display());
            }
        }
        if keys.is_empty() {
            bail!("no public key configured");
        }
        Ok(KeySet { keys })
    }

    /// The keys a token with this header may be checked with: the JWKS keys with its `kid`
    /// if there are any, otherwise the keys without a `kid`; always only those bound to the
    /// header's algorithm.
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Vec<&DecodingKey>, AuthError> {
        let named: Vec<&VerifyingKey> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let pool = if named.is_empty() {
            self.keys.iter().filter(|k| k.kid.is_none()).collect()
        } else {
            named
        };
        if pool.is_empty() {
            return Err(AuthError::Invalid(match kid {
                Some(_) => "unknown key id",
                None => "token names no key id",
            }));
        }
        let matching: Vec<&DecodingKey> = pool
            .into_iter()
            .filter(|k| k.algorithm == algorithm)
            .map(|k| &k.key)
            .collect();
        if matching.is_empty() {
            return Err(AuthError::Invalid("algorithm not accepted"));
        }
        Ok(matching)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.algorithm, k.kid.as_deref())))
            .finish()
    }
}

/// Reads a PEM public key, finding out from its content whether it is RSA, EC P-256 or
/// Ed25519. Private keys are refused: they must not be handed to a verifier.
pub(crate) fn from_pem(pem: &[u8]) -> anyhow::Result<(Algorithm, DecodingKey)> {
    if String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
        bail!("holds a private key; configure the public key only");
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // An uncompressed P-256 point is 0x04 || x (32 bytes) || y (32 bytes).
        return match der_bytes(&key) {
            Some([0x04, rest @ ..]) if rest.len() == 64 => Ok((Algorithm::ES256, key)),
            _ => bail!("only EC keys on curve P-256 (ES256) are supported"),
        };
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return match der_bytes(&key) {
            Some(bytes) if bytes.len() == 32 => Ok((Algorithm::EdDSA, key)),
            _ => bail!("only Ed25519 keys are supported for EdDSA"),
        };
    }
    bail!("not an RSA, EC P-256 or Ed25519 public key in PEM format")
}

/// Turns one JWKS entry into a key, or says why it cannot be used for token signatures.
pub(crate) fn from_jwk(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("key is meant for encryption");
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(_) => return Err("only EC curve P-256 is supported"),
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err("only OKP curve Ed25519 is supported"),
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are never accepted"),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let agrees = matches!(
            (declared, algorithm),
            (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !agrees {
            return Err("declared alg is not RS256, ES256 or EdDSA for this key type");
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "key parameters are not valid")?;
    let well_sized = match algorithm {
        Algorithm::ES256 => der_bytes(&key).is_some_and(|b| b.len() == 65),
        Algorithm::EdDSA => der_bytes(&key).is_some_and(|b| b.len() == 32),
        _ => true,
    };
    if !well_sized {
        return Err("key parameters have the wrong length");
    }
    Ok((algorithm, key))
}

fn load_jwks(path: &Path, keys: &mut Vec<VerifyingKey>) -> anyhow::Result<()> {
    let text = read_key_file(path)?;
    let doc: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("JWKS file {} is not JSON", path.display()))?;
    let Some(entries) = doc.get("keys").and_then(|k| k.as_array()) else {
        bail!("JWKS file {} has no \"keys\" array", path.display());
    };
    for (index, entry) in entries.iter().enumerate() {
        let parsed = serde_json::from_value::<Jwk>(entry.clone())
            .map_err(|_| "not a JWK this service understands")
            .and_then(|jwk| from_jwk(&jwk).map(|(alg, key)| (alg, key, jwk.common.key_id)));
        match parsed {
            Ok((algorithm, key, kid)) => keys.push(VerifyingKey {
                algorithm,
                key,
                kid,
            }),
            Err(why) => tracing::warn!(
                jwks = %path.display(),
                index,
                kid = entry.get("kid").and_then(|k| k.as_str()).unwrap_or(""),
                "skipping JWKS key: {why}"
            ),
        }
    }
    Ok(())
}

fn read_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading key file {}", path.display()))?
        .len();
    if len > MAX_KEY_FILE_LEN {
        bail!("key file {} is too large", path.display());
    }
    std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))
}

fn der_bytes(key: &DecodingKey) -> Option<&[u8]> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Some(bytes),
        DecodingKeyKind::RsaModulusExponent { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::*;

    #[test]
    fn detects_the_algorithm_from_pem_content() {
        assert_eq!(from_pem(RSA_PUBLIC).unwrap().0, Algorithm::RS256);
        assert_eq!(from_pem(EC_PUBLIC).unwrap().0, Algorithm::ES256);
        assert_eq!(from_pem(ED_PUBLIC).unwrap().0, Algorithm::EdDSA);
    }

    #[test]
    fn refuses_private_keys_and_garbage_as_public_keys() {
        assert!(from_pem(RSA_PRIVATE).is_err());
        assert!(from_pem(ED_PRIVATE).is_err());
        assert!(from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(from_pem(b"hello").is_err());
    }

    #[test]
    fn refuses_symmetric_and_encryption_jwks_entries() {
        let oct: Jwk =
            serde_json::from_value(serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}))
                .unwrap();
        assert!(from_jwk(&oct).is_err());
        let (_, ec) = from_pem(EC_PUBLIC).unwrap();
        let point = der_bytes(&ec).unwrap();
        let b64 = |b: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        let enc: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "enc", "kid": "e",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }))
        .unwrap();
        assert!(from_jwk(&enc).is_err());
    }

    #[test]
    fn jwks_without_usable_keys_is_refused() {
        let dir = TempDir::new("jwks-empty");
        let path = dir.write(
            "jwks.json",
            br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
        );
        assert!(KeySet::load(&[], Some(&path)).is_err());
    }

    #[test]
    fn candidates_prefer_the_named_key_and_match_the_algorithm() {
        let (alg, key) = from_pem(RSA_PUBLIC).unwrap();
        let (ed_alg, ed_key) = from_pem(ED_PUBLIC).unwrap();
        let set = KeySet {
            keys: vec![
                VerifyingKey {
                    algorithm: alg,
                    key,
                    kid: None,
                },
                VerifyingKey {
                    algorithm: ed_alg,
                    key: ed_key,
                    kid: Some("ed".into()),
                },
            ],
        };
        assert_eq!(
            set.candidates(Some("ed"), Algorithm::EdDSA).unwrap().len(),
            1
        );
        assert_eq!(
            set.candidates(Some("ed"), Algorithm::RS256)
                .unwrap_err()
                .reason()
                .as_str(),
            "TOKEN_INVALID"
        );
        assert_eq!(set.candidates(None, Algorithm::RS256).unwrap().len(), 1);
        assert_eq!(
            set.candidates(Some("other"), Algorithm::RS256)
                .unwrap()
                .len(),
            1
        );
        assert!(set.candidates(None, Algorithm::EdDSA).is_err());
        assert!(set.candidates(None, Algorithm::HS256).is_err());
    }
}
