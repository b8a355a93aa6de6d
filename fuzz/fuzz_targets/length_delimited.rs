//! Fuzzes the length_delimited decoder: `cargo fuzz run length_delimited` (from `fuzz/`).
#![no_main]

#[path = "support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::feed(
        sheave_proto::codec::LengthDelimitedCodec::builder()
            .length_field_length(2)
            .length_adjustment(-2)
            .max_frame_length(4096)
            .build()
            .unwrap(),
        data,
    );
});
