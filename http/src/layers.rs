//! HTTP layers: [`SetHeaders`] (set, override or remove request and response headers, and
//! rewrite the `Host`/authority), [`RequestId`] (an id on every request, echoed on its
//! response) and [`AccessLog`] (one log line per request: method, path, status, latency).
//!
//! Each is a sheave `Service` wrapper with its `Layer`, forwarding `ready()`/`try_ready()`
//! untouched, so it sits anywhere in a stack, on a server or on a client.
//!
//! ```
//! use http::{HeaderName, HeaderValue};
//! use sheave_http::layers::{HeaderRules, RequestIdLayer, SetHeadersLayer};
//! use sheave_service::{Error, ServiceBuilder, ServiceExt, service_fn};
//!
//! let rules = HeaderRules::new()
//!     .set_response(HeaderName::from_static("server"), HeaderValue::from_static("sheave"))
//!     .remove_request(HeaderName::from_static("x-internal"));
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .layer(SetHeadersLayer::new(rules))
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         assert!(req.headers().get("x-internal").is_none());
//!         Ok::<_, Error>(http::Response::new(()))
//!     }));
//! let rt = sheave_core::Runtime::new().unwrap();
//! let req = http::Request::builder().header("x-internal", "1").body(()).unwrap();
//! let response = rt.block_on(svc.oneshot(req)).unwrap();
//! assert_eq!(response.headers()["server"], "sheave");
//! assert!(response.headers().contains_key("x-request-id"));
//! ```

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use sheave_service::{Layer, Service, TryReady};
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

/// What [`SetHeaders`] does to requests and responses, in the order given.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    request: Vec<Rule>,
    response: Vec<Rule>,
    host: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
enum Rule {
    /// Replaces any value.
    Set(HeaderName, HeaderValue),
    /// Only if absent.
    Default(HeaderName, HeaderValue),
    Remove(HeaderName),
}

impl Rule {
    fn apply(&self, headers: &mut http::HeaderMap) {
        match self {
            Rule::Set(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            Rule::Default(name, value) => {
                if !headers.contains_key(name) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            Rule::Remove(name) => {
                headers.remove(name);
            }
        }
    }
}

impl HeaderRules {
    /// No rules.
    pub fn new() -> Self {
        HeaderRules::default()
    }

    /// Sets `name` on every request, replacing what the caller sent.
    pub fn set_request(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.request.push(Rule::Set(name, value));
        self
    }

    /// Sets `name` on requests that do not have it.
    pub fn default_request(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.request.push(Rule::Default(name, value));
        self
    }

    /// Removes `name` from every request.
    pub fn remove_request(mut self, name: HeaderName) -> Self {
        self.request.push(Rule::Remove(name));
        self
    }

    /// Sets `name` on every response, replacing what the service set.
    pub fn set_response(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.response.push(Rule::Set(name, value));
        self
    }

    /// Sets `name` on responses that do not have it.
    pub fn default_response(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.response.push(Rule::Default(name, value));
        self
    }

    /// Removes `name` from every response.
    pub fn remove_response(mut self, name: HeaderName) -> Self {
        self.response.push(Rule::Remove(name));
        self
    }

    /// Rewrites every request's `Host` header and, if its URI has one, its authority (what
    /// HTTP/2 sends as `:authority`) to `host` (e.g. `"api.internal:8080"`).
    pub fn host(mut self, host: HeaderValue) -> Self {
        self.host = Some(host);
        self
    }

    fn apply_request<B>(&self, req: &mut Request<B>) {
        if let Some(host) = &self.host {
            req.headers_mut().insert(header::HOST, host.clone());
            if req.uri().authority().is_some()
                && let Ok(authority) = host.to_str()
            {
                let mut parts = req.uri().clone().into_parts();
                if let Ok(authority) = authority.parse() {
                    parts.authority = Some(authority);
                    if let Ok(uri) = Uri::from_parts(parts) {
                        *req.uri_mut() = uri;
                    }
                }
            }
        }
        for rule in &self.request {
            rule.apply(req.headers_mut());
        }
    }
}

/// Applies [`HeaderRules`] to every request and response.
#[derive(Debug, Clone)]
pub struct SetHeaders<S> {
    inner: S,
    rules: Rc<HeaderRules>,
}

/// The layer of [`SetHeaders`].
#[derive(Debug, Clone)]
pub struct SetHeadersLayer {
    rules: Rc<HeaderRules>,
}

impl SetHeadersLayer {
    /// With `rules`.
    pub fn new(rules: HeaderRules) -> Self {
        SetHeadersLayer {
            rules: Rc::new(rules),
        }
    }
}

impl<S> Layer<S> for SetHeadersLayer {
    type Service = SetHeaders<S>;

    fn layer(&self, inner: S) -> SetHeaders<S> {
        SetHeaders {
            inner,
            rules: self.rules.clone(),
        }
    }
}

impl<S> SetHeaders<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, rules: HeaderRules) -> Self {
        SetHeaders {
            inner,
            rules: Rc::new(rules),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<B>> for SetHeaders<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, S::Error>> {
        self.inner.ready()
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    async fn call(&self, permit: S::Permit, mut req: Request<B>) -> Result<Response<R>, S::Error> {
        self.rules.apply_request(&mut req);
        let mut response = self.inner.call(permit, req).await?;
        for rule in &self.rules.response {
            rule.apply(response.headers_mut());
        }
        Ok(response)
    }
}

/// The header [`RequestId`] uses: `x-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an `x-request-id` (keeping one the caller sent) and puts the same id on
/// its response. Ids are `<prefix>-<counter>`: the prefix is random per layer, the counter
/// per layer, so two threads' layers never collide and no atomics are on the request path.
#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
    ids: Rc<Ids>,
}

#[derive(Debug)]
struct Ids {
    prefix: u32,
    next: Cell<u64>,
}

impl Ids {
    fn new() -> Rc<Ids> {
        Rc::new(Ids {
            prefix: rand::random(),
            next: Cell::new(1),
        })
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.get();
        self.next.set(n + 1);
        HeaderValue::try_from(format!("{:08x}-{n}", self.prefix)).expect("hex and digits")
    }
}

/// The layer of [`RequestId`].
#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    ids: Rc<Ids>,
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        RequestIdLayer::new()
    }
}

impl RequestIdLayer {
    /// A layer with its own random prefix; every service it wraps shares its counter.
    pub fn new() -> Self {
        RequestIdLayer { ids: Ids::new() }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId {
            inner,
            ids: self.ids.clone(),
        }
    }
}

impl<S> RequestId<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        RequestId {
            inner,
            ids: Ids::new(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, S::Error>> {
        self.inner.ready()
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    async fn call(&self, permit: S::Permit, mut req: Request<B>) -> Result<Response<R>, S::Error> {
        let id = match req.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let mut response = self.inner.call(permit, req).await?;
        response.headers_mut().insert(REQUEST_ID, id);
        Ok(response)
    }
}

/// One `log` record per completed request, at info level, target `sheave_http::access`:
/// `"GET /path 200 in 1.2ms"`, or `"GET /path failed (timed out) in 1s"`. Free when the level
/// is off: the check comes first, and the clock is not read.
#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S: fmt::Debug> fmt::Debug for AccessLog<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The layer of [`AccessLog`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

impl<S> AccessLog<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        AccessLog { inner }
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

const ACCESS: &str = "sheave_http::access";

impl<S, B, R> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: fmt::Display,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, S::Error>> {
        self.inner.ready()
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    async fn call(&self, permit: S::Permit, req: Request<B>) -> Result<Response<R>, S::Error> {
        if !log::log_enabled!(target: ACCESS, log::Level::Info) {
            return self.inner.call(permit, req).await;
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let start = sheave_core::time::now();
        let outcome = self.inner.call(permit, req).await;
        let took = sheave_core::time::now() - start;
        match &outcome {
            Ok(response) => {
                log::info!(target: ACCESS, "{method} {path} {} in {took:?}", response.status().as_u16())
            }
            Err(e) => log::info!(target: ACCESS, "{method} {path} failed ({e}) in {took:?}"),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_service::{Error, ServiceExt, service_fn};

    fn echo_headers() -> impl Service<Request<()>, Response = Response<()>, Error = Error> {
        service_fn(|req: Request<()>| async move {
            let mut response = Response::new(());
            for (name, value) in req.headers() {
                let name = HeaderName::try_from(format!("seen-{name}")).unwrap();
                response.headers_mut().insert(name, value.clone());
            }
            response
                .headers_mut()
                .insert("x-backend", HeaderValue::from_static("1"));
            Ok::<_, Error>(response)
        })
    }

    #[test]
    fn rules_set_default_remove_and_rewrite_host() {
        let rules = HeaderRules::new()
            .set_request(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("ours"),
            )
            .default_request(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("dflt"),
            )
            .remove_request(HeaderName::from_static("x-c"))
            .host(HeaderValue::from_static("inner:81"))
            .remove_response(HeaderName::from_static("x-backend"));
        let svc = SetHeadersLayer::new(rules).layer(echo_headers());
        let req = Request::builder()
            .uri("http://outer/x")
            .header("x-a", "theirs")
            .header("x-b", "kept")
            .header("x-c", "gone")
            .body(())
            .unwrap();
        let rt = sheave_core::Runtime::new().unwrap();
        let response = rt.block_on(svc.oneshot(req)).unwrap();
        let h = response.headers();
        assert_eq!(h["seen-x-a"], "ours");
        assert_eq!(h["seen-x-b"], "kept");
        assert!(!h.contains_key("seen-x-c"));
        assert_eq!(h["seen-host"], "inner:81");
        assert!(!h.contains_key("x-backend"));
    }

    #[test]
    fn request_ids_are_given_kept_and_echoed() {
        let svc = RequestIdLayer::new().layer(echo_headers());
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            let a = svc.oneshot(Request::new(())).await.unwrap();
            let b = svc.oneshot(Request::new(())).await.unwrap();
            assert_ne!(a.headers()[&REQUEST_ID], b.headers()[&REQUEST_ID]);
            assert_eq!(a.headers()[&REQUEST_ID], a.headers()["seen-x-request-id"]);
            let theirs = Request::builder()
                .header("x-request-id", "abc")
                .body(())
                .unwrap();
            let c = svc.oneshot(theirs).await.unwrap();
            assert_eq!(c.headers()[&REQUEST_ID], "abc");
        });
    }
}
