//! Codecs: turning bytes into frames ([`Decoder`]) and frames into bytes ([`Encoder`]).
//!
//! A decoder reads from the front of a [`BytesMut`] that the transport keeps filling; it takes
//! a frame off the front when one is complete and returns `Ok(None)` when it needs more bytes.
//! Every codec here is safe by default: a frame over its limit, or malformed input, is an
//! [`ErrorKind::Protocol`](sheave_service::ErrorKind::Protocol) error, never a panic and never
//! an allocation of a length the peer declared. Decoders remember where they stopped scanning,
//! so a frame that arrives a byte at a time costs linear, not quadratic, work.
//!
//! - [`LinesCodec`]: `\n`-terminated lines (a trailing `\r` is dropped), max length on by default.
//! - [`LengthDelimitedCodec`]: frames prefixed by a length header, configured by a [`Builder`].
//! - [`TaggedCodec`]: length-prefixed frames that carry a request id, for multiplexing.
//! - [`RespCodec`](crate::resp::RespCodec): the redis wire protocol, in [`resp`](crate::resp).
//!
//! ```
//! use bytes::BytesMut;
//! use sheave_proto::codec::{Decoder, Encoder, LinesCodec};
//!
//! let mut codec = LinesCodec::new();
//! let mut buf = BytesMut::new();
//! codec.encode("hello".to_string(), &mut buf).unwrap();
//! buf.extend_from_slice(b"wor");
//! assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("hello"));
//! assert_eq!(codec.decode(&mut buf).unwrap(), None); // "wor" is not a line yet
//! buf.extend_from_slice(b"ld\r\n");
//! assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("world"));
//! ```

mod length;
mod lines;
mod tagged;

pub use length::{Builder, ConfigError, Endian, LengthDelimitedCodec};
pub use lines::LinesCodec;
pub use tagged::TaggedCodec;

use bytes::BytesMut;
use sheave_service::Error;

/// Takes frames off the front of a byte buffer.
///
/// `decode` is called whenever new bytes may have arrived. It returns `Ok(Some(frame))` after
/// removing the frame's bytes from `src`, `Ok(None)` when `src` holds no complete frame (the
/// caller reads more and calls again), or an error, after which the stream is unusable.
pub trait Decoder {
    /// The frame type.
    type Item;

    /// Decodes one frame from the front of `src`, if a whole one is there.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error>;

    /// Called once the peer has closed its side: by default, bytes left over that do not make
    /// a frame are a protocol error ("truncated frame").
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(Error::protocol(
                "connection closed in the middle of a frame",
            )),
        }
    }
}

/// Appends the bytes of a frame to a buffer.
pub trait Encoder<Item> {
    /// Encodes `item` onto the end of `dst`. On error, `dst` may hold part of the frame; the
    /// transport treats an encoding error as fatal for the connection.
    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), Error>;

    /// Encodes `error` as a reply, for protocols that have error replies (RESP's
    /// `-ERR ...`); returns `false`, writing nothing, for protocols that do not (the
    /// default).
    ///
    /// A server dispatcher uses it twice: a call that fails becomes that request's error
    /// reply, and the connection goes on (without it, a failed call closes the connection);
    /// and a malformed frame gets a last reply saying why before the connection closes.
    fn encode_error(&mut self, error: &Error, dst: &mut BytesMut) -> bool {
        let _ = (error, dst);
        false
    }
}

impl<D: Decoder + ?Sized> Decoder for &mut D {
    type Item = D::Item;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D::Item>, Error> {
        (**self).decode(src)
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<D::Item>, Error> {
        (**self).decode_eof(src)
    }
}

impl<Item, E: Encoder<Item> + ?Sized> Encoder<Item> for &mut E {
    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), Error> {
        (**self).encode(item, dst)
    }
    fn encode_error(&mut self, error: &Error, dst: &mut BytesMut) -> bool {
        (**self).encode_error(error, dst)
    }
}
