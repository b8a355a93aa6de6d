//! The meter's instruction counts: callgrind in child runs of this test binary, at N and 2N
//! calls, must see a side that does twice the work per call as costing twice the
//! instructions — start-up (the harness, the process) cancelling out.
//!
//! Needs valgrind: without it the test prints why it skips, and fails when
//! `SHEAVE_REQUIRE_PEERS=1` (as CI sets). One test in this binary, because the child runs
//! the binary again with the same arguments.

use sheave_load::meter::{Meter, callgrind};
use std::hint::black_box;

/// `work` steps per call, `n` calls.
fn calls(n: u64, work: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        for j in 0..work {
            acc = black_box(acc.wrapping_add(i ^ j));
        }
    }
    acc
}

#[test]
fn instructions_per_call_scale_with_the_work_per_call() {
    if !callgrind::available() {
        assert!(
            std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() != Ok("1"),
            "valgrind is required (SHEAVE_REQUIRE_PEERS=1) but not installed"
        );
        eprintln!("skipped: valgrind is not installed");
        return;
    }
    let m = Meter::new("work per call")
        .calls(200)
        .repetitions(1)
        .instructions(2_000)
        .measure(&["loop"], &["200 steps", "100 steps"], |_, side, n| {
            calls(n, if side == 0 { 200 } else { 100 })
        });
    m.print();
    let double = m.figures("loop", "200 steps").unwrap().instructions;
    let single = m.figures("loop", "100 steps").unwrap().instructions;
    let (Some(double), Some(single)) = (double, single) else {
        panic!("callgrind gave no count:\n{m}");
    };
    assert!(single > 100.0, "at least an instruction per step:\n{m}");
    let ratio = m
        .instructions_ratio("loop", "200 steps", "100 steps")
        .unwrap();
    assert!((1.8..2.2).contains(&ratio), "ratio {ratio}:\n{m}");
    assert_eq!(ratio, double / single);
}
