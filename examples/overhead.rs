//! What does my layer cost? Two layers written here, each measured against the bare service
//! it wraps with the overhead meter (`sheave_load::meter`).
//!
//! ```text
//! cargo run --release --example overhead
//! cargo run --release --example overhead -- --instructions   # + callgrind's count (valgrind)
//! cargo run --release --example overhead -- --calls 2000     # a short run (the tests' debug build)
//! ```
//!
//! - `Timed` records each call's latency in a log₂ histogram of `Cell`s (two clock reads per
//!   call, no allocation);
//! - `Tagged` prefixes every request with a label, building a `String` per call (one heap
//!   allocation, which the table shows).
//!
//! Each prints a table — ns per call with and without the layer (median of 5 interleaved
//! repetitions of `--calls` calls, default 200,000), heap allocations per call (the
//! counting allocator installed below), and with `--instructions` the instructions per call
//! from callgrind, counted at N and 2N calls in child runs of this binary so start-up
//! cancels — then one line: the layer's cost as a ratio and in ns per call.

use sheave::service::{Service, TryReady, service_fn};
use sheave_load::meter::alloc::CountingAlloc;
use sheave_load::meter::{BARE, Measurement, Meter, WITH_LAYER};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Instant;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Latency of every call, in buckets of powers of two nanoseconds.
struct Timed<S> {
    inner: S,
    buckets: [Cell<u64>; 64],
}

impl<S> Timed<S> {
    fn new(inner: S) -> Self {
        Timed {
            inner,
            buckets: std::array::from_fn(|_| Cell::new(0)),
        }
    }

    fn calls(&self) -> u64 {
        self.buckets.iter().map(Cell::get).sum()
    }
}

impl<Req, S: Service<Req>> Service<Req> for Timed<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, S::Error> {
        self.inner.ready().await
    }

    // Forwarded, as the middleware recipe says: a ready stack answers without a ready() future.
    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, S::Error> {
        let start = Instant::now();
        let out = self.inner.call(permit, req).await;
        let ns = start.elapsed().as_nanos() as u64;
        let bucket = &self.buckets[(64 - ns.leading_zeros() as usize).min(63)];
        bucket.set(bucket.get() + 1);
        out
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }
}

/// Prefixes every request with a label: one `String` built per call.
struct Tagged<S> {
    inner: S,
    label: &'static str,
}

impl<S: Service<String>> Service<String> for Tagged<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, S::Error> {
        self.inner.ready().await
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    async fn call(&self, permit: S::Permit, req: String) -> Result<S::Response, S::Error> {
        let mut tagged = String::with_capacity(self.label.len() + 1 + req.len());
        tagged.push_str(self.label);
        tagged.push(':');
        tagged.push_str(&req);
        self.inner.call(permit, tagged).await
    }
}

/// The service both layers wrap: answers at once.
fn bare() -> impl Service<u64, Response = u64, Error = Infallible> {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(x.wrapping_mul(3)) })
}

/// The service `Tagged` wraps: the length of the tagged request.
fn bare_str() -> impl Service<String, Response = usize, Error = Infallible> {
    service_fn(|s: String| async move { Ok::<_, Infallible>(s.len()) })
}

/// The layer's cost in one line, from the meter's figures.
fn summary(m: &Measurement) -> String {
    let case = m.title();
    let with = m.figures(case, WITH_LAYER).expect("measured");
    let bare = m.figures(case, BARE).expect("measured");
    let ratio = m.ns_ratio(case, WITH_LAYER, BARE).unwrap_or(f64::NAN);
    let allocs = with.allocs.unwrap_or(f64::NAN) - bare.allocs.unwrap_or(f64::NAN);
    let mut line = format!(
        "{case}: with layer ÷ bare = {ratio:.2}× in ns ({:+.1} ns per call), {allocs:+.2} allocations per call",
        with.ns.median - bare.ns.median
    );
    if let Some(r) = m.instructions_ratio(case, WITH_LAYER, BARE) {
        let extra = with.instructions.unwrap_or(0.0) - bare.instructions.unwrap_or(0.0);
        line += &format!(", {r:.2}× in instructions ({extra:+.0} per call)");
    }
    line
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut calls: u64 = 200_000;
    let mut instructions = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--calls" => {
                calls = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--calls takes a positive number")?;
            }
            "--instructions" => instructions = true,
            other => return Err(format!("unknown argument {other:?} (see the header)").into()),
        }
    }
    let meter = |title: &str| {
        let m = Meter::new(title).calls(calls);
        if instructions {
            m.instructions((calls / 4).max(1_000))
        } else {
            m
        }
    };

    println!("## What `Timed` costs (two clock reads and a histogram bucket per call)\n");
    let timed = Timed::new(bare());
    let m = meter("Timed").compare(&bare(), &timed, |i| i)?;
    m.print();
    if !m.is_child() {
        println!("\n{}", summary(&m));
        println!("(the histogram saw {} calls)\n", timed.calls());
    }

    println!("## What `Tagged` costs (a String per call)\n");
    let tagged = Tagged {
        inner: bare_str(),
        label: "user",
    };
    // The request is an empty String: building it allocates nothing, so what the table
    // counts is the layer's own String.
    let m = meter("Tagged").compare(&bare_str(), &tagged, |_| String::new())?;
    m.print();
    if !m.is_child() {
        println!("\n{}", summary(&m));
    }
    Ok(())
}
