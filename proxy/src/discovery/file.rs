//! File discovery: a cluster's endpoints listed in a file that operators (or a deploy tool)
//! rewrite, re-read when it changes — no restart, no config reload.
//!
//! The file has one endpoint per line in the [syntax of the module](super):
//! `ADDRESS [weight=N] [name=NAME]`, with `#` comments and blank lines. Each endpoint's name
//! (its key for the balancer) must be unique in the file.
//!
//! [`FileDiscovery`] reads the file when opened (a file that cannot be read or parsed is
//! refused then, with its line), and again every `interval` on sheave's timer — no inotify.
//! Reading a small file is a few microseconds, so it is read on the polling thread; it is
//! re-parsed only when its bytes differ from the last read (so a rewrite within the file
//! system's mtime granularity is not missed). A file that later fails to read or parse keeps
//! the last good set: the failure is logged once (with the line number) and kept in
//! [`FileDiscovery::last_error`] until a good file replaces it.
//!
//! ```
//! use futures::StreamExt;
//! use sheave_middleware::discover::Change;
//! use sheave_proxy::discovery::{Endpoint, FileDiscovery};
//! use std::time::Duration;
//!
//! let path = std::env::temp_dir().join(format!("sheave-doc-endpoints-{}", std::process::id()));
//! std::fs::write(&path, "127.0.0.1:7001\n127.0.0.1:7002 weight=2 name=b # the big one\n").unwrap();
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let mut changes = FileDiscovery::open(&path, Duration::from_secs(1)).unwrap();
//!     let at = |port: u16, weight| Endpoint { address: ([127, 0, 0, 1], port).into(), weight };
//!     assert_eq!(changes.next().await, Some(Change::Insert("127.0.0.1:7001".into(), at(7001, 1))));
//!     assert_eq!(changes.next().await, Some(Change::Insert("b".into(), at(7002, 2))));
//!     // Rewritten: the next poll (a second later on the paused clock) sees the difference.
//!     std::fs::write(&path, "127.0.0.1:7002 weight=2 name=b\n").unwrap();
//!     assert_eq!(changes.next().await, Some(Change::Remove("127.0.0.1:7001".into())));
//! });
//! std::fs::remove_file(&path).unwrap();
//! ```

use super::{Endpoint, Endpoints, diff, parse_endpoint};
use futures::Stream;
use sheave_core::time::{self, Interval};
use sheave_middleware::discover::Change;
use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The largest endpoints file read by default: 1 MiB (some ten thousand endpoints).
pub const DEFAULT_MAX_SIZE: u64 = 1024 * 1024;

/// The shortest poll interval: 10 ms (a zero would spin).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A discovery stream of the endpoints in a file; see the [module](self).
pub struct FileDiscovery {
    path: PathBuf,
    every: Duration,
    max_size: u64,
    /// Created on the first poll, on the polling thread's timer wheel.
    interval: Option<Interval>,
    /// The last good set (its changes may still be queued).
    known: Endpoints,
    /// Changes not yet taken from the stream.
    queued: VecDeque<Change<String, Endpoint>>,
    /// The bytes of the last successful read, good or bad: unchanged bytes are not re-parsed.
    last_read: Option<Vec<u8>>,
    last_error: Option<FileError>,
}

impl fmt::Debug for FileDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDiscovery")
            .field("path", &self.path)
            .field("every", &self.every)
            .field("known", &self.known.len())
            .field("queued", &self.queued.len())
            .field("last_error", &self.last_error)
            .finish()
    }
}

/// Why an endpoints file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// The line at fault (1-based), when one is.
    pub line: Option<usize>,
    /// Why.
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}: line {line}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

impl std::error::Error for FileError {}

impl FileDiscovery {
    /// Reads the endpoints in `path` now (refusing a file that cannot be read or parsed, or
    /// that is larger than [`DEFAULT_MAX_SIZE`]), and again every `interval` (at least
    /// [`MIN_INTERVAL`]) once polled. The first items of the stream insert what the file
    /// lists now.
    ///
    /// It may be opened on any thread (to check a config at start, say); it must be polled on
    /// a sheave runtime thread.
    pub fn open(path: impl AsRef<Path>, interval: Duration) -> Result<FileDiscovery, FileError> {
        FileDiscovery::open_with_limit(path, interval, DEFAULT_MAX_SIZE)
    }

    /// As [`open`](FileDiscovery::open), reading at most `max_size` bytes: a larger file is
    /// refused (and later ignored, keeping the last good set).
    pub fn open_with_limit(
        path: impl AsRef<Path>,
        interval: Duration,
        max_size: u64,
    ) -> Result<FileDiscovery, FileError> {
        let path = path.as_ref().to_path_buf();
        let bytes = read(&path, max_size)?;
        let next = parse(&path, &bytes)?;
        let mut discovery = FileDiscovery {
            path,
            every: interval.max(MIN_INTERVAL),
            max_size,
            interval: None,
            known: Endpoints::new(),
            queued: VecDeque::new(),
            last_read: Some(bytes),
            last_error: None,
        };
        diff(&mut discovery.known, next, &mut discovery.queued);
        Ok(discovery)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last good set of endpoints (some of its changes may not have been taken from the
    /// stream yet).
    pub fn endpoints(&self) -> &Endpoints {
        &self.known
    }

    /// Why the latest read was not used, until a good file replaces it.
    pub fn last_error(&self) -> Option<&FileError> {
        self.last_error.as_ref()
    }

    /// Reads the file again; queues the difference if it is good.
    fn reload(&mut self) {
        let outcome = read(&self.path, self.max_size).and_then(|bytes| {
            if self.last_read.as_ref() == Some(&bytes) {
                return Ok(None); // unchanged: already used, or already refused
            }
            let parsed = parse(&self.path, &bytes);
            self.last_read = Some(bytes);
            parsed.map(Some)
        });
        match outcome {
            Ok(Some(next)) => {
                if let Some(old) = self.last_error.take() {
                    log::info!(
                        "file discovery: {} is good again (was: {old})",
                        self.path.display()
                    );
                }
                diff(&mut self.known, next, &mut self.queued);
            }
            Ok(None) => {}
            Err(error) => {
                if error.line.is_none() {
                    self.last_read = None; // unreadable: parse whatever is there next time
                }
                if self.last_error.as_ref() != Some(&error) {
                    log::warn!("file discovery: keeping the last good endpoints: {error}");
                    self.last_error = Some(error);
                }
            }
        }
    }
}

impl Stream for FileDiscovery {
    type Item = Change<String, Endpoint>;

    /// Never ends: the file is watched for as long as the stream lives.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.queued.pop_front() {
                return Poll::Ready(Some(change));
            }
            let every = this.every;
            let interval = this.interval.get_or_insert_with(|| time::interval(every));
            match interval.poll_tick(cx) {
                Poll::Ready(_) => this.reload(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn read(path: &Path, max_size: u64) -> Result<Vec<u8>, FileError> {
    let fail = |reason: String| FileError {
        path: path.to_path_buf(),
        line: None,
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(max_size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > max_size {
        return Err(fail(format!("larger than {max_size} bytes")));
    }
    Ok(bytes)
}

/// The endpoints of a whole file; the error names the first bad line.
fn parse(path: &Path, bytes: &[u8]) -> Result<Endpoints, FileError> {
    let fail = |line: usize, reason: String| FileError {
        path: path.to_path_buf(),
        line: Some(line),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        fail(line, "not UTF-8".into())
    })?;
    let mut endpoints = Endpoints::new();
    let mut lines = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((name, endpoint)) = parse_endpoint(line).map_err(|why| fail(n, why))? else {
            continue;
        };
        if let Some(first) = lines.insert(name.clone(), n) {
            return Err(fail(
                n,
                format!("{name:?} is listed twice (first on line {first})"),
            ));
        }
        endpoints.insert(name, endpoint);
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use sheave_core::Runtime;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file of its own for each test, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "sheave-file-discovery-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let file = TempFile(std::env::temp_dir().join(name));
            file.write(text);
            file
        }

        fn write(&self, text: &str) {
            std::fs::write(&self.0, text).unwrap();
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn at(port: u16, weight: u32) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }

    fn insert(name: &str, port: u16, weight: u32) -> Change<String, Endpoint> {
        Change::Insert(name.into(), at(port, weight))
    }

    #[test]
    fn a_rewritten_file_yields_its_difference_and_nothing_for_the_same_bytes() {
        let file = TempFile::new("# the cache\n127.0.0.1:7001\n\n127.0.0.1:7002 weight=3\n");
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let every = Duration::from_secs(1);
            let mut d = FileDiscovery::open(&file.0, every).unwrap();
            assert_eq!(d.next().await, Some(insert("127.0.0.1:7001", 7001, 1)));
            assert_eq!(d.next().await, Some(insert("127.0.0.1:7002", 7002, 3)));

            // Add one, change one's weight, drop one.
            file.write("127.0.0.1:7002 weight=1\n127.0.0.1:7003 name=c\n");
            let start = time::now();
            assert_eq!(
                d.next().await,
                Some(Change::Remove("127.0.0.1:7001".into()))
            );
            assert!(time::now() - start <= every, "seen by the next poll");
            assert_eq!(d.next().await, Some(insert("127.0.0.1:7002", 7002, 1)));
            assert_eq!(d.next().await, Some(insert("c", 7003, 1)));

            // The same endpoints in other words: no change for many polls.
            file.write("127.0.0.1:7003   name=c # moved up\n127.0.0.1:7002\n");
            let quiet = time::timeout(every * 5, d.next()).await;
            assert!(quiet.is_err(), "nothing changed, yet {quiet:?}");
            assert_eq!(d.endpoints().len(), 2);
        });
    }

    #[test]
    fn a_bad_file_keeps_the_last_good_set_and_names_its_line() {
        let file = TempFile::new("127.0.0.1:7001\n127.0.0.1:7002\n");
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let every = Duration::from_millis(100);
            let mut d = FileDiscovery::open(&file.0, every).unwrap();
            assert_eq!(d.next().await, Some(insert("127.0.0.1:7001", 7001, 1)));
            assert_eq!(d.next().await, Some(insert("127.0.0.1:7002", 7002, 1)));

            // Half-written: the second line is cut short; nothing is removed.
            file.write("127.0.0.1:7001\n127.0.0.\n127.0.0.1:7004\n");
            let quiet = time::timeout(every * 5, d.next()).await;
            assert!(quiet.is_err(), "a bad file changed the set: {quiet:?}");
            let error = d.last_error().expect("the failure is kept").clone();
            assert_eq!(error.line, Some(2));
            assert_eq!(error.reason, "address: \"127.0.0.\" is not an ip:port");
            assert!(
                error
                    .to_string()
                    .ends_with(": line 2: address: \"127.0.0.\" is not an ip:port")
            );

            // A file that goes missing is no better, and no worse.
            std::fs::remove_file(&file.0).unwrap();
            let quiet = time::timeout(every * 5, d.next()).await;
            assert!(quiet.is_err(), "a missing file changed the set: {quiet:?}");
            assert_eq!(d.last_error().unwrap().line, None);

            // Fixed: the difference from the last *good* set.
            file.write("127.0.0.1:7001\n127.0.0.1:7004\n");
            assert_eq!(
                d.next().await,
                Some(Change::Remove("127.0.0.1:7002".into()))
            );
            assert_eq!(d.next().await, Some(insert("127.0.0.1:7004", 7004, 1)));
            assert!(d.last_error().is_none());
        });
    }

    #[test]
    fn a_bad_file_is_refused_at_open_with_its_line() {
        let file = TempFile::new("127.0.0.1:7001 name=a\n# x\n127.0.0.1:7002 name=a\n");
        let error = FileDiscovery::open(&file.0, Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.line, Some(3));
        assert_eq!(error.reason, "\"a\" is listed twice (first on line 1)");
        file.write(&"127.0.0.1:7001\n".repeat(100));
        let error =
            FileDiscovery::open_with_limit(&file.0, Duration::from_secs(1), 64).unwrap_err();
        assert_eq!(
            (error.line, error.reason.as_str()),
            (None, "larger than 64 bytes")
        );
        let error =
            FileDiscovery::open(file.0.join("nowhere"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.line, None);
    }
}
