//! [`RespCodec`]: its limits, the connection's protocol version, and the `Decoder` and
//! `Encoder` implementations (the work is in `decode.rs` and `encode.rs`).

use super::encode::{encode_error_reply, encode_frame};
use super::push::{DEFAULT_PUSH_QUEUE, PushSink, Pushes, Shared};
use super::{Frame, Protocol};
use crate::codec::{Decoder, Encoder};
use bytes::BytesMut;
use sheave_service::{Error, ErrorKind};
use std::collections::VecDeque;

/// Default limits, close to what redis itself accepts for a client.
const DEFAULT_MAX_BULK: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_ARRAY: usize = 1024 * 1024;
const DEFAULT_MAX_INLINE: usize = 64 * 1024;
const DEFAULT_MAX_DEPTH: usize = 32;
/// The deepest frame the encoder writes.
pub(super) const MAX_ENCODE_DEPTH: usize = DEFAULT_MAX_DEPTH;
/// The longest header line (a type byte and a 64-bit length).
pub(super) const MAX_HEADER: usize = 24;
/// The most elements a command may have to take the one-pass path of [`RespCodec::decode`].
pub(super) const FAST_ARGS: usize = 16;
/// The most `HELLO`/`RESET` commands whose replies may be outstanding at once.
const MAX_PENDING_SWITCHES: usize = 1024;

/// The RESP codec: decodes every RESP2 and RESP3 [`Frame`], including inline commands
/// (`PING\r\n`, as typed into `telnet`, which decode as an array of bulk strings), and encodes
/// in the protocol the connection speaks.
///
/// Limits, each a protocol error when passed: bulk, blob-error and verbatim strings of 16 MiB;
/// aggregates (arrays, sets, pushes; maps and attributes count two elements a pair) of 1 Mi
/// elements, and as many in one frame in all; simple strings, errors, doubles, big numbers and
/// inline commands of 64 KiB; aggregates nested 32 deep. The decoder scans a frame once: it
/// remembers how far it got (a position and a stack of element counts) and only builds the
/// frame when the scan reached its end, so a large frame arriving in pieces costs linear work,
/// and nothing is allocated for lengths the peer merely declared.
///
/// The common request — a whole command (an array of up to 16 bulk strings) at the front of
/// the buffer — takes a one-pass path: its headers are read once, its frame is built from the
/// element boundaries found on the way, with one allocation (the array's, sized exactly).
/// Anything else (a partial frame, a limit nearly reached, a malformed header, other types)
/// goes to the resumable scan, which reports errors.
///
/// **The protocol version.** A codec starts at [`Protocol::Resp2`] (or what
/// [`with_protocol`](RespCodec::with_protocol) sets). As a server's codec it follows the
/// handshake by itself: it notes each `HELLO 2`/`HELLO 3` (and `RESET`, which goes back to
/// RESP2) it decodes, and when it encodes the reply to that command — replies go out one per
/// request, in order — it switches to the new version if the reply is not an error, so the
/// `HELLO` reply itself is already in the new protocol, as redis sends it. Any service that
/// answers `HELLO` (or refuses it) therefore gets the right encoding, with nothing to tell
/// the codec.
///
/// **`QUIT`.** After a server's codec decodes `QUIT` it decodes nothing more: the connection
/// closes once the replies owed (`QUIT`'s own `+OK` last) are written, as redis closes it.
/// (Decoding then fails with an [`ErrorKind::Closed`] error, for which
/// [`encode_error`](Encoder::encode_error) writes nothing.) A client's codec is not affected:
/// a reply that reads `QUIT` is just a reply.
///
/// ```
/// use bytes::BytesMut;
/// use sheave_proto::codec::{Decoder, Encoder};
/// use sheave_proto::resp::{Frame, Protocol, RespCodec};
///
/// let mut codec = RespCodec::new();
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap(), None);
/// buf.extend_from_slice(b"\nk\r\nPING\r\n");
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::command(["GET", "k"])));
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::command(["PING"])));
///
/// // The replies, one per request, in order. A RESP2 peer gets a boolean as an integer.
/// let mut out = BytesMut::new();
/// codec.encode(Frame::Boolean(true), &mut out).unwrap();
/// codec.encode(Frame::Simple("PONG".into()), &mut out).unwrap();
/// assert_eq!(&out[..], b":1\r\n+PONG\r\n");
///
/// // HELLO 3, answered with a map: the reply and everything after it is RESP3.
/// buf.extend_from_slice(b"HELLO 3\r\n");
/// codec.decode(&mut buf).unwrap();
/// out.clear();
/// codec.encode(Frame::Map(vec![(Frame::bulk("proto"), Frame::Integer(3))]), &mut out).unwrap();
/// codec.encode(Frame::Null, &mut out).unwrap();
/// assert_eq!(&out[..], b"%1\r\n$5\r\nproto\r\n:3\r\n_\r\n");
/// assert_eq!(codec.protocol(), Protocol::Resp3);
/// ```
#[derive(Debug, Clone)]
pub struct RespCodec {
    pub(super) max_bulk: usize,
    pub(super) max_array: usize,
    pub(super) max_inline: usize,
    pub(super) max_depth: usize,
    /// Where the next element of the frame being scanned starts.
    pub(super) pos: usize,
    /// How far past `pos` a line element has been searched for its `\r\n`.
    pub(super) line_scan: usize,
    /// Elements still missing from each open aggregate, innermost last.
    pub(super) stack: Vec<usize>,
    /// Elements the aggregates of the frame being scanned have declared so far, nested ones
    /// included: bounded by `max_array` too, so a frame of many tiny nested elements cannot
    /// make a decoded frame many times larger than its bytes.
    pub(super) declared: usize,
    /// What the encoder writes.
    protocol: Protocol,
    /// Frames decoded and frames encoded so far (requests and replies, for a server).
    pub(super) decoded: u64,
    encoded: u64,
    /// Decoded `HELLO`/`RESET` commands whose replies are not encoded yet: the request's
    /// number and the protocol a successful reply switches to.
    pub(super) switches: VecDeque<(u64, Protocol)>,
    /// Where decoded push frames go instead of being returned (a client's codec).
    pushes: Option<PushSink>,
    /// A server's codec decoded `QUIT`: it decodes nothing more, and the connection closes
    /// once the replies owed are written.
    pub(super) quit: bool,
}

impl Default for RespCodec {
    fn default() -> Self {
        RespCodec::new()
    }
}

impl RespCodec {
    /// A codec with the default limits, speaking RESP2 until a `HELLO 3`.
    pub fn new() -> Self {
        RespCodec {
            max_bulk: DEFAULT_MAX_BULK,
            max_array: DEFAULT_MAX_ARRAY,
            max_inline: DEFAULT_MAX_INLINE,
            max_depth: DEFAULT_MAX_DEPTH,
            pos: 0,
            line_scan: 0,
            stack: Vec::new(),
            declared: 0,
            protocol: Protocol::Resp2,
            decoded: 0,
            encoded: 0,
            switches: VecDeque::new(),
            pushes: None,
            quit: false,
        }
    }

    /// A client's codec: RESP3 push frames it decodes are not returned (they would be
    /// matched to the oldest request waiting for a reply) but delivered to the returned
    /// handle, from which [`Pushes`] subscriptions are taken.
    pub fn divert_pushes(mut self) -> (Self, PushHandle) {
        let shared = Shared::new(DEFAULT_PUSH_QUEUE);
        self.pushes = Some(PushSink::new(shared.clone()));
        (self, PushHandle { shared })
    }

    /// Sets the largest bulk string, in bytes.
    pub fn max_bulk(mut self, max: usize) -> Self {
        self.max_bulk = max;
        self
    }

    /// Sets the most elements of one frame: of one aggregate, and of all its nested ones
    /// together.
    pub fn max_array(mut self, max: usize) -> Self {
        self.max_array = max;
        self
    }

    /// Sets the longest simple string, error or inline command, in bytes.
    pub fn max_inline(mut self, max: usize) -> Self {
        self.max_inline = max;
        self
    }

    /// Sets the deepest nesting of aggregates.
    pub fn max_depth(mut self, max: usize) -> Self {
        self.max_depth = max;
        self
    }

    /// Sets the protocol the encoder starts with.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The protocol the encoder writes now.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Switches the protocol the encoder writes, at once.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Notes a decoded frame: if it is `HELLO 2|3` or `RESET`, its reply switches protocol.
    fn note_decoded(&mut self, frame: &Frame) -> Result<(), Error> {
        match frame {
            Frame::Array(items) => self.note_command(items),
            _ => {
                self.decoded += 1;
                Ok(())
            }
        }
    }

    /// Notes a decoded command (an array's elements).
    pub(super) fn note_command(&mut self, items: &[Frame]) -> Result<(), Error> {
        // A server's codec has encoded no more replies than it decoded requests; a client's
        // has always sent the request of a reply it decodes, so a reply that reads `QUIT`
        // does not close a client's connection.
        if self.encoded <= self.decoded
            && matches!(items, [Frame::Bulk(name)] if name.eq_ignore_ascii_case(b"QUIT"))
        {
            self.quit = true;
        }
        if let Some(protocol) = switch_requested(items) {
            if self.switches.len() >= MAX_PENDING_SWITCHES {
                return Err(Error::protocol(format!(
                    "more than {MAX_PENDING_SWITCHES} HELLO or RESET commands awaiting replies"
                )));
            }
            self.switches.push_back((self.decoded, protocol));
        }
        self.decoded += 1;
        Ok(())
    }

    /// Before encoding a reply: applies the switch its request asked for, if it succeeded.
    /// Switches noted for frames already answered (on a client's codec, which decodes
    /// replies, not requests) are dropped.
    #[inline]
    fn note_encoding(&mut self, error: impl FnOnce() -> bool) {
        if !self.switches.is_empty() {
            let failed = error();
            while let Some(&(at, protocol)) = self.switches.front() {
                if at > self.encoded {
                    break;
                }
                self.switches.pop_front();
                if at == self.encoded && !failed {
                    self.protocol = protocol;
                }
            }
        }
        self.encoded += 1;
    }
}

/// `Some(version)` for `HELLO 2`/`HELLO 3` (with or without more arguments), `Some(Resp2)`
/// for `RESET`. Cheap for every other command: one length comparison.
#[inline]
fn switch_requested(items: &[Frame]) -> Option<Protocol> {
    let name = match items.first() {
        Some(Frame::Bulk(name)) if name.len() == 5 => name,
        _ => return None,
    };
    if name.eq_ignore_ascii_case(b"RESET") && items.len() == 1 {
        return Some(Protocol::Resp2);
    }
    if !name.eq_ignore_ascii_case(b"HELLO") {
        return None;
    }
    match items.get(1) {
        Some(Frame::Bulk(v)) if &v[..] == b"2" => Some(Protocol::Resp2),
        Some(Frame::Bulk(v)) if &v[..] == b"3" => Some(Protocol::Resp3),
        _ => None,
    }
}

impl Decoder for RespCodec {
    type Item = Frame;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        match self.decode_command(src) {
            Ok(None) => self.decode_other(src),
            done => done,
        }
    }
}

impl RespCodec {
    /// Everything but a whole command at the front of the buffer: the resumable scan, push
    /// frames diverted, the scan state reset after an error.
    #[inline(never)]
    fn decode_other(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if self.quit {
            return Err(quit_error());
        }
        loop {
            match self.decode_scanned(src) {
                Ok(Some(Frame::Push(items))) if self.pushes.is_some() => {
                    if let Some(sink) = &self.pushes {
                        sink.deliver(Frame::Push(items));
                    }
                }
                Ok(Some(frame)) => {
                    self.note_decoded(&frame)?;
                    return Ok(Some(frame));
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.reset_scan();
                    return Err(e);
                }
            }
        }
    }
}

/// The push frames of a codec made by [`RespCodec::divert_pushes`]: subscribe to them, or
/// count the ones nobody took.
#[derive(Debug, Clone)]
pub struct PushHandle {
    shared: std::sync::Arc<Shared>,
}

impl PushHandle {
    /// The subscription, if nobody holds it (one subscriber at a time).
    pub fn subscribe(&self) -> Option<Pushes> {
        self.shared.subscribe()
    }

    /// Push frames dropped so far: while nobody subscribed, or while the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped()
    }
}

impl Encoder<Frame> for RespCodec {
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&item, dst)
    }

    fn encode_error(&mut self, error: &Error, dst: &mut BytesMut) -> bool {
        Encoder::<&Frame>::encode_error(self, error, dst)
    }
}

impl Encoder<&Frame> for RespCodec {
    #[inline]
    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.note_encoding(|| item.is_error());
        encode_frame(item, dst, 0, self.protocol == Protocol::Resp3)
    }

    fn encode_error(&mut self, error: &Error, dst: &mut BytesMut) -> bool {
        if self.quit && is_quit_error(error) {
            return false; // the farewell after QUIT: its `+OK` was the last word
        }
        self.note_encoding(|| true);
        encode_error_reply(error, dst);
        true
    }
}

const QUIT_CONTEXT: &str = "the peer sent QUIT";

/// What decoding returns after `QUIT`: the connection is closed (not a protocol error).
fn quit_error() -> Error {
    Error::msg(ErrorKind::Closed, QUIT_CONTEXT)
}

fn is_quit_error(error: &Error) -> bool {
    error.kind() == ErrorKind::Closed && error.context() == Some(QUIT_CONTEXT)
}
