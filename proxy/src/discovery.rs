//! Where a balanced (TCP or HTTP) cluster's endpoints come from: the static list of the
//! config (which a reload may change: [`reload_endpoints`]), an endpoints file re-read
//! every `discovery_interval`, and a DNS name resolved as often (every address it has is an
//! endpoint; the kit's [`discover::dns`], on a resolver thread).
//!
//! The file holds one `host:port` a line (`#` starts a comment; blank lines are skipped).
//! Each re-read that differs from the last is diffed against the endpoints it gave before,
//! and the balancer gets one insert or remove per change: a removed endpoint gets nothing
//! more once its removal is applied, requests in flight on it finish. A file that cannot be
//! read or parsed keeps the endpoints it gave last, and the reason is logged.
//!
//! ```
//! use sheave_proxy::discovery::parse_endpoints;
//!
//! let text = "# the web tier\n127.0.0.1:8080\n\n127.0.0.1:8081  # canary\n";
//! let list = parse_endpoints(text).unwrap();
//! assert_eq!(list, ["127.0.0.1:8080".parse().unwrap(), "127.0.0.1:8081".parse().unwrap()]);
//! assert_eq!(parse_endpoints("localhost").unwrap_err(), "line 1: \"localhost\" is not an address (host:port): invalid socket address syntax");
//! ```

use crate::config;
use futures::Stream;
use futures::StreamExt;
use sheave_core::time;
use sheave_middleware::discover::{self, Change};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

/// An endpoint as the balancer sees it: keyed by its label, reached at its address.
pub type Target = (String, SocketAddr);

/// A cluster's stream of endpoint changes.
pub type Changes = Pin<Box<dyn Stream<Item = Change<String, Target>>>>;

/// Parses an endpoints file; the error names the line and why.
pub fn parse_endpoints(text: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let addr: SocketAddr = line.parse().map_err(|e| {
            format!(
                "line {}: {line:?} is not an address (host:port): {e}",
                i + 1
            )
        })?;
        if addr.port() == 0 {
            return Err(format!(
                "line {}: port 0 is not a port one can connect to",
                i + 1
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

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

/// The endpoints of `cluster`: its static list (changed by [`reload_endpoints`]), then (with
/// `endpoints_file`) the file's, re-read every `discovery_interval` by a task on this
/// runtime thread.
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
    if let Some(path) = cluster.endpoints_file.clone() {
        let (publisher, file) = discover::channel(64);
        let (name, interval) = (cluster.name.clone(), cluster.discovery_interval);
        drop(sheave_core::spawn(watch(path, name, interval, publisher)));
        live = Box::pin(futures::stream::select(live, file));
    }
    if let Some((host, port)) = cluster
        .dns
        .as_deref()
        .and_then(|d| d.rsplit_once(':'))
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    {
        let resolved = discover::dns(host, port, cluster.discovery_interval).map(|c| match c {
            Change::Insert(addr, _) => Change::Insert(addr.to_string(), (addr.to_string(), addr)),
            Change::Remove(addr) => Change::Remove(addr.to_string()),
        });
        live = Box::pin(futures::stream::select(live, resolved));
    }
    Box::pin(fixed.chain(live))
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
        // A send fails only when its balancer is gone (the proxy is stopping): nothing to do.
        for label in before.keys().filter(|l| !next.contains_key(*l)) {
            let _ = publisher.remove(label.clone()).await;
        }
        for (label, addr) in &next {
            if before.get(label) != Some(addr) {
                let _ = publisher
                    .insert(label.clone(), (label.clone(), *addr))
                    .await;
            }
        }
        *current.borrow_mut() = next.clone();
    }
}

async fn watch(
    path: PathBuf,
    cluster: String,
    interval: Duration,
    publisher: discover::Publisher<String, Target>,
) {
    let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut last_text: Option<String> = None;
    loop {
        // A small file, read on the runtime thread: a few microseconds per interval.
        match std::fs::read_to_string(&path) {
            Ok(text) if last_text.as_deref() != Some(text.as_str()) => {
                match parse_endpoints(&text) {
                    Ok(list) => {
                        let next: BTreeSet<SocketAddr> = list.into_iter().collect();
                        for gone in current.difference(&next) {
                            if publisher.remove(gone.to_string()).await.is_err() {
                                return; // the balancer is gone
                            }
                        }
                        for new in next.difference(&current) {
                            let label = new.to_string();
                            if publisher
                                .insert(label.clone(), (label, *new))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        if current != next {
                            log::info!(
                                "cluster {cluster}: {} endpoints from {}",
                                next.len(),
                                path.display()
                            );
                        }
                        current = next;
                    }
                    Err(e) => log::warn!(
                        "cluster {cluster}: {}: {e}; keeping the {} endpoints read before",
                        path.display(),
                        current.len()
                    ),
                }
                last_text = Some(text);
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "cluster {cluster}: {}: {e}; keeping the {} endpoints read before",
                path.display(),
                current.len()
            ),
        }
        time::sleep(interval).await;
    }
}
