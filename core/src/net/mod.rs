//! Sockets: [`TcpListener`], [`TcpStream`] and [`UdpSocket`], thin wrappers over mio's.
//!
//! Each is registered with the reactor of the runtime thread that creates it (edge-triggered,
//! once, deregistered on drop) and stays on that thread: they are `!Send`. To serve on many
//! threads, bind one listener per thread with [`TcpListener::bind_reuse_port`] from
//! [`Handle::spawn_with`](crate::Handle::spawn_with).
//!
//! ```
//! use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
//! use futures::{AsyncBufReadExt, AsyncWriteExt, io::BufReader};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     // A line-echo server.
//!     sheave_core::spawn(async move {
//!         let (conn, _) = listener.accept().await.unwrap();
//!         let (read, mut write) = conn.into_split();
//!         let mut lines = BufReader::new(read);
//!         let mut line = String::new();
//!         while lines.read_line(&mut line).await.unwrap() > 0 {
//!             write.write_all(line.as_bytes()).await.unwrap();
//!             line.clear();
//!         }
//!     });
//!     let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
//!     write.write_all(b"one\ntwo\n").await.unwrap();
//!     let mut lines = BufReader::new(read).lines();
//!     use futures::StreamExt;
//!     assert_eq!(lines.next().await.unwrap().unwrap(), "one");
//!     assert_eq!(lines.next().await.unwrap().unwrap(), "two");
//! });
//! ```

mod tcp;
mod udp;

pub use tcp::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, TcpListener, TcpStream, WriteHalf};
pub use udp::UdpSocket;
