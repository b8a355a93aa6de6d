//! The command table (names, arities, what `COMMAND` reports) and the commands about the
//! connection and the server: `HELLO`, `INFO`, `CLIENT`, `SELECT`, `COMMAND`, `CONFIG`,
//! `PING`, `ECHO`, `QUIT`, `DBSIZE`.

use super::{Db, Frame, KvService, SHARDS, text};
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The redis version whose commands and replies this server follows.
pub const REDIS_VERSION: &str = "7.2.0";

/// One command: its name (lower case, as redis reports it), its arity (the number of
/// arguments with the name; negative: at least that many), flags, first key, last key, step,
/// and its group.
struct Spec {
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        group,
    }
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "fast"];
const C: &[&str] = &["fast", "loading", "stale"];
const NONE: (i64, i64, i64) = (0, 0, 0);
const ONE: (i64, i64, i64) = (1, 1, 1);

static COMMANDS: &[Spec] = &[
    spec("get", 2, R, ONE, "string"),
    spec("set", -3, W, ONE, "string"),
    spec("setnx", 3, W, ONE, "string"),
    spec("getdel", 2, WF, ONE, "string"),
    spec("getex", -2, WF, ONE, "string"),
    spec("append", 3, W, ONE, "string"),
    spec("strlen", 2, R, ONE, "string"),
    spec("incr", 2, W, ONE, "string"),
    spec("decr", 2, W, ONE, "string"),
    spec("incrby", 3, W, ONE, "string"),
    spec("decrby", 3, W, ONE, "string"),
    spec("incrbyfloat", 3, W, ONE, "string"),
    spec("mget", -2, R, (1, -1, 1), "string"),
    spec("mset", -3, W, (1, -1, 2), "string"),
    spec("msetnx", -3, W, (1, -1, 2), "string"),
    spec("del", -2, &["write"], (1, -1, 1), "generic"),
    spec("unlink", -2, WF, (1, -1, 1), "generic"),
    spec("exists", -2, R, (1, -1, 1), "generic"),
    spec("expire", -3, WF, ONE, "generic"),
    spec("pexpire", -3, WF, ONE, "generic"),
    spec("expireat", -3, WF, ONE, "generic"),
    spec("pexpireat", -3, WF, ONE, "generic"),
    spec("ttl", 2, R, ONE, "generic"),
    spec("pttl", 2, R, ONE, "generic"),
    spec("persist", 2, WF, ONE, "generic"),
    spec("type", 2, R, ONE, "generic"),
    spec("keys", 2, &["readonly"], NONE, "generic"),
    spec("scan", -2, &["readonly"], NONE, "generic"),
    spec("dbsize", 1, R, NONE, "server"),
    spec("flushall", -1, &["write"], NONE, "server"),
    spec("flushdb", -1, &["write"], NONE, "server"),
    spec("info", -1, &["loading", "stale"], NONE, "server"),
    spec("command", -1, &["loading", "stale"], NONE, "server"),
    spec("config", -2, &["admin", "loading", "stale"], NONE, "server"),
    spec("ping", -1, &["fast"], NONE, "connection"),
    spec("echo", 2, &["fast"], NONE, "connection"),
    spec("hello", -1, C, NONE, "connection"),
    spec("auth", -2, C, NONE, "connection"),
    spec("client", -2, &["loading", "stale"], NONE, "connection"),
    spec("select", 2, C, NONE, "connection"),
    spec("quit", -1, C, NONE, "connection"),
    spec("reset", 1, C, NONE, "connection"),
    spec("multi", 1, C, NONE, "transactions"),
    spec("exec", 1, &["loading", "stale"], NONE, "transactions"),
    spec("discard", 1, C, NONE, "transactions"),
    spec("watch", -2, C, (1, -1, 1), "transactions"),
    spec("unwatch", 1, C, NONE, "transactions"),
];

fn lookup(upper: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(upper))
}

/// Refuses, in redis's words, a command we do not have or one with a wrong number of
/// arguments.
pub fn check(upper: &[u8], args: &[Frame]) -> Result<(), Frame> {
    let Some(spec) = lookup(upper) else {
        return Err(unknown_command(args));
    };
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || n < -spec.arity {
        return Err(wrong_args(spec.name));
    }
    Ok(())
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' `, as redis 7 words it.
fn unknown_command(args: &[Frame]) -> Frame {
    let shown = |b: &Bytes, max: usize| {
        let b = &b[..b.len().min(max)];
        String::from_utf8_lossy(b).replace(['\r', '\n'], " ")
    };
    let mut rest = String::new();
    for arg in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let _ = write!(rest, "'{}' ", shown(text(arg), 128 - rest.len()));
    }
    Frame::error(format!(
        "ERR unknown command '{}', with args beginning with: {rest}",
        shown(text(&args[0]), 128)
    ))
}

pub fn wrong_args(name: &str) -> Frame {
    Frame::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn bulk(s: impl Into<String>) -> Frame {
    Frame::Bulk(Bytes::from(s.into()))
}

fn arg_is(args: &[Frame], i: usize, word: &str) -> bool {
    args.get(i)
        .is_some_and(|a| text(a).eq_ignore_ascii_case(word.as_bytes()))
}

/// Runs a connection or server command; `None` for any other command.
pub fn run(svc: &KvService, upper: &[u8], args: &[Frame], db: &mut Db<'_>) -> Option<Frame> {
    let n = args.len();
    Some(match upper {
        b"PING" => match n {
            1 => Frame::Simple(Bytes::from_static(b"PONG")),
            2 => Frame::Bulk(text(&args[1]).clone()),
            _ => wrong_args("ping"),
        },
        b"ECHO" => Frame::Bulk(text(&args[1]).clone()),
        b"QUIT" => Frame::ok(),
        b"SELECT" => match std::str::from_utf8(text(&args[1])).map(str::parse::<i64>) {
            Ok(Ok(0)) => Frame::ok(),
            Ok(Ok(_)) => Frame::error("ERR DB index is out of range"),
            _ => Frame::error("ERR value is not an integer or out of range"),
        },
        b"HELLO" => hello(svc, args),
        // No password is configured: the default user, whatever the password.
        b"AUTH" => match args {
            [_, _] => Frame::error(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            ),
            [_, user, _] if &text(user)[..] == b"default" => Frame::ok(),
            [_, _, _] => {
                Frame::error("WRONGPASS invalid username-password pair or user is disabled.")
            }
            _ => Frame::error("ERR syntax error"),
        },
        b"CLIENT" => client(svc, args),
        b"INFO" => info(svc, args, db),
        b"COMMAND" => command(args),
        b"DBSIZE" => {
            let mut keys = 0;
            for i in 0..SHARDS {
                keys += db.shard(i, |m| m.len());
            }
            Frame::Integer(keys as i64)
        }
        b"CONFIG" if arg_is(args, 1, "GET") && n >= 3 => {
            // redis-benchmark reads `save` and `appendonly`: a server without them.
            Frame::Map(
                args[2..]
                    .iter()
                    .map(|p| (Frame::Bulk(text(p).clone()), Frame::Bulk(Bytes::new())))
                    .collect(),
            )
        }
        b"CONFIG" if arg_is(args, 1, "GET") => wrong_args("config|get"),
        b"CONFIG" => unknown_subcommand(&args[1], "CONFIG"),
        _ => return None,
    })
}

fn unknown_subcommand(sub: &Frame, command: &str) -> Frame {
    Frame::error(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(text(sub))
    ))
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
fn hello(svc: &KvService, args: &[Frame]) -> Frame {
    let mut protocol = svc.conn.borrow().protocol;
    if let Some(version) = args.get(1) {
        protocol = match &text(version)[..] {
            b"2" => 2,
            b"3" => 3,
            v if std::str::from_utf8(v).is_ok_and(|v| v.parse::<i64>().is_ok()) => {
                return Frame::error("NOPROTO unsupported protocol version");
            }
            _ => return Frame::error("ERR Protocol version is not an integer or out of range"),
        };
    }
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        if arg_is(args, i, "AUTH") && i + 2 < args.len() {
            // No password is configured: the default user, whatever the password.
            if &text(&args[i + 1])[..] != b"default" {
                return Frame::error(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                );
            }
            i += 3;
        } else if arg_is(args, i, "SETNAME") && i + 1 < args.len() {
            let candidate = text(&args[i + 1]);
            if !valid_name(candidate) {
                return bad_name("Client names");
            }
            name = Some(candidate.clone());
            i += 2;
        } else {
            return Frame::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(text(&args[i]))
            ));
        }
    }
    let mut conn = svc.conn.borrow_mut();
    conn.protocol = protocol;
    if name.is_some() {
        conn.name = name;
    }
    let field = |k: &str, v: Frame| (bulk(k), v);
    Frame::Map(vec![
        field("server", bulk("redis")),
        field("version", bulk(REDIS_VERSION)),
        field("proto", Frame::Integer(protocol.into())),
        field("id", Frame::Integer(conn.id as i64)),
        field("mode", bulk("standalone")),
        field("role", bulk("master")),
        field("modules", Frame::Array(Vec::new())),
    ])
}

/// Names and library attributes: printable ASCII without spaces.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn bad_name(what: &str) -> Frame {
    Frame::error(format!(
        "ERR {what} cannot contain spaces, newlines or special characters."
    ))
}

/// `CLIENT SETINFO|SETNAME|GETNAME|ID|INFO`.
fn client(svc: &KvService, args: &[Frame]) -> Frame {
    let sub = text(&args[1]).to_ascii_lowercase();
    let sub = String::from_utf8_lossy(&sub).into_owned();
    let want = |arity: usize| {
        if args.len() == arity {
            Ok(())
        } else {
            Err(wrong_args(&format!("client|{sub}")))
        }
    };
    let mut conn = svc.conn.borrow_mut();
    let result = match sub.as_str() {
        "id" => want(2).map(|()| Frame::Integer(conn.id as i64)),
        "getname" => want(2).map(|()| conn.name.clone().map_or(Frame::Null, Frame::Bulk)),
        "setname" => want(3).map(|()| {
            let name = text(&args[2]);
            if !valid_name(name) {
                return bad_name("Client names");
            }
            conn.name = (!name.is_empty()).then(|| name.clone());
            Frame::ok()
        }),
        "setinfo" => want(4).map(|()| {
            let value = text(&args[3]);
            let slot = match &text(&args[2]).to_ascii_lowercase()[..] {
                b"lib-name" => &mut conn.lib_name,
                b"lib-ver" => &mut conn.lib_ver,
                _ => {
                    return Frame::error(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(text(&args[2]))
                    ));
                }
            };
            if !valid_name(value) {
                return bad_name(if arg_is(args, 2, "lib-name") {
                    "lib-name"
                } else {
                    "lib-ver"
                });
            }
            *slot = Some(value.clone());
            Frame::ok()
        }),
        "info" => want(2).map(|()| {
            let s = |b: &Option<Bytes>| {
                b.as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            let multi = if svc.in_multi.get() {
                conn.queued.len() as i64
            } else {
                -1
            };
            Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from(format!(
                    "id={} name={} db=0 multi={multi} resp={} lib-name={} lib-ver={}\n",
                    conn.id,
                    s(&conn.name),
                    conn.protocol,
                    s(&conn.lib_name),
                    s(&conn.lib_ver),
                )),
            }
        }),
        _ => Err(unknown_subcommand(&args[1], "CLIENT")),
    };
    result.unwrap_or_else(|refusal| refusal)
}

/// `INFO [section ...]`: `server`, `clients`, `memory`, `persistence`, `stats`,
/// `replication`, `keyspace` (all of them by default, or for `all`/`everything`/`default`).
fn info(svc: &KvService, args: &[Frame], db: &mut Db<'_>) -> Frame {
    let all = args.len() == 1
        || args[1..].iter().any(|a| {
            let a = text(a);
            a.eq_ignore_ascii_case(b"all")
                || a.eq_ignore_ascii_case(b"everything")
                || a.eq_ignore_ascii_case(b"default")
        });
    let wants = |section: &str| {
        all || args[1..]
            .iter()
            .any(|a| text(a).eq_ignore_ascii_case(section.as_bytes()))
    };
    let (mut keys, mut expires, mut bytes) = (0usize, 0usize, 0usize);
    if wants("keyspace") || wants("memory") {
        for i in 0..SHARDS {
            db.shard(i, |m| {
                keys += m.len();
                expires += m.values().filter(|e| e.expires.is_some()).count();
                bytes += m
                    .iter()
                    .map(|(k, e)| k.len() + e.value.len() + 64)
                    .sum::<usize>();
            });
        }
    }
    let shared = &svc.kv.shared;
    let mut out = String::new();
    let mut section = |name: &str, body: String| {
        if wants(name) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            let _ = write!(out, "# {title}\r\n{body}");
        }
    };
    let uptime = shared.started.elapsed().as_secs();
    section(
        "server",
        format!(
            "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nos:{}\r\n\
             arch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{}\r\nexecutable:sheave-kv\r\n",
            std::env::consts::OS,
            std::process::id(),
            shared.port.load(Ordering::Relaxed),
            uptime / 86_400,
        ),
    );
    section(
        "clients",
        format!(
            "connected_clients:{}\r\nblocked_clients:0\r\nmaxclients:10000\r\n",
            shared.clients.load(Ordering::Relaxed)
        ),
    );
    section(
        "memory",
        format!(
            "used_memory:{bytes}\r\nused_memory_human:{:.2}K\r\nmaxmemory:0\r\n\
             maxmemory_policy:noeviction\r\n",
            bytes as f64 / 1024.0
        ),
    );
    section(
        "persistence",
        "loading:0\r\nrdb_changes_since_last_save:0\r\naof_enabled:0\r\n".to_string(),
    );
    section("stats", "total_connections_received:0\r\n".to_string());
    section(
        "replication",
        "role:master\r\nconnected_slaves:0\r\n".to_string(),
    );
    let keyspace = if keys > 0 {
        format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n")
    } else {
        String::new()
    };
    section("keyspace", keyspace);
    Frame::Verbatim {
        format: *b"txt",
        text: Bytes::from(out),
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS [name...]`,
/// `COMMAND LIST`.
fn command(args: &[Frame]) -> Frame {
    let info = |s: &Spec| {
        let strings = |list: &[&str]| {
            Frame::Set(
                list.iter()
                    .map(|f| Frame::Simple(Bytes::from(f.to_string())))
                    .collect(),
            )
        };
        let group = format!("@{}", s.group);
        Frame::Array(vec![
            bulk(s.name),
            Frame::Integer(s.arity),
            strings(s.flags),
            Frame::Integer(s.keys.0),
            Frame::Integer(s.keys.1),
            Frame::Integer(s.keys.2),
            strings(&[&group]),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
        ])
    };
    let docs = |s: &Spec| {
        (
            bulk(s.name),
            Frame::Map(vec![
                (
                    bulk("summary"),
                    bulk(format!("the redis {} command", s.name)),
                ),
                (bulk("since"), bulk("1.0.0")),
                (bulk("group"), bulk(s.group)),
                (bulk("arguments"), Frame::Array(Vec::new())),
            ]),
        )
    };
    let named = || args[2..].iter().map(|a| lookup(text(a)));
    if args.len() == 1 {
        return Frame::Array(COMMANDS.iter().map(info).collect());
    }
    let sub = text(&args[1]);
    if sub.eq_ignore_ascii_case(b"COUNT") {
        Frame::Integer(COMMANDS.len() as i64)
    } else if sub.eq_ignore_ascii_case(b"INFO") {
        if args.len() == 2 {
            return Frame::Array(COMMANDS.iter().map(info).collect());
        }
        Frame::Array(named().map(|s| s.map_or(Frame::Null, info)).collect())
    } else if sub.eq_ignore_ascii_case(b"DOCS") {
        if args.len() == 2 {
            return Frame::Map(COMMANDS.iter().map(docs).collect());
        }
        Frame::Map(named().flatten().map(docs).collect())
    } else if sub.eq_ignore_ascii_case(b"LIST") {
        Frame::Array(COMMANDS.iter().map(|s| bulk(s.name)).collect())
    } else {
        unknown_subcommand(&args[1], "COMMAND")
    }
}
