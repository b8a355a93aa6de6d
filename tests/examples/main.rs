//! Every example, run as its header says: the built example binary (cargo builds the examples
//! for `cargo test`), started with its documented command and flags, waited on until it says
//! it is listening (or until it exits), talked to over a real socket, and stopped — with
//! `SIGTERM`, as a process manager would, for the servers.
//!
//! [`EXAMPLES`] must list every `examples/*.rs`: a new example without a test here fails
//! [`every_example_has_a_test_here`].
//!
//! Every wait is bounded and waits on an event (a line of output, a reply, an exit); nothing
//! sleeps.

mod process;

use process::{Example, WITHIN};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The examples tested below, by file name.
const EXAMPLES: &[&str] = &[
    "chaos",
    "chaos_proxy",
    "echo",
    "http",
    "http_client",
    "kv",
    "kv_client",
    "overhead",
    "tour",
];

/// Held by the tests that load the machine (the tour, the chaos report, kv under load): they
/// run one at a time, so that one's load does not become another's timing failure.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn every_example_has_a_test_here() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut tested: Vec<&str> = EXAMPLES.to_vec();
    tested.sort();
    assert_eq!(
        found, tested,
        "examples/*.rs and the examples tested in tests/examples differ: add a test that runs \
         the new example as its header says"
    );
}

/// Connects to the address in a "listening on ADDR ..." line.
#[track_caller]
fn connect(listening: &str) -> TcpStream {
    let addr: SocketAddr = listening
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    let conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(WITHIN)).unwrap();
    conn.set_write_timeout(Some(WITHIN)).unwrap();
    conn
}

#[track_caller]
fn assert_echoes(conn: &mut TcpStream, line: &str) {
    conn.write_all(line.as_bytes()).unwrap();
    let mut back = vec![0; line.len()];
    conn.read_exact(&mut back).expect("the line comes back");
    assert_eq!(String::from_utf8_lossy(&back), line);
}

#[test]
fn echo_as_documented_prints_its_address_echoes_a_line_and_stops_on_sigterm() {
    // `cargo run --release --example echo`: no flags.
    let mut echo = Example::start("echo", &[]);
    let listening = echo.wait_for_line("listening on ");
    let mut conn = connect(&listening);
    assert_echoes(&mut conn, "hello, sheave\n");
    assert_echoes(&mut conn, "and again\n");
    echo.terminate_and_expect_success();
}

#[test]
fn echo_with_two_threads_serves_on_both_listeners() {
    // Regression (issue 10): with `--threads N` it sent its listener recipe to thread 0 and
    // waited for it before `block_on`; it never printed its address.
    let mut echo = Example::start("echo", &["--threads", "2"]);
    let listening = echo.wait_for_line("listening on ");
    // The kernel spreads connections over the two listeners; every one is echoed.
    let mut conns: Vec<TcpStream> = (0..8).map(|_| connect(&listening)).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        assert_echoes(conn, &format!("connection {i}\n"));
    }
    echo.terminate_and_expect_success();
}

#[test]
fn echo_selftest_checks_every_byte_and_exits_0() {
    // The header's `--selftest [--connections 64] [--rounds 2000]`, smaller.
    let mut echo = Example::start(
        "echo",
        &["--selftest", "--connections", "8", "--rounds", "200"],
    );
    let report = echo.wait_for_line("1600 round trips checked");
    assert!(report.contains("req/s"), "{report}");
    echo.expect_exit_success();
}

/// A RESP command as an array of bulk strings.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Reads one RESP reply line (simple string, error, integer, or a bulk string's header and
/// body), returned without its line ends.
#[track_caller]
fn read_reply(conn: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    if conn.read_line(&mut line).expect("a reply") == 0 {
        return None; // closed, at a reply boundary
    }
    let line = line.trim_end_matches("\r\n").to_string();
    if let Some(len) = line.strip_prefix('$') {
        let Ok(len) = len.parse::<usize>() else {
            return Some(line); // $-1: nil
        };
        let mut body = vec![0; len + 2];
        conn.read_exact(&mut body).expect("a bulk body");
        body.truncate(len);
        return Some(format!("${}", String::from_utf8_lossy(&body)));
    }
    Some(line)
}

#[test]
fn kv_answers_ping_set_and_get_and_stops_on_sigterm() {
    // The header's command with its documented `--addr` (port 0 picks one: 6380 may be in
    // use on the machine running the tests).
    let mut kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
    let listening = kv.wait_for_line("listening on ");
    let conn = connect(&listening);
    let mut replies = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    for (command, expected) in [
        (&["PING"][..], "+PONG"),
        (&["SET", "greeting", "hello"], "+OK"),
        (&["GET", "greeting"], "$hello"),
        (&["GET", "missing"], "$-1"),
    ] {
        conn.write_all(&resp(command)).unwrap();
        assert_eq!(
            read_reply(&mut replies).as_deref(),
            Some(expected),
            "{command:?}"
        );
    }
    kv.terminate_and_expect_success();
}

#[test]
fn chaos_proxy_relays_to_a_kv_it_started_with_its_latency_and_stops_on_sigterm() {
    let mut kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
    let listening = kv.wait_for_line("listening on ");
    let upstream = listening.split_whitespace().nth(2).expect("an address");
    // The header's command, listening on port 0 (7500 may be in use here).
    let mut proxy = Example::start(
        "chaos_proxy",
        &[
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--latency-ms",
            "50",
        ],
    );
    let listening = proxy.wait_for_line("listening on ");
    let conn = connect(&listening);
    let mut replies = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let start = std::time::Instant::now();
    conn.write_all(&resp(&["PING"])).unwrap();
    assert_eq!(read_reply(&mut replies).as_deref(), Some("+PONG"));
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(100),
        "50 ms each way: {:?}",
        start.elapsed()
    );
    proxy.terminate_and_expect_success();
    kv.terminate_and_expect_success();
}

#[test]
fn kv_client_runs_its_commands_against_a_kv_it_started() {
    let mut kv = Example::start("kv", &["--addr", "127.0.0.1:0"]);
    let listening = kv.wait_for_line("listening on ");
    let addr = listening.split_whitespace().nth(2).expect("an address");
    // `cargo run --release --example kv_client -- 127.0.0.1:6380`, at kv's port.
    let mut client = Example::start("kv_client", &[addr]);
    client.wait_for_line("PING -> PONG");
    let got = client.wait_for_line("GET sheave:greeting -> ");
    assert!(got.contains("\"hello\""), "{got}");
    client.wait_for_line("INCR x100 -> up to Some(");
    client.expect_exit_success();
    kv.terminate_and_expect_success();
}

#[test]
fn overhead_short_run_prints_each_layers_table_and_cost() {
    // The header's short run, `--calls 2000` (this is a debug build): a table and a cost line
    // per layer, and the allocation the `Tagged` layer makes per call counted as one.
    let _one_at_a_time = heavy();
    let mut overhead = Example::start("overhead", &["--calls", "2000"]);
    overhead.wait_for_line("| with layer ns | bare ns | ns with layer ÷ bare |");
    let timed = overhead.wait_for_line("Timed: with layer ÷ bare = ");
    assert!(timed.contains("+0.00 allocations per call"), "{timed}");
    overhead.wait_for_line("(the histogram saw ");
    overhead.wait_for_line("| with layer ns | bare ns | ns with layer ÷ bare |");
    let tagged = overhead.wait_for_line("Tagged: with layer ÷ bare = ");
    assert!(tagged.contains("+1.00 allocations per call"), "{tagged}");
    overhead.expect_exit_success();
}

#[test]
fn tour_as_documented_exits_0() {
    let _one_at_a_time = heavy();
    // `cargo run --release --example tour`: it exits non-zero if any request failed.
    let mut tour = Example::start("tour", &[]);
    tour.expect_exit_success();
}

#[test]
fn chaos_as_documented_prints_its_report_writes_its_plots_and_exits_0() {
    // `cargo run --release --example chaos`: a table row per case, a plot per case, and a
    // non-zero exit if a case failed a request it should not have.
    let _one_at_a_time = heavy();
    let mut chaos = Example::start("chaos", &[]);
    chaos.wait_for_line("| case | requests | failed |");
    for _ in 0..5 {
        let plot = chaos.wait_for_line("plot: ");
        let path = plot.trim_start_matches("plot: ").trim();
        let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{path}"
        );
    }
    chaos.expect_exit_success();
}

#[test]
fn sigterm_to_kv_under_load_answers_every_request_it_accepted() {
    // Issue 9: a restart under load was a crash. Now kv drains on SIGTERM: it stops taking
    // requests, answers every one it took, and closes each connection at a reply boundary.
    const CONNECTIONS: usize = 4;
    const MAX_REQUESTS: usize = 1_000_000;
    let _one_at_a_time = heavy();
    let mut kv = Example::start("kv", &["--addr", "127.0.0.1:0", "--threads", "2"]);
    let listening = kv.wait_for_line("listening on ");
    let (answered_tx, answered_rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let conn = connect(&listening);
            let mut writer = conn.try_clone().unwrap();
            let answered_tx = answered_tx.clone();
            let closed = Arc::new(AtomicBool::new(false));
            let seen_closed = closed.clone();
            // The writer pipelines ECHOs until the server closes (bounded in count).
            let writing = std::thread::spawn(move || {
                let mut sent = 0;
                let mut batch = Vec::new();
                while sent < MAX_REQUESTS && !seen_closed.load(Ordering::Acquire) {
                    batch.clear();
                    for i in sent..sent + 64 {
                        batch.extend_from_slice(&resp(&["ECHO", &format!("{c}:{i}")]));
                    }
                    if writer.write_all(&batch).is_err() {
                        break; // the server closed: the rest was never accepted
                    }
                    sent += 64;
                }
                sent
            });
            // The reader checks that replies come in request order until a clean close.
            let reading = std::thread::spawn(move || {
                let mut replies = BufReader::new(conn);
                let mut answered = 0;
                while let Some(reply) = read_reply(&mut replies) {
                    assert_eq!(reply, format!("${c}:{answered}"), "reply {answered} on {c}");
                    answered += 1;
                    if answered == 2_000 {
                        let _ = answered_tx.send(());
                    }
                }
                // The server half-closed after its last reply: close too, as a client does.
                closed.store(true, Ordering::Release);
                let _ = replies.get_ref().shutdown(std::net::Shutdown::Both);
                answered
            });
            (writing, reading)
        })
        .collect();
    // Every connection is under load: then the process manager stops the server.
    for _ in 0..CONNECTIONS {
        answered_rx
            .recv_timeout(WITHIN)
            .expect("every connection was answered 2,000 times");
    }
    kv.terminate_and_expect_success();
    for (c, (writing, reading)) in clients.into_iter().enumerate() {
        let answered = reading
            .join()
            .expect("replies in order, closed at a boundary");
        let sent = writing.join().unwrap();
        assert!(answered >= 2_000, "connection {c}: {answered} answered");
        assert!(
            answered <= sent + 64,
            "connection {c}: {answered} answers to {sent} requests"
        );
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole answer.
#[track_caller]
fn http_exchange(listening: &str, request: &str) -> String {
    let mut conn = connect(listening);
    conn.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .expect("an answer, then a close");
    reply
}

#[test]
fn http_as_documented_says_hello_echoes_json_and_stops_on_sigterm() {
    // `cargo run --release --example http`, then the header's curl lines (as raw HTTP/1.1).
    let mut server = Example::start("http", &[]);
    let listening = server.wait_for_line("listening on ");
    let hello = http_exchange(
        &listening,
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(hello.starts_with("HTTP/1.1 200 OK"), "{hello}");
    assert!(hello.ends_with("hello, sheave\n"), "{hello}");
    let body = r#"{"name":"ann"}"#;
    let echo = http_exchange(
        &listening,
        &format!(
            "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(
        echo.ends_with("{\"echo\":{\"name\":\"ann\"},\"bytes\":14}\n"),
        "{echo}"
    );
    let bad = http_exchange(
        &listening,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    server.terminate_and_expect_success();
}

#[test]
fn http_client_as_documented_balances_over_two_http_servers_with_no_failure() {
    let mut a = Example::start("http", &[]);
    let mut b = Example::start("http", &[]);
    let url = |line: &str| format!("http://{}/", line.split_whitespace().nth(2).unwrap());
    let (url_a, url_b) = (
        url(&a.wait_for_line("listening on ")),
        url(&b.wait_for_line("listening on ")),
    );
    let mut client = Example::start("http_client", &["--requests", "300", &url_a, &url_b]);
    let report = client.wait_for_line("requests,");
    assert!(report.starts_with("300 requests, 0 failed"), "{report}");
    client.expect_exit_success();
    // `--auto` asks each server once; they speak h2c as well.
    let mut auto = Example::start(
        "http_client",
        &["--auto", "--requests", "100", &url_a, &url_b],
    );
    let report = auto.wait_for_line("requests,");
    assert!(report.starts_with("100 requests, 0 failed"), "{report}");
    auto.expect_exit_success();
    a.terminate_and_expect_success();
    b.terminate_and_expect_success();
}
