//! Conformance with the vendor's spec, checked by an independent JSON
//! Schema validator (the `jsonschema` crate, which gives `pattern` its
//! ECMA-262 meaning) reading `spec/api-tracking-code-in-mass.yaml`.
//!
//! - Every body trackmass would send validates; every row it refuses
//!   would have been refused by the spec too (or breaks one of the few
//!   stricter rules the README documents).
//! - The sandbox accepts exactly the bodies the spec accepts, and its 201,
//!   400 and 401 answers validate against the spec's response schemas.

use serde_json::{Value, json};

use crate::common::*;
use trackmass::testing::input::{Fields, validate_fields};

/// The spec's `components`, with OpenAPI 3.0's `nullable: true` turned
/// into JSON Schema's `type: [T, "null"]`.
fn components() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/spec/api-tracking-code-in-mass.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let spec: Value = serde_norway::from_str(&text).unwrap();
    let mut components = spec["components"].clone();
    nullable_to_type(&mut components);
    components
}

fn nullable_to_type(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            map.values_mut().for_each(nullable_to_type);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_type),
        _ => {}
    }
}

fn validator(schema_name: &str) -> jsonschema::Validator {
    let root = json!({
        "$ref": format!("#/components/schemas/{schema_name}"),
        "components": components(),
    });
    jsonschema::validator_for(&root).unwrap()
}

/// Values a cell may hold, good and bad, for each field.
struct Pools {
    references: Vec<String>,
    ways: Vec<String>,
    places: Vec<String>,
    agents: Vec<String>,
    urls: Vec<String>,
}

fn pools() -> Pools {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Pools {
        references: s(&[
            "3714238101",
            "LEH2025000123",
            "BL \"7\" – Zürich",
            "港口-42",
            "",
            "A\u{1}B",
            "x",
        ]),
        ways: s(&[
            "",
            "Import",
            "import",
            "EXPORT",
            "DomesticTranshipment",
            "Inport",
            "Unknown ",
            "null",
        ]),
        places: vec![
            String::new(),
            "MTDF".into(),
            "É".repeat(20),
            "É".repeat(21),
            "a".repeat(20),
            "a".repeat(21),
            "LE\nHAVRE".into(),
        ],
        agents: vec![
            String::new(),
            "CCGM".into(),
            "A".repeat(64),
            "A".repeat(65),
            "ü".repeat(64),
        ],
        urls: s(&[
            "",
            "https://my-webhook-endpoints.com",
            "http://hooks.example.fr/soget/events",
            "hooks.example.org/a_b",
            "https://Hooks.Example.com",
            "https://hooks.example.com:8443/x",
            "http://127.0.0.1/hook",
            "https://hooks.example.com/é",
            "https://hooks.example.com/a?b=c",
            "https://hooks.example.com/x\n",
        ]),
    }
}

fn pick<'a>(rng: &mut fastrand::Rng, pool: &'a [String]) -> &'a str {
    &pool[rng.usize(..pool.len())]
}

/// The body a row would produce if sent without any checking: trimmed
/// empty cells left out, everything else as written.
fn naive_body(f: &Fields<'_>) -> Value {
    let mut body = json!({"documentReference": f.document_reference});
    for (key, value) in [
        ("way", f.way),
        ("place", f.place),
        ("agentCode", f.agent_code),
        ("url", f.url),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            // Case-insensitive `way` is trackmass's documented leniency: it
            // sends the spec's spelling, so compare with that.
            let v = match key {
                "way" => trackmass::spec::canonical_way(v).unwrap_or(v),
                _ => v,
            };
            body[key] = json!(v);
        }
    }
    body
}

#[test]
fn every_body_trackmass_builds_validates_and_every_refusal_is_the_specs() {
    let post = validator("TrackingBatchPost");
    let pools = pools();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..5000 {
        let fields = Fields {
            document_reference: pick(&mut rng, &pools.references),
            way: Some(pick(&mut rng, &pools.ways)),
            place: Some(pick(&mut rng, &pools.places)),
            agent_code: Some(pick(&mut rng, &pools.agents)),
            url: Some(pick(&mut rng, &pools.urls)),
        };
        match validate_fields(&fields) {
            Ok(body) => {
                accepted += 1;
                let body: Value = serde_json::from_str(&body).unwrap();
                assert!(
                    post.is_valid(&body),
                    "trackmass built an invalid body: {body}"
                );
                assert_eq!(body, naive_body(&fields), "the body differs from the row");
            }
            Err(problems) => {
                refused += 1;
                let naive = naive_body(&fields);
                // Stricter than the spec only about control characters.
                let stricter = problems
                    .iter()
                    .all(|p| p.message.contains("control character"));
                assert!(
                    !post.is_valid(&naive) || stricter,
                    "trackmass refused a body the spec allows: {naive} ({problems:?})"
                );
            }
        }
    }
    assert!(
        accepted > 200 && refused > 200,
        "{accepted} accepted, {refused} refused"
    );
}

/// Random JSON values of every type, for the sandbox's validation.
fn random_value(rng: &mut fastrand::Rng, pools: &Pools) -> Value {
    match rng.u8(..10) {
        0 => Value::Null,
        1 => json!(rng.i32(..)),
        2 => json!(rng.bool()),
        3 => json!(["Import"]),
        4 => json!(pick(rng, &pools.references)),
        5 => json!(pick(rng, &pools.ways)),
        6 => json!(pick(rng, &pools.places)),
        7 => json!(pick(rng, &pools.agents)),
        _ => json!(pick(rng, &pools.urls)),
    }
}

fn random_body(rng: &mut fastrand::Rng, pools: &Pools) -> Value {
    let mut body = serde_json::Map::new();
    if rng.u8(..10) > 0 {
        body.insert(
            "documentReference".into(),
            json!(pick(rng, &pools.references)),
        );
    }
    for key in [
        "documentReference",
        "way",
        "place",
        "agentCode",
        "url",
        "extra",
    ] {
        if rng.u8(..3) == 0 {
            body.insert(key.into(), random_value(rng, pools));
        }
    }
    Value::Object(body)
}

#[test]
fn the_sandbox_accepts_exactly_what_the_spec_accepts() {
    let post = validator("TrackingBatchPost");
    let pools = pools();
    let mut rng = fastrand::Rng::with_seed(42);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..5000 {
        let body = random_body(&mut rng, &pools);
        let spec_says = post.is_valid(&body);
        let sandbox_says = trackmass::sandbox::validate_body(&body).is_ok();
        assert_eq!(sandbox_says, spec_says, "disagreement on {body}");
        if spec_says {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        accepted > 200 && refused > 200,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn the_sandboxs_answers_follow_the_response_schemas() {
    let created = validator("TrackingBatchResponseModel");
    let error = validator("HttpBusinessError");
    // A third of the documents unknown, so that DOCUMENT_NOT_FOUND answers
    // are checked too.
    let sandbox = TestSandbox::with_config(trackmass::sandbox::Config {
        unknown_rate: 0.3,
        ..Default::default()
    });
    let pools = pools();
    let mut rng = fastrand::Rng::with_seed(7);
    let client = sandbox.client().clone();
    let bearer = format!("Bearer {}", sandbox.access_token());
    let endpoint = format!("{}/track-document", sandbox.base_url());
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        let body = random_body(&mut rng, &pools);
        let auth = if i % 25 == 0 {
            "Bearer expired-or-unknown"
        } else {
            bearer.as_str()
        };
        let (status, answer): (u16, Value) = sandbox.block_on(async {
            let r = client
                .post(&endpoint)
                .header("Authorization", auth)
                .header("Ocp-Apim-Subscription-Key", API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        });
        let kind = format!("{status} {}", answer["code"].as_str().unwrap_or(""));
        *statuses.entry(kind).or_insert(0) += 1;
        let schema = match status {
            201 => &created,
            400 | 401 => &error,
            other => panic!("unexpected status {other} for {body}"),
        };
        assert!(
            schema.is_valid(&answer),
            "{status} answer does not follow the spec: {answer}"
        );
    }
    for kind in [
        "201 ",
        "400 INVALID_REQUEST",
        "400 DOCUMENT_NOT_FOUND",
        "401 UNAUTHORIZED",
    ] {
        assert!(
            statuses.contains_key(kind),
            "{kind} not exercised: {statuses:?}"
        );
    }
}
