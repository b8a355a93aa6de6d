//! Readiness: permits, `try_ready`, readiness errors, and the mock's waiters.

#[path = "../support/mod.rs"]
mod support;

use std::pin::pin;
use std::task::{Poll, Waker};

use futures::executor::block_on;
use sheave_service::{
    Error, ErrorKind, Service, ServiceBuilder, ServiceExt, TryReady, mock, option_layer, service_fn,
};
use support::{Flag, poll_with};

#[test]
fn a_dropped_permit_returns_its_slot() {
    let (svc, handle) = mock::pair_with_permits::<(), ()>(1);
    assert_eq!(handle.permits(), 1);
    let permit = block_on(svc.ready()).unwrap();
    assert_eq!(handle.permits(), 0);
    assert!(svc.try_ready().is_busy());
    drop(permit);
    assert_eq!(handle.permits(), 1);
    assert!(svc.try_ready().is_ready());
}

#[test]
fn a_spent_permit_does_not_come_back() {
    let (svc, handle) = mock::pair_with_permits::<u8, u8>(1);
    let permit = block_on(svc.ready()).unwrap();
    let call = svc.call(permit, 1);
    let (req, tx) = handle.try_next_request().unwrap();
    tx.respond(req + 1);
    assert_eq!(block_on(call).unwrap(), 2);
    assert_eq!(handle.permits(), 0);
}

#[test]
fn combinators_and_boxes_pass_the_inner_permit_through() {
    let (svc, handle) = mock::pair_with_permits::<u8, u8>(1);
    let stack = ServiceBuilder::new()
        .map_request(|n: u8| n)
        .map_response(|n: u8| n)
        .map_err(|e: Error| e)
        .option_layer(Some(sheave_service::MapRequestLayer::new(|n: u8| n)))
        .service(svc.clone());
    let permit = block_on(stack.ready()).unwrap();
    assert_eq!(handle.permits(), 0);
    drop(permit);
    assert_eq!(handle.permits(), 1);

    let boxed = svc.boxed();
    let permit = block_on(boxed.ready()).unwrap();
    assert_eq!(handle.permits(), 0);
    drop(permit);
    assert_eq!(handle.permits(), 1);
}

#[test]
fn try_ready_tells_busy_from_ready_from_closed() {
    let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
    assert!(matches!(svc.try_ready(), TryReady::Busy));
    handle.allow(1);
    assert!(matches!(svc.try_ready(), TryReady::Ready(_)));
    handle.close(Error::unavailable());
    match svc.try_ready() {
        TryReady::Closed(err) => assert!(err.is_unavailable()),
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// Pending on the first poll of each `ready`, then ready: a fairness yield.
struct YieldsOnce;

impl Service<()> for YieldsOnce {
    type Response = ();
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        support::YieldNow(1).await;
        Ok(())
    }

    async fn call(&self, _: (), _: ()) -> Result<(), Error> {
        Ok(())
    }
}

/// Never ready: always fails.
struct Broken;

impl Service<()> for Broken {
    type Response = ();
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Err(Error::closed())
    }

    async fn call(&self, _: (), _: ()) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn the_default_try_ready_polls_ready_once() {
    assert!(YieldsOnce.try_ready().is_busy());
    assert!(block_on(YieldsOnce.ready()).is_ok());
    assert!(matches!(Broken.try_ready(), TryReady::Closed(e) if e.is_closed()));
    let always = service_fn(|()| async { Ok::<_, Error>(()) });
    assert!(always.try_ready().is_ready());
}

#[test]
fn readiness_errors_propagate_through_combinators_and_boxes() {
    let (svc, handle) = mock::pair::<u32, u32>();
    handle.close(Error::overloaded().retryable());
    let stack = svc
        .clone()
        .map_request(|n: u32| n)
        .filter(|n: u32| async move { Ok(n) })
        .and_then(|n| async move { Ok::<_, Error>(n) })
        .then(|r| async move { r })
        .map_response(|n| n);

    let err = block_on(stack.ready()).unwrap_err();
    assert!(err.is_overloaded() && err.is_retryable());
    assert!(matches!(stack.try_ready(), TryReady::Closed(e) if e.is_overloaded()));
    assert!(block_on(stack.oneshot(1)).unwrap_err().is_overloaded());

    let boxed = stack.boxed();
    assert!(block_on(boxed.ready()).unwrap_err().is_overloaded());
    assert!(matches!(boxed.try_ready(), TryReady::Closed(e) if e.is_overloaded()));

    let local = svc.clone().boxed_local();
    assert!(block_on(local.oneshot(1)).unwrap_err().is_overloaded());

    let either = option_layer(None::<sheave_service::MapResponseLayer<fn(u32) -> u32>>);
    let either = sheave_service::Layer::layer(&either, svc);
    assert!(block_on(either.ready()).unwrap_err().is_overloaded());
}

#[test]
fn map_err_maps_readiness_errors_too() {
    let (svc, handle) = mock::pair::<(), ()>();
    handle.close(Error::closed());
    let svc = svc.map_err(|e: Error| e.kind());
    assert_eq!(block_on(svc.ready()).unwrap_err(), ErrorKind::Closed);
    assert!(matches!(
        svc.try_ready(),
        TryReady::Closed(ErrorKind::Closed)
    ));
}

#[test]
fn a_dropped_ready_future_does_not_swallow_a_wakeup() {
    let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
    let (flag1, waker1) = Flag::new();
    let (flag2, waker2) = Flag::new();
    {
        let mut first = Box::pin(svc.ready());
        assert!(poll_with(first.as_mut(), &waker1).is_pending());
        let mut second = pin!(svc.ready());
        assert!(poll_with(second.as_mut(), &waker2).is_pending());
        // The first waiter gives up before capacity arrives...
        drop(first);
        handle.allow(1);
        // ...and the second is still woken, and gets the permit.
        assert!(flag2.take());
        assert!(matches!(
            poll_with(second.as_mut(), &waker2),
            Poll::Ready(Ok(_))
        ));
    }
    assert!(!flag1.take());
    assert_eq!(handle.permits(), 1, "the permit was dropped unused");
}

#[test]
fn a_boxed_service_waits_when_busy_and_wakes_on_a_grant() {
    let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
    let boxed = svc.boxed();
    let (flag, waker) = Flag::new();
    let mut ready = pin!(boxed.ready());
    assert!(poll_with(ready.as_mut(), &waker).is_pending());
    handle.allow(1);
    assert!(flag.take());
    assert!(matches!(
        poll_with(ready.as_mut(), &waker),
        Poll::Ready(Ok(_))
    ));
}

#[test]
fn closing_the_mock_fails_a_waiting_ready() {
    let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
    let (flag, waker) = Flag::new();
    let mut ready = pin!(svc.ready());
    assert!(poll_with(ready.as_mut(), &waker).is_pending());
    handle.close(Error::msg(ErrorKind::Closed, "shutting down"));
    assert!(flag.take());
    match poll_with(ready.as_mut(), Waker::noop()) {
        Poll::Ready(Err(err)) => assert_eq!(err.to_string(), "closed: shutting down"),
        other => panic!("expected the close error, got {other:?}"),
    }
}

#[test]
fn a_dropped_send_response_fails_the_call_with_canceled() {
    let (svc, handle) = mock::pair::<(), ()>();
    let call = svc.call(block_on(svc.ready()).unwrap(), ());
    let (_, tx) = handle.try_next_request().unwrap();
    drop(tx);
    assert!(block_on(call).unwrap_err().is_canceled());
}

#[test]
fn a_failed_answer_reaches_the_caller() {
    let (svc, handle) = mock::pair::<(), ()>();
    let call = svc.call(block_on(svc.ready()).unwrap(), ());
    let (_, tx) = handle.try_next_request().unwrap();
    tx.fail(Error::protocol("bad frame"));
    assert_eq!(
        block_on(call).unwrap_err().to_string(),
        "protocol error: bad frame"
    );
}

#[test]
fn dropping_the_handle_closes_the_mock_and_cancels_queued_calls() {
    let (svc, handle) = mock::pair::<(), ()>();
    let queued = svc.call(block_on(svc.ready()).unwrap(), ());
    let permit = block_on(svc.ready()).unwrap();
    drop(handle);
    assert!(block_on(queued).unwrap_err().is_canceled());
    assert!(block_on(svc.call(permit, ())).unwrap_err().is_canceled());
    assert!(block_on(svc.ready()).unwrap_err().is_closed());
}

#[test]
fn next_request_ends_when_every_mock_is_dropped() {
    let (svc, handle) = mock::pair::<u8, ()>();
    let clone = svc.clone();
    // The call is queued as soon as it is made; its future may go.
    drop(svc.call(block_on(svc.ready()).unwrap(), 7));
    drop(svc);
    drop(clone);
    assert_eq!(block_on(handle.next_request()).map(|(req, _)| req), Some(7));
    assert!(block_on(handle.next_request()).is_none());
}

#[test]
fn next_request_waits_for_a_call() {
    let (svc, handle) = mock::pair::<u8, u8>();
    let (flag, waker) = Flag::new();
    let mut next = pin!(handle.next_request());
    assert!(poll_with(next.as_mut(), &waker).is_pending());
    let call = svc.call(block_on(svc.ready()).unwrap(), 3);
    assert!(flag.take());
    let Poll::Ready(Some((req, tx))) = poll_with(next.as_mut(), &waker) else {
        panic!("the call was not seen");
    };
    tx.respond(req * 2);
    assert_eq!(block_on(call).unwrap(), 6);
}

#[test]
fn allow_switches_an_unlimited_mock_to_counted_mode() {
    let (svc, handle) = mock::pair::<(), ()>();
    assert_eq!(handle.permits(), usize::MAX);
    handle.allow(2);
    assert_eq!(handle.permits(), 2);
    let _a = svc.try_ready().ready().unwrap();
    let _b = svc.try_ready().ready().unwrap();
    assert!(svc.try_ready().is_busy());
    handle.allow_unlimited();
    assert!(svc.try_ready().is_ready());
}
