//! The balanced client over real loopback servers: one of three dies mid-run and comes back.
//!
//! The client is the tour's stack (`examples/support/cluster.rs`): a deadline, idempotent
//! retries within a budget, a concurrency limit, and p2c peak-EWMA over three redis-protocol
//! servers running on a second runtime thread.

#[path = "../../examples/support/mod.rs"]
mod support;

use futures::future::join_all;
use sheave::Runtime;
use sheave::service::{Service, ServiceExt};
use sheave::time;
use sheave_proto::resp::Frame;
use std::cell::{Cell, RefCell};
use std::time::Duration;
use support::cluster::{Backend, balanced_client, endpoint_stats};

const WORKERS: usize = 16;

fn get(i: u64) -> Frame {
    let key = format!("k{}", i % 100);
    Frame::Array(vec![
        Frame::Bulk("GET".into()),
        Frame::Bulk(key.into_bytes().into()),
    ])
}

/// Runs `WORKERS` loops of GETs until `until()` says stop or `max` requests were sent.
async fn drive<S: Service<Frame>>(
    client: &S,
    sent: &Cell<u64>,
    failed: &Cell<u64>,
    until: &dyn Fn() -> bool,
    max: u64,
) {
    let start = sent.get();
    let workers = (0..WORKERS).map(|_| async {
        while !until() && sent.get() - start < max {
            let i = sent.get();
            sent.set(i + 1);
            if client.oneshot(get(i)).await.is_err() {
                failed.set(failed.get() + 1);
            }
        }
    });
    join_all(workers).await;
}

#[test]
fn killing_one_of_three_servers_mid_run_fails_no_idempotent_request_and_it_is_used_again_once_back()
{
    let rt = Runtime::builder().threads(2).build().unwrap();
    let handle = rt.handle().clone();
    let names = ["a", "b", "c"];
    let mut backends: Vec<Backend> = names
        .iter()
        .map(|n| Backend::start(&handle, 1, n, Duration::ZERO).unwrap())
        .collect();
    let stats = endpoint_stats(&names);
    let addrs: Vec<_> = backends.iter().map(|b| (b.name, b.addr)).collect();
    let a_requests = || stats[0].1.snapshot().requests;

    rt.block_on(async {
        let client = balanced_client(&addrs, &stats);
        let failed = Cell::new(0u64);
        let sent = Cell::new(0u64);
        let limit = Duration::from_secs(60);
        let never: &dyn Fn() -> bool = &|| false;

        // Phase 1: all up; every endpoint takes traffic.
        time::timeout(limit, drive(&client, &sent, &failed, never, 3_000))
            .await
            .unwrap();
        assert!(
            stats.iter().all(|(_, s)| s.snapshot().requests > 100),
            "all three served"
        );

        // Phase 2: `a` dies. Its connection's requests fail over; then it gets nothing.
        let backends = RefCell::new(&mut backends);
        backends.borrow_mut()[0].kill();
        time::timeout(limit, drive(&client, &sent, &failed, never, 1_000))
            .await
            .unwrap();
        let a_when_dead = a_requests();
        time::timeout(limit, drive(&client, &sent, &failed, never, 3_000))
            .await
            .unwrap();
        assert_eq!(
            a_requests(),
            a_when_dead,
            "no request reached the dead server"
        );

        // Phase 3: `a` is back on its port: the balancer reconnects and uses it again.
        backends.borrow_mut()[0].restart(&handle).unwrap();
        let back_from = a_requests();
        let revived = || a_requests() >= back_from + 200;
        time::timeout(limit, drive(&client, &sent, &failed, &revived, 2_000_000))
            .await
            .unwrap();
        assert!(
            a_requests() >= back_from + 200,
            "the revived server takes traffic again"
        );

        assert_eq!(
            failed.get(),
            0,
            "idempotent requests all succeeded ({} sent)",
            sent.get()
        );
    });
}
