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
//! - A [`Replay`] body past its cap is sent once. Put [`SentOnceLayer`] just below the retry
//!   layer and a failure that [`HttpRetry`] would have retried comes back flagged
//!   [`non_retryable`](Error::non_retryable), with a context saying why it was not retried:
//!   `not retried: the request body (1048576 bytes) was past the replay cap of 64 KiB`.
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
use sheave_service::classify::{Class, Classify, DefaultClassifier, Idempotent};
use sheave_service::{Error, Layer, Service, TryReady};

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

/// Explains why a request was not retried: a call whose [`Replay`] body was past its cap (and
/// so sent once) and that failed in a way [`HttpRetry`] would have retried comes back flagged
/// [`non_retryable`](Error::non_retryable) with the context `not retried: the request body (N
/// bytes) was past the replay cap of 64 KiB`. Other outcomes pass through untouched.
///
/// It goes just below the retry layer (the retry layer then leaves the flagged error as it
/// is, and no outer retry layer tries again either: the body is gone).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use sheave_http::body::Replay;
/// use sheave_http::classify::{HttpRetry, SentOnceLayer};
/// use sheave_middleware::retry::{RetryConfig, RetryLayer};
/// use sheave_service::{Error, ServiceBuilder, ServiceExt, service_fn};
///
/// let svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryConfig::new()).policy(HttpRetry::new()))
///     .layer(SentOnceLayer)
///     .service(service_fn(|_req: http::Request<Replay<Full<Bytes>>>| async {
///         Err::<http::Response<()>, _>(Error::unavailable())
///     }));
/// let rt = sheave_core::Runtime::new().unwrap();
/// rt.block_on(async {
///     let body = Replay::new(Full::new(Bytes::from(vec![0u8; 2048])), 1024).await.unwrap();
///     let err = svc.oneshot(http::Request::put("/").body(body).unwrap()).await.unwrap_err();
///     assert!(err.is_non_retryable());
///     assert_eq!(
///         err.context(),
///         Some("not retried: the request body (2048 bytes) was past the replay cap of 1 KiB")
///     );
/// });
/// ```
#[derive(Debug, Clone)]
pub struct SentOnce<S> {
    inner: S,
}

/// The layer of [`SentOnce`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SentOnceLayer;

impl<S> Layer<S> for SentOnceLayer {
    type Service = SentOnce<S>;

    fn layer(&self, inner: S) -> SentOnce<S> {
        SentOnce { inner }
    }
}

impl<S> SentOnce<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        SentOnce { inner }
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<Replay<B>>> for SentOnce<S>
where
    S: Service<Request<Replay<B>>, Response = Response<R>>,
    S::Error: Into<Error>,
{
    type Response = Response<R>;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        let ready = self.inner.ready();
        async move { ready.await.map_err(Into::into) }
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, Error> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Request<Replay<B>>) -> Result<Response<R>, Error> {
        let why = if is_idempotent(req.method()) {
            req.body().why_not_replayable()
        } else {
            None
        };
        let outcome = self.inner.call(permit, req).await.map_err(Into::into);
        match (outcome, why) {
            (Err(error), Some(why)) if should_retry::<R>(Err(&error)) => Err(error
                .non_retryable()
                .with_context(format!("not retried: {why}"))),
            (outcome, _) => outcome,
        }
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

    #[test]
    fn a_body_past_the_cap_fails_once_and_the_error_says_why() {
        use sheave_middleware::retry::{RetryConfig, RetryLayer};
        use sheave_service::{ServiceBuilder, ServiceExt, service_fn};
        use std::cell::Cell;

        let calls = Cell::new(0);
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(RetryConfig::new().max_attempts(3)).policy(HttpRetry::new()))
            .layer(SentOnceLayer)
            .service(service_fn(|_req: Request<Replay<Full<Bytes>>>| {
                calls.set(calls.get() + 1);
                async { Err::<Response<()>, _>(Error::unavailable()) }
            }));
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            let cap = crate::body::DEFAULT_REPLAY_CAP;
            let big = Replay::new(Full::new(Bytes::from(vec![0u8; 100_000])), cap)
                .await
                .unwrap();
            let err = svc
                .oneshot(Request::put("/").body(big).unwrap())
                .await
                .unwrap_err();
            assert_eq!(calls.get(), 1, "sent once");
            assert!(err.is_unavailable() && err.is_non_retryable());
            assert_eq!(
                err.context(),
                Some(
                    "not retried: the request body (100000 bytes) was past the replay cap of 64 KiB"
                )
            );
            let shown = err.to_string();
            assert!(shown.contains("replay cap of 64 KiB"), "{shown}");

            // A POST is never retried anyway: its error is left as it is.
            calls.set(0);
            let big = Replay::new(Full::new(Bytes::from(vec![0u8; 100_000])), cap)
                .await
                .unwrap();
            let err = svc
                .oneshot(Request::post("/").body(big).unwrap())
                .await
                .unwrap_err();
            assert_eq!((calls.get(), err.context()), (1, None));

            // A body within the cap is retried as usual, and no context is added.
            calls.set(0);
            let small = Replay::new(Full::new(Bytes::from("x")), cap).await.unwrap();
            let err = svc
                .oneshot(Request::put("/").body(small).unwrap())
                .await
                .unwrap_err();
            assert_eq!((calls.get(), err.context()), (3, None));
        });
    }
}
