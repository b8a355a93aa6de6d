//! Both dispatchers over an in-memory pipe instead of a socket: the client is generic over
//! its stream, like the server (a Unix socket or a TLS stream carries it the same way).

use crate::support::within;
use bytes::Bytes;
use futures::future::join_all;
use futures::io::{AsyncRead, AsyncWrite};
use sheave_core::{Runtime, spawn};
use sheave_proto::Framed;
use sheave_proto::codec::{LinesCodec, TaggedCodec};
use sheave_proto::dispatch::{ClientConnection, ServerConnection};
use sheave_service::{Error, ErrorKind, ServiceExt, service_fn};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One direction of the pipe.
#[derive(Default)]
struct Chan {
    bytes: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
}

/// One end of an in-memory duplex pipe (same thread only).
struct End {
    rx: Rc<RefCell<Chan>>,
    tx: Rc<RefCell<Chan>>,
}

fn pipe() -> (End, End) {
    let (a, b) = (Rc::default(), Rc::default());
    (
        End {
            rx: Rc::clone(&a),
            tx: Rc::clone(&b),
        },
        End { rx: b, tx: a },
    )
}

impl End {
    fn close_tx(&self) {
        let mut tx = self.tx.borrow_mut();
        tx.closed = true;
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.close_tx();
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.borrow_mut();
        if rx.bytes.is_empty() {
            if rx.closed {
                return Poll::Ready(Ok(0));
            }
            rx.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(rx.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(rx.bytes.drain(..n)) {
            *slot = byte;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut tx = self.tx.borrow_mut();
        if tx.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        tx.bytes.extend(buf);
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_tx();
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_pipelined_client_and_server_talk_over_an_in_memory_pipe() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (client_end, server_end) = pipe();
        let server = spawn(async move {
            let shout =
                service_fn(|line: String| async move { Ok::<_, Error>(line.to_uppercase()) });
            ServerConnection::pipeline()
                .serve(Framed::new(server_end, LinesCodec::new()), shout)
                .await
        });
        let client = ClientConnection::pipeline(client_end, LinesCodec::new());
        let replies = join_all((0..100).map(|i| client.oneshot(format!("call {i}")))).await;
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.unwrap(), format!("CALL {i}"));
        }
        // The last handle gone, the client closes its end; the server sees the end of input.
        drop(client);
        assert!(server.await.unwrap().is_ok());
    }));
}

#[test]
fn a_multiplexed_client_over_a_pipe_matches_replies_by_id_and_fails_when_the_peer_goes() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (client_end, server_end) = pipe();
        let client = ClientConnection::multiplex(client_end, TaggedCodec::new());
        let server = spawn(async move {
            let echo = service_fn(|(id, body): (u64, Bytes)| async move {
                sheave_core::yield_now().await; // complete out of order with the others
                Ok::<_, Error>((id, body))
            });
            ServerConnection::multiplex()
                .serve(Framed::new(server_end, TaggedCodec::new()), echo)
                .await
        });
        let replies =
            join_all((0..50).map(|i| client.oneshot((0, Bytes::from(format!("{i}")))))).await;
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.unwrap().1, Bytes::from(format!("{i}")));
        }
        server.abort(); // the server end is dropped: its side of the pipe closes
        let _ = server.await;
        let err = client
            .oneshot((0, Bytes::from("anyone?")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
    }));
}
