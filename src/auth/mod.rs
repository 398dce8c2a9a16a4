//! Who is calling: bearer token verification, the verified [`Principal`], and the server
//! secret that development tokens (and other server-side keys) come from.
//!
//! The pieces, each in the file named after it:
//! - [`secret`]: the 32-byte [`ServerSecret`] generated on first start (file mode 0600).
//! - `keys`: the public keys (PEM files, JWKS) production tokens are checked against.
//! - [`jwt`]: [`TokenVerifier`] (HS256 with the server secret by default; RS256 / ES256 /
//!   EdDSA when public keys are configured) and [`mint_dev_token`].
//! - [`error`]: [`AuthError`], and how it becomes an UNAUTHENTICATED gRPC status.
//! - [`mod@principal`]: the verified caller, and how a handler reads it from a request.
//! - [`layer`]: [`AuthLayer`], the tower layer that authenticates every `mfareset.v1` call,
//!   so that no handler has to remember to.
//!
//! Roles are not decided here: a [`Principal`] only says who the caller is; what they may
//! do in a customer is a role assignment, kept in the database and checked by the domain.

pub mod error;
pub mod jwt;
mod keys;
pub mod layer;
pub mod principal;
pub mod secret;

pub use error::AuthError;
pub use jwt::{AuthSettings, MAX_TOKEN_BYTES, TokenVerifier, mint_dev_token};
pub use layer::{AuthLayer, AuthService};
pub use principal::{Principal, principal};
pub use secret::ServerSecret;

/// Helpers shared by the unit tests of this module.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed again when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(label: &str) -> TempDir {
            let unique: u64 = rand::random();
            let path = std::env::temp_dir().join(format!(
                "mfa-reset-auth-{label}-{}-{unique:016x}",
                std::process::id()
            ));
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `contents` to `name` inside the directory and returns its path.
        pub(crate) fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write test file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
    pub(crate) const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
    pub(crate) const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec_private.pem");
    pub(crate) const EC_PUBLIC: &[u8] = include_bytes!("testdata/ec_public.pem");
    pub(crate) const ED_PRIVATE: &[u8] = include_bytes!("testdata/ed25519_private.pem");
    pub(crate) const ED_PUBLIC: &[u8] = include_bytes!("testdata/ed25519_public.pem");
}
