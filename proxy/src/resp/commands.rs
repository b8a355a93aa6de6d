//! What the RESP proxy does with each command: answer it itself, send it to the shard of its
//! key, split it across shards, or refuse it with the reason.
//!
//! ```
//! use sheave_proto::resp::Frame;
//! use sheave_proxy::resp::commands::{Action, Merge, classify};
//!
//! assert_eq!(classify(&Frame::command(["GET", "user:1"])), Action::Key(1));
//! assert_eq!(
//!     classify(&Frame::command(["MGET", "a", "b"])),
//!     Action::Split { step: 1, merge: Merge::Values }
//! );
//! let Action::Refuse(Frame::Error(why)) = classify(&Frame::command(["KEYS", "*"])) else {
//!     panic!("KEYS is refused")
//! };
//! assert_eq!(&why[..], &b"ERR sheave-proxy: 'KEYS' cannot be proxied: it would need every shard"[..]);
//! ```

use bytes::Bytes;
use sheave_proto::resp::Frame;

/// How the replies of a split command's parts are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `MGET`: one value per key, put back in the order of the keys.
    Values,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the parts' integers added up.
    Sum,
    /// `MSET`: `OK` when every part said `OK`.
    AllOk,
}

/// What to do with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answered by the proxy itself (`PING`, `ECHO`, `HELLO`, `SELECT 0`, `QUIT`).
    Local(Frame),
    /// Sent whole to the shard of the key at this argument position.
    Key(usize),
    /// Sent whole if every key (the arguments from `first`, every `step`-th, to the end, or
    /// to `first + count` when `count` is set) lives on one shard; refused otherwise.
    SameShard {
        /// Position of the first key.
        first: usize,
        /// Keys at most (`None`: to the end).
        count: Option<usize>,
        /// Distance between keys.
        step: usize,
    },
    /// Split by shard: each key (with the `step - 1` arguments after it) goes to its shard
    /// in one command per shard; the replies are merged.
    Split {
        /// Arguments per key: 1 for `MGET`, 2 (key, value) for `MSET`.
        step: usize,
        /// How replies merge.
        merge: Merge,
    },
    /// Refused: the error reply to send.
    Refuse(Frame),
}

/// Commands whose only key is their first argument.
const FIRST_KEY: &[&str] = &[
    "GET",
    "SET",
    "SETNX",
    "SETEX",
    "PSETEX",
    "APPEND",
    "STRLEN",
    "INCR",
    "DECR",
    "INCRBY",
    "DECRBY",
    "INCRBYFLOAT",
    "GETSET",
    "GETDEL",
    "GETEX",
    "GETRANGE",
    "SETRANGE",
    "SUBSTR",
    "GETBIT",
    "SETBIT",
    "BITCOUNT",
    "BITPOS",
    "BITFIELD",
    "BITFIELD_RO",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "EXPIRETIME",
    "PEXPIRETIME",
    "PERSIST",
    "TTL",
    "PTTL",
    "TYPE",
    "DUMP",
    "RESTORE",
    "HGET",
    "HSET",
    "HSETNX",
    "HMSET",
    "HMGET",
    "HDEL",
    "HLEN",
    "HKEYS",
    "HVALS",
    "HGETALL",
    "HEXISTS",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HSTRLEN",
    "HSCAN",
    "HRANDFIELD",
    "LPUSH",
    "RPUSH",
    "LPUSHX",
    "RPUSHX",
    "LPOP",
    "RPOP",
    "LLEN",
    "LRANGE",
    "LINDEX",
    "LSET",
    "LREM",
    "LTRIM",
    "LINSERT",
    "LPOS",
    "SADD",
    "SREM",
    "SCARD",
    "SISMEMBER",
    "SMISMEMBER",
    "SMEMBERS",
    "SPOP",
    "SRANDMEMBER",
    "SSCAN",
    "ZADD",
    "ZREM",
    "ZCARD",
    "ZSCORE",
    "ZMSCORE",
    "ZINCRBY",
    "ZRANK",
    "ZREVRANK",
    "ZRANGE",
    "ZREVRANGE",
    "ZRANGEBYSCORE",
    "ZREVRANGEBYSCORE",
    "ZRANGEBYLEX",
    "ZREVRANGEBYLEX",
    "ZCOUNT",
    "ZLEXCOUNT",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYLEX",
    "ZSCAN",
    "ZPOPMIN",
    "ZPOPMAX",
    "ZRANDMEMBER",
    "PFADD",
    "GEOADD",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEOSEARCH",
    "GEORADIUS_RO",
    "GEORADIUSBYMEMBER_RO",
    "SORT_RO",
    "XADD",
    "XLEN",
    "XRANGE",
    "XREVRANGE",
    "XDEL",
    "XTRIM",
];

/// Commands whose keys are all their arguments, which must share a shard.
const ALL_KEYS: &[&str] = &[
    "SINTER",
    "SUNION",
    "SDIFF",
    "SINTERSTORE",
    "SUNIONSTORE",
    "SDIFFSTORE",
    "PFCOUNT",
    "PFMERGE",
    "RENAME",
    "RENAMENX",
    "RPOPLPUSH",
    "SMOVE",
    "LMOVE",
];

/// Commands refused, with why.
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"],
        "transactions cannot span shards",
    ),
    (
        &[
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SUNSUBSCRIBE",
            "PUBLISH",
            "SPUBLISH",
            "PUBSUB",
            "MONITOR",
        ],
        "pub/sub and MONITOR are not proxied",
    ),
    (
        &[
            "KEYS",
            "SCAN",
            "RANDOMKEY",
            "DBSIZE",
            "FLUSHDB",
            "FLUSHALL",
            "SWAPDB",
            "MOVE",
            "WAIT",
            "SCRIPT",
            "FUNCTION",
            "FCALL",
        ],
        "it would need every shard",
    ),
    (
        &[
            "BLPOP",
            "BRPOP",
            "BRPOPLPUSH",
            "BLMOVE",
            "BLMPOP",
            "BZPOPMIN",
            "BZPOPMAX",
            "BZMPOP",
            "XREAD",
            "XREADGROUP",
        ],
        "blocking commands would hold a shared upstream connection",
    ),
    (
        &[
            "AUTH",
            "CLIENT",
            "CONFIG",
            "DEBUG",
            "SHUTDOWN",
            "SAVE",
            "BGSAVE",
            "BGREWRITEAOF",
            "REPLICAOF",
            "SLAVEOF",
            "CLUSTER",
            "READONLY",
            "READWRITE",
            "ACL",
            "MIGRATE",
            "OBJECT",
            "SORT",
            "INFO",
            "LASTSAVE",
            "TIME",
            "ROLE",
            "SLOWLOG",
            "LATENCY",
            "MEMORY",
            "COMMAND",
            "RESET",
        ],
        "it is about one server, and the proxy fronts several",
    ),
];

/// Commands never retried: they change what they read (`INCR`), or add (`LPUSH`), so a
/// second attempt after an ambiguous failure could apply twice. Everything else the proxy
/// forwards reads, or sets a value that a second attempt sets again to the same.
pub fn is_idempotent(name: &[u8]) -> bool {
    const NOT: &[&str] = &[
        "INCR",
        "DECR",
        "INCRBY",
        "DECRBY",
        "INCRBYFLOAT",
        "APPEND",
        "SETRANGE",
        "GETSET",
        "GETDEL",
        "GETEX",
        "SETBIT",
        "BITFIELD",
        "HINCRBY",
        "HINCRBYFLOAT",
        "LPUSH",
        "RPUSH",
        "LPUSHX",
        "RPUSHX",
        "LPOP",
        "RPOP",
        "LREM",
        "LTRIM",
        "LINSERT",
        "LSET",
        "SPOP",
        "ZINCRBY",
        "ZPOPMIN",
        "ZPOPMAX",
        "ZREMRANGEBYRANK",
        "RPOPLPUSH",
        "LMOVE",
        "SMOVE",
        "RENAME",
        "RENAMENX",
        "XADD",
        "XDEL",
        "XTRIM",
        "EVAL",
        "EVALSHA",
        "RESTORE",
        "PFADD",
        "PFMERGE",
        "SETNX",
        "HSETNX",
        "EXPIRE",
        "PEXPIRE",
        "PERSIST",
        "SUNIONSTORE",
        "SINTERSTORE",
        "SDIFFSTORE",
        "GEOADD",
        "SETEX",
        "PSETEX",
    ];
    !NOT.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

fn error(text: String) -> Frame {
    Frame::Error(Bytes::from(text))
}

fn is(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// What to do with `cmd`.
pub fn classify(cmd: &Frame) -> Action {
    let Some(name) = cmd.arg(0) else {
        return Action::Refuse(error(
            "ERR sheave-proxy: a command is an array of bulk strings".into(),
        ));
    };
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    let argc = cmd.len();
    let arity = |min: usize| -> Option<Action> {
        (argc < min).then(|| {
            Action::Refuse(error(format!(
                "ERR wrong number of arguments for '{}' command",
                upper.to_ascii_lowercase()
            )))
        })
    };
    match upper.as_str() {
        "PING" => {
            return match cmd.arg(1) {
                None => Action::Local(Frame::Simple(Bytes::from_static(b"PONG"))),
                Some(msg) if argc == 2 => Action::Local(Frame::Bulk(msg.clone())),
                Some(_) => arity(usize::MAX).unwrap(),
            };
        }
        "ECHO" if argc == 2 => return Action::Local(Frame::Bulk(cmd.arg(1).unwrap().clone())),
        "QUIT" => return Action::Local(Frame::ok()),
        "SELECT" => {
            return match cmd.arg(1).map(|b| &b[..]) {
                Some(b"0") if argc == 2 => Action::Local(Frame::ok()),
                _ => Action::Refuse(error("ERR sheave-proxy: only database 0 is proxied".into())),
            };
        }
        "HELLO" => return hello(cmd),
        "MGET" => {
            return arity(2).unwrap_or(Action::Split {
                step: 1,
                merge: Merge::Values,
            });
        }
        "DEL" | "UNLINK" | "EXISTS" | "TOUCH" => {
            return arity(2).unwrap_or(Action::Split {
                step: 1,
                merge: Merge::Sum,
            });
        }
        "MSET" => {
            if argc < 3 || argc.is_multiple_of(2) {
                return arity(usize::MAX).unwrap();
            }
            return Action::Split {
                step: 2,
                merge: Merge::AllOk,
            };
        }
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" => {
            let keys = cmd
                .arg(2)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            return match keys {
                Some(n) if n >= 1 && argc >= 3 + n => Action::SameShard {
                    first: 3,
                    count: Some(n),
                    step: 1,
                },
                _ => Action::Refuse(error(
                    "ERR sheave-proxy: a script needs at least one key to pick its shard".into(),
                )),
            };
        }
        _ => {}
    }
    if is(name, FIRST_KEY) {
        return arity(2).unwrap_or(Action::Key(1));
    }
    if is(name, ALL_KEYS) {
        return arity(2).unwrap_or(Action::SameShard {
            first: 1,
            count: if is(name, &["LMOVE", "SMOVE"]) {
                Some(2)
            } else {
                None
            },
            step: 1,
        });
    }
    for (names, why) in REFUSED {
        if is(name, names) {
            return Action::Refuse(error(format!(
                "ERR sheave-proxy: '{upper}' cannot be proxied: {why}"
            )));
        }
    }
    Action::Refuse(error(format!(
        "ERR sheave-proxy: unknown or unsupported command '{upper}'"
    )))
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, answered by the proxy: the codec of
/// the client's connection switches to the version asked for when the reply is not an error.
fn hello(cmd: &Frame) -> Action {
    let version = match cmd.arg(1) {
        None => 2,
        Some(v) => match &v[..] {
            b"2" => 2,
            b"3" => 3,
            _ => {
                return Action::Refuse(error(
                    "NOPROTO sorry, this protocol version is not supported".into(),
                ));
            }
        },
    };
    if cmd.len() > 2 {
        return Action::Refuse(error(
            "ERR sheave-proxy: HELLO with AUTH or SETNAME is not supported".into(),
        ));
    }
    Action::Local(Frame::Map(vec![
        (Frame::bulk("server"), Frame::bulk("sheave-proxy")),
        (
            Frame::bulk("version"),
            Frame::bulk(env!("CARGO_PKG_VERSION")),
        ),
        (Frame::bulk("proto"), Frame::Integer(version)),
        (Frame::bulk("id"), Frame::Integer(0)),
        (Frame::bulk("mode"), Frame::bulk("proxy")),
        (Frame::bulk("role"), Frame::bulk("master")),
        (Frame::bulk("modules"), Frame::Array(Vec::new())),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(parts: &[&str]) -> Action {
        classify(&Frame::command(parts))
    }

    #[test]
    fn commands_are_classified_by_what_they_touch() {
        assert_eq!(of(&["get", "k"]), Action::Key(1));
        assert_eq!(of(&["PING"]), Action::Local(Frame::Simple("PONG".into())));
        assert_eq!(
            of(&["MGET", "a", "b"]),
            Action::Split {
                step: 1,
                merge: Merge::Values
            }
        );
        assert_eq!(
            of(&["mset", "a", "1", "b", "2"]),
            Action::Split {
                step: 2,
                merge: Merge::AllOk
            }
        );
        assert!(matches!(of(&["MSET", "a", "1", "b"]), Action::Refuse(_)));
        assert!(matches!(of(&["GET"]), Action::Refuse(_)));
        assert_eq!(
            of(&["EVAL", "return 1", "2", "a", "b"]),
            Action::SameShard {
                first: 3,
                count: Some(2),
                step: 1
            }
        );
    }

    #[test]
    fn unproxiable_commands_are_refused_with_the_reason() {
        for (cmd, why) in [
            ("MULTI", "transactions cannot span shards"),
            ("SUBSCRIBE", "pub/sub"),
            ("KEYS", "every shard"),
            ("BLPOP", "blocking"),
        ] {
            let Action::Refuse(Frame::Error(msg)) = of(&[cmd, "x"]) else {
                panic!("{cmd} was not refused");
            };
            let msg = String::from_utf8(msg.to_vec()).unwrap();
            assert!(msg.starts_with("ERR sheave-proxy:"), "{msg}");
            assert!(msg.contains(cmd) && msg.contains(why), "{msg}");
        }
        let Action::Refuse(Frame::Error(msg)) = of(&["FROB"]) else {
            panic!("an unknown command was not refused");
        };
        assert_eq!(
            &msg[..],
            b"ERR sheave-proxy: unknown or unsupported command 'FROB'"
        );
    }

    #[test]
    fn hello_is_answered_in_the_version_asked_for() {
        let Action::Local(Frame::Map(pairs)) = of(&["HELLO", "3"]) else {
            panic!("HELLO 3 not answered");
        };
        assert!(pairs.contains(&(Frame::bulk("proto"), Frame::Integer(3))));
        assert!(
            matches!(of(&["HELLO", "4"]), Action::Refuse(Frame::Error(m)) if m.starts_with(b"NOPROTO"))
        );
    }

    #[test]
    fn counters_are_not_retried_but_reads_and_sets_are() {
        assert!(is_idempotent(b"get"));
        assert!(is_idempotent(b"SET"));
        assert!(is_idempotent(b"MGET"));
        assert!(!is_idempotent(b"incr"));
        assert!(!is_idempotent(b"LPUSH"));
    }
}
