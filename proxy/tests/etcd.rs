//! etcd discovery against a real `etcd` (Debian `etcd-server`), started here on loopback ports
//! with a temporary data directory: the initial set, puts, changes and deletes seen one watch
//! event each, a resync after etcd is killed and comes back changed, and a balancer that sends
//! nothing to an endpoint once its removal is seen.

mod support;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use sheave_core::{Runtime, time};
use sheave_http::{Body, Client, Server};
use sheave_middleware::balance::{Backoff, Balance};
use sheave_middleware::discover::Change;
use sheave_proto::ServerHandle;
use sheave_proxy::discovery::{Endpoint, Etcd, EtcdDiscovery, etcd};
use sheave_service::{Error, NewService, ServiceExt, service_fn};
use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// The longest any one change may take to arrive (generous: 2 shared cores).
const WITHIN: Duration = Duration::from_secs(20);

fn have_etcd() -> bool {
    support::have("etcd", "etcd-server")
}

/// A real single-member etcd on loopback; killed (and its data removed) when dropped.
struct EtcdServer {
    data: PathBuf,
    peer_port: u16,
    client: SocketAddr,
    child: Option<Child>,
}

impl EtcdServer {
    fn start() -> EtcdServer {
        let data = std::env::temp_dir().join(format!(
            "sheave-etcd-{}-{}",
            std::process::id(),
            support::free_port()
        ));
        let mut etcd = EtcdServer {
            data,
            peer_port: support::free_port(),
            client: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
        };
        etcd.start_on(support::free_port());
        etcd
    }

    /// Starts it (on its data, so with its keys and revisions) serving clients on `port`,
    /// and waits — on its log, not on a clock — until it serves them.
    fn start_on(&mut self, port: u16) {
        assert!(self.child.is_none(), "already running");
        self.client = SocketAddr::from(([127, 0, 0, 1], port));
        let client = format!("http://{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut child = Command::new("etcd")
            .args(["--name", "sheave-test", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("sheave-test={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcd");
        let stderr = child.stderr.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read it all (a full pipe would stall etcd); say when it serves clients.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready to serve client requests") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("etcd did not become ready");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn at(port: u16, weight: u32) -> Endpoint {
    Endpoint {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        weight,
    }
}

fn insert(name: &str, port: u16, weight: u32) -> Change<String, Endpoint> {
    Change::Insert(name.to_string(), at(port, weight))
}

fn remove(name: &str) -> Change<String, Endpoint> {
    Change::Remove(name.to_string())
}

fn source(etcd: SocketAddr) -> EtcdDiscovery {
    Etcd::new(vec![etcd], "/services/web/")
        .backoff(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .build()
        .unwrap()
}

/// The next change, within [`WITHIN`].
async fn next(changes: &mut EtcdDiscovery) -> Change<String, Endpoint> {
    match time::timeout(WITHIN, changes.next()).await {
        Ok(Some(change)) => change,
        Ok(None) => panic!("the etcd source ended"),
        Err(_) => panic!("no change within {WITHIN:?}"),
    }
}

/// How many calls of gRPC `method` the etcd at `member` has started (its `/metrics`): the
/// gateway's `/v3/kv/range` is a `Range`, `/v3/watch` a `Watch`.
async fn started(member: SocketAddr, method: &str) -> u64 {
    let request = http::Request::get("/metrics")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let client = Client::<Full<Bytes>>::builder().build(member);
    let response = client.oneshot(request).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let line = format!("grpc_server_started_total{{grpc_method=\"{method}\",");
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with(&line))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn etcd_changes_arrive_one_watch_event_each_and_a_restart_resyncs() {
    if !have_etcd() {
        return;
    }
    let mut server = EtcdServer::start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let registry = server.client;
        etcd::put(registry, "/services/web/a", "127.0.0.1:7001")
            .await
            .unwrap();
        etcd::put(registry, "/services/web/b", "127.0.0.1:7002 weight=2")
            .await
            .unwrap();
        // Not under the prefix, and under it but not an endpoint: neither is one.
        etcd::put(registry, "/services/webx", "127.0.0.1:7009")
            .await
            .unwrap();
        etcd::put(registry, "/services/web/junk", "not an address")
            .await
            .unwrap();

        let mut changes = source(registry);
        assert_eq!(next(&mut changes).await, insert("a", 7001, 1));
        assert_eq!(next(&mut changes).await, insert("b", 7002, 2));

        // Added, changed, removed: each is the next change, as its watch event arrives.
        etcd::put(registry, "/services/web/c", "127.0.0.1:7003")
            .await
            .unwrap();
        assert_eq!(next(&mut changes).await, insert("c", 7003, 1));
        etcd::put(registry, "/services/web/b", "127.0.0.1:7012")
            .await
            .unwrap();
        assert_eq!(next(&mut changes).await, insert("b", 7012, 1));
        etcd::put(registry, "/services/web/b", "127.0.0.1:7012")
            .await
            .unwrap();
        etcd::delete(registry, "/services/web/a").await.unwrap();
        assert_eq!(
            next(&mut changes).await,
            remove("a"),
            "a put of the same endpoint changes nothing"
        );
        etcd::put(registry, "/services/web/c", "garbage")
            .await
            .unwrap();
        assert_eq!(
            next(&mut changes).await,
            remove("c"),
            "a bad value is no endpoint"
        );
        etcd::put(registry, "/services/web/c", "127.0.0.1:7003")
            .await
            .unwrap();
        assert_eq!(next(&mut changes).await, insert("c", 7003, 1));
        // All of it through one range and one watch: nothing was re-ranged.
        assert_eq!(started(registry, "Range").await, 1);
        assert_eq!(started(registry, "Watch").await, 1);

        // Killed; changed while the source cannot see it (etcd back on another port, on the
        // same data, so revisions go on); killed again; back where the source looks.
        let port = registry.port();
        server.kill();
        let elsewhere = support::free_port();
        server.start_on(elsewhere);
        let hidden = server.client;
        etcd::delete(hidden, "/services/web/b").await.unwrap();
        etcd::put(hidden, "/services/web/c", "127.0.0.1:7013 weight=3")
            .await
            .unwrap();
        etcd::put(hidden, "/services/web/d", "127.0.0.1:7004")
            .await
            .unwrap();
        server.kill();
        server.start_on(port);

        // The re-range yields the difference, and only it.
        assert_eq!(next(&mut changes).await, remove("b"));
        assert_eq!(next(&mut changes).await, insert("c", 7013, 3));
        assert_eq!(next(&mut changes).await, insert("d", 7004, 1));
        // The new watch starts after the re-range: the hidden changes are not replayed.
        etcd::put(registry, "/services/web/e", "127.0.0.1:7005")
            .await
            .unwrap();
        assert_eq!(next(&mut changes).await, insert("e", 7005, 1));
        assert_eq!(
            started(registry, "Range").await,
            1,
            "one re-range after the restart"
        );
        assert_eq!(started(registry, "Watch").await, 1);
    });
}

#[test]
fn a_watch_message_over_the_bound_ends_the_watch_and_the_source_re_ranges() {
    if !have_etcd() {
        return;
    }
    let server = EtcdServer::start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let registry = server.client;
        etcd::put(registry, "/services/web/a", "127.0.0.1:7001")
            .await
            .unwrap();
        let mut changes = Etcd::new(vec![registry], "/services/web/")
            .backoff(Backoff::exponential(
                Duration::from_millis(20),
                Duration::from_millis(200),
            ))
            .max_message(1024)
            .build()
            .unwrap();
        assert_eq!(next(&mut changes).await, insert("a", 7001, 1));
        // Some 5 KiB of base64 in one event: the watch refuses to buffer it and ends.
        let big = "x".repeat(4000);
        etcd::put(registry, "/services/web/big", &big)
            .await
            .unwrap();
        etcd::put(registry, "/services/web/b", "127.0.0.1:7002")
            .await
            .unwrap();
        // Whether b comes from the re-range or from the new watch, it comes, and alone.
        assert_eq!(next(&mut changes).await, insert("b", 7002, 1));
        assert_eq!(started(registry, "Range").await, 2, "one re-range");
        assert_eq!(started(registry, "Watch").await, 2);
    });
}

/// A loopback HTTP server counting the requests it answers.
fn counting_server(count: Arc<AtomicUsize>) -> (SocketAddr, ServerHandle) {
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    sheave_core::spawn(server.serve(move |_peer: SocketAddr| {
        let count = count.clone();
        async move {
            Ok::<_, Error>(service_fn(move |_req: http::Request<Body>| {
                count.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, Error>(http::Response::new(Full::new(Bytes::from("ok")))) }
            }))
        }
    }));
    (addr, handle)
}

#[test]
fn a_balancer_fed_by_etcd_sends_nothing_to_an_endpoint_once_its_removal_is_seen() {
    if !have_etcd() {
        return;
    }
    let server = EtcdServer::start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let registry = server.client;
        let (a_count, b_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        let (a, a_handle) = counting_server(a_count.clone());
        let (b, b_handle) = counting_server(b_count.clone());
        etcd::put(registry, "/services/web/a", &a.to_string())
            .await
            .unwrap();
        etcd::put(registry, "/services/web/b", &b.to_string())
            .await
            .unwrap();

        // What the balancer has taken from discovery, seen as it takes it.
        let removed = Rc::new(RefCell::new(Vec::<String>::new()));
        let seen = removed.clone();
        let changes = source(registry).inspect(move |change| {
            if let Change::Remove(name) = change {
                seen.borrow_mut().push(name.clone());
            }
        });
        let connector = Client::<Full<Bytes>>::builder();
        let lb = Balance::builder()
            .round_robin()
            .build(changes, move |e: Endpoint| {
                let connector = connector.clone();
                async move { connector.new_service(e.address).await }
            });
        let get = || {
            let lb = &lb;
            async move {
                let request = http::Request::get("/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = lb.oneshot(request).await?;
                response.into_body().collect().await?;
                Ok::<_, Error>(())
            }
        };

        // Both serve (the balancer waits for discovery's first endpoints).
        let mut sent = 0;
        while count(&a_count) == 0 || count(&b_count) == 0 {
            assert!(sent < 1000, "both endpoints never served");
            get().await.unwrap();
            sent += 1;
        }

        // b is deregistered; requests go on until the balancer has taken the removal.
        etcd::delete(registry, "/services/web/b").await.unwrap();
        let deadline = time::now() + WITHIN;
        while removed.borrow().is_empty() {
            assert!(
                time::now() < deadline,
                "the removal never reached the balancer"
            );
            get().await.unwrap();
        }
        assert_eq!(*removed.borrow(), ["b"]);
        let (a_before, b_before) = (count(&a_count), count(&b_count));
        for _ in 0..200 {
            get().await.unwrap();
        }
        assert_eq!(count(&b_count), b_before, "a removed endpoint got requests");
        assert_eq!(count(&a_count), a_before + 200);
        a_handle.shutdown();
        b_handle.shutdown();
    });
}

/// The proxy itself, one thread, an HTTP cluster discovered in etcd: endpoints added,
/// removed and changed in etcd during a run. Traffic reaches an added endpoint, and nothing
/// more reaches a removed (or moved) one once a later change is seen to apply — the watch
/// delivers in revision order and the balancer applies in order, so an endpoint put after a
/// delete serving a request means the delete was applied. etcd's own metrics show the
/// proxy's one range and one watch carried every change.
#[test]
fn the_proxy_follows_endpoints_added_removed_and_changed_in_etcd() {
    if !have_etcd() {
        return;
    }
    let server = EtcdServer::start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let registry = server.client;
        let counts: Vec<Arc<AtomicUsize>> = (0..5).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let backends: Vec<(SocketAddr, ServerHandle)> =
            counts.iter().map(|c| counting_server(c.clone())).collect();
        let count = |i: usize| counts[i].load(Ordering::Relaxed);
        let key = |name: &str| format!("/services/web/{name}");
        etcd::put(registry, &key("a"), &backends[0].0.to_string())
            .await
            .unwrap();
        etcd::put(registry, &key("b"), &backends[1].0.to_string())
            .await
            .unwrap();
        let (ranges, watches) = (
            started(registry, "Range").await,
            started(registry, "Watch").await,
        );
        let proxy = support::proxy(&format!(
            r#"
            [[listener]]
            name = "web"
            address = "127.0.0.1:0"
            protocol = "http"
            cluster = "web"

            [[cluster]]
            name = "web"
            policy = "round-robin"
            etcd = {{ members = ["{registry}"], prefix = "/services/web/" }}
            "#
        ));
        let client = Client::<Full<Bytes>>::builder().build(proxy.addr("web").unwrap());
        let get = || {
            let client = &client;
            async move {
                let request = http::Request::get("/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = client.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        };
        // Sends requests until `$until` holds, bounded in time.
        macro_rules! send_until {
            ($until:expr, $what:expr) => {{
                let deadline = time::now() + WITHIN;
                while !$until {
                    assert!(time::now() < deadline, "{}: not within {WITHIN:?}", $what);
                    get().await;
                }
            }};
        }
        send_until!(
            count(0) > 0 && count(1) > 0,
            "both registered endpoints serve"
        );

        // Added: c serves.
        etcd::put(registry, &key("c"), &backends[2].0.to_string())
            .await
            .unwrap();
        send_until!(count(2) > 0, "the added endpoint serves");

        // Removed: b is deleted, then d put; once d serves, b's removal has been applied.
        etcd::delete(registry, &key("b")).await.unwrap();
        etcd::put(registry, &key("d"), &backends[3].0.to_string())
            .await
            .unwrap();
        send_until!(count(3) > 0, "the endpoint put after the delete serves");
        let b_after = count(1);

        // Changed: a moves to the fifth backend; once it serves there, a's old address is done.
        etcd::put(registry, &key("a"), &backends[4].0.to_string())
            .await
            .unwrap();
        send_until!(count(4) > 0, "the moved endpoint serves at its new address");
        let a_after = count(0);
        let before: usize = (0..5).map(count).sum();
        for _ in 0..300 {
            get().await;
        }
        assert_eq!(
            count(1),
            b_after,
            "the removed endpoint got requests after its removal"
        );
        assert_eq!(
            count(0),
            a_after,
            "the moved endpoint's old address got requests"
        );
        // Round robin over c, d and the moved a: each took its third.
        for i in [2, 3, 4] {
            assert!(count(i) >= 90, "backend {i}: {}", count(i));
        }
        assert_eq!((0..5).map(count).sum::<usize>(), before + 300);
        assert_eq!(
            (
                started(registry, "Range").await - ranges,
                started(registry, "Watch").await - watches
            ),
            (1, 1),
            "every change came on the proxy's one watch, none by re-reading"
        );
        proxy.drain();
        proxy.wait();
        for (_, handle) in backends {
            handle.shutdown();
        }
    });
}

/// A RESP (ketama) cluster whose shards are registered in etcd: shards added, removed and
/// moved during a run join and leave the ring — every key lands on the shard the ring of the
/// registered names says, and a removed shard gets nothing once a key that was its own is
/// seen to land elsewhere.
#[test]
fn a_ketama_cluster_follows_its_shards_in_etcd() {
    use sheave_proto::resp::Frame;
    use sheave_proxy::ketama::{KeyHash, Ring};
    use support::{Conn, RedisServer};
    if !have_etcd() || !support::have("redis-server", "redis-server") {
        return;
    }
    let server = EtcdServer::start();
    let registry = server.client;
    let redis: Vec<RedisServer> = (0..4).map(|_| RedisServer::start()).collect();
    let mut direct: Vec<Conn> = redis.iter().map(|r| Conn::open(r.addr)).collect();
    let rt = Runtime::new().unwrap();
    let put = |name: &str, shard: usize| {
        let value = redis[shard].addr.to_string();
        rt.block_on(etcd::put(registry, &format!("/shards/{name}"), &value))
            .unwrap();
    };
    put("a", 0);
    put("b", 1);
    let proxy = support::proxy(&format!(
        r#"
        [[listener]]
        name = "redis"
        address = "127.0.0.1:0"
        protocol = "resp"
        cluster = "cache"

        [[cluster]]
        name = "cache"
        hash = "md5"
        etcd = {{ members = ["{registry}"], prefix = "/shards/" }}
        "#
    ));
    let mut conn = Conn::open(proxy.addr("redis").unwrap());
    // The shard (a redis index) `key` has on the ring of these (name, redis) shards.
    let home = |shards: &[(&str, usize)], key: &str| {
        let names: Vec<(&str, u32)> = shards.iter().map(|(n, _)| (*n, 1)).collect();
        shards[Ring::new(&names, KeyHash::Md5, None).shard(key.as_bytes())].1
    };
    let exists = |direct: &mut Vec<Conn>, shard: usize, key: &str| {
        direct[shard].cmd(&["EXISTS", key]) == Frame::Integer(1)
    };
    // SETs a key that the ring `shards` puts on `shard` until it lands there (the proxy
    // has applied the change), bounded in time.
    let mut n = 0;
    let mut settle =
        |conn: &mut Conn, direct: &mut Vec<Conn>, shards: &[(&str, usize)], shard: usize| {
            let key = loop {
                n += 1;
                let key = format!("probe:{n}");
                if home(shards, &key) == shard {
                    break key;
                }
            };
            let deadline = std::time::Instant::now() + WITHIN;
            loop {
                // Before the first shards arrive the proxy answers an error: try again.
                let _ = conn.cmd(&["SET", &key, "p"]);
                if exists(direct, shard, &key) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{key} never reached shard {shard}"
                );
            }
        };
    // 200 keys through the proxy, each found only on its shard of `shards`.
    let check =
        |conn: &mut Conn, direct: &mut Vec<Conn>, shards: &[(&str, usize)], prefix: &str| {
            for i in 0..200 {
                let key = format!("{prefix}:{i}");
                assert_eq!(conn.cmd(&["SET", &key, "v"]), Frame::ok());
                let at = home(shards, &key);
                for s in 0..direct.len() {
                    assert_eq!(
                        exists(direct, s, &key),
                        s == at,
                        "{key}: shard {s}, its home {at}"
                    );
                }
            }
        };

    let two = [("a", 0), ("b", 1)];
    settle(&mut conn, &mut direct, &two, 0);
    settle(&mut conn, &mut direct, &two, 1);
    check(&mut conn, &mut direct, &two, "two");

    // Added: c joins the ring.
    put("c", 2);
    let three = [("a", 0), ("b", 1), ("c", 2)];
    settle(&mut conn, &mut direct, &three, 2);
    check(&mut conn, &mut direct, &three, "three");

    // Removed: b leaves; once a key of b's lands on its new home, b gets nothing more.
    rt.block_on(etcd::delete(registry, "/shards/b")).unwrap();
    let ac = [("a", 0), ("c", 2)];
    let key = (0..)
        .map(|i| format!("moved:{i}"))
        .find(|k| home(&three, k) == 1)
        .unwrap();
    let deadline = std::time::Instant::now() + WITHIN;
    while !exists(&mut direct, home(&ac, &key), &key) {
        assert_eq!(conn.cmd(&["SET", &key, "m"]), Frame::ok());
        assert!(
            std::time::Instant::now() < deadline,
            "b's removal never applied"
        );
    }
    let b_keys = direct[1].cmd(&["DBSIZE"]);
    check(&mut conn, &mut direct, &ac, "after-b");
    assert_eq!(
        direct[1].cmd(&["DBSIZE"]),
        b_keys,
        "the removed shard got writes"
    );

    // Changed: a moves to a fresh redis (the same name, so the same place on the ring).
    put("a", 3);
    let moved = [("a", 3), ("c", 2)];
    settle(&mut conn, &mut direct, &moved, 3);
    let old_a = direct[0].cmd(&["DBSIZE"]);
    check(&mut conn, &mut direct, &moved, "moved");
    assert_eq!(
        direct[0].cmd(&["DBSIZE"]),
        old_a,
        "a's old address got writes"
    );
    proxy.drain();
    proxy.wait();
}
