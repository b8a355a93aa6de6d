//! Feeds fuzz input to a decoder in pieces: the first byte picks the piece size, so split
//! points are fuzzed too. Any input may be rejected (a protocol error), but the decoder must
//! never panic, never loop, and never hold more than the input it was given.

use bytes::BytesMut;
use sheave_proto::codec::Decoder;

pub fn feed<D: Decoder>(mut codec: D, data: &[u8]) {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut buf = BytesMut::new();
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(_)) => assert!(buf.len() < before, "a frame consumed nothing"),
                Ok(None) => break,
                Err(_) => return, // a protocol error ends the connection: fine
            }
        }
        assert!(buf.len() <= input.len());
    }
    let _ = codec.decode_eof(&mut buf);
}
