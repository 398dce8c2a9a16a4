//! The protobuf codec of every `mfareset.v1` RPC: prost's, except that a request body that
//! does not decode as the RPC's request message is INVALID_ARGUMENT with reason
//! MALFORMED_REQUEST, not prost's INTERNAL with the decoder's detail in the message (which
//! tells the caller nothing useful and blames the server for the client's bytes). The
//! generated code names it (`build.rs`, `codec_path`); the generated clients use it too.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::{api::status::status, domain::Reason};

/// The codec: prost's encoder, [`RequestDecoder`] for decoding.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// prost's decoder, answering a message that does not decode with MALFORMED_REQUEST.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|decoder_status| {
            tracing::debug!(
                detail = decoder_status.message(),
                "request body does not decode"
            );
            malformed()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// INVALID_ARGUMENT, MALFORMED_REQUEST, without the decoder's detail.
pub fn malformed() -> Status {
    status(
        Code::InvalidArgument,
        Reason::MalformedRequest,
        "the request body is not a valid message of this RPC's request type",
        Default::default(),
        Vec::new(),
    )
}
