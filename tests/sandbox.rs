//! The sandbox over HTTP: token endpoint, gateway, service, faults, ledger,
//! webhooks. Each test starts its own sandbox on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackmass::sandbox::{Config, Faults, Quota, RateLimit, Webhooks};

use crate::common::*;

/// An answer as the tests look at it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// What a raw exchange gave: status, headers and the body (or why it could
/// not be read), or why no answer came at all.
type Raw = Result<(u16, reqwest::header::HeaderMap, Result<Vec<u8>, String>), String>;

/// A form for the token endpoint.
type Form<'a> = &'a [(&'a str, &'a str)];

/// The sandbox's shared client; `timeout` applies per request.
fn client(sandbox: &TestSandbox) -> &reqwest::Client {
    sandbox.client()
}

fn token_request(sandbox: &TestSandbox, form: &[(&str, &str)]) -> Answer {
    sandbox.block_on(async {
        let r = client(sandbox)
            .post(sandbox.token_url())
            .timeout(Duration::from_secs(5))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Answer {
            status,
            headers,
            body: r.json().await.unwrap(),
        }
    })
}

fn token(sandbox: &TestSandbox) -> String {
    sandbox.access_token()
}

/// POSTs `body` to track-document with the given key and token.
fn track_with(
    sandbox: &TestSandbox,
    key: Option<&str>,
    token: Option<&str>,
    body: &Value,
    timeout: Duration,
) -> Raw {
    sandbox.block_on(async {
        let mut req = client(sandbox)
            .post(format!("{}/track-document", sandbox.base_url()))
            .timeout(timeout)
            .json(body);
        if let Some(k) = key {
            req = req.header("Ocp-Apim-Subscription-Key", k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("{e:?}"));
        Ok((status, headers, body))
    })
}

fn track(sandbox: &TestSandbox, token: &str, body: &Value) -> Answer {
    let (status, headers, bytes) = track_with(
        sandbox,
        Some(API_KEY),
        Some(token),
        body,
        Duration::from_secs(10),
    )
    .unwrap();
    let bytes = bytes.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn quiet() -> Config {
    Config {
        unknown_rate: 0.0,
        ..Config::default()
    }
}

#[test]
fn the_token_endpoint_answers_as_keycloak_does() {
    let sandbox = TestSandbox::with_config(quiet());
    let ok = token_request(
        &sandbox,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "client_credentials"),
        ],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers["cache-control"], "no-store");
    assert_eq!(ok.headers["pragma"], "no-cache");
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 300);
    assert_eq!(ok.body["refresh_expires_in"], 0);
    assert!(ok.body["access_token"].as_str().unwrap().len() > 20);
    assert!(ok.body.get("refresh_token").is_none());

    let cases: [(Form, u16, &str, &str); 5] = [
        (
            &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            400,
            "invalid_request",
            "Missing form parameter: grant_type",
        ),
        (
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "password"),
            ],
            400,
            "unsupported_grant_type",
            "Unsupported grant_type",
        ),
        (
            &[
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_client",
            "Missing client_id parameter",
        ),
        (
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", "nope"),
                ("grant_type", "client_credentials"),
            ],
            401,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        ),
        (
            &[
                ("client_id", CLIENT_ID),
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
            "duplicated parameter",
        ),
    ];
    for (form, status, error, description) in cases {
        let a = token_request(&sandbox, form);
        assert_eq!(a.status, status, "{form:?}: {a:?}");
        assert_eq!(a.body["error"], error, "{form:?}");
        assert_eq!(a.body["error_description"], description, "{form:?}");
        assert_eq!(a.headers["cache-control"], "no-store");
    }
    assert_eq!(sandbox.stats()["tokens_issued"], 1);
}

#[test]
fn expired_and_unknown_tokens_get_the_services_401() {
    let sandbox = TestSandbox::with_config(Config {
        token_ttl: Duration::from_millis(300),
        ..quiet()
    });
    let t = token(&sandbox);
    let body = json!({"documentReference": "EXP1"});
    assert_eq!(track(&sandbox, &t, &body).status, 201);
    // Wait (bounded) for the token to expire.
    let mut last = None;
    wait_for(Duration::from_secs(10), "the token to expire", || {
        let a = track(&sandbox, &t, &body);
        let expired = a.status == 401;
        last = Some(a);
        expired
    });
    let a = last.unwrap();
    assert_eq!(a.body["message"], "Invalid or expired access token");
    assert!(
        a.body.get("statusCode").is_none(),
        "service errors are HttpBusinessError: {}",
        a.body
    );
    let unknown = track(&sandbox, "made-up", &body);
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.body["code"], "UNAUTHORIZED");
}

#[test]
fn the_gateway_checks_the_subscription_key_first() {
    let sandbox = TestSandbox::with_config(quiet());
    let t = token(&sandbox);
    let body = json!({"documentReference": "GW1"});
    for (key, word) in [(None, "missing"), (Some("wrong"), "invalid")] {
        // Even without a token: the gateway answers before the service.
        for tok in [None, Some(t.as_str())] {
            let (status, headers, bytes) =
                track_with(&sandbox, key, tok, &body, Duration::from_secs(5)).unwrap();
            assert_eq!(status, 401);
            let v: Value = serde_json::from_slice(&bytes.unwrap()).unwrap();
            assert_eq!(v["statusCode"], 401);
            assert!(
                v["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("{word} subscription key")),
                "{v}"
            );
            let www = headers["www-authenticate"].to_str().unwrap();
            assert!(
                www.starts_with("AzureApiManagementKey")
                    && www.contains("Ocp-Apim-Subscription-Key"),
                "{www}"
            );
        }
    }
    // The key may also come as a query parameter.
    let via_query = sandbox.block_on(async {
        client(&sandbox)
            .post(format!(
                "{}/track-document?subscription-key={API_KEY}",
                sandbox.base_url()
            ))
            .bearer_auth(&t)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(via_query, 201);
    assert_eq!(sandbox.outcome("unauthorized_key"), 4);
    assert_eq!(sandbox.outcome("created"), 1);
}

#[test]
fn unknown_routes_get_the_gateways_404() {
    let sandbox = TestSandbox::with_config(quiet());
    for path in [
        "/api-tracking-code-in-mass/v1/track-documents",
        "/",
        "/api-tracking-code/v1/track-handling-unit",
    ] {
        let (status, body) = sandbox.block_on(async {
            let r = client(&sandbox)
                .post(sandbox.url(path))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            body,
            json!({"statusCode": 404, "message": "Resource not found"})
        );
    }
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    let sandbox = TestSandbox::with_config(Config {
        rate_limit: Some(RateLimit {
            calls: 5,
            period: Duration::from_secs(60),
        }),
        ..quiet()
    });
    let t = token(&sandbox);
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            track(
                &sandbox,
                &t,
                &json!({"documentReference": format!("RL{i}")}),
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [201, 201, 201, 201, 201, 429, 429, 429]);
    let a = track(&sandbox, &t, &json!({"documentReference": "RL9"}));
    assert_eq!(a.status, 429);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(a.body["statusCode"], 429);
    assert_eq!(
        a.body["message"],
        format!("Rate limit is exceeded. Try again in {retry} seconds.")
    );
    assert_eq!(sandbox.outcome("rate_limited"), 4);
}

#[test]
fn a_spent_quota_answers_403_until_it_replenishes() {
    let sandbox = TestSandbox::with_config(Config {
        quota: Some(Quota {
            calls: 3,
            period: Duration::from_secs(2 * 86_400 + 3600),
        }),
        ..quiet()
    });
    let t = token(&sandbox);
    for i in 0..3 {
        assert_eq!(
            track(&sandbox, &t, &json!({"documentReference": format!("Q{i}")})).status,
            201
        );
    }
    let a = track(&sandbox, &t, &json!({"documentReference": "Q3"}));
    assert_eq!(a.status, 403);
    let message = a.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Out of call volume quota. Quota will be replenished in 2.0"),
        "{message}"
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 2 * 86_400 && retry <= 2 * 86_400 + 3600, "{retry}");
}

#[test]
fn unknown_documents_duplicates_and_validation() {
    let config = Config {
        unknown_rate: 0.5,
        ..Config::default()
    };
    let sandbox = TestSandbox::with_config(config.clone());
    let t = token(&sandbox);
    let known = (0..100)
        .map(|i| format!("DOC{i}"))
        .find(|r| trackmass::sandbox::catalogue::is_known(config.seed, r, config.unknown_rate))
        .unwrap();
    let unknown = (0..100)
        .map(|i| format!("DOC{i}"))
        .find(|r| !trackmass::sandbox::catalogue::is_known(config.seed, r, config.unknown_rate))
        .unwrap();

    let a = track(&sandbox, &t, &json!({"documentReference": unknown}));
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], "DOCUMENT_NOT_FOUND");
    assert_eq!(a.body["subErrors"][0]["field"], "documentReference");
    assert_eq!(a.body["subErrors"][0]["rejectedValue"], unknown.as_str());

    let first = track(
        &sandbox,
        &t,
        &json!({"documentReference": known, "way": "Import"}),
    );
    let again = track(
        &sandbox,
        &t,
        &json!({"documentReference": known, "way": "Export"}),
    );
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body["trackingId"], again.body["trackingId"]);
    assert_eq!(sandbox.outcome("created"), 1);
    assert_eq!(sandbox.outcome("duplicate"), 1);
    assert_eq!(sandbox.creations()[&known], 2);

    let bad = track(
        &sandbox,
        &t,
        &json!({"documentReference": known, "place": "x".repeat(21), "colour": "red"}),
    );
    assert_eq!(bad.status, 400);
    let fields: Vec<&str> = bad.body["subErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields.len(), 2, "{}", bad.body);
    assert!(
        fields.contains(&"place") && fields.contains(&"colour"),
        "{fields:?}"
    );

    // Not JSON, and not declared as JSON.
    let (status, _, _) = sandbox.block_on(async {
        let r = client(&sandbox)
            .post(format!("{}/track-document", sandbox.base_url()))
            .header("Ocp-Apim-Subscription-Key", API_KEY)
            .bearer_auth(&t)
            .header("Content-Type", "text/plain")
            .body("documentReference=X")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), (), ())
    });
    assert_eq!(status, 415);
}

/// One request with a single fault at rate 1.
fn with_fault(faults: Faults, timeout: Duration) -> (TestSandbox, Raw) {
    let sandbox = TestSandbox::with_config(Config { faults, ..quiet() });
    let t = token(&sandbox);
    let r = track_with(
        &sandbox,
        Some(API_KEY),
        Some(&t),
        &json!({"documentReference": "F1"}),
        timeout,
    );
    (sandbox, r)
}

#[test]
fn status_faults_answer_like_the_infrastructure_would() {
    for (faults, status) in [
        (
            Faults {
                status_500: 1.0,
                ..Faults::default()
            },
            500,
        ),
        (
            Faults {
                status_502: 1.0,
                ..Faults::default()
            },
            502,
        ),
        (
            Faults {
                status_503: 1.0,
                ..Faults::default()
            },
            503,
        ),
        (
            Faults {
                status_504: 1.0,
                ..Faults::default()
            },
            504,
        ),
    ] {
        let (sandbox, r) = with_fault(faults, Duration::from_secs(5));
        let (got, headers, body) = r.unwrap();
        assert_eq!(got, status);
        let body = body.unwrap();
        match status {
            502 => assert!(
                String::from_utf8_lossy(&body).contains("<html>"),
                "a proxy's page"
            ),
            503 => {
                assert!(headers.contains_key("retry-after"));
                assert_eq!(
                    serde_json::from_slice::<Value>(&body).unwrap()["statusCode"],
                    503
                );
            }
            _ => assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap()["statusCode"],
                status
            ),
        }
        assert_eq!(sandbox.outcome(&format!("fault_{status}")), 1);
        // 502 and 503 come from in front of the service: nothing created.
        if matches!(status, 502 | 503) {
            assert!(sandbox.creations().is_empty());
        }
    }
}

#[test]
fn dropped_connections_hangs_and_broken_bodies() {
    let (sandbox, r) = with_fault(
        Faults {
            drop: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    );
    let err = r.unwrap_err();
    assert!(!err.contains("TimedOut"), "closed, not timed out: {err}");
    assert_eq!(sandbox.outcome("fault_drop"), 1);

    let started = Instant::now();
    let (sandbox, r) = with_fault(
        Faults {
            hang: 1.0,
            ..Faults::default()
        },
        Duration::from_millis(300),
    );
    let err = r.unwrap_err();
    assert!(
        err.contains("TimedOut") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sandbox.outcome("fault_hang"), 1);

    let (sandbox, r) = with_fault(
        Faults {
            malformed: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    );
    let (status, _, body) = r.unwrap();
    assert_eq!(status, 201);
    assert!(
        serde_json::from_slice::<Value>(&body.unwrap()).is_err(),
        "the body should not parse"
    );
    assert_eq!(
        sandbox.creations()["F1"],
        1,
        "a malformed 201 still created the tracking"
    );

    let (sandbox, r) = with_fault(
        Faults {
            truncate: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    );
    let (status, _, body) = r.unwrap();
    assert_eq!(status, 201);
    assert!(body.is_err(), "the body should be cut short");
    assert_eq!(sandbox.outcome("fault_truncate"), 1);
}

#[test]
fn latency_delays_every_answer() {
    let sandbox = TestSandbox::with_config(Config {
        faults: Faults {
            latency: Duration::from_millis(150),
            ..Faults::default()
        },
        ..quiet()
    });
    let t = token(&sandbox);
    let started = Instant::now();
    assert_eq!(
        track(&sandbox, &t, &json!({"documentReference": "L1"})).status,
        201
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn chaos_mixes_every_fault_reproducibly_for_a_seed() {
    let run = |seed: u64| -> Vec<String> {
        let sandbox = TestSandbox::with_config(Config {
            seed,
            faults: Faults {
                latency: Duration::ZERO,
                latency_spread: Duration::ZERO,
                ..Faults::chaos()
            },
            ..quiet()
        });
        let t = token(&sandbox);
        (0..600)
            .map(|i| {
                match track_with(
                    &sandbox,
                    Some(API_KEY),
                    Some(&t),
                    &json!({"documentReference": format!("CH{i}")}),
                    Duration::from_millis(500),
                ) {
                    Ok((s, _, Ok(b)))
                        if s == 201 && serde_json::from_slice::<Value>(&b).is_err() =>
                    {
                        "malformed".into()
                    }
                    Ok((s, _, Ok(_))) => s.to_string(),
                    Ok((s, _, Err(_))) => format!("{s}-cut"),
                    Err(e) if e.contains("TimedOut") => "timeout".into(),
                    Err(_) => "dropped".into(),
                }
            })
            .collect()
    };
    let a = run(11);
    assert_eq!(a, run(11), "same seed, same faults");
    assert_ne!(a, run(12), "another seed, other faults");
    let mut kinds = BTreeMap::new();
    for k in &a {
        *kinds.entry(k.as_str()).or_insert(0) += 1;
    }
    for kind in [
        "201",
        "500",
        "502",
        "503",
        "504",
        "dropped",
        "timeout",
        "malformed",
        "201-cut",
    ] {
        assert!(kinds.contains_key(kind), "{kind} missing from {kinds:?}");
    }
    assert!(kinds["201"] > 480, "{kinds:?}");
}

#[test]
fn the_ledger_resets() {
    let sandbox = TestSandbox::with_config(quiet());
    let t = token(&sandbox);
    track(&sandbox, &t, &json!({"documentReference": "R1"}));
    assert_eq!(sandbox.outcome("created"), 1);
    let status = sandbox.block_on(async {
        client(&sandbox)
            .post(sandbox.url("/_sandbox/reset"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let stats = sandbox.stats();
    assert_eq!(stats["requests"], json!({}));
    assert_eq!(stats["creations"], 0);
    assert_eq!(stats["tokens_issued"], 0);
}

#[test]
fn webhooks_are_delivered_in_the_specs_shape() {
    use axum::routing::post;
    let received: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
    let sink = received.clone();
    let receiver = TestSandbox::with_config(quiet()); // borrow its runtime
    let hook_addr = receiver.block_on(async move {
        let app = axum::Router::new().route(
            // The target plus the registered URL's path.
            "/hook/events",
            post(
                move |headers: axum::http::HeaderMap, axum::Json(v): axum::Json<Value>| {
                    let sink = sink.clone();
                    async move {
                        let original = headers
                            .get("x-sandbox-registered-url")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        sink.lock().unwrap().push((v, original));
                        "ok"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let config = Config {
        webhooks: Some(Webhooks {
            delay: Duration::from_millis(50),
            ..Webhooks::to(format!("http://{hook_addr}/hook"))
        }),
        ..quiet()
    };
    let sandbox = TestSandbox::with_config(config.clone());
    let t = token(&sandbox);
    let reference = (0..50)
        .map(|i| format!("WH{i}"))
        .find(|r| {
            trackmass::sandbox::catalogue::document(config.seed, r)
                .units
                .len()
                >= 2
        })
        .unwrap();
    let url = "https://hooks.transitaire-normand.fr/events";
    let a = track(
        &sandbox,
        &t,
        &json!({"documentReference": reference, "way": "Export", "place": "TNMSC", "url": url}),
    );
    assert_eq!(a.status, 201);
    // A request without url registers no webhook.
    track(&sandbox, &t, &json!({"documentReference": "NOHOOK"}));
    let units = a.body["trackedHandlingUnits"].as_array().unwrap().len();
    wait_for(Duration::from_secs(10), "webhook calls", || {
        received.lock().unwrap().len() >= units
    });
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), units);
    for (payload, original) in &got {
        assert_eq!(original, url);
        let hu = &payload["HandlingUnit"];
        assert_eq!(hu["FreightFamily"], "Container");
        assert_eq!(hu["Events"][0]["AlertType"], "Creation");
        assert_eq!(hu["Events"][0]["Direction"], "Export");
        assert_eq!(hu["Events"][0]["Location"], "TNMSC");
        assert!(hu["Spi"].as_str().unwrap().starts_with("CNI"));
        assert_eq!(hu["Reference"].as_str().unwrap().len(), 11);
    }
    // The sandbox counts a delivery once its answer is read, which can be
    // after the receiver above has pushed the payload: wait for the count.
    wait_for(Duration::from_secs(10), "the delivery count", || {
        sandbox.stats()["webhooks_delivered"].as_u64() >= Some(units as u64)
    });
    assert_eq!(sandbox.stats()["webhooks_delivered"], units as u64);
}

#[test]
fn two_sandbox_processes_with_one_seed_give_the_same_answers() {
    let work = Workdir::new();
    let answers = |seed: &str| -> Vec<Value> {
        let (mut child, base) = spawn_sandbox(&work, &["--seed", seed, "--unknown-rate", "10%"]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let tok =
                fetch_token(&c, &format!("{base}/soget-connect/v1/openid-connect/token")).await;
            let mut out = Vec::new();
            for i in 0..30 {
                let v: Value = c
                    .post(format!(
                        "{base}/api-tracking-code-in-mass/v1/track-document"
                    ))
                    .header("Ocp-Apim-Subscription-Key", API_KEY)
                    .bearer_auth(&tok)
                    .json(&json!({"documentReference": format!("SEED{i}")}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                out.push(
                    v.get("trackingId")
                        .cloned()
                        .unwrap_or_else(|| v["code"].clone()),
                );
            }
            out
        });
        kill9(&mut child);
        out
    };
    let a = answers("5");
    assert_eq!(a, answers("5"));
    assert_ne!(a, answers("6"));
    assert!(a.iter().any(|v| v == "DOCUMENT_NOT_FOUND"), "{a:?}");
}

#[test]
fn the_sandbox_process_ends_cleanly_on_sigterm_and_on_ctrl_c() {
    let work = Workdir::new();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (mut child, base) = spawn_sandbox(&work, &[]);
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        signal(&child, sig);
        let mut status = None;
        wait_for(Duration::from_secs(10), "the sandbox to exit", || {
            status = child.try_wait().expect("its status");
            status.is_some()
        });
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "signal {sig}: {status:?}"
        );
    }
}
