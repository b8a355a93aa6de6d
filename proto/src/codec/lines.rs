//! The lines codec: `\n`-terminated UTF-8 lines.

use super::{Decoder, Encoder};
use bytes::{BufMut, BytesMut};
use sheave_service::Error;

/// The default longest line, in bytes, not counting the terminator: 64 KiB.
const DEFAULT_MAX_LENGTH: usize = 64 * 1024;

/// Frames of `\n`-terminated UTF-8 text; a `\r` before the `\n` is dropped too.
///
/// A line longer than [`max_length`](LinesCodec::max_length) (64 KiB unless changed), or one
/// that is not UTF-8, is a protocol error. The decoder remembers how far it has searched for
/// the terminator, so a long line arriving in small pieces is scanned once.
///
/// ```
/// use bytes::BytesMut;
/// use sheave_proto::codec::{Decoder, LinesCodec};
///
/// let mut codec = LinesCodec::with_max_length(4);
/// let mut buf = BytesMut::from("ok\r\ntoo long\n");
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("ok"));
/// assert!(codec.decode(&mut buf).unwrap_err().is_protocol());
/// ```
#[derive(Debug, Clone)]
pub struct LinesCodec {
    max_length: usize,
    /// How many bytes at the front of the buffer are known not to contain `\n`.
    scanned: usize,
}

impl Default for LinesCodec {
    fn default() -> Self {
        LinesCodec::new()
    }
}

impl LinesCodec {
    /// A codec with the default limit of 64 KiB per line.
    pub fn new() -> Self {
        LinesCodec::with_max_length(DEFAULT_MAX_LENGTH)
    }

    /// A codec whose lines may be at most `max_length` bytes long (terminator excluded).
    pub fn with_max_length(max_length: usize) -> Self {
        LinesCodec {
            max_length,
            scanned: 0,
        }
    }

    /// The longest line this codec accepts.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

impl Decoder for LinesCodec {
    type Item = String;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, Error> {
        // Search at most one byte past the limit (the terminator may sit right there).
        let end = src.len().min(self.max_length.saturating_add(2));
        let found = src[self.scanned.min(end)..end]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + self.scanned);
        let Some(nl) = found else {
            if src.len() > self.max_length.saturating_add(1) {
                return Err(Error::protocol(format!(
                    "line longer than {} bytes",
                    self.max_length
                )));
            }
            self.scanned = end;
            return Ok(None);
        };
        self.scanned = 0;
        let mut line = src.split_to(nl + 1);
        line.truncate(nl);
        if line.last() == Some(&b'\r') {
            line.truncate(nl - 1);
        }
        if line.len() > self.max_length {
            return Err(Error::protocol(format!(
                "line longer than {} bytes",
                self.max_length
            )));
        }
        match String::from_utf8(line.to_vec()) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(Error::protocol("line is not valid UTF-8")),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, Error> {
        if let Some(line) = self.decode(src)? {
            return Ok(Some(line));
        }
        if src.is_empty() {
            return Ok(None);
        }
        // A last line without its terminator still counts.
        src.put_u8(b'\n');
        self.decode(src)
    }
}

impl<T: AsRef<str>> Encoder<T> for LinesCodec {
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        let line = item.as_ref();
        if line.len() > self.max_length {
            return Err(Error::protocol(format!(
                "line longer than {} bytes",
                self.max_length
            )));
        }
        if line.contains('\n') {
            return Err(Error::protocol("a line may not contain '\\n'"));
        }
        dst.reserve(line.len() + 1);
        dst.put_slice(line.as_bytes());
        dst.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_arriving_byte_by_byte_is_found_once_complete() {
        let mut codec = LinesCodec::new();
        let mut buf = BytesMut::new();
        for &b in b"hello wor" {
            buf.put_u8(b);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
        }
        assert_eq!(codec.scanned, 9);
        buf.extend_from_slice(b"ld\r\nnext");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "hello world");
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn the_limit_applies_without_a_terminator_in_sight() {
        let mut codec = LinesCodec::with_max_length(8);
        let mut buf = BytesMut::from(&b"123456789012"[..]);
        assert!(codec.decode(&mut buf).unwrap_err().is_protocol());
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_with_crlf() {
        let mut codec = LinesCodec::with_max_length(4);
        let mut buf = BytesMut::from(&b"1234\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "1234");
    }

    #[test]
    fn eof_yields_the_last_unterminated_line() {
        let mut codec = LinesCodec::new();
        let mut buf = BytesMut::from(&b"tail"[..]);
        assert_eq!(codec.decode_eof(&mut buf).unwrap().unwrap(), "tail");
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }
}
