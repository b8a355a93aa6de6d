//! Limits: the concurrency bound under load, FIFO waiters, cancel safety, exact rates.

#[path = "../support/mod.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sheave_core::time::{now, sleep};
use sheave_middleware::limit::RateConfig;
use sheave_middleware::{ConcurrencyLimit, RateLimit};
use sheave_service::{Error, Service, ServiceExt, service_fn};
use support::{ms, paused, poll_here, poll_once};

/// A service that tracks how many calls run at once, and the most it saw.
#[derive(Default)]
struct Gauge {
    now: Cell<usize>,
    max: Cell<usize>,
}

#[test]
fn the_concurrency_limit_never_exceeds_n_under_ten_thousand_interleaved_calls() {
    let gauge = Rc::new(Gauge::default());
    let g = Rc::clone(&gauge);
    let inner = service_fn(move |n: u64| {
        let g = Rc::clone(&g);
        async move {
            g.now.set(g.now.get() + 1);
            g.max.set(g.max.get().max(g.now.get()));
            // Interleave: calls take 0..=6 ms, and some yield without waiting.
            sleep(ms(n * 7919 % 7)).await;
            g.now.set(g.now.get() - 1);
            Ok::<_, Error>(n)
        }
    });
    // All 10,000 queue at once: lift the default bound of 1,024 waiters.
    let svc = Rc::new(ConcurrencyLimit::new(inner, 8).with_max_waiters(10_000));
    paused().block_on(async {
        let tasks: Vec<_> = (0..10_000u64)
            .map(|n| {
                let svc = Rc::clone(&svc);
                sheave_core::spawn(async move {
                    if n % 3 == 0 {
                        // Some callers reserve first and call later, holding the slot.
                        let permit = svc.ready().await.unwrap();
                        sleep(ms(n % 2)).await;
                        svc.call(permit, n).await.unwrap()
                    } else {
                        svc.oneshot(n).await.unwrap()
                    }
                })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), n as u64);
        }
    });
    assert_eq!(gauge.max.get(), 8, "reached the limit, never beyond");
    assert_eq!(svc.available(), 8);
    assert_eq!(svc.waiting(), 0);
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let order = RefCell::new(Vec::new());
    let svc = ConcurrencyLimit::new(service_fn(|n: u32| async move { Ok::<_, Error>(n) }), 1);
    paused().block_on(async {
        let held = svc.ready().await.unwrap();
        let waiter = |n: u32| {
            let (svc, order) = (&svc, &order);
            async move {
                let permit = svc.ready().await.unwrap();
                order.borrow_mut().push(n);
                svc.call(permit, n).await.unwrap();
            }
        };
        let release = async {
            // Let all four queue, then free the slot; a newcomer's try_ready must not jump
            // the queue.
            sleep(ms(1)).await;
            drop(held);
            assert!(
                svc.try_ready().is_busy(),
                "the slot was handed to the first waiter"
            );
        };
        futures::join!(waiter(1), waiter(2), waiter(3), waiter(4), release);
    });
    assert_eq!(*order.borrow(), [1, 2, 3, 4]);
}

#[test]
fn a_dropped_ready_future_leaves_the_queue_and_the_next_waiter_gets_the_slot() {
    let svc = ConcurrencyLimit::new(service_fn(|n: u32| async move { Ok::<_, Error>(n) }), 1);
    paused().block_on(async {
        let held = svc.try_ready().ready().unwrap();
        let mut dead = Box::pin(svc.ready());
        let mut live = pin!(svc.ready());
        assert!(poll_once(dead.as_mut()).is_pending());
        assert!(poll_here(live.as_mut()).await.is_pending());
        assert_eq!(svc.waiting(), 2);
        drop(dead);
        assert_eq!(svc.waiting(), 1, "the dropped waiter took its entry along");
        drop(held);
        // The live waiter is woken and owns the slot: awaiting it completes.
        let permit = live.await.unwrap();
        assert_eq!(svc.call(permit, 5).await.unwrap(), 5);
    });
}

#[test]
fn a_call_whose_future_is_dropped_releases_its_slot() {
    let svc = ConcurrencyLimit::new(
        service_fn(|n: u64| async move {
            sleep(ms(n)).await;
            Ok::<_, Error>(n)
        }),
        1,
    );
    paused().block_on(async {
        let permit = svc.ready().await.unwrap();
        let mut call = Box::pin(svc.call(permit, 50));
        assert!(poll_here(call.as_mut()).await.is_pending());
        assert!(svc.try_ready().is_busy());
        drop(call);
        assert!(svc.try_ready().is_ready());
    });
}

/// Admission times of `n` callers racing for a rate limiter for `window`.
fn admissions(config: RateConfig, callers: usize, window: std::time::Duration) -> Vec<u64> {
    let svc = Rc::new(RateLimit::new(
        service_fn(|()| async { Ok::<_, Error>(()) }),
        config,
    ));
    let admitted = Rc::new(RefCell::new(Vec::new()));
    paused().block_on(async {
        let start = now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (svc, admitted) = (Rc::clone(&svc), Rc::clone(&admitted));
                sheave_core::spawn(async move {
                    loop {
                        svc.oneshot(()).await.unwrap();
                        let at = now() - start;
                        if at >= window {
                            return;
                        }
                        admitted.borrow_mut().push(at.as_millis() as u64);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    Rc::try_unwrap(admitted).unwrap().into_inner()
}

#[test]
fn the_rate_limiter_admits_exactly_the_configured_count_per_period() {
    let config = RateConfig::new(10, ms(1_000));
    let times = admissions(config, 5, ms(10_000));
    // The burst (a full bucket) at once, then exactly 10 per second, evenly.
    assert_eq!(times.iter().filter(|t| **t == 0).count(), 10);
    assert_eq!(times.len(), 10 + 99, "burst + one per 100 ms up to 9.9 s");
    for second in 1..10 {
        let in_window = times
            .iter()
            .filter(|t| (second * 1_000..(second + 1) * 1_000).contains(*t))
            .count();
        assert_eq!(in_window, 10, "second {second}");
    }
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, times, "admitted in time order");
    assert!(times[10..].windows(2).all(|w| w[1] - w[0] == 100));
}

#[test]
fn a_smaller_burst_caps_the_start() {
    let config = RateConfig::new(4, ms(1_000)).burst(1);
    let times = admissions(config, 3, ms(1_000));
    assert_eq!(times, [0, 250, 500, 750]);
}

#[test]
fn a_dropped_first_waiter_hands_the_timer_to_the_next() {
    let svc = RateLimit::new(
        service_fn(|()| async { Ok::<_, Error>(()) }),
        RateConfig::new(1, ms(100)),
    );
    paused().block_on(async {
        let start = now();
        let _first = svc.try_ready().ready().unwrap(); // the bucket is now empty
        let mut head = Box::pin(svc.ready());
        let mut next = pin!(svc.ready());
        assert!(poll_here(head.as_mut()).await.is_pending());
        assert!(poll_here(next.as_mut()).await.is_pending());
        assert_eq!(svc.waiting(), 2);
        drop(head); // it held the only timer
        let permit = next.await.unwrap();
        assert_eq!(now() - start, ms(100));
        drop(permit); // unused: the token goes back
        assert_eq!(svc.tokens(), 1);
    });
}

#[test]
fn try_ready_never_queues_and_does_not_overtake_waiters() {
    let svc = RateLimit::new(
        service_fn(|()| async { Ok::<_, Error>(()) }),
        RateConfig::new(1, ms(100)),
    );
    paused().block_on(async {
        let start: Instant = now();
        svc.oneshot(()).await.unwrap();
        assert!(svc.try_ready().is_busy());
        assert_eq!(svc.waiting(), 0);
        let mut waiter = pin!(svc.ready());
        assert!(poll_here(waiter.as_mut()).await.is_pending());
        sleep(ms(150)).await; // a token arrived at 100 ms, owed to the waiter
        assert!(svc.try_ready().is_busy(), "the waiter is first in line");
        waiter.await.unwrap();
        assert_eq!(now() - start, ms(150));
    });
}

#[test]
fn waiters_of_one_task_queued_out_of_poll_order_keep_the_timer() {
    // Regression (review): the first waiter skipped every waker equal to its own, so when
    // two `ready()`s of one task (`join!`) queued out of poll order, the new first waiter
    // was never woken and held the only timer: the limiter admitted nothing more.
    let svc = Rc::new(RateLimit::new(
        service_fn(|n: u32| async move { Ok::<_, Error>(n) }),
        RateConfig::new(1, Duration::from_secs(1)),
    ));
    paused().block_on(async {
        svc.oneshot(0).await.unwrap(); // empties the bucket
        let start = now();
        let a = async {
            sleep(ms(1)).await; // polled first, queued second
            svc.oneshot(1).await.unwrap();
            now() - start
        };
        let both = async { futures::join!(a, svc.oneshot(2)) };
        let late = svc.clone();
        let other = sheave_core::spawn(async move {
            sleep(ms(1500)).await;
            late.oneshot(3).await.unwrap();
            now() - start
        });
        let (a_at, b) = both.await;
        b.unwrap();
        // Tokens at 1 s (b, first in line), 2 s (a), 3 s (the other task).
        assert_eq!(a_at, Duration::from_secs(2));
        assert_eq!(other.await.unwrap(), Duration::from_secs(3));
    });
}

#[test]
fn a_token_given_back_after_a_refill_does_not_lift_a_burst_above_the_bucket() {
    // Regression (review): tokens held in permits across a refill and then given back were
    // added to a bucket that had refilled around them: twice the burst at one instant.
    let svc = RateLimit::new(
        service_fn(|n: u32| async move { Ok::<_, Error>(n) }),
        RateConfig::new(10, Duration::from_secs(1)),
    );
    paused().block_on(async {
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(svc.ready().await.unwrap());
        }
        sleep(Duration::from_secs(1)).await;
        let mut admitted = 0;
        for round in 0..2 {
            while let Some(permit) = svc.try_ready().ready() {
                svc.call(permit, 0).await.unwrap();
                admitted += 1;
            }
            if round == 0 {
                held.clear(); // given back unspent
            }
        }
        assert_eq!(admitted, 10, "the burst, and no more, at one instant");
    });
}

#[test]
fn a_rate_of_u64_max_is_unlimited_and_never_overflows() {
    let svc = RateLimit::new(
        service_fn(|n: u32| async move { Ok::<_, Error>(n) }),
        RateConfig::new(u64::MAX, Duration::from_secs(1)),
    );
    paused().block_on(async {
        svc.oneshot(1).await.unwrap();
        sleep(Duration::from_secs(2)).await;
        for i in 0..1_000 {
            svc.oneshot(i).await.unwrap();
        }
        assert!(svc.tokens() > 1_000_000);
    });
}
