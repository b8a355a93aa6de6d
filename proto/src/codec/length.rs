//! The length-delimited codec: each frame is a header holding its length, then the payload.

use super::{Decoder, Encoder};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sheave_service::Error;
use std::fmt;

/// The default largest frame (after the length adjustment): 8 MiB.
const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// The byte order of a length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Most significant byte first (network order, the default).
    Big,
    /// Least significant byte first.
    Little,
}

/// Frames whose header carries the payload length.
///
/// Layout on the wire, with the defaults of [`Builder`] (a 4-byte big-endian length of the
/// payload, nothing else in the header):
///
/// ```text
/// +-- offset --+-- length field --+---------- value + adjustment bytes ----------+
/// | any bytes  |  value (1..=8 B) |                  payload                     |
/// +------------+------------------+----------------------------------------------+
/// <--- skip: the decoder drops this many bytes from the front of each frame --->
/// ```
///
/// The limit ([`Builder::max_frame_length`], 8 MiB by default) applies to the length *after*
/// the adjustment, so a header cannot smuggle a huge frame past it with a negative adjustment.
/// The decoder never reserves the declared length: the buffer grows as bytes arrive, so a peer
/// that declares 8 MiB and sends nothing costs nothing.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use sheave_proto::codec::{Decoder, Encoder, LengthDelimitedCodec};
///
/// let mut codec = LengthDelimitedCodec::builder().length_field_length(2).build().unwrap();
/// let mut buf = BytesMut::new();
/// codec.encode(Bytes::from_static(b"hi"), &mut buf).unwrap();
/// assert_eq!(&buf[..], b"\x00\x02hi");
/// assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "hi");
/// ```
#[derive(Debug, Clone)]
pub struct LengthDelimitedCodec {
    cfg: Builder,
    /// The adjusted payload length of the frame being received, once its header was read.
    pending: Option<usize>,
}

/// Configures a [`LengthDelimitedCodec`]; [`build`](Builder::build) rejects impossible settings.
///
/// ```
/// use sheave_proto::codec::{Endian, LengthDelimitedCodec};
///
/// // A 2-byte little-endian length that counts itself, after one byte of type tag.
/// let codec = LengthDelimitedCodec::builder()
///     .length_field_offset(1)
///     .length_field_length(2)
///     .endian(Endian::Little)
///     .length_adjustment(-2)
///     .build();
/// assert!(codec.is_ok());
/// // Skipping more bytes than the header has is impossible.
/// assert!(LengthDelimitedCodec::builder().num_skip(9).build().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    offset: usize,
    field_len: usize,
    endian: Endian,
    adjustment: isize,
    num_skip: Option<usize>,
    max_frame: usize,
}

/// Why a [`Builder`] could not build a codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(&'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid codec configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            offset: 0,
            field_len: 4,
            endian: Endian::Big,
            adjustment: 0,
            num_skip: None,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl Builder {
    /// How many bytes precede the length field (default 0).
    pub fn length_field_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// The width of the length field in bytes: 1 to 8 (default 4).
    pub fn length_field_length(mut self, len: usize) -> Self {
        self.field_len = len;
        self
    }

    /// The byte order of the length field (default big-endian).
    pub fn endian(mut self, endian: Endian) -> Self {
        self.endian = endian;
        self
    }

    /// Added to the field's value to get the number of bytes after the header (default 0);
    /// negative when the field counts the header too.
    pub fn length_adjustment(mut self, adjustment: isize) -> Self {
        self.adjustment = adjustment;
        self
    }

    /// How many bytes the decoder drops from the front of each frame (default: the whole
    /// header, offset plus length field).
    pub fn num_skip(mut self, skip: usize) -> Self {
        self.num_skip = Some(skip);
        self
    }

    /// The largest payload, after the adjustment (default 8 MiB).
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    fn header_len(&self) -> usize {
        self.offset + self.field_len
    }

    /// Builds the codec, or says which setting is impossible.
    pub fn build(self) -> Result<LengthDelimitedCodec, ConfigError> {
        if !(1..=8).contains(&self.field_len) {
            return Err(ConfigError("the length field must be 1 to 8 bytes wide"));
        }
        if self.offset > 1 << 20 {
            return Err(ConfigError("the length field offset is over 1 MiB"));
        }
        if self.num_skip.is_some_and(|skip| skip > self.header_len()) {
            return Err(ConfigError("num_skip is longer than the header"));
        }
        if self.max_frame == 0 {
            return Err(ConfigError("max_frame_length must be at least 1"));
        }
        let field_max = if self.field_len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.field_len)) - 1
        };
        // The largest value the field can hold must still be able to describe a frame.
        if (field_max as i128) + (self.adjustment as i128) < 0 {
            return Err(ConfigError(
                "the adjustment makes every length negative for this field width",
            ));
        }
        Ok(LengthDelimitedCodec {
            cfg: self,
            pending: None,
        })
    }
}

impl Default for LengthDelimitedCodec {
    fn default() -> Self {
        LengthDelimitedCodec::new()
    }
}

impl LengthDelimitedCodec {
    /// A codec with a 4-byte big-endian length of the payload and an 8 MiB limit.
    pub fn new() -> Self {
        Builder::default().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults of [`new`](LengthDelimitedCodec::new).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The largest payload accepted.
    pub fn max_frame_length(&self) -> usize {
        self.cfg.max_frame
    }

    fn read_field(&self, src: &[u8]) -> u64 {
        let field = &src[self.cfg.offset..self.cfg.header_len()];
        let mut value = 0u64;
        match self.cfg.endian {
            Endian::Big => field.iter().for_each(|&b| value = value << 8 | b as u64),
            Endian::Little => field
                .iter()
                .rev()
                .for_each(|&b| value = value << 8 | b as u64),
        }
        value
    }
}

impl Decoder for LengthDelimitedCodec {
    type Item = BytesMut;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
        let header = self.cfg.header_len();
        let len = match self.pending {
            Some(len) => len,
            None => {
                if src.len() < header {
                    return Ok(None);
                }
                let adjusted = self.read_field(src) as i128 + self.cfg.adjustment as i128;
                if adjusted < 0 {
                    return Err(Error::protocol("negative frame length after adjustment"));
                }
                if adjusted > self.cfg.max_frame as i128 {
                    return Err(Error::protocol(format!(
                        "frame of {adjusted} bytes over the limit of {}",
                        self.cfg.max_frame
                    )));
                }
                self.pending = Some(adjusted as usize);
                adjusted as usize
            }
        };
        // Checked: with `max_frame_length(usize::MAX)`, a peer's length can be anything.
        if header
            .checked_add(len)
            .is_none_or(|total| src.len() < total)
        {
            return Ok(None);
        }
        self.pending = None;
        let mut frame = src.split_to(header + len);
        frame.advance(self.cfg.num_skip.unwrap_or(header));
        Ok(Some(frame))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for LengthDelimitedCodec {
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        let payload = item.as_ref();
        if payload.len() > self.cfg.max_frame {
            return Err(Error::protocol(format!(
                "frame of {} bytes over the limit of {}",
                payload.len(),
                self.cfg.max_frame
            )));
        }
        let value = payload.len() as i128 - self.cfg.adjustment as i128;
        let width = self.cfg.field_len;
        if value < 0 || (width < 8 && value >= 1i128 << (8 * width)) {
            return Err(Error::protocol(
                "frame length does not fit the length field",
            ));
        }
        let bytes = (value as u64).to_be_bytes();
        dst.reserve(self.cfg.header_len() + payload.len());
        dst.put_bytes(0, self.cfg.offset);
        match self.cfg.endian {
            Endian::Big => dst.put_slice(&bytes[8 - width..]),
            Endian::Little => dst.extend(bytes[8 - width..].iter().rev()),
        }
        dst.put_slice(payload);
        Ok(())
    }
}

impl LengthDelimitedCodec {
    /// Decodes one frame as frozen [`Bytes`].
    pub fn decode_bytes(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        Ok(self.decode(src)?.map(BytesMut::freeze))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_huge_frame_reserves_nothing() {
        let mut codec = LengthDelimitedCodec::new();
        let mut buf = BytesMut::from(&[0x7fu8, 0xff, 0xff, 0xff][..]);
        let cap = buf.capacity();
        assert!(codec.decode(&mut buf).unwrap_err().is_protocol());
        let mut ok = LengthDelimitedCodec::new();
        let mut buf = BytesMut::from(&[0u8, 0x10, 0, 0, 1][..]); // 1 MiB declared, 1 byte sent
        assert_eq!(ok.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() <= cap.max(64));
    }

    #[test]
    fn the_limit_applies_after_the_adjustment() {
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_length(1)
            .length_adjustment(10)
            .max_frame_length(12)
            .build()
            .unwrap();
        // 5 + 10 = 15 > 12
        assert!(
            codec
                .decode(&mut BytesMut::from(&[5u8][..]))
                .unwrap_err()
                .is_protocol()
        );
    }

    #[test]
    fn impossible_settings_are_rejected() {
        for b in [
            LengthDelimitedCodec::builder().length_field_length(0),
            LengthDelimitedCodec::builder().length_field_length(9),
            LengthDelimitedCodec::builder().num_skip(5),
            LengthDelimitedCodec::builder().max_frame_length(0),
            LengthDelimitedCodec::builder()
                .length_field_length(1)
                .length_adjustment(-256),
        ] {
            assert!(b.build().is_err());
        }
    }

    #[test]
    fn little_endian_three_byte_field_with_offset_round_trips() {
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_offset(2)
            .length_field_length(3)
            .endian(Endian::Little)
            .build()
            .unwrap();
        let mut buf = BytesMut::new();
        codec.encode(&b"abc"[..], &mut buf).unwrap();
        assert_eq!(&buf[..], b"\0\0\x03\0\0abc");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abc");
    }
}
