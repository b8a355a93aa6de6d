//! Timers with the paused clock: exact, and instant in wall time.

mod support;

use rand::{Rng, SeedableRng, rngs::StdRng};
use sheave_core::{Runtime, spawn, time};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::paused;

#[test]
fn ten_thousand_random_deadlines_fire_in_deadline_order_and_none_early() {
    let rt = paused();
    let fired = rt.block_on(async {
        let start = time::now();
        let fired: Rc<RefCell<Vec<(Instant, Instant)>>> = Rc::default();
        let mut rng = StdRng::seed_from_u64(7);
        let tasks: Vec<_> = (0..10_000)
            .map(|_| {
                let deadline = start + Duration::from_millis(rng.random_range(0..600_000));
                let fired = fired.clone();
                spawn(async move {
                    time::sleep_until(deadline).await;
                    fired.borrow_mut().push((deadline, time::now()));
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        Rc::try_unwrap(fired).unwrap().into_inner()
    });
    assert_eq!(fired.len(), 10_000);
    for (deadline, at) in &fired {
        assert!(at >= deadline, "a timer fired early");
        assert_eq!(at, deadline, "a timer fired late on a paused clock");
    }
    assert!(
        fired.windows(2).all(|w| w[0].0 <= w[1].0),
        "timers fired out of deadline order"
    );
}

#[test]
fn a_cancelled_timer_never_fires() {
    let rt = paused();
    rt.block_on(async {
        let woke = Rc::new(RefCell::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..100u64 {
            let woke = woke.clone();
            handles.push(spawn(async move {
                time::sleep(Duration::from_millis(10 * (i + 1))).await;
                woke.borrow_mut().push(i);
            }));
        }
        for (i, h) in handles.iter().enumerate() {
            if i % 2 == 1 {
                h.abort();
            }
        }
        time::sleep(Duration::from_secs(5)).await;
        let woke = woke.borrow();
        assert_eq!(woke.len(), 50);
        assert!(
            woke.iter().all(|i| i % 2 == 0),
            "an aborted sleeper woke: {woke:?}"
        );
    });
}

#[test]
fn timeout_returns_the_output_when_the_future_wins() {
    let rt = paused();
    rt.block_on(async {
        let out = time::timeout(Duration::from_millis(100), async {
            time::sleep(Duration::from_millis(99)).await;
            7
        })
        .await;
        assert_eq!(out, Ok(7));
    });
}

#[test]
fn timeout_returns_elapsed_at_the_deadline_and_not_one_tick_before() {
    let rt = paused();
    rt.block_on(async {
        let start = time::now();
        let out = time::timeout(
            Duration::from_secs(30),
            time::sleep(Duration::from_secs(31)),
        )
        .await;
        assert!(out.is_err());
        assert_eq!(time::now() - start, Duration::from_secs(30));
    });
}

#[test]
fn reset_moves_a_sleep_earlier_and_later() {
    let rt = paused();
    rt.block_on(async {
        let start = time::now();
        let mut s = time::sleep(Duration::from_secs(10));
        s.reset(start + Duration::from_secs(2));
        (&mut s).await;
        assert_eq!(time::now() - start, Duration::from_secs(2));
        s.reset(start + Duration::from_secs(3));
        s.await;
        assert_eq!(time::now() - start, Duration::from_secs(3));
    });
}

#[test]
fn interval_ticks_on_its_period() {
    let rt = paused();
    rt.block_on(async {
        let start = time::now();
        let mut every = time::interval(Duration::from_millis(100));
        let mut ticks = Vec::new();
        for _ in 0..4 {
            ticks.push(every.tick().await - start);
        }
        let ms: Vec<u128> = ticks.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 100, 200, 300]);
    });
}

#[test]
fn a_sleep_beyond_the_wheel_horizon_is_clamped_not_a_panic() {
    let rt = paused();
    rt.block_on(async {
        let far = time::sleep(Duration::from_secs(100 * 365 * 24 * 3600));
        let out = time::timeout(Duration::from_secs(1), far).await;
        assert!(out.is_err());
    });
}

#[test]
fn sleeps_longer_than_the_horizon_and_timers_after_years_of_uptime_still_fire() {
    // Regression (review): the wheel clamped deadlines to an absolute tick (2^36 ms after
    // start): a sleep past it fired early, was re-armed, and never woke; after ≈ 795 days
    // of uptime every new timer did the same. On its own thread, so a regression fails
    // the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = paused();
        let took = rt.block_on(async {
            let start = time::now();
            let years = Duration::from_secs(3 * 365 * 24 * 3600);
            time::sleep(years).await;
            let day = Duration::from_secs(24 * 3600);
            time::sleep(day).await;
            let out = time::timeout(Duration::from_millis(5), std::future::pending::<()>()).await;
            assert!(out.is_err());
            (time::now() - start, years + day + Duration::from_millis(5))
        });
        let _ = done.send(took);
    });
    let (took, expected) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("a timer never fired");
    assert_eq!(took, expected);
}

#[test]
fn real_clock_sleeps_are_never_early() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        for ms in [0u64, 1, 2, 5] {
            let start = Instant::now();
            time::sleep(Duration::from_millis(ms)).await;
            assert!(start.elapsed() >= Duration::from_millis(ms));
        }
    });
}

#[test]
fn a_sleep_or_timeout_of_duration_max_is_forever_not_a_panic() {
    let rt = paused();
    rt.block_on(async {
        let out = time::timeout(Duration::MAX, async { 5 }).await;
        assert_eq!(out, Ok(5));
        let never = time::timeout(Duration::from_secs(1), time::sleep(Duration::MAX)).await;
        assert!(never.is_err());
    });
}
