//! Discovery sources: a fixed list, a bounded channel, and DNS (resolving `localhost`).

#[path = "../support/mod.rs"]
mod support;

use futures::StreamExt;
use sheave_middleware::discover::{self, Change, Closed};
use std::time::Duration;
use support::poll_once;

#[test]
fn a_fixed_list_inserts_each_endpoint_once_then_ends() {
    futures::executor::block_on(async {
        let changes: Vec<_> = discover::fixed([("a", 1), ("b", 2)]).collect().await;
        assert_eq!(changes, [Change::Insert("a", 1), Change::Insert("b", 2)]);
    });
}

#[test]
fn a_channel_is_bounded_delivers_in_order_and_reports_a_gone_subscriber() {
    futures::executor::block_on(async {
        let (publisher, mut changes) = discover::channel::<u32, u32>(4);
        // Send until the channel is full: the next send waits (bounded, within 100).
        let mut sent = 0;
        let mut blocked = None;
        for i in 0..100 {
            let mut send = Box::pin(publisher.insert(i, i));
            if poll_once(send.as_mut()).is_pending() {
                blocked = Some(send);
                break;
            }
            sent += 1;
        }
        let blocked = blocked.expect("a full channel makes the publisher wait");
        // Reading one makes room: the waiting send completes.
        assert_eq!(changes.next().await, Some(Change::Insert(0, 0)));
        blocked.await.unwrap();
        for i in 1..=sent {
            assert_eq!(changes.next().await, Some(Change::Insert(i, i)), "in order");
        }
        publisher.remove(3).await.unwrap();
        assert_eq!(changes.next().await, Some(Change::Remove(3)));
        drop(changes);
        assert_eq!(publisher.insert(9, 9).await, Err(Closed));
    });
}

#[test]
fn dns_inserts_the_addresses_of_localhost_keyed_by_address() {
    let mut changes = discover::dns("localhost", 7001, Duration::from_secs(3600));
    let first = futures::executor::block_on(changes.next()).expect("an answer");
    let Change::Insert(key, target) = first else {
        panic!("the first change inserts: {first:?}");
    };
    assert_eq!(key, target);
    assert!(key.ip().is_loopback(), "{key}");
    assert_eq!(key.port(), 7001);
    // Dropping the stream stops its resolver thread (it must not keep resolving forever).
    drop(changes);
}
