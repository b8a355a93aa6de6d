//! etcd discovery: a cluster's endpoints are the keys under a prefix in etcd, and a watch
//! applies their changes live. This is the path for when one machine is not enough: the
//! endpoints of a real cluster live in a real registry, where backends register themselves.
//!
//! It speaks etcd's v3 JSON gateway over our own HTTP client ([`sheave_http::Client`]):
//!
//! 1. `POST /v3/kv/range` with `key` = the prefix and `range_end` = the prefix plus one (every
//!    key under it): each key `PREFIX NAME` with the value `ADDRESS [weight=N]` (the
//!    [module's syntax](super) without `name=`: the key names the endpoint) is endpoint
//!    `NAME`. The stream yields the difference from what it knew.
//! 2. `POST /v3/watch` from the range's revision plus one: a response that never ends, one
//!    JSON object per batch of events; a `PUT` inserts (or changes) an endpoint, a `DELETE`
//!    removes it, as each batch arrives.
//! 3. When the watch ends or fails (etcd restarted, the revision compacted, nothing heard for
//!    [`watch_idle`](Etcd::watch_idle) though progress notices were asked for), it waits a
//!    [backoff](Etcd::backoff), moves to the next etcd member, and goes back to 1: the
//!    re-range yields only what changed meanwhile. While etcd is away the last set stays.
//!
//! Keys and values are base64 in the gateway's JSON; a small codec here does it. Every read is
//! bounded: a range response by [`max_range`](Etcd::max_range), a watch message by
//! [`max_message`](Etcd::max_message). A key whose name or value is not an endpoint is
//! logged and treated as absent.
//!
//! The example needs a running etcd, so it is compiled but not run (`no_run`); the
//! integration test `proxy/tests/etcd.rs` runs the same against a real one:
//!
//! ```no_run
//! use futures::StreamExt;
//! use sheave_middleware::discover::Change;
//! use sheave_proxy::discovery::{etcd, Etcd};
//! use std::time::Duration;
//!
//! let rt = sheave_core::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let registry = "127.0.0.1:2379".parse().unwrap();
//!     // A backend registers itself (etcdctl put /services/web/a "10.0.0.1:8080" does the same).
//!     etcd::put(registry, "/services/web/a", "10.0.0.1:8080 weight=2").await.unwrap();
//!     let mut changes = Etcd::new(vec![registry], "/services/web/")
//!         .request_timeout(Duration::from_secs(2))
//!         .build()
//!         .unwrap();
//!     match changes.next().await {
//!         Some(Change::Insert(name, endpoint)) => println!("{name} is at {}", endpoint.address),
//!         other => println!("{other:?}"),
//!     }
//! });
//! ```

use super::{Endpoint, Endpoints, default_name, parse_endpoint, plain_name};
use bytes::Bytes;
use futures::Stream;
use futures::stream::LocalBoxStream;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Deserializer};
use sheave_core::time;
use sheave_http::{Body, Client};
use sheave_middleware::balance::Backoff;
use sheave_middleware::discover::Change;
use sheave_service::ServiceExt;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The default bound on one request to etcd (connect, answer, and a watch's `created`): 5 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on a range response: 16 MiB.
pub const DEFAULT_MAX_RANGE: usize = 16 * 1024 * 1024;
/// The default bound on one watch message (one batch of events): 4 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// The default longest silence on a watch before it is re-made: 15 min (etcd sends a
/// progress notice to an idle watcher every 10 min by default).
pub const DEFAULT_WATCH_IDLE: Duration = Duration::from_secs(15 * 60);

/// Configures an etcd discovery source; [`build`](Etcd::build) gives the stream.
#[derive(Debug, Clone)]
pub struct Etcd {
    members: Vec<SocketAddr>,
    prefix: String,
    request_timeout: Duration,
    backoff: Backoff,
    max_range: usize,
    max_message: usize,
    watch_idle: Duration,
}

/// Why an etcd request failed, or a source was not built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdError {
    reason: String,
}

impl EtcdError {
    fn new(reason: impl Into<String>) -> EtcdError {
        EtcdError {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for EtcdError {}

impl Etcd {
    /// The endpoints under `prefix`, from the etcd `members` (client URLs' `host:port`;
    /// tried in turn). Defaults: [`DEFAULT_REQUEST_TIMEOUT`], a backoff of 100 ms doubling
    /// to 5 s, [`DEFAULT_MAX_RANGE`], [`DEFAULT_MAX_MESSAGE`], [`DEFAULT_WATCH_IDLE`].
    pub fn new(members: Vec<SocketAddr>, prefix: impl Into<String>) -> Etcd {
        Etcd {
            members,
            prefix: prefix.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5)),
            max_range: DEFAULT_MAX_RANGE,
            max_message: DEFAULT_MAX_MESSAGE,
            watch_idle: DEFAULT_WATCH_IDLE,
        }
    }

    /// How long one request may take: connecting, a range's whole answer, a watch's
    /// `created` confirmation.
    pub fn request_timeout(mut self, timeout: Duration) -> Etcd {
        self.request_timeout = timeout;
        self
    }

    /// The wait before reconnecting after a failure, growing with consecutive failures.
    pub fn backoff(mut self, backoff: Backoff) -> Etcd {
        self.backoff = backoff;
        self
    }

    /// The largest range response read, in bytes; a larger one is a failure (retried).
    pub fn max_range(mut self, bytes: usize) -> Etcd {
        self.max_range = bytes;
        self
    }

    /// The largest watch message buffered, in bytes; a larger one ends the watch (and the
    /// source re-ranges).
    pub fn max_message(mut self, bytes: usize) -> Etcd {
        self.max_message = bytes;
        self
    }

    /// The longest a watch may stay silent before it is re-made.
    pub fn watch_idle(mut self, idle: Duration) -> Etcd {
        self.watch_idle = idle;
        self
    }

    /// The discovery stream. Refused without a member, or with a zero timeout. It may be
    /// built on any thread; it must be polled on a sheave runtime thread.
    pub fn build(self) -> Result<EtcdDiscovery, EtcdError> {
        if self.members.is_empty() {
            return Err(EtcdError::new("etcd discovery needs at least one member"));
        }
        if self.request_timeout.is_zero() || self.watch_idle.is_zero() {
            return Err(EtcdError::new(
                "etcd discovery: request_timeout and watch_idle must be longer than zero",
            ));
        }
        let description = format!("{} under {:?}", members(&self.members), self.prefix);
        let worker = Worker {
            clients: self.members.iter().map(|&m| client(m, &self)).collect(),
            config: self,
            member: 0,
            known: Endpoints::new(),
            failures: 0,
            watch: None,
            queued: VecDeque::new(),
        };
        let changes = futures::stream::unfold(worker, |mut worker| async move {
            let change = worker.next().await;
            Some((change, worker))
        });
        Ok(EtcdDiscovery {
            description,
            changes: Box::pin(changes),
        })
    }
}

/// The stream of an [`Etcd`] source: never ends; see the [module](self).
pub struct EtcdDiscovery {
    description: String,
    changes: LocalBoxStream<'static, Change<String, Endpoint>>,
}

impl fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("source", &self.description)
            .finish_non_exhaustive()
    }
}

impl Stream for EtcdDiscovery {
    type Item = Change<String, Endpoint>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes.as_mut().poll_next(cx)
    }
}

/// Puts `key` = `value` in the etcd at `member` (how a backend registers itself, and how the
/// tests change the registry). Must run on a sheave runtime thread.
pub async fn put(member: SocketAddr, key: &str, value: &str) -> Result<(), EtcdError> {
    let body =
        serde_json::json!({ "key": encode(key.as_bytes()), "value": encode(value.as_bytes()) });
    let client = Client::<Full<Bytes>>::builder().build(member);
    let response = post(&client, "/v3/kv/put", body, DEFAULT_REQUEST_TIMEOUT).await?;
    read_all(response, 64 * 1024).await.map(drop)
}

/// Deletes `key` from the etcd at `member`. Must run on a sheave runtime thread.
pub async fn delete(member: SocketAddr, key: &str) -> Result<(), EtcdError> {
    let body = serde_json::json!({ "key": encode(key.as_bytes()) });
    let client = Client::<Full<Bytes>>::builder().build(member);
    let response = post(&client, "/v3/kv/deleterange", body, DEFAULT_REQUEST_TIMEOUT).await?;
    read_all(response, 64 * 1024).await.map(drop)
}

fn members(members: &[SocketAddr]) -> String {
    let names: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    names.join(",")
}

fn client(member: SocketAddr, config: &Etcd) -> Client<Full<Bytes>> {
    // Two connections: the watch holds one for as long as it lasts, a range needs the other.
    // The body bound is ours (per message), not the client's: a watch's body never ends.
    Client::<Full<Bytes>>::builder()
        .pool_size(2)
        .connect_timeout(config.request_timeout)
        .max_response_body(u64::MAX)
        .build(member)
}

/// The state of a source between the items it yields.
struct Worker {
    config: Etcd,
    clients: Vec<Client<Full<Bytes>>>,
    /// The member in use: the next one after a failure.
    member: usize,
    known: Endpoints,
    /// Failures in a row, for the backoff.
    failures: u32,
    watch: Option<Watch>,
    queued: VecDeque<Change<String, Endpoint>>,
}

impl Worker {
    async fn next(&mut self) -> Change<String, Endpoint> {
        loop {
            if let Some(change) = self.queued.pop_front() {
                return change;
            }
            self.step().await;
        }
    }

    /// One step: a resync (range, then a new watch), or one watch message applied.
    async fn step(&mut self) {
        let addr = self.clients[self.member].addr();
        let Some(watch) = self.watch.as_mut() else {
            if self.failures > 0 {
                time::sleep(self.config.backoff.delay(self.failures)).await;
            }
            match self.resync().await {
                Ok(revision) => {
                    if self.failures > 0 {
                        log::info!(
                            "etcd discovery: {addr} answers again; resynced at revision {revision}"
                        );
                    }
                    self.failures = 0;
                }
                Err(e) => {
                    let level = match self.failures {
                        0 => log::Level::Warn,
                        _ => log::Level::Debug,
                    };
                    log::log!(
                        level,
                        "etcd discovery: {addr}: {e}; keeping the last endpoints"
                    );
                    self.failures = self.failures.saturating_add(1);
                    self.member = (self.member + 1) % self.clients.len();
                }
            }
            return;
        };
        let message = watch
            .next(self.config.watch_idle, self.config.max_message)
            .await;
        match message {
            Ok(result) if result.canceled => {
                log::warn!(
                    "etcd discovery: {addr} canceled the watch ({}, compacted at {}); re-ranging",
                    result.cancel_reason,
                    result.compact_revision
                );
                self.watch = None;
                self.failures = 1;
            }
            Ok(result) => {
                for event in &result.events {
                    self.apply(event);
                }
            }
            Err(e) => {
                log::warn!("etcd discovery: the watch on {addr} ended: {e}; re-ranging");
                self.watch = None;
                self.failures = 1;
            }
        }
    }

    /// Ranges over the prefix, queues the difference, and starts a watch after it.
    async fn resync(&mut self) -> Result<i64, EtcdError> {
        let client = &self.clients[self.member];
        let (key, range_end) = (
            self.config.prefix.as_bytes(),
            range_end(&self.config.prefix),
        );
        let key = match key.is_empty() {
            true => &[0][..], // with range_end "\0": every key
            false => key,
        };
        let timeout = self.config.request_timeout;
        let range = serde_json::json!({ "key": encode(key), "range_end": encode(&range_end) });
        let max_range = self.config.max_range;
        let answer = time::timeout(timeout, async {
            let body = post(client, "/v3/kv/range", range, timeout).await?;
            read_all(body, max_range).await
        })
        .await
        .map_err(|_| EtcdError::new(format!("no range answer within {timeout:?}")))??;
        let answer: RangeResponse = serde_json::from_slice(&answer)
            .map_err(|e| EtcdError::new(format!("a range answer that is not etcd's: {e}")))?;
        let mut next = Endpoints::new();
        for kv in &answer.kvs {
            if let Some((name, Some(endpoint))) = self.entry(kv, false) {
                next.insert(name, endpoint);
            }
        }
        super::diff(&mut self.known, next, &mut self.queued);
        let revision = answer.header.revision;

        let watch = serde_json::json!({ "create_request": {
            "key": encode(key),
            "range_end": encode(&range_end),
            "start_revision": revision + 1,
            "progress_notify": true,
        }});
        let mut watch = time::timeout(timeout, async {
            let body = post(client, "/v3/watch", watch, timeout).await?;
            let mut watch = Watch {
                body,
                buf: Vec::new(),
                results: VecDeque::new(),
            };
            let first = watch.next(timeout, self.config.max_message).await?;
            match first.created {
                true => Ok(watch),
                false => Err(EtcdError::new("the watch's first message is not `created`")),
            }
        })
        .await
        .map_err(|_| EtcdError::new(format!("no watch created within {timeout:?}")))??;
        // A `created` message carries no events; anything after it in the same read is kept.
        watch.results.retain(|r| !r.events.is_empty() || r.canceled);
        self.watch = Some(watch);
        Ok(revision)
    }

    /// Applies one watch event to the known set, queueing the change it makes.
    fn apply(&mut self, event: &Event) {
        // PUT is the default type, so the gateway leaves it out.
        let deleted = event.kind == "DELETE";
        let Some((name, endpoint)) = self.entry(&event.kv, deleted) else {
            return;
        };
        match endpoint {
            Some(endpoint) => {
                if self.known.get(&name) != Some(&endpoint) {
                    self.known.insert(name.clone(), endpoint);
                    self.queued.push_back(Change::Insert(name, endpoint));
                }
            }
            None => {
                if self.known.remove(&name).is_some() {
                    self.queued.push_back(Change::Remove(name));
                }
            }
        }
    }

    /// A key-value's endpoint name, and its endpoint (`None` when `deleted`, or for a value
    /// that is not one, logged). `None` altogether for a key that names no endpoint.
    fn entry(&self, kv: &Kv, deleted: bool) -> Option<(String, Option<Endpoint>)> {
        let prefix = &self.config.prefix;
        let key = match decode(&kv.key).map(String::from_utf8) {
            Some(Ok(key)) => key,
            _ => {
                log::warn!("etcd discovery: a key under {prefix:?} is not base64 UTF-8; ignored");
                return None;
            }
        };
        let name = key.strip_prefix(prefix.as_str())?.to_string();
        if let Err(why) = plain_name(&name) {
            log::warn!("etcd discovery: key {key:?} ignored: its name {why}");
            return None;
        }
        let value = decode(&kv.value).and_then(|v| String::from_utf8(v).ok());
        let endpoint = match value.as_deref().map(parse_endpoint) {
            _ if deleted => None,
            Some(Ok(Some((given, endpoint)))) if given == default_name(endpoint.address) => {
                Some(endpoint)
            }
            Some(Ok(Some(_))) => {
                log::warn!("etcd discovery: {key:?}: name= is not for values (the key names it)");
                None
            }
            Some(Ok(None)) => {
                log::warn!("etcd discovery: {key:?} has no address");
                None
            }
            Some(Err(why)) => {
                log::warn!("etcd discovery: {key:?}: {why}");
                None
            }
            None => {
                log::warn!("etcd discovery: {key:?}: the value is not base64 UTF-8");
                None
            }
        };
        Some((name, endpoint))
    }
}

/// A watch's response: a body that never ends, of JSON objects one after another.
struct Watch {
    body: Body,
    /// Bytes of a message not complete yet; at most `max_message`.
    buf: Vec<u8>,
    results: VecDeque<WatchResult>,
}

impl Watch {
    /// The next watch result; an error ends the watch.
    async fn next(&mut self, idle: Duration, max_message: usize) -> Result<WatchResult, EtcdError> {
        loop {
            if let Some(result) = self.results.pop_front() {
                return Ok(result);
            }
            let frame = time::timeout(idle, self.body.frame())
                .await
                .map_err(|_| EtcdError::new(format!("nothing heard for {idle:?}")))?;
            let frame = match frame {
                None => return Err(EtcdError::new("the stream ended")),
                Some(Err(e)) => return Err(EtcdError::new(format!("reading the stream: {e}"))),
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            self.buf.extend_from_slice(&data);
            if data.contains(&b'}') {
                split(&mut self.buf, &mut self.results, max_message)?;
            }
            if self.buf.len() > max_message {
                return Err(EtcdError::new(format!(
                    "a watch message over {max_message} bytes"
                )));
            }
        }
    }
}

/// Takes every complete JSON message off the front of `buf`; one over `max` bytes is an
/// error (the rest of `buf`, not complete yet, is bounded by the caller).
fn split(
    buf: &mut Vec<u8>,
    results: &mut VecDeque<WatchResult>,
    max: usize,
) -> Result<(), EtcdError> {
    let mut messages = serde_json::Deserializer::from_slice(buf).into_iter::<WatchMessage>();
    let mut used = 0;
    loop {
        match messages.next() {
            Some(Ok(message)) => {
                let end = messages.byte_offset();
                if end - used > max {
                    return Err(EtcdError::new(format!("a watch message over {max} bytes")));
                }
                used = end;
                if let Some(error) = message.error {
                    return Err(EtcdError::new(format!(
                        "etcd says: {} (grpc code {})",
                        error.message, error.grpc_code
                    )));
                }
                results.extend(message.result);
            }
            Some(Err(e)) if e.is_eof() => break, // the rest is still on its way
            Some(Err(e)) => {
                return Err(EtcdError::new(format!(
                    "a watch message that is not etcd's: {e}"
                )));
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used);
    Ok(())
}

/// Sends a JSON request; gives the body of a `200 OK`.
async fn post(
    client: &Client<Full<Bytes>>,
    path: &str,
    json: serde_json::Value,
    timeout: Duration,
) -> Result<Body, EtcdError> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .map_err(|e| EtcdError::new(e.to_string()))?;
    let response = time::timeout(timeout, client.oneshot(request))
        .await
        .map_err(|_| EtcdError::new(format!("POST {path}: no answer within {timeout:?}")))?
        .map_err(|e| EtcdError::new(format!("POST {path}: {e}")))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        let body = read_all(response.into_body(), 1024)
            .await
            .unwrap_or_default();
        return Err(EtcdError::new(format!(
            "POST {path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(response.into_body())
}

/// A whole body, refused past `max` bytes.
async fn read_all(mut body: Body, max: usize) -> Result<Vec<u8>, EtcdError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| EtcdError::new(format!("reading an answer: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max {
                return Err(EtcdError::new(format!("an answer over {max} bytes")));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The end of the range of keys under `prefix`: the prefix with its last byte below 0xff
/// incremented (and what follows it dropped); `"\0"` (no end) when there is none.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded (what etcd's gateway takes for `bytes` fields).
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char),
                false => out.push('='),
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` for anything else.
fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    match bits {
        0 => Some(out),
        _ if acc == 0 && bits < 6 => Some(out), // the zero bits that pad the last byte
        _ => None,
    }
}

/// etcd's int64s are JSON strings (proto3's mapping); numbers are taken too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Text(text) => text.parse().map_err(serde::de::Error::custom),
        Int::Number(n) => Ok(n),
    }
}

#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Debug, Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Debug, Default, Deserialize)]
struct Kv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<GatewayError>,
}

#[derive(Debug, Deserialize)]
struct GatewayError {
    #[serde(default)]
    grpc_code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct WatchResult {
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    kv: Kv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_what_is_not() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("/services/web/", "L3NlcnZpY2VzL3dlYi8="),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(decode("Zm9v!"), None);
        assert_eq!(decode("Z"), None, "six bits are no byte");
    }

    #[test]
    fn the_range_end_is_the_prefix_plus_one() {
        assert_eq!(range_end("/svc/"), b"/svc0");
        assert_eq!(range_end("a\u{7f}"), b"a\x80");
        assert_eq!(range_end(""), b"\0");
    }

    #[test]
    fn watch_messages_are_split_wherever_the_stream_cuts_them() {
        let stream = concat!(
            r#"{"result":{"header":{"revision":"7"},"created":true}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"8"},"events":[{"kv":{"key":"YQ==","value":"Yg=="}},"#,
            r#"{"type":"DELETE","kv":{"key":"Yw==","mod_revision":"8"}}]}}"#,
            "\n",
        )
        .as_bytes();
        for cut in 0..stream.len() {
            let (mut buf, mut results) = (Vec::new(), VecDeque::new());
            buf.extend_from_slice(&stream[..cut]);
            split(&mut buf, &mut results, 1024).unwrap();
            buf.extend_from_slice(&stream[cut..]);
            split(&mut buf, &mut results, 1024).unwrap();
            assert!(buf.iter().all(u8::is_ascii_whitespace), "cut at {cut}");
            assert_eq!(results.len(), 2, "cut at {cut}");
            assert!(results[0].created);
            let kinds: Vec<&str> = results[1].events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["", "DELETE"]);
            assert_eq!(results[1].events[0].kv.value, "Yg==");
        }
    }

    #[test]
    fn a_gateway_error_or_garbage_ends_the_watch() {
        let mut results = VecDeque::new();
        let mut buf = br#"{"error":{"grpc_code":9,"message":"etcdserver: mvcc: required revision has been compacted"}}"#.to_vec();
        let e = split(&mut buf, &mut results, 1024).unwrap_err();
        assert!(e.to_string().contains("compacted"), "{e}");
        let mut buf = b"<html>".to_vec();
        assert!(split(&mut buf, &mut results, 1024).is_err());
        let mut buf = br#"{"result":{"events":[]}} {"result":{"events":[]}}"#.to_vec();
        split(&mut buf, &mut results, 26).unwrap();
        assert_eq!(results.len(), 2, "each message is under its bound");
        let mut buf = br#"{"result":{"events":[]}}"#.to_vec();
        let e = split(&mut buf, &mut results, 23).unwrap_err();
        assert_eq!(e.to_string(), "a watch message over 23 bytes");
    }

    #[test]
    fn a_source_needs_a_member() {
        let e = Etcd::new(vec![], "/x/").build().unwrap_err();
        assert_eq!(e.to_string(), "etcd discovery needs at least one member");
    }
}
