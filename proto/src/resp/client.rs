//! A typed redis client: `get`, `set`, `incr`, ... over a pipelined [`dispatch::ClientConnection`], with
//! the `HELLO` handshake and RESP3 push frames.

use super::{Frame, Protocol, PushHandle, Pushes, RespCodec};
use crate::dispatch::{self, ClientConfig, Connector, Pipeline};
use bytes::Bytes;
use futures::future::Either;
use sheave_service::{Error, ErrorKind, NewService, Service, TryReady};
use std::net::SocketAddr;
use std::time::Duration;

/// A redis client over one pipelined connection. Concurrent calls share the connection and are
/// written in batches; every helper is `ready` + `call` on the inner [`dispatch::ClientConnection`].
///
/// It is also a `Service<Frame>` (any command, raw reply), so middleware can wrap it. The
/// helpers turn a redis error reply into an [`ErrorKind::Service`] error carrying redis's
/// message, and an unexpected reply type into [`ErrorKind::Protocol`].
///
/// [`connect`](Client::connect) speaks RESP2, as a connection starts.
/// [`connect_hello`](Client::connect_hello) asks for RESP3 with `HELLO 3` (optionally with
/// `AUTH` and `SETNAME`), and falls back to RESP2 (then `AUTH` and `CLIENT SETNAME` on their
/// own) when the server refuses it (`NOPROTO`, or a server without `HELLO`). Either way the
/// codec reads every RESP3 type. RESP3 push frames (pub/sub messages, client-tracking
/// invalidations) are never taken for a reply: they go to the [`Pushes`] stream of
/// [`pushes`](Client::pushes), or are dropped and counted
/// ([`dropped_pushes`](Client::dropped_pushes)) while nobody subscribes.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> Result<(), sheave_service::Error> {
/// use sheave_proto::resp::Client;
///
/// let redis = Client::connect("127.0.0.1:6379".parse().unwrap()).await?;
/// redis.set("greeting", "hello").await?;
/// assert_eq!(redis.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// assert_eq!(redis.incr("visits").await?, 1);
///
/// // RESP3, with a name; falls back to RESP2 on a server that refuses it.
/// use sheave_proto::resp::{Hello, Protocol};
/// let redis3 = Client::connect_hello(
///     "127.0.0.1:6379".parse().unwrap(),
///     Default::default(),
///     Hello::new().name("reporting"),
/// )
/// .await?;
/// assert_eq!(redis3.protocol(), Protocol::Resp3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: dispatch::ClientConnection<RespCodec, Pipeline>,
    pushes: PushHandle,
    protocol: Protocol,
}

/// What [`Client::connect_hello`] sends: `HELLO 3`, with `AUTH` and `SETNAME` if set.
#[derive(Debug, Clone, Default)]
pub struct Hello {
    auth: Option<(Bytes, Bytes)>,
    name: Option<Bytes>,
}

impl Hello {
    /// `HELLO 3` alone.
    pub fn new() -> Self {
        Hello::default()
    }

    /// Authenticates as `user` with `password`.
    pub fn auth(mut self, user: impl Into<Bytes>, password: impl Into<Bytes>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Names the connection (`CLIENT GETNAME`, `CLIENT LIST` show it).
    pub fn name(mut self, name: impl Into<Bytes>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Client {
    /// Wraps a pipelined RESP client that speaks RESP2. Its push frames, if any, are matched
    /// to callers unless its codec came from [`RespCodec::divert_pushes`]: then use
    /// [`from_parts`](Client::from_parts).
    pub fn new(inner: dispatch::ClientConnection<RespCodec, Pipeline>) -> Self {
        let (_, pushes) = RespCodec::new().divert_pushes();
        Client::from_parts(inner, pushes, Protocol::Resp2)
    }

    /// Wraps a pipelined RESP client whose codec diverts its pushes to `pushes`, and which
    /// speaks `protocol`.
    pub fn from_parts(
        inner: dispatch::ClientConnection<RespCodec, Pipeline>,
        pushes: PushHandle,
        protocol: Protocol,
    ) -> Self {
        Client {
            inner,
            pushes,
            protocol,
        }
    }

    /// Connects to `addr` with `config` and asks for RESP3 with `hello`; falls back to RESP2
    /// when the server refuses RESP3. Fails if the server refuses the authentication or the
    /// name.
    pub async fn connect_hello(
        addr: SocketAddr,
        config: ClientConfig,
        hello: Hello,
    ) -> Result<Self, Error> {
        let mut client = Client::connect_with(addr, config).await?;
        client.protocol = client.handshake(&hello).await?;
        Ok(client)
    }

    async fn handshake(&self, hello: &Hello) -> Result<Protocol, Error> {
        let mut parts: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some((user, password)) = &hello.auth {
            parts.extend([&b"AUTH"[..], user, password]);
        }
        if let Some(name) = &hello.name {
            parts.extend([&b"SETNAME"[..], name]);
        }
        match self.command(Frame::command(parts)).await? {
            Frame::Map(_) => Ok(Protocol::Resp3),
            Frame::Error(msg)
                if msg.starts_with(b"NOPROTO") || msg.starts_with(b"ERR unknown command") =>
            {
                if let Some((user, password)) = &hello.auth {
                    expect_ok(self.run([&b"AUTH"[..], user, password]).await?)?;
                }
                if let Some(name) = &hello.name {
                    expect_ok(self.run([&b"CLIENT"[..], b"SETNAME", name]).await?)?;
                }
                Ok(Protocol::Resp2)
            }
            Frame::Error(msg) | Frame::BlobError(msg) => Err(Error::msg(
                ErrorKind::Service,
                String::from_utf8_lossy(&msg).into_owned(),
            )),
            other => Err(unexpected(&other)),
        }
    }

    /// The protocol the connection speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The connection's push frames, from now on; `None` while another subscription lives.
    pub fn pushes(&self) -> Option<Pushes> {
        self.pushes.subscribe()
    }

    /// Push frames dropped so far: received while nobody subscribed, or while the
    /// subscriber's queue was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.pushes.dropped()
    }

    /// Connects to `addr` with the default [`ClientConfig`].
    pub async fn connect(addr: SocketAddr) -> Result<Self, Error> {
        Client::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to `addr` with `config`.
    pub async fn connect_with(addr: SocketAddr, config: ClientConfig) -> Result<Self, Error> {
        let (codec, pushes) = RespCodec::new().divert_pushes();
        let connector = Connector::pipeline(codec).config(config);
        Ok(Client::from_parts(
            connector.new_service(addr).await?,
            pushes,
            Protocol::Resp2,
        ))
    }

    /// The pipelined client underneath.
    pub fn get_ref(&self) -> &dispatch::ClientConnection<RespCodec, Pipeline> {
        &self.inner
    }

    /// Sends any command and returns the raw reply (an error reply is `Ok(Frame::Error)`).
    ///
    /// Fails with [`ErrorKind::InvalidRequest`], sending nothing, for a frame that is not a command (a
    /// non-empty array of bulk strings) or a command that does not get exactly one reply
    /// (see [`check_command`]): replies are matched to requests in order, and one missing or
    /// extra reply would hand every later caller the previous caller's answer.
    pub async fn command(&self, cmd: Frame) -> Result<Frame, Error> {
        check_command(&cmd)?;
        let permit = Service::<Frame>::ready(&self.inner).await?;
        self.inner.call(permit, cmd).await
    }

    /// Sends a command and turns an error reply into an error.
    async fn run<I>(&self, parts: I) -> Result<Frame, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        match self.command(Frame::command(parts)).await? {
            Frame::Error(msg) => Err(Error::msg(
                ErrorKind::Service,
                String::from_utf8_lossy(&msg).into_owned(),
            )),
            reply => Ok(reply),
        }
    }

    /// `PING`: the status redis answers (`"PONG"`).
    pub async fn ping(&self) -> Result<String, Error> {
        match self.run(["PING"]).await? {
            Frame::Simple(s) | Frame::Bulk(s) => Ok(String::from_utf8_lossy(&s).into_owned()),
            other => Err(unexpected(&other)),
        }
    }

    /// `GET key`: the value, or `None` for a missing key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        bulk_or_null(self.run([&b"GET"[..], key.as_ref()]).await)
    }

    /// `SET key value`.
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
        expect_ok(
            self.run([&b"SET"[..], key.as_ref(), value.as_ref()])
                .await?,
        )
    }

    /// `SET key value PX ttl`: a value that expires (millisecond precision).
    pub async fn set_ex(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let ms = ttl.as_millis().max(1).to_string();
        expect_ok(
            self.run([
                &b"SET"[..],
                key.as_ref(),
                value.as_ref(),
                b"PX",
                ms.as_bytes(),
            ])
            .await?,
        )
    }

    /// `DEL key...`: how many keys were removed.
    pub async fn del<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, Error> {
        integer(self.run(with_name(b"DEL", keys)).await?)
    }

    /// `EXISTS key...`: how many of the keys exist.
    pub async fn exists<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, Error> {
        integer(self.run(with_name(b"EXISTS", keys)).await?)
    }

    /// `INCR key`: the value after the increment.
    pub async fn incr(&self, key: impl AsRef<[u8]>) -> Result<i64, Error> {
        integer(self.run([&b"INCR"[..], key.as_ref()]).await?)
    }

    /// `MGET key...`: each value, `None` where a key is missing.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>, Error> {
        match self.run(with_name(b"MGET", keys)).await? {
            Frame::Array(items) => items.into_iter().map(|f| bulk_or_null(Ok(f))).collect(),
            other => Err(unexpected(&other)),
        }
    }
}

fn with_name<'a, K: AsRef<[u8]>>(name: &'a [u8], keys: &'a [K]) -> Vec<&'a [u8]> {
    std::iter::once(name)
        .chain(keys.iter().map(AsRef::as_ref))
        .collect()
}

fn unexpected(frame: &Frame) -> Error {
    Error::protocol(format!("unexpected reply {frame:?}"))
}

fn expect_ok(frame: Frame) -> Result<(), Error> {
    match frame {
        Frame::Simple(s) if &s[..] == b"OK" => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn integer(frame: Frame) -> Result<i64, Error> {
    match frame {
        Frame::Integer(n) => Ok(n),
        other => Err(unexpected(&other)),
    }
}

fn bulk_or_null(frame: Result<Frame, Error>) -> Result<Option<Bytes>, Error> {
    match frame? {
        Frame::Bulk(b) => Ok(Some(b)),
        Frame::Null => Ok(None),
        other => Err(unexpected(&other)),
    }
}

impl Service<Frame> for Client {
    type Response = Frame;
    type Error = Error;
    type Permit = dispatch::Permit<RespCodec, Pipeline>;

    fn ready(&self) -> impl Future<Output = Result<Self::Permit, Error>> {
        Service::<Frame>::ready(&self.inner)
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        Service::<Frame>::try_ready(&self.inner)
    }

    /// Fails at once, sending nothing, for a frame [`check_command`] rejects.
    fn call(&self, permit: Self::Permit, req: Frame) -> impl Future<Output = Result<Frame, Error>> {
        match check_command(&req) {
            Ok(()) => Either::Left(self.inner.call(permit, req)),
            Err(e) => Either::Right(std::future::ready(Err(e))),
        }
    }
}

/// Whether `cmd` is safe to pipeline on a shared connection: a non-empty array of bulk
/// strings (what redis answers exactly once), and not a command that changes how many
/// replies follow — `SUBSCRIBE` and its kin, `MONITOR`, `SYNC`/`PSYNC`, `CLIENT REPLY`.
/// Anything else (`*0`, a bare bulk string, which redis reads as two inline commands) would
/// shift every later reply onto the wrong caller.
///
/// The error is [`ErrorKind::InvalidRequest`]: nothing was sent, and classifiers do not count
/// it against the endpoint. Allocation-free.
pub fn check_command(cmd: &Frame) -> Result<(), Error> {
    const UNPAIRED: [&[u8]; 9] = [
        b"SUBSCRIBE",
        b"UNSUBSCRIBE",
        b"PSUBSCRIBE",
        b"PUNSUBSCRIBE",
        b"SSUBSCRIBE",
        b"SUNSUBSCRIBE",
        b"MONITOR",
        b"SYNC",
        b"PSYNC",
    ];
    let parts = match cmd {
        Frame::Array(parts)
            if !parts.is_empty() && parts.iter().all(|p| matches!(p, Frame::Bulk(_))) =>
        {
            parts
        }
        _ => {
            return Err(Error::invalid_request(
                "a command is a non-empty array of bulk strings",
            ));
        }
    };
    let arg = |i: usize| match parts.get(i) {
        Some(Frame::Bulk(b)) => &b[..],
        _ => &[][..],
    };
    let name = arg(0);
    let unpaired = UNPAIRED.iter().any(|u| name.eq_ignore_ascii_case(u))
        || (name.eq_ignore_ascii_case(b"CLIENT") && arg(1).eq_ignore_ascii_case(b"REPLY"));
    if unpaired {
        return Err(Error::invalid_request(
            "a command that does not get exactly one reply needs a dedicated connection",
        ));
    }
    Ok(())
}
