//! The overhead meter's figures, checked against layers whose cost is known: one that
//! allocates once per call must read exactly 1 allocation per call.
//!
//! One test function: the counting allocator's counters are process-wide, so tests running
//! in parallel threads would count each other's allocations.

use sheave_load::meter::alloc::CountingAlloc;
use sheave_load::meter::{BARE, Meter, WITH_LAYER};
use sheave_service::{Service, TryReady, service_fn};
use std::convert::Infallible;
use std::hint::black_box;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Boxes every request once on its way in: exactly one allocation of 8 bytes per call.
struct BoxEach<S>(S);

impl<S: Service<u64>> Service<u64> for BoxEach<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, S::Error> {
        self.0.ready().await
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.0.try_ready()
    }

    async fn call(&self, permit: S::Permit, req: u64) -> Result<S::Response, S::Error> {
        let boxed = black_box(Box::new(req));
        self.0.call(permit, *boxed).await
    }
}

fn bare() -> impl Service<u64, Response = u64, Error = Infallible> {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(x.wrapping_add(1)) })
}

#[test]
fn a_layer_that_allocates_once_per_call_reads_exactly_one_allocation() {
    let m = Meter::new("box each request")
        .calls(20_000)
        .repetitions(3)
        .compare(&bare(), &BoxEach(bare()), |i| i)
        .expect("both stacks answer");
    let with = m.figures("box each request", WITH_LAYER).unwrap();
    let without = m.figures("box each request", BARE).unwrap();
    assert_eq!(with.allocs, Some(1.0), "{m}");
    assert_eq!(with.bytes, Some(8.0), "{m}");
    assert_eq!(without.allocs, Some(0.0), "{m}");
    assert_eq!(without.bytes, Some(0.0), "{m}");
    for f in [with, without] {
        assert!(f.ns.min <= f.ns.median && f.ns.median <= f.ns.max, "{m}");
        assert!(f.ns.median > 0.0, "{m}");
    }
    // The table names the sides and prints the allocation columns from the same figures.
    let table = m.table();
    let cells = |line: usize| -> Vec<&str> {
        let line = table.lines().nth(line).unwrap();
        line.split('|').map(str::trim).collect()
    };
    let header = cells(0);
    assert_eq!(
        header[1..6],
        [
            "stack",
            "with layer ns",
            "bare ns",
            "ns with layer ÷ bare",
            "with layer allocs"
        ],
        "{table}"
    );
    let row = cells(2);
    assert_eq!(row[1], "box each request", "{table}");
    assert_eq!((row[5], row[6]), ("1.00", "0.00"), "{table}");

    // A closure side that allocates twice per call, measured with `measure`; its set-up
    // (one allocation, made also with n = 0) is subtracted.
    let m = Meter::new("two boxes")
        .calls(10_000)
        .repetitions(3)
        .measure(&["boxes"], &["two per call"], |_, _, n| {
            let setup = black_box(vec![0u8; 64]);
            let mut sum = setup.len() as u64;
            for i in 0..n {
                sum += *black_box(Box::new(i)) + *black_box(Box::new(1u64));
            }
            sum
        });
    let f = m.figures("boxes", "two per call").unwrap();
    assert_eq!(f.allocs, Some(2.0), "{m}");
    assert_eq!(f.bytes, Some(16.0), "{m}");
}
