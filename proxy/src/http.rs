//! The HTTP proxy: HTTP/1.1 and h2c downstream (one port, told apart by the preface) and
//! upstream (per cluster), routes by host and path prefix, streaming bodies, hop-by-hop
//! headers removed (RFC 9110 §7.6.1), `X-Forwarded-For` and `Via` added, idempotent
//! requests retried within the budget, and failures answered 502, 503 or 504.
//!
//! **The stack,** per cluster and runtime thread, outermost first — the documented stack of
//! `examples/support/cluster.rs` over `sheave_http::Client`:
//!
//! 1. `timeout` (`request_timeout`): the whole request, retries included — 504 when it passes;
//! 2. `retry` (`[cluster.retry]`, [`HttpRetry`]: idempotent methods whose body was buffered
//!    whole within 64 KiB), within a budget: above the balancer, so a retry takes a new pick;
//! 3. `concurrency_limit` (`concurrency_limit`, nobody waits): sheds past it, as 503;
//! 4. `hedge` (`hedge = { percentile = 0.95 }`, off unless set): an idempotent request whose
//!    body is buffered whole, still pending after that percentile of recent latencies, gets a
//!    backup attempt on a fresh pick (usually another endpoint), and the first success wins;
//!    other requests pass by it. Backups withdraw from the retry budget as well as their own,
//!    and are counted in `sheave_proxy_hedges_total`;
//! 5. `timeout` per attempt (`try_timeout`): below the retry, so an attempt on a hung
//!    endpoint ends in time for another, and above the balancer, which sees it fail;
//! 6. the balancer (`policy`, `[cluster.ejection]`) over one [`Client`] per endpoint: a
//!    keep-alive pool of `pool_size` HTTP/1.1 connections (each closed once idle for
//!    `pool_idle_timeout`, and at most `pool_max_idle` kept idle), or one HTTP/2 connection.
//!
//! **Bodies stream.** A request body is read ahead up to 64 KiB ([`Replay`]): a body that
//! ends within it can be resent by a retry; a longer one is sent once, streamed. Response
//! bodies are handed to the client as they arrive; both ways the body is pulled as the
//! receiving side takes it, so a slow reader slows the sender, with bounded buffers.
//!
//! **Status codes.** An upstream that fails (connection closed, broken response) is 502; no
//! endpoint available (none connected, all ejected, or the limit reached) is 503; the
//! deadline passing is 504; a request no route matches is 404.
//!
//! ```
//! use http::header::{HeaderMap, HeaderValue};
//! use sheave_proxy::http::strip_hop_by_hop;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("connection", HeaderValue::from_static("close, x-trace"));
//! headers.insert("x-trace", HeaderValue::from_static("abc"));
//! headers.insert("accept", HeaderValue::from_static("*/*"));
//! strip_hop_by_hop(&mut headers);
//! assert_eq!(headers.len(), 1);
//! assert!(headers.contains_key("accept"));
//! ```

use crate::config::{self, HttpVersion};
use crate::metrics::{BalancedState, ClusterMetrics, ListenerMetrics};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use sheave_core::time;
use sheave_http::Body;
use sheave_http::body::Replay;
use sheave_http::classify::{HttpClassifier, HttpRetry};
use sheave_http::client::{Client, Version};
use sheave_middleware::balance::Balance;
use sheave_middleware::hedge::{Hedge, HedgeConfig};
use sheave_middleware::retry::{BudgetConfig, Retry};
use sheave_middleware::{ConcurrencyLimitLayer, ServiceBuilderExt, TimeoutLayer};
use sheave_service::{Error, ErrorKind, Service, ServiceBuilder};
use std::net::SocketAddr;
use std::rc::Rc;

/// What the proxy answers with: the upstream's body, or its own short text.
pub type ProxyBody = Either<Body, Full<Bytes>>;

/// How much of a request body is read ahead, so a retry can send it again.
pub const REPLAY_CAP: usize = 64 * 1024;

/// The upstream stack of one HTTP cluster on this runtime thread (see the
/// [module docs](self)).
///
/// # Panics
/// Outside a runtime thread.
pub fn cluster_stack(
    cluster: &config::Cluster,
    metrics: Rc<ClusterMetrics>,
) -> impl Service<Request<Replay<Body>>, Response = Response<Body>, Error = Error> + use<> {
    let connector = Client::<Replay<Body>>::builder()
        .version(match cluster.http_version {
            HttpVersion::Http1 => Version::Http1,
            HttpVersion::Http2 => Version::Http2,
        })
        .pool_size(cluster.pool_size)
        .idle_timeout(cluster.pool_idle_timeout)
        .max_idle(cluster.pool_max_idle.unwrap_or(cluster.pool_size))
        .max_streams(cluster.max_in_flight_per_connection)
        .connect_timeout(cluster.connect_timeout);
    let endpoints = crate::discovery::changes(cluster);
    let probe_metrics = metrics.clone();
    let connect = move |(label, addr): crate::discovery::Target| {
        let (connector, metrics) = (connector.clone(), metrics.clone());
        let index = metrics.endpoint_named(&label);
        async move {
            let client: Client<Replay<Body>> =
                sheave_service::NewService::new_service(&connector, addr).await?;
            let pool = client.pool_probe();
            metrics.add_pool(&label, move || {
                pool.stats().map(|p| (p.idle as u64, p.in_use as u64))
            });
            let m = metrics.endpoint(index);
            m.connections.set(m.connections.get() + 1);
            Ok::<_, Error>(Counted {
                inner: client,
                index,
                metrics,
            })
        }
    };
    let builder = crate::stack::balancer(cluster, Balance::builder().classifier(HttpClassifier));
    let balance = Rc::new(builder.build(endpoints, connect));
    probe_balancer(&probe_metrics, &balance);
    let (retry, budget) = crate::stack::retry(cluster, &probe_metrics);
    let attempts = Rc::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(cluster.try_timeout))
            .service(balance),
    );
    let hedged = cluster.hedge.as_ref().map(|h| {
        let config = HedgeConfig::default()
            .percentile(h.percentile)
            .min_samples(h.min_samples)
            .budget(
                BudgetConfig::new()
                    .ratio(h.budget_ratio)
                    .min_per_second(1)
                    .ttl(h.window),
            );
        let hedge = Rc::new(
            Hedge::new(
                Rebuild(attempts.clone()),
                HedgeConfig {
                    window: h.window,
                    ..config
                },
            )
            .with_retry_budget(budget.clone()),
        );
        let sent = Rc::downgrade(&hedge);
        probe_metrics.add_hedges(move || sent.upgrade().map_or(0, |h| h.hedges()));
        hedge
    });
    let attempts = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(cluster.concurrency_limit).max_waiters(0))
        .service(MaybeHedged {
            plain: attempts,
            hedged,
        });
    ServiceBuilder::new()
        .timeout(cluster.request_timeout)
        .service(Retry::with_budget(
            attempts,
            HttpRetry::new(),
            retry,
            budget,
        ))
}

/// A request a hedge may send twice: idempotent, its body buffered whole.
struct Copyable(Request<Replay<Body>>);

impl Copyable {
    /// Whether a hedge may send `req` twice.
    fn allows(req: &Request<Replay<Body>>) -> bool {
        req.method().is_idempotent() && req.body().is_replayable()
    }
}

impl Clone for Copyable {
    fn clone(&self) -> Self {
        let req = &self.0;
        let body = match req.body().try_clone() {
            Some(body) => body,
            None => unreachable!("Copyable::allows takes only buffered bodies"),
        };
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        Copyable(copy)
    }
}

/// The attempts' service, taking a [`Copyable`] (what the hedge sends).
struct Rebuild<S>(Rc<S>);

impl<S> Service<Copyable> for Rebuild<S>
where
    S: Service<Request<Replay<Body>>, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        self.0.ready()
    }

    fn try_ready(&self) -> sheave_service::TryReady<S::Permit, Error> {
        self.0.try_ready()
    }

    fn call(
        &self,
        permit: S::Permit,
        req: Copyable,
    ) -> impl Future<Output = Result<S::Response, Error>> {
        self.0.call(permit, req.0)
    }
}

/// The attempts, through the hedge when the cluster has one and the request may be sent
/// twice ([`Copyable`]), else straight.
struct MaybeHedged<S> {
    plain: Rc<S>,
    hedged: Option<Rc<Hedge<Rebuild<S>>>>,
}

impl<S> Service<Request<Replay<Body>>> for MaybeHedged<S>
where
    S: Service<Request<Replay<Body>>, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        self.plain.ready()
    }

    fn try_ready(&self) -> sheave_service::TryReady<S::Permit, Error> {
        self.plain.try_ready()
    }

    async fn call(
        &self,
        permit: S::Permit,
        req: Request<Replay<Body>>,
    ) -> Result<S::Response, Error> {
        match &self.hedged {
            Some(hedge) if Copyable::allows(&req) => hedge.call(permit, Copyable(req)).await,
            _ => self.plain.call(permit, req).await,
        }
    }
}

/// Has the cluster's metrics read `balance`'s endpoints (ejected, in flight) at each scrape.
pub(crate) fn probe_balancer<S, C: 'static>(
    metrics: &ClusterMetrics,
    balance: &Rc<Balance<String, S, C>>,
) where
    S: 'static,
{
    metrics.add_balancer(balance, |b| {
        b.endpoints()
            .into_iter()
            .map(|e| BalancedState {
                endpoint: e.key,
                ejected: e.ejected,
                pending: u64::from(e.pending),
            })
            .collect()
    });
}

/// An endpoint's client, counting its attempts and failures in the cluster's metrics.
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    index: usize,
    metrics: Rc<ClusterMetrics>,
}

impl<S, Req> Service<Req> for Counted<S>
where
    S: Service<Req, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        self.inner.ready()
    }

    fn try_ready(&self) -> sheave_service::TryReady<S::Permit, Error> {
        self.inner.try_ready()
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<Response<Body>, Error> {
        let mut attempt = Attempt {
            metrics: &self.metrics,
            index: self.index,
            start: time::now(),
            failure: Some(ErrorKind::Canceled),
        };
        let outcome = self.inner.call(permit, req).await;
        attempt.failure = match &outcome {
            Ok(r) if r.status().is_server_error() => Some(ErrorKind::Service),
            Ok(_) => None,
            Err(e) => Some(e.kind()),
        };
        outcome
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }
}

/// Counts an attempt when it ends — also when it is dropped half-way (the per-attempt
/// deadline passed, or the client went away), as `canceled`.
struct Attempt<'a> {
    metrics: &'a ClusterMetrics,
    index: usize,
    start: std::time::Instant,
    failure: Option<ErrorKind>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.metrics
            .endpoint(self.index)
            .attempt(self.start.elapsed(), self.failure);
    }
}

/// The headers RFC 9110 §7.6.1 says a proxy must not forward, besides those `Connection`
/// names: `Connection` itself, `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`
/// and `Upgrade` (and `Trailer`, which only describes this hop's chunked framing).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
];

/// Removes the hop-by-hop headers: the fixed ones, and every one `Connection` lists.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `1.1 sheave-proxy`, or `2 sheave-proxy`, appended to any `Via` already there.
fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_2 => "2 sheave-proxy",
        http::Version::HTTP_10 => "1.0 sheave-proxy",
        _ => "1.1 sheave-proxy",
    };
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {hop}"),
        None => hop.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, v);
    }
}

fn add_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// One route: a host (any when `None`), a path prefix, and the index of its cluster.
#[derive(Debug, Clone)]
struct RouteRule {
    host: Option<String>,
    prefix: String,
    cluster: usize,
}

/// The routes and cluster stacks of one HTTP listener on one runtime thread.
#[derive(Debug)]
pub struct Router<S> {
    routes: Vec<RouteRule>,
    /// Each cluster's stack and counters.
    clusters: Vec<(S, Rc<ClusterMetrics>)>,
    listener: Rc<ListenerMetrics>,
}

impl<S> Router<S> {
    /// The router of `listener`: its routes in config order, then its default cluster.
    /// `stack` builds a cluster's stack (called once per cluster used).
    pub fn new(
        config: &config::Config,
        listener: &config::Listener,
        listener_metrics: Rc<ListenerMetrics>,
        mut stack: impl FnMut(&config::Cluster) -> (S, Rc<ClusterMetrics>),
    ) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut clusters = Vec::new();
        let mut index_of = |name: &str| match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                let cluster = config.cluster(name).expect("validated: the cluster exists");
                clusters.push(stack(cluster));
                names.push(name.to_string());
                names.len() - 1
            }
        };
        let mut routes: Vec<RouteRule> = config
            .routes
            .iter()
            .filter(|r| r.listener == listener.name)
            .map(|r| RouteRule {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                prefix: r.path_prefix.clone(),
                cluster: index_of(&r.cluster),
            })
            .collect();
        if let Some(default) = &listener.cluster {
            routes.push(RouteRule {
                host: None,
                prefix: "/".to_string(),
                cluster: index_of(default),
            });
        }
        Router {
            routes,
            clusters,
            listener: listener_metrics,
        }
    }

    fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(|h| {
            // Without the port (an IPv6 literal keeps its brackets).
            match h.rfind(':') {
                Some(i) if !h[i..].contains(']') => &h[..i],
                _ => h,
            }
        });
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                    && path.starts_with(&r.prefix)
            })
            .map(|r| r.cluster)
    }
}

/// A listener's router on one runtime thread, as the last reload left it: each request
/// takes the router current when it starts and keeps it to its end, so a reload swaps in a
/// new one for the next requests while requests in flight finish on the old one (dropped
/// with its last request).
pub type LiveRouter<S> = Rc<std::cell::RefCell<Rc<Router<S>>>>;

/// The service of one downstream connection.
#[derive(Debug)]
pub struct HttpConnection<S> {
    router: LiveRouter<S>,
    listener: Rc<ListenerMetrics>,
    peer: SocketAddr,
}

impl<S> HttpConnection<S> {
    /// The service of a connection from `peer`; counted open until dropped.
    pub fn new(router: LiveRouter<S>, peer: SocketAddr) -> Self {
        let listener = router.borrow().listener.clone();
        listener.accepted.set(listener.accepted.get() + 1);
        HttpConnection {
            router,
            listener,
            peer,
        }
    }
}

impl<S> Drop for HttpConnection<S> {
    fn drop(&mut self) {
        let l = &self.listener;
        l.closed.set(l.closed.get() + 1);
    }
}

fn answer(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text + "\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The status for a request that failed with `e`.
pub fn status_of(e: &Error) -> StatusCode {
    match e.kind() {
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl<S> Service<Request<Body>> for HttpConnection<S>
where
    S: Service<Request<Replay<Body>>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<ProxyBody>;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
        sheave_service::TryReady::Ready(())
    }

    async fn call(&self, (): (), req: Request<Body>) -> Result<Response<ProxyBody>, Error> {
        let start = time::now();
        let (mut parts, body) = req.into_parts();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        // This request's router: the one current now, kept to the end (see LiveRouter).
        let router = self.router.borrow().clone();
        let Some(index) = router.route(host.as_deref(), parts.uri.path()) else {
            return Ok(answer(
                StatusCode::NOT_FOUND,
                format!("sheave-proxy: no route for {}", parts.uri.path()),
            ));
        };
        let (stack, metrics) = &router.clusters[index];
        let version = parts.version;
        strip_hop_by_hop(&mut parts.headers);
        add_forwarded_for(&mut parts.headers, self.peer);
        add_via(&mut parts.headers, version);
        // An HTTP/2 upstream needs the authority in the URI; take it from `Host`.
        if parts.uri.authority().is_none()
            && let Some(host) = &host
            && let Ok(uri) = Uri::builder()
                .scheme("http")
                .authority(host.as_str())
                .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
                .build()
        {
            parts.uri = uri;
        }
        let body = match Replay::new(body, REPLAY_CAP).await {
            Ok(body) => body,
            Err(e) => {
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    format!("sheave-proxy: reading the request body: {e}"),
                ));
            }
        };
        let outcome = async {
            let permit = stack.ready().await?;
            stack.call(permit, Request::from_parts(parts, body)).await
        }
        .await;
        metrics.request(start.elapsed(), outcome.as_ref().err().map(Error::kind));
        Ok(match outcome {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                add_via(&mut parts.headers, parts.version);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => answer(status_of(&e), format!("sheave-proxy: {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn via_and_forwarded_for_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("via", HeaderValue::from_static("1.1 edge"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        add_via(&mut h, http::Version::HTTP_2);
        add_forwarded_for(&mut h, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(h["via"], "1.1 edge, 2 sheave-proxy");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    }

    #[test]
    fn failures_map_to_gateway_statuses() {
        assert_eq!(status_of(&Error::timeout()), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status_of(&Error::unavailable()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of(&Error::closed()), StatusCode::BAD_GATEWAY);
    }
}
