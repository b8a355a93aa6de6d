//! Where a client's codec puts RESP3 push frames: a bounded queue for one subscriber
//! ([`Pushes`]), or a count of the ones dropped because nobody listened.

use super::Frame;
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// How many push frames wait for the subscriber before newer ones are dropped.
pub(super) const DEFAULT_PUSH_QUEUE: usize = 1024;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    capacity: usize,
    subscribed: bool,
    waker: Option<Waker>,
    /// Codecs (connections) still able to deliver.
    sinks: usize,
    delivered: u64,
    dropped: u64,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn new(capacity: usize) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        shared.lock().capacity = capacity;
        shared
    }

    /// Takes the subscription, if nobody holds it.
    pub(super) fn subscribe(self: &Arc<Self>) -> Option<Pushes> {
        let mut state = self.lock();
        if state.subscribed {
            return None;
        }
        state.subscribed = true;
        Some(Pushes {
            shared: self.clone(),
        })
    }

    /// Push frames dropped so far: nobody subscribed, or the queue was full.
    pub(super) fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// The codec's end: delivers push frames.
#[derive(Debug)]
pub(super) struct PushSink {
    shared: Arc<Shared>,
}

impl PushSink {
    pub(super) fn new(shared: Arc<Shared>) -> PushSink {
        shared.lock().sinks += 1;
        PushSink { shared }
    }

    pub(super) fn deliver(&self, frame: Frame) {
        let mut state = self.shared.lock();
        if !state.subscribed || state.queue.len() >= state.capacity {
            state.dropped += 1;
            return;
        }
        state.queue.push_back(frame);
        state.delivered += 1;
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }
}

impl Clone for PushSink {
    fn clone(&self) -> Self {
        PushSink::new(self.shared.clone())
    }
}

impl Drop for PushSink {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sinks -= 1;
        if state.sinks == 0
            && let Some(waker) = state.waker.take()
        {
            drop(state);
            waker.wake();
        }
    }
}

/// The RESP3 push frames (`>` frames: pub/sub messages, client-tracking invalidations) a
/// [`Client`](super::Client)'s connection received, in order. A `Stream` that ends when the
/// connection is gone and every frame was read.
///
/// At most 1,024 frames wait here; newer ones are dropped while it is full, and every frame
/// is dropped while nobody subscribes — both are counted
/// ([`Client::dropped_pushes`](super::Client::dropped_pushes)). Dropping the subscription
/// drops (and counts) what was still queued.
#[derive(Debug)]
pub struct Pushes {
    shared: Arc<Shared>,
}

impl Pushes {
    /// The next push frame without waiting, if one is queued.
    pub fn try_next(&mut self) -> Option<Frame> {
        self.shared.lock().queue.pop_front()
    }
}

impl Stream for Pushes {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut state = self.shared.lock();
        if let Some(frame) = state.queue.pop_front() {
            return Poll::Ready(Some(frame));
        }
        if state.sinks == 0 {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Pushes {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.subscribed = false;
        state.dropped += state.queue.len() as u64;
        state.queue.clear();
    }
}
