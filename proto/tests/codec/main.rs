//! Codec properties: encode → decode is the identity, the split points of the input do not
//! change the frames, and malformed input is a protocol error, never a panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sheave_proto::codec::{
    Decoder, Encoder, Endian, LengthDelimitedCodec, LinesCodec, TaggedCodec,
};
use sheave_proto::resp::{Frame, Protocol, RespCodec};

/// Decodes `input` fed in pieces cut at `cuts`, then at end of stream.
#[track_caller]
fn decode_in_pieces<D: Decoder>(codec: &mut D, input: &[u8], cuts: &[usize]) -> Vec<D::Item>
where
    D::Item: std::fmt::Debug,
{
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts {
        buf.extend_from_slice(&input[at..cut.max(at)]);
        at = cut.max(at);
        while let Some(frame) = codec.decode(&mut buf).expect("valid input") {
            out.push(frame);
        }
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    out
}

fn resp_frame() -> impl Strategy<Value = Frame> {
    let line = "[a-zA-Z0-9 _.:-]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()));
    let leaf = prop_oneof![
        line.clone().prop_map(Frame::Simple),
        line.prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| Frame::Bulk(v.into())),
        Just(Frame::Null),
        Just(Frame::NullArray),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        proptest::collection::vec(inner, 0..8).prop_map(Frame::Array)
    })
}

/// Every frame type, RESP3's included.
fn resp3_frame() -> impl Strategy<Value = Frame> {
    let line = "[a-zA-Z0-9 _.:-]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()));
    let blob = proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    let leaf = prop_oneof![
        line.clone().prop_map(Frame::Simple),
        line.prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        blob.clone().prop_map(Frame::Bulk),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        any::<f64>().prop_map(Frame::Double),
        prop_oneof![
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            Just(-0.0)
        ]
        .prop_map(Frame::Double),
        "-?[0-9]{1,60}".prop_map(|s| Frame::BigNumber(s.into())),
        blob.clone().prop_map(Frame::BlobError),
        ("[a-z]{3}", blob).prop_map(|(f, text)| Frame::Verbatim {
            format: f.as_bytes().try_into().unwrap(),
            text,
        }),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (pairs, inner).prop_map(|(attributes, data)| Frame::Attribute {
                attributes,
                data: Box::new(data),
            }),
        ]
    })
}

/// What a RESP2 peer reads for `frame`: redis's standard downgrade, written out here
/// independently of the encoder.
fn downgraded(frame: &Frame) -> Frame {
    let text = |d: f64| -> Bytes {
        if d.is_nan() {
            "nan".into()
        } else if d.is_infinite() {
            if d > 0.0 { "inf".into() } else { "-inf".into() }
        } else {
            format!("{d:?}").into()
        }
    };
    match frame {
        Frame::Boolean(b) => Frame::Integer(*b as i64),
        Frame::Double(d) => Frame::Bulk(text(*d)),
        Frame::BigNumber(n) => Frame::Bulk(n.clone()),
        Frame::BlobError(e) => Frame::Error(
            e.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect(),
        ),
        Frame::Verbatim { text, .. } => Frame::Bulk(text.clone()),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            Frame::Array(items.iter().map(downgraded).collect())
        }
        Frame::Map(pairs) => Frame::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [downgraded(k), downgraded(v)])
                .collect(),
        ),
        Frame::Attribute { data, .. } => downgraded(data),
        other => other.clone(),
    }
}

/// What a RESP3 peer reads for `frame`: itself, except that RESP2's null array is RESP3's
/// one null.
fn as_resp3(frame: &Frame) -> Frame {
    match frame {
        Frame::NullArray => Frame::Null,
        Frame::Array(items) => Frame::Array(items.iter().map(as_resp3).collect()),
        Frame::Set(items) => Frame::Set(items.iter().map(as_resp3).collect()),
        Frame::Push(items) => Frame::Push(items.iter().map(as_resp3).collect()),
        Frame::Map(pairs) => Frame::Map(
            pairs
                .iter()
                .map(|(k, v)| (as_resp3(k), as_resp3(v)))
                .collect(),
        ),
        Frame::Attribute { attributes, data } => Frame::Attribute {
            attributes: attributes
                .iter()
                .map(|(k, v)| (as_resp3(k), as_resp3(v)))
                .collect(),
            data: Box::new(as_resp3(data)),
        },
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn resp3_round_trips_at_any_split(
        frames in proptest::collection::vec(prop_oneof![resp3_frame(), resp_frame()], 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut codec = RespCodec::new().with_protocol(Protocol::Resp3);
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut wire).unwrap();
        }
        let expected: Vec<Frame> = frames.iter().map(as_resp3).collect();
        prop_assert_eq!(decode_in_pieces(&mut RespCodec::new(), &wire, &cuts), expected);
    }

    #[test]
    fn resp3_types_downgrade_for_a_resp2_peer(
        frames in proptest::collection::vec(resp3_frame(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut codec = RespCodec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut wire).unwrap();
        }
        // Only RESP2 types on the wire.
        let mut probe = RespCodec::new();
        let mut buf = wire.clone();
        while let Some(frame) = probe.decode(&mut buf).unwrap() {
            prop_assert!(is_resp2(&frame), "{:?}", frame);
        }
        let expected: Vec<Frame> = frames.iter().map(downgraded).collect();
        prop_assert_eq!(decode_in_pieces(&mut RespCodec::new(), &wire, &cuts), expected);
    }

    #[test]
    fn resp3_never_panics_on_arbitrary_typed_bytes(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(&b"_\r\n"[..]), Just(&b"#t\r\n"[..]), Just(&b",1.5\r\n"[..]), Just(&b",nan\r\n"[..]),
                Just(&b"(12\r\n"[..]), Just(&b"!1\r\nx\r\n"[..]), Just(&b"=5\r\ntxt:x\r\n"[..]),
                Just(&b"%1\r\n"[..]), Just(&b"~2\r\n"[..]), Just(&b"|1\r\n"[..]), Just(&b">3\r\n"[..]),
                Just(&b"*1\r\n"[..]), Just(&b"$-1\r\n"[..]), Just(&b"%-1\r\n"[..]), Just(&b"x"[..]),
            ],
            0..24,
        ),
    ) {
        let input = parts.concat();
        let mut codec = RespCodec::new().max_depth(4).max_array(8);
        let mut buf = BytesMut::from(&input[..]);
        for _ in 0..input.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

fn is_resp2(frame: &Frame) -> bool {
    match frame {
        Frame::Simple(_)
        | Frame::Error(_)
        | Frame::Integer(_)
        | Frame::Bulk(_)
        | Frame::Null
        | Frame::NullArray => true,
        Frame::Array(items) => items.iter().all(is_resp2),
        _ => false,
    }
}

proptest! {
    #[test]
    fn tagged_frames_round_trip_at_any_split(
        frames in proptest::collection::vec(
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)),
            0..8,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut codec = TaggedCodec::new();
        let mut wire = BytesMut::new();
        for (id, body) in &frames {
            codec.encode((*id, body.as_slice()), &mut wire).unwrap();
        }
        let expected: Vec<(u64, Bytes)> =
            frames.into_iter().map(|(id, body)| (id, Bytes::from(body))).collect();
        prop_assert_eq!(decode_in_pieces(&mut codec, &wire, &cuts), expected);
    }

    #[test]
    fn resp_round_trips_at_any_split(
        frames in proptest::collection::vec(resp_frame(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut codec = RespCodec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut wire).unwrap();
        }
        prop_assert_eq!(decode_in_pieces(&mut codec, &wire, &cuts), frames);
    }

    #[test]
    fn lines_round_trip_at_any_split(
        lines in proptest::collection::vec("[^\n\r]{0,40}", 0..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut codec = LinesCodec::new();
        let mut wire = BytesMut::new();
        for l in &lines {
            codec.encode(l, &mut wire).unwrap();
        }
        prop_assert_eq!(decode_in_pieces(&mut codec, &wire, &cuts), lines);
    }

    #[test]
    fn length_delimited_round_trips_for_every_layout(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
        width in 2usize..=8,
        offset in 0usize..4,
        little in any::<bool>(),
        adjust in -2isize..=2,
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let endian = if little { Endian::Little } else { Endian::Big };
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_length(width)
            .length_field_offset(offset)
            .endian(endian)
            .length_adjustment(adjust)
            .build()
            .unwrap();
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for p in &payloads {
            // A negative field value cannot be encoded; such payloads are skipped.
            if codec.encode(&p[..], &mut wire).is_ok() {
                sent.push(p.clone());
            }
        }
        let got: Vec<Vec<u8>> = decode_in_pieces(&mut codec, &wire, &cuts)
            .into_iter()
            .map(|f| f.to_vec())
            .collect();
        prop_assert_eq!(got, sent);
    }

    #[test]
    fn resp_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = RespCodec::new();
        let mut buf = BytesMut::from(&input[..]);
        for _ in 0..input.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn length_delimited_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_length(2)
            .length_adjustment(-2)
            .max_frame_length(100)
            .build()
            .unwrap();
        let mut buf = BytesMut::from(&input[..]);
        for _ in 0..input.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[track_caller]
fn assert_resp_protocol_error(input: &[u8], codec: RespCodec) {
    let mut codec = codec;
    let mut buf = BytesMut::from(input);
    let mut result = codec.decode(&mut buf);
    for _ in 0..16 {
        match result {
            Ok(Some(_)) => result = codec.decode(&mut buf),
            _ => break,
        }
    }
    match result {
        Err(e) => assert!(e.is_protocol(), "{input:?}: {e:?}"),
        Ok(other) => panic!("{input:?} decoded as {other:?}"),
    }
}

#[test]
fn malformed_resp_is_a_protocol_error() {
    let cases: &[&[u8]] = &[
        b"*abc\r\n",
        b"*-2\r\n",
        b"$-5\r\n",
        b"$3\r\nabcd\r\n",
        b":12x\r\n",
        b":\r\n",
        b":99999999999999999999\r\n",
        b"*1\r\n@\r\n",
        b"+no newline at all\n",
        b"$99999999999999999999999\r\n",
        b"*1\r\n*1\r\n:1\n",
    ];
    for case in cases {
        assert_resp_protocol_error(case, RespCodec::new());
    }
}

#[test]
fn a_tagged_frame_too_short_for_its_id_is_a_protocol_error() {
    let mut codec = TaggedCodec::new();
    let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2, 3][..]);
    assert!(codec.decode(&mut buf).unwrap_err().is_protocol());
}

#[test]
fn resp_limits_are_protocol_errors() {
    assert_resp_protocol_error(b"$11\r\n", RespCodec::new().max_bulk(10));
    assert_resp_protocol_error(b"*11\r\n", RespCodec::new().max_array(10));
    assert_resp_protocol_error(&[b'x'; 100], RespCodec::new().max_inline(10));
    assert_resp_protocol_error(&b"+".repeat(100), RespCodec::new().max_inline(10));
    assert_resp_protocol_error(&b"*1\r\n".repeat(5), RespCodec::new().max_depth(4));
    // The element budget is per frame, nested arrays included (review: many tiny nested
    // elements made a decoded frame ~13x its bytes): 3 arrays of 4 are 3 + 12 elements.
    let nested = b"*3\r\n*4\r\n:1\r\n:1\r\n:1\r\n:1\r\n*4\r\n:1\r\n:1\r\n:1\r\n:1\r\n*4\r\n";
    assert_resp_protocol_error(nested, RespCodec::new().max_array(10));
}

#[test]
fn a_frame_that_fails_to_encode_leaves_nothing_half_written() {
    // Regression (review): the array header and the elements before the bad one stayed in
    // the write buffer and reached the wire, where the peer read the next frames as the
    // rest of this one.
    use sheave_proto::Framed;
    use sheave_proto::resp::Frame;
    let rt = sheave_core::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = sheave_core::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = sheave_core::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut framed = Framed::new(conn, RespCodec::new());
        framed.encode(Frame::Simple("ok".into())).unwrap();
        let before = framed.write_buffer().len();
        let bad = Frame::Array(vec![Frame::Integer(1), Frame::Simple("a\nb".into())]);
        assert!(framed.encode(bad).is_err());
        assert_eq!(framed.write_buffer().len(), before);
    });
}

#[test]
fn a_declared_bulk_length_reserves_nothing() {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(&b"$16000000\r\nab"[..]);
    let cap = buf.capacity();
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.capacity(), cap);
}

#[test]
fn malformed_length_delimited_is_a_protocol_error() {
    let mut codec = LengthDelimitedCodec::builder()
        .length_field_length(1)
        .length_adjustment(-4)
        .build()
        .unwrap();
    // 2 - 4 < 0
    assert!(
        codec
            .decode(&mut BytesMut::from(&[2u8][..]))
            .unwrap_err()
            .is_protocol()
    );
    let mut lines = LinesCodec::new();
    assert!(
        lines
            .decode(&mut BytesMut::from(&b"\xff\xfe\n"[..]))
            .unwrap_err()
            .is_protocol()
    );
    let mut truncated = BytesMut::from(&b"\x00\x00\x00\x05ab"[..]);
    let mut ld = LengthDelimitedCodec::new();
    assert!(ld.decode_eof(&mut truncated).unwrap_err().is_protocol());
}

#[test]
fn a_huge_declared_length_without_a_limit_waits_instead_of_overflowing() {
    // Regression (review): with `max_frame_length(usize::MAX)`, a peer's 8-byte length of
    // all ones overflowed `header + len` and panicked.
    let mut codec = LengthDelimitedCodec::builder()
        .length_field_length(8)
        .max_frame_length(usize::MAX)
        .build()
        .unwrap();
    let mut buf = BytesMut::from(&[0xffu8; 16][..]);
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
}

#[test]
fn only_commands_redis_answers_exactly_once_may_share_a_pipelined_connection() {
    // Regression (review): `*0` gets no reply from redis and a bare bulk string gets two;
    // either shifted every later reply onto the wrong caller of a shared client.
    use sheave_proto::resp::check_command;
    assert!(check_command(&Frame::command(["GET", "k"])).is_ok());
    assert!(check_command(&Frame::command(["client", "list"])).is_ok());
    let no_args: [&str; 0] = [];
    for bad in [
        Frame::command(no_args),
        Frame::NullArray,
        Frame::Bulk(Bytes::from_static(b"PING")),
        Frame::Array(vec![Frame::Integer(1)]),
        Frame::command(["subscribe", "news"]),
        Frame::command(["MONITOR"]),
        Frame::command(["CLIENT", "REPLY", "OFF"]),
    ] {
        let err = check_command(&bad).unwrap_err();
        assert!(err.is_invalid_request(), "{bad:?}: {err:?}");
    }
}
