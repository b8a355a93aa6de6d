//! The RESP2 decoder and encoder.

use super::Frame;
use crate::codec::{Decoder, Encoder};
use bytes::{BufMut, Bytes, BytesMut};
use sheave_service::Error;

/// Default limits, close to what redis itself accepts for a client.
const DEFAULT_MAX_BULK: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_ARRAY: usize = 1024 * 1024;
const DEFAULT_MAX_INLINE: usize = 64 * 1024;
const DEFAULT_MAX_DEPTH: usize = 32;
/// The longest header line (`$` or `*` and a 64-bit length).
const MAX_HEADER: usize = 24;
/// The most elements a command may have to take the one-pass path of [`RespCodec::decode`].
const FAST_ARGS: usize = 16;

/// The RESP2 codec: decodes and encodes [`Frame`]s, including inline commands (`PING\r\n`,
/// as typed into `telnet`), which decode as an array of bulk strings.
///
/// Limits, each a protocol error when passed: bulk strings of 16 MiB, arrays of 1 Mi elements,
/// simple strings and inline commands of 64 KiB, arrays nested 32 deep. The decoder scans a
/// frame once: it remembers how far it got (a position and a stack of array counts) and only
/// builds the frame when the scan reached its end, so a large array arriving in pieces costs
/// linear work, and nothing is allocated for lengths the peer merely declared.
///
/// The common request — a whole command (an array of up to 16 bulk strings) at the front of
/// the buffer — takes a one-pass path: its headers are read once, its frame is built from the
/// element boundaries found on the way, with one allocation (the array's, sized exactly).
/// Anything else (a partial frame, a limit nearly reached, a malformed header, other types)
/// goes to the resumable scan, which reports errors.
///
/// ```
/// use bytes::BytesMut;
/// use sheave_proto::codec::{Decoder, Encoder};
/// use sheave_proto::resp::{Frame, RespCodec};
///
/// let mut codec = RespCodec::new();
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap(), None);
/// buf.extend_from_slice(b"\nk\r\nPING\r\n");
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::command(["GET", "k"])));
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::command(["PING"])));
///
/// let mut out = BytesMut::new();
/// codec.encode(Frame::Integer(-7), &mut out).unwrap();
/// assert_eq!(&out[..], b":-7\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct RespCodec {
    max_bulk: usize,
    max_array: usize,
    max_inline: usize,
    max_depth: usize,
    /// Where the next element of the frame being scanned starts.
    pos: usize,
    /// How far past `pos` a line element has been searched for its `\r\n`.
    line_scan: usize,
    /// Elements still missing from each open array, innermost last.
    stack: Vec<usize>,
    /// Elements the arrays of the frame being scanned have declared so far, nested ones
    /// included: bounded by `max_array` too, so a frame of many tiny nested elements cannot
    /// make a decoded frame many times larger than its bytes.
    declared: usize,
}

impl Default for RespCodec {
    fn default() -> Self {
        RespCodec::new()
    }
}

impl RespCodec {
    /// A codec with the default limits.
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
        }
    }

    /// Sets the largest bulk string, in bytes.
    pub fn max_bulk(mut self, max: usize) -> Self {
        self.max_bulk = max;
        self
    }

    /// Sets the most elements of one frame: of one array, and of all its nested arrays
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

    /// Sets the deepest nesting of arrays.
    pub fn max_depth(mut self, max: usize) -> Self {
        self.max_depth = max;
        self
    }

    /// Finds the `\r\n` ending the line that starts at `start`; resumes where the last search
    /// stopped. Returns the index of the `\r`.
    fn find_crlf(
        &mut self,
        src: &[u8],
        start: usize,
        limit: usize,
    ) -> Result<Option<usize>, Error> {
        let from = (start + self.line_scan).max(start);
        let end = src.len().min(start.saturating_add(limit + 2));
        if let Some(i) = src[from.min(end)..end].iter().position(|&b| b == b'\n') {
            let nl = from + i;
            if nl == start || src[nl - 1] != b'\r' {
                return Err(Error::protocol("line not terminated by \\r\\n"));
            }
            return Ok(Some(nl - 1));
        }
        if src.len() - start > limit + 1 {
            return Err(Error::protocol(format!("line longer than {limit} bytes")));
        }
        self.line_scan = end - start;
        Ok(None)
    }

    /// Scans one element at `self.pos`. `Ok(true)`: it is complete (or it opened an array);
    /// `Ok(false)`: more bytes are needed.
    fn scan_element(&mut self, src: &[u8]) -> Result<Option<bool>, Error> {
        let pos = self.pos;
        match src[pos] {
            b'+' | b'-' | b':' => {
                let Some(cr) = self.find_crlf(src, pos, self.max_inline + 1)? else {
                    return Ok(None);
                };
                if src[pos] == b':' {
                    parse_int(&src[pos + 1..cr])?;
                }
                self.pos = cr + 2;
                Ok(Some(true))
            }
            b'$' => {
                let Some(cr) = self.find_crlf(src, pos, MAX_HEADER)? else {
                    return Ok(None);
                };
                let len = parse_int(&src[pos + 1..cr])?;
                if len == -1 {
                    self.pos = cr + 2;
                    return Ok(Some(true));
                }
                if len < 0 {
                    return Err(Error::protocol("negative bulk length"));
                }
                if len as u64 > self.max_bulk as u64 {
                    return Err(Error::protocol(format!(
                        "bulk string of {len} bytes over the limit of {}",
                        self.max_bulk
                    )));
                }
                let end = cr + 2 + len as usize;
                if src.len() < end + 2 {
                    return Ok(None);
                }
                if &src[end..end + 2] != b"\r\n" {
                    return Err(Error::protocol("bulk string not followed by \\r\\n"));
                }
                self.pos = end + 2;
                Ok(Some(true))
            }
            b'*' => {
                let Some(cr) = self.find_crlf(src, pos, MAX_HEADER)? else {
                    return Ok(None);
                };
                let len = parse_int(&src[pos + 1..cr])?;
                self.pos = cr + 2;
                match len {
                    -1 | 0 => Ok(Some(true)),
                    n if n < 0 => Err(Error::protocol("negative array length")),
                    n if n as u64 > self.max_array as u64 => Err(Error::protocol(format!(
                        "array of {n} elements over the limit of {}",
                        self.max_array
                    ))),
                    _ if self.stack.len() >= self.max_depth => Err(Error::protocol(format!(
                        "arrays nested deeper than {}",
                        self.max_depth
                    ))),
                    n if self.declared + n as usize > self.max_array => Err(Error::protocol(
                        format!("a frame of more than {} elements in all", self.max_array),
                    )),
                    n => {
                        self.declared += n as usize;
                        self.stack.push(n as usize);
                        Ok(Some(false))
                    }
                }
            }
            _ if self.stack.is_empty() => {
                let Some(cr) = self.find_inline(src, pos)? else {
                    return Ok(None);
                };
                self.pos = cr;
                Ok(Some(true))
            }
            b => Err(Error::protocol(format!(
                "unexpected byte 0x{b:02x} at the start of an element"
            ))),
        }
    }

    /// Finds the end (one past `\n`) of an inline command starting at `start`.
    fn find_inline(&mut self, src: &[u8], start: usize) -> Result<Option<usize>, Error> {
        let from = start + self.line_scan;
        let end = src.len().min(start.saturating_add(self.max_inline + 2));
        if let Some(i) = src[from.min(end)..end].iter().position(|&b| b == b'\n') {
            return Ok(Some(from + i + 1));
        }
        if src.len() - start > self.max_inline + 1 {
            return Err(Error::protocol(format!(
                "inline command longer than {} bytes",
                self.max_inline
            )));
        }
        self.line_scan = end - start;
        Ok(None)
    }

    /// The one-pass path: if `src` starts with a whole array of 1 to 16 bulk strings, every
    /// header well-formed and every limit respected, records where each string's data starts
    /// and ends and returns `(elements, frame length)`. `None` leaves the frame, whatever it
    /// is, to the resumable scan.
    fn scan_command(
        &self,
        src: &[u8],
        spans: &mut [(usize, usize); FAST_ARGS],
    ) -> Option<(usize, usize)> {
        if src.first() != Some(&b'*') || self.max_depth == 0 {
            return None;
        }
        let (n, mut at) = small_length(src, 1)?;
        if n == 0 || n > FAST_ARGS || n > self.max_array {
            return None;
        }
        for span in &mut spans[..n] {
            if src.get(at) != Some(&b'$') {
                return None;
            }
            let (len, start) = small_length(src, at + 1)?;
            if len > self.max_bulk {
                return None;
            }
            let end = start + len;
            if src.get(end..end + 2) != Some(b"\r\n") {
                return None;
            }
            *span = (start, end);
            at = end + 2;
        }
        Some((n, at))
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.line_scan = 0;
        self.stack.clear();
        self.declared = 0;
    }
}

impl Decoder for RespCodec {
    type Item = Frame;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let result = self.decode_inner(src);
        if result.is_err() {
            self.reset();
        }
        result
    }
}

impl RespCodec {
    fn decode_inner(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if self.pos == 0 && self.line_scan == 0 && self.stack.is_empty() {
            let mut spans = [(0, 0); FAST_ARGS];
            if let Some((n, total)) = self.scan_command(src, &mut spans) {
                let bytes = src.split_to(total).freeze();
                let mut items = Vec::with_capacity(n);
                items.extend(
                    spans[..n]
                        .iter()
                        .map(|&(start, end)| Frame::Bulk(bytes.slice(start..end))),
                );
                return Ok(Some(Frame::Array(items)));
            }
        }
        loop {
            if self.pos >= src.len() {
                return Ok(None);
            }
            let inline = self.stack.is_empty() && !b"+-:$*".contains(&src[self.pos]);
            let Some(complete) = self.scan_element(src)? else {
                return Ok(None);
            };
            self.line_scan = 0;
            if !complete {
                continue;
            }
            // An element is complete: close every array it completes.
            let mut done = true;
            while let Some(missing) = self.stack.last_mut() {
                *missing -= 1;
                if *missing > 0 {
                    done = false;
                    break;
                }
                self.stack.pop();
            }
            if !done {
                continue;
            }
            let total = self.pos;
            self.reset();
            let bytes = src.split_to(total).freeze();
            if inline {
                match parse_inline(&bytes) {
                    Some(frame) => return Ok(Some(frame)),
                    None => continue, // an empty line: redis ignores it too
                }
            }
            let mut at = 0;
            return Ok(Some(build(&bytes, &mut at)));
        }
    }
}

/// Parses a RESP integer: an optional `-` and 1 to 19 digits, no overflow.
fn parse_int(digits: &[u8]) -> Result<i64, Error> {
    let (neg, body) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if body.is_empty() || body.len() > 19 {
        return Err(Error::protocol("malformed integer"));
    }
    let mut value: i64 = 0;
    for &b in body {
        if !b.is_ascii_digit() {
            return Err(Error::protocol("malformed integer"));
        }
        let digit = (b - b'0') as i64;
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if neg {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or_else(|| Error::protocol("integer overflow"))?;
    }
    Ok(value)
}

/// Reads `<1 to 9 digits>\r\n` at `from`: the length and where the next line starts. Anything
/// else (a sign, a longer number, a partial line) is `None`.
#[inline(always)]
fn small_length(src: &[u8], from: usize) -> Option<(usize, usize)> {
    let digits = src.get(from..)?;
    let mut value = 0;
    let mut i = 0;
    while let Some(&b) = digits.get(i) {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if i == 9 {
            return None;
        }
        value = value * 10 + usize::from(digit);
        i += 1;
    }
    if i == 0 || digits.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    Some((value, from + i + 2))
}

/// Builds the frame at `*at` of a buffer already scanned whole and valid.
fn build(buf: &Bytes, at: &mut usize) -> Frame {
    let start = *at;
    let nl = start
        + buf[start..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("scanned");
    let cr = nl - 1;
    *at = cr + 2;
    let line = || buf.slice(start + 1..cr);
    let int = || parse_int(&buf[start + 1..cr]).expect("scanned");
    match buf[start] {
        b'+' => Frame::Simple(line()),
        b'-' => Frame::Error(line()),
        b':' => Frame::Integer(int()),
        b'$' => match int() {
            -1 => Frame::Null,
            len => {
                let data = buf.slice(cr + 2..cr + 2 + len as usize);
                *at = cr + 4 + len as usize;
                Frame::Bulk(data)
            }
        },
        _ => match int() {
            -1 => Frame::NullArray,
            len => Frame::Array((0..len).map(|_| build(buf, at)).collect()),
        },
    }
}

/// Splits an inline command on spaces; `None` for a blank line.
fn parse_inline(line: &Bytes) -> Option<Frame> {
    let mut end = line.len() - 1; // the '\n'
    if end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < end {
        while i < end && matches!(line[i], b' ' | b'\t') {
            i += 1;
        }
        let word = i;
        while i < end && !matches!(line[i], b' ' | b'\t') {
            i += 1;
        }
        if i > word {
            parts.push(Frame::Bulk(line.slice(word..i)));
        }
    }
    (!parts.is_empty()).then_some(Frame::Array(parts))
}

impl Encoder<Frame> for RespCodec {
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&item, dst)
    }

    fn encode_error(&mut self, error: &Error, dst: &mut BytesMut) -> bool {
        encode_error_reply(error, dst);
        true
    }
}

impl Encoder<&Frame> for RespCodec {
    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(item, dst, 0)
    }

    fn encode_error(&mut self, error: &Error, dst: &mut BytesMut) -> bool {
        encode_error_reply(error, dst);
        true
    }
}

/// `-ERR <what happened>\r\n`. A protocol error says what was wrong with the peer's own
/// bytes, in redis's words (`-ERR Protocol error: ...`); any other error says only its kind
/// (`-ERR unavailable`): its context and source may describe the server's insides (addresses,
/// backends) and stay in the server's log. CR and LF are replaced so the reply stays one line.
fn encode_error_reply(error: &Error, dst: &mut BytesMut) {
    use sheave_service::ErrorKind;
    let message = match (error.kind(), error.context()) {
        (ErrorKind::Protocol, Some(context)) => format!("ERR Protocol error: {context}"),
        (ErrorKind::Protocol, None) => "ERR Protocol error".to_string(),
        (kind, _) => format!("ERR {kind}"),
    };
    dst.reserve(message.len() + 3);
    dst.extend_from_slice(b"-");
    dst.extend(
        message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    dst.extend_from_slice(b"\r\n");
}

fn encode_frame(frame: &Frame, dst: &mut BytesMut, depth: usize) -> Result<(), Error> {
    match frame {
        Frame::Simple(s) | Frame::Error(s) => {
            if s.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Err(Error::protocol("simple strings may not contain \\r or \\n"));
            }
            let tag = if matches!(frame, Frame::Simple(_)) {
                b'+'
            } else {
                b'-'
            };
            dst.reserve(s.len() + 3);
            dst.put_u8(tag);
            dst.put_slice(s);
            dst.put_slice(b"\r\n");
        }
        Frame::Integer(n) => put_header(dst, b':', *n),
        Frame::Bulk(data) => {
            dst.reserve(data.len() + 16);
            put_header(dst, b'$', data.len() as i64);
            dst.put_slice(data);
            dst.put_slice(b"\r\n");
        }
        Frame::Null => dst.put_slice(b"$-1\r\n"),
        Frame::NullArray => dst.put_slice(b"*-1\r\n"),
        Frame::Array(items) => {
            if depth >= DEFAULT_MAX_DEPTH {
                return Err(Error::protocol("arrays nested too deep to encode"));
            }
            put_header(dst, b'*', items.len() as i64);
            for item in items {
                encode_frame(item, dst, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Writes `<tag><n>\r\n` without going through `fmt`, in one copy.
pub(crate) fn put_header(dst: &mut BytesMut, tag: u8, n: i64) {
    // Right-aligned: the tag, an optional '-', up to 20 digits, "\r\n".
    let mut line = [0u8; 24];
    let mut i = line.len() - 2;
    line[i..].copy_from_slice(b"\r\n");
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        line[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        line[i] = b'-';
    }
    i -= 1;
    line[i] = tag;
    dst.extend_from_slice(&line[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let frames = decode_all(b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n").unwrap();
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
}
