//! The balancer's background task: follows discovery, connects endpoints (retrying with
//! backoff), and reconnects endpoints whose connection closed. Requests never wait on it:
//! an endpoint is handed out only once it is connected.

use super::Shared;
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

/// What the driver knows of a discovered target.
struct Target<T> {
    target: T,
    /// Bumped by every `Insert` of the key: results of older attempts are discarded.
    epoch: u64,
    /// An attempt is under way.
    connecting: bool,
}

/// The outcome of one connection attempt.
type Attempt<K, S> = (K, u64, u32, Result<S, Error>);

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

    let attempt = |key: K, target: T, epoch: u64, n: u32| {
        let connector = connector.clone();
        let fut: Connecting<K, S> = Box::pin(async move {
            if n > 0 {
                time::sleep(backoff.delay(n)).await;
            }
            let result = connector.new_service(target).await.map_err(Into::into);
            (key, epoch, n, result)
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
                    connecting.push(attempt(key.clone(), target.clone(), next_epoch, 0));
                    targets.insert(
                        key,
                        Target {
                            target,
                            epoch: next_epoch,
                            connecting: true,
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
                connecting.push(attempt(key, t.target.clone(), t.epoch, 1));
            }
        }
        while let Poll::Ready(Some((key, epoch, n, result))) = connecting.poll_next_unpin(cx) {
            let Some(t) = targets.get_mut(&key).filter(|t| t.epoch == epoch) else {
                continue; // removed or re-inserted meanwhile
            };
            match result {
                Ok(svc) => {
                    t.connecting = false;
                    shared.insert(key, svc);
                }
                Err(e) => {
                    log::warn!("balance: connecting to {key:?} failed (attempt {n}): {e}");
                    connecting.push(attempt(key, t.target.clone(), epoch, n + 1));
                }
            }
        }
        Poll::<()>::Pending
    })
    .await
}
