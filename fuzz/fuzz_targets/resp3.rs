//! Fuzzes the RESP encoder against the decoder: every frame the decoder accepts must encode
//! for a RESP3 peer to bytes that decode to the same frame, and for a RESP2 peer to bytes that
//! decode to RESP2 types only (redis's downgrade): `cargo fuzz run resp3` (from `fuzz/`).
#![no_main]

use bytes::BytesMut;
use sheave_proto::codec::{Decoder, Encoder};
use sheave_proto::resp::{Frame, Protocol, RespCodec};

/// What a RESP3 peer reads back: RESP2's null array is RESP3's one null.
fn as_resp3(frame: &Frame) -> Frame {
    let pairs = |p: &[(Frame, Frame)]| p.iter().map(|(k, v)| (as_resp3(k), as_resp3(v))).collect();
    match frame {
        Frame::NullArray => Frame::Null,
        Frame::Array(items) => Frame::Array(items.iter().map(as_resp3).collect()),
        Frame::Set(items) => Frame::Set(items.iter().map(as_resp3).collect()),
        Frame::Push(items) => Frame::Push(items.iter().map(as_resp3).collect()),
        Frame::Map(p) => Frame::Map(pairs(p)),
        Frame::Attribute { attributes, data } => Frame::Attribute {
            attributes: pairs(attributes),
            data: Box::new(as_resp3(data)),
        },
        other => other.clone(),
    }
}

fn is_resp2(frame: &Frame) -> bool {
    match frame {
        Frame::Array(items) => items.iter().all(is_resp2),
        Frame::Simple(_)
        | Frame::Error(_)
        | Frame::Integer(_)
        | Frame::Bulk(_)
        | Frame::Null
        | Frame::NullArray => true,
        _ => false,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        for protocol in [Protocol::Resp3, Protocol::Resp2] {
            let mut wire = BytesMut::new();
            let mut encoder = RespCodec::new().with_protocol(protocol);
            if encoder.encode(&frame, &mut wire).is_err() {
                continue; // e.g. a simple string with a CR inside, which it refuses to write
            }
            let back = RespCodec::new()
                .decode(&mut wire)
                .expect("our own encoding decodes")
                .expect("and is whole");
            assert!(wire.is_empty(), "bytes left after {back:?}");
            if protocol == Protocol::Resp3 {
                assert_eq!(back, as_resp3(&frame));
            } else {
                assert!(is_resp2(&back), "{back:?} sent to a RESP2 peer");
            }
        }
    }
});
