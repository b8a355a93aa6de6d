//! Unit tests of the decoder's paths and the protocol switch.

use super::encode::put_header;
use super::*;
use crate::codec::{Decoder, Encoder};
use bytes::BytesMut;
use sheave_service::Error;

fn decode_all(input: &[u8]) -> Result<Vec<Frame>, Error> {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn every_type_decodes() {
    let frames = decode_all(
        b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        frames,
        vec![
            Frame::Simple("OK".into()),
            Frame::Error("ERR x".into()),
            Frame::Integer(42),
            Frame::Bulk("abc".into()),
            Frame::Null,
            Frame::NullArray,
            Frame::Array(vec![]),
            Frame::Array(vec![
                Frame::Integer(1),
                Frame::Array(vec![Frame::Bulk("".into())])
            ]),
        ]
    );
}

#[test]
fn inline_commands_split_on_spaces_and_blank_lines_are_skipped() {
    let frames = decode_all(b"\r\n  SET  k v\r\nPING\n").unwrap();
    assert_eq!(
        frames,
        vec![Frame::command(["SET", "k", "v"]), Frame::command(["PING"])]
    );
}

#[test]
fn a_large_array_in_pieces_resumes_its_scan() {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(&b"*1000\r\n"[..]);
    for _ in 0..999 {
        buf.extend_from_slice(b":1\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
    assert_eq!(codec.stack, vec![1]);
    buf.extend_from_slice(b":1\r\n");
    let Frame::Array(items) = codec.decode(&mut buf).unwrap().unwrap() else {
        panic!("not an array")
    };
    assert_eq!(items.len(), 1000);
}

/// Decodes `input` with the one-pass path out of reach (the scan starts one byte in).
fn decode_scanned(input: &[u8]) -> Result<Vec<Frame>, Error> {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(&input[..1]);
    let mut out = Vec::new();
    if let Some(f) = codec.decode(&mut buf)? {
        out.push(f);
    }
    buf.extend_from_slice(&input[1..]);
    while let Some(f) = codec.decode(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn the_one_pass_path_and_the_scan_agree() {
    let inputs: [&[u8]; 6] = [
        b"*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n",
        b"*1\r\n$0\r\n\r\n",
        b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"*1\r\n$-1\r\n",
        b"*17\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n",
    ];
    for input in inputs {
        let fast = decode_all(input).unwrap();
        assert_eq!(fast.len(), 1, "{input:?}");
        assert_eq!(fast, decode_scanned(input).unwrap(), "{input:?}");
        // Cut anywhere: the first part is a partial frame, left to the scan.
        for cut in 1..input.len() {
            let mut codec = RespCodec::new();
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            buf.extend_from_slice(&input[cut..]);
            assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(&fast[0]));
        }
    }
}

#[test]
fn the_one_pass_path_leaves_limits_and_errors_to_the_scan() {
    let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let err = |mut codec: RespCodec, input: &[u8]| {
        codec
            .decode(&mut BytesMut::from(input))
            .unwrap_err()
            .is_protocol()
    };
    assert!(err(RespCodec::new().max_array(1), get));
    assert!(err(RespCodec::new().max_bulk(2), get));
    assert!(err(RespCodec::new().max_depth(0), get));
    assert!(err(RespCodec::new(), b"*2\r\n$3\r\nGET\r\n$1\r\nkXX"));
    assert!(err(RespCodec::new(), b"*1\r\n$1\rXk\r\n"));
    assert!(err(RespCodec::new(), b"*1\r\n$-2\r\n"));
}

#[test]
fn header_integers_are_written_without_fmt() {
    let mut out = BytesMut::new();
    put_header(&mut out, b':', i64::MIN);
    put_header(&mut out, b':', 0);
    assert_eq!(&out[..], b":-9223372036854775808\r\n:0\r\n");
}

#[test]
fn every_resp3_type_decodes() {
    let input = b"_\r\n#t\r\n#f\r\n,1.5\r\n,inf\r\n,-inf\r\n,nan\r\n,1e300\r\n(-123456789012345678901234567890\r\n!5\r\nERR x\r\n=8\r\ntxt:a\r\nb\r\n%1\r\n+k\r\n:1\r\n~2\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n>2\r\n$7\r\nmessage\r\n_\r\n%0\r\n|0\r\n#t\r\n";
    let frames = decode_all(input).unwrap();
    assert_eq!(
        frames,
        vec![
            Frame::Null,
            Frame::Boolean(true),
            Frame::Boolean(false),
            Frame::Double(1.5),
            Frame::Double(f64::INFINITY),
            Frame::Double(f64::NEG_INFINITY),
            Frame::Double(f64::NAN),
            Frame::Double(1e300),
            Frame::BigNumber("-123456789012345678901234567890".into()),
            Frame::BlobError("ERR x".into()),
            Frame::Verbatim {
                format: *b"txt",
                text: "a\r\nb".into()
            },
            Frame::Map(vec![(Frame::Simple("k".into()), Frame::Integer(1))]),
            Frame::Set(vec![Frame::Integer(1), Frame::Integer(2)]),
            Frame::Attribute {
                attributes: vec![(Frame::Simple("ttl".into()), Frame::Integer(3))],
                data: Box::new(Frame::Bulk("v".into())),
            },
            Frame::Push(vec![Frame::Bulk("message".into()), Frame::Null]),
            Frame::Map(vec![]),
            Frame::Attribute {
                attributes: vec![],
                data: Box::new(Frame::Boolean(true)),
            },
        ]
    );
}

#[test]
fn malformed_resp3_is_a_protocol_error() {
    let cases: [&[u8]; 12] = [
        b"_x\r\n",
        b"#x\r\n",
        b"#\r\n",
        b",\r\n",
        b",1.5x\r\n",
        b",infinity\r\n",
        b"(12a\r\n",
        b"(\r\n",
        b"=3\r\ntxt\r\n",
        b"=4\r\ntxtx\r\n",
        b"%-1\r\n",
        b"!-1\r\n",
    ];
    for case in cases {
        let err = decode_all(case).unwrap_err();
        assert!(err.is_protocol(), "{case:?}: {err}");
    }
    // A map's pairs count twice against the element budget, an attribute's once more.
    let mut codec = RespCodec::new().max_array(4);
    assert!(codec.decode(&mut BytesMut::from(&b"%3\r\n"[..])).is_err());
    let mut codec = RespCodec::new().max_array(4);
    assert!(codec.decode(&mut BytesMut::from(&b"|2\r\n"[..])).is_err());
    let mut codec = RespCodec::new().max_array(4);
    assert_eq!(
        codec.decode(&mut BytesMut::from(&b"%2\r\n"[..])).unwrap(),
        None
    );
    let mut codec = RespCodec::new().max_depth(2);
    assert!(
        codec
            .decode(&mut BytesMut::from(&b"%1\r\n~1\r\n>1\r\n"[..]))
            .is_err()
    );
}

/// The wire bytes of `reply` after a server's codec decoded `requests`, one reply each.
fn replies(requests: &[u8], reply: &[Frame]) -> Vec<u8> {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(requests);
    while codec.decode(&mut buf).unwrap().is_some() {}
    let mut out = BytesMut::new();
    for r in reply {
        codec.encode(r, &mut out).unwrap();
    }
    out.to_vec()
}

#[test]
fn hello_switches_the_protocol_at_its_own_reply_when_it_succeeds() {
    let map = Frame::Map(vec![(Frame::bulk("proto"), Frame::Integer(3))]);
    // GET's reply goes out in RESP2, HELLO's and everything after in RESP3.
    assert_eq!(
        replies(
            b"GET k\r\nhello 3\r\nGET k\r\n",
            &[Frame::Null, map.clone(), Frame::Null]
        ),
        b"$-1\r\n%1\r\n$5\r\nproto\r\n:3\r\n_\r\n"
    );
    // A refused HELLO leaves the protocol alone.
    assert_eq!(
        replies(
            b"HELLO 3 AUTH u p\r\nGET k\r\n",
            &[Frame::error("WRONGPASS no"), Frame::Null]
        ),
        b"-WRONGPASS no\r\n$-1\r\n"
    );
    // HELLO 2 and RESET go back to RESP2; HELLO without a version changes nothing.
    assert_eq!(
        replies(
            b"HELLO 3\r\nHELLO\r\nHELLO 2\r\nGET k\r\nHELLO 3\r\nRESET\r\nGET k\r\n",
            &[
                Frame::Map(vec![]),
                Frame::Map(vec![]),
                Frame::Map(vec![]),
                Frame::Null,
                Frame::Map(vec![]),
                Frame::Simple("RESET".into()),
                Frame::Null,
            ]
        ),
        b"%0\r\n%0\r\n*0\r\n$-1\r\n%0\r\n+RESET\r\n$-1\r\n"
    );
}

#[test]
fn a_failed_call_answering_hello_does_not_switch() {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(&b"HELLO 3\r\nGET k\r\n"[..]);
    while codec.decode(&mut buf).unwrap().is_some() {}
    let mut out = BytesMut::new();
    assert!(Encoder::<Frame>::encode_error(
        &mut codec,
        &Error::protocol("x"),
        &mut out
    ));
    codec.encode(Frame::Null, &mut out).unwrap();
    assert_eq!(&out[..], b"-ERR Protocol error: x\r\n$-1\r\n");
    assert_eq!(codec.protocol(), Protocol::Resp2);
}

#[test]
fn a_clients_codec_drops_switches_for_replies_it_decoded() {
    // A client encodes requests and decodes replies; a reply that looks like HELLO 3 must
    // not pile up.
    let mut codec = RespCodec::new();
    let mut out = BytesMut::new();
    for _ in 0..3000 {
        codec
            .encode(Frame::command(["LRANGE", "l", "0", "1"]), &mut out)
            .unwrap();
        let mut buf = BytesMut::from(&b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
    }
    assert!(codec.switches.len() <= 1);
    assert_eq!(codec.protocol(), Protocol::Resp2);
}

#[test]
fn resp3_only_types_are_downgraded_for_a_resp2_peer() {
    let cases: Vec<(Frame, &[u8], &[u8])> = vec![
        (Frame::Null, b"_\r\n", b"$-1\r\n"),
        (Frame::NullArray, b"_\r\n", b"*-1\r\n"),
        (Frame::Boolean(false), b"#f\r\n", b":0\r\n"),
        (Frame::Double(-2.5), b",-2.5\r\n", b"$4\r\n-2.5\r\n"),
        (Frame::Double(f64::INFINITY), b",inf\r\n", b"$3\r\ninf\r\n"),
        (Frame::BigNumber("12".into()), b"(12\r\n", b"$2\r\n12\r\n"),
        (
            Frame::BlobError("E\r\nx".into()),
            b"!4\r\nE\r\nx\r\n",
            b"-E  x\r\n",
        ),
        (
            Frame::Verbatim {
                format: *b"txt",
                text: "hi".into(),
            },
            b"=6\r\ntxt:hi\r\n",
            b"$2\r\nhi\r\n",
        ),
        (
            Frame::Map(vec![(Frame::bulk("a"), Frame::Boolean(true))]),
            b"%1\r\n$1\r\na\r\n#t\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
        ),
        (
            Frame::Set(vec![Frame::Null]),
            b"~1\r\n_\r\n",
            b"*1\r\n$-1\r\n",
        ),
        (
            Frame::Push(vec![Frame::Integer(1)]),
            b">1\r\n:1\r\n",
            b"*1\r\n:1\r\n",
        ),
        (
            Frame::Attribute {
                attributes: vec![(Frame::bulk("a"), Frame::Integer(1))],
                data: Box::new(Frame::Integer(2)),
            },
            b"|1\r\n$1\r\na\r\n:1\r\n:2\r\n",
            b":2\r\n",
        ),
    ];
    for (frame, resp3, resp2) in cases {
        for (protocol, want) in [(Protocol::Resp3, resp3), (Protocol::Resp2, resp2)] {
            let mut out = BytesMut::new();
            let mut codec = RespCodec::new().with_protocol(protocol);
            codec.encode(&frame, &mut out).unwrap();
            assert_eq!(&out[..], want, "{frame:?} {protocol:?}");
        }
    }
    let mut codec = RespCodec::new();
    let bad = Frame::BigNumber("1x".into());
    assert!(codec.encode(&bad, &mut BytesMut::new()).is_err());
}

#[test]
fn quit_ends_a_servers_decoding_and_its_farewell_is_silent() {
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::from(&b"GET k\r\n*1\r\n$4\r\nquit\r\nPING\r\n"[..]);
    assert!(codec.decode(&mut buf).unwrap().is_some());
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::command(["quit"]))
    );
    let closed = codec.decode(&mut buf).unwrap_err();
    assert_eq!(closed.kind(), sheave_service::ErrorKind::Closed);
    let mut out = BytesMut::new();
    codec.encode(Frame::Null, &mut out).unwrap();
    codec.encode(Frame::ok(), &mut out).unwrap();
    assert!(!Encoder::<Frame>::encode_error(
        &mut codec, &closed, &mut out
    ));
    assert_eq!(&out[..], b"$-1\r\n+OK\r\n");
    // Another failure still gets its error reply.
    assert!(Encoder::<Frame>::encode_error(
        &mut codec,
        &Error::timeout(),
        &mut out
    ));
}

#[test]
fn a_reply_reading_quit_does_not_close_a_clients_codec() {
    let mut codec = RespCodec::new();
    let mut out = BytesMut::new();
    codec
        .encode(Frame::command(["LRANGE", "l", "0", "0"]), &mut out)
        .unwrap();
    let mut buf = BytesMut::from(&b"*1\r\n$4\r\nQUIT\r\n:1\r\n"[..]);
    assert!(codec.decode(&mut buf).unwrap().is_some());
    codec
        .encode(Frame::command(["GET", "k"]), &mut out)
        .unwrap();
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Integer(1)));
}

#[test]
fn diverted_pushes_reach_the_subscriber_and_the_rest_are_counted() {
    use futures::StreamExt;
    let (mut codec, pushes) = RespCodec::new().divert_pushes();
    let push = b">2\r\n$7\r\nmessage\r\n:1\r\n";
    // Nobody subscribed: dropped and counted; the reply after it is returned.
    let mut buf = BytesMut::from(&[&push[..], b":7\r\n"].concat()[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Integer(7)));
    assert_eq!(pushes.dropped(), 1);
    let mut sub = pushes.subscribe().unwrap();
    assert!(pushes.subscribe().is_none());
    // Subscribed: queued up to 1,024, then dropped while full.
    let mut buf = BytesMut::from(&push.repeat(1030)[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(pushes.dropped(), 1 + 6);
    let message = Frame::Push(vec![Frame::bulk("message"), Frame::Integer(1)]);
    assert_eq!(sub.try_next(), Some(message.clone()));
    // The stream ends once the codec (the connection) is gone and the queue is read.
    drop(codec);
    let rest = futures::executor::block_on(sub.by_ref().collect::<Vec<_>>());
    assert_eq!(rest.len(), 1023);
    assert!(rest.iter().all(|f| *f == message));
}
