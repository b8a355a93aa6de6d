//! [`Proxy`]: starts every listener of a [`Config`] on its own runtime, and stops them.

use crate::config::{Config, ConfigError, Endpoint, Listener, Policy, Protocol, Route};
use crate::metrics::{ClusterMetrics, ListenerMetrics, Snapshot};
use crate::resp::{RespConnection, cluster_stack};
use crate::tcp::{TcpDriver, cluster_dialer};
use sheave_core::{Handle, RemoteJoinHandle, Runtime};
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

/// The listeners running now — a reload adds and removes them — shared by the proxy, its
/// admin (`/drain`) and its signal handler.
#[derive(Debug, Clone)]
pub struct Listening(Arc<Mutex<ListeningInner>>);

#[derive(Debug)]
struct ListeningInner {
    running: Vec<(String, SocketAddr, ServerHandle)>,
    draining: bool,
    /// Where a listener that a reload started sends its serving, for the runtime to wait
    /// on before it stops.
    added: mpsc::Sender<RemoteJoinHandle<()>>,
}

impl Listening {
    fn new(added: mpsc::Sender<RemoteJoinHandle<()>>) -> Listening {
        Listening(Arc::new(Mutex::new(ListeningInner {
            running: Vec::new(),
            draining: false,
            added,
        })))
    }

    /// Starts a graceful drain of every listener running now: each stops accepting,
    /// answers what it took, and closes its connections. A reload adds none after it.
    pub fn drain(&self) {
        let mut inner = sheave_core::sync::lock(&self.0);
        inner.draining = true;
        inner.running.iter().for_each(|(_, _, h)| h.shutdown());
    }

    fn addrs(&self) -> Vec<(String, SocketAddr)> {
        let inner = sheave_core::sync::lock(&self.0);
        inner
            .running
            .iter()
            .map(|(n, a, _)| (n.clone(), *a))
            .collect()
    }

    fn push(&self, name: String, addr: SocketAddr, handle: ServerHandle) {
        sheave_core::sync::lock(&self.0)
            .running
            .push((name, addr, handle));
    }
}

/// A running proxy: its runtime, listeners and admin endpoint. Dropping it shuts it down.
#[derive(Debug)]
pub struct Proxy {
    /// The running config, as the last reload left it.
    running: Arc<Mutex<Config>>,
    runtime: Handle,
    listening: Listening,
    admin: Option<SocketAddr>,
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

    /// Applies `new` without dropping a connection, or refuses it whole with the field
    /// named (then nothing changes).
    ///
    /// - **Endpoints** of balanced (TCP and HTTP) clusters: each balancer on each thread gets
    ///   the inserts and removes; requests in flight finish where they are.
    /// - **Cluster settings** (policy, timeouts, retry and budget, limit, ejection, hedge,
    ///   pool), **routes**, a listener's default `cluster`, and **added or removed
    ///   clusters**: each listener that uses what changed builds new stacks on every
    ///   runtime thread and swaps them in. New HTTP requests, and new TCP and RESP
    ///   connections, take the new stacks; requests in flight and open connections finish
    ///   on the stacks they started on, which are dropped when their last user goes. A
    ///   cluster still used by a route or listener cannot be removed (`new` would not
    ///   validate).
    /// - **Listeners** added start (bound before anything else changes: one that cannot
    ///   bind refuses the reload with `listener[i].address`); listeners removed stop
    ///   accepting and drain their open connections; a listener whose address changed is
    ///   both (its open connections finish on the old socket).
    /// - **Refused, a restart is needed:** `threads`, `[admin]`, a listener's protocol or
    ///   limits on the same address, and what shapes a ketama ring: its listed shards,
    ///   `endpoints_file`, `etcd`, `hash` and `hash_tag` (open connections would keep the old
    ///   ring).
    ///
    /// Returns how many clusters changed, were added or were removed.
    pub fn reload(&self, new: Config) -> Result<usize, ConfigError> {
        futures::executor::block_on(reload(&self.running, &self.listening, &self.runtime, new))
    }

    fn start_inner(
        config: Config,
        on_signals: bool,
        reload_from: Option<(PathBuf, Option<Duration>)>,
    ) -> io::Result<Proxy> {
        let running = Arc::new(Mutex::new(config.clone()));
        let shared = running.clone();
        let (added_tx, added) = mpsc::channel();
        let listening = Listening::new(added_tx);
        let live = listening.clone();
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
                    let mut handles_for_admin = Vec::new();
                    for l in &config.listeners {
                        match start_listener(&config, l) {
                            Ok((addr, handle, serve)) => {
                                live.push(l.name.clone(), addr, handle);
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
                        let service = crate::admin::Admin::new(live.clone());
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
                            let (path, shared, live) = (path.clone(), shared.clone(), live.clone());
                            sheave_core::spawn(reload_on_change(path, every, shared, live));
                        }
                        sheave_core::spawn(reload_on_hangup(hangups, path, shared, live.clone()));
                    }
                    if on_signals {
                        let signals = match sheave_core::signal::Signals::new() {
                            Ok(signals) => signals,
                            Err(e) => return drop(ready_tx.send(Err(e))),
                        };
                        let live = live.clone();
                        sheave_core::spawn(async move {
                            let mut signals = signals;
                            let signal = signals.recv().await;
                            log::info!("{signal}: draining");
                            live.drain();
                        });
                    }
                    let _ = ready_tx.send(Ok((admin_addr, Handle::current())));
                    for serve in serving {
                        let _ = serve.await;
                    }
                    // Then the listeners reloads started (each ends when it has drained).
                    while let Ok(more) = added.try_recv() {
                        let _ = more.await;
                    }
                    handles_for_admin.iter().for_each(ServerHandle::shutdown);
                });
                let _ = stopped_tx.send(());
            })?;
        let (admin, runtime) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the proxy's runtime thread died"))??;
        Ok(Proxy {
            running,
            runtime,
            listening,
            admin,
            stopped: Some(stopped_rx),
            thread: Some(thread),
        })
    }

    /// Where listener `name` listens now (with the port picked, if the config said 0).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listening
            .addrs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Where the admin listener listens, if the config has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Every listener running now and its address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listening.addrs()
    }

    /// Starts a graceful drain: every listener stops accepting, answers what it took, and
    /// closes its connections.
    pub fn drain(&self) {
        self.listening.drain();
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
    listening: Listening,
) {
    loop {
        hangups.recv().await;
        reload_file(&path, &running, &listening, Config::load(&path)).await;
    }
}

/// Every `every`: re-reads `path`, and reloads it (as `SIGHUP` does) when its bytes differ
/// from the last read. The first read is the baseline: the file the proxy started from.
async fn reload_on_change(
    path: PathBuf,
    every: Duration,
    running: Arc<Mutex<Config>>,
    listening: Listening,
) {
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
        reload_file(&path, &running, &listening, parsed).await;
    }
}

/// Applies a re-read of `path` (how `SIGHUP` and `--watch` both reload), logging what
/// happened.
async fn reload_file(
    path: &Path,
    running: &Mutex<Config>,
    listening: &Listening,
    parsed: Result<Config, ConfigError>,
) {
    let outcome = match parsed {
        Ok(new) => reload(running, listening, &Handle::current(), new).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(n) => log::warn!("reloaded {}: {n} clusters changed", path.display()),
        Err(e) => log::error!(
            "reload of {} refused, the running config is kept: {e}",
            path.display()
        ),
    }
}

/// What a reload applies: the clusters whose endpoints alone changed (their balancers get
/// the inserts and removes), the listeners whose stacks are rebuilt (a route or a used
/// cluster's settings changed), and the clusters that are gone.
#[derive(Debug, Default)]
struct Plan {
    endpoints: Vec<(String, Vec<Endpoint>)>,
    rebuild: Vec<String>,
    gone: Vec<String>,
    /// Listeners to start (their index in the new config), and to drain (by name): a
    /// listener whose address changed is both.
    start: Vec<usize>,
    stop: Vec<String>,
    /// How many clusters changed, were added or removed.
    clusters: usize,
}

/// Every cluster listener `l` of `config` sends to: its own, then its routes'.
fn used_by<'a>(config: &'a Config, l: &'a Listener) -> impl Iterator<Item = &'a str> + 'a {
    l.cluster.as_deref().into_iter().chain(
        config
            .routes
            .iter()
            .filter(move |r| r.listener == l.name)
            .map(|r| r.cluster.as_str()),
    )
}

/// What a reload from `old` to `new` (both validated) changes, or why it cannot be applied
/// live: `threads`, `[admin]`, and a listener's protocol or limits on the same address need
/// a restart; so does what shapes a ketama ring — its listed shards, sources, hash and hash
/// tag (open client connections keep the ring they started on, and the same key would go to
/// two shards).
fn plan(old: &Config, new: &Config) -> Result<Plan, ConfigError> {
    let restart = |field: String, what: &str| ConfigError {
        field,
        reason: format!("changed, and {what} needs a restart (a reload keeps the running config)"),
    };
    if old.threads != new.threads {
        return Err(restart("threads".into(), "the number of runtime threads"));
    }
    if old.admin != new.admin {
        return Err(restart("admin".into(), "the admin listener"));
    }
    let mut plan = Plan::default();
    for (i, n) in new.listeners.iter().enumerate() {
        let Some(o) = old.listeners.iter().find(|o| o.name == n.name) else {
            plan.start.push(i);
            continue;
        };
        if o.address != n.address {
            // A new socket: the old listener drains, the new one starts.
            plan.stop.push(o.name.clone());
            plan.start.push(i);
            continue;
        }
        let differs = [
            ("protocol", o.protocol != n.protocol),
            ("max_connections", o.max_connections != n.max_connections),
            ("idle_timeout", o.idle_timeout != n.idle_timeout),
            ("read_timeout", o.read_timeout != n.read_timeout),
            ("max_in_flight", o.max_in_flight != n.max_in_flight),
            ("buffer", o.buffer != n.buffer),
        ];
        if let Some((field, _)) = differs.iter().find(|(_, d)| *d) {
            return Err(restart(
                format!("listener[{i}].{field}"),
                "a listener's socket on the same address (or a new address)",
            ));
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|n| n.name == o.name) {
            plan.stop.push(o.name.clone());
        }
    }
    let mut changed: Vec<&str> = Vec::new();
    for (i, n) in new.clusters.iter().enumerate() {
        let Some(o) = old.cluster(&n.name) else {
            plan.clusters += 1; // added: built by the listeners that now use it
            continue;
        };
        if o == n {
            continue;
        }
        plan.clusters += 1;
        let mut same_endpoints = n.clone();
        same_endpoints.endpoints = o.endpoints.clone();
        if o.policy == Policy::Ketama || n.policy == Policy::Ketama {
            // What places keys on the ring: open connections would keep the old ring, and a
            // key would live on two shards.
            let ring = [
                ("policy", o.policy != n.policy),
                ("endpoints", o.endpoints != n.endpoints),
                ("endpoints_file", o.endpoints_file != n.endpoints_file),
                ("etcd", o.etcd != n.etcd),
                ("hash", o.hash != n.hash),
                ("hash_tag", o.hash_tag != n.hash_tag),
            ];
            if let Some((field, _)) = ring.iter().find(|(_, d)| *d) {
                return Err(ConfigError {
                    field: format!("cluster[{i}].{field}"),
                    reason: "places keys on a ketama ring, which changes only with a restart \
                             (open connections would keep the old ring, and a key would live \
                             on two shards); the shards a file or etcd lists change live"
                        .to_string(),
                });
            }
        }
        if same_endpoints == *o {
            plan.endpoints.push((n.name.clone(), n.endpoints.clone()));
        } else {
            changed.push(&n.name);
        }
    }
    for o in &old.clusters {
        if new.cluster(&o.name).is_none() {
            plan.clusters += 1;
            plan.gone.push(o.name.clone());
        }
    }
    for n in &new.listeners {
        let Some(o) = old.listeners.iter().find(|o| o.name == n.name) else {
            continue; // started from the new config
        };
        if o.address != n.address {
            continue;
        }
        let routes = |c: &Config| -> Vec<Route> {
            c.routes
                .iter()
                .filter(|r| r.listener == n.name)
                .cloned()
                .collect()
        };
        if o.cluster != n.cluster
            || routes(old) != routes(new)
            || used_by(new, n).any(|c| changed.contains(&c))
        {
            plan.rebuild.push(n.name.clone());
        }
    }
    Ok(plan)
}

/// How one listener swaps in new stacks on this thread, given the reloaded config.
type Rebuild = Rc<dyn Fn(&Config)>;

thread_local! {
    /// How each listener of this thread rebuilds its stacks from a reloaded config, by name.
    static REBUILD: RefCell<HashMap<String, Rebuild>> = RefCell::new(HashMap::new());
}

/// Registers how listener `name` swaps in new stacks on this thread: `live` (weak, so a
/// stopped listener's stacks are not kept) gets `build(config)` on each reload that
/// rebuilds it. The old value is dropped when its last request or connection ends.
fn on_rebuild<T: 'static>(
    name: &str,
    live: &Rc<RefCell<T>>,
    build: impl Fn(&Config) -> T + 'static,
) {
    let live = Rc::downgrade(live);
    let rebuild = move |config: &Config| {
        if let Some(live) = live.upgrade() {
            let next = build(config);
            drop(live.replace(next));
        }
    };
    REBUILD.with(|r| r.borrow_mut().insert(name.to_string(), Rc::new(rebuild)));
}

/// Applies `plan` to this runtime thread.
async fn apply(plan: &Plan, config: &Config) {
    for name in &plan.rebuild {
        if let Some(rebuild) = REBUILD.with(|r| r.borrow().get(name).cloned()) {
            rebuild(config);
        }
    }
    for (name, endpoints) in &plan.endpoints {
        crate::discovery::reload_endpoints(name, endpoints).await;
    }
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        for name in &plan.gone {
            m.clusters.remove(name);
        }
    });
}

async fn reload(
    running: &Mutex<Config>,
    listening: &Listening,
    runtime: &Handle,
    new: Config,
) -> Result<usize, ConfigError> {
    let plan = {
        let old = sheave_core::sync::lock(running);
        Arc::new(plan(&old, &new)?)
    };
    let config = Arc::new(new.clone());
    // New listeners first: one that cannot bind refuses the reload, and the ones this
    // reload bound before it are stopped again, so nothing has changed.
    let mut started: Vec<(String, SocketAddr, ServerHandle)> = Vec::new();
    for &i in &plan.start {
        let outcome = if sheave_core::sync::lock(&listening.0).draining {
            Err(io::Error::other("the proxy is draining"))
        } else {
            start_on_runtime(runtime, listening, &config, i).await
        };
        match outcome {
            Ok((addr, handle)) => started.push((new.listeners[i].name.clone(), addr, handle)),
            Err(e) => {
                started.iter().for_each(|(_, _, h)| h.shutdown());
                return Err(ConfigError {
                    field: format!("listener[{i}].address"),
                    reason: format!("{}: {e}", new.listeners[i].address),
                });
            }
        }
    }
    for thread in 0..runtime.threads() {
        let (plan, config) = (plan.clone(), config.clone());
        let _ = runtime
            .spawn_with(thread, move || async move { apply(&plan, &config).await })
            .await;
    }
    {
        let mut inner = sheave_core::sync::lock(&listening.0);
        // The listeners going away drain: they stop accepting and finish what they took.
        inner.running.retain(|(name, _, handle)| {
            let stop = plan.stop.contains(name);
            if stop {
                handle.shutdown();
            }
            !stop
        });
        if inner.draining {
            // A drain came meanwhile: the new listeners drain with the rest.
            started.iter().for_each(|(_, _, h)| h.shutdown());
        }
        inner.running.extend(started);
    }
    *sheave_core::sync::lock(running) = new;
    Ok(plan.clusters)
}

/// Starts listener `i` of `config` from a runtime thread; its serving is handed to the
/// runtime's main task, which waits for it before stopping.
async fn start_on_runtime(
    runtime: &Handle,
    listening: &Listening,
    config: &Arc<Config>,
    i: usize,
) -> io::Result<(SocketAddr, ServerHandle)> {
    let (bound_tx, bound_rx) = futures::channel::oneshot::channel();
    let config = config.clone();
    let serving = runtime.spawn_with(0, move || async move {
        match start_listener(&config, &config.listeners[i]) {
            Ok((addr, handle, serve)) => {
                let _ = bound_tx.send(Ok((addr, handle)));
                let _ = serve.await;
            }
            Err(e) => drop(bound_tx.send(Err(e))),
        }
    });
    let bound = bound_rx
        .await
        .map_err(|_| io::Error::other("the runtime is stopping"))??;
    let _ = sheave_core::sync::lock(&listening.0).added.send(serving);
    Ok(bound)
}

/// The cluster listener `name` of `config` sends to (a tcp or resp listener has one).
fn cluster_of<'a>(config: &'a Config, name: &str) -> &'a crate::config::Cluster {
    config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .and_then(|l| l.cluster.as_deref())
        .and_then(|c| config.cluster(c))
        .expect("validated: the listener and its cluster exist")
}

type Serving = sheave_core::JoinHandle<io::Result<()>>;

/// Binds listener `l` on this (runtime) thread, and spawns its serving on every thread.
fn start_listener(
    config: &Config,
    l: &crate::config::Listener,
) -> io::Result<(SocketAddr, ServerHandle, Serving)> {
    match l.protocol {
        Protocol::Resp => {
            let server = Server::bind(l.address)
                .codec(RespCodec::new())
                .threads(config.threads)
                .max_connections(l.max_connections)
                .max_in_flight(l.max_in_flight)
                .idle_timeout(l.idle_timeout)
                .read_timeout(l.read_timeout)
                .build()?;
            let (addr, handle) = (server.local_addr(), server.handle());
            let (name, config) = (l.name.clone(), config.clone());
            let serve = sheave_core::spawn(server.serve_with(move || {
                let listener = listener_metrics(&name);
                let build = {
                    let name = name.clone();
                    move |config: &Config| {
                        let cluster = cluster_of(config, &name);
                        let metrics = cluster_metrics(cluster);
                        let (stack, ring) = cluster_stack(cluster, metrics.clone());
                        (stack, ring, metrics)
                    }
                };
                // Each connection takes the stack current when it is accepted.
                let live = Rc::new(RefCell::new(build(&config)));
                on_rebuild(&name, &live, build);
                move |_peer: SocketAddr| {
                    let (stack, ring, metrics) = live.borrow().clone();
                    let conn = RespConnection::new(stack, ring, metrics, listener.clone());
                    async move { Ok::<_, Error>(conn) }
                }
            }));
            Ok((addr, handle, serve))
        }
        Protocol::Tcp => {
            let server = Server::bind(l.address)
                .threads(config.threads)
                .max_connections(l.max_connections)
                .build()?;
            let (addr, handle) = (server.local_addr(), server.handle());
            let (listener, config) = (l.clone(), config.clone());
            let serve = sheave_core::spawn(server.serve_driver(move || {
                let build = {
                    let name = listener.name.clone();
                    move |config: &Config| {
                        let cluster = cluster_of(config, &name);
                        let metrics = cluster_metrics(cluster);
                        (Rc::new(cluster_dialer(cluster, metrics.clone())), metrics)
                    }
                };
                let live = Rc::new(RefCell::new(build(&config)));
                on_rebuild(&listener.name, &live, build);
                TcpDriver::new(live, &listener, listener_metrics(&listener.name))
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
            let (config, name) = (config.clone(), l.name.clone());
            let serve = sheave_core::spawn(server.serve_with(move || {
                let metrics = listener_metrics(&name);
                let build = {
                    let name = name.clone();
                    move |config: &Config| {
                        let listener = config
                            .listeners
                            .iter()
                            .find(|l| l.name == name)
                            .expect("validated: a reload keeps every listener");
                        Rc::new(crate::http::Router::new(
                            config,
                            listener,
                            metrics.clone(),
                            |cluster| {
                                let metrics = cluster_metrics(cluster);
                                (
                                    crate::http::cluster_stack(cluster, metrics.clone()),
                                    metrics,
                                )
                            },
                        ))
                    }
                };
                // Each request takes the router current when it starts (LiveRouter).
                let live = Rc::new(RefCell::new(build(&config)));
                on_rebuild(&name, &live, build);
                move |peer: SocketAddr| {
                    let conn = crate::http::HttpConnection::new(live.clone(), peer);
                    async move { Ok::<_, Error>(conn) }
                }
            }));
            Ok((addr, handle, serve))
        }
    }
}
