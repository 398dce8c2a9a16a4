//! The principal: the caller, as identified by the `sub` of a verified bearer token. It says
//! who is calling, not what they may do: roles are per customer and live in the database.

use tonic::Status;

use super::AuthError;

/// The verified caller. [`super::AuthLayer`] puts one into the extensions of every
/// `mfareset.v1` request; handlers read it with [`principal`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    subject: String,
}

impl Principal {
    /// A principal for `subject` (a token's `sub`). Outside tests, only the token verifier
    /// should make one: holding a `Principal` means "this caller was authenticated".
    pub fn new(subject: impl Into<String>) -> Principal {
        Principal {
            subject: subject.into(),
        }
    }

    /// The token's `sub`: what role assignments and audit events name the caller by, and
    /// what is compared with a user's `external_subject` to refuse resetting one's own MFA.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The caller of a gRPC request, for handlers. Behind [`super::AuthLayer`] it is always
/// there; if it is not (the layer was left out), the call is refused as UNAUTHENTICATED
/// rather than run anonymously.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<&Principal, Status> {
    req.extensions().get::<Principal>().ok_or_else(|| {
        tracing::error!("request reached a handler without a principal; is AuthLayer installed?");
        Status::from(AuthError::Missing)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_reads_the_principal_from_request_extensions() {
        let mut req = tonic::Request::new(());
        req.extensions_mut().insert(Principal::new("alice"));
        assert_eq!(principal(&req).unwrap().subject(), "alice");
    }

    #[test]
    fn handler_without_principal_gets_unauthenticated() {
        let req = tonic::Request::new(());
        let status = principal(&req).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
