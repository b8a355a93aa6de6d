//! The one error type of sheave: an opaque [`Error`] with a [`kind`](Error::kind), an
//! optional source and two flags that retry policies read.
//!
//! # Composition rule
//!
//! Middleware in sheave produce [`Error`] and require `S::Error: Into<Error>` of the service
//! they wrap, so a stack of layers has one error type and policies decide by
//! [`ErrorKind`] and flags, never by downcasting.
//!
//! * A user error becomes kind [`ErrorKind::Service`] with the user error as its source:
//!   `svc.map_err(Error::service)`, or implement `From<TheirError> for sheave_service::Error`.
//!   A blanket `impl<E: std::error::Error> From<E> for Error` is impossible, because `Error`
//!   itself implements `std::error::Error` and would collide with `From<T> for T`.
//! * Application-level failures that are part of the response (a redis error reply, an HTTP
//!   500) are `Ok` values: they pass through every layer untouched, and a
//!   [classifier](crate::classify) decides whether they count as failures.
//!
//! # Flags
//!
//! * [`retryable`](Error::retryable): the request was surely **not** processed by the
//!   server (it never left, or the server rejected it before doing anything); retrying is safe.
//! * [`non_retryable`](Error::non_retryable): a budget already refused a retry; outer layers
//!   must not retry again. It wins over `retryable`.
//!
//! # Example
//!
//! ```
//! use sheave_service::{Error, ErrorKind};
//!
//! let err = Error::msg(ErrorKind::Overloaded, "queue full").retryable();
//! assert!(err.is_overloaded());
//! assert!(err.is_retryable());
//! assert_eq!(err.to_string(), "overloaded: queue full");
//!
//! // A budget said no: outer retry layers must give up.
//! let err = err.non_retryable();
//! assert!(!err.is_retryable());
//! assert!(err.is_non_retryable());
//!
//! // User errors become kind `Service`, with the user error as the source.
//! let io = std::io::Error::other("disk on fire");
//! let err = Error::service(io);
//! assert_eq!(err.kind(), ErrorKind::Service);
//! assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "disk on fire");
//! ```

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A boxed error, the common currency for sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, coarsely. Policies (retry, breakers, load metrics) decide by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A deadline passed before the response arrived.
    Timeout,
    /// The service (or a layer) refused the request for lack of capacity.
    Overloaded,
    /// No endpoint or connection could take the request; it was not sent.
    Unavailable,
    /// The service was closed or shut down.
    Closed,
    /// The caller gave up, or the party that owed a response went away.
    Canceled,
    /// The peer violated the wire protocol, or a frame could not be decoded.
    Protocol,
    /// An I/O error from the operating system.
    Io,
    /// An error produced by user code (a service or a closure); see the source.
    Service,
    /// The request was refused before it was sent, because it is not one the service can
    /// take (a RESP frame redis would not answer exactly once, say): the caller's mistake,
    /// which says nothing about the service's health.
    InvalidRequest,
}

impl ErrorKind {
    /// Every kind, in declaration order (the index of a kind in this list is `kind as usize`).
    const ALL: [ErrorKind; 9] = [
        ErrorKind::Timeout,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::Closed,
        ErrorKind::Canceled,
        ErrorKind::Protocol,
        ErrorKind::Io,
        ErrorKind::Service,
        ErrorKind::InvalidRequest,
    ];

    /// The short description used by `Display`, e.g. `"timed out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timed out",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Closed => "closed",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Io => "i/o error",
            ErrorKind::Service => "service error",
            ErrorKind::InvalidRequest => "invalid request",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const RETRYABLE: u8 = 1;
const NON_RETRYABLE: u8 = 2;

/// The sheave error: a [`kind`](Error::kind), optional context and source, and retry flags.
///
/// One pointer wide, so `Result<Response, Error>` stays small, and cheap to clone (the
/// payload is shared), so a dispatcher can fail every in-flight request with the same error.
///
/// A bare error — a kind and flags, no context, no source, as `Error::overloaded()` or
/// `Error::timeout().retryable()` — does not allocate: it shares one of 36 preallocated
/// payloads, so a load shedder rejecting at full speed costs a reference count, not a
/// `malloc`.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    flags: u8,
    context: Option<Cow<'static, str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// The shared payloads of bare errors, one per (kind, flags).
fn bare_table() -> &'static [Arc<Inner>] {
    static TABLE: OnceLock<Vec<Arc<Inner>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ErrorKind::ALL
            .iter()
            .flat_map(|&kind| {
                (0..4u8).map(move |flags| {
                    Arc::new(Inner {
                        kind,
                        flags,
                        context: None,
                        source: None,
                    })
                })
            })
            .collect()
    })
}

impl Error {
    #[inline]
    fn bare(kind: ErrorKind, flags: u8) -> Self {
        Error {
            inner: bare_table()[kind as usize * 4 + (flags & 3) as usize].clone(),
        }
    }

    fn from_parts(
        kind: ErrorKind,
        context: Option<Cow<'static, str>>,
        source: Option<BoxError>,
    ) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                flags: 0,
                context,
                source: source.map(Arc::from),
            }),
        }
    }

    /// An error of `kind` with no context and no source.
    #[inline]
    pub fn from_kind(kind: ErrorKind) -> Self {
        Self::bare(kind, 0)
    }

    /// An error of `kind` caused by `source`.
    pub fn new(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        Self::from_parts(kind, None, Some(source.into()))
    }

    /// An error of `kind` with a context message, printed after the kind:
    /// `Error::msg(ErrorKind::Overloaded, "queue full")` displays `overloaded: queue full`.
    pub fn msg(kind: ErrorKind, context: impl Into<Cow<'static, str>>) -> Self {
        Self::from_parts(kind, Some(context.into()), None)
    }

    /// A deadline passed ([`ErrorKind::Timeout`]).
    pub fn timeout() -> Self {
        Self::from_kind(ErrorKind::Timeout)
    }

    /// Capacity was refused ([`ErrorKind::Overloaded`]).
    pub fn overloaded() -> Self {
        Self::from_kind(ErrorKind::Overloaded)
    }

    /// Nothing could take the request ([`ErrorKind::Unavailable`]).
    pub fn unavailable() -> Self {
        Self::from_kind(ErrorKind::Unavailable)
    }

    /// The service is closed ([`ErrorKind::Closed`]).
    pub fn closed() -> Self {
        Self::from_kind(ErrorKind::Closed)
    }

    /// The request was canceled ([`ErrorKind::Canceled`]).
    pub fn canceled() -> Self {
        Self::from_kind(ErrorKind::Canceled)
    }

    /// A protocol violation described by `context` ([`ErrorKind::Protocol`]). For a protocol
    /// error with a source, use `Error::new(ErrorKind::Protocol, source)`.
    pub fn protocol(context: impl Into<Cow<'static, str>>) -> Self {
        Self::msg(ErrorKind::Protocol, context)
    }

    /// A request refused before it was sent, described by `context`
    /// ([`ErrorKind::InvalidRequest`]).
    pub fn invalid_request(context: impl Into<Cow<'static, str>>) -> Self {
        Self::msg(ErrorKind::InvalidRequest, context)
    }

    /// An I/O error. `io::ErrorKind::TimedOut` becomes [`ErrorKind::Timeout`] (a socket
    /// timeout is a timeout to every policy); all others become [`ErrorKind::Io`].
    /// The I/O error is kept as the source.
    pub fn io(err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Self::new(kind, err)
    }

    /// A user error, as kind [`ErrorKind::Service`] with `err` as its source.
    ///
    /// If `err` already is a sheave [`Error`] (possibly boxed), it is returned as is, so
    /// `map_err(Error::service)` never hides a kind.
    pub fn service(err: impl Into<BoxError>) -> Self {
        match err.into().downcast::<Error>() {
            Ok(err) => *err,
            Err(err) => Self::from_parts(ErrorKind::Service, None, Some(err)),
        }
    }

    /// Attaches (or replaces) the context message printed after the kind.
    pub fn with_context(self, context: impl Into<Cow<'static, str>>) -> Self {
        self.update(|inner| inner.context = Some(context.into()))
    }

    /// Marks the request as surely not processed: retrying is safe.
    pub fn retryable(self) -> Self {
        self.update(|inner| inner.flags |= RETRYABLE)
    }

    /// Marks that a budget already refused a retry: outer layers must not retry.
    /// Wins over [`retryable`](Error::retryable).
    pub fn non_retryable(self) -> Self {
        self.update(|inner| inner.flags |= NON_RETRYABLE)
    }

    fn update(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        if self.inner.context.is_none() && self.inner.source.is_none() {
            // A bare error: compute the new payload; stay bare (shared) if it still is.
            let mut next = Inner {
                kind: self.inner.kind,
                flags: self.inner.flags,
                context: None,
                source: None,
            };
            f(&mut next);
            return if next.context.is_none() {
                Self::bare(next.kind, next.flags)
            } else {
                Error {
                    inner: Arc::new(next),
                }
            };
        }
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// What went wrong.
    #[inline]
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The context message, if any.
    pub fn context(&self) -> Option<&str> {
        self.inner.context.as_deref()
    }

    /// True if the request was surely not processed and no budget forbade retrying.
    #[inline]
    pub fn is_retryable(&self) -> bool {
        self.inner.flags & (RETRYABLE | NON_RETRYABLE) == RETRYABLE
    }

    /// True if a budget already refused a retry.
    pub fn is_non_retryable(&self) -> bool {
        self.inner.flags & NON_RETRYABLE != 0
    }

    /// True for [`ErrorKind::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// True for [`ErrorKind::Overloaded`].
    pub fn is_overloaded(&self) -> bool {
        self.kind() == ErrorKind::Overloaded
    }

    /// True for [`ErrorKind::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// True for [`ErrorKind::Closed`].
    pub fn is_closed(&self) -> bool {
        self.kind() == ErrorKind::Closed
    }

    /// True for [`ErrorKind::Canceled`].
    pub fn is_canceled(&self) -> bool {
        self.kind() == ErrorKind::Canceled
    }

    /// True for [`ErrorKind::Protocol`].
    pub fn is_protocol(&self) -> bool {
        self.kind() == ErrorKind::Protocol
    }

    /// True for [`ErrorKind::InvalidRequest`].
    pub fn is_invalid_request(&self) -> bool {
        self.kind() == ErrorKind::InvalidRequest
    }

    /// True for [`ErrorKind::Io`].
    pub fn is_io(&self) -> bool {
        self.kind() == ErrorKind::Io
    }

    /// True for [`ErrorKind::Service`].
    pub fn is_service(&self) -> bool {
        self.kind() == ErrorKind::Service
    }
}

impl fmt::Display for Error {
    /// Prints one level: the kind, then the context if any (`overloaded: queue full`).
    /// The source is reachable through [`std::error::Error::source`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())?;
        if let Some(context) = self.context() {
            write!(f, ": {context}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind());
        if let Some(context) = self.context() {
            d.field("context", &context);
        }
        if self.is_retryable() {
            d.field("retryable", &true);
        }
        if self.is_non_retryable() {
            d.field("non_retryable", &true);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.source {
            Some(source) => Some(&**source),
            None => None,
        }
    }
}

impl From<std::io::Error> for Error {
    /// Same as [`Error::io`].
    fn from(err: std::io::Error) -> Self {
        Error::io(err)
    }
}

impl From<BoxError> for Error {
    /// Same as [`Error::service`]: a boxed sheave `Error` is unwrapped, anything else
    /// becomes kind `Service`.
    fn from(err: BoxError) -> Self {
        Error::service(err)
    }
}

impl From<Infallible> for Error {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::from_kind(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_error_is_one_pointer_wide() {
        assert_eq!(size_of::<Error>(), size_of::<usize>());
        assert_eq!(size_of::<Result<(), Error>>(), size_of::<usize>());
    }

    #[test]
    fn display_prints_one_level() {
        assert_eq!(Error::timeout().to_string(), "timed out");
        let err = Error::new(ErrorKind::Protocol, std::io::Error::other("bad frame"));
        assert_eq!(err.to_string(), "protocol error");
        assert_eq!(err.source().unwrap().to_string(), "bad frame");
        let err = err.with_context("redis");
        assert_eq!(err.to_string(), "protocol error: redis");
    }

    #[test]
    fn bare_errors_share_a_preallocated_payload() {
        let a = Error::overloaded().retryable();
        let b = Error::overloaded().retryable();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        assert!(a.is_retryable() && a.is_overloaded());
        let c = a.clone().with_context("queue full");
        assert!(!Arc::ptr_eq(&a.inner, &c.inner));
        assert_eq!(c.to_string(), "overloaded: queue full");
        assert!(c.is_retryable());
        assert!(Error::timeout().non_retryable().is_non_retryable());
        for kind in ErrorKind::ALL {
            assert_eq!(Error::from_kind(kind).kind(), kind);
        }
    }

    #[test]
    fn non_retryable_wins_over_retryable() {
        let err = Error::overloaded().non_retryable().retryable();
        assert!(!err.is_retryable());
        assert!(err.is_non_retryable());
    }

    #[test]
    fn an_io_timeout_becomes_a_timeout() {
        let err: Error = std::io::Error::from(std::io::ErrorKind::TimedOut).into();
        assert!(err.is_timeout());
        let err: Error = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert!(err.is_io());
    }

    #[test]
    fn a_boxed_sheave_error_keeps_its_kind() {
        let boxed: BoxError = Error::unavailable().retryable().into();
        let err = Error::from(boxed);
        assert!(err.is_unavailable());
        assert!(err.is_retryable());
    }

    #[test]
    fn flags_on_a_clone_do_not_change_the_original() {
        let a = Error::closed();
        let b = a.clone().retryable();
        assert!(!a.is_retryable());
        assert!(b.is_retryable());
    }
}
