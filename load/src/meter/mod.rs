//! The overhead meter: what a `Service` stack costs per call, measured beside its bare inner
//! service — and, if you like, beside a peer such as a tower stack — in one process, the
//! sides interleaved, with the ratios printed.
//!
//! For each side it reports:
//! - **ns per call**: the median (and spread) over interleaved repetitions of N calls, with
//!   the cost of building the side (a runtime, a stack) measured alone and subtracted;
//! - **heap allocations and bytes per call**, when the binary installs the counting
//!   allocator [`alloc::CountingAlloc`](type@alloc::CountingAlloc) (otherwise `-`);
//! - **instructions per call**, when asked for with [`Meter::instructions`] and valgrind is
//!   installed: the binary runs itself again under callgrind at N and 2N calls of one side
//!   (child mode, below), and the difference over N cancels start-up.
//!
//! # What does my layer cost?
//!
//! ```standalone_crate
//! use sheave_load::meter::{BARE, Meter, WITH_LAYER, alloc::CountingAlloc};
//! use sheave_service::{Service, TryReady, service_fn};
//! use std::cell::Cell;
//! use std::convert::Infallible;
//!
//! #[global_allocator]
//! static ALLOC: CountingAlloc = CountingAlloc;
//!
//! /// The layer under test: counts the calls it lets through.
//! struct Counted<S> {
//!     inner: S,
//!     calls: Cell<u64>,
//! }
//!
//! impl<S: Service<u64>> Service<u64> for Counted<S> {
//!     type Response = S::Response;
//!     type Error = S::Error;
//!     type Permit = S::Permit;
//!
//!     async fn ready(&self) -> Result<S::Permit, S::Error> {
//!         self.inner.ready().await
//!     }
//!
//!     fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
//!         self.inner.try_ready()
//!     }
//!
//!     async fn call(&self, permit: S::Permit, req: u64) -> Result<S::Response, S::Error> {
//!         self.calls.set(self.calls.get() + 1);
//!         self.inner.call(permit, req).await
//!     }
//! }
//!
//! fn bare() -> impl Service<u64, Response = u64, Error = Infallible> {
//!     service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) })
//! }
//!
//! let with_layer = Counted { inner: bare(), calls: Cell::new(0) };
//! let cost = Meter::new("call counter")
//!     .calls(10_000)
//!     .compare(&bare(), &with_layer, |i| i)?;
//! cost.print();
//!
//! // The layer allocates nothing, and it saw every call (warm-up and set-up runs included).
//! let figures = cost.figures("call counter", WITH_LAYER).unwrap();
//! assert_eq!(figures.allocs, Some(0.0));
//! assert!(with_layer.calls.get() >= 5 * 10_000);
//! assert!(cost.ns_ratio("call counter", WITH_LAYER, BARE).unwrap() > 0.0);
//! # Ok::<_, sheave_load::meter::MeterError>(())
//! ```
//!
//! `print` writes a Markdown table (`with layer ns | bare ns | ns with layer ÷ bare | …`) and
//! a line saying how it was measured.
//!
//! # Many cases, any sides
//!
//! [`Meter::measure`] takes a function `run(case, side, n)` that builds the case's stack on
//! that side and makes `n` calls; it is what sheave's own benches use (`benches/benches/
//! service.rs` measures sheave and tower stacks case by case). Build inside `run`, so that
//! set-up is measured with `n = 0` and subtracted, and so that a child process (below) can
//! rebuild it.
//!
//! ```
//! use sheave_load::meter::Meter;
//! use std::hint::black_box;
//!
//! let sum = |n: u64| (0..n).map(black_box).sum::<u64>();
//! let m = Meter::new("sums").calls(1_000).repetitions(3).measure(
//!     &["one pass", "two passes"],
//!     &["iterator"],
//!     |case, _side, n| if case == 0 { sum(n) } else { sum(n) + sum(n) },
//! );
//! assert_eq!(m.cases(), ["one pass", "two passes"]);
//! assert!(m.figures("two passes", "iterator").unwrap().ns.median >= 0.0);
//! ```
//!
//! # Child mode (instructions)
//!
//! With [`Meter::instructions`], measuring runs this same executable under
//! `valgrind --tool=callgrind`, with its own arguments (so a test harness's filter still
//! picks the same test) and `SHEAVE_METER_CHILD` set to the title, case, side and call count
//! wanted. In that child, the meter whose title matches makes just those calls and exits the
//! process; meters with other titles measure nothing. So give each meter of a binary its own
//! title, and do nothing slow or variable before the last one. Under a test harness, keep a
//! test that counts instructions alone in its binary (an integration-test file of its own):
//! the child runs whatever the harness runs.

pub mod alloc;
pub mod callgrind;
pub mod cpu;
pub mod table;

use sheave_service::{Service, ServiceExt};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt::{self, Debug};
use std::hint::black_box;
use std::time::Instant;

/// The side [`Meter::compare`] names the stack with the layer (its first side: the ratios
/// are of it).
///
/// ```
/// use sheave_load::meter::{BARE, Meter, WITH_LAYER};
/// use sheave_service::service_fn;
/// use std::convert::Infallible;
///
/// let svc = service_fn(|x: u64| async move { Ok::<_, Infallible>(x) });
/// let m = Meter::new("names").calls(100).repetitions(1).compare(&svc, &svc, |i| i)?;
/// assert_eq!(m.sides(), [WITH_LAYER, BARE]);
/// # Ok::<_, sheave_load::meter::MeterError>(())
/// ```
pub const WITH_LAYER: &str = "with layer";

/// The side [`Meter::compare`] names the bare inner service (its second side).
///
/// ```
/// use sheave_load::meter::{BARE, Meter};
/// use sheave_service::service_fn;
/// use std::convert::Infallible;
///
/// let svc = service_fn(|x: u64| async move { Ok::<_, Infallible>(x) });
/// let m = Meter::new("bare").calls(100).repetitions(1).compare(&svc, &svc, |i| i)?;
/// assert!(m.figures("bare", BARE).is_some());
/// # Ok::<_, sheave_load::meter::MeterError>(())
/// ```
pub const BARE: &str = "bare";

/// The environment variable that puts a binary in child mode (see the module doc): the
/// meter sets it for the processes it runs under callgrind, never in the process you start.
///
/// ```
/// assert!(std::env::var_os(sheave_load::meter::CHILD_ENV).is_none());
/// ```
pub const CHILD_ENV: &str = "SHEAVE_METER_CHILD";

/// A side's run: `n` calls, returning a checksum (kept from the optimizer).
type PeerRun<'p> = Box<dyn FnMut(u64) -> u64 + 'p>;

/// A measurement to make: a title, how many calls, how many repetitions, and whether to
/// count instructions. Built with [`Meter::new`] and its setters; run with
/// [`compare`](Meter::compare) (services) or [`measure`](Meter::measure) (any code).
///
/// ```
/// use sheave_load::meter::Meter;
///
/// let m = Meter::new("noop").calls(500).repetitions(3).measure(&["noop"], &["a", "b"], |_, _, n| n);
/// assert_eq!(m.sides(), ["a", "b"]);
/// ```
pub struct Meter<'p> {
    title: String,
    calls: u64,
    repetitions: usize,
    instructions: Option<u64>,
    case_header: String,
    peer: Option<(String, PeerRun<'p>)>,
}

impl Debug for Meter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meter")
            .field("title", &self.title)
            .field("calls", &self.calls)
            .field("repetitions", &self.repetitions)
            .field("instructions", &self.instructions)
            .field("peer", &self.peer.as_ref().map(|(name, _)| name))
            .finish()
    }
}

impl<'p> Meter<'p> {
    /// A meter titled `title` (the first cell of [`compare`](Meter::compare)'s table, and how
    /// a child process finds it): 100,000 calls, 5 repetitions, no instruction counts.
    ///
    /// ```
    /// let meter = sheave_load::meter::Meter::new("my layer");
    /// assert!(format!("{meter:?}").contains("calls: 100000"));
    /// ```
    pub fn new(title: impl Into<String>) -> Meter<'p> {
        Meter {
            title: title.into(),
            calls: 100_000,
            repetitions: 5,
            instructions: None,
            case_header: "stack".into(),
            peer: None,
        }
    }

    /// Calls per repetition (N; at least 1). A warm-up of N / 10 calls per side comes first.
    ///
    /// ```
    /// let meter = sheave_load::meter::Meter::new("quick").calls(1_000);
    /// assert!(format!("{meter:?}").contains("calls: 1000"));
    /// ```
    pub fn calls(mut self, n: u64) -> Self {
        self.calls = n.max(1);
        self
    }

    /// Repetitions (at least 1): the sides take turns, in alternating order, so drift in the
    /// machine's speed lands on every side alike.
    ///
    /// ```
    /// let meter = sheave_load::meter::Meter::new("steady").repetitions(9);
    /// assert!(format!("{meter:?}").contains("repetitions: 9"));
    /// ```
    pub fn repetitions(mut self, r: usize) -> Self {
        self.repetitions = r.max(1);
        self
    }

    /// Also count instructions per call under callgrind, from child runs of `calls` and
    /// 2 × `calls` calls (see the module doc). Ignored (the column reads `-`) without
    /// valgrind.
    ///
    /// ```
    /// let meter = sheave_load::meter::Meter::new("exact").instructions(50_000);
    /// assert!(format!("{meter:?}").contains("instructions: Some(50000)"));
    /// ```
    pub fn instructions(mut self, calls: u64) -> Self {
        self.instructions = Some(calls.max(1));
        self
    }

    /// The header of the table's first column, which names the cases (default `stack`).
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(10).repetitions(1).case_header("case")
    ///     .measure(&["x"], &["a"], |_, _, n| n);
    /// assert!(m.table().starts_with("| case |"));
    /// ```
    pub fn case_header(mut self, header: impl Into<String>) -> Self {
        self.case_header = header.into();
        self
    }

    /// Adds a peer to [`compare`](Meter::compare): a third side, `run(n)` making `n` calls
    /// of another implementation (a tower stack, say) and returning a checksum.
    ///
    /// ```
    /// use sheave_load::meter::Meter;
    /// use sheave_service::service_fn;
    /// use std::convert::Infallible;
    ///
    /// let svc = service_fn(|x: u64| async move { Ok::<_, Infallible>(x) });
    /// let plain_fn = |n: u64| (0..n).map(std::hint::black_box).sum::<u64>();
    /// let m = Meter::new("vs a loop").calls(1_000).repetitions(3)
    ///     .peer("a plain loop", plain_fn)
    ///     .compare(&svc, &svc, |i| i)?;
    /// assert_eq!(m.sides(), ["with layer", "bare", "a plain loop"]);
    /// # Ok::<_, sheave_load::meter::MeterError>(())
    /// ```
    pub fn peer<R>(mut self, name: impl Into<String>, mut run: impl FnMut(u64) -> R + 'p) -> Self {
        self.peer = Some((
            name.into(),
            Box::new(move |n| {
                black_box(run(n));
                n
            }),
        ));
        self
    }

    /// Measures `with_layer` against `bare` (and the [`peer`](Meter::peer), if any): each
    /// repetition makes N calls `oneshot(request(i))` through each, awaited inside one
    /// sheave [`Runtime`](sheave_core::Runtime) (so timers and `spawn` work, and a call that
    /// answers at once costs no executor turn). The sides are [`WITH_LAYER`], [`BARE`] and
    /// the peer's name; the one case is the meter's title.
    ///
    /// Fails with the first error a call returns (a stack that fails is not measured), or if
    /// the runtime cannot start.
    ///
    /// ```
    /// use sheave_load::meter::{BARE, Meter, WITH_LAYER};
    /// use sheave_service::{ServiceExt, service_fn};
    /// use std::convert::Infallible;
    ///
    /// let bare = service_fn(|x: u64| async move { Ok::<_, Infallible>(x) });
    /// let doubled = service_fn(|x: u64| async move { Ok::<_, Infallible>(x) })
    ///     .map_request(|x: u64| x * 2);
    /// let m = Meter::new("map_request").calls(2_000).compare(&bare, &doubled, |i| i)?;
    /// assert!(m.ns_ratio("map_request", WITH_LAYER, BARE).is_some());
    /// println!("{m}");
    /// # Ok::<_, sheave_load::meter::MeterError>(())
    /// ```
    pub fn compare<Req, A, B>(
        mut self,
        bare: &A,
        with_layer: &B,
        request: impl Fn(u64) -> Req,
    ) -> Result<Measurement, MeterError>
    where
        A: Service<Req>,
        B: Service<Req>,
        A::Error: Debug,
        B::Error: Debug,
    {
        let rt = sheave_core::Runtime::new().map_err(|e| MeterError {
            side: "runtime".into(),
            message: format!("the runtime did not start: {e}"),
        })?;
        let mut peer = self.peer.take();
        let peer_name = peer.as_ref().map(|(name, _)| name.clone());
        let mut sides = vec![WITH_LAYER, BARE];
        sides.extend(peer_name.as_deref());
        let failure = RefCell::new(None);
        let title = self.title.clone();
        let m = self.measure(&[&title], &sides, |_, side, n| match side {
            0 => drive(&rt, with_layer, &request, n, WITH_LAYER, &failure),
            1 => drive(&rt, bare, &request, n, BARE, &failure),
            _ => peer.as_mut().map_or(0, |(_, run)| run(n)),
        });
        match failure.into_inner() {
            Some(e) => Err(e),
            None => Ok(m),
        }
    }

    /// Measures every case on every side: `run(case, side, n)` builds that case's stack on
    /// that side and makes `n` calls (return a checksum, or anything: it is kept from the
    /// optimizer). Per case: a warm-up run per side, then the repetitions, the sides taking
    /// turns; each repetition also runs with `n = 0` and subtracts that (set-up) from the
    /// time and the allocations. Then the instruction counts, if asked for.
    ///
    /// ```
    /// use sheave_load::meter::Meter;
    ///
    /// let m = Meter::new("vec").calls(1_000).repetitions(3).measure(
    ///     &["push"],
    ///     &["reserved", "growing"],
    ///     |_, side, n| {
    ///         let mut v = if side == 0 { Vec::with_capacity(n as usize) } else { Vec::new() };
    ///         for i in 0..n {
    ///             v.push(std::hint::black_box(i));
    ///         }
    ///         v.len()
    ///     },
    /// );
    /// let reserved = m.figures("push", "reserved").unwrap();
    /// assert!(reserved.ns.min <= reserved.ns.median && reserved.ns.median <= reserved.ns.max);
    /// ```
    pub fn measure<R>(
        &self,
        cases: &[&str],
        sides: &[&str],
        mut run: impl FnMut(usize, usize, u64) -> R,
    ) -> Measurement {
        let mut m = Measurement {
            title: self.title.clone(),
            case_header: self.case_header.clone(),
            cases: cases.iter().map(|c| c.to_string()).collect(),
            sides: sides.iter().map(|s| s.to_string()).collect(),
            figures: Vec::new(),
            calls: self.calls,
            repetitions: self.repetitions,
            instruction_calls: None,
            counted_allocs: false,
            child: false,
        };
        if let Some(child) = Child::from_env() {
            if child.title == self.title && child.case < cases.len() && child.side < sides.len() {
                black_box(run(child.case, child.side, child.calls));
                std::process::exit(0);
            }
            m.child = true;
            return m;
        }
        m.counted_allocs = alloc::installed();
        let instruction_calls = self.instructions.filter(|_| callgrind::available());
        m.instruction_calls = instruction_calls;
        for case in 0..cases.len() {
            for side in 0..sides.len() {
                black_box(run(case, side, self.calls / 10));
            }
            let mut ns: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
            let mut per_call: Vec<Option<(f64, f64)>> = vec![None; sides.len()];
            for rep in 0..self.repetitions {
                let order: Vec<usize> = if rep % 2 == 0 {
                    (0..sides.len()).collect()
                } else {
                    (0..sides.len()).rev().collect()
                };
                for side in order {
                    let a0 = alloc::counts();
                    let t = Instant::now();
                    black_box(run(case, side, 0));
                    let setup = t.elapsed();
                    let a1 = alloc::counts();
                    let t = Instant::now();
                    black_box(run(case, side, self.calls));
                    let total = t.elapsed();
                    let a2 = alloc::counts();
                    let n = self.calls as f64;
                    ns[side].push(total.saturating_sub(setup).as_nanos() as f64 / n);
                    let (set_up, calls) = (a1 - a0, a2 - a1);
                    let allocs = calls.allocations.saturating_sub(set_up.allocations) as f64 / n;
                    let bytes = calls.bytes.saturating_sub(set_up.bytes) as f64 / n;
                    // The fewest seen: anything else is noise from outside the calls.
                    per_call[side] = Some(match per_call[side] {
                        Some((a, b)) => (a.min(allocs), b.min(bytes)),
                        None => (allocs, bytes),
                    });
                }
            }
            let row = (0..sides.len())
                .map(|side| {
                    let (allocs, bytes) = per_call[side].unwrap_or_default();
                    let counted = m.counted_allocs;
                    Figures {
                        ns: Spread::of(&mut ns[side]),
                        allocs: counted.then_some(allocs),
                        bytes: counted.then_some(bytes),
                        instructions: instruction_calls
                            .and_then(|n| self.child_instructions(case, side, n)),
                    }
                })
                .collect();
            m.figures.push(row);
        }
        m
    }

    /// Instructions per call of one case and side, from two child runs under callgrind.
    fn child_instructions(&self, case: usize, side: usize, calls: u64) -> Option<f64> {
        let exe = std::env::current_exe().ok()?;
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        callgrind::per_call(calls, |n| {
            let child = Child {
                title: self.title.clone(),
                case,
                side,
                calls: n,
            };
            callgrind::instructions(&exe, &args, &[(CHILD_ENV, &child.to_env())])
        })
    }
}

/// `n` calls through `svc` inside `rt`; the first error is kept in `failure` and ends the run.
fn drive<Req, S>(
    rt: &sheave_core::Runtime,
    svc: &S,
    request: &impl Fn(u64) -> Req,
    n: u64,
    side: &str,
    failure: &RefCell<Option<MeterError>>,
) -> u64
where
    S: Service<Req>,
    S::Error: Debug,
{
    if failure.borrow().is_some() {
        return 0;
    }
    rt.block_on(async {
        for i in 0..n {
            match svc.oneshot(request(black_box(i))).await {
                Ok(response) => drop(black_box(response)),
                Err(e) => {
                    *failure.borrow_mut() = Some(MeterError {
                        side: side.into(),
                        message: format!("call {i} failed: {e:?}"),
                    });
                    return i;
                }
            }
        }
        n
    })
}

/// What child mode was asked for, from [`CHILD_ENV`].
struct Child {
    title: String,
    case: usize,
    side: usize,
    calls: u64,
}

impl Child {
    const SEP: char = '\u{1f}';

    fn to_env(&self) -> String {
        let s = Self::SEP;
        format!(
            "{}{s}{}{s}{}{s}{}",
            self.title, self.case, self.side, self.calls
        )
    }

    fn from_env() -> Option<Child> {
        let v = std::env::var(CHILD_ENV).ok()?;
        let mut parts = v.rsplitn(4, Self::SEP);
        let calls = parts.next()?.parse().ok()?;
        let side = parts.next()?.parse().ok()?;
        let case = parts.next()?.parse().ok()?;
        let title = parts.next()?.to_string();
        Some(Child {
            title,
            case,
            side,
            calls,
        })
    }
}

/// A call through a measured stack failed, or the meter could not start.
///
/// ```
/// use sheave_load::meter::Meter;
/// use sheave_service::service_fn;
///
/// let failing = service_fn(|_: u64| async { Err::<u64, _>("no") });
/// let err = Meter::new("fails").calls(10).compare(&failing, &failing, |i| i).unwrap_err();
/// assert_eq!(err.side, "with layer");
/// assert!(err.to_string().contains("call 0 failed"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterError {
    /// The side that failed ([`WITH_LAYER`], [`BARE`], or `runtime`).
    pub side: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for MeterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.side, self.message)
    }
}

impl std::error::Error for MeterError {}

/// The nanoseconds per call of the repetitions: median, fastest, slowest.
///
/// ```
/// use sheave_load::meter::Spread;
///
/// let s = Spread { median: 10.0, min: 9.0, max: 12.0 };
/// assert_eq!(s.relative(), 0.3);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    /// The median repetition.
    pub median: f64,
    /// The fastest repetition.
    pub min: f64,
    /// The slowest repetition.
    pub max: f64,
}

impl Spread {
    fn of(v: &mut [f64]) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// (max − min) ÷ median: 0.05 means the repetitions were within 5% of each other.
    ///
    /// ```
    /// let s = sheave_load::meter::Spread { median: 0.0, min: 0.0, max: 0.0 };
    /// assert_eq!(s.relative(), 0.0);
    /// ```
    pub fn relative(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }
}

/// One side of one case, per call.
///
/// ```
/// use sheave_load::meter::{Figures, Spread};
///
/// let f = Figures { ns: Spread::default(), allocs: None, bytes: None, instructions: Some(42.0) };
/// assert_eq!(f.instructions, Some(42.0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Nanoseconds per call over the repetitions.
    pub ns: Spread,
    /// Heap allocations per call (the fewest over the repetitions), or `None` when
    /// [`alloc::CountingAlloc`](type@alloc::CountingAlloc) is not installed.
    pub allocs: Option<f64>,
    /// Heap bytes asked for per call, likewise.
    pub bytes: Option<f64>,
    /// Instructions per call from callgrind, or `None` when not asked for, or without
    /// valgrind.
    pub instructions: Option<f64>,
}

/// What [`Meter::measure`] or [`Meter::compare`] found: figures per case and side, and the
/// tables. `Display` is [`table`](Measurement::table).
///
/// ```
/// let m = sheave_load::meter::Meter::new("t").calls(100).repetitions(1)
///     .measure(&["c"], &["a", "b"], |_, _, n| n);
/// assert_eq!(m.to_string(), m.table());
/// assert!(m.figures("c", "b").is_some());
/// assert!(m.figures("c", "z").is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Measurement {
    title: String,
    case_header: String,
    cases: Vec<String>,
    sides: Vec<String>,
    /// `figures[case][side]`.
    figures: Vec<Vec<Figures>>,
    calls: u64,
    repetitions: usize,
    instruction_calls: Option<u64>,
    counted_allocs: bool,
    child: bool,
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

impl Measurement {
    /// The meter's title.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(1).repetitions(1).measure(&["c"], &["a"], |_, _, n| n);
    /// assert_eq!(m.title(), "t");
    /// ```
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The cases, in order.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(1).repetitions(1).measure(&["c", "d"], &["a"], |_, _, n| n);
    /// assert_eq!(m.cases(), ["c", "d"]);
    /// ```
    pub fn cases(&self) -> &[String] {
        &self.cases
    }

    /// The sides, in order (the first is the one the ratios are of).
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(1).repetitions(1).measure(&["c"], &["a", "b"], |_, _, n| n);
    /// assert_eq!(m.sides(), ["a", "b"]);
    /// ```
    pub fn sides(&self) -> &[String] {
        &self.sides
    }

    /// True in a child process that was asked for another meter's calls: nothing was
    /// measured, and the `print` methods print nothing.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(1).repetitions(1).measure(&["c"], &["a"], |_, _, n| n);
    /// assert!(!m.is_child());
    /// ```
    pub fn is_child(&self) -> bool {
        self.child
    }

    /// The figures of `side` in `case`, by name.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(10).repetitions(1).measure(&["c"], &["a"], |_, _, n| n);
    /// assert_eq!(m.figures("c", "a").unwrap().allocs, None); // no counting allocator here
    /// ```
    pub fn figures(&self, case: &str, side: &str) -> Option<&Figures> {
        let c = self.cases.iter().position(|c| c == case)?;
        let s = self.sides.iter().position(|s| s == side)?;
        self.figures.get(c)?.get(s)
    }

    /// Median ns per call of `side` ÷ that of `over`, in `case`: 1.5 means `side` takes 50%
    /// longer. `None` for an unknown name or a zero divisor.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(1_000).repetitions(1)
    ///     .measure(&["c"], &["a", "b"], |_, _, n| (0..n).map(std::hint::black_box).sum::<u64>());
    /// assert!(m.ns_ratio("c", "a", "b").is_some());
    /// assert!(m.ns_ratio("c", "a", "nope").is_none());
    /// ```
    pub fn ns_ratio(&self, case: &str, side: &str, over: &str) -> Option<f64> {
        let (a, b) = (self.figures(case, side)?, self.figures(case, over)?);
        (b.ns.median > 0.0).then(|| a.ns.median / b.ns.median)
    }

    /// Instructions per call of `side` ÷ those of `over`, in `case`, when both were counted.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(1).repetitions(1).measure(&["c"], &["a", "b"], |_, _, n| n);
    /// assert_eq!(m.instructions_ratio("c", "a", "b"), None); // not asked for
    /// ```
    pub fn instructions_ratio(&self, case: &str, side: &str, over: &str) -> Option<f64> {
        let a = self.figures(case, side)?.instructions?;
        let b = self.figures(case, over)?.instructions?;
        (b > 0.0).then(|| a / b)
    }

    /// The table by case: a row per case; per side its ns, allocations and instructions per
    /// call; and the ratios of the first side over each other side. With two sides (sheave
    /// and tower) it is the table of `cargo bench -p sheave-benches --bench service`.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(10).repetitions(1).measure(&["c"], &["a", "b"], |_, _, n| n);
    /// let header = m.table().lines().next().unwrap().to_string();
    /// assert_eq!(header, "| stack | a ns | b ns | ns a ÷ b | a allocs | b allocs | a instr | b instr | instr a ÷ b |");
    /// ```
    pub fn table(&self) -> String {
        let first = self.sides.first().map_or("", String::as_str);
        let others = self.sides.iter().skip(1);
        let mut header: Vec<String> = vec![self.case_header.clone()];
        header.extend(self.sides.iter().map(|s| format!("{s} ns")));
        header.extend(others.clone().map(|s| format!("ns {first} ÷ {s}")));
        header.extend(self.sides.iter().map(|s| format!("{s} allocs")));
        header.extend(self.sides.iter().map(|s| format!("{s} instr")));
        header.extend(others.map(|s| format!("instr {first} ÷ {s}")));
        let rows: Vec<Vec<String>> = self
            .figures
            .iter()
            .zip(&self.cases)
            .map(|(row, case)| {
                let mut cells = vec![case.clone()];
                cells.extend(row.iter().map(|f| format!("{:.1}", f.ns.median)));
                cells.extend(row.iter().skip(1).map(|f| {
                    let r = (f.ns.median > 0.0).then(|| row[0].ns.median / f.ns.median);
                    cell(r, 2)
                }));
                cells.extend(row.iter().map(|f| cell(f.allocs, 2)));
                cells.extend(row.iter().map(|f| cell(f.instructions, 0)));
                cells.extend(row.iter().skip(1).map(|f| {
                    let r = match (row[0].instructions, f.instructions) {
                        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                        _ => None,
                    };
                    cell(r, 2)
                }));
                cells
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        table::table(&header, &rows)
    }

    /// The table by side for `case`: a row per side with its ns, allocations, bytes and
    /// instructions per call, and the first side's instructions ÷ this side's (`1.00` on the
    /// first row). It is the first table of `cargo bench -p sheave-benches --bench balance`.
    /// Empty for an unknown case.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(10).repetitions(1).measure(&["c"], &["a", "b"], |_, _, n| n);
    /// let t = m.table_by_side("c");
    /// assert!(t.starts_with("| side | ns / call | allocs / call | bytes / call | instructions / call | a ÷ this |"));
    /// assert_eq!(t.lines().count(), 4);
    /// ```
    pub fn table_by_side(&self, case: &str) -> String {
        let Some(row) = self
            .cases
            .iter()
            .position(|c| c == case)
            .and_then(|c| self.figures.get(c))
        else {
            return String::new();
        };
        let first = self.sides.first().map_or("", String::as_str);
        let ratio = format!("{first} ÷ this");
        let rows: Vec<Vec<String>> = row
            .iter()
            .zip(&self.sides)
            .enumerate()
            .map(|(i, (f, side))| {
                let r = if i == 0 {
                    "1.00".to_string()
                } else {
                    match (row[0].instructions, f.instructions) {
                        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                        _ => "-".into(),
                    }
                };
                vec![
                    side.clone(),
                    format!("{:.0}", f.ns.median),
                    cell(f.allocs, 2),
                    cell(f.bytes, 0),
                    cell(f.instructions, 0),
                    r,
                ]
            })
            .collect();
        table::table(
            &[
                "side",
                "ns / call",
                "allocs / call",
                "bytes / call",
                "instructions / call",
                &ratio,
            ],
            &rows,
        )
    }

    /// How the figures were taken, in one paragraph: the repetitions and calls, each side's
    /// worst spread, where allocations and instructions came from.
    ///
    /// ```
    /// let m = sheave_load::meter::Meter::new("t").calls(10).repetitions(3).measure(&["c"], &["a"], |_, _, n| n);
    /// assert!(m.note().starts_with("ns per call: median of 3 interleaved repetitions of 10 calls"));
    /// ```
    pub fn note(&self) -> String {
        let spreads: Vec<String> = self
            .sides
            .iter()
            .enumerate()
            .map(|(s, side)| {
                let worst = self
                    .figures
                    .iter()
                    .filter_map(|row| row.get(s))
                    .map(|f| f.ns.relative())
                    .fold(0.0, f64::max);
                format!("{side} {:.0}%", worst * 100.0)
            })
            .collect();
        let allocs = if self.counted_allocs {
            "allocations: a counting global allocator, set-up subtracted"
        } else {
            "allocations: not counted (install `sheave_load::meter::alloc::CountingAlloc`)"
        };
        let instructions = match self.instruction_calls {
            Some(n) => format!(
                "instructions: callgrind, (count at 2N − count at N) ÷ N, N = {n}, in child processes"
            ),
            None => "instructions: not counted (needs `Meter::instructions` and valgrind)".into(),
        };
        format!(
            "ns per call: median of {} interleaved repetitions of {} calls, set-up subtracted \
             (spread, (max − min) ÷ median, at worst: {}); {allocs}; {instructions}.",
            self.repetitions,
            self.calls,
            spreads.join(", ")
        )
    }

    /// Prints [`table`](Measurement::table), a blank line and [`note`](Measurement::note)
    /// (nothing in a child process).
    ///
    /// ```
    /// sheave_load::meter::Meter::new("t").calls(10).repetitions(1).measure(&["c"], &["a"], |_, _, n| n).print();
    /// ```
    pub fn print(&self) {
        if !self.child {
            println!("{}\n{}", self.table(), self.note());
        }
    }

    /// Prints [`table_by_side`](Measurement::table_by_side) for every case, and the note
    /// (nothing in a child process).
    ///
    /// ```
    /// sheave_load::meter::Meter::new("t").calls(10).repetitions(1).measure(&["c"], &["a"], |_, _, n| n).print_by_side();
    /// ```
    pub fn print_by_side(&self) {
        if !self.child {
            for case in &self.cases {
                println!("{}", self.table_by_side(case));
            }
            println!("{}", self.note());
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}
