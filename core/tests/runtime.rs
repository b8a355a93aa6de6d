//! The executor, cross-thread spawning and waking, panics, shutdown.

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use sheave_core::{Handle, JoinError, Runtime, spawn, time};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn eight_threads_spawn_ten_thousand_send_tasks_through_the_handle_and_all_complete() {
    let rt = Runtime::builder().threads(2).build().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let spawners: Vec<_> = (0..8)
        .map(|t| {
            let handle = rt.handle().clone();
            let done = done.clone();
            std::thread::spawn(move || {
                (0..1250)
                    .map(|i| {
                        let done = done.clone();
                        handle.spawn(async move {
                            done.fetch_add(1, Ordering::Relaxed);
                            t * 10_000 + i
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let handles: Vec<_> = spawners
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    let sum: usize = rt.block_on(async {
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(done.load(Ordering::Relaxed), 10_000);
    let expected: usize = (0..8)
        .map(|t| (0..1250).map(|i| t * 10_000 + i).sum::<usize>())
        .sum();
    assert_eq!(sum, expected);
}

#[test]
fn two_runtime_threads_ping_pong_a_hundred_thousand_rounds_without_losing_a_wakeup() {
    const ROUNDS: u64 = 100_000;
    let rt = Runtime::builder().threads(2).build().unwrap();
    let (mut to_pong, mut pings) = mpsc::channel::<u64>(1);
    let (mut to_ping, mut pongs) = mpsc::channel::<u64>(1);
    // The ponger lives on background thread 1; the pinger on the block_on thread.
    let ponger = rt.handle().spawn_on(1, async move {
        while let Some(n) = pings.next().await {
            if to_ping.send(n + 1).await.is_err() {
                break;
            }
        }
    });
    let last = rt.block_on(async move {
        let mut n = 0;
        for _ in 0..ROUNDS {
            to_pong.send(n).await.unwrap();
            n = pongs.next().await.unwrap();
        }
        drop(to_pong);
        ponger.await.unwrap();
        n
    });
    assert_eq!(last, ROUNDS);
}

#[test]
fn a_panicking_task_does_not_take_the_runtime_down_and_its_handle_reports_it() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let bad = spawn(async {
            if true {
                panic!("boom");
            }
        });
        let good = spawn(async { 1 });
        assert_eq!(bad.await, Err(JoinError::Panicked("boom".into())));
        assert_eq!(good.await, Ok(1));
        // The runtime still schedules work.
        assert_eq!(spawn(async { 2 }).await, Ok(2));
    });
}

#[test]
fn a_panicking_remote_task_reports_the_panic_to_its_remote_handle() {
    let rt = Runtime::builder().threads(2).build().unwrap();
    let h = rt.handle().spawn_on(1, async {
        if true {
            panic!("remote boom");
        }
    });
    let got = futures::executor::block_on(h);
    assert_eq!(got, Err(JoinError::Panicked("remote boom".into())));
}

#[test]
fn an_aborted_task_reports_aborted_and_its_future_is_dropped() {
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(async {
        let (tx, rx) = oneshot::channel::<()>();
        let task = spawn(async move {
            let _tx = tx; // dropped with the future
            time::sleep(Duration::from_secs(3600)).await;
        });
        sheave_core::yield_now().await;
        task.abort();
        assert_eq!(task.await, Err(JoinError::Aborted));
        assert!(rx.await.is_err(), "the aborted future was dropped");
    });
}

#[test]
fn shutdown_stops_background_threads_and_lets_block_on_return() {
    let rt = Runtime::builder().threads(2).build().unwrap();
    let handle = rt.handle().clone();
    let (started_tx, started_rx) = oneshot::channel();
    let forever = handle.spawn_on(1, async move {
        started_tx.send(()).unwrap();
        futures::future::pending::<()>().await
    });
    let stopper = handle.clone();
    rt.block_on(async move {
        started_rx.await.unwrap();
        std::thread::spawn(move || stopper.shutdown());
        handle.shutdown_signal().await;
    });
    assert_eq!(
        futures::executor::block_on(forever),
        Err(JoinError::Cancelled)
    );
    let refused = rt.handle().spawn_on(1, async {});
    assert_eq!(
        futures::executor::block_on(refused),
        Err(JoinError::Cancelled)
    );
}

#[test]
fn spawn_with_builds_a_non_send_future_on_the_target_thread() {
    let rt = Runtime::builder().threads(2).build().unwrap();
    let h = rt.handle().spawn_with(1, || {
        let local = std::rc::Rc::new(std::cell::Cell::new(20)); // !Send
        async move {
            sheave_core::yield_now().await;
            local.set(local.get() + 1);
            (
                local.get(),
                std::thread::current().name().map(str::to_owned),
            )
        }
    });
    let (n, name) = futures::executor::block_on(h).unwrap();
    assert_eq!(n, 21);
    assert_eq!(name.as_deref(), Some("sheave-1"));
}

#[test]
fn a_recipe_that_panics_fails_its_handle_and_the_thread_keeps_serving() {
    // Regression (review): the panic unwound through the thread's event loop and killed
    // it: that handle and every later spawn on the thread waited forever.
    let rt = Runtime::builder().threads(2).build().unwrap();
    let bad = rt
        .handle()
        .spawn_with(1, || -> std::future::Ready<u32> { panic!("no recipe") });
    let good = rt.handle().spawn_on(1, async { 7 });
    let (bad, good) = rt.block_on(async {
        time::timeout(Duration::from_secs(20), async { (bad.await, good.await) })
            .await
            .expect("both handles resolved")
    });
    assert_eq!(bad, Err(JoinError::Panicked("no recipe".into())));
    assert_eq!(good, Ok(7));
}

#[test]
fn a_runtime_runs_block_on_again_and_again() {
    // Regression: the second `block_on` never polled its future (the "main woken" flag was
    // only set for the first), while still running the tasks the first one spawned.
    let rt = Runtime::new().unwrap();
    let background = rt.spawn(async { 1 });
    rt.block_on(sheave_core::yield_now()); // runs it
    assert_eq!(rt.block_on(async { 2 }), 2);
    assert_eq!(rt.block_on(background), Ok(1));
    for i in 0..3 {
        assert_eq!(
            rt.block_on(async move {
                sheave_core::yield_now().await;
                i
            }),
            i
        );
    }
}

#[test]
fn a_join_handle_can_abort_outside_its_runtime() {
    let rt = Runtime::new().unwrap();
    let task = rt.spawn(futures::future::pending::<()>());
    rt.block_on(sheave_core::yield_now()); // the task has run and is waiting
    task.abort(); // outside block_on: no panic; the wake goes through the remote queue
    assert_eq!(rt.block_on(task), Err(JoinError::Aborted));
}

#[test]
fn a_remote_spawn_queued_for_a_thread_that_never_runs_again_reports_cancelled() {
    // Regression (review): the queued message was dropped at shutdown without telling the
    // handle, which then waited forever.
    let rt = Runtime::new().unwrap();
    let handle = rt.handle().clone();
    // Thread 0 is not inside block_on: the message waits in its queue.
    let queued = std::thread::spawn(move || handle.spawn_on(0, async { 1 }))
        .join()
        .unwrap();
    drop(rt);
    assert_eq!(
        futures::executor::block_on(queued),
        Err(JoinError::Cancelled)
    );
}

#[test]
fn a_runtime_dropped_inside_another_leaves_the_other_reactor_alone() {
    // Regression (review): the dropped runtime's sockets deregistered their slab keys from
    // the reactor that was running — removing the other runtime's own sources.
    use sheave_core::net::{TcpListener, TcpStream};
    let inner = Runtime::new().unwrap();
    let parked =
        inner.block_on(async { TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap() });
    let held = inner.spawn(async move {
        let _keep = parked; // registered in `inner` (its first key)
        futures::future::pending::<()>().await
    });
    inner.block_on(sheave_core::yield_now());
    let outer = Runtime::new().unwrap();
    outer.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap(); // key 0 here too
        drop(held);
        drop(inner); // drops its listener while `outer`'s loop runs
        let addr = listener.local_addr().unwrap();
        let both = futures::future::join(listener.accept(), TcpStream::connect(addr));
        let (accepted, connected) = time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("the outer listener still accepts");
        accepted.unwrap();
        connected.unwrap();
    });
}

#[test]
fn spawn_with_thread_0_outside_block_on_runs_the_recipe_at_once_and_the_future_in_block_on() {
    // Regression (issue 10): the echo example sent a recipe to thread 0 and waited for it to
    // bind before calling block_on; the recipe only ran inside block_on, so it never bound.
    use sheave_core::net::{TcpListener, TcpStream};
    let rt = Runtime::builder().threads(2).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = rt.handle().spawn_with(0, move || {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.send((
            listener.local_addr().unwrap(),
            sheave_core::Handle::thread_index(),
        ))
        .unwrap();
        async move { listener.accept().await.map(|(_, peer)| peer.ip()) }
    });
    // Answered before any block_on: the recipe ran on this thread, as thread 0.
    let (addr, index) = rx.try_recv().expect("the recipe has run");
    assert_eq!(index, Some(0));
    assert!(!serving.is_finished());
    let peer = rt.block_on(async {
        let _client = TcpStream::connect(addr).await.unwrap();
        time::timeout(Duration::from_secs(20), serving)
            .await
            .expect("accepted")
    });
    assert_eq!(peer.unwrap().unwrap(), addr.ip());
}

#[test]
fn spawn_with_thread_0_from_inside_block_on_is_queued_not_run_inline() {
    let rt = Runtime::builder().threads(2).build().unwrap();
    let handle = rt.handle().clone();
    let order = rt.block_on(async move {
        let ran = Arc::new(AtomicUsize::new(0));
        let seen = ran.clone();
        let task = handle.spawn_with(0, move || {
            seen.store(1, Ordering::SeqCst);
            async { Handle::thread_index() }
        });
        // Queued for this thread's loop: it has not run while this task still holds it.
        let before = ran.load(Ordering::SeqCst);
        (before, task.await.unwrap())
    });
    assert_eq!(order, (0, Some(0)));
}
