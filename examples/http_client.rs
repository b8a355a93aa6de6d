//! A balanced HTTP client over several URLs: p2c peak-EWMA over one `Client` per endpoint,
//! idempotent retries and a deadline, classifying responses with the HTTP classifier (5xx is a
//! failure, 503/429 overloaded).
//!
//! Start two servers and point the client at both:
//!
//! ```text
//! cargo run --release --example http                   # prints "listening on 127.0.0.1:PORT1 ..."
//! cargo run --release --example http                   # prints "listening on 127.0.0.1:PORT2 ..."
//! cargo run --release --example http_client -- http://127.0.0.1:PORT1/ http://127.0.0.1:PORT2/
//! ```
//!
//! It sends `--requests N` GETs (default 1000) of the first URL's path from 16 concurrent
//! loops, spread over every URL's endpoint, then prints
//! `N requests, F failed, R req/s` and exits 0 if none failed. `--http2` speaks h2c; `--auto`
//! asks each endpoint once whether it speaks h2c (`Version::Auto`) and speaks what it answers.

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Full};
use sheave::Runtime;
use sheave::http::Client;
use sheave::http::classify::{HttpClassifier, HttpRetry};
use sheave::http::client::Version;
use sheave::middleware::ServiceBuilderExt;
use sheave::middleware::balance::Balance;
use sheave::middleware::discover;
use sheave::middleware::retry::{RetryConfig, RetryLayer};
use sheave::service::{ServiceBuilder, ServiceExt};
use std::cell::Cell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

fn main() {
    let mut urls: Vec<http::Uri> = Vec::new();
    let mut requests: u64 = 1000;
    let mut version = Version::Http1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => {
                requests = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--requests N")
            }
            "--http2" => version = Version::Http2,
            "--auto" => version = Version::Auto,
            url => urls.push(url.parse().expect("a URL like http://127.0.0.1:8080/")),
        }
    }
    if urls.is_empty() {
        eprintln!("usage: http_client [--requests N] [--http2 | --auto] URL...");
        std::process::exit(2);
    }
    let addrs: Vec<SocketAddr> = urls
        .iter()
        .map(|url| {
            let authority = url.authority().expect("a URL with host:port").as_str();
            let with_port = if url.port().is_some() {
                authority.to_string()
            } else {
                format!("{authority}:80")
            };
            with_port
                .to_socket_addrs()
                .expect("resolves")
                .next()
                .expect("an address")
        })
        .collect();
    let path = urls[0]
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or("/".into());

    let rt = Runtime::new().expect("a runtime");
    let (sent, failed) = (Cell::new(0u64), Cell::new(0u64));
    let start = Instant::now();
    rt.block_on(async {
        // One `Client` per endpoint, made by the builder (a connector).
        let connector = Client::<Full<Bytes>>::builder()
            .version(version)
            .pool_size(4);
        let endpoints = discover::fixed(addrs.iter().map(|a| (*a, *a)));
        let balance = Balance::builder()
            .classifier(HttpClassifier)
            .build(endpoints, connector);
        // Outermost first: the deadline covers every attempt; retries only idempotent requests.
        let client = ServiceBuilder::new()
            .timeout(Duration::from_secs(2))
            .layer(RetryLayer::new(RetryConfig::new().max_attempts(3)).policy(HttpRetry::new()))
            .service(balance);
        let workers = (0..16).map(|_| async {
            while sent.get() < requests {
                sent.set(sent.get() + 1);
                let req = http::Request::get(path.as_str())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let ok = match client.oneshot(req).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        false
                    }
                };
                if !ok {
                    failed.set(failed.get() + 1);
                }
            }
        });
        join_all(workers).await;
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} requests, {} failed, {:.0} req/s",
        sent.get(),
        failed.get(),
        sent.get() as f64 / secs
    );
    if failed.get() > 0 {
        std::process::exit(1);
    }
}
