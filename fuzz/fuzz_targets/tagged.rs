//! Fuzzes the tagged (id + body) decoder: `cargo fuzz run tagged` (from `fuzz/`).
#![no_main]

#[path = "support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::feed(sheave_proto::codec::TaggedCodec::new(), data);
});
