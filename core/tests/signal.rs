//! Shutdown signals, raised in this process (its own test binary, so no other test sees them).

use sheave_core::signal::{Signal, Signals};
use sheave_core::{Runtime, time};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::low_level::raise;
use std::task::Poll;
use std::time::Duration;

#[test]
fn sigterm_and_sigint_arrive_as_signals_each_once_and_in_every_registration() {
    // Paused: the waits below end on the pipe's event (written before `raise` returns), or
    // fail at once in virtual time.
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(async {
        let mut first = Signals::new().unwrap();
        let mut second = Signals::new().unwrap();
        raise(SIGTERM).unwrap();
        let within = Duration::from_secs(20);
        let got = time::timeout(within, first.recv()).await.expect("SIGTERM");
        assert_eq!(got, Signal::Terminate);
        let got = time::timeout(within, second.recv()).await.expect("SIGTERM");
        assert_eq!(got, Signal::Terminate);
        // Taken once: nothing more is pending until the next signal.
        let more = std::future::poll_fn(|cx| Poll::Ready(first.poll_recv(cx))).await;
        assert!(more.is_pending(), "a signal was delivered twice: {more:?}");
        raise(SIGINT).unwrap();
        let got = time::timeout(within, first.recv()).await.expect("SIGINT");
        assert_eq!(got, Signal::Interrupt);
        assert_eq!(got.to_string(), "SIGINT");
    });
}

#[test]
fn signals_outside_a_runtime_thread_is_an_error_not_a_panic() {
    assert!(Signals::new().is_err());
}

#[test]
fn sighup_arrives_as_hangup_in_a_hangup_registration() {
    // (Whether a shutdown registration sees it is not asserted: the other test raises
    // SIGTERM in this process at any moment.)
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(async {
        let mut reload = Signals::hangup().unwrap();
        raise(signal_hook::consts::SIGHUP).unwrap();
        let got = time::timeout(Duration::from_secs(20), reload.recv())
            .await
            .expect("SIGHUP");
        assert_eq!(got, Signal::Hangup);
        assert_eq!(got.to_string(), "SIGHUP");
    });
}
