//! Middleware on both sides of a real TCP connection: a server that limits and sheds, a
//! client that retries what was shed.

#[path = "../../examples/support/kv.rs"]
mod kv;

use futures::future::join_all;
use kv::{Kv, KvService};
use sheave::Runtime;
use sheave::service::classify::{Class, DefaultClassifier};
use sheave::service::{Error, ServiceBuilder, ServiceExt};
use sheave::time;
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::retry::{Backoff, RetryConfig, RetryLayer, RetryableFailures};
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Connector, Server};
use sheave_service::NewService;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn get(key: &str) -> Frame {
    Frame::command(["GET", key])
}

/// Starts the server on this thread: a kv service that takes 20 ms per request, behind a
/// server-wide concurrency limit of 2 with load shedding; errors become `-ERR <error>`
/// replies (counted in `sheds` when they are sheds), so the connection stays open.
fn start_server(sheds: Arc<AtomicUsize>) -> SocketAddr {
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .codec(RespCodec::new())
        .build()
        .unwrap();
    let addr = server.local_addr();
    let kv = Kv::new();
    sheave::spawn(server.serve_with(move || {
        let sheds = sheds.clone();
        let slow_kv = KvService::new(kv.clone()).and_then(|reply: Frame| async move {
            time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Error>(reply)
        });
        // One stack per thread, shared by its connections: the limit is server-wide.
        let stack = Rc::new(
            ServiceBuilder::new()
                .then(move |outcome: Result<Frame, Error>| {
                    let sheds = sheds.clone();
                    async move {
                        Ok::<_, Error>(outcome.unwrap_or_else(|e| {
                            if e.is_overloaded() {
                                sheds.fetch_add(1, Ordering::Relaxed);
                            }
                            Frame::error(format!("ERR {e}"))
                        }))
                    }
                })
                .load_shed()
                .concurrency_limit(2)
                .service(slow_kv),
        );
        move |_peer: SocketAddr| {
            let stack = stack.clone();
            async move { Ok::<_, Error>(stack) }
        }
    }));
    addr
}

#[test]
fn a_server_that_limits_and_sheds_answers_every_request_and_keeps_its_connections() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let sheds = Arc::new(AtomicUsize::new(0));
        let addr = start_server(sheds.clone());
        let connector = Connector::pipeline(RespCodec::new());
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(connector.new_service(addr).await.unwrap());
        }
        let replies = join_all(clients.iter().map(|c| c.oneshot(get("k"))));
        let replies = time::timeout(LIMIT, replies).await.unwrap();
        let (mut ok, mut shed) = (0, 0);
        for reply in replies {
            match reply.unwrap() {
                Frame::Null => ok += 1,
                Frame::Error(msg) if msg.starts_with(b"ERR overloaded") => shed += 1,
                other => panic!("unexpected reply {other:?}"),
            }
        }
        assert_eq!(ok, 2, "two fit the limit");
        assert_eq!(shed, 4, "the rest were shed at once, not queued");
        assert_eq!(sheds.load(Ordering::Relaxed), 4);
        // A shed is an answer: every connection is still open and usable.
        assert!(clients.iter().all(|c| !c.is_closed()));
        let again = time::timeout(LIMIT, clients[5].oneshot(get("k")))
            .await
            .unwrap();
        assert_eq!(again.unwrap(), Frame::Null);
    });
}

#[test]
fn a_client_that_retries_shed_replies_gets_every_answer_from_a_shedding_server() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let sheds = Arc::new(AtomicUsize::new(0));
        let addr = start_server(sheds.clone());
        let conn = Connector::pipeline(RespCodec::new())
            .new_service(addr)
            .await
            .unwrap();
        // The protocol's "overloaded" reply is a retryable failure: the one place that says
        // so is the classifier, which the retry policy asks.
        let overloaded_is_retryable = |outcome: Result<&Frame, &Error>| match outcome {
            Ok(Frame::Error(msg)) if msg.starts_with(b"ERR overloaded") => {
                Class::Failure { retryable: true }
            }
            Ok(_) => Class::Success,
            Err(e) => sheave::service::classify::Classify::<Frame, Error>::classify(
                &DefaultClassifier,
                Err(e),
            ),
        };
        let retry = RetryConfig::new()
            .max_attempts(20)
            .backoff(Backoff::exponential(
                Duration::from_millis(5),
                Duration::from_millis(40),
            ));
        let client = ServiceBuilder::new()
            .timeout(Duration::from_secs(10))
            .layer(
                RetryLayer::new(retry)
                    .policy(RetryableFailures::with_classifier(overloaded_is_retryable)),
            )
            .service(conn);
        let replies = join_all((0..6).map(|_| client.oneshot(get("k"))));
        let replies = time::timeout(LIMIT, replies).await.unwrap();
        for reply in replies {
            assert_eq!(
                reply.unwrap(),
                Frame::Null,
                "every request got its real answer"
            );
        }
        assert!(
            sheds.load(Ordering::Relaxed) >= 4,
            "the server did shed, and the client retried"
        );
    });
}
