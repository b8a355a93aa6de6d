//! The string and key commands, against a [`Db`] view (one shard locked per operation, or
//! every shard for a transaction). The caller checked the command's name and arity.

use super::{Db, Entry, Frame, SHARDS, keys, text};
use bytes::Bytes;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest string `APPEND` may build, as redis's `proto-max-bulk-len`.
const MAX_STRING: usize = 512 * 1024 * 1024;

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SYNTAX: &str = "ERR syntax error";

/// Runs a data command.
pub fn run(name: &[u8], args: &[Frame], db: &mut Db<'_>, now: Instant) -> Frame {
    let key = || text(&args[1]);
    let reply = match name {
        b"GET" => Ok(db.get(key(), now).map_or(Frame::Null, Frame::Bulk)),
        b"SET" => set(args, db, now),
        b"SETNX" => Ok(Frame::Integer(setnx(db, key(), text(&args[2]), now) as i64)),
        b"GETDEL" => Ok(db
            .with(key(), |m| m.remove(&key()[..]))
            .filter(|e| e.live(now))
            .map_or(Frame::Null, |e| Frame::Bulk(e.value))),
        b"GETEX" => getex(args, db, now),
        b"APPEND" => append(db, key(), text(&args[2]), now),
        b"STRLEN" => Ok(Frame::Integer(
            db.get(key(), now).map_or(0, |v| v.len() as i64),
        )),
        b"INCR" => incr_by(db, key(), 1, now),
        b"DECR" => incr_by(db, key(), -1, now),
        b"INCRBY" => integer(&args[2]).and_then(|by| incr_by(db, key(), by, now)),
        b"DECRBY" => integer(&args[2]).and_then(|by| match by.checked_neg() {
            Some(by) => incr_by(db, key(), by, now),
            None => Err("ERR decrement would overflow"),
        }),
        b"INCRBYFLOAT" => incr_by_float(db, key(), &args[2], now),
        b"MGET" => Ok(Frame::Array(
            args[1..]
                .iter()
                .map(|k| db.get(text(k), now).map_or(Frame::Null, Frame::Bulk))
                .collect(),
        )),
        b"MSET" | b"MSETNX" => mset(name == b"MSETNX", args, db, now),
        b"DEL" | b"UNLINK" => Ok(Frame::Integer(
            args[1..]
                .iter()
                .filter(|k| {
                    let k = text(k);
                    db.with(k, |m| m.remove(&k[..]))
                        .is_some_and(|e| e.live(now))
                })
                .count() as i64,
        )),
        b"EXISTS" => Ok(Frame::Integer(
            args[1..]
                .iter()
                .filter(|k| db.get(text(k), now).is_some())
                .count() as i64,
        )),
        b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" => expire(name, args, db, now),
        b"TTL" | b"PTTL" => Ok(Frame::Integer(ttl(db, key(), now, name == b"PTTL"))),
        b"PERSIST" => Ok(Frame::Integer(db.with(
            key(),
            |m| match m.get_mut(&key()[..]) {
                Some(e) if e.live(now) && e.expires.is_some() => {
                    e.expires = None;
                    1
                }
                _ => 0,
            },
        ))),
        b"TYPE" => Ok(Frame::Simple(Bytes::from_static(
            if db.get(key(), now).is_some() {
                b"string"
            } else {
                b"none"
            },
        ))),
        b"KEYS" => Ok(keys::keys(db, key(), now)),
        b"SCAN" => keys::scan(args, db, now),
        b"FLUSHALL" | b"FLUSHDB" => match args.get(1).map(|a| text(a).to_ascii_uppercase()) {
            None => Ok(flush(db)),
            Some(mode) if mode == b"ASYNC" || mode == b"SYNC" => Ok(flush(db)),
            Some(_) => Err(SYNTAX),
        },
        _ => Ok(Frame::error(format!(
            "ERR the '{}' command is not implemented by this server",
            String::from_utf8_lossy(name).to_lowercase()
        ))),
    };
    reply.unwrap_or_else(Frame::error)
}

fn flush(db: &mut Db<'_>) -> Frame {
    for i in 0..SHARDS {
        db.shard(i, |m| m.clear());
    }
    Frame::ok()
}

/// A redis integer argument: an optional `-` and digits, no leading zeros, no overflow.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty()
        || digits.len() > 19
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && (digits.len() > 1 || b.len() > 1))
    {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn integer(arg: &Frame) -> Result<i64, &'static str> {
    parse_i64(text(arg)).ok_or(NOT_INTEGER)
}

/// A float argument or stored value: no spaces, not NaN (infinities parse, as in redis; the
/// sum is checked).
fn parse_f64(b: &[u8]) -> Option<f64> {
    if b.is_empty() || b.iter().any(|c| c.is_ascii_whitespace()) {
        return None;
    }
    let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

/// How a command changes a key's expiry.
#[derive(Clone, Copy)]
enum Ttl {
    /// No expiry (a plain `SET`, `GETEX PERSIST`).
    Clear,
    /// Keep what the key has (`SET KEEPTTL`).
    Keep,
    At(Instant),
}

/// An expiry `n` units from now (`EX`, `PX`) or at `n` units since the epoch (`EXAT`,
/// `PXAT`); `None` when it overflows. `ms` says whether the unit is the millisecond.
fn deadline(n: i64, ms: bool, absolute: bool, now: Instant) -> Option<Instant> {
    let millis = if ms { n } else { n.checked_mul(1000)? };
    let from_now = if absolute {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_millis() as i64;
        millis.checked_sub(epoch_ms)?.max(0)
    } else {
        millis
    };
    now.checked_add(Duration::from_millis(u64::try_from(from_now).ok()?))
}

/// Parses `EX|PX|EXAT|PXAT n` at `args[*i]`: `Some` when it is one of those.
fn expiry_option(
    args: &[Frame],
    i: &mut usize,
    now: Instant,
    command: &str,
) -> Option<Result<Ttl, String>> {
    let word = text(&args[*i]).to_ascii_uppercase();
    let (ms, absolute) = match &word[..] {
        b"EX" => (false, false),
        b"PX" => (true, false),
        b"EXAT" => (false, true),
        b"PXAT" => (true, true),
        _ => return None,
    };
    let Some(n) = args.get(*i + 1) else {
        return Some(Err(SYNTAX.into()));
    };
    *i += 2;
    let invalid = format!("ERR invalid expire time in '{command}' command");
    Some(match integer(n) {
        Err(e) => Err(e.into()),
        Ok(n) if n <= 0 => Err(invalid),
        Ok(n) => deadline(n, ms, absolute, now).map(Ttl::At).ok_or(invalid),
    })
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL]`.
fn set(args: &[Frame], db: &mut Db<'_>, now: Instant) -> Result<Frame, &'static str> {
    let (mut nx, mut xx, mut get, mut ttl) = (false, false, false, None);
    let mut i = 3;
    while i < args.len() {
        if let Some(parsed) = expiry_option(args, &mut i, now, "set") {
            if ttl.is_some() {
                return Err(SYNTAX);
            }
            match parsed {
                Ok(t) => ttl = Some(t),
                Err(msg) => return Ok(Frame::error(msg)),
            }
            continue;
        }
        match &text(&args[i]).to_ascii_uppercase()[..] {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if ttl.is_none() => ttl = Some(Ttl::Keep),
            _ => return Err(SYNTAX),
        }
        i += 1;
    }
    let (key, value) = (text(&args[1]), text(&args[2]));
    let value = Bytes::copy_from_slice(value);
    let reply = db.with(key, |m| {
        let old = m.get(&key[..]).filter(|e| e.live(now));
        let exists = old.is_some();
        let old_value = old.map(|e| e.value.clone());
        let old_ttl = old.and_then(|e| e.expires);
        let reply = |done: bool| match (get, done) {
            (true, _) => old_value.clone().map_or(Frame::Null, Frame::Bulk),
            (false, true) => Frame::ok(),
            (false, false) => Frame::Null,
        };
        if (nx && exists) || (xx && !exists) {
            return reply(false);
        }
        let expires = match ttl.unwrap_or(Ttl::Clear) {
            Ttl::Clear => None,
            Ttl::Keep => old_ttl,
            Ttl::At(at) => Some(at),
        };
        match m.get_mut(&key[..]) {
            Some(e) => *e = Entry { value, expires },
            None => {
                m.insert(Bytes::copy_from_slice(key), Entry { value, expires });
            }
        }
        reply(true)
    });
    Ok(reply)
}

/// Sets `key` unless it holds a live value; whether it did.
fn setnx(db: &mut Db<'_>, key: &[u8], value: &[u8], now: Instant) -> bool {
    db.with(key, |m| {
        if m.get(key).is_some_and(|e| e.live(now)) {
            return false;
        }
        m.insert(
            Bytes::copy_from_slice(key),
            Entry {
                value: Bytes::copy_from_slice(value),
                expires: None,
            },
        );
        true
    })
}

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`.
fn getex(args: &[Frame], db: &mut Db<'_>, now: Instant) -> Result<Frame, &'static str> {
    let mut ttl = Ttl::Keep;
    let mut i = 2;
    while i < args.len() {
        let persist = text(&args[i]).eq_ignore_ascii_case(b"PERSIST");
        if matches!(ttl, Ttl::Keep) && persist {
            ttl = Ttl::Clear;
            i += 1;
            continue;
        }
        match (
            matches!(ttl, Ttl::Keep),
            expiry_option(args, &mut i, now, "getex"),
        ) {
            (true, Some(Ok(t))) => ttl = t,
            (_, Some(Err(msg))) => return Ok(Frame::error(msg)),
            _ => return Err(SYNTAX),
        }
    }
    let key = text(&args[1]);
    Ok(db.with(key, |m| match m.get_mut(&key[..]) {
        Some(e) if e.live(now) => {
            match ttl {
                Ttl::Keep => {}
                Ttl::Clear => e.expires = None,
                Ttl::At(at) => e.expires = Some(at),
            }
            Frame::Bulk(e.value.clone())
        }
        _ => Frame::Null,
    }))
}

/// Replaces a live key's value, keeping its expiry, or creates it.
fn put_keeping_ttl(m: &mut super::Map, key: &[u8], value: Bytes, now: Instant) {
    match m.get_mut(key) {
        Some(e) if e.live(now) => e.value = value,
        Some(e) => {
            *e = Entry {
                value,
                expires: None,
            }
        }
        None => {
            m.insert(
                Bytes::copy_from_slice(key),
                Entry {
                    value,
                    expires: None,
                },
            );
        }
    }
}

fn live_value(m: &super::Map, key: &[u8], now: Instant) -> Option<Bytes> {
    m.get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
}

fn append(db: &mut Db<'_>, key: &[u8], tail: &[u8], now: Instant) -> Result<Frame, &'static str> {
    db.with(key, |m| {
        let old = live_value(m, key, now).unwrap_or_default();
        if old.len() + tail.len() > MAX_STRING {
            return Err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        }
        let mut joined = Vec::with_capacity(old.len() + tail.len());
        joined.extend_from_slice(&old);
        joined.extend_from_slice(tail);
        let len = joined.len();
        put_keeping_ttl(m, key, joined.into(), now);
        Ok(Frame::Integer(len as i64))
    })
}

fn incr_by(db: &mut Db<'_>, key: &[u8], by: i64, now: Instant) -> Result<Frame, &'static str> {
    db.with(key, |m| {
        let current = match live_value(m, key, now) {
            Some(v) => parse_i64(&v).ok_or(NOT_INTEGER)?,
            None => 0,
        };
        let next = current
            .checked_add(by)
            .ok_or("ERR increment or decrement would overflow")?;
        put_keeping_ttl(m, key, Bytes::from(next.to_string()), now);
        Ok(Frame::Integer(next))
    })
}

fn incr_by_float(
    db: &mut Db<'_>,
    key: &[u8],
    by: &Frame,
    now: Instant,
) -> Result<Frame, &'static str> {
    let by = parse_f64(text(by)).ok_or(NOT_FLOAT)?;
    db.with(key, |m| {
        let current = match live_value(m, key, now) {
            Some(v) => parse_f64(&v).ok_or(NOT_FLOAT)?,
            None => 0.0,
        };
        let next = current + by;
        if !next.is_finite() {
            return Err("ERR increment would produce NaN or Infinity");
        }
        let value = Bytes::from(next.to_string());
        put_keeping_ttl(m, key, value.clone(), now);
        Ok(Frame::Bulk(value))
    })
}

/// `MSET`/`MSETNX`, with every shard locked (the caller's `Db` holds them all).
fn mset(nx: bool, args: &[Frame], db: &mut Db<'_>, now: Instant) -> Result<Frame, &'static str> {
    if args.len().is_multiple_of(2) {
        return Ok(super::connection::wrong_args(if nx {
            "msetnx"
        } else {
            "mset"
        }));
    }
    let pairs = args[1..].chunks(2);
    if nx && pairs.clone().any(|p| db.get(text(&p[0]), now).is_some()) {
        return Ok(Frame::Integer(0));
    }
    for pair in pairs {
        db.set_copy(text(&pair[0]), text(&pair[1]), None);
    }
    Ok(if nx { Frame::Integer(1) } else { Frame::ok() })
}

/// `EXPIRE key n [NX | XX | GT | LT]` and its millisecond and absolute kin: 1 when the
/// expiry was set (or the key deleted, for a time already past), 0 otherwise.
fn expire(
    name: &[u8],
    args: &[Frame],
    db: &mut Db<'_>,
    now: Instant,
) -> Result<Frame, &'static str> {
    // Options first, then the time, as redis checks them.
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        match &text(option).to_ascii_uppercase()[..] {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Ok(Frame::error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(text(option))
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible");
    }
    let n = integer(&args[2])?;
    let ms = name == b"PEXPIRE" || name == b"PEXPIREAT";
    let absolute = name.ends_with(b"AT");
    let command = String::from_utf8_lossy(name).to_lowercase();
    // A time at or before now deletes the key; one that overflows is refused.
    let at = if n <= 0 && !absolute {
        Some(now)
    } else {
        deadline(n, ms, absolute, now)
    };
    let Some(at) = at else {
        return Ok(Frame::error(format!(
            "ERR invalid expire time in '{command}' command"
        )));
    };
    let key = text(&args[1]);
    Ok(Frame::Integer(db.with(key, |m| {
        let Some(e) = m.get_mut(&key[..]).filter(|e| e.live(now)) else {
            return 0;
        };
        let allowed = match e.expires {
            None => !xx && !gt,
            Some(current) => !nx && (!gt || at > current) && (!lt || at < current),
        };
        if !allowed {
            return 0;
        }
        if at <= now {
            m.remove(&key[..]);
        } else {
            e.expires = Some(at);
        }
        1
    })))
}

/// `TTL`/`PTTL`: -2 for a missing key, -1 for one without expiry.
fn ttl(db: &mut Db<'_>, key: &[u8], now: Instant, ms: bool) -> i64 {
    db.with(key, |m| match m.get(key) {
        Some(e) if e.live(now) => match e.expires {
            None => -1,
            Some(at) => {
                let left = at.duration_since(now).as_millis() as i64;
                if ms { left } else { (left + 500) / 1000 }
            }
        },
        _ => -2,
    })
}
