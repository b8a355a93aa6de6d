//! An in-memory key-value store that speaks the redis commands `redis-cli` and
//! `redis-benchmark` use: PING, ECHO, GET, SET (EX/PX), DEL, EXISTS, INCR, MGET, DBSIZE,
//! FLUSHALL, and the COMMAND/CONFIG replies the tools ask for at start-up.
//!
//! [`Kv`] is the shared store (16 shards behind mutexes, so every thread of a server sees the
//! same keys); [`KvService`] is the `Service<Frame>` a connection talks to. The examples and
//! the integration tests build their servers from these.
//!
//! The hot path allocates nothing of its own for a GET (the reply shares the stored value)
//! and, for a SET, only the stored copies of the value and of a new key: commands are matched
//! on the request's elements in place, the name upper-cased into a stack buffer, and keys
//! hashed with a small FxHash-style hasher ([`FxBuildHasher`]). Unlike redis's seeded SipHash,
//! Fx is not DoS-resistant: a peer who chooses keys can make them collide. Fine for an example
//! and a benchmark; a store facing untrusted peers wants a keyed hasher.

#![allow(dead_code)] // each user of this module uses a different part of it

// Through the member crates rather than the `sheave` facade, so that the benches (which do
// not depend on the facade) can include this module too.
use bytes::Bytes;
use sheave_proto::resp::Frame;
use sheave_service::{Error, Service, TryReady};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// FxHash (the rustc hasher): a rotate, a xor and a multiply per 8 bytes, then a final rotate
/// that brings the well-mixed high bits of the product down to the low bits hash tables use.
#[derive(Clone, Copy, Default)]
pub struct FxBuildHasher;

#[derive(Default)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

impl BuildHasher for FxBuildHasher {
    type Hasher = FxHasher;

    #[inline]
    fn build_hasher(&self) -> FxHasher {
        FxHasher::default()
    }
}

type Map = HashMap<Bytes, Entry, FxBuildHasher>;

struct Entry {
    value: Bytes,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// The store: cheap to clone (an `Arc`), shared by every connection and thread.
#[derive(Clone, Default)]
pub struct Kv {
    shards: Arc<[Mutex<Map>; SHARDS]>,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").field("keys", &self.len()).finish()
    }
}

impl Kv {
    pub fn new() -> Self {
        Kv::default()
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Map> {
        // Bits the maps do not use (they index buckets by the low bits and tag entries with
        // the top 7), so the keys of one shard still spread over all of its buckets.
        let h = FxBuildHasher.hash_one(key);
        self.shards[(h >> 40) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys are stored (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn get(&self, key: &[u8], now: Instant) -> Option<Bytes> {
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn set(&self, key: Bytes, value: Bytes, expires: Option<Instant>) {
        self.shard(&key).insert(key, Entry { value, expires });
    }

    /// Stores copies of `key` and `value` (the key only if it is new). A request's `Bytes`
    /// are views into the connection's read buffer: stored as they are, they would keep the
    /// whole buffer alive for as long as any key or value read from it lives.
    pub fn set_copy(&self, key: &[u8], value: &[u8], expires: Option<Instant>) {
        let value = Bytes::copy_from_slice(value);
        let mut shard = self.shard(key);
        match shard.get_mut(key) {
            Some(entry) => *entry = Entry { value, expires },
            None => {
                shard.insert(Bytes::copy_from_slice(key), Entry { value, expires });
            }
        }
    }

    pub fn del(&self, key: &[u8]) -> bool {
        self.shard(key).remove(key).is_some()
    }

    pub fn incr(&self, key: &Bytes, now: Instant) -> Result<i64, &'static str> {
        let mut shard = self.shard(key);
        let current = match shard.get(key) {
            Some(e) if e.live(now) => std::str::from_utf8(&e.value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or("ERR value is not an integer or out of range")?,
            _ => 0,
        };
        let next = current
            .checked_add(1)
            .ok_or("ERR increment or decrement would overflow")?;
        let expires = shard
            .get(key)
            .filter(|e| e.live(now))
            .and_then(|e| e.expires);
        let value = Bytes::from(next.to_string());
        match shard.get_mut(&key[..]) {
            Some(entry) => *entry = Entry { value, expires },
            None => {
                shard.insert(Bytes::copy_from_slice(key), Entry { value, expires });
            }
        }
        Ok(next)
    }

    pub fn flush(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

/// One connection's view of the store: a `Service<Frame>` that is always ready and answers
/// every command at once (its future completes on the first poll).
#[derive(Debug, Clone)]
pub struct KvService {
    kv: Kv,
}

impl KvService {
    pub fn new(kv: Kv) -> Self {
        KvService { kv }
    }

    /// Executes one command at the runtime thread's cached time.
    pub fn execute(&self, cmd: &Frame) -> Frame {
        self.execute_at(cmd, sheave_core::time::now_cached())
    }

    /// Executes one command; `now` decides what has expired.
    pub fn execute_at(&self, cmd: &Frame, now: Instant) -> Frame {
        let Frame::Array(args) = cmd else {
            return Frame::error("ERR expected an array of bulk strings");
        };
        if !args
            .iter()
            .all(|a| matches!(a, Frame::Bulk(_) | Frame::Simple(_)))
        {
            return Frame::error("ERR expected an array of bulk strings");
        }
        let Some(name) = args.first().map(text) else {
            return Frame::error("ERR empty command");
        };
        let arg = |i: usize| text(&args[i]);
        let n = args.len();
        let wrong_args = || {
            Frame::error(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name).to_lowercase()
            ))
        };
        // Upper-cased into a stack buffer (no command name is longer than 8 bytes), byte by
        // byte: a memcpy call costs more than the copy.
        let mut buf = [0u8; 8];
        let upper: &[u8] = if name.len() <= buf.len() {
            for (u, b) in buf.iter_mut().zip(name.iter()) {
                *u = b.to_ascii_uppercase();
            }
            &buf[..name.len()]
        } else {
            b"" // no such command
        };
        match upper {
            b"GET" if n == 2 => match self.kv.get(arg(1), now) {
                Some(v) => Frame::Bulk(v),
                None => Frame::Null,
            },
            b"SET" if n >= 3 => self.set(args, now),
            b"PING" => match n {
                1 => Frame::Simple(Bytes::from_static(b"PONG")),
                2 => Frame::Bulk(arg(1).clone()),
                _ => wrong_args(),
            },
            b"ECHO" if n == 2 => Frame::Bulk(arg(1).clone()),
            b"DEL" if n >= 2 => {
                Frame::Integer((1..n).filter(|&i| self.kv.del(arg(i))).count() as i64)
            }
            b"EXISTS" if n >= 2 => Frame::Integer(
                (1..n)
                    .filter(|&i| self.kv.get(arg(i), now).is_some())
                    .count() as i64,
            ),
            b"INCR" if n == 2 => match self.kv.incr(arg(1), now) {
                Ok(v) => Frame::Integer(v),
                Err(msg) => Frame::error(msg),
            },
            b"MGET" if n >= 2 => Frame::Array(
                (1..n)
                    .map(|i| self.kv.get(arg(i), now).map_or(Frame::Null, Frame::Bulk))
                    .collect(),
            ),
            b"DBSIZE" => Frame::Integer(self.kv.len() as i64),
            b"FLUSHALL" | b"FLUSHDB" => {
                self.kv.flush();
                Frame::ok()
            }
            // redis-cli asks for command docs at start-up; an empty list is a valid answer.
            b"COMMAND" => Frame::Array(Vec::new()),
            // redis-benchmark reads `save` and `appendonly`: answer as a server without them.
            b"CONFIG" if n >= 3 && arg(1).eq_ignore_ascii_case(b"GET") => {
                Frame::Array(vec![Frame::Bulk(arg(2).clone()), Frame::Bulk(Bytes::new())])
            }
            b"ECHO" | b"GET" | b"SET" | b"DEL" | b"EXISTS" | b"INCR" | b"MGET" | b"CONFIG" => {
                wrong_args()
            }
            _ => Frame::error(format!(
                "ERR unknown command '{}'",
                String::from_utf8_lossy(name)
            )),
        }
    }

    /// `SET key value [EX seconds | PX milliseconds]...`; `args` are all strings.
    fn set(&self, args: &[Frame], now: Instant) -> Frame {
        let mut expires = None;
        let mut options = args[3..].chunks(2);
        for option in &mut options {
            let unit = match text(&option[0]) {
                o if o.eq_ignore_ascii_case(b"EX") => Duration::from_secs,
                o if o.eq_ignore_ascii_case(b"PX") => Duration::from_millis,
                _ => return Frame::error("ERR syntax error"),
            };
            let Some(n) = option
                .get(1)
                .and_then(|n| std::str::from_utf8(text(n)).ok())
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0)
            else {
                return Frame::error("ERR invalid expire time in 'set' command");
            };
            expires = Some(now + unit(n));
        }
        self.kv.set_copy(text(&args[1]), text(&args[2]), expires);
        Frame::ok()
    }
}

/// The bytes of a string element (the caller checked that it is one).
fn text(frame: &Frame) -> &Bytes {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => b,
        _ => unreachable!("checked to be a string"),
    }
}

impl Service<Frame> for KvService {
    type Response = Frame;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> TryReady<(), Error> {
        TryReady::Ready(())
    }

    async fn call(&self, (): (), cmd: Frame) -> Result<Frame, Error> {
        Ok(self.execute(&cmd))
    }
}
