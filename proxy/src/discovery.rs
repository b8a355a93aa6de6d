//! Where a balanced (TCP or HTTP) cluster's endpoints come from: the static list of the
//! config, and an endpoints file re-read every `discovery_interval`.
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
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
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

/// The endpoints of `cluster`: its static list, then (with `endpoints_file`) the file's,
/// re-read every `discovery_interval` by a task on this runtime thread.
///
/// # Panics
/// Outside a runtime thread, when the cluster has an endpoints file.
pub fn changes(cluster: &config::Cluster) -> Changes {
    let fixed = discover::fixed(
        cluster
            .endpoints
            .iter()
            .map(|e| (e.label(), (e.label(), e.address())))
            .collect::<Vec<_>>(),
    );
    let Some(path) = cluster.endpoints_file.clone() else {
        return Box::pin(fixed);
    };
    let (publisher, subscription) = discover::channel(64);
    let (name, interval) = (cluster.name.clone(), cluster.discovery_interval);
    drop(sheave_core::spawn(watch(path, name, interval, publisher)));
    Box::pin(fixed.chain(subscription))
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
