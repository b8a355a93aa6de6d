//! An in-memory key-value store that speaks enough of redis for `redis-cli`,
//! `redis-benchmark` and the client libraries (redis-py, ioredis) at their default settings.
//!
//! - The handshake: `HELLO [2|3] [AUTH user pass] [SETNAME name]` (RESP3 replies follow;
//!   no password is configured, so the `default` user gets in with any, as with `AUTH`;
//!   the codec downgrades them for a RESP2 connection), `INFO [section]`,
//!   `CLIENT SETINFO|SETNAME|GETNAME|ID|INFO`, `SELECT 0`, `COMMAND [COUNT|INFO|DOCS|LIST]`,
//!   `CONFIG GET`, `QUIT`, `RESET`, `ECHO`, `PING [msg]`.
//! - Strings: `GET`, `SET [NX|XX] [GET] [EX|PX|EXAT|PXAT|KEEPTTL]`, `SETNX`, `GETDEL`,
//!   `GETEX`, `APPEND`, `STRLEN`, `INCR`, `INCRBY`, `DECR`, `DECRBY`, `INCRBYFLOAT`, `MGET`,
//!   `MSET`, `MSETNX`.
//! - Keys: `DEL`, `UNLINK`, `EXISTS`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `TTL`,
//!   `PTTL`, `PERSIST`, `TYPE`, `KEYS`, `SCAN`, `DBSIZE`, `FLUSHALL`, `FLUSHDB`.
//! - Transactions: `MULTI`/`EXEC`/`DISCARD`, queued per connection; `EXEC` holds every shard's
//!   lock while it runs, so a transaction is atomic with respect to every other connection
//!   and thread (as are `MSET` and `MSETNX`). `WATCH` is refused with an error that says so,
//!   and so is `HELLO` inside a transaction. `QUIT` closes the connection after its `+OK`
//!   (the codec does that).
//!
//! Errors are worded as redis words them (clients match on the text). Every value is a
//! string, so `WRONGTYPE` never arises. Keys expire lazily, when touched (`DBSIZE` and
//! `INFO keyspace` count expired keys not yet touched).
//!
//! [`Kv`] is the shared store (16 shards behind mutexes, so every thread of a server sees the
//! same keys); [`KvService`] is the `Service<Frame>` one connection talks to (it holds that
//! connection's state: its transaction, name, protocol). The examples and the integration
//! tests build their servers from these.
//!
//! The hot path allocates nothing of its own for a GET (the reply shares the stored value)
//! and, for a SET, only the stored copies of the value and of a new key: commands are matched
//! on the request's elements in place, the name upper-cased into a stack buffer, and keys
//! hashed with a small FxHash-style hasher ([`FxBuildHasher`]). Unlike redis's seeded SipHash,
//! Fx is not DoS-resistant: a peer who chooses keys can make them collide. Fine for an example
//! and a benchmark; a store facing untrusted peers wants a keyed hasher.

#![allow(dead_code)] // each user of this module uses a different part of it

#[path = "kv/commands.rs"]
mod commands;
#[path = "kv/connection.rs"]
mod connection;
#[path = "kv/hash.rs"]
mod hash;
#[path = "kv/keys.rs"]
mod keys;

// Through the member crates rather than the `sheave` facade, so that the benches (which do
// not depend on the facade) can include this module too.
use bytes::Bytes;
pub use hash::FxBuildHasher;
use sheave_proto::resp::Frame;
use sheave_service::{Error, Service, TryReady};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

const SHARDS: usize = 16;
/// The most one transaction may queue: commands, their elements in all, and their bytes.
const MAX_QUEUED: usize = 64 * 1024;
const MAX_QUEUED_ELEMENTS: usize = 1024 * 1024;
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

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

/// Where a key lives: its shard, and its place in `SCAN` order within the shard.
#[inline]
fn locate(key: &[u8]) -> (usize, u64) {
    let h = FxBuildHasher.hash_one(key);
    // Bits the maps do not use (they index buckets by the low bits and tag entries with the
    // top 7), so the keys of one shard still spread over all of its buckets.
    ((h >> 40) as usize % SHARDS, h & keys::ORDER_MASK)
}

struct Shared {
    shards: [Mutex<Map>; SHARDS],
    port: AtomicU16,
    next_client: AtomicU64,
    clients: AtomicUsize,
    started: Instant,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            shards: Default::default(),
            port: AtomicU16::new(0),
            next_client: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }
}

/// The store: cheap to clone (an `Arc`), shared by every connection and thread.
#[derive(Clone, Default)]
pub struct Kv {
    shared: Arc<Shared>,
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

    /// Sets the port `INFO server` reports as `tcp_port`.
    pub fn set_port(&self, port: u16) {
        self.shared.port.store(port, Ordering::Relaxed);
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Map> {
        self.shared.shards[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys are stored (expired ones included until touched).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    /// The live value of `key`; removes it if it has expired. (What `Db::get` does, written
    /// out for the hot path.)
    #[inline]
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Bytes> {
        let mut shard = self.lock(locate(key).0);
        match shard.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores copies of `key` and `value` (see `Db::set_copy`), for the hot path.
    #[inline]
    pub fn set_copy(&self, key: &[u8], value: &[u8], expires: Option<Instant>) {
        let value = Bytes::copy_from_slice(value);
        let mut shard = self.lock(locate(key).0);
        match shard.get_mut(key) {
            Some(entry) => *entry = Entry { value, expires },
            None => {
                shard.insert(Bytes::copy_from_slice(key), Entry { value, expires });
            }
        }
    }

    pub fn set(&self, key: Bytes, value: Bytes, expires: Option<Instant>) {
        Db::one(self).with(&key.clone(), |m| m.insert(key, Entry { value, expires }));
    }

    pub fn del(&self, key: &[u8]) -> bool {
        Db::one(self).with(key, |m| m.remove(key).is_some())
    }

    pub fn flush(&self) {
        for i in 0..SHARDS {
            self.lock(i).clear();
        }
    }
}

/// The store as one command sees it: either each shard locked for the one operation that
/// needs it, or every shard locked at once (in index order, so two such views never
/// deadlock) for a transaction or a multi-key write.
pub struct Db<'a> {
    kv: &'a Kv,
    /// Every shard's guard, or none.
    held: Vec<MutexGuard<'a, Map>>,
}

impl<'a> Db<'a> {
    /// Locks shards one operation at a time.
    #[inline]
    fn one(kv: &'a Kv) -> Self {
        Db {
            kv,
            held: Vec::new(),
        }
    }

    /// Locks every shard, until dropped.
    fn all(kv: &'a Kv) -> Self {
        Db {
            kv,
            held: (0..SHARDS).map(|i| kv.lock(i)).collect(),
        }
    }

    fn holds_all(&self) -> bool {
        !self.held.is_empty()
    }

    /// Runs `f` on the shard of `key`.
    #[inline]
    fn with<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Map) -> R) -> R {
        self.shard(locate(key).0, f)
    }

    #[inline]
    fn shard<R>(&mut self, i: usize, f: impl FnOnce(&mut Map) -> R) -> R {
        if self.held.is_empty() {
            f(&mut self.kv.lock(i))
        } else {
            f(&mut self.held[i])
        }
    }

    /// The live value of `key`; removes it if it has expired.
    #[inline]
    fn get(&mut self, key: &[u8], now: Instant) -> Option<Bytes> {
        self.with(key, |m| match m.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        })
    }

    /// Stores copies of `key` and `value` (the key only if it is new). A request's `Bytes`
    /// are views into the connection's read buffer: stored as they are, they would keep the
    /// whole buffer alive for as long as any key or value read from it lives.
    #[inline]
    fn set_copy(&mut self, key: &[u8], value: &[u8], expires: Option<Instant>) {
        let value = Bytes::copy_from_slice(value);
        self.with(key, |m| match m.get_mut(key) {
            Some(entry) => *entry = Entry { value, expires },
            None => {
                m.insert(Bytes::copy_from_slice(key), Entry { value, expires });
            }
        })
    }
}

/// One connection's state.
#[derive(Debug, Default)]
struct Conn {
    id: u64,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    /// 2 or 3: what the last successful `HELLO` asked for.
    protocol: u8,
    /// The commands of an open `MULTI`, and whether one was refused (`EXEC` then aborts).
    queued: Vec<Frame>,
    /// The elements and bytes of `queued`, bounded like its length.
    queued_elements: usize,
    queued_bytes: usize,
    failed: bool,
}

/// One connection's view of the store: a `Service<Frame>` that is always ready and answers
/// every command at once (its future completes on the first poll). Make one per connection:
/// it holds that connection's transaction, name and protocol (a clone is a new connection).
#[derive(Debug)]
pub struct KvService {
    kv: Kv,
    in_multi: Cell<bool>,
    conn: RefCell<Conn>,
}

impl KvService {
    pub fn new(kv: Kv) -> Self {
        let id = kv.shared.next_client.fetch_add(1, Ordering::Relaxed);
        kv.shared.clients.fetch_add(1, Ordering::Relaxed);
        KvService {
            kv,
            in_multi: Cell::new(false),
            conn: RefCell::new(Conn {
                id,
                protocol: 2,
                ..Conn::default()
            }),
        }
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
        // GET and SET without options, outside a transaction, first: matched on the name
        // upper-cased into a stack buffer, byte by byte (a memcpy call costs more than the
        // copy), straight on the store.
        let n = args.len();
        let mut buf = [0u8; 3];
        if name.len() == 3 && (n == 2 || n == 3) && !self.in_multi.get() {
            for (u, b) in buf.iter_mut().zip(name.iter()) {
                *u = b.to_ascii_uppercase();
            }
            match (&buf, n) {
                (b"GET", 2) => {
                    // A `match`, not `map_or`: that would build and drop a `Frame::Null`.
                    return match self.kv.get(text(&args[1]), now) {
                        Some(value) => Frame::Bulk(value),
                        None => Frame::Null,
                    };
                }
                (b"SET", 3) => {
                    self.kv.set_copy(text(&args[1]), text(&args[2]), None);
                    return Frame::ok();
                }
                _ => {}
            }
        }
        self.execute_other(args, now)
    }

    /// Every other command, and every command of a transaction.
    #[inline(never)]
    fn execute_other(&self, args: &[Frame], now: Instant) -> Frame {
        let mut buf = [0u8; 16];
        let name = upper(text(&args[0]), &mut buf);
        if self.in_multi.get() {
            return self.in_transaction(name, args, now);
        }
        self.run(name, args, &mut Db::one(&self.kv), now)
    }

    /// Runs one command against `db`.
    fn run(&self, name: &[u8], args: &[Frame], db: &mut Db<'_>, now: Instant) -> Frame {
        if let Err(refusal) = connection::check(name, args) {
            return refusal;
        }
        match name {
            b"MULTI" => {
                self.in_multi.set(true);
                Frame::ok()
            }
            b"EXEC" => Frame::error("ERR EXEC without MULTI"),
            b"DISCARD" => Frame::error("ERR DISCARD without MULTI"),
            b"WATCH" => Frame::error(
                "ERR WATCH is not supported by this server: its transactions are applied \
                 atomically, without optimistic locking",
            ),
            b"UNWATCH" => Frame::ok(),
            b"RESET" => {
                self.reset();
                Frame::Simple(Bytes::from_static(b"RESET"))
            }
            b"MSET" | b"MSETNX" if !db.holds_all() => {
                commands::run(name, args, &mut Db::all(&self.kv), now)
            }
            _ => match connection::run(self, name, args, db) {
                Some(reply) => reply,
                None => commands::run(name, args, db, now),
            },
        }
    }

    /// A command between `MULTI` and `EXEC`: queued if it is one we know with a valid number
    /// of arguments, else refused (and `EXEC` then aborts), as redis does.
    fn in_transaction(&self, name: &[u8], args: &[Frame], now: Instant) -> Frame {
        match name {
            b"EXEC" => return self.exec(now),
            b"DISCARD" => {
                self.discard();
                return Frame::ok();
            }
            b"MULTI" => return Frame::error("ERR MULTI calls can not be nested"),
            b"WATCH" => return Frame::error("ERR WATCH inside MULTI is not allowed"),
            // Its reply (`QUEUED`) would switch the codec's protocol at once, and the
            // connection's state only at EXEC: refused, and the transaction with it.
            b"HELLO" => {
                self.conn.borrow_mut().failed = true;
                return Frame::error("ERR HELLO inside MULTI is not allowed by this server");
            }
            b"RESET" | b"QUIT" => return self.run(name, args, &mut Db::one(&self.kv), now),
            _ => {}
        }
        let mut conn = self.conn.borrow_mut();
        if let Err(refusal) = connection::check(name, args) {
            conn.failed = true;
            return refusal;
        }
        let bytes: usize = args.iter().map(|a| text(a).len()).sum();
        if conn.queued.len() >= MAX_QUEUED
            || conn.queued_elements + args.len() > MAX_QUEUED_ELEMENTS
            || conn.queued_bytes + bytes > MAX_QUEUED_BYTES
        {
            conn.failed = true;
            return Frame::error(format!(
                "ERR a transaction may queue at most {MAX_QUEUED} commands, \
                 {MAX_QUEUED_ELEMENTS} elements and {MAX_QUEUED_BYTES} bytes"
            ));
        }
        conn.queued_elements += args.len();
        conn.queued_bytes += bytes;
        conn.queued.push(Frame::Array(args.to_vec()));
        Frame::Simple(Bytes::from_static(b"QUEUED"))
    }

    /// Runs the queued commands with every shard locked.
    fn exec(&self, now: Instant) -> Frame {
        let (queued, failed) = {
            let mut conn = self.conn.borrow_mut();
            conn.queued_elements = 0;
            conn.queued_bytes = 0;
            (
                std::mem::take(&mut conn.queued),
                std::mem::take(&mut conn.failed),
            )
        };
        self.in_multi.set(false);
        if failed {
            return Frame::error("EXECABORT Transaction discarded because of previous errors.");
        }
        let mut db = Db::all(&self.kv);
        let replies = queued
            .iter()
            .map(|cmd| {
                let Frame::Array(args) = cmd else {
                    unreachable!("queued as arrays")
                };
                let mut buf = [0u8; 16];
                let name = upper(text(&args[0]), &mut buf);
                self.run(name, args, &mut db, now)
            })
            .collect();
        Frame::Array(replies)
    }

    fn discard(&self) {
        let mut conn = self.conn.borrow_mut();
        conn.queued = Vec::new();
        conn.queued_elements = 0;
        conn.queued_bytes = 0;
        conn.failed = false;
        self.in_multi.set(false);
    }

    /// `RESET`: no transaction, no name, RESP2 (the codec switches back by itself).
    fn reset(&self) {
        self.discard();
        let mut conn = self.conn.borrow_mut();
        conn.name = None;
        conn.protocol = 2;
    }
}

impl Clone for KvService {
    /// A new connection to the same store.
    fn clone(&self) -> Self {
        KvService::new(self.kv.clone())
    }
}

impl Drop for KvService {
    fn drop(&mut self) {
        self.kv.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `name` upper-cased into `buf`, byte by byte (a memcpy call costs more than the copy); the
/// empty name, which no command has, when it is longer than any command's.
#[inline]
fn upper<'b>(name: &[u8], buf: &'b mut [u8; 16]) -> &'b [u8] {
    if name.len() > buf.len() {
        return b"";
    }
    for (u, b) in buf.iter_mut().zip(name.iter()) {
        *u = b.to_ascii_uppercase();
    }
    &buf[..name.len()]
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
        let reply = self.execute(&cmd);
        drop_command(cmd);
        Ok(reply)
    }
}

/// Drops a request, its bulk strings without a call each into `Frame`'s drop glue (which,
/// with RESP3's nested types, is no longer inlined into the loop over an array's elements).
#[inline]
fn drop_command(cmd: Frame) {
    if let Frame::Array(items) = cmd {
        for item in items {
            match item {
                Frame::Bulk(bytes) => drop(bytes),
                other => drop(other),
            }
        }
    }
}
