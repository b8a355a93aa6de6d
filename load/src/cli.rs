//! The `sheave-load` command line: every flag, its default, and its validation.
//!
//! [`parse`] turns the arguments (without the program name) into a [`Config`], or a
//! [`CliError`] that names the flag at fault. `--help` is [`HELP`]. The flags are a stable
//! contract: scripts drive them.
//!
//! ```
//! use sheave_load::cli::{self, Mode, Parsed, Protocol};
//!
//! let Parsed::Run(config) = cli::parse(["-c", "4", "-P", "16", "-n", "1000", "127.0.0.1:6379"])
//!     .unwrap()
//! else {
//!     unreachable!()
//! };
//! assert_eq!(config.protocol, Protocol::Resp);
//! assert_eq!((config.connections, config.pipeline), (4, 16));
//! assert_eq!(config.requests, Some(1000));
//! assert_eq!(config.mode, Mode::Closed);
//!
//! let err = cli::parse(["--pipeline", "zero"]).unwrap_err();
//! assert!(err.to_string().contains("--pipeline"), "{err}");
//! ```

use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// What `--help` prints.
pub const HELP: &str = "\
sheave-load: a load generator whose client is sheave's own balanced stack

USAGE:
    sheave-load [FLAGS] [ADDR...]

    ADDR is host:port (default 127.0.0.1:6379 for resp, 127.0.0.1:80 for http1/http2,
    127.0.0.1:7000 for lines/tcp). Names are resolved once, at start; only the named
    addresses are ever connected to. Every address gets its own connections, and the
    balancer spreads requests over all of them.

PROTOCOL:
    --protocol P          resp | lines | tcp | http1 | http2                  [resp]
    --command CMD         resp: the command, split on spaces           [GET key:__rand_int__]
    -r, --keyspace N      __rand_int__ becomes a 12-digit number below N; without -r
                          it is always 000000000000 (as redis-benchmark does)
    --line TEXT           lines: the line sent; the echo is checked  [ping __rand_int__]
    --size N              tcp: bytes sent per request                               [64]
    --reply-size N        tcp: bytes expected back [the size; then the echo is checked]
    --method M            http: the method                                         [GET]
    --path P              http: the path and query (placeholders apply)              [/]
    -H, --header 'N: V'   http: a header (repeatable)
    --body TEXT           http: the request body                               [none]

LOAD:
    -c, --connections N   connections to each address                              [16]
    -P, --pipeline N      requests in flight on each connection (http1: 1)          [1]
    -d, --duration T      how long to run: 10, 2.5s, 500ms                        [10s]
    -n, --requests N      stop after N requests (with -d too: whichever comes first;
                          alone: no time bound other than each request's deadline)
    --rate N              open loop: N requests/s in all, each timed from when it was
                          due (no coordinated omission, as wrk2); without it: closed
                          loop, the next request goes when one is answered

STACK (outermost first, as the documented client stack):
    --deadline T          one deadline per request, retries included              [2s]
    --retries N           retries of requests surely not sent (unavailable,
                          refused), never of ones the server may have processed     [2]
    --retry-budget R      retries at most this share of requests (plus 10/s)      [0.2]
    --limit N             requests in flight in all [connections x pipeline x addresses]
                          closed loop: the callers are at most this many; open loop: a
                          request past it waits for a slot, within its deadline
    --hedge P             send a backup after the P-th percentile of latency, e.g. 0.95
    --per-try T           a deadline per attempt, below the retries          [none]
    --policy P            p2c-pending | p2c-ewma | round-robin           [p2c-pending]
                          (p2c-ewma also weighs latency: about 750 instructions a
                          request more, so the default counts requests pending)
    --connect-timeout T   per connection attempt                                  [2s]

OUTPUT:
    --json FILE           the figures as JSON: requests, errors, rps, p50_us, p90_us,
                          p99_us, p999_us, max_us, errors_by_kind, endpoints [...]
    --hdr FILE            the latency histogram (microseconds), HdrHistogram V2 format
    --plot FILE.svg       latency CDF and throughput over time, as SVG
    --progress            a progress line on stderr even when it is not a terminal
    -q, --quiet           no progress line and no table
    --seed N              the seed of __rand_int__ and of the balancer        [random]
    -h, --help            this text
";

/// Which protocol the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The redis protocol: a command template.
    Resp,
    /// `\n`-terminated lines, echoed back.
    Lines,
    /// A raw byte pattern of a fixed size; a reply of a fixed size.
    Tcp,
    /// HTTP/1.1: one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), `-P` streams per connection.
    Http2,
}

impl Protocol {
    /// The name used on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Resp => "resp",
            Protocol::Lines => "lines",
            Protocol::Tcp => "tcp",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }

    fn default_addr(self) -> &'static str {
        match self {
            Protocol::Resp => "127.0.0.1:6379",
            Protocol::Http1 | Protocol::Http2 => "127.0.0.1:80",
            Protocol::Lines | Protocol::Tcp => "127.0.0.1:7000",
        }
    }
}

/// How the balancer picks an endpoint (`--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Power of two choices over peak-EWMA latency.
    P2cEwma,
    /// Power of two choices over requests pending.
    P2cPending,
    /// Each connection in turn.
    RoundRobin,
}

/// Closed loop or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every slot sends its next request when the last is answered.
    Closed,
    /// This many requests per second, whatever the answers do.
    Open {
        /// Requests per second, over every endpoint.
        rate: f64,
    },
}

/// What to run: every flag, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The addresses, resolved.
    pub addrs: Vec<SocketAddr>,
    /// `--protocol`.
    pub protocol: Protocol,
    /// `-c`: connections to each address.
    pub connections: usize,
    /// `-P`: requests in flight on each connection.
    pub pipeline: usize,
    /// `-d`: `None` when only `-n` bounds the run.
    pub duration: Option<Duration>,
    /// `-n`.
    pub requests: Option<u64>,
    /// Closed loop, or `--rate`.
    pub mode: Mode,
    /// `--command`, split on spaces.
    pub command: Vec<String>,
    /// `-r`: `None` means every placeholder is zero.
    pub keyspace: Option<u64>,
    /// `--line`.
    pub line: String,
    /// `--size`.
    pub size: usize,
    /// `--reply-size`: `None` means the size, with the echo checked.
    pub reply_size: Option<usize>,
    /// `--method`.
    pub method: http::Method,
    /// `--path`.
    pub path: String,
    /// `-H`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `--body`.
    pub body: Option<String>,
    /// `--deadline`.
    pub deadline: Duration,
    /// `--retries`.
    pub retries: u32,
    /// `--retry-budget`.
    pub retry_budget: f64,
    /// `--limit`: `None` means connections × pipeline × addresses.
    pub limit: Option<usize>,
    /// `--hedge`.
    pub hedge: Option<f64>,
    /// `--per-try`.
    pub per_try: Option<Duration>,
    /// `--policy`.
    pub policy: Policy,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--hdr`.
    pub hdr: Option<PathBuf>,
    /// `--plot`.
    pub plot: Option<PathBuf>,
    /// `--progress`.
    pub progress: bool,
    /// `-q`.
    pub quiet: bool,
    /// `--seed`.
    pub seed: Option<u64>,
}

impl Config {
    /// The defaults of the bare command, for `addrs` (none: the protocol's default address).
    pub fn new(protocol: Protocol, addrs: Vec<SocketAddr>) -> Config {
        let addrs = if addrs.is_empty() {
            vec![protocol.default_addr().parse().expect("a valid default")]
        } else {
            addrs
        };
        Config {
            addrs,
            protocol,
            connections: 16,
            pipeline: 1,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            mode: Mode::Closed,
            command: vec!["GET".into(), "key:__rand_int__".into()],
            keyspace: None,
            line: "ping __rand_int__".into(),
            size: 64,
            reply_size: None,
            method: http::Method::GET,
            path: "/".into(),
            headers: Vec::new(),
            body: None,
            deadline: Duration::from_secs(2),
            retries: 2,
            retry_budget: 0.2,
            limit: None,
            hedge: None,
            per_try: None,
            policy: Policy::P2cPending,
            connect_timeout: Duration::from_secs(2),
            json: None,
            hdr: None,
            plot: None,
            progress: false,
            quiet: false,
            seed: None,
        }
    }

    /// Requests in flight in all: `--limit`, or what the connections hold.
    pub fn in_flight_limit(&self) -> usize {
        self.limit
            .unwrap_or(self.connections * self.pipeline * self.addrs.len())
    }
}

/// What the arguments ask for.
#[derive(Debug)]
pub enum Parsed {
    /// A load run.
    Run(Box<Config>),
    /// `--help`.
    Help,
}

/// A bad command line; names the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn bad(flag: &str, why: impl fmt::Display) -> CliError {
    CliError(format!("{flag}: {why}"))
}

/// Parses a duration: `10` (seconds), `2.5s`, `500ms`, `250us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (10, 2.5s, 500ms)"))?;
    if !value.is_finite() || value <= 0.0 || value * scale > 1e9 {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Parses the arguments (without the program name).
pub fn parse<I>(args: I) -> Result<Parsed, CliError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut protocol = Protocol::Resp;
    let mut names: Vec<String> = Vec::new();
    // Applied after the protocol is known (its defaults fill in what is not given).
    let mut c = Config::new(Protocol::Resp, Vec::new());
    let mut duration_given = false;
    let mut rate = None;
    let mut reply_given = false;
    loop {
        let arg = parser.next().map_err(|e| CliError(e.to_string()))?;
        let Some(arg) = arg else { break };
        let flag = match arg {
            Short(s) => format!("-{s}"),
            Long(l) => format!("--{l}"),
            Value(v) => {
                let name = v
                    .into_string()
                    .map_err(|v| CliError(format!("address {v:?} is not UTF-8")))?;
                names.push(name);
                continue;
            }
        };
        let mut value = || -> Result<String, CliError> {
            let v = parser.value().map_err(|e| CliError(e.to_string()))?;
            v.into_string()
                .map_err(|v| bad(&flag, format!("{v:?} is not UTF-8")))
        };
        macro_rules! number {
            ($t:ty, $min:expr) => {{
                let text = value()?;
                let n: $t = text
                    .parse()
                    .map_err(|_| bad(&flag, format!("`{text}` is not a number")))?;
                #[allow(unused_comparisons)]
                let too_small = n < $min;
                if too_small {
                    return Err(bad(&flag, format!("must be at least {}", $min)));
                }
                n
            }};
        }
        let duration = |text: String| parse_duration(&text).map_err(|e| bad(&flag, e));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--protocol" => {
                protocol = match value()?.as_str() {
                    "resp" => Protocol::Resp,
                    "lines" => Protocol::Lines,
                    "tcp" => Protocol::Tcp,
                    "http1" => Protocol::Http1,
                    "http2" => Protocol::Http2,
                    other => {
                        return Err(bad(
                            &flag,
                            format!("`{other}`: one of resp, lines, tcp, http1, http2"),
                        ));
                    }
                }
            }
            "-c" | "--connections" => c.connections = number!(usize, 1),
            "-P" | "--pipeline" => c.pipeline = number!(usize, 1),
            "-d" | "--duration" => {
                c.duration = Some(duration(value()?)?);
                duration_given = true;
            }
            "-n" | "--requests" => c.requests = Some(number!(u64, 1)),
            "--rate" => {
                let r = number!(f64, 0.001);
                if !r.is_finite() {
                    return Err(bad(&flag, "must be finite"));
                }
                rate = Some(r);
            }
            "--command" => {
                c.command = value()?.split_whitespace().map(str::to_string).collect();
                if c.command.is_empty() {
                    return Err(bad(&flag, "the command is empty"));
                }
            }
            "-r" | "--keyspace" => c.keyspace = Some(number!(u64, 1)),
            "--line" => {
                let line = value()?;
                if line.contains('\n') {
                    return Err(bad(&flag, "a line cannot hold a newline"));
                }
                c.line = line;
            }
            "--size" => c.size = number!(usize, 1),
            "--reply-size" => {
                c.reply_size = Some(number!(usize, 1));
                reply_given = true;
            }
            "--method" => {
                let m = value()?;
                c.method = m
                    .parse()
                    .map_err(|_| bad(&flag, format!("`{m}` is not an HTTP method")))?;
            }
            "--path" => {
                let p = value()?;
                if !p.starts_with('/') {
                    return Err(bad(&flag, format!("`{p}` does not start with /")));
                }
                c.path = p;
            }
            "-H" | "--header" => {
                let h = value()?;
                let (name, val) = h
                    .split_once(':')
                    .ok_or_else(|| bad(&flag, format!("`{h}` is not `Name: value`")))?;
                let name = http::HeaderName::try_from(name.trim())
                    .map_err(|_| bad(&flag, format!("`{name}` is not a header name")))?;
                let val = http::HeaderValue::try_from(val.trim())
                    .map_err(|_| bad(&flag, format!("`{val}` is not a header value")))?;
                c.headers.push((name, val));
            }
            "--body" => c.body = Some(value()?),
            "--deadline" => c.deadline = duration(value()?)?,
            "--retries" => c.retries = number!(u32, 0),
            "--retry-budget" => {
                let r = number!(f64, 0.0);
                if r > 1000.0 {
                    return Err(bad(&flag, "must be at most 1000"));
                }
                c.retry_budget = r;
            }
            "--limit" => c.limit = Some(number!(usize, 1)),
            "--hedge" => {
                let p = number!(f64, 0.0);
                if !(p > 0.0 && p < 1.0) {
                    return Err(bad(&flag, "a percentile between 0 and 1, such as 0.95"));
                }
                c.hedge = Some(p);
            }
            "--per-try" => c.per_try = Some(duration(value()?)?),
            "--policy" => {
                c.policy = match value()?.as_str() {
                    "p2c-ewma" => Policy::P2cEwma,
                    "p2c-pending" => Policy::P2cPending,
                    "round-robin" => Policy::RoundRobin,
                    other => {
                        return Err(bad(
                            &flag,
                            format!("`{other}`: one of p2c-ewma, p2c-pending, round-robin"),
                        ));
                    }
                }
            }
            "--connect-timeout" => c.connect_timeout = duration(value()?)?,
            "--json" => c.json = Some(value()?.into()),
            "--hdr" => c.hdr = Some(value()?.into()),
            "--plot" => c.plot = Some(value()?.into()),
            "--progress" => c.progress = true,
            "-q" | "--quiet" => c.quiet = true,
            "--seed" => c.seed = Some(number!(u64, 0)),
            other => return Err(CliError(format!("{other}: no such flag"))),
        }
    }
    let mut addrs = Vec::new();
    for name in &names {
        let resolved: Vec<SocketAddr> = name
            .to_socket_addrs()
            .map_err(|e| CliError(format!("address `{name}`: {e}")))?
            .collect();
        // The first address of a name: one name is one endpoint.
        let first = resolved
            .first()
            .ok_or_else(|| CliError(format!("address `{name}`: resolves to nothing")))?;
        addrs.push(*first);
    }
    let mut config = Config {
        addrs: Config::new(protocol, addrs).addrs,
        protocol,
        ..c
    };
    if c_requests_only(duration_given, config.requests) {
        config.duration = None;
    }
    if let Some(rate) = rate {
        config.mode = Mode::Open { rate };
    }
    if !reply_given {
        config.reply_size = None;
    }
    if protocol == Protocol::Http1 && config.pipeline > 1 {
        return Err(bad(
            "--pipeline",
            "HTTP/1.1 answers one request at a time per connection: use -c for more",
        ));
    }
    if protocol == Protocol::Resp && config.command.is_empty() {
        return Err(bad("--command", "the command is empty"));
    }
    Ok(Parsed::Run(Box::new(config)))
}

/// `-n` alone bounds the run by count, not time.
fn c_requests_only(duration_given: bool, requests: Option<u64>) -> bool {
    !duration_given && requests.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse(args.iter().copied()).unwrap() {
            Parsed::Run(c) => *c,
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn the_bare_command_runs_resp_get_for_ten_seconds_against_the_local_redis() {
        let c = run(&[]);
        assert_eq!(c.protocol, Protocol::Resp);
        assert_eq!(c.addrs, vec!["127.0.0.1:6379".parse().unwrap()]);
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert_eq!(c.command, ["GET", "key:__rand_int__"]);
        assert_eq!(c.in_flight_limit(), 16);
        assert_eq!(c.policy, Policy::P2cPending);
    }

    #[test]
    fn requests_alone_bound_by_count_and_with_a_duration_by_both() {
        assert_eq!(run(&["-n", "5"]).duration, None);
        let c = run(&["-n", "5", "-d", "1s"]);
        assert_eq!(
            (c.requests, c.duration),
            (Some(5), Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn a_bad_flag_is_an_error_that_names_it() {
        for (args, flag) in [
            (&["-c", "0"][..], "-c"),
            (&["--protocol", "gopher"], "--protocol"),
            (&["--deadline", "soon"], "--deadline"),
            (&["--hedge", "2"], "--hedge"),
            (&["--policy", "random"], "--policy"),
            (&["--protocol", "http1", "-P", "4"], "--pipeline"),
            (&["-H", "no colon"], "-H"),
            (&["--path", "nope"], "--path"),
        ] {
            let err = parse(args.iter().copied()).unwrap_err().to_string();
            assert!(err.starts_with(flag), "{args:?}: {err}");
        }
        let err = parse(["--frobnicate"]).unwrap_err().to_string();
        assert!(err.contains("--frobnicate"), "{err}");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("0").is_err());
    }

    #[test]
    fn the_protocol_sets_the_default_address_and_rate_the_mode() {
        let c = run(&["--protocol", "http2", "--rate", "1000"]);
        assert_eq!(c.addrs, vec!["127.0.0.1:80".parse().unwrap()]);
        assert_eq!(c.mode, Mode::Open { rate: 1000.0 });
    }

    #[test]
    fn the_help_documents_every_long_flag_the_parser_takes() {
        let source = include_str!("cli.rs");
        let source = &source[..source.find("#[cfg(test)]").unwrap()];
        let flags: Vec<&str> = source
            .split("\"--")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            })
            .collect();
        assert!(flags.len() > 30, "{flags:?}");
        for name in flags {
            assert!(
                HELP.contains(&format!("--{name}")),
                "--{name} is not in --help"
            );
        }
    }
}
