//! `sheave-core`: a deliberately thin thread-per-core runtime on mio.
//!
//! One event loop per thread — a reactor (`mio::Poll`), a local executor (a slab of tasks and a
//! run queue), a timer wheel (1 ms ticks) and a clock — and nothing shared between threads on
//! the request path. Tasks stay on the thread that spawned them, so they need not be `Send`;
//! per-thread state is plain `Cell`/`RefCell`. A [`Handle`] reaches every thread from anywhere.
//!
//! - [`Runtime`], [`Builder`]: make the threads; [`Runtime::block_on`] drives thread 0.
//! - [`spawn`], [`JoinHandle`]: local tasks; [`Handle::spawn`] and [`Handle::spawn_with`]:
//!   tasks sent from other threads.
//! - [`net`]: TCP and UDP sockets implementing the `futures::io` traits.
//! - [`signal`]: `SIGTERM`/`SIGINT` as a future, for a graceful shutdown.
//! - [`sync`]: [`WaitQueue`](sync::WaitQueue) (FIFO hand-off) and [`Notify`](sync::Notify),
//!   the cancel-safe waiting primitives the other crates build on.
//! - [`time`]: `sleep`, `timeout`, `interval`, and a paused clock for exact tests.
//!
//! ```
//! use sheave_core::{Runtime, net::{TcpListener, TcpStream}, time};
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use std::time::Duration;
//!
//! let rt = Runtime::new().unwrap();
//! let echoed = rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     sheave_core::spawn(async move {
//!         let (mut conn, _) = listener.accept().await.unwrap();
//!         let mut buf = [0; 64];
//!         let n = conn.read(&mut buf).await.unwrap();
//!         conn.write_all(&buf[..n]).await.unwrap();
//!     });
//!     let mut conn = TcpStream::connect(addr).await.unwrap();
//!     conn.write_all(b"ping").await.unwrap();
//!     let mut buf = [0; 4];
//!     time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf)).await.unwrap().unwrap();
//!     buf
//! });
//! assert_eq!(&echoed, b"ping");
//! ```
//!
//! # Unsafe
//! None: the crate is `#![forbid(unsafe_code)]`. Wakers are `Arc`s built with
//! `std::task::Wake`, and a same-thread wake pushes onto the run queue without a lock.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod executor;
pub mod net;
mod reactor;
mod runtime;
pub mod signal;
pub mod sync;
pub mod time;

pub use executor::{JoinError, JoinHandle, RemoteJoinHandle};
pub use runtime::{Builder, Handle, Runtime, ShutdownSignal, spawn, yield_now};
