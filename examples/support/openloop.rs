//! An open-loop load generator for the examples and the tests: each request is sent at its
//! due time whatever the others are doing, and its latency counts from that time (so a stall
//! shows as late or missing answers, not as a slower closed loop — wrk2's point about
//! coordinated omission), plus the arithmetic the reports and assertions share.

#![allow(dead_code)] // the tests and the report use different parts

use sheave::service::{Error, Service, ServiceExt};
use sheave::time;
use sheave_middleware::stats::StatsHandle;
use sheave_proto::resp::Frame;
use sheave_service::ErrorKind;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub fn get(i: u64) -> Frame {
    command(&[b"GET", format!("k{}", i % 100).as_bytes()])
}

pub fn command(parts: &[&[u8]]) -> Frame {
    Frame::Array(
        parts
            .iter()
            .map(|p| Frame::Bulk(bytes::Bytes::copy_from_slice(p)))
            .collect(),
    )
}

/// One request's fate: when it was due (since the start), how long it took from then (what
/// its caller saw, waiting for the event loop included), how long the stack took from the
/// call, and whether it succeeded.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub due: Duration,
    pub latency: Duration,
    pub service: Duration,
    pub ok: bool,
    /// Why it failed.
    pub error: Option<ErrorKind>,
    /// Answered, but not with what the request asked for.
    pub wrong: bool,
}

/// Something to do once the run reaches `at`.
pub struct Step<'a> {
    at: Duration,
    what: Box<dyn FnMut() + 'a>,
}

pub fn at<'a>(secs: f64, what: impl FnMut() + 'a) -> Step<'a> {
    Step {
        at: Duration::from_secs_f64(secs),
        what: Box::new(what),
    }
}

/// Offers `total` GETs at `rate` per second, open loop, running `steps` on the way; returns
/// every outcome in the order the requests were due.
pub async fn offer<S>(client: Rc<S>, rate: u64, total: u64, steps: Vec<Step<'_>>) -> Vec<Outcome>
where
    S: Service<Frame, Response = Frame, Error = Error> + 'static,
{
    offer_checked(client, rate, total, steps, |_, _| true).await
}

/// [`offer`], where an answer counts as a success only if `check(i, &reply)` holds for
/// request `i` ([`get`]`(i)`); an answer that fails it is counted `wrong` (an answer handed to
/// the wrong caller, say).
pub async fn offer_checked<S>(
    client: Rc<S>,
    rate: u64,
    total: u64,
    mut steps: Vec<Step<'_>>,
    check: fn(u64, &Frame) -> bool,
) -> Vec<Outcome>
where
    S: Service<Frame, Response = Frame, Error = Error> + 'static,
{
    let outcomes: Rc<RefCell<Vec<Option<Outcome>>>> =
        Rc::new(RefCell::new(vec![None; total as usize]));
    let start = Instant::now();
    let mut tick = time::interval(Duration::from_millis(1));
    let mut tasks = Vec::with_capacity(total as usize);
    let mut issued = 0u64;
    while issued < total {
        tick.tick().await;
        let elapsed = start.elapsed();
        for step in steps.iter_mut().filter(|s| s.at <= elapsed) {
            (step.what)();
            step.at = Duration::MAX; // done
        }
        let due_now = ((elapsed.as_secs_f64() * rate as f64) as u64).min(total);
        while issued < due_now {
            let i = issued;
            issued += 1;
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            let (client, outcomes) = (client.clone(), outcomes.clone());
            tasks.push(sheave::spawn(async move {
                let called = Instant::now();
                let result = client.oneshot(get(i)).await;
                if let Err(e) = &result
                    && std::env::var_os("FAULTS_DEBUG").is_some()
                {
                    eprintln!("request {i}: {e:?}");
                }
                let wrong = result.as_ref().is_ok_and(|reply| !check(i, reply));
                let (ok, error) = (result.is_ok() && !wrong, result.err().map(|e| e.kind()));
                let (latency, service) = (start.elapsed().saturating_sub(due), called.elapsed());
                outcomes.borrow_mut()[i as usize] = Some(Outcome {
                    due,
                    latency,
                    service,
                    ok,
                    error,
                    wrong,
                });
            }));
        }
    }
    for task in tasks {
        task.await.expect("a request task panicked");
    }
    let outcomes = outcomes.borrow();
    outcomes
        .iter()
        .map(|o| o.expect("every request ended"))
        .collect()
}

/// Per whole second of due time: (offered, succeeded).
pub fn per_second(outcomes: &[Outcome]) -> Vec<(u64, u64)> {
    let mut seconds: Vec<(u64, u64)> = Vec::new();
    for o in outcomes {
        let s = o.due.as_secs() as usize;
        if seconds.len() <= s {
            seconds.resize(s + 1, (0, 0));
        }
        seconds[s].0 += 1;
        seconds[s].1 += u64::from(o.ok);
    }
    seconds
}

#[track_caller]
pub fn assert_no_window_below(outcomes: &[Outcome], share: f64) {
    for (s, (offered, ok)) in per_second(outcomes).into_iter().enumerate() {
        assert!(
            ok as f64 >= share * offered as f64,
            "second {s}: {ok} of {offered} succeeded (below {:.0}%)",
            share * 100.0
        );
    }
}

pub fn failed(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| !o.ok).count()
}

/// How many failed for a reason other than being shed. A shed (`Overloaded`: the limit was
/// full) is the stack doing its job when the machine itself stalls — a 2-core machine shared
/// with a build can pause the client thread for tens of milliseconds — so the cases count
/// sheds apart, and bound them separately with [`assert_few_sheds`].
pub fn failed_unshed(outcomes: &[Outcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| !o.ok && o.error != Some(ErrorKind::Overloaded))
        .count()
}

#[track_caller]
pub fn assert_few_sheds(outcomes: &[Outcome]) {
    let shed = failed(outcomes) - failed_unshed(outcomes);
    assert!(
        shed * 200 <= outcomes.len(),
        "{shed} of {} requests shed (more than 0.5%): {}",
        outcomes.len(),
        failures(outcomes)
    );
}

/// How many failed, and why: `12 (Timeout 10, Overloaded 2)`.
pub fn failures(outcomes: &[Outcome]) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for kind in outcomes.iter().filter_map(|o| o.error) {
        let kind = format!("{kind:?}");
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    let wrong = outcomes.iter().filter(|o| o.wrong).count();
    if wrong > 0 {
        kinds.push(("wrong answer".to_string(), wrong));
    }
    if kinds.is_empty() {
        return "0".to_string();
    }
    let why: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{} ({})", failed(outcomes), why.join(", "))
}

pub fn percentile(mut latencies: Vec<Duration>, p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i]
}

pub fn requests(stats: &[(&'static str, StatsHandle)], name: &str) -> u64 {
    stats
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, s)| s.snapshot().requests)
}

/// The share of requests `name` took of everything sent between two readings of the stats.
pub fn share(before: &[u64], after: &[u64], index: usize) -> f64 {
    let total: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
    (after[index] - before[index]) as f64 / total.max(1) as f64
}

pub fn readings(stats: &[(&'static str, StatsHandle)]) -> Vec<u64> {
    stats.iter().map(|(_, s)| s.snapshot().requests).collect()
}
