//! The webhook receiver through the binary: `webhooks url` then `webhooks
//! serve` on loopback, fed by a test client; what it stored is read back
//! from its events store.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::*;

const BASE: &str = "https://hooks.transitaire-normand.fr/trackmass";

/// A body of the spec's shape for `unit`, with these events (alert type,
/// date).
fn body(unit: &str, events: &[(&str, &str)]) -> String {
    let events: Vec<_> = events
        .iter()
        .map(|(alert, date)| {
            serde_json::json!({"AlertDate": date, "AlertType": alert, "Direction": "Import",
                "Location": "FRLEH", "State": "Active", "Type": "DIR"})
        })
        .collect();
    serde_json::json!({"HandlingUnit": {"Events": events, "FreightFamily": "Container",
        "Reference": format!("REF{unit}"), "Spi": format!("CNI{unit}")}})
    .to_string()
}

/// `webhooks url BASE` in `work`: the URL printed and its path token.
fn register(work: &Workdir) -> (String, String) {
    let out = output(work.trackmass().args(["webhooks", "url", BASE]));
    assert_exit(&out, 0);
    let url = stdout(&out).trim().to_string();
    let token = url.rsplit('/').next().unwrap().to_string();
    (url, token)
}

/// `webhooks serve` on a free loopback port: the process and its address.
fn serve(work: &Workdir) -> (Child, String) {
    use std::io::BufRead;
    let mut child = work
        .trackmass()
        .args(["webhooks", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver starts");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .expect("receiver prints its address");
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    (child, addr)
}

/// A small blocking HTTP client on its own runtime.
struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    fn new() -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn send(&self, method: reqwest::Method, url: &str, body: impl Into<reqwest::Body>) -> u16 {
        let req = self.http.request(method, url).body(body.into());
        self.rt
            .block_on(async { req.send().await.map(|r| r.status().as_u16()) })
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn post(&self, url: &str, body: impl Into<reqwest::Body>) -> u16 {
        self.send(reqwest::Method::POST, url, body)
    }
}

/// (events, their deliveries summed, unreadable bodies) in the store.
fn store_counts(work: &Workdir) -> (i64, i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(
        work.path("trackmass.db.events"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT count(*), coalesce(sum(deliveries), 0), (SELECT count(*) FROM unreadable) FROM events",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// Units in `results.csv` (a document may have none: a line with an
/// empty spi).
fn tracked_units(work: &Workdir) -> u64 {
    result_lines(&work.path("results.csv"))
        .iter()
        .filter(|l| !l[2].is_empty())
        .count() as u64
}

/// Waits until the sandbox has delivered or given up `events` events.
fn wait_settled(sandbox: &TestSandbox, events: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    wait_for(Duration::from_secs(61), "every delivery settled", || {
        let w = &sandbox.stats()["webhooks"];
        assert!(
            std::time::Instant::now() < deadline,
            "not settled: {w}, {events} events expected"
        );
        w["delivered"].as_u64().unwrap_or(0) + w["failed"].as_u64().unwrap_or(0) >= events
    });
}

fn stop(mut child: Child) -> (i32, String) {
    use std::io::Read;
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn the_receiver_stores_each_event_once_and_refuses_strangers() {
    let work = Workdir::new();
    let (url, token) = register(&work);
    assert!(trackmass::spec::url_matches(&url), "{url}");
    assert_eq!(token.len(), 32);
    let (child, addr) = serve(&work);
    let hook = format!("{addr}/trackmass/{token}");
    let c = Client::new();
    let creation = body("1", &[("Creation", "2026-12-01T10:00:00+00:00")]);
    assert_eq!(c.post(&hook, creation.clone()), 200);
    // The same event again: stored once, counted twice.
    assert_eq!(c.post(&hook, creation), 200);
    // Two events in one body, one of them new; the proxy may strip the
    // registered prefix.
    let two = body(
        "1",
        &[
            ("Creation", "2026-12-01T10:00:00+00:00"),
            ("Discharge", "2026-12-02T08:00:00+00:00"),
        ],
    );
    assert_eq!(c.post(&format!("{addr}/{token}"), two), 200);
    // Strangers: nothing stored.
    assert_eq!(
        c.post(
            &format!("{addr}/trackmass/{}", &token[1..]),
            body("2", &[("Creation", "x")])
        ),
        404
    );
    assert_eq!(
        c.post(&format!("{addr}/"), body("3", &[("Creation", "x")])),
        404
    );
    assert_eq!(c.send(reqwest::Method::GET, &hook, ""), 405);
    assert_eq!(
        c.send(reqwest::Method::GET, &format!("{addr}/healthz"), ""),
        200
    );
    assert_eq!(c.post(&hook, vec![b' '; 65 * 1024]), 413);
    // Not the spec's shape: kept as received.
    assert_eq!(c.post(&hook, "{\"Unit\": 1}"), 202);
    let (code, err) = stop(child);
    assert_eq!(code, 0, "{err}");
    // Creation delivered three times, Discharge once.
    assert_eq!(store_counts(&work), (2, 4, 1));
    let conn = rusqlite::Connection::open(work.path("trackmass.db.events")).unwrap();
    let kept: Vec<u8> = conn
        .query_row("SELECT body FROM unreadable", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, b"{\"Unit\": 1}");
    assert!(err.contains("2 events stored, 2 delivered again"), "{err}");
    // The token is in no output and in no store but its own file.
    assert!(!err.contains(&token), "{err}");
    for name in ["trackmass.db.events", "trackmass.db.events.lock"] {
        let bytes = std::fs::read(work.path(name)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&token), "{name} holds the token");
    }
}

#[test]
fn acknowledged_events_survive_a_kill_9_of_the_receiver() {
    let work = Workdir::new();
    let (_, token) = register(&work);
    let (mut child, addr) = serve(&work);
    let hook = format!("{addr}/{token}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // 16 senders post distinct events until the receiver dies; each one
    // answered 200 is acknowledged.
    let acked: std::sync::Arc<std::sync::Mutex<Vec<usize>>> = Default::default();
    let senders: Vec<_> = (0..16)
        .map(|s| {
            let (http, hook, acked) = (http.clone(), hook.clone(), acked.clone());
            rt.spawn(async move {
                for i in (s..100_000).step_by(16) {
                    let b = body(&i.to_string(), &[("Creation", "2026-12-01T10:00:00+00:00")]);
                    match http.post(&hook).body(b).send().await {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push(i),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    wait_for(Duration::from_secs(60), "300 acknowledged events", || {
        acked.lock().unwrap().len() >= 300
    });
    kill9(&mut child);
    rt.block_on(async {
        for s in senders {
            let _ = s.await;
        }
    });
    let acked = acked.lock().unwrap().clone();
    // Every acknowledged event is stored, once.
    let conn = rusqlite::Connection::open_with_flags(
        work.path("trackmass.db.events"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut lookup = conn
        .prepare("SELECT deliveries FROM events WHERE spi = ?1")
        .unwrap();
    for i in &acked {
        let deliveries: i64 = lookup
            .query_row([format!("CNI{i}")], |r| r.get(0))
            .unwrap_or_else(|_| panic!("acknowledged event {i} is not stored"));
        assert_eq!(deliveries, 1, "event {i}");
    }
    drop(lookup);
    drop(conn);
    // Restarted on the same store, the sender's retries of what was not
    // acknowledged are taken, and a redelivery of an acknowledged one is
    // stored once.
    let (child, addr) = serve(&work);
    let c = Client::new();
    let again = body(
        &acked[0].to_string(),
        &[("Creation", "2026-12-01T10:00:00+00:00")],
    );
    assert_eq!(c.post(&format!("{addr}/{token}"), again), 200);
    let (code, err) = stop(child);
    assert_eq!(code, 0, "{err}");
    let (events, deliveries, _) = store_counts(&work);
    assert!(events as usize >= acked.len());
    assert_eq!(deliveries, events + 1);
    println!(
        "{} acknowledged before kill -9, {events} stored",
        acked.len()
    );
}

#[test]
fn one_receiver_per_store_and_none_without_a_token() {
    let work = Workdir::new();
    let out = output(
        work.trackmass()
            .args(["webhooks", "serve", "--listen", "127.0.0.1:0"]),
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("webhooks url"), "{}", stderr(&out));
    register(&work);
    let (child, _) = serve(&work);
    let out = output(
        work.trackmass()
            .args(["webhooks", "serve", "--listen", "127.0.0.1:0"]),
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("in use by trackmass webhooks serve"),
        "{}",
        stderr(&out)
    );
    let (code, _) = stop(child);
    assert_eq!(code, 0);
}

#[test]
fn a_url_soget_would_refuse_is_printed_with_the_reason() {
    let work = Workdir::new();
    let (first, _) = register(&work);
    // Same token on every call.
    assert_eq!(register(&work).0, first);
    let out = output(
        work.trackmass()
            .args(["webhooks", "url", "http://127.0.0.1:8787"]),
    );
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("http://127.0.0.1:8787/"));
    assert!(stderr(&out).contains("names a port"), "{}", stderr(&out));
    let out = output(
        work.trackmass()
            .args(["webhooks", "url", "hooks.example.fr"]),
    );
    assert_exit(&out, 2);
}

#[test]
fn a_run_registers_the_receiver_and_every_event_delivered_is_stored_once() {
    use trackmass::sandbox::{Config, Webhooks};
    let work = Workdir::new();
    let (_, token) = register(&work);
    let (receiver, addr) = serve(&work);
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        webhooks: Some(Webhooks {
            delay: Duration::from_millis(50),
            spacing: Duration::from_millis(50),
            duplicates: 0.2,
            events: 3,
            ..Webhooks::to(addr.clone())
        }),
        ..Config::default()
    });
    let refs = references("WH", 40);
    work.write("in.csv", reference_csv(&refs));
    // The run and the receiver on one state file at the same time.
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--webhooks", "--rate", "200/s"]),
    );
    assert_exit(&out, 0);
    let units = tracked_units(&work);
    assert!(units >= 40);
    wait_settled(&sandbox, 3 * units);
    let w = sandbox.stats()["webhooks"].clone();
    // An event for a unit no document of the ledger has: kept.
    let stranger = body("ZZ9", &[("Creation", "2026-12-01T10:00:00+00:00")]);
    assert_eq!(
        Client::new().post(&format!("{addr}/{token}"), stranger),
        200
    );
    let (code, err) = stop(receiver);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w["failed"], 0, "{w}");
    let duplicates = w["duplicates"].as_i64().unwrap();
    assert!(duplicates > 0, "{w}");
    // Each event (unit × Creation, Loading, Departure) stored once, its
    // duplicates counted on it.
    let (events, deliveries, unreadable) = store_counts(&work);
    assert_eq!(events as u64, 3 * units + 1);
    assert_eq!(deliveries, events + duplicates);
    assert_eq!(unreadable, 0);
    // Exported with the document and tracking ID each unit was tracked for.
    let tracked: std::collections::BTreeMap<String, (String, String)> =
        result_lines(&work.path("results.csv"))
            .into_iter()
            .filter(|l| !l[2].is_empty())
            .map(|l| (l[2].clone(), (l[0].clone(), l[1].clone())))
            .collect();
    let out = output(
        work.trackmass()
            .args(["webhooks", "export", "--out", "events.csv"]),
    );
    assert_exit(&out, 0);
    let exported = read_csv(&work.path("events.csv"));
    assert_eq!(exported.len() as u64, 3 * units + 1);
    for e in &exported {
        match tracked.get(&e["spi"]) {
            Some((doc, tid)) => {
                assert_eq!((&e["documentReference"], &e["trackingId"]), (doc, tid));
            }
            None => {
                assert_eq!(e["spi"], "CNIZZ9");
                assert_eq!(e["documentReference"], "");
            }
        }
    }
    // The board: one line per container, its last event.
    let out =
        output(
            work.trackmass()
                .args(["webhooks", "export", "--latest", "--out", "board.csv"]),
        );
    assert_exit(&out, 0);
    let board = read_csv(&work.path("board.csv"));
    assert_eq!(board.len() as u64, units + 1);
    for line in board.iter().filter(|l| l["spi"] != "CNIZZ9") {
        assert_eq!(line["alertType"], "Departure", "{line:?}");
        assert_eq!(line["events"], "3");
    }
    let status = status_json(&work, "trackmass.db");
    assert_eq!(status["events"]["containers"], units + 1);
    assert_eq!(
        status["events"]["latest"][0],
        serde_json::json!(["Departure", units])
    );
    // The path token went to SOGET in every request, but the state file
    // holds its placeholder.
    for name in [
        "trackmass.db",
        "trackmass.db-wal",
        "results.csv",
        "failures.csv",
    ] {
        let bytes = std::fs::read(work.path(name)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "{name} holds the token"
        );
    }
}

#[test]
fn a_receiver_killed_during_deliveries_gets_the_rest_from_the_senders_retries() {
    use trackmass::sandbox::{Config, Webhooks};
    let work = Workdir::new();
    let (_, _token) = register(&work);
    let (mut receiver, addr) = serve(&work);
    let port = addr.rsplit(':').next().unwrap().to_string();
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        webhooks: Some(Webhooks {
            delay: Duration::from_millis(20),
            spacing: Duration::from_millis(20),
            backoff: Duration::from_millis(100),
            retries: 8,
            duplicates: 0.1,
            events: 3,
            ..Webhooks::to(addr.clone())
        }),
        ..Config::default()
    });
    let refs = references("WK", 80);
    work.write("in.csv", reference_csv(&refs));
    let mut run = work
        .run_against(&sandbox, "in.csv")
        .args(["--webhooks", "--rate", "100/s", "--progress", "never"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let delivered = |s: &TestSandbox| s.stats()["webhooks"]["delivered"].as_u64().unwrap_or(0);
    wait_for(Duration::from_secs(30), "50 events delivered", || {
        delivered(&sandbox) >= 50
    });
    kill9(&mut receiver);
    // Back on the same port (the sender knows only that address).
    let mut back = None;
    wait_for(
        Duration::from_secs(10),
        "the receiver back on its port",
        || {
            let child = work
                .trackmass()
                .args([
                    "webhooks",
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut child = child;
            let mut first = String::new();
            use std::io::BufRead;
            let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first);
            if first.contains("listening") {
                back = Some(child);
                true
            } else {
                let _ = child.wait();
                false
            }
        },
    );
    let receiver = back.unwrap();
    assert!(run.wait().unwrap().success());
    let units = tracked_units(&work);
    wait_settled(&sandbox, 3 * units);
    let w = sandbox.stats()["webhooks"].clone();
    let (code, err) = stop(receiver);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w["failed"], 0, "{w}");
    assert!(
        w["retries"].as_u64().unwrap() > 0,
        "the kill met no delivery: {w}"
    );
    // Every event the sender saw acknowledged is stored, each once.
    let (events, deliveries, _) = store_counts(&work);
    assert_eq!(events as u64, 3 * units, "{w}");
    assert!(deliveries as u64 >= w["delivered"].as_u64().unwrap(), "{w}");
    println!("{units} units, sender: {w}; store: {events} events, {deliveries} deliveries");
}

#[test]
fn a_failures_csv_with_the_receivers_url_is_an_input_again() {
    use trackmass::sandbox::{Config, Webhooks};
    let work = Workdir::new();
    let (_, token) = register(&work);
    let (receiver, addr) = serve(&work);
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.0,
        webhooks: Some(Webhooks {
            delay: Duration::from_millis(10),
            ..Webhooks::to(addr.clone())
        }),
        ..Config::default()
    });
    work.write("in.csv", "documentReference,way\nFX1,Inport\n");
    let out = output(work.run_against(&sandbox, "in.csv").arg("--webhooks"));
    assert_exit(&out, 3);
    // failures.csv holds the placeholder, never the token.
    let failures = work.read("failures.csv");
    assert!(
        failures.contains("{webhook-token}") && !failures.contains(&token),
        "{failures}"
    );
    // Corrected and run again: sent with the real URL, so its event
    // reaches the receiver.
    work.write("fixed.csv", failures.replace("Inport", "Import"));
    let out = output(&mut work.run_against(&sandbox, "fixed.csv"));
    assert_exit(&out, 0);
    wait_for(
        Duration::from_secs(30),
        "the corrected row's events",
        || {
            sandbox.stats()["webhooks"]["delivered"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    let (code, err) = stop(receiver);
    assert_eq!(code, 0, "{err}");
    let (events, _, _) = store_counts(&work);
    assert!(events >= 1);
}
