//! [`Frame`], one RESP2 or RESP3 value, and [`Protocol`], the version a connection speaks.

use bytes::Bytes;
use std::fmt;

/// The protocol version a connection speaks. Every connection starts at [`Protocol::Resp2`];
/// a successful `HELLO 3` switches it to [`Protocol::Resp3`] (see
/// [`RespCodec`](super::RespCodec)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2: only simple strings, errors, integers, bulk strings and arrays go out.
    #[default]
    Resp2,
    /// RESP3: every [`Frame`] type goes out as itself.
    Resp3,
}

/// One RESP value: the five RESP2 types (and their two nulls), and the RESP3 types.
///
/// Every type decodes whatever protocol the connection speaks. What is encoded depends on the
/// peer's [`Protocol`]: to a RESP2 peer the RESP3-only types go out in redis's standard
/// downgrade (see the [module docs](super)).
///
/// Doubles compare by value, except that every NaN equals every NaN, so `Frame` is `Eq`.
#[derive(Clone)]
pub enum Frame {
    /// `+OK\r\n`: a status line (no `\r` or `\n` inside).
    Simple(Bytes),
    /// `-ERR message\r\n`: an error line.
    Error(Bytes),
    /// `:42\r\n`.
    Integer(i64),
    /// `$5\r\nhello\r\n`: binary-safe data.
    Bulk(Bytes),
    /// The null: `$-1\r\n` (a missing key) in RESP2, `_\r\n` in RESP3.
    Null,
    /// `*2\r\n...`: an array of frames.
    Array(Vec<Frame>),
    /// `*-1\r\n`: RESP2's null array (`_\r\n` to a RESP3 peer, which decodes as [`Frame::Null`]).
    NullArray,
    /// RESP3 `#t\r\n` / `#f\r\n`.
    Boolean(bool),
    /// RESP3 `,3.25\r\n`, also `,inf`, `,-inf` and `,nan`.
    Double(f64),
    /// RESP3 `(3492890328409238509324850943850943825024385\r\n`: an integer of any size, as
    /// its decimal digits (an optional `-`, then at least one digit).
    BigNumber(Bytes),
    /// RESP3 `!21\r\nSYNTAX invalid syntax\r\n`: a binary-safe error.
    BlobError(Bytes),
    /// RESP3 `=15\r\ntxt:Some string\r\n`: text with a three-byte format (`txt`, `mkd`).
    Verbatim {
        /// The format, such as `*b"txt"`.
        format: [u8; 3],
        /// The text after `format:`.
        text: Bytes,
    },
    /// RESP3 `%2\r\n...`: key-value pairs, in wire order.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~3\r\n...`: an unordered collection, in wire order.
    Set(Vec<Frame>),
    /// RESP3 `|1\r\n...`: attributes (key-value pairs) about the frame that follows them.
    Attribute {
        /// The attribute pairs.
        attributes: Vec<(Frame, Frame)>,
        /// The reply they describe.
        data: Box<Frame>,
    },
    /// RESP3 `>3\r\n...`: an out-of-band message (pub/sub, invalidation), never the reply to
    /// a command.
    Push(Vec<Frame>),
}

impl Frame {
    /// A command: an array of bulk strings.
    pub fn command<I>(parts: I) -> Frame
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        Frame::Array(
            parts
                .into_iter()
                .map(|p| Frame::Bulk(Bytes::copy_from_slice(p.as_ref())))
                .collect(),
        )
    }

    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    /// An error reply with this message (`"ERR unknown command"`, ...).
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(Bytes::from(message.into()))
    }

    /// A bulk string of this text.
    pub fn bulk(text: impl Into<Bytes>) -> Frame {
        Frame::Bulk(text.into())
    }

    /// Whether this is an error reply ([`Frame::Error`] or [`Frame::BlobError`]).
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BlobError(_))
    }

    /// The command name of a request, upper-cased: its first element.
    pub fn command_name(&self) -> Option<String> {
        self.arg(0)
            .map(|name| String::from_utf8_lossy(name).to_ascii_uppercase())
    }

    /// Argument `i` of a request (0 is the command name), if it is a bulk or simple string.
    pub fn arg(&self, i: usize) -> Option<&Bytes> {
        match self {
            Frame::Array(items) => match items.get(i)? {
                Frame::Bulk(b) | Frame::Simple(b) => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    /// How many elements an array has (0 for anything else).
    pub fn len(&self) -> usize {
        match self {
            Frame::Array(items) => items.len(),
            _ => 0,
        }
    }

    /// Whether this is not an array, or an empty one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        use Frame::*;
        match (self, other) {
            (Simple(a), Simple(b))
            | (Error(a), Error(b))
            | (Bulk(a), Bulk(b))
            | (BigNumber(a), BigNumber(b))
            | (BlobError(a), BlobError(b)) => a == b,
            (Integer(a), Integer(b)) => a == b,
            (Null, Null) | (NullArray, NullArray) => true,
            (Array(a), Array(b)) | (Set(a), Set(b)) | (Push(a), Push(b)) => a == b,
            (Boolean(a), Boolean(b)) => a == b,
            (Double(a), Double(b)) => a == b || (a.is_nan() && b.is_nan()),
            (
                Verbatim { format, text },
                Verbatim {
                    format: f2,
                    text: t2,
                },
            ) => format == f2 && text == t2,
            (Map(a), Map(b)) => a == b,
            (
                Attribute { attributes, data },
                Attribute {
                    attributes: a2,
                    data: d2,
                },
            ) => attributes == a2 && data == d2,
            _ => false,
        }
    }
}

impl Eq for Frame {}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        match self {
            Frame::Simple(s) => write!(f, "Simple({:?})", text(s)),
            Frame::Error(s) => write!(f, "Error({:?})", text(s)),
            Frame::Integer(n) => write!(f, "Integer({n})"),
            Frame::Bulk(b) => write!(f, "Bulk({:?})", text(b)),
            Frame::Null => f.write_str("Null"),
            Frame::Array(items) => f.debug_list().entries(items).finish(),
            Frame::NullArray => f.write_str("NullArray"),
            Frame::Boolean(b) => write!(f, "Boolean({b})"),
            Frame::Double(d) => write!(f, "Double({d:?})"),
            Frame::BigNumber(n) => write!(f, "BigNumber({})", text(n)),
            Frame::BlobError(s) => write!(f, "BlobError({:?})", text(s)),
            Frame::Verbatim { format, text: t } => write!(
                f,
                "Verbatim({}:{:?})",
                String::from_utf8_lossy(format),
                text(t)
            ),
            Frame::Map(pairs) => f
                .debug_map()
                .entries(pairs.iter().map(|(k, v)| (k, v)))
                .finish(),
            Frame::Set(items) => {
                f.write_str("Set")?;
                f.debug_set().entries(items).finish()
            }
            Frame::Attribute { attributes, data } => {
                f.write_str("Attribute")?;
                f.debug_map()
                    .entries(attributes.iter().map(|(k, v)| (k, v)))
                    .finish()?;
                write!(f, " {data:?}")
            }
            Frame::Push(items) => {
                f.write_str("Push")?;
                f.debug_list().entries(items).finish()
            }
        }
    }
}
