//! A seeded property test of request decoding: random bodies, sent as raw bytes to every
//! `mfareset.v1` RPC, never get INTERNAL or UNKNOWN; a body that does not decode as the RPC's
//! request message gets INVALID_ARGUMENT with reason MALFORMED_REQUEST, and one that decodes
//! never does. Whether a body decodes is judged independently of the server, by decoding it
//! as a dynamic message of the contract's own descriptors.
//!
//! The bodies are a mix: raw random bytes, fields of the request message with random (mostly
//! matching) wire types and values drawn partly from the test's real ids, and such messages
//! truncated or with a byte flipped. `MFA_RESET_RANDOM_BODIES_SEED` and
//! `MFA_RESET_RANDOM_BODIES_PER_RPC` change the seed (printed by a failure) and the count.

use std::{fmt::Write as _, time::Duration};

use bytes::{Buf, BufMut};
use futures::{StreamExt, stream};
use mfa_reset::proto::FILE_DESCRIPTOR_SET;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
};
use tonic_types::StatusExt;

use crate::helpers::*;

/// Sends and receives message bodies as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// One RPC of the contract.
struct Rpc {
    path: String,
    input: MessageDescriptor,
    server_streaming: bool,
}

fn contract_rpcs() -> Vec<Rpc> {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("contract descriptors");
    pool.services()
        .filter(|s| s.package_name() == "mfareset.v1")
        .flat_map(|service| {
            service
                .methods()
                .map(|m| Rpc {
                    path: format!("/{}/{}", service.full_name(), m.name()),
                    input: m.input(),
                    server_streaming: m.is_server_streaming(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Makes random bodies for one message type.
struct Bodies<'a> {
    rng: StdRng,
    /// Strings worth trying: real ids, names of enum values, edge cases.
    strings: &'a [String],
}

impl Bodies<'_> {
    fn body(&mut self, message: &MessageDescriptor) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0..=1 => {
                let len = self.rng.random_range(0..48);
                (0..len).map(|_| self.rng.random()).collect()
            }
            2..=6 => self.fields(message, 0),
            _ => {
                let mut body = self.fields(message, 0);
                if !body.is_empty() {
                    let at = self.rng.random_range(0..body.len());
                    if self.rng.random_bool(0.5) {
                        body.truncate(at);
                    } else if let Some(byte) = body.get_mut(at) {
                        *byte ^= 1 << self.rng.random_range(0..8);
                    }
                }
                body
            }
        }
    }

    fn fields(&mut self, message: &MessageDescriptor, depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let fields: Vec<_> = message.fields().collect();
        for _ in 0..self.rng.random_range(0..6) {
            let field = if self.rng.random_bool(0.9) {
                fields.choose(&mut self.rng).cloned()
            } else {
                None
            };
            let number = field
                .as_ref()
                .map_or_else(|| self.rng.random_range(1..1 << 20), |f| f.number());
            let natural = field
                .as_ref()
                .map_or(WireType::Varint, |f| wire_type(&f.kind()));
            let wire = if self.rng.random_bool(0.85) {
                natural as u64
            } else {
                self.rng.random_range(0..8)
            };
            encode_varint(u64::from(number) << 3 | wire, &mut out);
            match wire {
                0 => encode_varint(self.varint(), &mut out),
                1 => out.put_u64_le(self.rng.random()),
                2 => {
                    let payload = match field.as_ref().map(|f| f.kind()) {
                        Some(Kind::Message(inner)) if depth < 3 => self.fields(&inner, depth + 1),
                        Some(Kind::String) if self.rng.random_bool(0.8) => self
                            .strings
                            .choose(&mut self.rng)
                            .cloned()
                            .unwrap_or_default()
                            .into_bytes(),
                        _ => (0..self.rng.random_range(0..24))
                            .map(|_| self.rng.random())
                            .collect(),
                    };
                    encode_varint(payload.len() as u64, &mut out);
                    out.extend_from_slice(&payload);
                }
                5 => out.put_u32_le(self.rng.random()),
                // Groups and the two undefined wire types: a key alone (never decodes
                // unless the group happens to be closed).
                _ => {}
            }
        }
        if depth == 0 && self.rng.random_bool(0.05) {
            encode_key(1, WireType::StartGroup, &mut out);
        }
        out
    }

    fn varint(&mut self) -> u64 {
        match self.rng.random_range(0..4) {
            0 => self.rng.random_range(0..8),
            1 => self.rng.random_range(0..1000),
            2 => u64::MAX - self.rng.random_range(0..4),
            _ => self.rng.random(),
        }
    }
}

fn wire_type(kind: &Kind) -> WireType {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// Sends `body` to `rpc` as `token`'s bearer, returning the status (OK for a success).
async fn call(app: &TestApp, rpc: &Rpc, body: Vec<u8>, token: &str) -> Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    if let Err(err) = grpc.ready().await {
        return Status::unknown(format!("channel not ready: {err}"));
    }
    let mut request = tonic::Request::new(body);
    let bearer = MetadataValue::try_from(format!("Bearer {token}")).expect("bearer");
    request.metadata_mut().insert("authorization", bearer);
    let path = rpc.path.parse().expect("path");
    if rpc.server_streaming {
        // A stream that opened is judged by its first message, or as OK when none comes
        // within 200 ms (a valid watch waits for events, its heartbeat at least a second).
        match grpc.server_streaming(request, path, RawCodec).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    Ok(Some(Err(status))) => status,
                    _ => Status::ok(""),
                }
            }
            Err(status) => status,
        }
    } else {
        match grpc.unary(request, path, RawCodec).await {
            Ok(_) => Status::ok(""),
            Err(status) => status,
        }
    }
}

backend_test!(random_bodies_are_never_internal_and_undecodable_ones_are_malformed);
async fn random_bodies_are_never_internal_and_undecodable_ones_are_malformed(app: &TestApp) {
    let world = world(app).await;
    let seed: u64 = std::env::var("MFA_RESET_RANDOM_BODIES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d66_615f_7265_7365);
    let per_rpc: usize = std::env::var("MFA_RESET_RANDOM_BODIES_PER_RPC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let strings: Vec<String> = [
        &world.enforced.id,
        &world.optional.id,
        &world.other.id,
        &world.alice.id,
        &world.root.id,
        &world.stranger.id,
        "alice-sub",
        "",
        "*",
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "displayName,email",
        "METHOD_KIND_PHONE",
        "\u{0}\u{7f}\u{202e}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([uuid::Uuid::now_v7().to_string(), "x".repeat(300)])
    .collect();
    let rpcs = contract_rpcs();
    assert!(rpcs.len() >= 27, "only {} RPCs found", rpcs.len());
    let tokens = [app.token(ADMIN), app.token(PROVISIONER)];

    let mut cases = Vec::new();
    let mut bodies = Bodies {
        rng: StdRng::seed_from_u64(seed),
        strings: &strings,
    };
    for (r, rpc) in rpcs.iter().enumerate() {
        for i in 0..per_rpc {
            let body = bodies.body(&rpc.input);
            let decodes = DynamicMessage::decode(rpc.input.clone(), body.as_slice()).is_ok();
            cases.push((r, i, body, decodes));
        }
    }
    let undecodable = cases.iter().filter(|c| !c.3).count();
    let results: Vec<_> = stream::iter(cases)
        .map(|(r, i, body, decodes)| {
            let rpc = &rpcs[r];
            let token = &tokens[i % tokens.len()];
            async move {
                let status = call(app, rpc, body.clone(), token).await;
                (r, body, decodes, status)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let mut failures = String::new();
    let mut failed = 0;
    for (r, body, decodes, status) in &results {
        let info = status.get_error_details().error_info().cloned();
        let reason = info.as_ref().map(|i| i.reason.as_str());
        let malformed =
            status.code() == Code::InvalidArgument && reason == Some("MALFORMED_REQUEST");
        let problem = if matches!(status.code(), Code::Internal | Code::Unknown) {
            Some("INTERNAL or UNKNOWN")
        } else if !decodes && !malformed {
            Some("does not decode, yet not MALFORMED_REQUEST")
        } else if *decodes && malformed {
            Some("decodes, yet MALFORMED_REQUEST")
        } else if status.code() != Code::Ok
            && info
                .as_ref()
                .is_none_or(|i| i.domain != "mfa-reset.internal")
        {
            Some("no ErrorInfo of our domain")
        } else {
            None
        };
        if let Some(problem) = problem {
            failed += 1;
            if failed <= 10 {
                let hex: String = body.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                let _ = writeln!(
                    failures,
                    "{} {problem}: {:?} {:?} reason {reason:?}; body {hex}",
                    rpcs[*r].path,
                    status.code(),
                    status.message(),
                );
            }
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} bodies (seed {seed}) broke the property, for example:\n{failures}",
        results.len()
    );
    // The mix exercises both sides of the property.
    assert!(
        undecodable > results.len() / 10,
        "{undecodable} undecodable"
    );
    assert!(
        undecodable < results.len() * 9 / 10,
        "{undecodable} undecodable"
    );
}
