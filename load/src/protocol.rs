//! The protocols `sheave-load` speaks, each as a connection that takes a request *seed* (the
//! random number its placeholders become) and answers with a [`Verdict`].
//!
//! Requests above the balancer are plain `u64` seeds, so a retry or a hedge copies eight
//! bytes, and every protocol shares one stack. Each endpoint's connection turns the seed into
//! the protocol's request ([`Template`] fills in `__rand_int__`) and judges the reply:
//!
//! - `resp`: a command (`GET key:__rand_int__`); an error reply (`-ERR`) is an
//!   [`Verdict::ErrorReply`];
//! - `lines`: a line, which must come back as it went;
//! - `tcp`: `size` bytes of a pattern; `reply_size` bytes back (the same bytes, unless a
//!   reply size was given);
//! - `http1`/`http2`: a request through [`sheave_http::Client`]; the body is read to its
//!   end; a status of 400 or more is an error reply.
//!
//! ```
//! use sheave_load::protocol::Template;
//!
//! let t = Template::new("key:__rand_int__");
//! assert_eq!(t.render(42, Some(1000)), b"key:000000000042");
//! assert_eq!(t.render(42, None), b"key:000000000000"); // no keyspace: always zero
//! assert_eq!(Template::new("GET").render(7, Some(10)), b"GET");
//! ```

use crate::cli::{Config, Protocol as Which};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use sheave_proto::codec::{Decoder, Encoder, LinesCodec};
use sheave_proto::dispatch::ClientConfig;
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{ClientConnection, Connector};
use sheave_service::{Error, NewService, Service};
use std::net::SocketAddr;

/// The placeholder redis-benchmark replaces with a random number.
pub const RAND_INT: &str = "__rand_int__";

/// How an answered request fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The reply the protocol expects.
    Ok,
    /// The server answered with an error (`-ERR`, HTTP 4xx/5xx).
    ErrorReply,
    /// An answer, but not the one asked for (a wrong echo).
    Unexpected,
}

/// A text with `__rand_int__` placeholders, rendered per request.
#[derive(Debug, Clone)]
pub struct Template {
    /// The literal pieces; a placeholder sits between each two.
    pieces: Vec<Vec<u8>>,
}

impl Template {
    /// Parses `text`.
    pub fn new(text: &str) -> Template {
        Template {
            pieces: text
                .split(RAND_INT)
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        }
    }

    /// Whether the text has no placeholder (it renders the same every time).
    pub fn is_constant(&self) -> bool {
        self.pieces.len() == 1
    }

    /// The text with each placeholder replaced by `seed % keyspace` in 12 digits, or by
    /// zeros without a keyspace.
    pub fn render(&self, seed: u64, keyspace: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pieces.iter().map(Vec::len).sum::<usize>() + 12);
        self.render_into(seed, keyspace, &mut out);
        out
    }

    fn render_into(&self, seed: u64, keyspace: Option<u64>, out: &mut Vec<u8>) {
        let n = keyspace.map_or(0, |k| seed % k);
        let mut digits = [b'0'; 12];
        let mut v = n;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(&digits);
            }
            out.extend_from_slice(piece);
        }
    }
}

/// One protocol: how to connect, how to make a request of a seed, how to judge a reply.
pub trait Protocol: 'static {
    /// The protocol's request.
    type Request;
    /// The protocol's reply.
    type Response;
    /// One connection.
    type Conn: Service<Self::Request, Response = Self::Response, Error = Error> + 'static;

    /// How many connections [`connect`](Self::connect) is called for per address, given `-c`
    /// (HTTP/1.1's client pools its own connections: one client holds them all).
    fn connections(&self, flag: usize) -> usize {
        flag
    }

    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Conn, Error>>;

    /// The request for `seed`.
    fn request(&self, seed: u64) -> Result<Self::Request, Error>;

    /// Judges the reply to `seed`'s request (reading what is left of it, for HTTP).
    fn verdict(
        &self,
        seed: u64,
        reply: Self::Response,
    ) -> impl Future<Output = Result<Verdict, Error>>;
}

fn pipeline_config(config: &Config) -> ClientConfig {
    ClientConfig::default()
        .max_in_flight(config.pipeline)
        .connect_timeout(config.connect_timeout)
}

/// RESP replies, decoded by [`RespCodec`]; requests written as given, already encoded.
///
/// A load generator sends one command over and over: encoding it once (or, with
/// placeholders, straight into its bytes) spares a `Vec` of frames and the encoder per
/// request.
#[derive(Debug, Clone, Default)]
pub struct RespWire {
    codec: RespCodec,
}

impl Decoder for RespWire {
    type Item = Frame;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.codec.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.codec.decode_eof(src)
    }
}

impl Encoder<Bytes> for RespWire {
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// RESP: a command template.
#[derive(Debug)]
pub struct Resp {
    connector: Connector<RespWire>,
    args: Vec<Template>,
    /// The encoded command, when it renders the same every time: shared per request.
    constant: Option<Bytes>,
    keyspace: Option<u64>,
}

impl Resp {
    /// From `--command`, `-r` and `-P`; refuses a command that does not get exactly one
    /// reply (`SUBSCRIBE`, `MONITOR`, ...), which would shift every later reply.
    pub fn new(config: &Config) -> Result<Resp, Error> {
        let args: Vec<Template> = config.command.iter().map(|a| Template::new(a)).collect();
        let example = Frame::Array(
            args.iter()
                .map(|t| Frame::Bulk(t.render(0, config.keyspace).into()))
                .collect(),
        );
        sheave_proto::resp::check_command(&example)?;
        let mut resp = Resp {
            connector: Connector::pipeline(RespWire::default()).config(pipeline_config(config)),
            args,
            constant: None,
            keyspace: config.keyspace,
        };
        // Without a keyspace every placeholder is zero: the command never changes.
        if config.keyspace.is_none() || resp.args.iter().all(Template::is_constant) {
            resp.constant = Some(resp.encode(0));
        }
        Ok(resp)
    }

    fn encode(&self, seed: u64) -> Bytes {
        let mut out = Vec::with_capacity(16 + self.args.len() * 32);
        out.extend_from_slice(format!("*{}\r\n", self.args.len()).as_bytes());
        let mut arg = Vec::with_capacity(64);
        for t in &self.args {
            arg.clear();
            t.render_into(seed, self.keyspace, &mut arg);
            out.push(b'$');
            out.extend_from_slice(arg.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&arg);
            out.extend_from_slice(b"\r\n");
        }
        out.into()
    }
}

impl Protocol for Resp {
    type Request = Bytes;
    type Response = Frame;
    type Conn = ClientConnection<RespWire>;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Conn, Error>> {
        self.connector.new_service(addr)
    }

    fn request(&self, seed: u64) -> Result<Bytes, Error> {
        Ok(match &self.constant {
            Some(bytes) => bytes.clone(),
            None => self.encode(seed),
        })
    }

    async fn verdict(&self, _seed: u64, reply: Frame) -> Result<Verdict, Error> {
        Ok(match reply {
            Frame::Error(_) | Frame::BlobError(_) => Verdict::ErrorReply,
            _ => Verdict::Ok,
        })
    }
}

/// Lines, echoed.
#[derive(Debug)]
pub struct Lines {
    connector: Connector<LinesCodec>,
    line: Template,
    keyspace: Option<u64>,
}

impl Lines {
    /// From `--line`, `-r` and `-P`.
    pub fn new(config: &Config) -> Lines {
        Lines {
            connector: Connector::pipeline(LinesCodec::new()).config(pipeline_config(config)),
            line: Template::new(&config.line),
            keyspace: config.keyspace,
        }
    }

    fn text(&self, seed: u64) -> String {
        // A template made of a `String` and digits renders as UTF-8.
        String::from_utf8_lossy(&self.line.render(seed, self.keyspace)).into_owned()
    }
}

impl Protocol for Lines {
    type Request = String;
    type Response = String;
    type Conn = ClientConnection<LinesCodec>;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Conn, Error>> {
        self.connector.new_service(addr)
    }

    fn request(&self, seed: u64) -> Result<String, Error> {
        Ok(self.text(seed))
    }

    async fn verdict(&self, seed: u64, reply: String) -> Result<Verdict, Error> {
        let sent = self.line.render(seed, self.keyspace);
        Ok(if reply.as_bytes() == sent.as_slice() {
            Verdict::Ok
        } else {
            Verdict::Unexpected
        })
    }
}

/// A codec of fixed-size frames: writes what it is given, reads `reply_size` bytes at a time.
#[derive(Debug, Clone, Copy)]
pub struct FixedCodec {
    reply_size: usize,
}

impl FixedCodec {
    /// Replies of `reply_size` bytes.
    pub fn new(reply_size: usize) -> FixedCodec {
        FixedCodec {
            reply_size: reply_size.max(1),
        }
    }
}

impl Decoder for FixedCodec {
    type Item = Bytes;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if src.len() < self.reply_size {
            return Ok(None);
        }
        Ok(Some(src.split_to(self.reply_size).freeze()))
    }
}

impl Encoder<Bytes> for FixedCodec {
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Raw TCP: a byte pattern out, a fixed size back.
#[derive(Debug)]
pub struct Tcp {
    connector: Connector<FixedCodec>,
    pattern: Bytes,
    /// Whether the reply must be the pattern itself.
    echo: bool,
}

impl Tcp {
    /// From `--size` and `--reply-size`.
    pub fn new(config: &Config) -> Tcp {
        let pattern: Vec<u8> = (0..config.size).map(|i| b'a' + (i % 26) as u8).collect();
        let reply = config.reply_size.unwrap_or(config.size);
        Tcp {
            connector: Connector::pipeline(FixedCodec::new(reply)).config(pipeline_config(config)),
            pattern: pattern.into(),
            echo: config.reply_size.is_none(),
        }
    }
}

impl Protocol for Tcp {
    type Request = Bytes;
    type Response = Bytes;
    type Conn = ClientConnection<FixedCodec>;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Conn, Error>> {
        self.connector.new_service(addr)
    }

    fn request(&self, _seed: u64) -> Result<Bytes, Error> {
        Ok(self.pattern.clone())
    }

    async fn verdict(&self, _seed: u64, reply: Bytes) -> Result<Verdict, Error> {
        Ok(if !self.echo || reply == self.pattern {
            Verdict::Ok
        } else {
            Verdict::Unexpected
        })
    }
}

/// HTTP/1.1 or HTTP/2 through [`sheave_http::Client`]: for HTTP/1.1 one client per address
/// with a pool of `-c` connections, for HTTP/2 `-c` clients of one connection each.
#[derive(Debug)]
pub struct Http {
    /// HTTP/1.1: one client per address, with a pool of `-c` connections.
    pooled: bool,
    /// The request's URI, when it renders the same every time.
    uri: Option<http::Uri>,
    builder: sheave_http::client::Builder<Full<Bytes>>,
    method: http::Method,
    path: Template,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
    keyspace: Option<u64>,
}

impl Http {
    /// From the HTTP flags; HTTP/1.1 keeps one request per connection, HTTP/2 `-P` streams.
    pub fn new(config: &Config) -> Http {
        use sheave_http::client::Version;
        let builder = sheave_http::Client::builder()
            .connect_timeout(config.connect_timeout)
            .max_response_body(16 * 1024 * 1024);
        let builder = match config.protocol {
            Which::Http2 => builder.version(Version::Http2).max_streams(config.pipeline),
            _ => builder
                .version(Version::Http1)
                .pool_size(config.connections),
        };
        let path = Template::new(&config.path);
        let uri = (config.keyspace.is_none() || path.is_constant())
            .then(|| http::Uri::try_from(path.render(0, config.keyspace)).ok())
            .flatten();
        Http {
            pooled: config.protocol != Which::Http2,
            uri,
            builder,
            method: config.method.clone(),
            path,
            headers: config.headers.clone(),
            body: config.body.clone().map(Bytes::from).unwrap_or_default(),
            keyspace: config.keyspace,
        }
    }
}

impl Protocol for Http {
    type Request = http::Request<Full<Bytes>>;
    type Response = http::Response<sheave_http::Body>;
    type Conn = sheave_http::Client<Full<Bytes>>;

    fn connections(&self, flag: usize) -> usize {
        if self.pooled { 1 } else { flag }
    }

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Conn, Error>> {
        self.builder.new_service(addr)
    }

    fn request(&self, seed: u64) -> Result<Self::Request, Error> {
        let uri = match &self.uri {
            Some(uri) => uri.clone(),
            None => http::Uri::try_from(self.path.render(seed, self.keyspace))
                .map_err(|e| Error::new(sheave_service::ErrorKind::InvalidRequest, e))?,
        };
        let mut req = http::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        Ok(req)
    }

    async fn verdict(&self, _seed: u64, reply: Self::Response) -> Result<Verdict, Error> {
        let status = reply.status();
        // Read to the end (that frees the connection), keeping nothing.
        let mut body = reply.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok(if status.as_u16() >= 400 {
            Verdict::ErrorReply
        } else {
            Verdict::Ok
        })
    }
}
