//! Conformance against Prism (`@stoplight/prism-cli`), an OpenAPI mock
//! server nobody here wrote: it validates every request against the
//! vendor's spec and answers with the spec's example.
//!
//! `.ci/run` installs Prism (`npm ci --prefix tools/prism`, version pinned
//! in `tools/prism/package-lock.json`) and sets `TRACKMASS_REQUIRE_PRISM=1`,
//! so there it always runs. Elsewhere, without Node.js, the test says on
//! stderr that it is skipped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/spec/api-tracking-code-in-mass.yaml"
);

/// A `prism mock --errors` process on 127.0.0.1, port picked by the OS,
/// with its log collected line by line; killed when dropped.
struct Prism {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Prism {
    /// Starts Prism, or returns `None` (after saying so) when it is not
    /// installed and not required.
    fn start() -> Option<Prism> {
        let bin = external_tool(
            "TRACKMASS_PRISM",
            "tools/prism/node_modules/.bin/prism",
            "TRACKMASS_REQUIRE_PRISM",
            "prism conformance; needs Node.js: npm ci --prefix tools/prism",
        )?;
        let mut child = Command::new(&bin)
            .args(["mock", "--errors", "-h", "127.0.0.1", "-p", "0", SPEC])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("prism starts");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let mut prism = Prism {
            child,
            base: String::new(),
            log,
        };
        wait_for(Duration::from_secs(60), "prism listening", || {
            prism
                .lines()
                .iter()
                .any(|l| l.contains("Prism is listening on"))
        });
        let lines = prism.lines();
        let listening = lines
            .iter()
            .find(|l| l.contains("Prism is listening on"))
            .expect("listening line");
        prism.base = listening
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .expect("address in the listening line")
            .to_string();
        Some(prism)
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Requests Prism received, found valid, found invalid.
    fn verdicts(&self) -> (usize, usize, usize) {
        (
            self.count("Request received"),
            self.count("The request passed the validation rules"),
            self.count("Request did not pass the validation rules"),
        )
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 201 example of the spec, as `results.csv` lines for `reference`.
fn example_lines(reference: &str) -> Vec<[String; 4]> {
    let spec: Value = serde_norway::from_str(&std::fs::read_to_string(SPEC).unwrap()).unwrap();
    let example = &spec["paths"]["/track-document"]["post"]["responses"]["201"]["content"]["application/json"]
        ["example"];
    let id = example["trackingId"].as_str().expect("example trackingId");
    example["trackedHandlingUnits"]
        .as_array()
        .expect("example units")
        .iter()
        .map(|u| {
            [
                reference.to_string(),
                id.to_string(),
                u["spi"].as_str().unwrap_or("").to_string(),
                u["reference"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect()
}

#[test]
fn the_sample_run_against_prism_sends_only_requests_the_spec_accepts() {
    let Some(prism) = Prism::start() else {
        return;
    };
    // The detector below can fail: Prism reports a request that breaks
    // the spec (no subscription key, a `way` outside the enum).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}/track-document", prism.base))
            .header("Content-Type", "application/json")
            .header("Authorization", "Bearer t")
            .body(r#"{"documentReference":"X","way":"Sideways"}"#)
            .send()
            .await
            .expect("prism answers")
            .status()
    });
    assert!(status.is_client_error(), "{status}");
    wait_for(
        Duration::from_secs(20),
        "prism logs the bad request",
        || prism.verdicts().2 == 1,
    );
    let before = prism.verdicts();

    let work = Workdir::new();
    let sample = format!("{}/samples/documents.csv", env!("CARGO_MANIFEST_DIR"));
    let out = output(
        work.trackmass()
            .args(["run", &sample, "--rate", "500/s", "--concurrency", "4"])
            .args(["--base-url", &prism.base, "--summary", "s.json"])
            .env("TRACKMASS_ACCESS_TOKEN", "prism-conformance-token")
            .env("TRACKMASS_API_KEY", "prism-conformance-key"),
    );
    // 3: the sample's five invalid rows, refused before sending.
    assert_exit(&out, 3);
    let summary: Value = serde_json::from_str(&work.read("s.json")).unwrap();
    let sent = summary["requests"].as_u64().unwrap() as usize;
    assert_eq!(summary["rejected"], 5);
    assert_eq!(summary["failed"], 0, "Prism refused a request: {summary}");
    assert_eq!(sent, summary["tracked"].as_u64().unwrap() as usize);

    wait_for(Duration::from_secs(30), "prism logs every request", || {
        prism.verdicts().0 - before.0 == sent && prism.verdicts().1 - before.1 == sent
    });
    let after = prism.verdicts();
    assert_eq!(
        after.2 - before.2,
        0,
        "Prism found requests that break the spec:\n{}",
        prism
            .lines()
            .iter()
            .filter(|l| l.contains("Violation"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every valid row tracked with Prism's answer (the spec's example).
    let mut reader = csv::Reader::from_path(&sample).unwrap();
    let rejected: Vec<u64> = read_csv(&work.path("failures.csv"))
        .iter()
        .map(|f| f["line"].parse().unwrap())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut expected = Vec::new();
    for record in reader.records() {
        let r = record.unwrap();
        let line = r.position().unwrap().line();
        if rejected.contains(&line) || !seen.insert(r.iter().collect::<Vec<_>>().join(",")) {
            continue;
        }
        expected.extend(example_lines(&r[0]));
    }
    assert_eq!(expected.len(), sent * example_lines("x").len());
    assert_eq!(result_lines(&work.path("results.csv")), expected);
}
