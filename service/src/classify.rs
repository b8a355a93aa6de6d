//! Classification: what "failed" means, decided in one place.
//!
//! A [`Classify`] turns a call's outcome (a response or an error) into a [`Class`]:
//! success, failure (retryable or not), or ignorable. Retry, retry budgets, hedging,
//! circuit breakers, load metrics and stats all take a classifier, so they agree on what
//! failed. A protocol where some `Ok` responses are failures (a redis error reply, an HTTP
//! 503) plugs in a closure; everything else uses [`DefaultClassifier`].
//!
//! # The default table
//!
//! [`DefaultClassifier`] classifies `Result<&Res, &Error>`, checking in this order:
//!
//! | outcome | class | why |
//! |---|---|---|
//! | `Ok(_)` | `Success` | |
//! | error flagged [`non_retryable`](crate::Error::non_retryable) | `Failure { retryable: false }` | a budget already said no |
//! | error flagged [`retryable`](crate::Error::retryable) | `Failure { retryable: true }` | the layer that failed knows it was not processed |
//! | `Canceled` | `Ignorable` | the caller gave up: says nothing about the service |
//! | `InvalidRequest` | `Ignorable` | refused before it was sent: the caller's mistake, not the service's |
//! | `Unavailable` | `Failure { retryable: true }` | nothing took the request: it was never sent |
//! | `Timeout` | `Failure { retryable: false }` | the server may have processed it |
//! | `Overloaded`, `Closed`, any other | `Failure { retryable: false }` | unknown whether it was processed; a shedding layer that knows flags its error `retryable` |
//!
//! For idempotent requests, [`Idempotent`] calls timeouts and closed connections retryable
//! too.
//!
//! # Example
//!
//! ```
//! use sheave_service::classify::{Class, Classify, DefaultClassifier};
//! use sheave_service::Error;
//!
//! let c = DefaultClassifier;
//! assert_eq!(c.classify(Ok::<&u8, &Error>(&1)), Class::Success);
//! assert_eq!(c.classify(Err::<&u8, _>(&Error::unavailable())), Class::Failure { retryable: true });
//! assert_eq!(c.classify(Err::<&u8, _>(&Error::timeout())), Class::Failure { retryable: false });
//! assert_eq!(c.classify(Err::<&u8, _>(&Error::canceled())), Class::Ignorable);
//!
//! // A protocol whose error replies are `Ok` values classifies with a closure.
//! let redis = |outcome: Result<&Result<String, String>, &Error>| match outcome {
//!     Ok(Ok(_)) => Class::Success,
//!     Ok(Err(_)) => Class::Failure { retryable: false },
//!     Err(e) => DefaultClassifier.classify(Err::<&(), _>(e)),
//! };
//! assert_eq!(redis.classify(Ok(&Err("ERR".into()))), Class::Failure { retryable: false });
//! ```

use crate::error::{Error, ErrorKind};

/// What an outcome means to policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The call succeeded.
    Success,
    /// The call failed; `retryable` if the request was surely not processed.
    Failure {
        /// Safe to retry: the request was surely not processed.
        retryable: bool,
    },
    /// Counts neither way (e.g. the caller canceled).
    Ignorable,
}

impl Class {
    /// True for [`Class::Success`].
    pub fn is_success(self) -> bool {
        self == Class::Success
    }

    /// True for [`Class::Failure`], retryable or not.
    pub fn is_failure(self) -> bool {
        matches!(self, Class::Failure { .. })
    }

    /// True for `Class::Failure { retryable: true }`.
    pub fn is_retryable(self) -> bool {
        self == Class::Failure { retryable: true }
    }

    /// True for [`Class::Ignorable`].
    pub fn is_ignorable(self) -> bool {
        self == Class::Ignorable
    }
}

/// Decides the [`Class`] of a call's outcome.
///
/// Implemented by [`DefaultClassifier`] and by every `Fn(Result<&Res, &E>) -> Class`.
pub trait Classify<Res, E> {
    /// Classifies one outcome.
    fn classify(&self, outcome: Result<&Res, &E>) -> Class;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Class,
{
    fn classify(&self, outcome: Result<&Res, &E>) -> Class {
        self(outcome)
    }
}

/// Classifies by [`Error`] kind and flags; every `Ok` is a success. See the
/// [module docs](self) for the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl DefaultClassifier {
    /// Classifies an error alone, by the table in the [module docs](self).
    pub fn classify_error(error: &Error) -> Class {
        if error.is_non_retryable() {
            return Class::Failure { retryable: false };
        }
        if error.is_retryable() {
            return Class::Failure { retryable: true };
        }
        match error.kind() {
            ErrorKind::Canceled | ErrorKind::InvalidRequest => Class::Ignorable,
            ErrorKind::Unavailable => Class::Failure { retryable: true },
            _ => Class::Failure { retryable: false },
        }
    }
}

impl<Res> Classify<Res, Error> for DefaultClassifier {
    fn classify(&self, outcome: Result<&Res, &Error>) -> Class {
        match outcome {
            Ok(_) => Class::Success,
            Err(error) => DefaultClassifier::classify_error(error),
        }
    }
}

/// The classifier for **idempotent** requests (a GET, a SET to a fixed value): doing one
/// twice is harmless, so a failure is retryable unless it says otherwise — whether or not the
/// server may have processed it.
///
/// | outcome | class |
/// |---|---|
/// | `Ok(_)` | `Success` |
/// | flagged [`non_retryable`](crate::Error::non_retryable) | `Failure { retryable: false }` |
/// | `Canceled` or `InvalidRequest` (unflagged) | `Ignorable` |
/// | `Service` (an application error) or `Protocol` (it would fail again) | `Failure { retryable: false }` |
/// | `Timeout`, `Closed`, `Io`, `Overloaded`, `Unavailable` | `Failure { retryable: true }` |
///
/// ```
/// use sheave_service::classify::{Classify, Idempotent};
/// use sheave_service::Error;
///
/// // The connection died with the request in flight: retry it elsewhere.
/// assert!(Idempotent.classify(Err::<&(), _>(&Error::closed())).is_retryable());
/// assert!(!Idempotent.classify(Err::<&(), _>(&Error::protocol("bad frame"))).is_retryable());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Idempotent;

impl<Res> Classify<Res, Error> for Idempotent {
    fn classify(&self, outcome: Result<&Res, &Error>) -> Class {
        let Err(error) = outcome else {
            return Class::Success;
        };
        if error.is_non_retryable() {
            return Class::Failure { retryable: false };
        }
        if error.is_retryable() {
            return Class::Failure { retryable: true };
        }
        match error.kind() {
            ErrorKind::Canceled | ErrorKind::InvalidRequest => Class::Ignorable,
            ErrorKind::Service | ErrorKind::Protocol => Class::Failure { retryable: false },
            _ => Class::Failure { retryable: true },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(e: Error) -> Class {
        DefaultClassifier.classify(Err::<&(), _>(&e))
    }

    #[test]
    fn a_request_refused_before_it_was_sent_says_nothing_about_the_service() {
        // Regression (review): a caller's invalid command, never sent, counted as the
        // endpoint's failure and could eject a healthy endpoint or open its breaker.
        let invalid = Error::invalid_request("not a command");
        assert_eq!(class(invalid.clone()), Class::Ignorable);
        assert_eq!(
            Idempotent.classify(Err::<&(), _>(&invalid)),
            Class::Ignorable
        );
    }

    #[test]
    fn flags_decide_before_kinds() {
        assert_eq!(
            class(Error::unavailable().non_retryable()),
            Class::Failure { retryable: false }
        );
        assert_eq!(
            class(Error::overloaded().retryable()),
            Class::Failure { retryable: true }
        );
        assert_eq!(
            class(Error::canceled().retryable()),
            Class::Failure { retryable: true }
        );
    }

    #[test]
    fn idempotent_requests_retry_what_may_have_been_processed() {
        let idem = |e: Error| Idempotent.classify(Err::<&(), _>(&e));
        for e in [
            Error::timeout(),
            Error::closed(),
            Error::overloaded(),
            Error::unavailable(),
        ] {
            assert!(idem(e).is_retryable());
        }
        assert!(idem(Error::canceled()).is_ignorable());
        assert!(!idem(Error::service(std::io::Error::other("app"))).is_retryable());
        assert!(!idem(Error::timeout().non_retryable()).is_retryable());
    }

    #[test]
    fn unflagged_kinds_follow_the_table() {
        assert!(class(Error::canceled()).is_ignorable());
        assert!(class(Error::unavailable()).is_retryable());
        for e in [
            Error::timeout(),
            Error::overloaded(),
            Error::closed(),
            Error::protocol("x"),
        ] {
            assert_eq!(class(e), Class::Failure { retryable: false });
        }
    }
}
