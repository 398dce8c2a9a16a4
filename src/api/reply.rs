//! Answers of mutating RPCs that may be replays (AIP-155). The domain remembers an answer as
//! the encoded response message, so that a retry gets exactly the first answer; [`Reply`]
//! builds that response once, hands its encoding to the domain, and answers the first call
//! with the very message it stored (a replay decodes the stored one).

use std::sync::OnceLock;

use prost::Message;
use tonic::Status;

use crate::domain::{
    DomainError,
    idempotency::{Answer, Idempotency, Remember, RequestKey},
};

/// Builds the response of a mutating RPC from the domain's value.
pub struct Reply<T, R, B> {
    build: B,
    first: OnceLock<R>,
    _value: std::marker::PhantomData<fn(&T)>,
}

impl<T, R, B> Reply<T, R, B>
where
    R: Message + Default + Send + Sync,
    B: Fn(&T) -> R + Send + Sync,
{
    /// A reply built by `build`.
    pub fn new(build: B) -> Self {
        Reply {
            build,
            first: OnceLock::new(),
            _value: std::marker::PhantomData,
        }
    }

    /// The domain's idempotency context for a call with `key` (none: no request id).
    pub fn idempotency<'a>(&'a self, key: Option<&'a RequestKey>) -> Idempotency<'a, T> {
        Idempotency::new(key, self)
    }

    /// The response for `answer`: the one remembered for a fresh value (or built now when
    /// nothing was remembered), or the first call's, decoded.
    pub fn respond(self, answer: Answer<T>) -> Result<R, Status> {
        match answer {
            Answer::New(value) => Ok(self
                .first
                .into_inner()
                .unwrap_or_else(|| (self.build)(&value))),
            Answer::Replay(bytes) => R::decode(bytes.as_slice()).map_err(|err| {
                DomainError::Internal(anyhow::anyhow!(
                    "a remembered answer does not decode: {err}"
                ))
                .into()
            }),
        }
    }
}

impl<T, R, B> Remember<T> for Reply<T, R, B>
where
    R: Message + Default + Send + Sync,
    B: Fn(&T) -> R + Send + Sync,
{
    fn encode(&self, value: &T) -> Vec<u8> {
        let response = (self.build)(value);
        let bytes = response.encode_to_vec();
        let _ = self.first.set(response);
        bytes
    }
}
