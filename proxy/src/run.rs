//! [`Proxy`]: starts every listener of a [`Config`] on its own runtime, and stops them.

use crate::config::{Config, ConfigError, Endpoint, Policy, Protocol};
use crate::metrics::{ClusterMetrics, ListenerMetrics, Snapshot};
use crate::resp::{RespConnection, cluster_stack};
use crate::tcp::{TcpDriver, cluster_dialer};
use sheave_core::{Handle, Runtime};
use sheave_proto::resp::RespCodec;
use sheave_proto::{Server, ServerHandle};
use sheave_service::Error;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

thread_local! {
    /// This runtime thread's counters: each cluster's and each listener's, by name.
    static METRICS: RefCell<ThreadMetrics> = RefCell::new(ThreadMetrics::default());
}

#[derive(Default)]
struct ThreadMetrics {
    clusters: HashMap<String, Rc<ClusterMetrics>>,
    listeners: HashMap<String, Rc<ListenerMetrics>>,
}

/// The counters of cluster `name` on this thread (made on first use).
pub(crate) fn cluster_metrics(cluster: &crate::config::Cluster) -> Rc<ClusterMetrics> {
    METRICS.with(|m| {
        m.borrow_mut()
            .clusters
            .entry(cluster.name.clone())
            .or_insert_with(|| {
                let labels: Vec<String> = cluster.endpoints.iter().map(|e| e.label()).collect();
                Rc::new(ClusterMetrics::new(&cluster.name, &labels))
            })
            .clone()
    })
}

/// The counters of listener `name` on this thread (made on first use).
pub(crate) fn listener_metrics(name: &str) -> Rc<ListenerMetrics> {
    METRICS.with(|m| {
        m.borrow_mut()
            .listeners
            .entry(name.to_string())
            .or_default()
            .clone()
    })
}

/// This thread's counters, copied out.
fn local_snapshot() -> Snapshot {
    METRICS.with(|m| {
        let m = m.borrow();
        let mut snap = Snapshot::default();
        for c in m.clusters.values() {
            snap.add_cluster(c);
        }
        for (name, l) in &m.listeners {
            snap.add_listener(name, l);
        }
        snap
    })
}

/// Every thread's counters, merged: each thread copies out its own (a message to each
/// runtime thread), so the request path touches nothing shared.
pub async fn scrape(handle: &Handle) -> Snapshot {
    let mut total = Snapshot::default();
    for thread in 0..handle.threads() {
        if let Ok(snap) = handle
            .spawn_with(thread, || async { local_snapshot() })
            .await
        {
            total.merge(snap);
        }
    }
    total
}

/// A running proxy: its runtime, listeners and admin endpoint. Dropping it shuts it down.
#[derive(Debug)]
pub struct Proxy {
    /// The running config, as the last reload left it.
    running: Arc<Mutex<Config>>,
    runtime: Handle,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    handles: Vec<ServerHandle>,
    stopped: Option<mpsc::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts `config` on a new runtime (its own threads): every listener is bound before
    /// this returns, or nothing runs and the error says which listener failed.
    pub fn start(config: Config) -> io::Result<Proxy> {
        Proxy::start_inner(config, false, None)
    }

    /// Like [`start`](Proxy::start), and drains on `SIGTERM` or `SIGINT` (the binary's way);
    /// with `reload_from`, `SIGHUP` re-reads that file and [reloads](Proxy::reload) it — a
    /// file that is refused (it does not parse, or changes what a reload cannot) keeps the
    /// running config, and the reason is logged.
    pub fn start_with_signals(config: Config, reload_from: Option<PathBuf>) -> io::Result<Proxy> {
        Proxy::start_inner(config, true, reload_from.map(|path| (path, None)))
    }

    /// Like [`start_with_signals`](Proxy::start_with_signals) reloading from `path`, and
    /// also reloads it when it changes (the binary's `--watch`): its bytes are read every
    /// `every` on the runtime's timer, and bytes that differ from the last read are reloaded
    /// exactly as a `SIGHUP` would (a refused file is logged and the running config kept;
    /// the same bytes are not tried again).
    pub fn start_watching(config: Config, path: PathBuf, every: Duration) -> io::Result<Proxy> {
        Proxy::start_inner(config, true, Some((path, Some(every))))
    }

    /// Applies `new` without dropping a connection: what a reload can change is the
    /// endpoints of balanced (TCP and HTTP) clusters — each balancer on each thread gets the
    /// inserts and removes, requests in flight finish where they are. A config that changes
    /// anything else (a listener, a route, a cluster's policy or timeouts, a ketama
    /// cluster's shards) is refused with the field, and nothing changes: that needs a
    /// restart. Returns how many clusters changed.
    pub fn reload(&self, new: Config) -> Result<usize, ConfigError> {
        futures::executor::block_on(reload(&self.running, &self.runtime, new))
    }

    fn start_inner(
        config: Config,
        on_signals: bool,
        reload_from: Option<(PathBuf, Option<Duration>)>,
    ) -> io::Result<Proxy> {
        let running = Arc::new(Mutex::new(config.clone()));
        let shared = running.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stopped_tx, stopped_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sheave-proxy".into())
            .spawn(move || {
                let rt = match Runtime::builder().threads(config.threads).build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e))),
                };
                rt.block_on(async move {
                    let mut serving = Vec::new();
                    let mut bound = Vec::new();
                    let mut handles = Vec::new();
                    let mut handles_for_admin = Vec::new();
                    for l in &config.listeners {
                        match start_listener(&config, l) {
                            Ok((addr, handle, serve)) => {
                                bound.push((l.name.clone(), addr));
                                handles.push(handle);
                                serving.push(serve);
                            }
                            Err(e) => {
                                let e = io::Error::new(
                                    e.kind(),
                                    format!("listener {:?} on {}: {e}", l.name, l.address),
                                );
                                return drop(ready_tx.send(Err(e)));
                            }
                        }
                    }
                    let mut admin_addr = None;
                    if let Some(admin) = &config.admin {
                        let server = match sheave_http::Server::bind(admin.address).build() {
                            Ok(server) => server,
                            Err(e) => {
                                let e = io::Error::new(
                                    e.kind(),
                                    format!("admin listener on {}: {e}", admin.address),
                                );
                                return drop(ready_tx.send(Err(e)));
                            }
                        };
                        admin_addr = Some(server.local_addr());
                        let service = crate::admin::Admin::new(handles.clone());
                        let admin_handle = server.handle();
                        sheave_core::spawn(server.serve_with(move || {
                            let service = service.clone();
                            move |_peer: SocketAddr| {
                                let service = service.clone();
                                async move { Ok::<_, Error>(service) }
                            }
                        }));
                        // The admin stops with the listeners.
                        handles_for_admin.push(admin_handle);
                    }
                    if let Some((path, watch)) = reload_from {
                        let hangups = match sheave_core::signal::Signals::hangup() {
                            Ok(signals) => signals,
                            Err(e) => return drop(ready_tx.send(Err(e))),
                        };
                        if let Some(every) = watch {
                            let (path, shared) = (path.clone(), shared.clone());
                            sheave_core::spawn(reload_on_change(path, every, shared));
                        }
                        sheave_core::spawn(reload_on_hangup(hangups, path, shared));
                    }
                    if on_signals {
                        let signals = match sheave_core::signal::Signals::new() {
                            Ok(signals) => signals,
                            Err(e) => return drop(ready_tx.send(Err(e))),
                        };
                        let handles = handles.clone();
                        sheave_core::spawn(async move {
                            let mut signals = signals;
                            let signal = signals.recv().await;
                            log::info!("{signal}: draining");
                            handles.iter().for_each(ServerHandle::shutdown);
                        });
                    }
                    let _ = ready_tx.send(Ok((bound, admin_addr, handles, Handle::current())));
                    for serve in serving {
                        let _ = serve.await;
                    }
                    handles_for_admin.iter().for_each(ServerHandle::shutdown);
                });
                let _ = stopped_tx.send(());
            })?;
        let (listeners, admin, handles, runtime) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the proxy's runtime thread died"))??;
        Ok(Proxy {
            running,
            runtime,
            listeners,
            admin,
            handles,
            stopped: Some(stopped_rx),
            thread: Some(thread),
        })
    }

    /// Where listener `name` listens (with the port picked, if the config said 0).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Where the admin listener listens, if the config has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Every listener and its address.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// Starts a graceful drain: every listener stops accepting, answers what it took, and
    /// closes its connections.
    pub fn drain(&self) {
        self.handles.iter().for_each(ServerHandle::shutdown);
    }

    /// Waits until every listener has stopped (after [`drain`](Proxy::drain), or a signal).
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.drain();
        self.join();
    }
}

/// On each `SIGHUP`: re-reads `path` and reloads it, logging what happened.
async fn reload_on_hangup(
    mut hangups: sheave_core::signal::Signals,
    path: PathBuf,
    running: Arc<Mutex<Config>>,
) {
    loop {
        hangups.recv().await;
        reload_file(&path, &running, Config::load(&path)).await;
    }
}

/// Every `every`: re-reads `path`, and reloads it (as `SIGHUP` does) when its bytes differ
/// from the last read. The first read is the baseline: the file the proxy started from.
async fn reload_on_change(path: PathBuf, every: Duration, running: Arc<Mutex<Config>>) {
    let mut last = std::fs::read(&path).ok();
    let mut ticks = sheave_core::time::interval(every);
    loop {
        ticks.tick().await;
        // A config file is small: read on the runtime thread, a few microseconds a tick.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if last.take().is_some() {
                    log::error!(
                        "watching {}: {e}; the running config is kept",
                        path.display()
                    );
                }
                continue;
            }
        };
        if last.as_deref() == Some(&bytes[..]) {
            continue;
        }
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) => Config::parse(text),
            Err(e) => Err(ConfigError {
                field: "toml".into(),
                reason: format!("not UTF-8: {e}"),
            }),
        };
        last = Some(bytes);
        reload_file(&path, &running, parsed).await;
    }
}

/// Applies a re-read of `path` (how `SIGHUP` and `--watch` both reload), logging what
/// happened.
async fn reload_file(path: &Path, running: &Mutex<Config>, parsed: Result<Config, ConfigError>) {
    let outcome = match parsed {
        Ok(new) => reload(running, &Handle::current(), new).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(n) => log::warn!(
            "reloaded {}: the endpoints of {n} clusters changed",
            path.display()
        ),
        Err(e) => log::error!(
            "reload of {} refused, the running config is kept: {e}",
            path.display()
        ),
    }
}

/// What a reload from `old` to `new` changes: the clusters whose endpoints differ, with
/// their new endpoints; or why it cannot be applied live.
fn plan(old: &Config, new: &Config) -> Result<Vec<(String, Vec<Endpoint>)>, ConfigError> {
    let restart = |field: String| ConfigError {
        field,
        reason: "changed, and a reload applies only the endpoints of tcp and http clusters \
                 (restart for the rest)"
            .to_string(),
    };
    if old.threads != new.threads {
        return Err(restart("threads".into()));
    }
    if old.admin != new.admin {
        return Err(restart("admin".into()));
    }
    if old.listeners.len() != new.listeners.len() {
        return Err(restart("listener".into()));
    }
    if let Some(i) = (0..old.listeners.len()).find(|i| old.listeners[*i] != new.listeners[*i]) {
        return Err(restart(format!("listener[{i}]")));
    }
    if old.routes != new.routes {
        return Err(restart("route".into()));
    }
    if old.clusters.len() != new.clusters.len() {
        return Err(restart("cluster".into()));
    }
    let mut changed = Vec::new();
    for (i, (o, n)) in old.clusters.iter().zip(&new.clusters).enumerate() {
        let mut same_endpoints = n.clone();
        same_endpoints.endpoints = o.endpoints.clone();
        if same_endpoints != *o {
            return Err(restart(format!("cluster[{i}]")));
        }
        if o.endpoints != n.endpoints {
            if o.policy == Policy::Ketama {
                return Err(ConfigError {
                    field: format!("cluster[{i}].endpoints"),
                    reason: "a ketama cluster's shards change only with a restart (it moves keys)"
                        .to_string(),
                });
            }
            changed.push((n.name.clone(), n.endpoints.clone()));
        }
    }
    Ok(changed)
}

async fn reload(
    running: &Mutex<Config>,
    runtime: &Handle,
    new: Config,
) -> Result<usize, ConfigError> {
    let changed = {
        let old = sheave_core::sync::lock(running);
        plan(&old, &new)?
    };
    for thread in 0..runtime.threads() {
        let changed = changed.clone();
        let _ = runtime
            .spawn_with(thread, move || async move {
                for (name, endpoints) in &changed {
                    crate::discovery::reload_endpoints(name, endpoints).await;
                }
            })
            .await;
    }
    *sheave_core::sync::lock(running) = new;
    Ok(changed.len())
}

type Serving = sheave_core::JoinHandle<io::Result<()>>;

/// Binds listener `l` on this (runtime) thread, and spawns its serving on every thread.
fn start_listener(
    config: &Config,
    l: &crate::config::Listener,
) -> io::Result<(SocketAddr, ServerHandle, Serving)> {
    let cluster = l.cluster.as_ref().map(|name| {
        config
            .cluster(name)
            .expect("validated: the cluster exists")
            .clone()
    });
    match l.protocol {
        Protocol::Resp => {
            let cluster = cluster.expect("validated: a resp listener has a cluster");
            let server = Server::bind(l.address)
                .codec(RespCodec::new())
                .threads(config.threads)
                .max_connections(l.max_connections)
                .max_in_flight(l.max_in_flight)
                .idle_timeout(l.idle_timeout)
                .read_timeout(l.read_timeout)
                .build()?;
            let (addr, handle) = (server.local_addr(), server.handle());
            let name = l.name.clone();
            let serve = sheave_core::spawn(server.serve_with(move || {
                let metrics = cluster_metrics(&cluster);
                let listener = listener_metrics(&name);
                let (stack, ring) = cluster_stack(&cluster, metrics.clone());
                move |_peer: SocketAddr| {
                    let conn = RespConnection::new(
                        stack.clone(),
                        ring.clone(),
                        metrics.clone(),
                        listener.clone(),
                    );
                    async move { Ok::<_, Error>(conn) }
                }
            }));
            Ok((addr, handle, serve))
        }
        Protocol::Tcp => {
            let cluster = cluster.expect("validated: a tcp listener has a cluster");
            let server = Server::bind(l.address)
                .threads(config.threads)
                .max_connections(l.max_connections)
                .build()?;
            let (addr, handle) = (server.local_addr(), server.handle());
            let listener = l.clone();
            let serve = sheave_core::spawn(server.serve_driver(move || {
                let metrics = cluster_metrics(&cluster);
                let dialer = Rc::new(cluster_dialer(&cluster, metrics.clone()));
                TcpDriver::new(dialer, &listener, listener_metrics(&listener.name), metrics)
            }));
            Ok((addr, handle, serve))
        }
        Protocol::Http => {
            let server = sheave_http::Server::bind(l.address)
                .threads(config.threads)
                .max_connections(l.max_connections)
                .header_read_timeout(l.read_timeout)
                .build()?;
            let (addr, handle) = (server.local_addr(), server.handle());
            let (config, listener) = (config.clone(), l.clone());
            let serve = sheave_core::spawn(server.serve_with(move || {
                let router = Rc::new(crate::http::Router::new(
                    &config,
                    &listener,
                    listener_metrics(&listener.name),
                    |cluster| {
                        let metrics = cluster_metrics(cluster);
                        (
                            crate::http::cluster_stack(cluster, metrics.clone()),
                            metrics,
                        )
                    },
                ));
                move |peer: SocketAddr| {
                    let conn = crate::http::HttpConnection::new(router.clone(), peer);
                    async move { Ok::<_, Error>(conn) }
                }
            }));
            Ok((addr, handle, serve))
        }
    }
}
