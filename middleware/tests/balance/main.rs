//! The balancer over simulated endpoints, on the paused clock: exact and instant.

#[path = "../support/mod.rs"]
mod support;

use futures::future::join_all;
use sheave_core::{spawn, time};
use sheave_middleware::balance::{
    Backoff, Balance, BalanceConfig, Ejection, PeakEwma, Policy, WhenBusy,
};
use sheave_middleware::discover::{self, Change};
use sheave_service::{Error, ErrorKind, Service, ServiceExt, mock, service_fn};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::paused;

type Log = Rc<RefCell<Vec<(&'static str, Instant)>>>;

/// A simulated endpoint: answers its name after `delay`, logging each arrival.
struct Sim {
    name: &'static str,
    delay: Duration,
    log: Log,
}

impl Service<u32> for Sim {
    type Response = &'static str;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
        sheave_service::TryReady::Ready(())
    }

    async fn call(&self, _: (), _req: u32) -> Result<&'static str, Error> {
        self.log.borrow_mut().push((self.name, time::now()));
        time::sleep(self.delay).await;
        Ok(self.name)
    }
}

/// A connector whose endpoint `name` answers after `latency(name)`.
fn simulated(
    log: Log,
    latency: impl Fn(&str) -> Duration + Clone + 'static,
) -> impl Fn(&'static str) -> std::future::Ready<Result<Sim, Error>> + Clone {
    move |name: &'static str| {
        std::future::ready(Ok(Sim {
            name,
            delay: latency(name),
            log: log.clone(),
        }))
    }
}

/// Runs `workers` concurrent loops of `each` sequential requests through `lb`.
async fn load<S: Service<u32, Error = Error> + 'static>(lb: Rc<S>, workers: usize, each: usize) {
    let tasks = (0..workers).map(|_| {
        let lb = lb.clone();
        spawn(async move {
            for i in 0..each {
                lb.oneshot(i as u32).await.unwrap();
            }
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
}

fn counts(log: &Log) -> HashMap<&'static str, usize> {
    let mut c = HashMap::new();
    for (name, _) in log.borrow().iter() {
        *c.entry(*name).or_default() += 1;
    }
    c
}

const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

#[test]
fn p2c_least_pending_spreads_within_ten_percent_of_even_over_equal_endpoints() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = simulated(log.clone(), |_| Duration::from_millis(10));
        let lb = Balance::builder().p2c_pending().seed(1).build(
            discover::fixed(NAMES[..4].iter().map(|n| (*n, *n))),
            connect,
        );
        load(Rc::new(lb), 32, 250).await;
        let c = counts(&log);
        let even = 32 * 250 / 4;
        for name in &NAMES[..4] {
            let n = c[name];
            assert!(
                n.abs_diff(even) * 10 <= even,
                "{name} got {n}, even is {even}: {c:?}"
            );
        }
    });
}

#[test]
fn peak_ewma_sends_under_five_percent_to_an_endpoint_ten_times_slower() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = simulated(log.clone(), |name| {
            Duration::from_millis(if name == "h" { 100 } else { 10 })
        });
        let lb = Balance::builder()
            .peak_ewma(PeakEwma::default())
            .seed(2)
            .build(discover::fixed(NAMES.iter().map(|n| (*n, *n))), connect);
        load(Rc::new(lb), 16, 500).await;
        let c = counts(&log);
        let total: usize = c.values().sum();
        let slow = c.get("h").copied().unwrap_or(0);
        assert!(
            slow * 20 < total,
            "the slow endpoint got {slow} of {total}: {c:?}"
        );
    });
}

#[test]
fn round_robin_is_exactly_even() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = simulated(log.clone(), |_| Duration::from_millis(1));
        let lb = Balance::builder().round_robin().build(
            discover::fixed(NAMES[..5].iter().map(|n| (*n, *n))),
            connect,
        );
        for i in 0..500 {
            lb.oneshot(i).await.unwrap();
        }
        let c = counts(&log);
        assert!(c.values().all(|n| *n == 100), "{c:?}");
    });
}

#[test]
fn endpoints_inserted_and_removed_under_a_thousand_in_flight_requests_lose_none() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = simulated(log.clone(), |_| Duration::from_millis(50));
        let (publisher, changes) = discover::channel(16);
        for n in ["a", "b", "c"] {
            publisher.insert(n, n).await.unwrap();
        }
        let lb = Rc::new(
            Balance::builder()
                .p2c_pending()
                .seed(3)
                .build(changes, connect),
        );
        let requests: Vec<_> = (0..1000u32)
            .map(|i| {
                let lb = lb.clone();
                spawn(async move {
                    time::sleep(Duration::from_millis(u64::from(i % 100))).await;
                    lb.oneshot(i).await
                })
            })
            .collect();
        // Midway: "a" leaves, "d" joins.
        time::sleep(Duration::from_millis(40)).await;
        publisher.remove("a").await.unwrap();
        publisher.insert("d", "d").await.unwrap();
        while lb.endpoints().iter().any(|e| e.key == "a") {
            sheave_core::yield_now().await;
        }
        let removed_at = time::now();
        let mut ok = 0;
        for r in requests {
            r.await.unwrap().unwrap();
            ok += 1;
        }
        assert_eq!(ok, 1000, "every request was answered");
        let late = log
            .borrow()
            .iter()
            .filter(|(name, at)| *name == "a" && *at > removed_at)
            .count();
        assert_eq!(late, 0, "requests reached a removed endpoint");
        assert!(
            counts(&log).get("d").copied().unwrap_or(0) > 0,
            "the new endpoint took traffic"
        );
    });
}

#[test]
fn an_endpoint_that_keeps_failing_is_ejected_and_traffic_moves_away() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let inner = simulated(log.clone(), |_| Duration::from_millis(5));
        let connect = move |name: &'static str| {
            let svc = futures::executor::block_on(inner(name)).unwrap();
            std::future::ready(Ok::<_, Error>(svc.and_then(
                move |got: &'static str| async move {
                    if got == "bad" {
                        Err(Error::msg(ErrorKind::Service, "broken"))
                    } else {
                        Ok(got)
                    }
                },
            )))
        };
        let lb = Balance::builder()
            .round_robin()
            .ejection(Ejection {
                consecutive_failures: 3,
                max_share: 0.5,
                ..Ejection::default()
            })
            .build(
                discover::fixed([("ok1", "ok1"), ("ok2", "ok2"), ("bad", "bad")]),
                connect,
            );
        let mut failures = 0;
        for i in 0..300 {
            if lb.oneshot(i).await.is_err() {
                failures += 1;
            }
        }
        // Three failures eject it for 1 s; back on probation, one more failure ejects it for
        // 2 s, past the end of the run (300 requests x 5 ms).
        assert_eq!(failures, 4);
        let bad = lb.endpoints().into_iter().find(|e| e.key == "bad").unwrap();
        assert!(bad.ejected);
        assert_eq!(bad.failures, 4);
    });
}

#[test]
fn an_endpoint_that_fails_to_connect_is_retried_with_backoff_and_never_handed_out_meanwhile() {
    let rt = paused();
    rt.block_on(async {
        let attempts = Rc::new(RefCell::new(Vec::new()));
        let seen = attempts.clone();
        let connect = move |name: &'static str| {
            seen.borrow_mut().push(time::now());
            let fail = seen.borrow().len() <= 3;
            std::future::ready(if fail {
                Err(Error::msg(ErrorKind::Io, "connection refused"))
            } else {
                Ok(service_fn(
                    move |_: u32| async move { Ok::<_, Error>(name) },
                ))
            })
        };
        let start = time::now();
        let lb = Balance::builder()
            .empty_wait(Duration::from_secs(10))
            .reconnect(
                Backoff::exponential(Duration::from_millis(10), Duration::from_secs(5)).jitter(0.0),
            )
            .build(discover::fixed([("a", "a")]), connect);
        assert_eq!(lb.oneshot(1).await.unwrap(), "a");
        let offsets: Vec<u128> = attempts
            .borrow()
            .iter()
            .map(|t| (*t - start).as_millis())
            .collect();
        // Attempt 0 at once, then 10, 20, 40 ms apart.
        assert_eq!(offsets, vec![0, 10, 30, 70]);
    });
}

#[test]
fn a_closed_endpoint_is_taken_out_and_reconnected() {
    let rt = paused();
    rt.block_on(async {
        let handles = Rc::new(RefCell::new(Vec::new()));
        let made = handles.clone();
        let connect = move |_: &'static str| {
            let (svc, handle) = mock::pair::<u32, u32>();
            made.borrow_mut().push(handle);
            std::future::ready(Ok::<_, Error>(svc))
        };
        let lb = Balance::builder().build(discover::fixed([("a", "a")]), connect);
        let permit = lb.ready().await.unwrap();
        drop(permit);
        assert_eq!(handles.borrow().len(), 1);
        handles.borrow()[0].close(Error::closed());
        // The next ready() sees the closed service, drops it and waits for the reconnect.
        let permit = lb.ready().await.unwrap();
        assert_eq!(permit.key(), &"a");
        assert_eq!(handles.borrow().len(), 2, "a second connection was made");
    });
}

#[test]
fn with_no_endpoint_ready_fails_with_unavailable_after_the_empty_wait() {
    let rt = paused();
    rt.block_on(async {
        let never = discover::fixed(std::iter::empty::<(&str, &str)>());
        let connect =
            |_: &'static str| std::future::ready(Ok::<_, Error>(mock::pair::<u32, u32>().0));
        let lb = Balance::builder()
            .empty_wait(Duration::from_millis(250))
            .build(never, connect);
        let start = time::now();
        let err = lb.ready().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
        assert_eq!(time::now() - start, Duration::from_millis(250));
    });
}

#[test]
fn when_every_endpoint_is_busy_fail_fast_sheds_and_wait_takes_the_first_freed() {
    let rt = paused();
    rt.block_on(async {
        let handles = Rc::new(RefCell::new(Vec::new()));
        let made = handles.clone();
        let connect = move |_: &'static str| {
            let (svc, handle) = mock::pair_with_permits::<u32, u32>(0);
            made.borrow_mut().push(handle);
            std::future::ready(Ok::<_, Error>(svc))
        };
        let endpoints = || discover::fixed([("a", "a"), ("b", "b")]);
        let fast = Balance::builder()
            .when_busy(WhenBusy::FailFast)
            .build(endpoints(), connect.clone());
        // Let the background task connect both.
        while fast.endpoints().len() < 2 {
            sheave_core::yield_now().await;
        }
        let err = fast.ready().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        assert!(err.is_retryable());

        let waiting = Balance::builder().build(endpoints(), connect);
        while waiting.endpoints().len() < 2 {
            sheave_core::yield_now().await;
        }
        let opener = handles.clone();
        spawn(async move {
            time::sleep(Duration::from_millis(5)).await;
            for h in opener.borrow().iter().skip(2) {
                h.allow(1);
            }
        });
        let permit = time::timeout(Duration::from_secs(1), waiting.ready()).await;
        assert!(permit.unwrap().is_ok(), "a freed endpoint was taken");
    });
}

#[test]
fn changes_are_keyed_so_removing_one_key_never_touches_another() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = simulated(log.clone(), |_| Duration::from_millis(1));
        let (publisher, changes) = discover::channel(8);
        let lb = Balance::builder().round_robin().build(changes, connect);
        for n in ["a", "b", "c"] {
            publisher.send(Change::Insert(n, n)).await.unwrap();
        }
        publisher.remove("b").await.unwrap();
        while lb.endpoints().len() != 2 {
            sheave_core::yield_now().await;
        }
        let mut keys: Vec<_> = lb.endpoints().into_iter().map(|e| e.key).collect();
        keys.sort();
        assert_eq!(keys, vec!["a", "c"]);
    });
}

#[test]
fn an_endpoint_behind_an_open_breaker_is_skipped_not_reconnected() {
    // Regression (review): an open breaker's refusal looked like a dead connection, so the
    // balancer dropped it and reconnected at once — with a fresh, closed breaker.
    let rt = paused();
    rt.block_on(async {
        let connects = Rc::new(RefCell::new(Vec::new()));
        let seen = connects.clone();
        let connect = move |name: &'static str| {
            seen.borrow_mut().push(name);
            std::future::ready(Ok::<_, Error>(behind_a_breaker(name)))
        };
        let lb = Balance::builder()
            .round_robin()
            .without_ejection()
            .build(discover::fixed([("good", "good"), ("bad", "bad")]), connect);
        let mut failures = 0;
        for i in 0..100 {
            if lb.oneshot(i).await.is_err() {
                failures += 1;
            }
        }
        assert_eq!(failures, 5, "the breaker opened after five failures");
        assert_eq!(connects.borrow().len(), 2, "nothing was reconnected");
        assert_eq!(lb.endpoints().len(), 2, "the refusing endpoint was kept");
    });
}

#[test]
fn when_every_endpoint_refuses_ready_fails_at_once_with_unavailable() {
    let rt = paused();
    rt.block_on(async {
        let connect =
            |name: &'static str| std::future::ready(Ok::<_, Error>(behind_a_breaker(name)));
        let lb = Balance::builder()
            .without_ejection()
            .build(discover::fixed([("bad", "bad")]), connect);
        for i in 0..5 {
            assert!(lb.oneshot(i).await.unwrap_err().is_io());
        }
        let start = time::now();
        let err = lb.ready().await.unwrap_err();
        assert!(err.is_unavailable() && err.is_retryable(), "{err:?}");
        assert_eq!(time::now(), start, "at once");
    });
}

#[test]
fn p2c_does_not_keep_picking_an_endpoint_whose_breaker_is_open() {
    // Regression (review): a refusing endpoint has nothing pending, so p2c preferred it on
    // every pick and ready() failed although the other endpoint was healthy.
    let rt = paused();
    rt.block_on(async {
        let connect =
            |name: &'static str| std::future::ready(Ok::<_, Error>(behind_a_breaker(name)));
        let lb = Balance::builder()
            .p2c_pending()
            .seed(9)
            .without_ejection()
            .build(discover::fixed([("good", "good"), ("bad", "bad")]), connect);
        while lb.endpoints().len() < 2 {
            sheave_core::yield_now().await;
        }
        let mut failures = 0;
        for i in 0..200 {
            if lb.oneshot(i).await.is_err() {
                failures += 1;
            }
        }
        assert_eq!(failures, 5, "only the five that opened the breaker failed");
    });
}

#[test]
fn when_every_pick_refuses_an_endpoint_in_service_beats_an_ejected_one() {
    // Regression (review): the fallback scan took the first ready endpoint in discovery
    // order, so an ejected endpoint listed before a healthy one got traffic again.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Answer,
        Fail,
        Refuse,
    }
    struct Switch {
        name: &'static str,
        mode: Rc<Cell<Mode>>,
        log: Log,
    }
    impl Service<u32> for Switch {
        type Response = &'static str;
        type Error = Error;
        type Permit = ();
        async fn ready(&self) -> Result<(), Error> {
            match self.try_ready() {
                sheave_service::TryReady::Closed(e) => Err(e),
                _ => Ok(()),
            }
        }
        fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
            if self.mode.get() == Mode::Refuse {
                sheave_service::TryReady::Closed(Error::from(ErrorKind::Overloaded))
            } else {
                sheave_service::TryReady::Ready(())
            }
        }
        async fn call(&self, _: (), _req: u32) -> Result<&'static str, Error> {
            self.log.borrow_mut().push((self.name, time::now()));
            match self.mode.get() {
                Mode::Fail => Err(Error::msg(ErrorKind::Io, "broken")),
                _ => Ok(self.name),
            }
        }
    }

    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let modes: HashMap<&'static str, Rc<Cell<Mode>>> = ["refusing", "ejected", "healthy"]
            .into_iter()
            .map(|n| (n, Rc::new(Cell::new(Mode::Answer))))
            .collect();
        modes["ejected"].set(Mode::Fail);
        let (seen, switches) = (log.clone(), modes.clone());
        let connect = move |name: &'static str| {
            std::future::ready(Ok::<_, Error>(Switch {
                name,
                mode: switches[name].clone(),
                log: seen.clone(),
            }))
        };
        let config = BalanceConfig {
            policy: Policy::RoundRobin,
            picks: 1,
            ejection: Some(Ejection {
                consecutive_failures: 1,
                max_share: 0.5,
                ..Ejection::default()
            }),
            ..BalanceConfig::default()
        };
        let endpoints = [
            ("refusing", "refusing"),
            ("ejected", "ejected"),
            ("healthy", "healthy"),
        ];
        let lb = Balance::builder()
            .config(config)
            .build(discover::fixed(endpoints), connect);
        while lb.endpoints().len() < 3 {
            sheave_core::yield_now().await;
        }
        // One failure ejects "ejected" (for a second of paused time, which never passes here).
        while !lb.endpoints().iter().any(|e| e.ejected) {
            let _ = lb.oneshot(0).await;
        }
        modes["ejected"].set(Mode::Answer);
        modes["refusing"].set(Mode::Refuse);
        log.borrow_mut().clear();
        for i in 0..100 {
            assert_eq!(lb.oneshot(i).await.unwrap(), "healthy");
        }
        assert_eq!(counts(&log).get("ejected"), None);
    });
}

/// An endpoint behind its own circuit breaker: `"bad"` fails every call, any other name
/// answers with itself.
fn behind_a_breaker(
    name: &'static str,
) -> sheave_middleware::breaker::CircuitBreaker<
    impl Service<u32, Response = &'static str, Error = Error>,
> {
    use sheave_middleware::breaker::{BreakerConfig, CircuitBreaker};
    let svc = service_fn(move |_: u32| async move {
        if name == "bad" {
            Err(Error::msg(ErrorKind::Io, "refused"))
        } else {
            Ok::<_, Error>(name)
        }
    });
    CircuitBreaker::new(svc, BreakerConfig::default())
}

/// An endpoint with `capacity` slots whose calls never finish until released.
struct Gate {
    name: &'static str,
    capacity: usize,
    held: Rc<Cell<usize>>,
    log: Log,
}

impl Service<u32> for Gate {
    type Response = &'static str;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        std::future::poll_fn(|_| match self.try_ready() {
            sheave_service::TryReady::Ready(()) => std::task::Poll::Ready(Ok(())),
            _ => std::task::Poll::Pending,
        })
        .await
    }

    fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
        if self.held.get() < self.capacity {
            sheave_service::TryReady::Ready(())
        } else {
            sheave_service::TryReady::Busy
        }
    }

    fn in_flight(&self) -> Option<usize> {
        Some(self.held.get())
    }

    async fn call(&self, _: (), _req: u32) -> Result<&'static str, Error> {
        self.log.borrow_mut().push((self.name, time::now()));
        self.held.set(self.held.get() + 1);
        std::future::pending::<()>().await;
        unreachable!("held forever")
    }
}

/// A connector of [`Gate`]s with `capacity` slots each, sharing one count of held calls.
fn gates(
    log: Log,
    capacity: usize,
) -> impl Fn(&'static str) -> std::future::Ready<Result<Gate, Error>> {
    let held = Rc::new(Cell::new(0));
    move |name| {
        std::future::ready(Ok(Gate {
            name,
            capacity,
            held: held.clone(),
            log: log.clone(),
        }))
    }
}

#[test]
fn a_call_given_up_by_an_outer_timeout_counts_as_a_failure_and_ejects_its_endpoint() {
    // Regression (issue: a hung backend stalls the client): a call cancelled above the
    // balancer counted as nothing, so a backend that never answered kept `fail = 0`.
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = gates(log.clone(), usize::MAX);
        let lb = Balance::builder()
            .ejection(Ejection {
                consecutive_failures: 3,
                ..Ejection::default()
            })
            .build(discover::fixed([("hung", "hung")]), connect);
        let give_up = || time::timeout(Duration::from_millis(50), lb.oneshot(1));
        for _ in 0..2 {
            assert!(give_up().await.is_err());
        }
        let stats = lb.endpoints();
        assert_eq!(stats[0].failures, 2, "each call given up is a failure");
        assert!(
            stats[0].rtt_estimate >= Duration::from_millis(50),
            "and its estimate is at least the time its callers waited: {:?}",
            stats[0].rtt_estimate
        );
        assert!(give_up().await.is_err());
        let stats = lb.endpoints();
        assert!(stats[0].ejected, "three in a row eject it");
        assert_eq!(
            stats[0].pending, 3,
            "the connection still holds the three calls"
        );
    });
}

#[test]
fn a_full_endpoint_is_skipped_even_when_it_looks_cheapest_and_ready_waits_only_when_all_are_full() {
    // Regression (issue: a hung backend stalls the client): p2c kept choosing the full
    // endpoint (it looked idle) and then waited on it while the other had room.
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let (full_held, free_held) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (l, fh, rh) = (log.clone(), full_held.clone(), free_held.clone());
        let connect = move |name: &'static str| {
            let (capacity, held) = if name == "full" {
                (0, fh.clone())
            } else {
                (2, rh.clone())
            };
            std::future::ready(Ok::<_, Error>(Gate {
                name,
                capacity,
                held,
                log: l.clone(),
            }))
        };
        let lb = Rc::new(Balance::builder().p2c_pending().seed(7).build(
            discover::fixed([("full", "full"), ("free", "free")]),
            connect,
        ));
        while lb.endpoints().len() < 2 {
            sheave_core::yield_now().await;
        }
        for _ in 0..2 {
            let lb = lb.clone();
            spawn(async move { lb.oneshot(1).await });
        }
        sheave_core::yield_now().await;
        assert_eq!(
            counts(&log).get("free"),
            Some(&2),
            "both went to the one with room"
        );
        // Now both are full: ready() waits (bounded by the caller's deadline).
        let waited = time::timeout(Duration::from_millis(10), lb.ready()).await;
        assert!(waited.is_err(), "every endpoint full: it waits");
        assert!(!counts(&log).contains_key("full"));
    });
}

#[test]
fn past_the_waiter_bound_ready_fails_at_once_with_overloaded() {
    let rt = paused();
    rt.block_on(async {
        let log: Log = Rc::default();
        let connect = gates(log.clone(), 0);
        let lb = Rc::new(
            Balance::builder()
                .max_waiters(1)
                .build(discover::fixed([("full", "full")]), connect),
        );
        while lb.endpoints().is_empty() {
            sheave_core::yield_now().await;
        }
        let waiter = {
            let lb = lb.clone();
            spawn(async move {
                time::timeout(Duration::from_millis(10), lb.ready())
                    .await
                    .is_err()
            })
        };
        sheave_core::yield_now().await;
        let err = lb.ready().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        assert!(err.is_retryable());
        assert!(waiter.await.unwrap(), "the one waiter waited");
    });
}

#[test]
fn an_endpoint_whose_connections_close_before_any_success_is_ejected_and_not_redialled_meanwhile() {
    // Regression (issue: a backend that accepts and closes at once is never ejected): each
    // reconnect made a fresh endpoint, so the failure count never reached the threshold.
    let rt = paused();
    rt.block_on(async {
        let dials = Rc::new(Cell::new(0u32));
        let d = dials.clone();
        let connect = move |_: &'static str| {
            d.set(d.get() + 1);
            std::future::ready(Ok::<_, Error>(service_fn(|_: u32| async {
                Err::<&'static str, _>(Error::closed())
            })))
        };
        let lb = Balance::builder()
            .ejection(Ejection {
                consecutive_failures: 3,
                backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1)),
                ..Ejection::default()
            })
            .reconnect(Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_millis(10),
            ))
            .build(discover::fixed([("x", "x")]), connect);
        // Drive calls for 5 virtual seconds: each connection dies on its first call.
        let until = time::now() + Duration::from_secs(5);
        while time::now() < until {
            let _ = time::timeout(Duration::from_millis(5), lb.oneshot(1)).await;
            time::sleep(Duration::from_millis(5)).await;
        }
        // 3 dials to cross the threshold, then at most about one per ejection (1 s).
        assert!(dials.get() <= 3 + 6, "{} dials in 5 s", dials.get());
    });
}

/// An endpoint that is always full, and whose `ready()` refuses at once (a limit whose own
/// wait queue is full, say).
struct FullAndRefusing;

impl Service<u32> for FullAndRefusing {
    type Response = &'static str;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Err(Error::overloaded())
    }

    fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
        sheave_service::TryReady::Busy
    }

    async fn call(&self, _: (), _req: u32) -> Result<&'static str, Error> {
        unreachable!("never ready")
    }
}

#[test]
fn an_endpoint_whose_ready_refuses_at_once_is_an_answer_not_a_spin() {
    // Regression (review): ready() treated the refusal as "look again" and looped without
    // ever yielding, so one caller held the runtime thread at 100% CPU forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        paused().block_on(async {
            let connect = |_: &'static str| std::future::ready(Ok::<_, Error>(FullAndRefusing));
            let lb = Balance::builder().build(discover::fixed([("full", "full")]), connect);
            while lb.endpoints().is_empty() {
                sheave_core::yield_now().await;
            }
            let _ = tx.send(Service::<u32>::ready(&lb).await.map(|_| ()));
        })
    });
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("ready() answered instead of spinning");
    assert_eq!(got.unwrap_err().kind(), ErrorKind::Overloaded);
}
