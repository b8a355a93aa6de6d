//! Accepting when the process is out of file descriptors: `accept` backs off and resumes.
//!
//! The test re-runs itself as a child process (so exhausting descriptors cannot disturb the
//! other tests of this binary), under `ulimit -n 128` set by `sh`.

mod support;

use futures::{AsyncReadExt, AsyncWriteExt};
use sheave_core::net::{TcpListener, TcpStream};
use sheave_core::{Runtime, spawn, time};
use std::fs::File;
use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "SHEAVE_FD_EXHAUSTION_CHILD";
const TEST_NAME: &str = "accept_backs_off_when_out_of_descriptors_and_serves_once_they_free_up";

#[test]
fn accept_backs_off_when_out_of_descriptors_and_serves_once_they_free_up() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 128 && exec "$0" "$@""#)
        .arg(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD-OK"),
        "child did not run:\n{stdout}\n{stderr}"
    );
}

fn child() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let listener = std::rc::Rc::new(TcpListener::bind(support::any_port()).unwrap());
        let addr = listener.local_addr().unwrap();
        let server = {
            let listener = listener.clone();
            spawn(async move {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0; 4];
                conn.read_exact(&mut buf).await.unwrap();
                conn.write_all(&buf).await.unwrap();
            })
        };
        // Use up every descriptor but one, which the client's socket takes.
        let mut hog = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            hog.push(f);
        }
        hog.pop();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        // The server sees the connection but cannot take a descriptor for it: wait (bounded)
        // until accept has backed off at least once.
        for _ in 0..5_000 {
            if listener.accept_backoffs() > 0 {
                break;
            }
            time::sleep(Duration::from_millis(1)).await;
        }
        assert!(listener.accept_backoffs() > 0, "accept never hit EMFILE");
        drop(hog);
        let mut buf = [0; 4];
        time::timeout(Duration::from_secs(30), client.read_exact(&mut buf))
            .await
            .expect("server did not resume after descriptors freed up")
            .unwrap();
        assert_eq!(&buf, b"ping");
        server.await.unwrap();
    });
    println!("CHILD-OK");
}
