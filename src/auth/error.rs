//! Why a bearer token was refused, and how that becomes an UNAUTHENTICATED gRPC status with
//! an `ErrorInfo` whose `reason` clients can branch on (AIP-193).

use tonic::{Code, Status};

use super::MAX_TOKEN_BYTES;
use crate::{api::status::status, domain::Reason};

/// Why a request could not be authenticated. Messages never contain the token or key
/// material, so they are safe to send to the caller and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was sent.
    #[error("missing bearer token")]
    Missing,
    /// Something was sent, but it is not `Bearer <JWT>`, or the JWT cannot be parsed.
    #[error("malformed bearer token")]
    Malformed,
    /// The token is longer than [`MAX_TOKEN_BYTES`]; it was not read.
    #[error("bearer token too large: at most {MAX_TOKEN_BYTES} bytes are read")]
    TooLarge,
    /// The token's `exp` (plus leeway) has passed.
    #[error("bearer token expired")]
    Expired,
    /// No configured key produced this signature.
    #[error("bearer token signature is invalid")]
    InvalidSignature,
    /// A well-formed, correctly signed token that is still not acceptable here (wrong
    /// audience or issuer, refused algorithm, not yet valid, no subject, ...).
    #[error("bearer token rejected: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    /// The `ErrorInfo.reason` clients branch on; stable across releases.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::Missing => Reason::TokenMissing,
            AuthError::Malformed => Reason::TokenMalformed,
            AuthError::TooLarge => Reason::TokenTooLarge,
            AuthError::Expired => Reason::TokenExpired,
            AuthError::InvalidSignature => Reason::TokenInvalidSignature,
            AuthError::Invalid(_) => Reason::TokenInvalid,
        }
    }
}

impl From<AuthError> for Status {
    /// Every authentication failure is UNAUTHENTICATED with an `ErrorInfo` of its reason;
    /// the message is the error's display text.
    fn from(err: AuthError) -> Status {
        let mut metadata = std::collections::HashMap::new();
        if err == AuthError::TooLarge {
            metadata.insert("max_token_bytes".into(), MAX_TOKEN_BYTES.to_string());
        }
        status(
            Code::Unauthenticated,
            err.reason(),
            err.to_string(),
            metadata,
            Vec::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;
    use crate::api::status::ERROR_DOMAIN;

    #[test]
    fn every_auth_error_becomes_unauthenticated_with_its_reason() {
        let cases = [
            (AuthError::Missing, "TOKEN_MISSING"),
            (AuthError::Malformed, "TOKEN_MALFORMED"),
            (AuthError::Expired, "TOKEN_EXPIRED"),
            (AuthError::InvalidSignature, "TOKEN_INVALID_SIGNATURE"),
            (
                AuthError::Invalid("audience does not match"),
                "TOKEN_INVALID",
            ),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason().as_str(), reason);
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(status.message(), message);
            let info = status.get_error_details();
            let info = info.error_info().expect("error info attached");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }
}
