//! The balancer's background task: follows discovery, connects endpoints (retrying with
//! backoff), and reconnects endpoints whose connection closed. Requests never wait on it:
//! an endpoint is handed out only once it is connected.
//!
//! The driver owns each key's [`Health`]: it lives as long as discovery lists the key, so
//! failures, ejections and the reconnect backoff survive reconnects. A reconnect waits for
//! the backoff of the key's bad connections in a row, and never ends before the key's
//! ejection does.

use super::endpoint::Health;
use super::shared::Shared;
use crate::discover::{Change, Discover};
use futures::stream::{FuturesUnordered, StreamExt};
use sheave_core::time;
use sheave_service::{Error, NewService};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// What the driver knows of a discovered target.
struct Target<T> {
    target: T,
    /// Bumped by every `Insert` of the key: results of older attempts are discarded.
    epoch: u64,
    /// An attempt is under way.
    connecting: bool,
    health: Rc<Health>,
}

/// The outcome of one connection attempt.
type Attempt<K, S> = (K, u64, Result<S, Error>);

/// A connection attempt under way.
type Connecting<K, S> = Pin<Box<dyn Future<Output = Attempt<K, S>>>>;

/// Runs until the balancer drops (its handle aborts this task).
pub(crate) async fn drive<D, N, K, T, S>(discover: D, connector: N, shared: Rc<Shared<K, S>>)
where
    D: Discover<Key = K, Target = T> + 'static,
    N: NewService<T, Service = S> + 'static,
    N::Error: Into<Error>,
    K: Clone + Eq + Hash + Debug + 'static,
    T: Clone + 'static,
    S: 'static,
{
    let connector = Rc::new(connector);
    let mut discover = Box::pin(discover);
    let mut discovery_open = true;
    let mut targets: HashMap<K, Target<T>> = HashMap::new();
    let mut next_epoch = 0u64;
    let mut connecting: FuturesUnordered<Connecting<K, S>> = FuturesUnordered::new();
    let backoff = shared.config.reconnect;

    // Attempt `n` of a key (0: the first, at once) waits for the backoff of `n`, and at
    // least until the key's ejection ends.
    let attempt = |key: K, target: T, epoch: u64, health: &Health| {
        let connector = connector.clone();
        let n = health.bad_connections();
        let wait = if n == 0 {
            Duration::ZERO
        } else {
            backoff.delay(n).max(health.ejected_for(time::now_cached()))
        };
        let fut: Connecting<K, S> = Box::pin(async move {
            if !wait.is_zero() {
                time::sleep(wait).await;
            }
            let result = connector.new_service(target).await.map_err(Into::into);
            (key, epoch, result)
        });
        fut
    };

    poll_fn(|cx| {
        shared.set_driver_waker(cx.waker());
        while discovery_open {
            match discover.as_mut().poll_next(cx) {
                Poll::Ready(Some(Change::Insert(key, target))) => {
                    next_epoch += 1;
                    shared.remove(&key);
                    let health = Rc::new(Health::default());
                    connecting.push(attempt(key.clone(), target.clone(), next_epoch, &health));
                    targets.insert(
                        key,
                        Target {
                            target,
                            epoch: next_epoch,
                            connecting: true,
                            health,
                        },
                    );
                }
                Poll::Ready(Some(Change::Remove(key))) => {
                    targets.remove(&key);
                    shared.remove(&key);
                }
                Poll::Ready(None) => discovery_open = false,
                Poll::Pending => break,
            }
        }
        for key in shared.take_reconnects() {
            if let Some(t) = targets.get_mut(&key)
                && !t.connecting
            {
                t.connecting = true;
                // A reconnect is never immediate: a connection that served well and then
                // closed still waits the first backoff step.
                if t.health.bad_connections() == 0 {
                    t.health.bad_connection();
                }
                connecting.push(attempt(key, t.target.clone(), t.epoch, &t.health));
            }
        }
        while let Poll::Ready(Some((key, epoch, result))) = connecting.poll_next_unpin(cx) {
            let Some(t) = targets.get_mut(&key).filter(|t| t.epoch == epoch) else {
                continue; // removed or re-inserted meanwhile
            };
            match result {
                Ok(svc) => {
                    t.connecting = false;
                    shared.insert(key, svc, t.health.clone());
                }
                Err(e) => {
                    t.health.bad_connection();
                    let n = t.health.bad_connections();
                    log::warn!("balance: connecting to {key:?} failed ({n} in a row): {e}");
                    connecting.push(attempt(key, t.target.clone(), epoch, &t.health));
                }
            }
        }
        Poll::<()>::Pending
    })
    .await
}
