//! Modules shared by the examples (and by the integration tests, which include them by path).

pub mod chaos;
pub mod cluster;
pub mod kv;
pub mod openloop;
pub mod reliability;

use std::io;

/// Binds something on runtime thread `thread` of `rt` and serves it there: `bind` runs on
/// that thread and returns what the caller needs (an address, a handle) and the future that
/// serves; the caller gets the first once it is bound. Returns the serving task's handle too.
pub fn bound_on<T, F>(
    rt: &sheave::Handle,
    thread: usize,
    bind: impl FnOnce() -> io::Result<(T, F)> + Send + 'static,
) -> io::Result<(T, sheave::RemoteJoinHandle<()>)>
where
    T: Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let done = rt.spawn_with(thread, move || {
        let serve = match bind() {
            Ok((out, serve)) => {
                let _ = tx.send(Ok(out));
                Some(serve)
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        };
        async move {
            if let Some(serve) = serve {
                serve.await;
            }
        }
    });
    let out = rx
        .recv()
        .map_err(|_| io::Error::other("the runtime thread is gone"))??;
    Ok((out, done))
}
