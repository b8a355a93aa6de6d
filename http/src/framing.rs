//! [`Framing`]: `Content-Length`/`Transfer-Encoding` sanity for the messages a service sends,
//! so that no message whose framing two parsers could read differently (the root of request
//! smuggling) reaches the wire.
//!
//! It checks the request before calling the service below (on a client: before anything is
//! written) and the response the service returns (on a server: before hyper writes it):
//!
//! - `Content-Length` together with `Transfer-Encoding`: refused.
//! - Several `Content-Length` values (in one header or several) that differ, or one that is
//!   not a plain decimal number: refused. Several that agree are folded into one (RFC 9110
//!   §8.6 allows a recipient to do so; we fix it before sending).
//! - A `Content-Length` that disagrees with what the body says about its own size (its
//!   [`size_hint`](http_body::Body::size_hint): exact, or bounds it falls outside): refused.
//!   (Not checked for a response to `HEAD` or a `304`, whose length is that of a body they
//!   do not send.)
//! - A `Transfer-Encoding` that is not a list of plain tokens ending in one `chunked`
//!   (obfuscations such as `chunked;x`, `"chunked"`, `xchunked`, `chunked, chunked`, or a
//!   coding after `chunked`): refused.
//!
//! A refused request fails with [`ErrorKind::InvalidRequest`] (it was never sent, and is not
//! retryable); a refused response fails with [`ErrorKind::Service`], which a sheave
//! [`Server`](crate::Server) answers with 500 — the handler's mistake, not the client's. Each
//! error says what conflicted. Messages with no framing headers pass untouched: hyper frames
//! them from the body.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use sheave_http::framing::FramingLayer;
//! use sheave_service::{Error, ErrorKind, Layer, ServiceExt, service_fn};
//!
//! let svc = FramingLayer.layer(service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, Error>(http::Response::new(Full::new(Bytes::from("ok"))))
//! }));
//! let rt = sheave_core::Runtime::new().unwrap();
//! let smuggling = http::Request::post("/")
//!     .header("content-length", "5")
//!     .header("transfer-encoding", "chunked")
//!     .body(Full::new(Bytes::from("hello")))
//!     .unwrap();
//! let err = rt.block_on(svc.oneshot(smuggling)).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidRequest);
//! assert!(err.to_string().contains("both Content-Length and Transfer-Encoding"), "{err}");
//! ```

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body as HttpBody;
use sheave_service::{Error, ErrorKind, Layer, Service, TryReady};

/// Checks (and where safe fixes) the framing headers of requests and responses; see the
/// [module](self).
#[derive(Debug, Clone)]
pub struct Framing<S> {
    inner: S,
}

/// The layer of [`Framing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FramingLayer;

impl<S> Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Framing<S> {
        Framing { inner }
    }
}

impl<S> Framing<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Framing { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<B>> for Framing<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<Error>,
    B: HttpBody,
    R: HttpBody,
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

    async fn call(&self, permit: S::Permit, mut req: Request<B>) -> Result<Response<R>, Error> {
        let hint = req.body().size_hint();
        let head = req.method() == http::Method::HEAD;
        if let Err(why) = check(req.headers_mut(), Some(&hint)) {
            drop(permit);
            return Err(Error::invalid_request(format!("request framing: {why}")).non_retryable());
        }
        let mut response = self.inner.call(permit, req).await.map_err(Into::into)?;
        // A response to HEAD, and a 304, carry the length of a body they do not send.
        let hint = response.body().size_hint();
        let bodiless = head || response.status() == http::StatusCode::NOT_MODIFIED;
        let hint = (!bodiless).then_some(&hint);
        if let Err(why) = check(response.headers_mut(), hint) {
            return Err(Error::msg(
                ErrorKind::Service,
                format!("response framing: {why}"),
            ));
        }
        Ok(response)
    }
}

/// Checks the framing headers against each other and the body's `hint` (`None`: a message
/// whose `Content-Length` is not its body's, a response to HEAD or a 304); folds agreeing
/// `Content-Length`s into one. The error says what conflicted.
pub fn check(headers: &mut HeaderMap, hint: Option<&http_body::SizeHint>) -> Result<(), String> {
    let length = content_length(headers)?;
    let chunked = headers.contains_key(TRANSFER_ENCODING);
    if chunked {
        if length.is_some() {
            return Err("both Content-Length and Transfer-Encoding are set".into());
        }
        transfer_encoding(headers)?;
    }
    if let (Some(n), Some(hint)) = (length, hint) {
        let outside = hint.lower() > n || hint.upper().is_some_and(|upper| upper < n);
        if outside {
            let body = match hint.exact() {
                Some(exact) => format!("{exact} bytes"),
                None => match hint.upper() {
                    Some(upper) => format!("{}..={upper} bytes", hint.lower()),
                    None => format!("at least {} bytes", hint.lower()),
                },
            };
            return Err(format!(
                "Content-Length {n} disagrees with the body ({body})"
            ));
        }
    }
    if let Some(n) = length
        && (headers.get_all(CONTENT_LENGTH).iter().count() > 1
            || headers
                .get(CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes().contains(&b',')))
    {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(())
}

/// The one length all `Content-Length` values agree on, if there are any.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| "a Content-Length that is not text".to_string())?;
        for part in text.split(',') {
            let part = part.trim_matches([' ', '\t']);
            let valid =
                !part.is_empty() && part.len() <= 19 && part.bytes().all(|b| b.is_ascii_digit());
            let n: u64 = match part.parse() {
                Ok(n) if valid => n,
                _ => return Err(format!("Content-Length {part:?} is not a length")),
            };
            match length {
                Some(seen) if seen != n => {
                    return Err(format!("Content-Length {seen} and {n} differ"));
                }
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// Plain tokens ending in exactly one `chunked`.
fn transfer_encoding(headers: &HeaderMap) -> Result<(), String> {
    let mut codings = Vec::new();
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| "a Transfer-Encoding that is not text".to_string())?;
        for part in text.split(',') {
            let part = part.trim_matches([' ', '\t']);
            if part.is_empty() || !part.bytes().all(is_token) {
                return Err(format!("Transfer-Encoding {part:?} is not a coding"));
            }
            codings.push(part.to_ascii_lowercase());
        }
    }
    let chunked = codings.iter().filter(|c| *c == "chunked").count();
    if chunked != 1 || codings.last().map(String::as_str) != Some("chunked") {
        return Err(format!(
            "Transfer-Encoding {:?} does not end in one chunked",
            codings.join(", ")
        ));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::SizeHint;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn verdict(pairs: &[(&str, &str)], hint: SizeHint) -> Result<HeaderMap, String> {
        let mut map = headers(pairs);
        check(&mut map, Some(&hint)).map(|()| map)
    }

    #[test]
    fn conflicts_are_refused_and_agreeing_lengths_folded() {
        let five = SizeHint::with_exact(5);
        let unknown = SizeHint::new();
        assert!(verdict(&[], five).is_ok());
        assert!(verdict(&[("content-length", "5")], five).is_ok());
        let both = verdict(
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            five,
        );
        assert!(both.unwrap_err().contains("both"));
        let differ = verdict(&[("content-length", "5"), ("content-length", "6")], unknown);
        assert_eq!(differ.unwrap_err(), "Content-Length 5 and 6 differ");
        assert!(verdict(&[("content-length", "5, 7")], unknown).is_err());
        for bad in ["+5", "-1", "0x5", "5 5", "", "99999999999999999999"] {
            assert!(
                verdict(&[("content-length", bad)], unknown).is_err(),
                "{bad:?}"
            );
        }
        let folded = verdict(&[("content-length", "5"), ("content-length", "5, 5")], five).unwrap();
        assert_eq!(folded.get_all(CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(folded[CONTENT_LENGTH], "5");
    }

    #[test]
    fn a_length_the_body_disagrees_with_is_refused() {
        let err = verdict(&[("content-length", "4")], SizeHint::with_exact(5)).unwrap_err();
        assert_eq!(err, "Content-Length 4 disagrees with the body (5 bytes)");
        let mut at_least = SizeHint::new();
        at_least.set_lower(10);
        assert!(verdict(&[("content-length", "4")], at_least).is_err());
        let mut at_most = SizeHint::new();
        at_most.set_upper(3);
        assert!(verdict(&[("content-length", "4")], at_most).is_err());
        // Unknown size: the length is believed (hyper stops the body at it).
        assert!(verdict(&[("content-length", "4")], SizeHint::new()).is_ok());
        // A HEAD response's length is not its (empty) body's.
        let mut map = headers(&[("content-length", "13")]);
        assert!(check(&mut map, None).is_ok());
    }

    #[test]
    fn only_plain_codings_ending_in_one_chunked_pass() {
        let any = SizeHint::new();
        for good in ["chunked", "Chunked", "gzip, chunked", " chunked "] {
            assert!(
                verdict(&[("transfer-encoding", good)], any).is_ok(),
                "{good:?}"
            );
        }
        for bad in [
            "chunked;x",
            "\"chunked\"",
            "xchunked",
            "chunked, chunked",
            "chunked, gzip",
            "gzip",
            "chunked\u{b}",
            ",",
        ] {
            let Ok(value) = HeaderValue::from_str(bad) else {
                continue;
            };
            let mut map = HeaderMap::new();
            map.insert(TRANSFER_ENCODING, value);
            assert!(check(&mut map, Some(&any)).is_err(), "{bad:?}");
        }
        let split = verdict(
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip"),
            ],
            any,
        );
        assert!(split.is_err());
    }
}
