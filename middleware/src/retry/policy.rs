//! [`Policy`]: which failures are retried, and how a request is kept for a retry.

use std::fmt;

use sheave_service::Error;
use sheave_service::classify::{Classify, DefaultClassifier};

/// Decides whether a [`Retry`](super::Retry) retries, and keeps the request for it.
///
/// # Why `clone_request` comes first
///
/// A call consumes its request, so a retry needs a copy made *before* the first attempt.
/// [`Retry`](super::Retry) asks for that copy only when a retry is possible at all (more than
/// one attempt configured, and the budget holds a retry right now), and the policy may still
/// decline (`None`). This keeps `Clone` off the request type unless retries are enabled: the
/// bound lives on the policy's impl ([`RetryableFailures`] needs `Req: Clone`; [`NeverRetry`]
/// does not), and a protocol can implement `clone_request` for a request that is not `Clone`
/// (a replayable body). The cost of a retryable request that succeeds is one clone, dropped.
pub trait Policy<Req, Res> {
    /// A copy of `req` for a possible retry, or `None` if this request is never retried.
    fn clone_request(&self, req: &Req) -> Option<Req>;

    /// Whether an attempt with `outcome` should be retried. Asked after every attempt, also
    /// when no retry is possible any more (then a `true` flags the error `non_retryable`).
    fn should_retry(&self, outcome: Result<&Res, &Error>) -> bool;
}

/// The default policy: retries what the classifier calls
/// [retryable](sheave_service::classify::Class::is_retryable) — with the
/// [`DefaultClassifier`], only errors that surely were not processed (flagged `retryable`,
/// or `Unavailable`); never timeouts, never application errors, never an `Ok`.
#[derive(Clone, Copy, Default)]
pub struct RetryableFailures<C = DefaultClassifier> {
    classifier: C,
}

impl RetryableFailures {
    /// With the [`DefaultClassifier`].
    pub fn new() -> Self {
        RetryableFailures {
            classifier: DefaultClassifier,
        }
    }
}

impl RetryableFailures<sheave_service::classify::Idempotent> {
    /// For idempotent requests: retries timeouts, closed connections and I/O errors too —
    /// failures the server may have processed (see
    /// [`Idempotent`](sheave_service::classify::Idempotent)).
    pub fn idempotent() -> Self {
        RetryableFailures {
            classifier: sheave_service::classify::Idempotent,
        }
    }
}

impl<C> RetryableFailures<C> {
    /// With `classifier`: e.g. one that calls a protocol's "try again" reply retryable.
    pub fn with_classifier(classifier: C) -> Self {
        RetryableFailures { classifier }
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }
}

impl<C> fmt::Debug for RetryableFailures<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryableFailures")
            .field("classifier", &crate::TypeName::of(&self.classifier))
            .finish()
    }
}

impl<Req, Res, C> Policy<Req, Res> for RetryableFailures<C>
where
    Req: Clone,
    C: Classify<Res, Error>,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn should_retry(&self, outcome: Result<&Res, &Error>) -> bool {
        self.classifier.classify(outcome).is_retryable()
    }
}

/// Never retries, and never clones: for requests that are not `Clone`, or to switch retries
/// off without changing the stack's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverRetry;

impl<Req, Res> Policy<Req, Res> for NeverRetry {
    fn clone_request(&self, _req: &Req) -> Option<Req> {
        None
    }

    fn should_retry(&self, _outcome: Result<&Res, &Error>) -> bool {
        false
    }
}
