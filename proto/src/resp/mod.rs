//! RESP2, the redis wire protocol: [`Frame`], [`RespCodec`], and a typed [`Client`].
//!
//! With these, a sheave server speaks to `redis-cli` and `redis-benchmark`, and a sheave client
//! speaks to a real `redis-server`. Requests are arrays of bulk strings (or inline commands,
//! which decode the same way); replies are any frame.
//!
//! ```
//! use sheave_proto::resp::Frame;
//!
//! let cmd = Frame::command(["SET", "greeting", "hello"]);
//! assert_eq!(cmd.command_name().as_deref(), Some("SET"));
//! assert_eq!(cmd.arg(1).map(|b| &b[..]), Some(&b"greeting"[..]));
//! assert_eq!(Frame::ok(), Frame::Simple("OK".into()));
//! ```

mod client;
mod codec;

pub use client::{Client, check_command};
pub use codec::RespCodec;

use bytes::Bytes;
use std::fmt;

/// One RESP2 value.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+OK\r\n`: a status line (no `\r` or `\n` inside).
    Simple(Bytes),
    /// `-ERR message\r\n`: an error line.
    Error(Bytes),
    /// `:42\r\n`.
    Integer(i64),
    /// `$5\r\nhello\r\n`: binary-safe data.
    Bulk(Bytes),
    /// `$-1\r\n`: the null bulk string (a missing key).
    Null,
    /// `*2\r\n...`: an array of frames.
    Array(Vec<Frame>),
    /// `*-1\r\n`: the null array.
    NullArray,
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
        }
    }
}
