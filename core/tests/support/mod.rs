//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sheave_core::Runtime;
use std::net::SocketAddr;

/// A runtime with a paused clock: virtual time jumps to the next timer when all is idle.
pub fn paused() -> Runtime {
    Runtime::builder().paused_clock().build().unwrap()
}

/// A loopback address with a free port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A deterministic pseudo-random byte pattern, so every byte of a transfer can be checked.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
