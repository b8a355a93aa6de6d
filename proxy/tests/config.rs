//! Configs: the example is accepted, and every bad config is refused with the field and
//! why — by the library and by the binary, before anything starts.

mod support;

use sheave_proxy::config::{Config, Policy, Protocol};
use std::process::Command;

const GOOD: &str = r#"
[[listener]]
name = "redis"
address = "127.0.0.1:0"
protocol = "resp"
cluster = "cache"

[[cluster]]
name = "cache"
endpoints = ["127.0.0.1:6379", "127.0.0.1:6380"]
"#;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proxy.toml")
}

#[test]
fn the_example_config_is_accepted() {
    let config = Config::load(&example()).unwrap();
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(config.listeners[0].protocol, Protocol::Resp);
    assert_eq!(config.listeners[1].protocol, Protocol::Tcp);
    assert_eq!(config.listeners[2].protocol, Protocol::Http);
    assert_eq!(config.routes[0].path_prefix, "/v1/");
    assert!(config.admin.is_some());
    assert_eq!(config.cluster("echo").unwrap().policy, Policy::P2cPeakEwma);
    assert_eq!(config.clusters[0].retry.max_attempts, 3);
}

#[test]
fn defaults_fill_what_is_not_said() {
    let config = Config::parse(GOOD).unwrap();
    let c = &config.clusters[0];
    assert_eq!(c.policy, Policy::Ketama);
    assert_eq!(c.try_timeout, std::time::Duration::from_millis(250));
    assert_eq!(c.ejection.consecutive_failures, 3);
    assert_eq!(config.listeners[0].max_in_flight, 256);
}

/// `GOOD` with `from` replaced by `to`; the result must be refused at `field` for a
/// reason that contains `why`.
#[track_caller]
fn refused(from: &str, to: &str, field: &str, why: &str) {
    assert!(GOOD.contains(from), "{from:?} is not in the config");
    let text = GOOD.replacen(from, to, 1);
    let err = Config::parse(&text).expect_err(&format!("accepted: {to}"));
    assert_eq!(err.field, field, "{to}: {err}");
    assert!(err.reason.contains(why), "{to}: {err}");
}

#[test]
fn a_bad_config_is_refused_with_the_field_and_why() {
    refused(
        r#"cluster = "cache""#,
        r#"cluster = "none""#,
        "listener[0].cluster",
        r#"no cluster is named "none""#,
    );
    refused(
        r#"address = "127.0.0.1:0""#,
        r#"address = "127.0.0.1""#,
        "listener[0].address",
        "invalid socket address",
    );
    refused(
        r#"address = "127.0.0.1:0""#,
        r#"adress = "127.0.0.1:0""#,
        "listener[0].adress",
        "unknown field `adress`",
    );
    refused(
        r#"protocol = "resp""#,
        r#"protocol = "udp""#,
        "listener[0].protocol",
        "unknown variant `udp`",
    );
    refused(
        r#"protocol = "resp""#,
        "",
        "listener[0].protocol",
        "missing field `protocol`",
    );
    refused(
        r#"endpoints = ["127.0.0.1:6379", "127.0.0.1:6380"]"#,
        "endpoints = []",
        "cluster[0].endpoints",
        "at least one endpoint",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        r#""127.0.0.1:6379"]"#,
        "cluster[0].endpoints[1]",
        "listed twice",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        r#"{ address = "127.0.0.1:6380", weight = 0 }]"#,
        "cluster[0].endpoints[1].weight",
        "at least 1",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\nconnect_timeout = \"5 parsecs\"",
        "cluster[0].connect_timeout",
        "unknown unit",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\ntry_timeout = \"2s\"",
        "cluster[0].try_timeout",
        "longer than request_timeout",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\npolicy = \"round-robin\"",
        "listener[0].cluster",
        "a resp listener needs a ketama cluster",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\n[cluster.retry]\nbudget_ratio = 1.5",
        "cluster[0].retry.budget_ratio",
        "not between 0 and 1",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\n[cluster.ejection]\nmax_share = 0.0",
        "cluster[0].ejection.max_share",
        "not in (0, 1]",
    );
    refused(
        r#"name = "redis""#,
        r#"name = "red is""#,
        "listener[0].name",
        "use letters, digits",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\nendpoints_file = \"/nonexistent/shards\"",
        "cluster[0].endpoints_file",
        "/nonexistent/shards",
    );
    refused(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\ndns = \"backends:80\"",
        "cluster[0].dns",
        "a ketama cluster",
    );
    // A ketama cluster takes shards from etcd (or a file): they join and leave its ring.
    let etcd = GOOD.replacen(
        r#""127.0.0.1:6380"]"#,
        "\"127.0.0.1:6380\"]\netcd = { members = [\"127.0.0.1:2379\"], prefix = \"/s/\" }",
        1,
    );
    Config::parse(&etcd).unwrap();
    refused(
        "[[listener]]",
        "[admin]\naddress = \"0.0.0.0:9901\"\n[[listener]]",
        "admin.address",
        "not a loopback address",
    );
}

/// A TCP cluster with `discovery` as its only endpoints source, which must be refused at
/// `field` for a reason that contains `why`.
#[track_caller]
fn discovery_refused(discovery: &str, field: &str, why: &str) {
    let text = format!(
        "[[listener]]\nname = \"l4\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
         cluster = \"tier\"\n[[cluster]]\nname = \"tier\"\npolicy = \"round-robin\"\n{discovery}\n"
    );
    let err = Config::parse(&text).expect_err(&format!("accepted: {discovery}"));
    assert_eq!(err.field, field, "{discovery}: {err}");
    assert!(err.reason.contains(why), "{discovery}: {err}");
}

#[test]
fn a_bad_discovery_source_is_refused_at_start_with_the_field() {
    discovery_refused(
        "etcd = { members = [], prefix = \"/s/\" }",
        "cluster[0].etcd.members",
        "at least one etcd member",
    );
    discovery_refused(
        "etcd = { members = [\"127.0.0.1:2379\", \"127.0.0.1:0\"], prefix = \"/s/\" }",
        "cluster[0].etcd.members[1]",
        "port 0",
    );
    discovery_refused(
        "etcd = { members = [\"127.0.0.1:2379\"], prefix = \"\" }",
        "cluster[0].etcd.prefix",
        "must not be empty",
    );
    discovery_refused(
        "etcd = { members = [\"127.0.0.1:2379\"], prefix = \"/s/\", request_timeout = \"0s\" }",
        "cluster[0].etcd.request_timeout",
        "longer than zero",
    );
    discovery_refused(
        "etcd = { members = [\"127.0.0.1:2379\"], prefixx = \"/s/\" }",
        "cluster[0].etcd",
        "unknown field `prefixx`",
    );
    discovery_refused(
        "endpoints_file = \"/nonexistent/sheave-endpoints\"",
        "cluster[0].endpoints_file",
        "/nonexistent/sheave-endpoints",
    );
    let dir = std::env::temp_dir().join(format!("sheave-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints");
    std::fs::write(&file, "127.0.0.1:7001\n127.0.0.1:7001\n").unwrap();
    discovery_refused(
        &format!("endpoints_file = \"{}\"", file.display()),
        "cluster[0].endpoints_file",
        "line 2",
    );
    // The good ones start.
    std::fs::write(&file, "127.0.0.1:7001\n").unwrap();
    for good in [
        format!("endpoints_file = \"{}\"", file.display()),
        "etcd = { members = [\"127.0.0.1:2379\"], prefix = \"/s/\" }".to_string(),
    ] {
        let text = format!(
            "[[listener]]\nname = \"l4\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
             cluster = \"tier\"\n[[cluster]]\nname = \"tier\"\npolicy = \"round-robin\"\n{good}\n"
        );
        Config::parse(&text).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_binary_refuses_a_bad_config_before_starting_anything() {
    let dir = std::env::temp_dir().join(format!("sheave-proxy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        GOOD.replace(r#"cluster = "cache""#, r#"cluster = "none""#),
    )
    .unwrap();
    let out = support::run(
        Command::new(env!("CARGO_BIN_EXE_sheave-proxy"))
            .arg("--config")
            .arg(&bad),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"refused: listener[0].cluster: no cluster is named "none""#),
        "{stderr}"
    );
    let out = support::run(
        Command::new(env!("CARGO_BIN_EXE_sheave-proxy"))
            .arg("--config")
            .arg(example())
            .arg("--check"),
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_bad_hedge_or_pool_bound_is_refused_with_the_field() {
    let http = |cluster: &str| {
        format!(
            "[[listener]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             cluster = \"site\"\n[[cluster]]\nname = \"site\"\npolicy = \"round-robin\"\n\
             endpoints = [\"127.0.0.1:8080\"]\n{cluster}\n"
        )
    };
    for (hedge, field, why) in [
        (
            "hedge = { percentile = 1.0 }",
            "cluster[0].hedge.percentile",
            "not in (0, 1)",
        ),
        (
            "hedge = { percentile = 0.0 }",
            "cluster[0].hedge.percentile",
            "not in (0, 1)",
        ),
        (
            "hedge = { min_samples = 0 }",
            "cluster[0].hedge.min_samples",
            "at least 1",
        ),
        (
            "hedge = { window = \"0s\" }",
            "cluster[0].hedge.window",
            "longer than zero",
        ),
        (
            "hedge = { budget_ratio = 2.0 }",
            "cluster[0].hedge.budget_ratio",
            "between 0 and 1",
        ),
        (
            "hedge = { after = \"20ms\" }",
            "cluster[0].hedge",
            "unknown field `after`",
        ),
    ] {
        let err = Config::parse(&http(hedge)).expect_err(&format!("accepted: {hedge}"));
        assert_eq!(err.field, field, "{hedge}: {err}");
        assert!(err.reason.contains(why), "{hedge}: {err}");
    }
    // The upstream pool's bounds, likewise.
    for (pool, field, why) in [
        (
            "pool_idle_timeout = \"0s\"",
            "cluster[0].pool_idle_timeout",
            "longer than zero",
        ),
        (
            "pool_size = 4\npool_max_idle = 5",
            "cluster[0].pool_max_idle",
            "more than pool_size",
        ),
    ] {
        let err = Config::parse(&http(pool)).expect_err(&format!("accepted: {pool}"));
        assert_eq!(err.field, field, "{pool}: {err}");
        assert!(err.reason.contains(why), "{pool}: {err}");
    }
    let good = Config::parse(&http("hedge = { percentile = 0.9, window = \"5s\" }")).unwrap();
    assert_eq!(
        good.clusters[0].pool_idle_timeout,
        std::time::Duration::from_secs(30)
    );
    let hedge = good.clusters[0].hedge.as_ref().unwrap();
    assert_eq!((hedge.percentile, hedge.min_samples), (0.9, 100));
    assert_eq!(hedge.window, std::time::Duration::from_secs(5));
    // A tcp connection cannot be hedged, and a ketama key has one shard.
    discovery_refused(
        "endpoints = [\"127.0.0.1:8080\"]\nhedge = {}",
        "listener[0].cluster",
        "cannot be hedged",
    );
    let resp = "[[listener]]\nname = \"cache\"\naddress = \"127.0.0.1:0\"\nprotocol = \"resp\"\n\
                cluster = \"shards\"\n[[cluster]]\nname = \"shards\"\n\
                endpoints = [\"127.0.0.1:6379\"]\nhedge = {}\n";
    let err = Config::parse(resp).expect_err("a hedged ketama cluster");
    assert_eq!(err.field, "cluster[0].hedge", "{err}");
    assert!(err.reason.contains("only http clusters hedge"), "{err}");
}
