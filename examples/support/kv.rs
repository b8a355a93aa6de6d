//! An in-memory key-value store that speaks the redis commands `redis-cli` and
//! `redis-benchmark` use: PING, ECHO, GET, SET (EX/PX), DEL, EXISTS, INCR, MGET, DBSIZE,
//! FLUSHALL, and the COMMAND/CONFIG replies the tools ask for at start-up.
//!
//! [`Kv`] is the shared store (16 shards behind mutexes, so every thread of a server sees the
//! same keys); [`KvService`] is the `Service<Frame>` a connection talks to. The examples and
//! the integration tests build their servers from these.

#![allow(dead_code)] // each user of this module uses a different part of it

// Through the member crates rather than the `sheave` facade, so that the benches (which do
// not depend on the facade) can include this module too.
use bytes::Bytes;
use sheave_proto::resp::Frame;
use sheave_service::{Error, Service, TryReady};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

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
    shards: Arc<[Mutex<HashMap<Bytes, Entry>>; SHARDS]>,
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

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, HashMap<Bytes, Entry>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.shards[h.finish() as usize % SHARDS]
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
        shard.insert(key.clone(), Entry { value, expires });
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
        let mut parts = Vec::with_capacity(args.len());
        for a in args {
            match a {
                Frame::Bulk(b) | Frame::Simple(b) => parts.push(b),
                _ => return Frame::error("ERR expected an array of bulk strings"),
            }
        }
        let Some(name) = parts.first() else {
            return Frame::error("ERR empty command");
        };
        let arity = |min: usize| parts.len() >= min;
        let wrong_args = || {
            Frame::error(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name).to_lowercase()
            ))
        };
        let upper = name.to_ascii_uppercase();
        match &upper[..] {
            b"PING" => match parts.len() {
                1 => Frame::Simple(Bytes::from_static(b"PONG")),
                2 => Frame::Bulk(parts[1].clone()),
                _ => wrong_args(),
            },
            b"ECHO" if parts.len() == 2 => Frame::Bulk(parts[1].clone()),
            b"GET" if parts.len() == 2 => match self.kv.get(parts[1], now) {
                Some(v) => Frame::Bulk(v),
                None => Frame::Null,
            },
            b"SET" if arity(3) => self.set(&parts, now),
            b"DEL" if arity(2) => {
                Frame::Integer(parts[1..].iter().filter(|k| self.kv.del(k)).count() as i64)
            }
            b"EXISTS" if arity(2) => Frame::Integer(
                parts[1..]
                    .iter()
                    .filter(|k| self.kv.get(k, now).is_some())
                    .count() as i64,
            ),
            b"INCR" if parts.len() == 2 => match self.kv.incr(parts[1], now) {
                Ok(n) => Frame::Integer(n),
                Err(msg) => Frame::error(msg),
            },
            b"MGET" if arity(2) => Frame::Array(
                parts[1..]
                    .iter()
                    .map(|k| self.kv.get(k, now).map_or(Frame::Null, Frame::Bulk))
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
            b"CONFIG" if parts.len() >= 3 && parts[1].eq_ignore_ascii_case(b"GET") => {
                Frame::Array(vec![
                    Frame::Bulk(parts[2].clone()),
                    Frame::Bulk(Bytes::new()),
                ])
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

    fn set(&self, parts: &[&Bytes], now: Instant) -> Frame {
        let mut expires = None;
        let mut i = 3;
        while i < parts.len() {
            let unit = match &parts[i].to_ascii_uppercase()[..] {
                b"EX" => Duration::from_secs,
                b"PX" => Duration::from_millis,
                _ => return Frame::error("ERR syntax error"),
            };
            let Some(n) = parts
                .get(i + 1)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0)
            else {
                return Frame::error("ERR invalid expire time in 'set' command");
            };
            expires = Some(now + unit(n));
            i += 2;
        }
        self.kv.set(parts[1].clone(), parts[2].clone(), expires);
        Frame::ok()
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
