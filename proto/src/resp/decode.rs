//! The decoder's two paths: the one-pass path for whole commands and the resumable scan for
//! everything else, then the build of a scanned frame.

use super::Frame;
use super::codec::{FAST_ARGS, MAX_HEADER, RespCodec};
use bytes::{Bytes, BytesMut};
use sheave_service::Error;

/// The bytes that start a typed element; a top-level line starting with anything else is an
/// inline command.
const TYPE_BYTES: &[u8] = b"+-:$*_#,(!=%~|>";

impl RespCodec {
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

    /// Scans one element at `self.pos`. `Some(true)`: it is complete; `Some(false)`: it opened
    /// an aggregate; `None`: more bytes are needed.
    fn scan_element(&mut self, src: &[u8]) -> Result<Option<bool>, Error> {
        let pos = self.pos;
        let tag = src[pos];
        match tag {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                let Some(cr) = self.find_crlf(src, pos, self.max_inline + 1)? else {
                    return Ok(None);
                };
                check_line(tag, &src[pos + 1..cr])?;
                self.pos = cr + 2;
                Ok(Some(true))
            }
            b'$' | b'!' | b'=' => {
                let Some(cr) = self.find_crlf(src, pos, MAX_HEADER)? else {
                    return Ok(None);
                };
                let len = parse_int(&src[pos + 1..cr])?;
                if len == -1 && tag == b'$' {
                    self.pos = cr + 2;
                    return Ok(Some(true));
                }
                if len < 0 {
                    return Err(Error::protocol("negative string length"));
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
                if tag == b'=' && (len < 4 || src[cr + 5] != b':') {
                    return Err(Error::protocol("verbatim string without its format"));
                }
                self.pos = end + 2;
                Ok(Some(true))
            }
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let Some(cr) = self.find_crlf(src, pos, MAX_HEADER)? else {
                    return Ok(None);
                };
                let len = parse_int(&src[pos + 1..cr])?;
                self.pos = cr + 2;
                if len == -1 && tag == b'*' {
                    return Ok(Some(true));
                }
                if len < 0 {
                    return Err(Error::protocol("negative aggregate length"));
                }
                // Elements that follow: a pair per map or attribute entry, and after the
                // attributes the frame they describe.
                let elements = match tag {
                    b'%' => (len as u64) * 2,
                    b'|' => (len as u64) * 2 + 1,
                    _ => len as u64,
                };
                if elements > self.max_array as u64 {
                    return Err(Error::protocol(format!(
                        "aggregate of {elements} elements over the limit of {}",
                        self.max_array
                    )));
                }
                let elements = elements as usize;
                if elements == 0 {
                    return Ok(Some(true));
                }
                if self.stack.len() >= self.max_depth {
                    return Err(Error::protocol(format!(
                        "aggregates nested deeper than {}",
                        self.max_depth
                    )));
                }
                if self.declared + elements > self.max_array {
                    return Err(Error::protocol(format!(
                        "a frame of more than {} elements in all",
                        self.max_array
                    )));
                }
                self.declared += elements;
                self.stack.push(elements);
                Ok(Some(false))
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
    #[inline]
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

    pub(super) fn reset_scan(&mut self) {
        self.pos = 0;
        self.line_scan = 0;
        self.stack.clear();
        self.declared = 0;
    }

    /// The one-pass path, if the frame at the front of `src` takes it (`Ok(None)` if not):
    /// a whole command, counted, and noted if it is `HELLO` or `RESET`.
    #[inline(always)]
    pub(super) fn decode_command(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if self.pos != 0 || self.line_scan != 0 || !self.stack.is_empty() || self.quit {
            return Ok(None);
        }
        let mut spans = [(0, 0); FAST_ARGS];
        let Some((n, total)) = self.scan_command(src, &mut spans) else {
            return Ok(None);
        };
        let bytes = src.split_to(total).freeze();
        let mut items = Vec::with_capacity(n);
        items.extend(
            spans[..n]
                .iter()
                .map(|&(start, end)| Frame::Bulk(bytes.slice(start..end))),
        );
        // Only a four- or five-letter command can be QUIT, HELLO or RESET.
        if (4..=5).contains(&(spans[0].1 - spans[0].0)) {
            self.note_command(&items)?;
        } else {
            self.decoded += 1;
        }
        Ok(Some(Frame::Array(items)))
    }

    /// The resumable scan: the next frame, or `None` if it is not all here yet.
    pub(super) fn decode_scanned(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            if self.pos >= src.len() {
                return Ok(None);
            }
            let inline = self.stack.is_empty() && !TYPE_BYTES.contains(&src[self.pos]);
            let Some(complete) = self.scan_element(src)? else {
                return Ok(None);
            };
            self.line_scan = 0;
            if !complete {
                continue;
            }
            // An element is complete: close every aggregate it completes.
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
            self.reset_scan();
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

/// Checks the body of a one-line element, so that building it later cannot fail.
fn check_line(tag: u8, line: &[u8]) -> Result<(), Error> {
    match tag {
        b':' => parse_int(line).map(drop),
        b'_' if !line.is_empty() => Err(Error::protocol("a null with a body")),
        b'#' if line != b"t" && line != b"f" => Err(Error::protocol("a boolean not t or f")),
        b',' if parse_double(line).is_none() => Err(Error::protocol("malformed double")),
        b'(' if !is_big_number(line) => Err(Error::protocol("malformed big number")),
        _ => Ok(()),
    }
}

/// Parses a RESP integer: an optional `-` and 1 to 19 digits, no overflow.
pub(super) fn parse_int(digits: &[u8]) -> Result<i64, Error> {
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

/// Parses a RESP3 double: `inf`, `-inf`, `nan`, or a decimal number with an optional
/// fraction and exponent.
pub(super) fn parse_double(text: &[u8]) -> Option<f64> {
    match text {
        b"inf" | b"+inf" => return Some(f64::INFINITY),
        b"-inf" => return Some(f64::NEG_INFINITY),
        b"nan" | b"-nan" => return Some(f64::NAN),
        _ => {}
    }
    let numeric = |b: &u8| b.is_ascii_digit() || b"+-.eE".contains(b);
    if !text.iter().any(u8::is_ascii_digit) || !text.iter().all(numeric) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Whether `text` is an optional sign and at least one digit.
pub(super) fn is_big_number(text: &[u8]) -> bool {
    let digits = match text.split_first() {
        Some((b'-' | b'+', rest)) => rest,
        _ => text,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
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
    let blob = |at: &mut usize| {
        let len = int() as usize;
        *at = cr + 4 + len;
        buf.slice(cr + 2..cr + 2 + len)
    };
    let tag = buf[start];
    match tag {
        b'+' => Frame::Simple(line()),
        b'-' => Frame::Error(line()),
        b':' => Frame::Integer(int()),
        b'_' => Frame::Null,
        b'#' => Frame::Boolean(buf[start + 1] == b't'),
        b',' => Frame::Double(parse_double(&buf[start + 1..cr]).expect("scanned")),
        b'(' => Frame::BigNumber(line()),
        b'$' if int() == -1 => Frame::Null,
        b'$' => Frame::Bulk(blob(at)),
        b'!' => Frame::BlobError(blob(at)),
        b'=' => {
            let data = blob(at);
            Frame::Verbatim {
                format: [data[0], data[1], data[2]],
                text: data.slice(4..),
            }
        }
        b'*' if int() == -1 => Frame::NullArray,
        b'*' | b'~' | b'>' => {
            let items = (0..int()).map(|_| build(buf, at)).collect();
            match tag {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        _ => {
            let pairs = (0..int())
                .map(|_| (build(buf, at), build(buf, at)))
                .collect();
            if tag == b'%' {
                Frame::Map(pairs)
            } else {
                Frame::Attribute {
                    attributes: pairs,
                    data: Box::new(build(buf, at)),
                }
            }
        }
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
