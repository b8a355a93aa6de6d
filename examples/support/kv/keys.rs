//! `KEYS` and `SCAN`, and the glob patterns they match.
//!
//! A `SCAN` cursor is a place in a fixed order of all possible keys: the shard (the top 4
//! bits) and, within it, the low 60 bits of the key's hash. Each call returns the live keys
//! from the cursor on, in that order, and the place after the last one. Since a key's place
//! never changes, a key present for the whole scan is returned exactly once, however many
//! keys come and go meanwhile (keys of the same place are returned together, so none is
//! split across calls). Each call sorts the rest of one shard: fine for an example.

use super::{Db, Frame, SHARDS, commands::parse_i64, locate, text};
use bytes::Bytes;
use std::time::Instant;

/// The part of a key's hash that orders it within its shard.
pub const ORDER_MASK: u64 = (1 << 60) - 1;

/// `KEYS pattern`.
pub fn keys(db: &mut Db<'_>, pattern: &[u8], now: Instant) -> Frame {
    let mut out = Vec::new();
    for i in 0..SHARDS {
        db.shard(i, |m| {
            out.extend(
                m.iter()
                    .filter(|(k, e)| e.live(now) && glob(pattern, k))
                    .map(|(k, _)| Frame::Bulk(k.clone())),
            )
        });
    }
    Frame::Array(out)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub fn scan(args: &[Frame], db: &mut Db<'_>, now: Instant) -> Result<Frame, &'static str> {
    let cursor = std::str::from_utf8(text(&args[1]))
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or("ERR invalid cursor")?;
    let (mut pattern, mut count, mut strings) = (None, 10usize, true);
    let mut options = args[2..].chunks(2);
    for option in &mut options {
        let [name, value] = option else {
            return Err("ERR syntax error");
        };
        match &text(name).to_ascii_uppercase()[..] {
            b"MATCH" => pattern = Some(text(value).clone()),
            b"COUNT" => match parse_i64(text(value)) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return Err("ERR syntax error"),
                None => return Err("ERR value is not an integer or out of range"),
            },
            b"TYPE" => strings = text(value).eq_ignore_ascii_case(b"string"),
            _ => return Err("ERR syntax error"),
        }
    }
    let mut shard = (cursor >> 60) as usize;
    let mut from = cursor & ORDER_MASK;
    let mut found: Vec<Bytes> = Vec::new();
    let mut visited = 0;
    while shard < SHARDS && visited < count {
        let mut rest: Vec<(u64, Bytes)> = db.shard(shard, |m| {
            m.iter()
                .filter(|(_, e)| e.live(now))
                .map(|(k, _)| (locate(k).1, k.clone()))
                .filter(|&(place, _)| place >= from)
                .collect()
        });
        rest.sort_unstable_by_key(|&(place, _)| place);
        let mut taken = 0;
        while taken < rest.len() && (visited < count || rest[taken].0 == rest[taken - 1].0) {
            visited += 1;
            taken += 1;
        }
        found.extend(rest[..taken].iter().map(|(_, k)| k.clone()));
        if taken == rest.len() {
            shard += 1;
            from = 0;
        } else {
            from = rest[taken - 1].0 + 1;
        }
    }
    let next = if shard >= SHARDS {
        0
    } else {
        ((shard as u64) << 60) | from
    };
    let keys = found
        .into_iter()
        .filter(|k| strings && pattern.as_ref().is_none_or(|p| glob(p, k)))
        .map(Frame::Bulk)
        .collect();
    Ok(Frame::Array(vec![
        Frame::Bulk(Bytes::from(next.to_string())),
        Frame::Array(keys),
    ]))
}

/// Whether `s` matches the glob `pattern`: `*`, `?`, `[abc]`, `[^a-z]`, `\x`, as redis's.
/// Linear in `s` per star (one backtracking point, the last star).
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                star = Some((p, i));
                p += 1;
                continue;
            }
            if let Some(next) = one(pattern, p, s[i]) {
                p = next;
                i += 1;
                continue;
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// If the token at `p` (not a star) matches `c`: where the next token starts.
fn one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            while i < pattern.len() && pattern[i] != b']' {
                if pattern[i] == b'\\' && i + 1 < pattern.len() {
                    matched |= pattern[i + 1] == c;
                    i += 2;
                } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']'
                {
                    let (a, b) = (pattern[i], pattern[i + 2]);
                    matched |= (a.min(b)..=a.max(b)).contains(&c);
                    i += 3;
                } else {
                    matched |= pattern[i] == c;
                    i += 1;
                }
            }
            (matched != negate).then_some((i + 1).min(pattern.len()))
        }
        b => (b == c).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_match_as_redis_does() {
        use super::glob;
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
            ("*a*b*c", "xxaxxbxxc", true),
        ];
        for &(p, s, want) in cases {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p} {s}");
        }
    }
}
