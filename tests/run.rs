//! `trackmass run` end to end.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

fn sample_path() -> String {
    format!("{}/samples/documents.csv", env!("CARGO_MANIFEST_DIR"))
}

/// What the sample generator made invalid on purpose, found with checks
/// independent of trackmass's own validation.
fn sample_invalid_lines() -> BTreeSet<u64> {
    let mut reader = csv::Reader::from_path(sample_path()).unwrap();
    let mut lines = BTreeSet::new();
    for record in reader.records() {
        let r = record.unwrap();
        let line = r.position().unwrap().line();
        let bad = r[0].is_empty()
            || r[1] == *"Inport"
            || r[2].chars().count() > 20
            || r[3].chars().count() > 64
            || r[4].contains("localhost");
        if bad {
            lines.insert(line);
        }
    }
    lines
}

/// Valid sample rows with their lines, in input order, first occurrence only.
fn sample_valid_rows() -> Vec<(u64, String)> {
    let invalid = sample_invalid_lines();
    let mut reader = csv::Reader::from_path(sample_path()).unwrap();
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let r = record.unwrap();
        let line = r.position().unwrap().line();
        if invalid.contains(&line) || !seen.insert(r.iter().collect::<Vec<_>>().join(",")) {
            continue;
        }
        rows.push((line, r[0].to_string()));
    }
    rows
}

#[test]
fn sample_file_end_to_end_against_the_sandbox() {
    // The sandbox as `--sandbox` runs it: some documents unknown to it.
    let sandbox = TestSandbox::with_config(trackmass::sandbox::Config::default());
    let work = Workdir::new();
    let out = output(&mut work.run_against(&sandbox, &sample_path()));
    assert_exit(&out, 3);

    // Results: every valid, known row, in input order, with the sandbox's answers.
    let valid = sample_valid_rows();
    let refs: Vec<String> = valid.iter().map(|(_, r)| r.clone()).collect();
    sandbox.assert_results(&work.path("results.csv"), &refs);
    assert_eq!(
        csv_header(&work.path("results.csv")),
        [
            "documentReference",
            "trackingId",
            "spi",
            "reference",
            "agentCode"
        ]
    );

    // Failures: the invalid rows (never sent) and the unknown documents
    // (refused by the API), each by its editor line.
    let unknown: BTreeSet<u64> = valid
        .iter()
        .filter(|(_, r)| sandbox.expected_lines(r).is_empty())
        .map(|(line, _)| *line)
        .collect();
    assert!(
        !unknown.is_empty(),
        "the sample should meet an unknown document"
    );
    let failures = read_csv(&work.path("failures.csv"));
    let lines_with = |status: &str| -> BTreeSet<u64> {
        failures
            .iter()
            .filter(|f| f["status"] == status)
            .map(|f| f["line"].parse().unwrap())
            .collect()
    };
    assert_eq!(lines_with("rejected"), sample_invalid_lines());
    assert_eq!(lines_with("failed"), unknown);
    assert_eq!(failures.len(), sample_invalid_lines().len() + unknown.len());
    for f in &failures {
        match f["status"].as_str() {
            "rejected" => assert_eq!(
                (f["httpStatus"].as_str(), f["attempts"].as_str()),
                ("", "0")
            ),
            _ => {
                assert_eq!(
                    (f["httpStatus"].as_str(), f["attempts"].as_str()),
                    ("400", "1")
                );
                assert_eq!(f["code"], "DOCUMENT_NOT_FOUND");
                assert!(f["details"].contains("documentReference"), "{f:?}");
            }
        }
    }
    assert_eq!(
        csv_header(&work.path("failures.csv")),
        [
            "line",
            "documentReference",
            "way",
            "place",
            "agentCode",
            "url",
            "status",
            "httpStatus",
            "code",
            "message",
            "details",
            "attempts",
            "input"
        ]
    );

    // The sandbox saw each valid request once and found none invalid.
    let known = (valid.len() - unknown.len()) as u64;
    assert_eq!(sandbox.outcome("created"), known);
    assert_eq!(sandbox.outcome("unknown_document"), unknown.len() as u64);
    assert_eq!(sandbox.outcome("invalid"), 0);
    assert_eq!(sandbox.stats()["max_creations_per_document"], 1);
    // The summary line says what happened.
    let summary = stdout(&out);
    assert!(summary.contains(&format!("{known} tracked")), "{summary}");
    assert!(
        summary.contains(&format!("{} failed", unknown.len())),
        "{summary}"
    );
    assert!(summary.contains("5 rejected"), "{summary}");
    assert!(summary.contains("1 duplicate"), "{summary}");
}

#[test]
fn rerun_on_the_same_state_sends_nothing() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("RR", 40);
    work.write("in.csv", reference_csv(&refs));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    let first = sandbox.stats();
    let results_before = work.read("results.csv");

    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 0);
    let second = sandbox.stats();
    assert_eq!(
        first["requests"], second["requests"],
        "the rerun sent requests"
    );
    assert_eq!(
        first["tokens_issued"], second["tokens_issued"],
        "the rerun asked for a token"
    );
    assert_eq!(work.read("results.csv"), results_before);
    assert!(stdout(&out).contains("0 requests"), "{}", stdout(&out));
}

#[test]
fn a_killed_run_resumes_and_tracks_every_row_exactly_once() {
    killed_run_tracks_every_row_once("full");
}

/// With `--durability normal` commits reach the OS, not the disk, at once:
/// a crash of the process (not of the machine) still loses nothing.
#[test]
fn with_normal_durability_a_killed_run_loses_nothing_either() {
    killed_run_tracks_every_row_once("normal");
}

fn killed_run_tracks_every_row_once(durability: &str) {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("KL", 600);
    work.write("in.csv", reference_csv(&refs));

    let mut cmd = work.run_against(&sandbox, "in.csv");
    cmd.args(["--rate", "300/s", "--durability", durability])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for(Duration::from_secs(60), "150 trackings", || {
        sandbox.outcome("created") >= 150
    });
    kill9(&mut child);
    let created_at_kill = sandbox.outcome("created");
    assert!(
        created_at_kill < 600,
        "the run finished before it was killed"
    );

    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--summary",
        "summary.json",
        "--durability",
        durability,
    ]));
    assert_exit(&out, 0);

    let expected: Vec<[String; 4]> = sandbox.expected_results(&refs);
    assert_eq!(result_lines(&work.path("results.csv")), expected);

    // At most the rows in flight at the kill (concurrency 8) were sent twice.
    let creations = sandbox.creations();
    assert_eq!(creations.len(), 600);
    let twice = creations.values().filter(|n| **n == 2).count();
    assert!(creations.values().all(|n| *n <= 2), "{creations:?}");
    assert!(twice <= 8, "{twice} documents created twice");
    let summary: serde_json::Value = serde_json::from_str(&work.read("summary.json")).unwrap();
    let resent = summary["resent_after_interruption"].as_u64().unwrap() as usize;
    assert!(
        resent >= twice && resent <= 8,
        "resent {resent}, twice {twice}: {summary}"
    );
    assert_eq!(
        summary["already_tracked"].as_u64().unwrap() + summary["continued"].as_u64().unwrap(),
        600
    );
    assert_eq!(summary["exit_code"], 0);
}

#[test]
fn semicolons_bom_crlf_blank_lines_and_spaces() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    // Excel's "CSV UTF-8" with ';': BOM, CRLF, padded cells, blank lines,
    // a quoted cell spanning two lines, and a bad row after it.
    let text = "\u{feff}Document_Reference ; Way ;place;note\r\n\
                \r\n\
                 DR-1 ; import ; MTDF ;\r\n\
                DR-2;Export;;\r\n\
                \r\n\
                \"DR-3\";\"Transit\";\"FRLEH\";\"two\r\nlines\"\r\n\
                DR-4;Sideways;MTDF;\r\n";
    work.write("excel.csv", text);
    let out = output(&mut work.run_against(&sandbox, "excel.csv"));
    assert_exit(&out, 3);

    let tracked: Vec<String> = read_csv(&work.path("results.csv"))
        .iter()
        .map(|r| r["documentReference"].clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(tracked, ["DR-1", "DR-2", "DR-3"]);
    let failures = read_csv(&work.path("failures.csv"));
    assert_eq!(failures.len(), 1, "{failures:?}");
    // Line 8 as an editor shows it: the quoted newline counts as a line.
    assert_eq!(failures[0]["line"], "8");
    assert_eq!(failures[0]["documentReference"], "DR-4");
    assert!(failures[0]["message"].contains("Sideways"), "{failures:?}");
    assert_eq!(sandbox.outcome("invalid"), 0);
}

#[test]
fn tabs_and_a_named_column() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("bl.tsv", "id\tBL number\tagent\n1\tBL-A\tx\n2\tBL-B\ty\n");
    let out = output(
        work.run_against(&sandbox, "bl.tsv")
            .args(["--column", "bl number"]),
    );
    assert_exit(&out, 0);
    let refs: Vec<String> = read_csv(&work.path("results.csv"))
        .iter()
        .map(|r| r["documentReference"].clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(refs, ["BL-A", "BL-B"]);
}

#[test]
fn missing_credentials_are_named_and_nothing_is_written() {
    let work = Workdir::new();
    work.write("in.csv", "documentReference\nA\n");
    let out = output(work.trackmass().args(["run", "in.csv"]));
    assert_exit(&out, 1);
    let err = stderr(&out);
    for name in [
        "TRACKMASS_API_KEY",
        "TRACKMASS_CLIENT_ID",
        "TRACKMASS_CLIENT_SECRET",
        "--sandbox",
    ] {
        assert!(err.contains(name), "{name} not in: {err}");
    }
    assert!(!work.path("trackmass.db").exists());
    assert!(!work.path("results.csv").exists());
}

#[test]
fn sandbox_flag_runs_the_sample_without_an_account() {
    let work = Workdir::new();
    let out =
        output(
            work.trackmass()
                .args(["run", &sample_path(), "--sandbox", "--rate", "1000/s"]),
        );
    assert_exit(&out, 3);
    let refs: Vec<String> = sample_valid_rows().into_iter().map(|(_, r)| r).collect();
    let config = trackmass::sandbox::Config::default();
    let expected: Vec<[String; 4]> = refs
        .iter()
        .flat_map(|r| expected_lines_for(&config, r))
        .collect();
    assert_eq!(result_lines(&work.path("results.csv")), expected);
    assert!(stdout(&out).contains("results.csv"), "{}", stdout(&out));
}

#[test]
fn input_problems_name_the_file_and_write_nothing() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    std::fs::create_dir(work.path("adir")).unwrap();
    work.write("empty.csv", "");
    work.write("nocol.csv", "reference,way\nA,Import\n");
    let cases = [
        ("missing.csv", "missing.csv"),
        ("adir", "directory"),
        ("empty.csv", "empty"),
        ("nocol.csv", "no documentReference column"),
    ];
    for (input, expected) in cases {
        let out = output(&mut work.run_against(&sandbox, input));
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(input) && err.contains(expected),
            "{input}: {err}"
        );
    }
    assert!(!work.path("results.csv").exists());
    assert_eq!(sandbox.outcome("created"), 0);
}

#[test]
fn bad_flags_are_usage_errors() {
    let work = Workdir::new();
    for args in [
        vec!["run", "x.csv", "--rate", "lots"],
        vec!["run", "x.csv", "--timeout", "300s"],
        vec!["run", "x.csv", "--way", "Sideways"],
        vec!["run", "x.csv", "--base-url", "http://api.example.com/v1"],
        vec!["frobnicate"],
    ] {
        let out = output(work.trackmass().args(&args));
        assert_exit(&out, 2);
    }
}

#[test]
fn identical_rows_are_sent_once_and_force_resends_tracked_ones() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write(
        "dups.csv",
        "documentReference,way\nD1,Import\nD2,Import\nD1,Import\nD1,Export\n",
    );
    let out = output(&mut work.run_against(&sandbox, "dups.csv"));
    assert_exit(&out, 0);
    // D1 once (line 2's fields), D2 once; D1/Export is the same document
    // with another way: reported with its line, not sent.
    let creations = sandbox.creations();
    let expected: HashMap<&str, u64> = [("D1", 1), ("D2", 1)].into();
    for (reference, n) in expected {
        assert_eq!(creations[reference], n, "{creations:?}");
    }
    assert!(
        stderr(&out)
            .contains("dups.csv: line 5: D1 names the document of line 2 with other fields"),
        "{}",
        stderr(&out)
    );
    assert_exit(
        &output(work.run_against(&sandbox, "dups.csv").arg("--force")),
        0,
    );
    let creations = sandbox.creations();
    assert_eq!(creations["D1"], 2, "{creations:?}");
    assert_eq!(creations["D2"], 2, "{creations:?}");
}

#[test]
fn progress_lines_count_rows_done_by_an_earlier_run() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("PG", 60);
    work.write("first.csv", reference_csv(&refs[..20]));
    work.write("all.csv", reference_csv(&refs));
    assert_exit(&output(&mut work.run_against(&sandbox, "first.csv")), 0);

    // The second input holds the 20 rows already tracked plus 40 new ones,
    // sent slowly enough to see several progress lines.
    let out = output(work.run_against(&sandbox, "all.csv").args([
        "--rate",
        "20/s",
        "--progress-interval",
        "300ms",
    ]));
    assert_exit(&out, 0);
    let err = stderr(&out);
    let done: Vec<u64> = err
        .lines()
        .filter_map(|l| l.split("progress: ").nth(1))
        .map(|p| {
            let (done, rest) = p.split_once('/').unwrap();
            assert!(rest.starts_with("60 done"), "{p}");
            done.parse().unwrap()
        })
        .collect();
    assert!(done.len() >= 3, "expected progress lines in: {err}");
    assert!(
        done.iter().all(|d| *d >= 20),
        "earlier rows not counted: {done:?}"
    );
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(err.contains("ETA"), "{err}");
}

#[test]
fn tokens_are_refreshed_before_they_expire() {
    let sandbox = TestSandbox::with_config(trackmass::sandbox::Config {
        token_ttl: Duration::from_secs(3),
        unknown_rate: 0.0,
        ..Default::default()
    });
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("TK", 70)));
    // 70 rows at 10/s: about 7 s; 3 s tokens are replaced at 2.4 s and 4.8 s
    // (a fifth of their life early), well before they expire.
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--rate", "10/s"]),
    );
    assert_exit(&out, 0);
    let stats = sandbox.stats();
    assert!(stats["tokens_issued"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(sandbox.outcome("unauthorized_token"), 0, "{stats}");
    assert_eq!(sandbox.outcome("created"), 70);
}

#[test]
fn a_ready_access_token_is_used_as_is() {
    let sandbox = TestSandbox::start();
    let token = sandbox.access_token();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("AT", 5)));
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .env_remove("TRACKMASS_CLIENT_ID")
            .env_remove("TRACKMASS_CLIENT_SECRET")
            .env("TRACKMASS_ACCESS_TOKEN", &token),
    );
    assert_exit(&out, 0);
    assert_eq!(
        sandbox.stats()["tokens_issued"],
        1,
        "trackmass fetched a token itself"
    );
    assert_eq!(sandbox.outcome("created"), 5);
}

#[test]
fn a_wrong_subscription_key_stops_the_run_and_a_rerun_completes() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("WK", 200);
    work.write("in.csv", reference_csv(&refs));
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .env("TRACKMASS_API_KEY", "not-the-key"),
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("subscription key (TRACKMASS_API_KEY)"),
        "{err}"
    );
    assert!(!err.contains("not-the-key"), "the key leaked: {err}");
    // A handful of requests at most: the ones already in flight.
    let refused = sandbox.outcome("unauthorized_key");
    assert!(
        (1..=8).contains(&refused),
        "{refused} requests sent with a bad key"
    );
    assert_eq!(sandbox.outcome("created"), 0);
    assert!(stdout(&out).contains("200 pending"), "{}", stdout(&out));

    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 0);
    let expected: Vec<[String; 4]> = sandbox.expected_results(&refs);
    assert_eq!(result_lines(&work.path("results.csv")), expected);
    assert_eq!(sandbox.stats()["max_creations_per_document"], 1);
}

#[test]
fn refused_client_credentials_and_a_wrong_base_url_are_fatal() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("WC", 20)));
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .env("TRACKMASS_CLIENT_SECRET", "wrong-secret"),
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("TRACKMASS_CLIENT_SECRET") && err.contains("401"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "the secret leaked: {err}");

    let out = output(work.run_against(&sandbox, "in.csv").env(
        "TRACKMASS_BASE_URL",
        sandbox.url("/api-tracking-code-in-masse/v1"),
    ));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("404") && err.contains("--base-url"), "{err}");
    assert_eq!(sandbox.outcome("created"), 0);
}

#[test]
fn ctrl_c_stops_cleanly_with_exit_4_and_a_rerun_completes() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("SI", 300);
    work.write("in.csv", reference_csv(&refs));
    let mut cmd = work.run_against(&sandbox, "in.csv");
    cmd.args(["--rate", "100/s", "--summary", "stopped.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for(Duration::from_secs(60), "40 trackings", || {
        sandbox.outcome("created") >= 40
    });
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 4);

    // The files were written and agree with what the sandbox created.
    let created = sandbox.creations();
    assert!(created.len() < 300, "the run finished before the signal");
    let tracked: BTreeSet<String> = read_csv(&work.path("results.csv"))
        .iter()
        .map(|r| r["documentReference"].clone())
        .collect();
    let created_refs: BTreeSet<String> = created.keys().cloned().collect();
    assert_eq!(
        tracked, created_refs,
        "results.csv differs from what was created"
    );
    let summary: serde_json::Value = serde_json::from_str(&work.read("stopped.json")).unwrap();
    assert_eq!(summary["exit_code"], 4);
    assert_eq!(
        summary["pending"].as_u64().unwrap() as usize,
        300 - created.len()
    );

    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 0);
    let expected: Vec<[String; 4]> = sandbox.expected_results(&refs);
    assert_eq!(result_lines(&work.path("results.csv")), expected);
    assert_eq!(sandbox.stats()["max_creations_per_document"], 1);
}

#[test]
fn progress_always_draws_the_bar() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("PB", 30)));
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--rate",
        "40/s",
        "--progress",
        "always",
    ]));
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("/30 done"), "{err}");
    assert!(err.contains('█') || err.contains('▏'), "no bar in: {err}");
}

#[test]
fn the_sandbox_command_serves_on_the_address_it_prints() {
    let work = Workdir::new();
    let (mut child, base) = spawn_sandbox(&work, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body): (u16, serde_json::Value) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/soget-connect/v1/openid-connect/token"))
            .form(&TOKEN_FORM)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    });
    kill9(&mut child);
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
}

#[test]
fn a_second_run_on_the_same_state_is_refused_at_once() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("LK", 200)));
    let mut first = work.run_against(&sandbox, "in.csv");
    first
        .args(["--rate", "50/s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = first.spawn().unwrap();
    wait_for(Duration::from_secs(60), "the first run to send", || {
        sandbox.outcome("created") >= 5
    });

    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(&format!("pid {}", child.id())), "{err}");
    assert!(err.contains("in use"), "{err}");
    kill9(&mut child);

    // The lock died with its process: the next run goes ahead and finishes.
    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 0);
    assert!(
        sandbox.stats()["max_creations_per_document"]
            .as_u64()
            .unwrap()
            <= 2
    );
    assert_eq!(
        read_csv(&work.path("results.csv"))
            .iter()
            .map(|r| r["documentReference"].clone())
            .collect::<BTreeSet<_>>()
            .len(),
        200
    );
}

#[test]
fn outputs_that_would_overwrite_the_state_or_the_input_are_refused() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("AL", 5)));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    let state_before = std::fs::read(work.path("trackmass.db")).unwrap();
    for args in [
        vec!["--out", "./trackmass.db"],
        vec!["--failures", "sub/../trackmass.db-wal"],
        vec!["--summary", "in.csv"],
        vec!["--out", "in.csv"],
    ] {
        std::fs::create_dir_all(work.path("sub")).unwrap();
        let out = output(work.run_against(&sandbox, "in.csv").args(&args));
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("same file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read(work.path("trackmass.db")).unwrap(),
        state_before
    );
    assert_eq!(work.read("in.csv"), reference_csv(&references("AL", 5)));
}

#[test]
fn a_forced_run_stopped_midway_is_continued_by_the_same_command() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("FO", 150);
    work.write("in.csv", reference_csv(&refs));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);

    let mut cmd = work.run_against(&sandbox, "in.csv");
    cmd.args(["--force", "--rate", "60/s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    wait_for(Duration::from_secs(60), "forced re-sends", || {
        sandbox.stats()["creations"].as_u64().unwrap() >= 150 + 30
    });
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 4);

    // The same command again: it finishes the forced pass, it does not
    // start it over.
    assert_exit(
        &output(work.run_against(&sandbox, "in.csv").arg("--force")),
        0,
    );
    let creations = sandbox.creations();
    assert!(creations.values().all(|n| *n == 2), "{creations:?}");
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[test]
fn an_unclosed_quote_stops_before_sending_and_names_its_line() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("q.csv", "documentReference\nA\n\"B\nC\nD\n");
    let out = output(&mut work.run_against(&sandbox, "q.csv"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("q.csv: line 3") && err.contains("never closed"),
        "{err}"
    );
    assert_eq!(sandbox.stats()["creations"], 0);
}

#[test]
fn absurd_retry_after_values_stop_the_run_without_a_panic() {
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let app = axum::Router::new().route(
            "/v1/track-document",
            axum::routing::post(|| async {
                let mut h = HeaderMap::new();
                h.insert("retry-after", HeaderValue::from_static("1e300"));
                (StatusCode::TOO_MANY_REQUESTS, h, "{}")
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("RA", 3)));
    let out = output(
        work.trackmass()
            .args(["run", "in.csv", "--summary", "s.json"])
            .env("TRACKMASS_BASE_URL", format!("http://{addr}/v1"))
            .env("TRACKMASS_API_KEY", "k")
            .env("TRACKMASS_ACCESS_TOKEN", "t"),
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("asks to wait") && !err.contains("panick"),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_str(&work.read("s.json")).unwrap();
    assert_eq!(s["pending"], 3);
}

#[test]
fn grant_type_can_be_left_out_for_gateways_that_add_it() {
    // The sandbox is plain Keycloak, which requires grant_type: leaving it
    // out must show in what the token endpoint answers.
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("GT", 3)));
    let out = output(work.run_against(&sandbox, "in.csv").arg("--no-grant-type"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("Missing form parameter: grant_type"), "{err}");
    assert_eq!(sandbox.stats()["tokens_issued"], 0);
}

#[test]
fn a_gateway_that_adds_grant_type_itself_is_detected() {
    // Sending grant_type there gets "duplicated parameter"; trackmass then
    // asks again without it, once, and goes on.
    let sandbox = TestSandbox::with_config(trackmass::sandbox::Config {
        gateway_adds_grant_type: true,
        unknown_rate: 0.0,
        ..Default::default()
    });
    let work = Workdir::new();
    let refs = references("GA", 20);
    work.write("in.csv", reference_csv(&refs));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    sandbox.assert_results(&work.path("results.csv"), &refs);
    assert_eq!(sandbox.outcome("token_refused"), 1);
    assert_eq!(sandbox.stats()["tokens_issued"], 1);
}

#[test]
fn the_input_can_come_from_standard_input_and_an_empty_one_is_said() {
    use std::io::Write;
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("IN", 4);
    let mut child = work
        .run_against(&sandbox, "-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reference_csv(&refs).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    sandbox.assert_results(&work.path("results.csv"), &refs);
    // A bad row from standard input is named with its line.
    // (output() gives a child no standard input: the file is given here.)
    let file = std::fs::File::open(work.write("bad.csv", "documentReference\nOK1\n\u{7}x\n"));
    let bad = work
        .trackmass()
        .args(["validate", "-"])
        .stdin(file.unwrap())
        .output()
        .unwrap();
    assert_exit(&bad, 3);
    assert!(
        stdout(&bad).contains("line 3: documentReference"),
        "{}",
        stdout(&bad)
    );
    // Counts of one are singular.
    let out = output(work.trackmass().args(["validate", "bad.csv"]));
    assert!(
        stdout(&out).contains("2 rows: 1 valid, 1 rejected, 0 duplicate rows"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("To send: 1 request,"),
        "{}",
        stdout(&out)
    );
    // Which columns are read, and which ignored.
    work.write("cols.csv", "note,Document Reference,Way\nx,C1,Import\n");
    let out = output(work.trackmass().args(["validate", "cols.csv"]));
    assert!(
        stdout(&out).contains(
            "columns read: documentReference from \"Document Reference\" (column 2), way from \"Way\" (column 3); ignored: \"note\""
        ),
        "{}",
        stdout(&out)
    );
    // A header and no row: exit 0, and a warning, not silence.
    work.write("empty.csv", "documentReference\n");
    let out = output(
        work.run_against(&sandbox, "empty.csv")
            .args(["--state", "e.db"]),
    );
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("no data row after the header"),
        "{}",
        stderr(&out)
    );
    // The offline check says so too, for a file and for standard input.
    let out = output(work.trackmass().args(["validate", "empty.csv"]));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("empty.csv: no data row after the header"),
        "{}",
        stderr(&out)
    );
    let mut validate = work.trackmass();
    validate
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = validate.spawn().expect("validate starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(b"documentReference\n")
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("validate ends");
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("no data row after the header"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn quiet_and_verbose_together_are_a_usage_error() {
    let work = Workdir::new();
    let out = output(work.trackmass().args(["-q", "-v", "status"]));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("'--quiet' cannot be used with '--verbose"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_version_names_its_commit_and_build_date() {
    let work = Workdir::new();
    let out = output(work.trackmass().arg("--version"));
    assert_exit(&out, 0);
    let text = stdout(&out);
    let pattern = regex::Regex::new(
        r"^trackmass \d+\.\d+\.\d+ \(commit ([0-9a-f]{10}|unknown commit), built \d{4}-\d{2}-\d{2}\)\n$",
    )
    .unwrap();
    assert!(pattern.is_match(&text), "{text:?}");
}

#[test]
fn retry_and_resume_take_the_sandbox_and_the_progress_interval() {
    let work = Workdir::new();
    let always_503 = TestSandbox::always_503();
    let refs = references("RS", 6);
    work.write("in.csv", reference_csv(&refs));
    let out = output(work.run_against(&always_503, "in.csv").args([
        "--max-attempts",
        "1",
        "--trip-after",
        "100",
    ]));
    assert_exit(&out, 3);
    // The rehearsal's retry against a built-in sandbox: every row tracked.
    let out = output(work.trackmass().args([
        "retry",
        "--sandbox",
        "--progress",
        "never",
        "--progress-interval",
        "5s",
    ]));
    assert_exit(&out, 0);
    assert!(read_csv(&work.path("failures.csv")).is_empty());
    let out = output(
        work.trackmass()
            .args(["resume", "--progress-interval", "10s", "--sandbox"]),
    );
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("nothing to send"), "{}", stderr(&out));
}

#[test]
fn show_tells_what_the_ledger_knows_of_a_document() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write(
        "in.csv",
        "documentReference,way\nSH1,Import\nSH2,Sideways\n",
    );
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 3);
    let tracked = result_lines(&work.path("results.csv"));
    let out = output(work.trackmass().args(["show", "SH1", "SH2", "SH3"]));
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(text.contains("SH1: tracked"), "{text}");
    assert!(
        text.contains(&format!("tracking ID {}", tracked[0][1])),
        "{text}"
    );
    for line in tracked.iter().filter(|l| !l[2].is_empty()) {
        assert!(text.contains(&format!("{} {}", line[3], line[2])), "{text}");
    }
    assert!(text.contains("SH2: rejected"), "{text}");
    assert!(text.contains("Sideways"), "{text}");
    assert!(text.contains("  1 request, last at "), "{text}");
    // A rejected row was never sent: its time is when an input named it.
    assert!(text.contains("  never sent, last changed at "), "{text}");
    assert!(!text.contains("0 requests"), "{text}");
    assert!(text.contains("from "), "{text}");
    assert!(text.contains("SH3: not in the ledger"), "{text}");
    let out = output(work.trackmass().args(["show", "SH1", "--json"]));
    assert_exit(&out, 0);
    let v = json(&stdout(&out));
    assert_eq!(v[0]["rows"][0]["status"], "tracked");
    assert_eq!(v[0]["rows"][0]["tracking_id"], tracked[0][1].as_str());
    assert_eq!(v[0]["rows"][0]["attempts"], 1);
}

#[test]
fn a_windows_1252_file_is_read_with_encoding_and_sent_as_utf8() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    // French Excel's "CSV (semicolon)": Windows-1252, ; and CRLF.
    work.write(
        "fr.csv",
        b"documentReference;place\r\nEN1;Z\xe9 Port\r\nEN2;C\xf4te \x80\r\n".as_slice(),
    );
    // Without --encoding the bytes are not UTF-8: refused, saying how.
    let out = output(work.trackmass().args(["validate", "fr.csv"]));
    assert_exit(&out, 3);
    assert!(
        stdout(&out).contains("--encoding windows-1252"),
        "{}",
        stdout(&out)
    );
    let out = output(
        work.run_against(&sandbox, "fr.csv")
            .args(["--encoding", "windows-1252"]),
    );
    assert_exit(&out, 0);
    // Sent as UTF-8 (the body the ledger holds is what was sent).
    let conn = rusqlite::Connection::open(work.path("trackmass.db")).unwrap();
    let mut payloads: Vec<String> = conn
        .prepare("SELECT payload FROM items ORDER BY line")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    payloads.sort();
    assert_eq!(
        payloads,
        [
            r#"{"documentReference":"EN1","place":"Zé Port"}"#,
            r#"{"documentReference":"EN2","place":"Côte €"}"#
        ]
    );
    let out = output(
        work.trackmass()
            .args(["validate", "fr.csv", "--encoding", "klingon"]),
    );
    assert_exit(&out, 2);
}

#[test]
fn the_man_pages_are_roff_for_trackmass_and_each_command() {
    let work = Workdir::new();
    let out = output(work.trackmass().arg("man"));
    assert_exit(&out, 0);
    let page = stdout(&out);
    assert!(page.contains(".TH trackmass 1"), "{page}");
    let commands = [
        "run", "validate", "status", "show", "resume", "retry", "export", "webhooks", "sandbox",
    ];
    for command in commands {
        // The top page names each command's page...
        assert!(
            page.contains(&format!("trackmass\\-{command}(1)")),
            "{command} missing:\n{page}"
        );
        // ...and that page exists, with its synopsis and its flags.
        let out = output(work.trackmass().args(["man", command]));
        assert_exit(&out, 0);
        let sub = stdout(&out);
        assert!(sub.contains(&format!(".TH trackmass-{command} 1")), "{sub}");
        assert!(
            sub.contains(&format!("\\fBtrackmass {command}\\fR")),
            "{sub}"
        );
    }
    assert!(
        stdout(&output(work.trackmass().args(["man", "run"]))).contains("\\-\\-max\\-duration")
    );
    assert_exit(&output(work.trackmass().args(["man", "nope"])), 2);
}

#[test]
fn vv_logs_one_line_per_request_and_v_the_decisions_only() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("VV", 3);
    work.write("in.csv", reference_csv(&refs));
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["-vv", "--progress", "never"]),
    );
    assert_exit(&out, 0);
    let err = stderr(&out);
    let requests: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("POST /track-document"))
        .collect();
    assert_eq!(requests.len(), 3, "{err}");
    for line in &requests {
        assert!(
            line.contains("TRACE") && line.contains("201 created"),
            "{line}"
        );
        assert!(
            line.contains("attempt=1") && line.contains(" ms="),
            "{line}"
        );
    }
    // No Rust Debug structures in the log.
    assert!(
        !err.contains("Created {") && !err.contains("Written {"),
        "{err}"
    );
    work.write("in2.csv", reference_csv(&references("VW", 3)));
    let out = output(
        work.run_against(&sandbox, "in2.csv")
            .args(["-v", "--progress", "never"]),
    );
    assert_exit(&out, 0);
    assert!(
        !stderr(&out).contains("POST /track-document"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn with_log_format_json_every_line_is_json_with_fields() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("JS", 8)));
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--log-format",
        "json",
        "--rate",
        "10/s",
        "--progress",
        "auto",
        "--progress-interval",
        "200ms",
    ]));
    assert_exit(&out, 0);
    let lines: Vec<serde_json::Value> = stderr(&out).lines().map(json).collect();
    let progress: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("progress:"))
        })
        .collect();
    assert!(!progress.is_empty(), "{}", stderr(&out));
    for p in &progress {
        assert_eq!(p["total"], 8, "{p}");
        assert!(
            p["done"].as_u64().is_some() && p["failed"].as_u64().is_some(),
            "{p}"
        );
    }
    let summary = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("summary:"))
        })
        .unwrap_or_else(|| panic!("no summary event: {}", stderr(&out)));
    assert_eq!(summary["tracked"], 8);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["outcome"], "completed");
    // The final error too.
    let out =
        output(
            work.trackmass()
                .args(["--log-format", "json", "status", "--state", "none.db"]),
        );
    assert_exit(&out, 2);
    let error = json(stderr(&out).trim());
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["exit_code"], 2);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no such state file")
    );
}

#[test]
fn export_writes_json_lines_for_a_downstream_system() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write(
        "in.csv",
        "documentReference,way\nND1,Import\nND2,Sideways\n",
    );
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 3);
    let out = output(work.trackmass().args([
        "export",
        "--format",
        "ndjson",
        "--out",
        "results.ndjson",
        "--failures",
        "failures.ndjson",
    ]));
    assert_exit(&out, 0);
    let tracked: Vec<serde_json::Value> = work.read("results.ndjson").lines().map(json).collect();
    assert_eq!(tracked.len(), 1);
    let csv = result_lines(&work.path("results.csv"));
    assert_eq!(tracked[0]["documentReference"], "ND1");
    assert_eq!(tracked[0]["trackingId"], csv[0][1].as_str());
    let units = tracked[0]["units"].as_array().unwrap();
    let with_units: Vec<_> = csv.iter().filter(|l| !l[2].is_empty()).collect();
    assert_eq!(units.len(), with_units.len());
    for (u, l) in units.iter().zip(with_units) {
        assert_eq!(
            (u["spi"].as_str().unwrap(), u["reference"].as_str().unwrap()),
            (l[2].as_str(), l[3].as_str())
        );
    }
    let failed: Vec<serde_json::Value> = work.read("failures.ndjson").lines().map(json).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["documentReference"], "ND2");
    assert_eq!(failed[0]["status"], "rejected");
    assert_eq!(failed[0]["line"], 3);
    assert_eq!(failed[0]["attempts"], 0);
    assert!(failed[0]["httpStatus"].is_null());
}

#[test]
fn export_as_json_lines_names_its_files_as_json_and_leaves_the_csvs_alone() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write(
        "in.csv",
        "documentReference,way\nNE1,Import\nNE2,Sideways\n",
    );
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 3);
    let csvs = (work.read("results.csv"), work.read("failures.csv"));
    let out = output(work.trackmass().args(["export", "--format", "ndjson"]));
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("wrote results.ndjson (1 line) and failures.ndjson (1 line)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        json(&work.read("results.ndjson"))["documentReference"],
        "NE1"
    );
    assert_eq!(
        json(&work.read("failures.ndjson"))["documentReference"],
        "NE2"
    );
    // The run's CSVs are what they were, not JSON under a .csv name.
    assert_eq!((work.read("results.csv"), work.read("failures.csv")), csvs);
}

#[test]
fn a_spreadsheet_is_read_directly_with_its_row_numbers() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let book =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sheets/documents.xlsx");
    std::fs::copy(&book, work.path("documents.xlsx")).unwrap();
    let out = output(&mut work.run_against(&sandbox, "documents.xlsx"));
    assert_exit(&out, 3);
    let tracked: std::collections::BTreeSet<String> = result_lines(&work.path("results.csv"))
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    // A text cell, a number cell (shown without .0), and a row after a
    // blank one.
    let want: std::collections::BTreeSet<String> =
        ["3714238101", "3714238102", "XL7"].map(String::from).into();
    assert_eq!(tracked, want);
    // Rejects name the spreadsheet's own row numbers.
    let failures = read_csv(&work.path("failures.csv"));
    let lines: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| (f["line"].as_str(), f["message"].as_str()))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, "5");
    assert!(lines[0].1.contains("scientific notation"), "{lines:?}");
    assert_eq!(lines[1].0, "6");
    assert!(
        lines[1].1.contains("place: contains the control character"),
        "{lines:?}"
    );
    // Another sheet, by name; an unknown one is named with those there are.
    let out = output(
        work.trackmass()
            .args(["validate", "documents.xlsx", "--sheet", "Notes"]),
    );
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("1 row: 1 valid"), "{}", stdout(&out));
    let out = output(
        work.trackmass()
            .args(["validate", "documents.xlsx", "--sheet", "Nope"]),
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains(r#"no sheet named "Nope" (it has "Documents", "Notes")"#),
        "{}",
        stderr(&out)
    );
}
