//! `call_all`: bounded concurrency, order, readiness before intake.

#[path = "../support/mod.rs"]
mod support;

use std::cell::Cell;
use std::convert::Infallible;
use std::pin::pin;
use std::task::{Poll, Waker};

use futures::executor::block_on;
use futures::{StreamExt, stream};
use sheave_service::{Error, Service, ServiceExt, mock, service_fn};
use support::{Flag, YieldNow, poll_next_with};

/// Calls that take `n * 7 % 5` polls to finish, so they complete out of order; counts
/// the calls running at once.
struct Tracker {
    now: Cell<usize>,
    max: Cell<usize>,
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            now: Cell::new(0),
            max: Cell::new(0),
        }
    }

    async fn run(&self, n: u32) -> Result<u32, Infallible> {
        self.now.set(self.now.get() + 1);
        self.max.set(self.max.get().max(self.now.get()));
        YieldNow((n as usize * 7) % 5).await;
        self.now.set(self.now.get() - 1);
        Ok(n * 10)
    }
}

#[test]
fn call_all_never_exceeds_its_bound_and_keeps_request_order() {
    let tracker = Tracker::new();
    let svc = service_fn(|n: u32| tracker.run(n));
    let results: Vec<_> = block_on(svc.call_all(stream::iter(0..20)).max_in_flight(3).collect());
    assert_eq!(results, (0..20).map(|n| Ok(n * 10)).collect::<Vec<_>>());
    assert_eq!(tracker.max.get(), 3);
}

#[test]
fn unordered_call_all_yields_every_result_within_its_bound() {
    let tracker = Tracker::new();
    let svc = service_fn(|n: u32| tracker.run(n));
    let results: Vec<_> = block_on(
        svc.call_all(stream::iter(0..20))
            .max_in_flight(4)
            .unordered()
            .collect(),
    );
    let mut got: Vec<u32> = results.into_iter().map(Result::unwrap).collect();
    assert_ne!(
        got,
        (0..20).map(|n| n * 10).collect::<Vec<_>>(),
        "completion order differs"
    );
    got.sort_unstable();
    assert_eq!(got, (0..20).map(|n| n * 10).collect::<Vec<_>>());
    assert_eq!(tracker.max.get(), 4);
}

#[test]
fn call_all_takes_at_most_one_request_ahead_of_capacity() {
    let (svc, handle) = mock::pair_with_permits::<u32, u32>(1);
    let taken = Cell::new(0);
    let requests = stream::iter(0..3).inspect(|_| taken.set(taken.get() + 1));
    let (flag, waker) = Flag::new();
    let mut all = pin!(svc.call_all(requests));

    assert!(poll_next_with(all.as_mut(), &waker).is_pending());
    assert_eq!(taken.get(), 2, "one running, one waiting for capacity");
    assert_eq!(all.in_flight(), 1);

    let (req, tx) = handle.try_next_request().unwrap();
    tx.respond(req + 100);
    assert!(flag.take());
    assert!(matches!(
        poll_next_with(all.as_mut(), &waker),
        Poll::Ready(Some(Ok(100)))
    ));
    assert_eq!(taken.get(), 2);

    handle.allow_unlimited();
    assert!(flag.take());
    assert!(poll_next_with(all.as_mut(), &waker).is_pending());
    assert_eq!(taken.get(), 3);
    for _ in 0..2 {
        let (req, tx) = handle.try_next_request().unwrap();
        tx.respond(req + 100);
    }
    let rest: Vec<u32> = block_on(all.map(Result::unwrap).collect());
    assert_eq!(rest, vec![101, 102]);
}

#[test]
fn a_readiness_error_is_the_result_of_the_request_that_waited_for_it_in_its_place() {
    // Regression (review): the first readiness error ended the intake, so the rest of the
    // stream was silently never taken, and in ordered mode the error overtook the results
    // of earlier requests.
    let (svc, handle) = mock::pair_with_permits::<u32, u32>(1);
    let mut all = pin!(svc.call_all(stream::iter(0..5)));
    assert!(poll_next_with(all.as_mut(), Waker::noop()).is_pending());

    handle.close(Error::unavailable());
    // Request 0 still runs: nothing may overtake its result.
    assert!(poll_next_with(all.as_mut(), Waker::noop()).is_pending());
    let (req, tx) = handle.try_next_request().unwrap();
    tx.respond(req);
    let results: Vec<_> = block_on(all.collect());
    assert_eq!(results.len(), 5, "one result per request: {results:?}");
    assert!(matches!(results[0], Ok(0)), "{results:?}");
    assert!(
        results[1..]
            .iter()
            .all(|r| r.as_ref().is_err_and(Error::is_unavailable))
    );
    assert_eq!(
        handle.queued_requests(),
        0,
        "nothing was sent after the close"
    );
}

#[test]
fn an_idle_stream_holds_no_capacity_and_an_empty_one_ends_at_once() {
    // Regression (review): a permit was reserved before the next request arrived, so an
    // idle `call_all` held capacity, and an empty stream waited for readiness to end.
    let (svc, handle) = mock::pair_with_permits::<u32, u32>(1);
    let mut idle = pin!(svc.call_all(stream::pending::<u32>()));
    assert!(poll_next_with(idle.as_mut(), Waker::noop()).is_pending());
    assert!(
        svc.try_ready().is_ready(),
        "the idle stream took the only permit"
    );

    let (never_ready, _handle) = mock::pair_with_permits::<u32, u32>(0);
    let mut empty = pin!(never_ready.call_all(stream::empty::<u32>()));
    assert!(matches!(
        poll_next_with(empty.as_mut(), Waker::noop()),
        Poll::Ready(None)
    ));
    drop(handle);
}

#[test]
fn a_zero_bound_counts_as_one() {
    let tracker = Tracker::new();
    let svc = service_fn(|n: u32| tracker.run(n));
    let n = block_on(svc.call_all(stream::iter(0..5)).max_in_flight(0).count());
    assert_eq!(n, 5);
    assert_eq!(tracker.max.get(), 1);
}
