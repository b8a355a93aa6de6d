//! HTTP in the middleware: [`HttpClassifier`] (what counts as a failure) and [`HttpRetry`]
//! (what may be sent again), for `Retry`, the breaker, ejection and stats.
//!
//! - A 5xx response is a failure; 503 and 429 say the endpoint is overloaded, so they are
//!   retryable elsewhere. Other statuses are successes (a 404 is the server working).
//! - Errors are classified as sheave errors: a connection that could not be made (the request
//!   was never written) is retryable.
//! - [`HttpRetry`] retries only idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`,
//!   `TRACE`) whose body can be cloned (a `Clone` body such as `Full`, or a
//!   [`Replay`] buffered within its cap); for them, timeouts and broken
//!   connections are retryable too, since sending again is harmless.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use sheave_http::classify::{HttpClassifier, HttpRetry};
//! use sheave_middleware::retry::Policy;
//! use sheave_service::{Error, classify::Classify};
//!
//! let busy = http::Response::builder().status(503).body(()).unwrap();
//! assert!(HttpClassifier.classify(Ok::<_, &Error>(&busy)).is_retryable());
//! let get = http::Request::get("/").body(Full::new(Bytes::new())).unwrap();
//! let post = http::Request::post("/").body(Full::new(Bytes::new())).unwrap();
//! let policy = HttpRetry::new();
//! assert!(Policy::<_, http::Response<()>>::clone_request(&policy, &get).is_some());
//! assert!(Policy::<_, http::Response<()>>::clone_request(&policy, &post).is_none());
//! ```

use crate::body::Replay;
use http::{Method, Request, Response, StatusCode};
use sheave_middleware::retry::Policy;
use sheave_service::Error;
use sheave_service::classify::{Class, Classify, DefaultClassifier, Idempotent};

/// Classifies HTTP outcomes: 5xx fails, 503 and 429 are retryable (overloaded), errors as
/// [`DefaultClassifier`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// The class of a response's status.
    pub fn classify_status(status: StatusCode) -> Class {
        match status.as_u16() {
            429 | 503 => Class::Failure { retryable: true },
            500..=599 => Class::Failure { retryable: false },
            _ => Class::Success,
        }
    }
}

impl<B> Classify<Response<B>, Error> for HttpClassifier {
    fn classify(&self, outcome: Result<&Response<B>, &Error>) -> Class {
        match outcome {
            Ok(response) => HttpClassifier::classify_status(response.status()),
            Err(error) => DefaultClassifier::classify_error(error),
        }
    }
}

/// Whether requests with this method may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A retry policy for HTTP: idempotent requests with a clonable body only.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRetry {
    _private: (),
}

impl HttpRetry {
    /// The policy.
    pub fn new() -> Self {
        HttpRetry::default()
    }
}

impl<B: Clone, R> Policy<Request<B>, Response<R>> for HttpRetry {
    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        if !is_idempotent(req.method()) {
            return None;
        }
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }

    fn should_retry(&self, outcome: Result<&Response<R>, &Error>) -> bool {
        should_retry(outcome)
    }
}

/// Replayable bodies: retried when idempotent and buffered whole (within the cap); a body past
/// the cap is sent once.
impl<B, R> Policy<Request<Replay<B>>, Response<R>> for HttpRetry {
    fn clone_request(&self, req: &Request<Replay<B>>) -> Option<Request<Replay<B>>> {
        if !is_idempotent(req.method()) {
            return None;
        }
        let mut copy = Request::new(req.body().try_clone()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }

    fn should_retry(&self, outcome: Result<&Response<R>, &Error>) -> bool {
        should_retry(outcome)
    }
}

fn should_retry<R>(outcome: Result<&Response<R>, &Error>) -> bool {
    match outcome {
        Ok(response) => HttpClassifier::classify_status(response.status()).is_retryable(),
        // Only idempotent requests reach here: a broken connection is safe to resend.
        Err(error) => Idempotent.classify(Err::<&(), _>(error)).is_retryable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_hundreds_fail_and_overload_is_retryable() {
        let class = |s: u16| HttpClassifier::classify_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(class(200), Class::Success);
        assert_eq!(class(404), Class::Success);
        assert_eq!(class(500), Class::Failure { retryable: false });
        assert_eq!(class(503), Class::Failure { retryable: true });
        assert_eq!(class(429), Class::Failure { retryable: true });
    }

    #[test]
    fn only_idempotent_methods_are_cloned_for_retry() {
        let policy = HttpRetry::new();
        for (method, retried) in [
            (Method::GET, true),
            (Method::PUT, true),
            (Method::DELETE, true),
            (Method::POST, false),
            (Method::PATCH, false),
        ] {
            let req = Request::builder().method(method.clone()).body(()).unwrap();
            let copy = Policy::<_, Response<()>>::clone_request(&policy, &req);
            assert_eq!(copy.is_some(), retried, "{method}");
        }
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn a_replay_body_within_its_cap_is_retried_and_one_past_it_is_not() {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            let policy = HttpRetry::new();
            let small = Replay::new(Full::new(Bytes::from("x")), 16).await.unwrap();
            let big = Replay::new(Full::new(Bytes::from(vec![0u8; 32])), 16)
                .await
                .unwrap();
            let put = |b| Request::put("/").body(b).unwrap();
            let clone = |r: &Request<Replay<Full<Bytes>>>| {
                Policy::<_, Response<()>>::clone_request(&policy, r).is_some()
            };
            assert!(clone(&put(small)));
            assert!(!clone(&put(big)));
        });
    }
}
