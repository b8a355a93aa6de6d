//! Hedged requests on the paused clock: no backup before enough samples, a backup after the
//! percentile, the first *success* wins, the loser is cancelled, and the budget bounds the
//! extra load.

#[path = "../support/mod.rs"]
mod support;

use sheave_core::time;
use sheave_middleware::hedge::{Hedge, HedgeConfig};
use sheave_middleware::retry::BudgetConfig;
use sheave_service::{Error, ErrorKind, Service, ServiceExt, service_fn};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use support::{ms, paused};

/// What one attempt does: answer after a delay, or fail after one.
#[derive(Clone, Copy, Debug)]
enum Attempt {
    Ok(u64),
    Fail(u64),
}

/// A backend that plays a script per attempt (the rest answer in 10 ms), counting attempts
/// and the ones dropped before they finished.
#[derive(Clone, Default)]
struct Script {
    plan: Rc<RefCell<Vec<Attempt>>>,
    started: Rc<Cell<u32>>,
    cancelled: Rc<Cell<u32>>,
}

struct CountDrop(Rc<Cell<u32>>, bool);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.set(self.0.get() + 1);
        }
    }
}

impl Script {
    fn service(&self) -> impl Service<u32, Response = (u32, u32), Error = Error> + use<> {
        let this = self.clone();
        service_fn(move |n: u32| {
            let this = this.clone();
            async move {
                let attempt = this.started.get();
                this.started.set(attempt + 1);
                let step = this.plan.borrow_mut().pop().unwrap_or(Attempt::Ok(10));
                let mut guard = CountDrop(this.cancelled.clone(), false);
                let out = match step {
                    Attempt::Ok(after) => {
                        time::sleep(ms(after)).await;
                        Ok((n, attempt))
                    }
                    Attempt::Fail(after) => {
                        time::sleep(ms(after)).await;
                        Err(Error::msg(ErrorKind::Io, "reset"))
                    }
                };
                guard.1 = true;
                out
            }
        })
    }

    /// The next attempts, in order.
    fn then(&self, attempts: &[Attempt]) {
        let mut plan = self.plan.borrow_mut();
        plan.clear();
        plan.extend(attempts.iter().rev());
    }
}

fn config() -> HedgeConfig {
    HedgeConfig::default().min_samples(20).percentile(0.9)
}

/// Teaches `hedge` that 10 ms is normal.
async fn learn(hedge: &Hedge<impl Service<u32, Response = (u32, u32), Error = Error>>) {
    for n in 0..20 {
        hedge.oneshot(n).await.unwrap();
    }
}

#[test]
fn no_backup_goes_before_min_samples() {
    paused().block_on(async {
        let script = Script::default();
        let hedge = Hedge::new(script.service(), config());
        script.then(&[Attempt::Ok(500)]);
        let start = time::now();
        assert_eq!(hedge.oneshot(1).await.unwrap(), (1, 0));
        assert_eq!(time::now() - start, ms(500));
        assert_eq!(hedge.hedges(), 0);
    });
}

#[test]
fn a_slow_request_gets_a_backup_after_the_percentile_and_the_loser_is_cancelled() {
    paused().block_on(async {
        let script = Script::default();
        let hedge = Hedge::new(script.service(), config());
        learn(&hedge).await;
        let before = script.started.get();
        script.then(&[Attempt::Ok(500), Attempt::Ok(10)]);
        let start = time::now();
        let (n, attempt) = hedge.oneshot(7).await.unwrap();
        assert_eq!(n, 7);
        assert_eq!(attempt, before + 1, "the backup answered");
        let took = time::now() - start;
        assert!(
            took >= ms(20) && took <= ms(21),
            "the 90th percentile (10 ms) + 10 ms: {took:?}"
        );
        assert_eq!(hedge.hedges(), 1);
        assert_eq!(script.cancelled.get(), 1, "the slow primary was dropped");
    });
}

#[test]
fn a_fast_failure_does_not_beat_a_slower_success() {
    paused().block_on(async {
        let script = Script::default();
        let hedge = Hedge::new(script.service(), config());
        learn(&hedge).await;
        let before = script.started.get();
        // The primary is slow but will succeed; the backup fails at once.
        script.then(&[Attempt::Ok(100), Attempt::Fail(1)]);
        let start = time::now();
        let (_, attempt) = hedge.oneshot(3).await.unwrap();
        assert_eq!(
            attempt, before,
            "the primary's success, not the backup's error"
        );
        assert_eq!(time::now() - start, ms(100));
    });
}

#[test]
fn both_failing_returns_an_error() {
    paused().block_on(async {
        let script = Script::default();
        let hedge = Hedge::new(script.service(), config());
        learn(&hedge).await;
        script.then(&[Attempt::Fail(100), Attempt::Fail(5)]);
        assert!(hedge.oneshot(3).await.unwrap_err().is_io());
    });
}

#[test]
fn the_budget_bounds_backups_when_everything_is_slow() {
    paused().block_on(async {
        let script = Script::default();
        let budget = BudgetConfig::new().ratio(0.1).min_per_second(0);
        let hedge = Hedge::new(script.service(), config().budget(budget));
        learn(&hedge).await;
        // An outage: every attempt is slow. Without a bound, each request would double.
        let requests = 1_000u32;
        for n in 0..requests {
            script.then(&[Attempt::Ok(300), Attempt::Ok(300)]);
            hedge.oneshot(n).await.unwrap();
        }
        let hedges = hedge.hedges();
        assert!(hedges > 0, "some backups went");
        assert!(
            hedges <= u64::from(requests) / 10 + 2,
            "{hedges} backups for {requests} requests"
        );
    });
}
