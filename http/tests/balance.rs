//! `Balance` + `Retry` over three HTTP servers, one of them killed mid-run: no idempotent
//! request fails. Real loopback servers on their own runtime threads; bounded; no sleeps.

mod support;

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Full};
use sheave_core::Runtime;
use sheave_http::Client;
use sheave_http::classify::{HttpClassifier, HttpRetry};
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::balance::{Backoff, Balance, Ejection};
use sheave_middleware::discover;
use sheave_middleware::retry::{RetryConfig, RetryLayer};
use sheave_service::{ServiceBuilder, ServiceExt};
use std::cell::Cell;
use std::time::Duration;

const WORKERS: usize = 16;
const REQUESTS: u64 = 1500;
const KILL_AT: u64 = 500;

#[test]
fn killing_one_of_three_http_servers_mid_run_fails_no_idempotent_request() {
    let mut servers: Vec<Option<support::TestServer>> = (0..3)
        .map(|_| Some(support::start_with(|b| b.drain_timeout(Duration::ZERO))))
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.as_ref().unwrap().addr).collect();
    let victim = servers[1].as_ref().unwrap().handle.clone();
    let rt = Runtime::new().unwrap();
    let (sent, failed) = (Cell::new(0u64), Cell::new(0u64));
    let open_at_kill = Cell::new(0);
    rt.block_on(async {
        let connector = Client::<Full<Bytes>>::builder()
            .pool_size(4)
            .connect_timeout(Duration::from_millis(200));
        let endpoints = discover::fixed(addrs.iter().map(|a| (*a, *a)));
        let balance = Balance::builder()
            .classifier(HttpClassifier)
            .ejection(Ejection {
                consecutive_failures: 2,
                max_share: 0.5,
                ..Ejection::default()
            })
            .reconnect(Backoff::exponential(
                Duration::from_millis(20),
                Duration::from_millis(200),
            ))
            .build(endpoints, connector);
        let client = ServiceBuilder::new()
            .timeout(Duration::from_secs(2))
            .layer(RetryLayer::new(RetryConfig::new().max_attempts(4)).policy(HttpRetry::new()))
            .service(balance);
        let workers = (0..WORKERS).map(|_| async {
            while sent.get() < REQUESTS {
                let i = sent.get();
                sent.set(i + 1);
                if i == KILL_AT {
                    open_at_kill.set(victim.connections());
                    victim.shutdown(); // drain timeout zero: connections dropped at once
                }
                let req = http::Request::get("/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let ok = match client.oneshot(req).await {
                    Ok(response) => {
                        response.status() == 200
                            && response
                                .into_body()
                                .collect()
                                .await
                                .is_ok_and(|b| b.to_bytes() == "hello, sheave")
                    }
                    Err(e) => {
                        eprintln!("request {i} failed: {e}");
                        false
                    }
                };
                if !ok {
                    failed.set(failed.get() + 1);
                }
            }
        });
        sheave_core::time::timeout(Duration::from_secs(60), join_all(workers))
            .await
            .expect("the run finishes in time");
    });
    assert_eq!(sent.get(), REQUESTS);
    assert!(
        open_at_kill.get() > 0,
        "the victim was serving when it was killed"
    );
    assert_eq!(failed.get(), 0, "idempotent requests failed");
    servers[1].take(); // joined: it did stop
}
