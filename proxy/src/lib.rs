//! # sheave-proxy
//!
//! A reverse proxy built from the sheave kit: a [`sheave_proto::Server`] per listener, the
//! kit's middleware stack per cluster, and the kit's codecs and clients underneath.
//!
//! - [`config`]: the TOML configuration, validated with the field named in every refusal;
//! - [`resp`]: the RESP proxy (twemproxy's job): ketama sharding ([`ketama`], [`md5`]),
//!   pipelining, multi-key commands split and merged, RESP2 and RESP3 clients;
//! - [`http`]: the HTTP proxy: h1 and h2c both ways, routes by host and path prefix,
//!   hop-by-hop headers removed, `X-Forwarded-For` and `Via`, 502/503/504;
//! - [`tcp`]: the L4 proxy: balanced, bounded buffers each way, half-close, idle timeout;
//! - [`discovery`]: endpoints from the config, a file re-read as it changes, DNS, and etcd;
//! - [`admin`]: `/metrics`, `/endpoints`, `/healthz`, `/drain`;
//! - [`metrics`]: per-thread counters, merged at scrape time into the Prometheus text format;
//! - [`Proxy`]: starts a config's listeners and stops them.
//!
//! ```
//! use sheave_proxy::{Proxy, config::Config};
//!
//! let config = Config::parse(r#"
//!     [[listener]]
//!     name = "redis"
//!     address = "127.0.0.1:0"
//!     protocol = "resp"
//!     cluster = "cache"
//!
//!     [[cluster]]
//!     name = "cache"
//!     endpoints = ["127.0.0.1:6379"]
//! "#).unwrap();
//! let proxy = Proxy::start(config).unwrap();
//! assert!(proxy.addr("redis").unwrap().port() != 0);
//! proxy.drain();
//! proxy.wait();
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod admin;
pub mod config;
pub mod discovery;
pub mod http;
pub mod ketama;
pub mod md5;
pub mod metrics;
pub mod resp;
mod run;
mod stack;
pub mod tcp;

pub use run::{Listening, Proxy, scrape};
