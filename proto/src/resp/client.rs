//! A typed redis client: `get`, `set`, `incr`, ... over a pipelined [`dispatch::ClientConnection`].

use super::{Frame, RespCodec};
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
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> Result<(), sheave_service::Error> {
/// use sheave_proto::resp::Client;
///
/// let redis = Client::connect("127.0.0.1:6379".parse().unwrap()).await?;
/// redis.set("greeting", "hello").await?;
/// assert_eq!(redis.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// assert_eq!(redis.incr("visits").await?, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: dispatch::ClientConnection<RespCodec, Pipeline>,
}

impl Client {
    /// Wraps a pipelined RESP client.
    pub fn new(inner: dispatch::ClientConnection<RespCodec, Pipeline>) -> Self {
        Client { inner }
    }

    /// Connects to `addr` with the default [`ClientConfig`].
    pub async fn connect(addr: SocketAddr) -> Result<Self, Error> {
        Client::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to `addr` with `config`.
    pub async fn connect_with(addr: SocketAddr, config: ClientConfig) -> Result<Self, Error> {
        let connector = Connector::pipeline(RespCodec::new()).config(config);
        Ok(Client::new(connector.new_service(addr).await?))
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
