//! UDP: a datagram socket registered with the current thread's reactor.

use crate::reactor::{READ, Registration, WRITE};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;

/// A UDP socket.
///
/// ```
/// use sheave_core::{Runtime, net::UdpSocket};
///
/// let rt = Runtime::new().unwrap();
/// rt.block_on(async {
///     let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     a.send_to(b"ping", b.local_addr().unwrap()).await.unwrap();
///     let mut buf = [0; 16];
///     let (n, from) = b.recv_from(&mut buf).await.unwrap();
///     assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr().unwrap()));
/// });
/// ```
pub struct UdpSocket {
    io: mio::net::UdpSocket,
    reg: Registration,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("addr", &self.io.local_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    /// Binds to `addr`. Port 0 picks a free port.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let mut io = mio::net::UdpSocket::bind(addr)?;
        let reg = Registration::new(&mut io)?;
        Ok(UdpSocket { io, reg })
    }

    /// Adopts a standard socket (made non-blocking here).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        let mut io = mio::net::UdpSocket::from_std(socket);
        let reg = Registration::new(&mut io)?;
        Ok(UdpSocket { io, reg })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Sends one datagram to `target`; returns the bytes sent.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        poll_fn(|cx| {
            self.reg
                .poll_io(cx, WRITE, || self.io.send_to(buf, target), |_| false)
        })
        .await
    }

    /// Receives one datagram into `buf`; returns its length and sender. A datagram longer than
    /// `buf` is truncated.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| {
            self.reg
                .poll_io(cx, READ, || self.io.recv_from(buf), |_| false)
        })
        .await
    }

    /// Sets the default peer: [`send`](UdpSocket::send) goes there and only its datagrams are
    /// received.
    pub fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        self.io.connect(peer)
    }

    /// Sends one datagram to the connected peer.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| self.reg.poll_io(cx, WRITE, || self.io.send(buf), |_| false)).await
    }

    /// Receives one datagram from the connected peer.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.reg.poll_io(cx, READ, || self.io.recv(buf), |_| false)).await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.reg.deregister(&mut self.io);
    }
}
