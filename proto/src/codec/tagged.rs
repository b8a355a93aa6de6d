//! [`TaggedCodec`]: frames that carry a request id, for the multiplexed dispatchers.

use super::{Decoder, Encoder, LengthDelimitedCodec};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sheave_service::Error;

/// Frames of `(id, body)` — a 4-byte big-endian length, an 8-byte big-endian id, the body —
/// the wire format the multiplexed server and client
/// ([`Multiplex`](crate::dispatch::Multiplex)) need out of the box: `(u64, T)` is
/// [`Tagged`](crate::dispatch::Tagged) by its first element.
///
/// The length counts the id and the body. A frame over the limit (8 MiB by default) or too
/// short to hold its id is a protocol error; nothing is reserved from a declared length.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use sheave_proto::codec::{Decoder, Encoder, TaggedCodec};
///
/// let mut codec = TaggedCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode((7, Bytes::from_static(b"hello")), &mut buf).unwrap();
/// assert_eq!(&buf[..4], &[0, 0, 0, 13]); // 8 bytes of id + 5 of body
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some((7, Bytes::from_static(b"hello"))));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaggedCodec {
    frames: LengthDelimitedCodec,
}

impl TaggedCodec {
    /// A codec with the default 8 MiB frame limit.
    pub fn new() -> Self {
        TaggedCodec::default()
    }

    /// The largest frame (id and body), in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.frames.max_frame_length()
    }
}

impl Decoder for TaggedCodec {
    type Item = (u64, Bytes);

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<(u64, Bytes)>, Error> {
        let Some(mut frame) = self.frames.decode(src)? else {
            return Ok(None);
        };
        if frame.len() < 8 {
            return Err(Error::protocol("a tagged frame shorter than its id"));
        }
        let id = frame.get_u64();
        Ok(Some((id, frame.freeze())))
    }
}

impl<B: AsRef<[u8]>> Encoder<(u64, B)> for TaggedCodec {
    fn encode(&mut self, (id, body): (u64, B), dst: &mut BytesMut) -> Result<(), Error> {
        let body = body.as_ref();
        let len = 8 + body.len();
        if len > self.max_frame_length() {
            return Err(Error::protocol(format!(
                "a frame of {len} bytes over the limit of {}",
                self.max_frame_length()
            )));
        }
        dst.reserve(4 + len);
        dst.put_u32(len as u32);
        dst.put_u64(id);
        dst.put_slice(body);
        Ok(())
    }
}
