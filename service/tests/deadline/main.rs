//! Deadlines: nested layers tighten, the earliest wins, the outer value comes back.

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use sheave_service::{Service, ServiceBuilder, ServiceExt, TryReady, deadline, service_fn};
use support::YieldNow;

/// A middleware that runs each call under its own deadline.
struct Tighten<S> {
    inner: S,
    deadline: Instant,
}

impl<S: Service<R>, R> Service<R> for Tighten<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, S::Error>> {
        self.inner.ready()
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    fn call(
        &self,
        permit: S::Permit,
        req: R,
    ) -> impl Future<Output = Result<S::Response, S::Error>> {
        deadline::with_deadline(self.deadline, self.inner.call(permit, req))
    }
}

/// Two tightening layers over a service that reports the deadline it sees, before and
/// after yielding to the executor.
fn stack(
    outer: Instant,
    inner: Instant,
) -> impl Service<(), Response = (Option<Instant>, Option<Instant>), Error = Infallible> {
    ServiceBuilder::new()
        .layer_fn(move |s| Tighten {
            inner: s,
            deadline: outer,
        })
        .layer_fn(move |s| Tighten {
            inner: s,
            deadline: inner,
        })
        .service_fn(|()| async {
            let before = deadline::current();
            YieldNow(2).await;
            Ok((before, deadline::current()))
        })
}

#[test]
fn nested_deadlines_take_the_earliest() {
    let now = Instant::now();
    let early = now + Duration::from_millis(10);
    let late = now + Duration::from_secs(10);

    let seen = block_on(stack(early, late).oneshot(())).unwrap();
    assert_eq!(
        seen,
        (Some(early), Some(early)),
        "the outer layer's earlier deadline wins"
    );

    let seen = block_on(stack(late, early).oneshot(())).unwrap();
    assert_eq!(seen, (Some(early), Some(early)), "the inner layer tightens");
}

#[test]
fn the_outer_deadline_is_restored_after_each_poll() {
    let now = Instant::now();
    let outer = now + Duration::from_secs(60);
    let inner = now + Duration::from_secs(1);
    let svc = stack(inner, inner);

    block_on(deadline::with_deadline(outer, async {
        assert_eq!(deadline::current(), Some(outer));
        let seen = svc.oneshot(()).await.unwrap();
        assert_eq!(seen, (Some(inner), Some(inner)));
        assert_eq!(deadline::current(), Some(outer));
    }));
    assert_eq!(deadline::current(), None);
}

#[test]
fn a_future_without_a_wrapper_sees_no_deadline() {
    let svc = service_fn(|()| async { Ok::<_, Infallible>(deadline::current()) });
    assert_eq!(block_on(svc.oneshot(())), Ok(None));
    assert!(!deadline::is_expired(Instant::now()));
    assert_eq!(deadline::remaining(Instant::now()), None);
}

#[test]
fn a_pending_call_leaves_no_deadline_behind_between_polls() {
    let d = Instant::now() + Duration::from_secs(1);
    let svc = stack(d, d);
    let mut call = std::pin::pin!(svc.oneshot(()));
    assert!(support::poll_with(call.as_mut(), std::task::Waker::noop()).is_pending());
    assert_eq!(deadline::current(), None);
    assert_eq!(block_on(call), Ok((Some(d), Some(d))));
}
