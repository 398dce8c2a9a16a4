//! Page tokens: opaque to the caller, bound to the request that made them, and
//! granting nothing.
//!
//! A token is the keyset cursor (the last id of the page) sealed with
//! XChaCha20-Poly1305 under a key derived from the server secret, with a digest of
//! the request's other fields (and the caller) as associated data. So the caller
//! cannot read or forge it, and a token replayed with different filters fails to
//! open: INVALID_ARGUMENT. Replicas sharing the secret accept each other's tokens.
//! Roles and the selection are checked again on every page by the handler.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::FieldViolation;
use crate::domain::users::{SortValue, UserCursor};
use crate::store::search::Rank;

const NONCE_LEN: usize = 24;

/// Seals and opens page tokens.
#[derive(Clone)]
pub struct PageTokens {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

/// What a token is bound to: a digest of the RPC, the caller and the request's
/// fields other than `page_token` and `page_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding([u8; 32]);

impl Binding {
    /// Binds to `request`, which the caller passes with its paging fields cleared
    /// (a client may change `page_size` between pages, AIP-158).
    pub fn of<M: Message>(rpc: &str, subject: &str, request: &M) -> Binding {
        let mut hasher = Sha256::new();
        for part in [rpc.as_bytes(), subject.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(request.encode_to_vec());
        Binding(hasher.finalize().into())
    }
}

impl PageTokens {
    /// Tokens under `key` (32 bytes derived from the server secret).
    pub fn new(key: &[u8; 32]) -> Self {
        PageTokens {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// The token that continues after `cursor`.
    pub fn seal(&self, binding: &Binding, cursor: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and nonce cannot fail for in-memory data.
        let sealed = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: cursor,
                    aad: &binding.0,
                },
            )
            .unwrap_or_default();
        let mut token = nonce_bytes.to_vec();
        token.extend(sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The cursor in `token`, or a violation of `page_token` when it is not a token
    /// this service made for this very request.
    pub fn open(&self, binding: &Binding, token: &str) -> Result<Vec<u8>, FieldViolation> {
        let invalid = || {
            FieldViolation::new(
                "page_token",
                "is not a page token of this request (filters, selection or caller changed?)",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() < NONCE_LEN {
            return Err(invalid());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &binding.0,
                },
            )
            .map_err(|_| invalid())
    }

    /// Seals an id cursor; `None` (last page) gives the empty token.
    pub fn seal_id(&self, binding: &Binding, cursor: Option<impl Into<Uuid>>) -> String {
        cursor
            .map(|id| self.seal(binding, id.into().as_bytes()))
            .unwrap_or_default()
    }

    /// Opens an id cursor; the empty token is the first page.
    pub fn open_id(&self, binding: &Binding, token: &str) -> Result<Option<Uuid>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = self.open(binding, token)?;
        Uuid::from_slice(&bytes)
            .map(Some)
            .map_err(|_| FieldViolation::new("page_token", "is malformed"))
    }
}

/// Tag of a ranked user cursor's encoding (an id cursor is the 16 bytes of the id alone).
const RANKED: u8 = b'R';
/// Tag of a sorted user cursor's encoding, followed by [`TEXT`] or [`TIME`].
const SORTED: u8 = b'S';
/// A text key: its UTF-8 bytes.
const TEXT: u8 = 0;
/// A time key: whole seconds (i64) then nanoseconds (u32), big-endian, the exact instant of
/// the row whatever precision the database kept (SQLite keeps what was written, up to
/// nanoseconds; a cursor that rounded would repeat or skip the rows sharing a time).
const TIME: u8 = 1;

impl PageTokens {
    /// Seals the cursor of a user list; `None` (last page) gives the empty token.
    pub fn seal_user(&self, binding: &Binding, cursor: Option<&UserCursor>) -> String {
        match cursor {
            None => String::new(),
            Some(UserCursor::Id(id)) => self.seal(binding, id.uuid().as_bytes()),
            Some(UserCursor::Ranked { rank, name, id }) => {
                let mut bytes = vec![RANKED, *rank as u8];
                bytes.extend(id.uuid().as_bytes());
                bytes.extend(name.as_bytes());
                self.seal(binding, &bytes)
            }
            Some(UserCursor::Sorted { value, id }) => {
                let (kind, payload) = match value {
                    SortValue::Text(text) => (TEXT, text.as_bytes().to_vec()),
                    SortValue::Time(time) => {
                        let mut bytes = time.timestamp().to_be_bytes().to_vec();
                        bytes.extend(time.timestamp_subsec_nanos().to_be_bytes());
                        (TIME, bytes)
                    }
                };
                let mut bytes = vec![SORTED, kind];
                bytes.extend(id.uuid().as_bytes());
                bytes.extend(payload);
                self.seal(binding, &bytes)
            }
        }
    }

    /// Opens the cursor of a user list; the empty token is the first page.
    pub fn open_user(
        &self,
        binding: &Binding,
        token: &str,
    ) -> Result<Option<UserCursor>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let malformed = || FieldViolation::new("page_token", "is malformed");
        let bytes = self.open(binding, token)?;
        if let Ok(id) = Uuid::from_slice(&bytes) {
            return Ok(Some(UserCursor::Id(id.into())));
        }
        match bytes.as_slice() {
            [RANKED, rank, rest @ ..] if rest.len() >= 16 => {
                let (id, name) = rest.split_at(16);
                let id = Uuid::from_slice(id).map_err(|_| malformed())?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| malformed())?;
                Ok(Some(UserCursor::Ranked {
                    rank: Rank::from_i32(i32::from(*rank)),
                    name,
                    id: id.into(),
                }))
            }
            [SORTED, kind, rest @ ..] if rest.len() >= 16 => {
                let (id, payload) = rest.split_at(16);
                let id = Uuid::from_slice(id).map_err(|_| malformed())?;
                let value = match *kind {
                    TEXT => SortValue::Text(
                        String::from_utf8(payload.to_vec()).map_err(|_| malformed())?,
                    ),
                    TIME => {
                        let (secs, nanos) = payload.split_at_checked(8).ok_or_else(malformed)?;
                        let secs = <[u8; 8]>::try_from(secs).map_err(|_| malformed())?;
                        let nanos = <[u8; 4]>::try_from(nanos).map_err(|_| malformed())?;
                        let time = chrono::DateTime::from_timestamp(
                            i64::from_be_bytes(secs),
                            u32::from_be_bytes(nanos),
                        )
                        .ok_or_else(malformed)?;
                        SortValue::Time(time)
                    }
                    _ => return Err(malformed()),
                };
                Ok(Some(UserCursor::Sorted {
                    value,
                    id: id.into(),
                }))
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::ListUsersRequest;

    fn binding(query: &str) -> Binding {
        Binding::of(
            "ListUsers",
            "alice",
            &ListUsersRequest {
                query: query.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn round_trips_only_with_the_same_binding() {
        let tokens = PageTokens::new(&[7; 32]);
        let id = Uuid::now_v7();
        let token = tokens.seal_id(&binding("a"), Some(id));
        assert_eq!(tokens.open_id(&binding("a"), &token), Ok(Some(id)));
        assert!(tokens.open_id(&binding("b"), &token).is_err());
        assert!(
            PageTokens::new(&[8; 32])
                .open_id(&binding("a"), &token)
                .is_err()
        );
        assert!(!token.contains(&id.simple().to_string()));
    }

    #[test]
    fn user_cursors_round_trip() {
        let tokens = PageTokens::new(&[7; 32]);
        let id = crate::domain::ids::UserId::from(Uuid::now_v7());
        // Nanoseconds, as a SQLite row written with them holds: the cursor keeps them all.
        let time = chrono::DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap();
        for cursor in [
            UserCursor::Id(id),
            UserCursor::Ranked {
                rank: Rank::Substring,
                name: "thi nguyễn".into(),
                id,
            },
            UserCursor::Sorted {
                value: SortValue::Text(String::new()),
                id,
            },
            UserCursor::Sorted {
                value: SortValue::Time(time),
                id,
            },
        ] {
            let token = tokens.seal_user(&binding("a"), Some(&cursor));
            assert_eq!(tokens.open_user(&binding("a"), &token), Ok(Some(cursor)));
        }
        assert_eq!(tokens.seal_user(&binding("a"), None), "");
        assert_eq!(tokens.open_user(&binding("a"), ""), Ok(None));
        let short = tokens.seal(&binding("a"), &[SORTED, TIME, 1, 2]);
        assert!(tokens.open_user(&binding("a"), &short).is_err());
        let mut bad_nanos = vec![SORTED, TIME];
        bad_nanos.extend(id.uuid().as_bytes());
        bad_nanos.extend(0i64.to_be_bytes());
        bad_nanos.extend(u32::MAX.to_be_bytes());
        let bad_nanos = tokens.seal(&binding("a"), &bad_nanos);
        assert!(tokens.open_user(&binding("a"), &bad_nanos).is_err());
    }

    #[test]
    fn tampered_or_garbage_tokens_are_refused() {
        let tokens = PageTokens::new(&[7; 32]);
        let mut token = tokens
            .seal_id(&binding("a"), Some(Uuid::now_v7()))
            .into_bytes();
        let last = token.len() - 1;
        token[last] = if token[last] == b'A' { b'B' } else { b'A' };
        assert!(
            tokens
                .open_id(&binding("a"), std::str::from_utf8(&token).unwrap())
                .is_err()
        );
        assert!(tokens.open_id(&binding("a"), "not base64!").is_err());
        assert!(tokens.open_id(&binding("a"), "AAAA").is_err());
        assert_eq!(tokens.open_id(&binding("a"), ""), Ok(None));
    }
}
