//! Token renewal against a scripted server whose answers depend on each
//! document's attempt number: a 401 that comes long after a fresh token,
//! once the API has accepted that token, means it ran out early (revoked),
//! not that the credentials are wrong; a fresh token refused on first use
//! does mean that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::common::*;

/// One answer of the script.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The service's 401 for an expired or revoked token.
    Unauthorized,
    /// The same, once another reference was sent with the same token,
    /// and this many milliseconds later.
    SlowUnauthorized(u64),
    /// 503 with `Retry-After` in seconds.
    Unavailable(u32),
    Created,
}

#[derive(Default)]
struct Log {
    attempts: HashMap<String, usize>,
    /// (reference, token) of every request, in arrival order.
    requests: Vec<(String, String)>,
    tokens: u64,
}

/// The scripted server on 127.0.0.1:0: `/token` hands out `tok1`, `tok2`,
/// …; `/track-document` answers a reference's nth request with the nth
/// step of its script (the last step from then on).
struct Scripted {
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Scripted {
    fn start(script: HashMap<&'static str, Vec<Step>>) -> Scripted {
        let log: Arc<Mutex<Log>> = Arc::default();
        let (token_log, track_log) = (log.clone(), log.clone());
        let script = Arc::new(script);
        let app = Router::new()
            .route(
                "/token",
                post(move || {
                    let log = token_log.clone();
                    async move {
                        let n = {
                            let mut l = log.lock().expect("log");
                            l.tokens += 1;
                            l.tokens
                        };
                        json(
                            StatusCode::OK,
                            format!(r#"{{"access_token":"tok{n}","expires_in":300}}"#),
                        )
                    }
                }),
            )
            .route(
                "/track-document",
                post(move |headers: HeaderMap, body: Bytes| {
                    let (log, script) = (track_log.clone(), script.clone());
                    async move {
                        let reference = reference_in(&body);
                        let token = headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .trim_start_matches("Bearer ")
                            .to_string();
                        let nth = {
                            let mut l = log.lock().expect("log");
                            l.requests.push((reference.clone(), token.clone()));
                            let n = l.attempts.entry(reference.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let steps = script.get(reference.as_str()).cloned().unwrap_or_default();
                        let step = steps
                            .get(nth - 1)
                            .or(steps.last())
                            .copied()
                            .unwrap_or(Step::Created);
                        if let Step::SlowUnauthorized(ms) = step {
                            // Bounded poll for another row through with this
                            // token, then time for the job to read its 201.
                            for _ in 0..1000 {
                                let passed = log
                                    .lock()
                                    .expect("log")
                                    .requests
                                    .iter()
                                    .any(|(r, t)| *r != reference && *t == token);
                                if passed {
                                    break;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        answer(step, &reference)
                    }
                }),
            );
        let (runtime, addr) = serve_on_loopback(app);
        Scripted {
            _runtime: runtime,
            addr,
            log,
        }
    }

    fn run(&self, work: &Workdir) -> std::process::Output {
        output(
            work.trackmass()
                .args(["run", "in.csv", "--rate", "100/s", "--concurrency", "2"])
                .args(["--base-url", &format!("http://{}", self.addr)])
                .args(["--token-url", &format!("http://{}/token", self.addr)])
                .env("TRACKMASS_API_KEY", "scripted-key")
                .env("TRACKMASS_CLIENT_ID", "scripted-client")
                .env("TRACKMASS_CLIENT_SECRET", "scripted-secret"),
        )
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.log.lock().expect("log").requests.clone()
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn answer(step: Step, reference: &str) -> Response {
    match step {
        Step::Unauthorized | Step::SlowUnauthorized(_) => json(
            StatusCode::UNAUTHORIZED,
            r#"{"code":"UNAUTHORIZED","message":"Invalid or expired access token"}"#.into(),
        ),
        Step::Unavailable(seconds) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, seconds.to_string())],
            "",
        )
            .into_response(),
        Step::Created => json(
            StatusCode::CREATED,
            format!(
                r#"{{"trackingId":"TRK-{reference}","trackedHandlingUnits":[{{"spi":"CNI1","reference":"CSQU3054383"}}]}}"#
            ),
        ),
    }
}

#[test]
fn a_token_revoked_while_a_row_waits_to_retry_is_renewed_again() {
    use Step::*;
    // LATE: 401 (tok1), fresh tok2, 503 asking for 3 s, then 401 on tok2,
    // which the API accepted from EARLY in the meantime (at about 1 s).
    let server = Scripted::start(HashMap::from([
        (
            "LATE",
            vec![Unauthorized, Unavailable(3), Unauthorized, Created],
        ),
        ("EARLY", vec![Unavailable(1), Created]),
    ]));
    let work = Workdir::new();
    work.write("in.csv", "documentReference\nLATE\nEARLY\n");
    let out = server.run(&work);
    assert_exit(&out, 0);
    let tracked: Vec<String> = result_lines(&work.path("results.csv"))
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(tracked, ["LATE", "EARLY"]);
    let late: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|(r, _)| r == "LATE")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        late,
        ["tok1", "tok2", "tok2", "tok3"],
        "{:?}",
        server.requests()
    );
}

#[test]
fn a_fresh_token_refused_on_first_use_stops_the_run() {
    use Step::*;
    let server = Scripted::start(HashMap::from([
        ("DENIED", vec![Unauthorized]),
        ("OTHER", vec![Unauthorized]),
    ]));
    let work = Workdir::new();
    work.write("in.csv", "documentReference\nDENIED\nOTHER\n");
    let out = server.run(&work);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("even a freshly issued one"), "{err}");
    // At most one fresh token per row that met the first 401.
    let tokens = server.log.lock().expect("log").tokens;
    assert!(tokens <= 3, "{tokens} tokens fetched");
}

#[test]
fn a_row_whose_fresh_tokens_keep_being_revoked_stops_the_run_saying_so() {
    use Step::*;
    // REVOKED meets a 401 for every token once another row got through
    // with it (300 rows at 100/s outlast REVOKED's 5 tries).
    let script = HashMap::from([("REVOKED", vec![SlowUnauthorized(200)])]);
    let others: Vec<String> = (0..300).map(|i| format!("OK{i:03}")).collect();
    let server = Scripted::start(script);
    let work = Workdir::new();
    work.write(
        "in.csv",
        format!("documentReference\nREVOKED\n{}\n", others.join("\n")),
    );
    let out = server.run(&work);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("refused 4 fresh access tokens for line 2")
            && err.contains("revoked before their expires_in"),
        "{err}"
    );
    assert!(!err.contains("even a freshly issued one"), "{err}");
    // The first token, then one per renewal.
    let revoked: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|(r, _)| r == "REVOKED")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(revoked, ["tok1", "tok2", "tok3", "tok4", "tok5"]);
}
