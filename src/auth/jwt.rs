//! Bearer tokens are JWTs. By default they are HS256, signed with a key derived from the
//! server secret (and minted by the binary for development); in production they are
//! RS256 / ES256 / EdDSA, checked against configured public keys, and then HS256 is refused
//! so that a public key can never be used as an HMAC secret (algorithm confusion).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use super::{AuthError, Principal, ServerSecret};

/// The [`ServerSecret::derive`] purpose of the HS256 token key, so that the raw secret is
/// never an HMAC key that other derived keys could be confused with.
const HS256_KEY_PURPOSE: &str = "mfa-reset/jwt-hs256";

/// Longer tokens are refused (TOKEN_TOO_LARGE) before any parsing, to bound the work an
/// anonymous caller causes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock-skew allowance above this is a misconfiguration that would keep expired tokens alive.
const MAX_LEEWAY_SECONDS: u64 = 3600;

/// How tokens are checked: who must have issued them, for whom, and with which keys.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// Required `iss` of every token.
    pub issuer: String,
    /// Required `aud` of every token (the token's `aud` may be a list containing it).
    pub audience: String,
    /// PEM public keys (RSA, EC P-256 or Ed25519). Setting any turns HS256 off.
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS file whose keys are chosen by the token's `kid`. Setting it turns HS256 off.
    pub jwks_file: Option<PathBuf>,
    /// Allowed clock skew, in seconds, for `exp` and `nbf`.
    pub leeway_seconds: u64,
}

/// Verifies bearer tokens; built once at start, shared by every request.
pub struct TokenVerifier {
    keys: Keys,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
}

enum Keys {
    /// Development default: HS256 with the key derived from the server secret.
    ServerSecret(DecodingKey),
    /// Production: only the configured asymmetric keys.
    Public(KeySet),
}

impl TokenVerifier {
    /// Builds the verifier. With public key files or a JWKS file it accepts only the
    /// asymmetric algorithm of each key; otherwise HS256 with `secret`. Fails on an empty
    /// issuer or audience, an unreadable or unsupported key, or when there is no key at all.
    pub fn new(settings: &AuthSettings, secret: Option<&ServerSecret>) -> anyhow::Result<Self> {
        if settings.issuer.trim().is_empty() {
            bail!("the token issuer must not be empty");
        }
        if settings.audience.trim().is_empty() {
            bail!("the token audience must not be empty");
        }
        if settings.leeway_seconds > MAX_LEEWAY_SECONDS {
            bail!("token leeway must be at most {MAX_LEEWAY_SECONDS} seconds");
        }
        let keys = if !settings.public_key_files.is_empty() || settings.jwks_file.is_some() {
            Keys::Public(KeySet::load(
                &settings.public_key_files,
                settings.jwks_file.as_deref(),
            )?)
        } else if let Some(secret) = secret {
            Keys::ServerSecret(DecodingKey::from_secret(&hs256_key(secret)))
        } else {
            bail!("no token key: configure public keys or a JWKS file, or use the server secret");
        };
        Ok(TokenVerifier {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_seconds: settings.leeway_seconds,
        })
    }

    /// Checks a bearer token (without the `Bearer ` prefix) and returns its caller: the
    /// signature against a key bound to the header's algorithm (never `none`), then `exp`
    /// (required), `nbf` (if present), `iss`, `aud`, and a non-empty `sub`.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unreadable_header(token))?;
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "critical header extensions are not supported",
            ));
        }
        let candidates = match &self.keys {
            Keys::ServerSecret(key) if header.alg == Algorithm::HS256 => vec![key],
            Keys::ServerSecret(_) => return Err(AuthError::Invalid("algorithm not accepted")),
            Keys::Public(set) => set.candidates(header.kid.as_deref(), header.alg)?,
        };
        let validation = self.validation(header.alg);
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return principal_from(data.claims),
                // Another key without a `kid` may have signed it: try the next one.
                Err(err) if *err.kind() == ErrorKind::InvalidSignature => continue,
                Err(err) => return Err(map_error(&err)),
            }
        }
        Err(AuthError::InvalidSignature)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::ServerSecret(_) => "HS256 (server secret)".to_owned(),
            Keys::Public(set) => format!("{set:?}"),
        };
        f.debug_struct("TokenVerifier")
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

/// Mints an HS256 development token for `subject`, valid for `ttl` from now, that a
/// verifier built with the same `secret`, issuer and audience (and no public keys) accepts.
/// This is what the binary's `token` subcommand prints.
pub fn mint_dev_token(
    secret: &ServerSecret,
    subject: &str,
    ttl: Duration,
    issuer: &str,
    audience: &str,
) -> anyhow::Result<String> {
    if subject.trim().is_empty() {
        bail!("the token subject must not be empty");
    }
    if ttl.as_secs() == 0 {
        bail!("the token lifetime must be at least one second");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let exp = now
        .checked_add(ttl.as_secs())
        .context("the token lifetime is too long")?;
    let claims = DevClaims {
        sub: subject,
        iss: issuer,
        aud: audience,
        iat: now,
        nbf: now,
        exp,
    };
    let key = EncodingKey::from_secret(&hs256_key(secret));
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .context("signing the development token")
}

fn hs256_key(secret: &ServerSecret) -> [u8; 32] {
    secret.derive(HS256_KEY_PURPOSE)
}

/// The claims read from a verified token; the registered ones are checked by `Validation`.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

fn principal_from(claims: Claims) -> Result<Principal, AuthError> {
    match claims.sub {
        Some(sub) if !sub.trim().is_empty() => Ok(Principal::new(sub)),
        _ => Err(AuthError::Invalid("token has no subject")),
    }
}

/// A header the JWT library cannot read: an algorithm it does not know (`none` included)
/// is refused as such; anything else is malformed.
fn unreadable_header(token: &str) -> AuthError {
    let Some(encoded) = token.split('.').next() else {
        return AuthError::Malformed;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
        return AuthError::Malformed;
    };
    match serde_json::from_slice::<serde_json::Value>(&json) {
        Ok(header) if header.get("alg").is_some_and(|a| a.is_string()) => {
            AuthError::Invalid("algorithm not accepted")
        }
        _ => AuthError::Malformed,
    }
}

fn map_error(err: &JwtError) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed,
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::Invalid("token is not valid yet"),
        ErrorKind::InvalidIssuer => AuthError::Invalid("issuer does not match"),
        ErrorKind::InvalidAudience => AuthError::Invalid("audience does not match"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::Invalid("algorithm not accepted"),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(match claim.as_str() {
            "exp" => "token has no expiry",
            "sub" => "token has no subject",
            "iss" => "token has no issuer",
            "aud" => "token has no audience",
            _ => "token lacks a required claim",
        }),
        other => {
            tracing::warn!(error = ?other, "bearer token could not be checked");
            AuthError::Invalid("token could not be checked")
        }
    }
}

#[cfg(test)]
mod tests;
