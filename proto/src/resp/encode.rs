//! The encoder: every frame as itself to a RESP3 peer, in redis's downgrade to a RESP2 peer.

use super::Frame;
use super::codec::MAX_ENCODE_DEPTH;
use super::decode::is_big_number;
use bytes::{BufMut, BytesMut};
use sheave_service::Error;
use std::fmt::Write as _;

/// `-ERR <what happened>\r\n`. A protocol error says what was wrong with the peer's own
/// bytes, in redis's words (`-ERR Protocol error: ...`); any other error says only its kind
/// (`-ERR unavailable`): its context and source may describe the server's insides (addresses,
/// backends) and stay in the server's log. CR and LF are replaced so the reply stays one line.
pub(super) fn encode_error_reply(error: &Error, dst: &mut BytesMut) {
    use sheave_service::ErrorKind;
    let message = match (error.kind(), error.context()) {
        (ErrorKind::Protocol, Some(context)) => format!("ERR Protocol error: {context}"),
        (ErrorKind::Protocol, None) => "ERR Protocol error".to_string(),
        (kind, _) => format!("ERR {kind}"),
    };
    put_line_replacing_crlf(dst, b'-', message.as_bytes());
}

/// `<tag><text>\r\n` with every CR or LF of `text` replaced by a space.
fn put_line_replacing_crlf(dst: &mut BytesMut, tag: u8, text: &[u8]) {
    dst.reserve(text.len() + 3);
    dst.put_u8(tag);
    dst.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    dst.extend_from_slice(b"\r\n");
}

/// Encodes `frame`; `resp3` says whether the peer speaks RESP3 (else the RESP3-only types go
/// out in their RESP2 form).
pub(super) fn encode_frame(
    frame: &Frame,
    dst: &mut BytesMut,
    depth: usize,
    resp3: bool,
) -> Result<(), Error> {
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
        Frame::Null | Frame::NullArray if resp3 => dst.put_slice(b"_\r\n"),
        Frame::Null => dst.put_slice(b"$-1\r\n"),
        Frame::NullArray => dst.put_slice(b"*-1\r\n"),
        Frame::Boolean(b) => dst.put_slice(match (resp3, b) {
            (true, true) => b"#t\r\n",
            (true, false) => b"#f\r\n",
            (false, true) => b":1\r\n",
            (false, false) => b":0\r\n",
        }),
        Frame::Double(d) => {
            let mut text = String::new();
            write_double(&mut text, *d);
            if resp3 {
                dst.reserve(text.len() + 3);
                dst.put_u8(b',');
                dst.put_slice(text.as_bytes());
                dst.put_slice(b"\r\n");
            } else {
                put_blob(dst, b'$', b"", text.as_bytes());
            }
        }
        Frame::BigNumber(n) => {
            if !is_big_number(n) {
                return Err(Error::protocol("a big number is a sign and digits"));
            }
            if resp3 {
                dst.reserve(n.len() + 3);
                dst.put_u8(b'(');
                dst.put_slice(n);
                dst.put_slice(b"\r\n");
            } else {
                put_blob(dst, b'$', b"", n);
            }
        }
        Frame::BlobError(s) if resp3 => put_blob(dst, b'!', b"", s),
        Frame::BlobError(s) => put_line_replacing_crlf(dst, b'-', s),
        Frame::Verbatim { format, text } if resp3 => {
            let mut prefix = [b':'; 4];
            prefix[..3].copy_from_slice(format);
            put_blob(dst, b'=', &prefix, text);
        }
        Frame::Verbatim { text, .. } => put_blob(dst, b'$', b"", text),
        Frame::Array(items) => put_items(dst, b'*', items, depth, resp3)?,
        Frame::Set(items) => put_items(dst, if resp3 { b'~' } else { b'*' }, items, depth, resp3)?,
        Frame::Push(items) => put_items(dst, if resp3 { b'>' } else { b'*' }, items, depth, resp3)?,
        Frame::Map(pairs) => {
            check_depth(depth)?;
            if resp3 {
                put_header(dst, b'%', pairs.len() as i64);
            } else {
                put_header(dst, b'*', 2 * pairs.len() as i64);
            }
            put_pairs(dst, pairs, depth, resp3)?;
        }
        Frame::Attribute { attributes, data } => {
            check_depth(depth)?;
            if resp3 {
                put_header(dst, b'|', attributes.len() as i64);
                put_pairs(dst, attributes, depth, resp3)?;
            }
            encode_frame(data, dst, depth + 1, resp3)?;
        }
    }
    Ok(())
}

fn check_depth(depth: usize) -> Result<(), Error> {
    if depth >= MAX_ENCODE_DEPTH {
        return Err(Error::protocol("aggregates nested too deep to encode"));
    }
    Ok(())
}

fn put_items(
    dst: &mut BytesMut,
    tag: u8,
    items: &[Frame],
    depth: usize,
    resp3: bool,
) -> Result<(), Error> {
    check_depth(depth)?;
    put_header(dst, tag, items.len() as i64);
    for item in items {
        encode_frame(item, dst, depth + 1, resp3)?;
    }
    Ok(())
}

fn put_pairs(
    dst: &mut BytesMut,
    pairs: &[(Frame, Frame)],
    depth: usize,
    resp3: bool,
) -> Result<(), Error> {
    for (key, value) in pairs {
        encode_frame(key, dst, depth + 1, resp3)?;
        encode_frame(value, dst, depth + 1, resp3)?;
    }
    Ok(())
}

/// `<tag><len>\r\n<prefix><data>\r\n`.
#[inline]
fn put_blob(dst: &mut BytesMut, tag: u8, prefix: &[u8], data: &[u8]) {
    dst.reserve(prefix.len() + data.len() + 16);
    put_header(dst, tag, (prefix.len() + data.len()) as i64);
    dst.put_slice(prefix);
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

/// A double as RESP3 writes it: `inf`, `-inf`, `nan`, or the shortest text that reads back
/// as the same number (with an exponent for very large or small ones).
pub(super) fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("nan");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "inf" } else { "-inf" });
    } else {
        let _ = write!(out, "{d:?}");
    }
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
