//! Fuzzes the lines decoder: `cargo fuzz run lines` (from `fuzz/`).
#![no_main]

#[path = "support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::feed(sheave_proto::codec::LinesCodec::new(), data);
});
