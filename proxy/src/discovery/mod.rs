//! Where a balanced (TCP or HTTP) cluster's endpoints come from: the static list of the
//! config (which a reload may change: [`reload_endpoints`]), a [`file`](mod@file) of
//! endpoints re-read when it changes, a DNS name resolved every `discovery_interval` (each
//! address it has is an endpoint; the kit's [`discover::dns`], on a resolver thread), and
//! [`etcd`] through its v3 JSON gateway (range, then a watch). [`changes`] merges a cluster's
//! sources into the one stream its balancer takes. A ketama (RESP) cluster takes [`sources`]
//! too, file and etcd (not DNS: a shard needs a name for its place on the ring): each
//! change rebuilds its ring ([`Shards::apply`](crate::resp::shards::Shards::apply)), so a
//! shard that joins or leaves moves only its share of the keys.
//!
//! The file and etcd sources are `futures::Stream`s of
//! [`sheave_middleware::discover::Change`]`<String, Endpoint>` — exactly what
//! [`Balance::builder().build(..)`](sheave_middleware::balance::BalanceBuilder::build) takes — and
//! yield **diffs only**: an `Insert` for an endpoint that is new or whose [`Endpoint`] changed,
//! a `Remove` for one that is gone. The key is the endpoint's name (its `host:port` unless the
//! source names it), so the balancer tracks endpoints by name and a removal never hits the
//! wrong one. Both keep the last good set when their source goes bad (a file that does not
//! parse, an etcd that is down) and log why.
//!
//! Each stream runs on the sheave runtime thread that polls it (the proxy runs one balancer per
//! thread, so each thread polls its own source).
//!
//! One syntax describes an endpoint everywhere — a line of the file, a value in etcd:
//! `ADDRESS [weight=N] [name=NAME]`, as a config's `{ address, weight, name }`:
//!
//! ```
//! use sheave_proxy::discovery::{parse_endpoint, Endpoint};
//!
//! let (name, endpoint) = parse_endpoint("127.0.0.1:6380 weight=2 name=b").unwrap().unwrap();
//! assert_eq!(name, "b");
//! assert_eq!(endpoint, Endpoint { address: "127.0.0.1:6380".parse().unwrap(), weight: 2 });
//! // Unnamed: its name is host:port (the host alone on memcached's port, as twemproxy does).
//! let (name, _) = parse_endpoint("127.0.0.1:6379  # the first shard").unwrap().unwrap();
//! assert_eq!(name, "127.0.0.1:6379");
//! assert!(parse_endpoint("   # only a comment").unwrap().is_none());
//! assert_eq!(
//!     parse_endpoint("127.0.0.1:6379 weight=0").unwrap_err(),
//!     "weight: must be at least 1",
//! );
//! ```

pub mod etcd;
pub mod file;

pub use etcd::{Etcd, EtcdDiscovery, EtcdError};
pub use file::{FileDiscovery, FileError};

use crate::config;
use futures::{Stream, StreamExt};
use sheave_middleware::discover::{self, Change, Dns, Fixed};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// An endpoint as a balanced cluster's balancer sees it: keyed by its name, reached at its
/// address (the name rides along for the per-endpoint metrics).
pub type Target = (String, SocketAddr);

/// A cluster's stream of endpoint changes.
pub type Changes = Pin<Box<dyn Stream<Item = Change<String, Target>>>>;

/// One balancer's config endpoints on this thread: where to send a reload's changes, and
/// what it was given so far.
struct Reloadable {
    cluster: String,
    publisher: discover::Publisher<String, Target>,
    current: Rc<RefCell<BTreeMap<String, SocketAddr>>>,
}

thread_local! {
    /// Every balancer of this thread whose config endpoints a reload may change.
    static RELOADABLE: RefCell<Vec<Reloadable>> = const { RefCell::new(Vec::new()) };
}

fn labelled(endpoints: &[config::Endpoint]) -> BTreeMap<String, SocketAddr> {
    endpoints.iter().map(|e| (e.label(), e.address())).collect()
}

fn target(change: Change<String, Endpoint>) -> Change<String, Target> {
    match change {
        Change::Insert(name, e) => Change::Insert(name.clone(), (name, e.address)),
        Change::Remove(name) => Change::Remove(name),
    }
}

/// The etcd source a cluster's `etcd` table describes (not yet polled). Also how the config
/// checks the table at start.
pub fn etcd_source(source: &config::EtcdSource) -> Result<EtcdDiscovery, EtcdError> {
    Etcd::new(source.members.clone(), source.prefix.clone())
        .request_timeout(source.request_timeout)
        .build()
}

/// The endpoints of a balanced (TCP or HTTP) `cluster` on this runtime thread, as one
/// stream for its balancer: its
/// static list (changed by [`reload_endpoints`]), then whatever its `endpoints_file`, `dns`
/// and `etcd` sources yield, as they yield it. All share one name space: a source that names
/// an endpoint of another replaces it. Weights are not used by the balanced policies.
///
/// The sources were checked when the config was (a file that could not be read or an etcd
/// table that was refused then stopped the start); if the file has gone since, that is
/// logged and the cluster runs on its other sources.
///
/// # Panics
/// Outside a runtime thread.
pub fn changes(cluster: &config::Cluster) -> Changes {
    let initial = labelled(&cluster.endpoints);
    let fixed = discover::fixed(
        initial
            .iter()
            .map(|(label, addr)| (label.clone(), (label.clone(), *addr)))
            .collect::<Vec<_>>(),
    );
    let (publisher, reloads) = discover::channel(64);
    RELOADABLE.with(|r| {
        r.borrow_mut().push(Reloadable {
            cluster: cluster.name.clone(),
            publisher,
            current: Rc::new(RefCell::new(initial)),
        });
    });
    let mut live: Changes = Box::pin(reloads);
    for source in sources(cluster) {
        live = Box::pin(futures::stream::select(live, source.map(target)));
    }
    Box::pin(fixed.chain(live))
}

/// The discovery sources of `cluster` beyond its static list — its `endpoints_file`, `dns`
/// and `etcd`, each as the config names them — ready to be polled on this runtime thread
/// (one per thread). A file that has gone since the config was checked is logged and left
/// out.
pub fn sources(cluster: &config::Cluster) -> Vec<Discovery> {
    let mut out = Vec::new();
    if let Some(path) = &cluster.endpoints_file {
        match FileDiscovery::open(path, cluster.discovery_interval) {
            Ok(file) => out.push(Discovery::File(file)),
            Err(e) => log::warn!("cluster {}: {e}; running without the file", cluster.name),
        }
    }
    if let Some((host, port)) = cluster
        .dns
        .as_deref()
        .and_then(|d| d.rsplit_once(':'))
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    {
        out.push(Discovery::Dns(discover::dns(
            host,
            port,
            cluster.discovery_interval,
        )));
    }
    if let Some(source) = &cluster.etcd {
        match etcd_source(source) {
            Ok(etcd) => out.push(Discovery::Etcd(etcd)),
            Err(e) => log::warn!("cluster {}: {e}; running without etcd", cluster.name),
        }
    }
    out
}

/// Gives every balancer of cluster `name` on this runtime thread the config endpoints
/// `endpoints` instead of the ones it had: one remove or insert per difference. Returns
/// once the changes are queued to every balancer (each applies them on its next poll).
pub async fn reload_endpoints(name: &str, endpoints: &[config::Endpoint]) {
    let next = labelled(endpoints);
    let targets: Vec<_> = RELOADABLE.with(|r| {
        r.borrow()
            .iter()
            .filter(|e| e.cluster == name)
            .map(|e| (e.publisher.clone(), e.current.clone()))
            .collect()
    });
    for (publisher, current) in targets {
        let before = current.borrow().clone();
        // A send fails only when its balancer is gone (a reload replaced its stack, or the
        // proxy is stopping): then it is forgotten.
        let mut gone = false;
        for label in before.keys().filter(|l| !next.contains_key(*l)) {
            gone |= publisher.remove(label.clone()).await.is_err();
        }
        for (label, addr) in &next {
            if before.get(label) != Some(addr) {
                gone |= publisher
                    .insert(label.clone(), (label.clone(), *addr))
                    .await
                    .is_err();
            }
        }
        *current.borrow_mut() = next.clone();
        if gone {
            RELOADABLE.with(|r| r.borrow_mut().retain(|e| !Rc::ptr_eq(&e.current, &current)));
        }
    }
}

/// Any of a cluster's discovery sources as one type, so a cluster stack built over it does not
/// depend on which source the config names.
///
/// ```
/// use futures::StreamExt;
/// use sheave_middleware::discover::Change;
/// use sheave_proxy::discovery::{Discovery, Endpoint};
///
/// let at = Endpoint { address: "127.0.0.1:6379".parse().unwrap(), weight: 1 };
/// let changes = Discovery::fixed([("a".to_string(), at)]);
/// let all: Vec<_> = futures::executor::block_on(changes.collect());
/// assert_eq!(all, vec![Change::Insert("a".to_string(), at)]);
/// ```
#[derive(Debug)]
pub enum Discovery {
    /// A static list (the config's `endpoints`), inserted once.
    Fixed(Fixed<String, Endpoint>),
    /// A file re-read when it changes.
    File(FileDiscovery),
    /// A host name resolved every interval: each address is an endpoint named
    /// `ip:port`, of weight 1.
    Dns(Dns),
    /// The keys under a prefix in etcd.
    Etcd(EtcdDiscovery),
}

impl Discovery {
    /// A static list of named endpoints.
    pub fn fixed(endpoints: impl IntoIterator<Item = (String, Endpoint)>) -> Discovery {
        Discovery::Fixed(discover::fixed(endpoints))
    }
}

impl Stream for Discovery {
    type Item = Change<String, Endpoint>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Discovery::Fixed(s) => Pin::new(s).poll_next(cx),
            Discovery::File(s) => Pin::new(s).poll_next(cx),
            Discovery::Etcd(s) => Pin::new(s).poll_next(cx),
            Discovery::Dns(s) => Pin::new(s).poll_next(cx).map(|change| {
                change.map(|change| match change {
                    Change::Insert(address, _) => {
                        Change::Insert(default_name(address), Endpoint { address, weight: 1 })
                    }
                    Change::Remove(address) => Change::Remove(default_name(address)),
                })
            }),
        }
    }
}

/// Where an endpoint is and how much of the load it takes: the target of a discovery
/// [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Where it is.
    pub address: SocketAddr,
    /// Its weight (ketama weight for RESP clusters); at least 1.
    pub weight: u32,
}

/// A discovered set: endpoint name → endpoint.
pub type Endpoints = BTreeMap<String, Endpoint>;

/// Parses one endpoint: `ADDRESS [weight=N] [name=NAME]`, fields separated by spaces, `#`
/// starting a comment. Returns `Ok(None)` for a line with nothing on it, else the endpoint's
/// name (the one given, or as [`default_name`] makes it) and the endpoint. The error says
/// which field is wrong and why.
pub fn parse_endpoint(text: &str) -> Result<Option<(String, Endpoint)>, String> {
    let text = match text.find('#') {
        Some(i) => &text[..i],
        None => text,
    };
    let mut fields = text.split_whitespace();
    let Some(address) = fields.next() else {
        return Ok(None);
    };
    let address: SocketAddr = address
        .parse()
        .map_err(|_| format!("address: {address:?} is not an ip:port"))?;
    if address.port() == 0 {
        return Err("address: port 0 is not a port one can connect to".into());
    }
    let (mut weight, mut name) = (None, None);
    for field in fields {
        match field.split_once('=') {
            Some(("weight", w)) if weight.is_none() => match w.parse::<u32>() {
                Ok(0) => return Err("weight: must be at least 1".into()),
                Ok(w) => weight = Some(w),
                Err(_) => return Err(format!("weight: {w:?} is not a whole number")),
            },
            Some(("name", n)) if name.is_none() => {
                plain_name(n).map_err(|why| format!("name: {why}"))?;
                name = Some(n.to_string());
            }
            Some(("weight" | "name", _)) => return Err(format!("{field:?}: given twice")),
            _ => {
                return Err(format!(
                    "{field:?}: expected weight=N or name=NAME after the address"
                ));
            }
        }
    }
    let endpoint = Endpoint {
        address,
        weight: weight.unwrap_or(1),
    };
    Ok(Some((
        name.unwrap_or_else(|| default_name(address)),
        endpoint,
    )))
}

/// The name of an endpoint given none: `host:port`, or the host alone on port 11211 (as
/// twemproxy names a server on its ring, and as the config's `Endpoint::label` does).
pub fn default_name(address: SocketAddr) -> String {
    match address.port() {
        11211 => address.ip().to_string(),
        _ => address.to_string(),
    }
}

/// Names go into metrics labels and JSON unescaped: letters, digits and `_ . : - /` only.
fn plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:-/".contains(*c)))
    {
        Some(c) => Err(format!(
            "{name:?} has {c:?}: use letters, digits and _ . : - / only"
        )),
        None => Ok(()),
    }
}

/// Queues the changes that turn `known` into `next` (removals first, then the new and the
/// changed endpoints, each in name order) and makes `next` the known set.
fn diff(known: &mut Endpoints, next: Endpoints, out: &mut VecDeque<Change<String, Endpoint>>) {
    for name in known.keys() {
        if !next.contains_key(name) {
            out.push_back(Change::Remove(name.clone()));
        }
    }
    for (name, endpoint) in &next {
        if known.get(name) != Some(endpoint) {
            out.push_back(Change::Insert(name.clone(), *endpoint));
        }
    }
    *known = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
        }
    }

    #[test]
    fn a_diff_removes_the_gone_then_inserts_the_new_and_the_changed() {
        let mut known: Endpoints = [("a".into(), at(1)), ("b".into(), at(2))].into();
        let mut out = VecDeque::new();
        let next: Endpoints = [("b".into(), at(20)), ("c".into(), at(3))].into();
        diff(&mut known, next.clone(), &mut out);
        assert_eq!(
            Vec::from(out.split_off(0)),
            vec![
                Change::Remove("a".into()),
                Change::Insert("b".into(), at(20)),
                Change::Insert("c".into(), at(3)),
            ]
        );
        assert_eq!(known, next);
        diff(&mut known, next, &mut out);
        assert!(out.is_empty(), "the same set again changes nothing");
    }

    #[test]
    fn bad_endpoints_name_the_field() {
        let cases = [
            (
                "localhost:80",
                "address: \"localhost:80\" is not an ip:port",
            ),
            (
                "127.0.0.1:0",
                "address: port 0 is not a port one can connect to",
            ),
            (
                "127.0.0.1:1 weight=x",
                "weight: \"x\" is not a whole number",
            ),
            ("127.0.0.1:1 weight=1 weight=2", "\"weight=2\": given twice"),
            (
                "127.0.0.1:1 name=a\"b",
                "name: \"a\\\"b\" has '\"': use letters, digits and _ . : - / only",
            ),
            (
                "127.0.0.1:1 2",
                "\"2\": expected weight=N or name=NAME after the address",
            ),
        ];
        for (text, why) in cases {
            assert_eq!(parse_endpoint(text).unwrap_err(), why, "{text}");
        }
        let (name, e) = parse_endpoint("[::1]:11211 weight=3").unwrap().unwrap();
        assert_eq!((name.as_str(), e.weight), ("::1", 3));
    }
}
