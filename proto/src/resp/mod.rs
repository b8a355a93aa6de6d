//! The redis wire protocol, RESP2 and RESP3: [`Frame`], [`RespCodec`], and a typed [`Client`].
//!
//! With these, a sheave server speaks to `redis-cli`, `redis-benchmark` and the redis client
//! libraries (which open with `HELLO 3` today), and a sheave client speaks to a real
//! `redis-server` in either protocol.
//!
//! **What RESP3 support means here.** The decoder reads every RESP3 type (null, boolean,
//! double, big number, blob error, verbatim string, map, set, attribute, push) as well as the
//! RESP2 ones, whatever the connection speaks, under the same limits (see [`RespCodec`]);
//! streamed strings and aggregates (`$?`, `*?`), which redis never sends, are protocol
//! errors. The encoder writes in the connection's [`Protocol`], which starts at RESP2 and
//! follows the `HELLO` handshake; to a RESP2 peer the RESP3-only types are downgraded as
//! redis downgrades them:
//!
//! | [`Frame`] | to a RESP3 peer | to a RESP2 peer |
//! |---|---|---|
//! | `Null`, `NullArray` | `_` | `$-1`, `*-1` |
//! | `Boolean(b)` | `#t` / `#f` | `:1` / `:0` |
//! | `Double(d)` | `,1.5` (`inf`, `-inf`, `nan`) | the same text as a bulk string |
//! | `BigNumber(n)` | `(n` | `n` as a bulk string |
//! | `BlobError(e)` | `!len` `e` | `-e` (CR and LF replaced by spaces) |
//! | `Verbatim { format, text }` | `=len` `fmt:text` | `text` as a bulk string |
//! | `Map(pairs)` | `%n` then the pairs | `*2n`: a flat array, key, value, key, value... |
//! | `Set(items)` | `~n` | `*n` |
//! | `Push(items)` | `>n` | `*n` |
//! | `Attribute { attributes, data }` | `\|n`, the pairs, then `data` | `data` alone |
//!
//! Requests are arrays of bulk strings (or inline commands, which decode the same way);
//! replies are any frame.
//!
//! ```
//! use sheave_proto::resp::Frame;
//!
//! let cmd = Frame::command(["SET", "greeting", "hello"]);
//! assert_eq!(cmd.command_name().as_deref(), Some("SET"));
//! assert_eq!(cmd.arg(1).map(|b| &b[..]), Some(&b"greeting"[..]));
//! assert_eq!(Frame::ok(), Frame::Simple("OK".into()));
//! assert_eq!(Frame::Double(f64::NAN), Frame::Double(f64::NAN));
//! ```

mod client;
mod codec;
mod decode;
mod encode;
mod frame;
mod push;
#[cfg(test)]
mod tests;

pub use client::{Client, Hello, check_command};
pub use codec::{PushHandle, RespCodec};
pub use frame::{Frame, Protocol};
pub use push::Pushes;
