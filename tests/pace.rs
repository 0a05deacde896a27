//! What the pace says, through the binary: a `--concurrency` that cannot
//! reach `--rate` is named with the value that would, a 429's pause is
//! shown as a pause (not as "0.0/s, ETA unknown"), and the summary's rate
//! is the sending rate.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use trackmass::sandbox::{Config, Faults, RateLimit};

use crate::common::*;

/// A sandbox that knows every document and answers each after `latency`.
fn api_taking(latency: Duration) -> TestSandbox {
    TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        faults: Faults {
            latency,
            ..Faults::default()
        },
        ..Config::default()
    })
}

#[test]
fn a_concurrency_too_small_for_the_rate_is_named_with_the_one_that_would_do() {
    let sandbox = api_taking(Duration::from_millis(100));
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("LW", 300)));
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--rate",
        "200/s",
        "--concurrency",
        "8",
        "--summary",
        "s.json",
    ]));
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("--concurrency 8 cannot reach --rate 200/s: requests take 10"),
        "{err}"
    );
    assert!(err.contains("in flight make at most 7"), "{err}");
    let would: u32 = err
        .split("; --concurrency ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no suggestion in {err}"));
    // 200/s × 0.1 s = 20 in flight, with some headroom.
    assert!((20..=30).contains(&would), "{would}");
    // The summary's rate is what sending achieved, about 8 / 0.1 s.
    let s = json(&work.read("s.json"));
    let rate = s["requests"].as_f64().unwrap() / s["sending_seconds"].as_f64().unwrap();
    assert!(rate < 85.0, "{rate}");
    let line = stdout(&out);
    let shown: f64 = line
        .rsplit_once("s (")
        .and_then(|(_, r)| r.split("/s)").next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {line}"));
    assert!(
        (shown - rate).abs() < 0.2,
        "{shown} shown, {rate} achieved: {line}"
    );
}

#[test]
fn a_pause_for_a_429_is_shown_as_a_pause_with_its_end() {
    // 30 calls per 10 s: the first burst passes, then the gateway asks to
    // wait several seconds.
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        rate_limit: Some(RateLimit {
            calls: 30,
            period: Duration::from_secs(10),
        }),
        ..Config::default()
    });
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("PS", 200)));
    let mut child = work
        .run_against(&sandbox, "in.csv")
        .args(["--rate", "100/s", "--progress-interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().expect("piped");
    let mut paused = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("log line");
        if line.contains("progress:") && line.contains("paused by 429 until ") {
            paused = Some(line);
            break;
        }
    }
    signal(&child, libc::SIGINT);
    let _ = child.wait();
    let line = paused.expect("a progress line during the pause");
    assert!(line.contains("UTC, then "), "{line}");
    assert!(line.contains("of --rate 100.0/s, ETA "), "{line}");
    assert!(!line.contains("ETA unknown"), "{line}");
}

#[test]
fn a_gateway_that_states_its_limit_is_kept_to_from_its_first_answer() {
    // 40 per second, said in RateLimit-Policy on every answer: the pace
    // goes no faster than 0.98 × 40/s, so nothing is refused, even at
    // three times the limit.
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        rate_limit: Some(RateLimit {
            calls: 40,
            period: Duration::from_secs(1),
        }),
        rate_limit_headers: true,
        ..Config::default()
    });
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("RH", 120)));
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--rate",
        "120/s",
        "--summary",
        "s.json",
    ]));
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("the gateway states a limit of 40.0/s (RateLimit-Policy): going at 39.2/s"),
        "{err}"
    );
    let stats = sandbox.stats();
    assert_eq!(
        stats["requests"]["rate_limited"].as_u64().unwrap_or(0),
        0,
        "{stats}"
    );
    let s = json(&work.read("s.json"));
    assert_eq!(s["throttled"], 0);
    assert_eq!(s["tracked"], 120);
    // 120 requests at 39.2/s take 3 s, not the 1 s of --rate.
    let sending = s["sending_seconds"].as_f64().unwrap();
    assert!(sending > 2.5, "{sending}");
}

#[test]
fn what_a_429s_slow_down_came_to_is_logged_once_judged() {
    // A 20/s window at --rate 60/s: the first 429 comes after a burst that
    // reads as 60/s let through; the judged line says what the gateway
    // really admits (20/s, and 5% for clock jitter).
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        rate_limit: Some(RateLimit {
            calls: 20,
            period: Duration::from_secs(1),
        }),
        ..Config::default()
    });
    let work = Workdir::new();
    // 400 rows: about 20 s at the window's pace, time for the judgement
    // rounds (each a second to settle, 40 answers, a second more).
    work.write("in.csv", reference_csv(&references("PJ", 400)));
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--rate", "60/s"]),
    );
    assert_exit(&out, 0);
    let err = stderr(&out);
    let warned = err.find("429 from the API").expect("a 429 warning");
    let judged = err
        .find("pace judged after the last 429: going at ")
        .unwrap_or_else(|| panic!("no judged line:\n{err}"));
    assert!(warned < judged, "{err}");
    let line = err[judged..].lines().next().unwrap_or("");
    let number = |after: &str| -> f64 {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split("/s").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no figure after {after:?} in {line}"))
    };
    // Far below the 60/s the burst read, near the 21/s the window admits
    // (a judgement over a short span may read a little above it).
    let (going, limit) = (number("going at "), number("limit put at "));
    assert!((5.0..=30.0).contains(&going), "{line}");
    assert!((5.0..=30.0).contains(&limit), "{line}");
}

/// The summary says where a request's time went, on average: with a slow
/// API it is the answer, with a slow pace the turn. Both runs have 8 in
/// flight; the first at an ample --rate against an API taking 100 ms, the
/// second against an instant API at --rate 20/s, where each request books
/// a slot behind the 7 others' (about 350 ms).
#[test]
fn the_summary_says_where_a_requests_time_went() {
    let slow_api = api_taking(Duration::from_millis(100));
    let instant_api = api_taking(Duration::ZERO);
    let mut times = Vec::new();
    for (sandbox, rate) in [(&slow_api, "1000/s"), (&instant_api, "20/s")] {
        let work = Workdir::new();
        work.write("in.csv", reference_csv(&references("RT", 40)));
        let out = output(work.run_against(sandbox, "in.csv").args([
            "--rate",
            rate,
            "--concurrency",
            "8",
            "--summary",
            "s.json",
        ]));
        assert_exit(&out, 0);
        let ms = json(&work.read("s.json"))["request_ms"].clone();
        let get = |k: &str| {
            ms[k]
                .as_f64()
                .unwrap_or_else(|| panic!("no request_ms.{k} in {ms}"))
        };
        times.push((get("in_flight_mark"), get("turn"), get("answer")));
    }
    let (mark, turn, answer) = times[0];
    assert!(answer >= 100.0, "slow API: {times:?}");
    assert!(
        turn < 50.0 && mark > 0.0 && mark < answer,
        "slow API: {times:?}"
    );
    let (mark, turn, answer) = times[1];
    assert!(turn > 200.0, "slow pace: {times:?}");
    assert!(answer < turn / 10.0 && mark > 0.0, "slow pace: {times:?}");
}
