//! A typed redis client: runs a few commands against any redis-protocol server and prints
//! the replies.
//!
//! ```text
//! cargo run --release --example kv &                     # or: redis-server --port 6380
//! cargo run --release --example kv_client -- 127.0.0.1:6380
//! ```
//!
//! It uses `sheave_proto::resp::Client`: a pipelined client `Service` over one connection with
//! `get`/`set`/`incr`/... helpers. Concurrent calls share the connection and go out batched.
//! It opens with `HELLO 3` (RESP3, naming the connection `kv_client`), and falls back to RESP2
//! on a server that refuses it.

use futures::future::join_all;
use sheave::Runtime;
use sheave_proto::resp::{Client, Hello};
use std::net::SocketAddr;
use std::time::Duration;

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6380".into())
        .parse()
        .expect("an address like 127.0.0.1:6380");
    let rt = Runtime::new().expect("runtime");
    let result = rt.block_on(async {
        let hello = Hello::new().name("kv_client");
        let redis = Client::connect_hello(addr, Default::default(), hello).await?;
        println!("protocol -> {:?}", redis.protocol());
        println!("PING -> {}", redis.ping().await?);
        redis.set("sheave:greeting", "hello").await?;
        let got = redis.get("sheave:greeting").await?;
        println!(
            "GET sheave:greeting -> {:?}",
            got.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
        redis
            .set_ex("sheave:short", "lived", Duration::from_secs(10))
            .await?;
        // 100 INCRs in flight at once: pipelined over the one connection.
        let incrs = join_all((0..100).map(|_| redis.incr("sheave:counter"))).await;
        let last = incrs
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max();
        println!("INCR x100 -> up to {last:?}");
        let values = redis.mget(&["sheave:greeting", "sheave:missing"]).await?;
        println!("MGET -> {values:?}");
        println!(
            "DEL -> {}",
            redis
                .del(&["sheave:greeting", "sheave:short", "sheave:counter"])
                .await?
        );
        Ok::<_, sheave::Error>(())
    });
    if let Err(e) = result {
        eprintln!("kv_client: {e}");
        std::process::exit(1);
    }
}
