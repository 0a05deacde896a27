//! Answers that cannot be read, from a scripted server that answers each
//! document reference with one kind of bad answer: huge bodies, wrong
//! content types, a 201 without `trackingId`, HTML pages from a proxy.
//! Each must be recorded with a clear reason, without a panic, and a 201
//! that cannot be read is never sent again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::common::*;

/// What the scripted server answers for a reference.
fn answer(reference: &str) -> Response {
    let json = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let html = |status: StatusCode| {
        (
            status,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>Bad Gateway</h1><p>nginx</p></body></html>",
        )
            .into_response()
    };
    match reference {
        "HUGE" => json(
            StatusCode::CREATED,
            format!(
                r#"{{"trackingId":"TRK1","padding":"{}"}}"#,
                "x".repeat(2 << 20)
            ),
        ),
        "NOID" => json(
            StatusCode::CREATED,
            r#"{"trackedHandlingUnits":[]}"#.into(),
        ),
        "WRONGTYPE" => json(StatusCode::CREATED, r#"{"trackingId":12}"#.into()),
        "EMPTY201" => (StatusCode::CREATED, "").into_response(),
        "HTML201" => html(StatusCode::CREATED),
        "TEXTPLAIN" => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "text/plain")],
            r#"{"trackingId":"TRK2","trackedHandlingUnits":[{"spi":"CNI1","reference":"CSQU3054383"}]}"#,
        )
            .into_response(),
        "NULLUNITS" => json(
            StatusCode::CREATED,
            r#"{"trackingId":"TRK3","trackedHandlingUnits":null}"#.into(),
        ),
        "HTML400" => html(StatusCode::BAD_REQUEST),
        "HUGE400" => json(StatusCode::BAD_REQUEST, "y".repeat(2 << 20)),
        "HTML502" => html(StatusCode::BAD_GATEWAY),
        // Cells a spreadsheet could misread, behind whitespace, invisible
        // characters, lookalikes, or with control characters.
        "LOOKALIKES" => json(
            StatusCode::CREATED,
            serde_json::json!({
                "trackingId": "\u{FF1D}HYPERLINK(\"http://x\",\"y\")",
                "trackedHandlingUnits": [
                    {"spi": "\u{200B}=1+1", "reference": " =2+2"},
                    {"spi": "\n=3", "reference": "CSQU\u{7}3054383"},
                    {"spi": "\u{A0}@SUM(A1)", "reference": "\u{202E}gnp.exe"},
                ]
            })
            .to_string(),
        ),
        _ => json(
            StatusCode::CREATED,
            r#"{"trackingId":"TRK0","trackedHandlingUnits":[]}"#.into(),
        ),
    }
}

/// The scripted server on 127.0.0.1:0, and the references it was sent.
struct Scripted {
    /// Serves until the test ends.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn start() -> Scripted {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let app = Router::new().route(
            "/track-document",
            post(move |body: Bytes| {
                let log = log.clone();
                async move {
                    let reference = reference_in(&body);
                    log.lock().expect("log").push(reference.clone());
                    answer(&reference)
                }
            }),
        );
        let (runtime, addr) = serve_on_loopback(app);
        Scripted {
            _runtime: runtime,
            addr,
            seen,
        }
    }

    fn sent(&self, reference: &str) -> usize {
        self.seen
            .lock()
            .expect("log")
            .iter()
            .filter(|r| *r == reference)
            .count()
    }
}

#[test]
fn bad_answers_are_recorded_with_a_reason_and_never_crash_the_run() {
    let server = Scripted::start();
    let work = Workdir::new();
    let refs = [
        "HUGE",
        "NOID",
        "WRONGTYPE",
        "EMPTY201",
        "HTML201",
        "TEXTPLAIN",
        "NULLUNITS",
        "HTML400",
        "HUGE400",
        "HTML502",
        "FINE",
    ];
    let csv: String = std::iter::once("documentReference".to_string())
        .chain(refs.iter().map(|r| r.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    work.write("in.csv", csv);
    let run = |work: &Workdir| {
        output(
            work.trackmass()
                .args(["run", "in.csv", "--rate", "1000/s"])
                .args(["--base-url", &format!("http://{}", server.addr)])
                .args(["--max-attempts", "2", "--backoff-base", "10ms"])
                .args(["--backoff-cap", "20ms"])
                .env("TRACKMASS_ACCESS_TOKEN", "scripted-token")
                .env("TRACKMASS_API_KEY", "scripted-key"),
        )
    };
    let out = run(&work);
    assert_exit(&out, 3);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    let failures: std::collections::BTreeMap<String, _> = read_csv(&work.path("failures.csv"))
        .into_iter()
        .map(|f| (f["documentReference"].clone(), f))
        .collect();
    let expect = |reference: &str, status: &str, http: &str, reason: &str| {
        let f = failures
            .get(reference)
            .unwrap_or_else(|| panic!("{reference} not in failures.csv: {failures:?}"));
        assert_eq!(f["status"], status, "{reference}: {f:?}");
        assert_eq!(f["httpStatus"], http, "{reference}: {f:?}");
        let text = format!("{} {}", f["message"], f["details"]);
        assert!(
            text.contains(reason),
            "{reference}: {reason:?} not in {text:?}"
        );
        assert!(
            text.len() < 2000,
            "{reference}: reason of {} bytes",
            text.len()
        );
    };
    expect("HUGE", "bad_response", "201", "limit");
    expect("NOID", "bad_response", "201", "without a trackingId");
    expect("WRONGTYPE", "bad_response", "201", "unreadable body");
    expect("EMPTY201", "bad_response", "201", "unreadable body");
    expect("HTML201", "bad_response", "201", "<html>");
    expect("HTML400", "failed", "400", "Bad Gateway");
    expect("HUGE400", "failed", "400", "limit");
    expect("HTML502", "exhausted", "502", "HTTP 502");

    // Readable answers are tracked, whatever their content type says.
    let results = result_lines(&work.path("results.csv"));
    let tracked: Vec<&str> = results.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(tracked, ["TEXTPLAIN", "NULLUNITS", "FINE"]);
    assert_eq!(results[0][3], "CSQU3054383");

    // A 201 that could not be read is never sent again; the rerun sends
    // nothing at all.
    for r in refs {
        let expected = if r == "HTML502" { 2 } else { 1 };
        assert_eq!(server.sent(r), expected, "{r}");
    }
    let out = run(&work);
    assert_exit(&out, 3);
    for r in ["HUGE", "NOID", "WRONGTYPE", "EMPTY201", "HTML201"] {
        assert_eq!(server.sent(r), 1, "{r} was sent again");
    }
}

#[test]
fn api_cells_a_spreadsheet_could_misread_are_guarded_and_read_back() {
    let server = Scripted::start();
    let work = Workdir::new();
    work.write("in.csv", "documentReference\nLOOKALIKES\n");
    let out = output(
        work.trackmass()
            .args(["run", "in.csv", "--rate", "1000/s"])
            .args(["--base-url", &format!("http://{}", server.addr)])
            .env("TRACKMASS_ACCESS_TOKEN", "scripted-token")
            .env("TRACKMASS_API_KEY", "scripted-key"),
    );
    assert_exit(&out, 0);
    let raw = std::fs::read_to_string(work.path("results.csv")).unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(raw.as_bytes());
    let mut cells = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        cells.extend([
            record[1].to_string(),
            record[2].to_string(),
            record[3].to_string(),
        ]);
    }
    let expected = [
        "\u{FF1D}HYPERLINK(\"http://x\",\"y\")",
        "\u{200B}=1+1",
        " =2+2",
        "\u{FF1D}HYPERLINK(\"http://x\",\"y\")",
        "\n=3",
        "CSQU\u{7}3054383",
        "\u{FF1D}HYPERLINK(\"http://x\",\"y\")",
        "\u{A0}@SUM(A1)",
        "\u{202E}gnp.exe",
    ];
    assert_eq!(cells.len(), expected.len(), "{cells:?}");
    for (written, value) in cells.iter().zip(expected) {
        // Every one behind a quote, and the reader gives the value back.
        assert_eq!(written, &format!("'{value}"), "{written:?}");
        assert_eq!(trackmass::testing::input::unneutralise(written), value);
    }
}
