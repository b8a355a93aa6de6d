//! Fuzzes the resp decoder: `cargo fuzz run resp` (from `fuzz/`).
#![no_main]

#[path = "support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::feed(sheave_proto::resp::RespCodec::new(), data);
});
