//! Operating the job: validate, status, resume, retry, export, nightly
//! runs over a growing file, summaries and metrics, the configuration file,
//! help and completions. Each through the binary, on real state files.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use trackmass::sandbox::{self, Config};

use crate::common::*;

/// This process's umask (the children inherit it).
#[cfg(unix)]
fn umask() -> u32 {
    // SAFETY: umask only swaps a process-wide mask; it is put back at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old as u32
    }
}

/// References split by whether a sandbox with this config knows them.
fn split_known(config: &Config, refs: &[String]) -> (Vec<String>, Vec<String>) {
    refs.iter()
        .cloned()
        .partition(|r| sandbox::catalogue::is_known(config.seed, r, config.unknown_rate))
}

#[test]
fn status_counts_match_what_a_run_did() {
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.25,
        ..Config::default()
    });
    let work = Workdir::new();
    let refs = references("ST", 40);
    let (known, unknown) = split_known(&sandbox.config, &refs);
    assert!(!unknown.is_empty() && !known.is_empty(), "seeded split");
    let mut csv = reference_csv(&refs);
    csv.push_str("\nRAGGED,ROW\nBAD\u{7}REF\n");
    work.write("in.csv", &csv);
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 3);

    let s = status_json(&work, "trackmass.db");
    let units: usize = known
        .iter()
        .map(|r| {
            sandbox::catalogue::document(sandbox.config.seed, r)
                .units
                .len()
        })
        .sum();
    assert_eq!(s["rows"]["tracked"], known.len() as u64);
    assert_eq!(s["rows"]["failed"], unknown.len() as u64);
    assert_eq!(s["rows"]["rejected"], 2);
    assert_eq!(s["rows"]["pending"], 0);
    assert_eq!(s["rows"]["total"], refs.len() as u64 + 2);
    assert_eq!(s["handling_units"], units as u64);
    assert_eq!(s["in_flight_at_interruption"], 0);
    assert_eq!(s["failures"][0]["code"], "DOCUMENT_NOT_FOUND");
    assert_eq!(s["failures"][0]["http_status"], 400);
    assert_eq!(s["failures"][0]["rows"], unknown.len() as u64);
    assert_eq!(s["last_batch"]["rows"]["tracked"], known.len() as u64);
    assert!(s["running"].is_null());
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["command"], "run");
    assert_eq!(runs[0]["outcome"], "completed_with_failures");
    assert!(runs[0]["ended_at"].is_string() && runs[0]["started_at"].is_string());
    assert_eq!(runs[0]["summary"]["requests"], refs.len() as u64);

    // The terminal view says the same.
    let out = output(work.trackmass().args(["status"]));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{} handling units", units)),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}  400 DOCUMENT_NOT_FOUND", unknown.len())),
        "{text}"
    );
    assert!(text.contains("completed_with_failures"), "{text}");
}

#[test]
fn status_of_a_missing_state_file_is_a_usage_error() {
    let work = Workdir::new();
    let out = output(work.trackmass().args(["status", "--state", "nope.db"]));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("nope.db: no such state file"),
        "{}",
        stderr(&out)
    );
    assert!(
        !work.path("nope.db").exists(),
        "status created a state file"
    );
}

#[test]
fn resume_continues_without_the_input_with_the_runs_settings() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("RS", 60);
    work.write("in.csv", reference_csv(&refs));
    // Slow enough to be stopped (Ctrl-C) well before the end, once some
    // rows are tracked.
    let mut cmd = work.run_against(&sandbox, "in.csv");
    cmd.args(["--rate", "20/s", "--out", "mine.csv"])
        .args(["--summary", "first.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for(Duration::from_secs(60), "10 trackings", || {
        sandbox.outcome("created") >= 10
    });
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 4);
    let first = json(&work.read("first.json"));
    let pending = first["pending"].as_u64().unwrap();
    assert!(pending > 0 && pending < 60, "{first}");
    assert!(
        stdout(&out).contains("trackmass resume"),
        "{}",
        stdout(&out)
    );

    // The input is gone; resume from another directory.
    std::fs::remove_file(work.path("in.csv")).unwrap();
    std::fs::create_dir(work.path("elsewhere")).unwrap();
    let out = output(
        work.continue_against(&sandbox, "resume")
            .args(["--state", "../trackmass.db", "--rate", "2000/s"])
            .current_dir(work.path("elsewhere")),
    );
    assert_exit(&out, 0);
    // The run's --out, found where the run was started.
    sandbox.assert_results(&work.path("mine.csv"), &refs);
    assert!(!work.path("results.csv").exists());
    assert!(!work.path("elsewhere/mine.csv").exists());
    // Nothing created twice; the resume sent only what was pending.
    let creations = sandbox.creations();
    assert_eq!(creations.len(), 60);
    assert!(creations.values().all(|n| *n == 1), "{creations:?}");
    let s = status_json(&work, "trackmass.db");
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs[1]["command"], "resume");
    assert_eq!(runs[1]["batch"], runs[0]["id"]);
    assert_eq!(runs[1]["summary"]["requests"], pending);
}

#[test]
fn resume_with_nothing_to_resume_says_so() {
    let work = Workdir::new();
    let out = output(work.trackmass().arg("resume"));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("trackmass run"), "{}", stderr(&out));
}

#[test]
fn retry_resends_only_the_chosen_statuses() {
    let refs = references("RT", 12);
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&refs));

    // Night one: every answer a 503, one attempt each: all exhausted.
    let down = TestSandbox::always_503();
    let out = output(
        work.run_against(&down, "in.csv")
            .args(["--max-attempts", "1"]),
    );
    assert_exit(&out, 3);
    assert_eq!(status_json(&work, "trackmass.db")["rows"]["exhausted"], 12);

    // Morning: the default retry sends the exhausted rows; the service now
    // answers, but does not know some documents.
    let partly = TestSandbox::with_config(Config {
        unknown_rate: 0.3,
        ..Config::default()
    });
    let (known, unknown) = split_known(&partly.config, &refs);
    assert!(!unknown.is_empty() && !known.is_empty(), "seeded split");
    let out = output(&mut work.continue_against(&partly, "retry"));
    assert_exit(&out, 3);
    assert_eq!(partly.creations().len(), known.len());
    assert_eq!(partly.outcome("unknown_document"), unknown.len() as u64);

    // A default retry now has nothing to send: 400s are not cured by time.
    let idle = TestSandbox::start();
    let out = output(&mut work.continue_against(&idle, "retry"));
    assert_exit(&out, 3);
    assert_eq!(idle.traffic(), (0, 0), "a default retry re-sent a 400");

    // Once the documents exist: --status failed sends exactly those.
    let out = output(
        work.continue_against(&idle, "retry")
            .args(["--status", "failed"]),
    );
    assert_exit(&out, 0);
    let resent: BTreeSet<String> = idle.creations().into_keys().collect();
    assert_eq!(resent, unknown.iter().cloned().collect());
    assert!(stdout(&out).contains(&format!("retry of {} rows", unknown.len())));
    assert_eq!(
        result_lines(&work.path("results.csv")),
        idle.expected_results(&refs),
        "every row in the results, in input order"
    );
}

#[test]
fn export_works_while_a_run_holds_the_state() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("EX", 400);
    work.write("in.csv", reference_csv(&refs));
    let mut child = work
        .run_against(&sandbox, "in.csv")
        .args(["--rate", "40/s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts");
    // Bounded poll: wait until the run has committed some answers.
    wait_for(Duration::from_secs(30), "answers committed", || {
        work.path("trackmass.db").exists()
            && output(work.trackmass().args(["status", "--json"]))
                .status
                .success()
            && status_json(&work, "trackmass.db")["rows"]["tracked"]
                .as_u64()
                .is_some_and(|n| n >= 10)
    });
    let s = status_json(&work, "trackmass.db");
    assert_eq!(
        s["running"]["pid"].as_u64(),
        Some(u64::from(child.id())),
        "status names the running process: {s}"
    );
    let out =
        output(
            work.trackmass()
                .args(["export", "--out", "partial.csv", "--failures", "pf.csv"]),
        );
    assert_exit(&out, 0);
    // A run on the same state is refused meanwhile: export did not take
    // the lock away from the running job, and the job still holds it.
    let refused = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&refused, 1);
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("run ends");
    assert_eq!(status.code(), Some(4));

    let partial = result_lines(&work.path("partial.csv"));
    assert!(partial.len() >= 10, "{} lines", partial.len());
    let finished = result_lines(&work.path("results.csv"));
    for line in &partial {
        assert!(
            finished.contains(line),
            "exported {line:?} is not in the results"
        );
    }
    assert!(partial.len() <= finished.len());
}

#[test]
fn validate_sends_nothing_and_counts_against_the_state() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let tracked = references("VA", 30);
    work.write("old.csv", reference_csv(&tracked));
    assert_exit(&output(&mut work.run_against(&sandbox, "old.csv")), 0);
    let after_run = sandbox.traffic();

    // Today's file: yesterday's rows, 90 new, a duplicate, two invalid.
    let new = references("VB", 90);
    let mut rows: Vec<String> = tracked.clone();
    rows.extend(new.iter().cloned());
    rows.push(new[0].clone());
    let mut csv = String::from("documentReference,way\n");
    for r in &rows {
        csv.push_str(&format!("{r},Import\n"));
    }
    csv.push_str("VX0000001,Sideways\n,Export\n");
    work.write("today.csv", &csv);
    let mut cmd = work.trackmass();
    cmd.args(["validate", "today.csv", "--state", "trackmass.db"])
        .args(["--rejects", "rejects.csv", "--rate", "60/min", "--json"])
        .env("TRACKMASS_BASE_URL", sandbox.base_url())
        .env("TRACKMASS_TOKEN_URL", sandbox.token_url());
    with_credentials(&mut cmd);
    let out = output(&mut cmd);
    assert_exit(&out, 3);
    let r = json(&stdout(&out));
    assert_eq!(r["rows"], 123);
    assert_eq!(r["valid"], 121);
    assert_eq!(r["rejected"], 2);
    assert_eq!(r["duplicates"], 1);
    // The old rows were sent without a way: today's name the same
    // documents with other fields, which are not sent again.
    assert_eq!(r["already_tracked"], 0);
    assert_eq!(r["fields_differ"], 30);
    assert_eq!(r["to_send"], 90);
    assert_eq!(r["estimated_seconds"], 90);
    assert_eq!(sandbox.traffic(), after_run, "validate reached the API");

    let rejects = read_csv(&work.path("rejects.csv"));
    let lines: Vec<&str> = rejects.iter().map(|r| r["line"].as_str()).collect();
    assert_eq!(lines, ["123", "124"]);
    assert!(
        rejects[0]["reason"].contains("Sideways"),
        "{:?}",
        rejects[0]
    );
    assert_eq!(rejects[1]["way"], "Export");

    // The same rows as yesterday's requests are recognised as tracked; a
    // clean file exits 0 and prints the estimate for a person.
    let out = output(
        work.trackmass()
            .args(["validate", "old.csv", "--state", "trackmass.db"]),
    );
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("30 already tracked"), "{text}");
    assert!(text.contains("To send: 0 requests"), "{text}");
    assert!(!work.path("trackmass.db-journal").exists());
}

#[test]
fn a_nightly_run_over_a_growing_file_sends_only_new_references() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let monday = references("NI", 50);
    work.write("today.csv", reference_csv(&monday));
    assert_exit(&output(&mut work.run_against(&sandbox, "today.csv")), 0);

    // Tuesday's file: the same references (reordered) plus 25 new ones.
    let mut tuesday: Vec<String> = monday.iter().rev().cloned().collect();
    let added = references("NJ", 25);
    tuesday.extend(added.iter().cloned());
    work.write("today.csv", reference_csv(&tuesday));
    let out = output(work.run_against(&sandbox, "today.csv").args([
        "--summary",
        "night.json",
        "--metrics",
        "night.prom",
    ]));
    assert_exit(&out, 0);
    let s = json(&work.read("night.json"));
    assert_eq!(s["new"], 25);
    assert_eq!(s["already_tracked"], 50);
    assert_eq!(s["requests"], 25);
    assert_eq!(s["failed"], 0);
    assert!(
        stdout(&out).contains("75 rows (25 new)"),
        "{}",
        stdout(&out)
    );
    let creations = sandbox.creations();
    assert_eq!(creations.len(), 75);
    assert!(creations.values().all(|n| *n == 1));
    // Results cover tonight's whole file, in its order.
    sandbox.assert_results(&work.path("results.csv"), &tuesday);
    let prom = work.read("night.prom");
    #[cfg(unix)]
    {
        // node_exporter reads it as another user; the umask decides.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.path("night.prom"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o004, 0o004 & !umask(), "mode {mode:o}");
    }
    assert!(
        prom.contains("trackmass_last_run_rows{outcome=\"new\"} 25\n"),
        "{prom}"
    );
    assert!(prom.contains("trackmass_last_run_exit_code 0\n"), "{prom}");
}

#[test]
fn a_run_that_fails_outright_still_writes_its_summary_and_metrics() {
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("ER", 3)));
    // Yesterday's files must not survive as today's.
    work.write("s.json", "{\"outcome\":\"completed\"}");
    let out = output(work.trackmass().args([
        "run",
        "in.csv",
        "--summary",
        "s.json",
        "--metrics",
        "m.prom",
    ]));
    assert_exit(&out, 1);
    let s = json(&work.read("s.json"));
    assert_eq!(s["outcome"], "error");
    assert_eq!(s["exit_code"], 1);
    assert!(
        s["error"].as_str().unwrap().contains("TRACKMASS_API_KEY"),
        "{s}"
    );
    assert!(
        work.read("m.prom")
            .contains("trackmass_last_run_exit_code 1\n")
    );
}

#[test]
fn failures_csv_corrected_is_an_input() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let mut csv = String::from("documentReference,way,place,agentCode\n");
    csv.push_str("FX0000001,Import,MTDF,CCGM\n");
    csv.push_str("FX0000002,Export,TERMINAL DE FRANCE NORD,CCGM\n");
    work.write("in.csv", &csv);
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 3);
    let failures = work.read("failures.csv");
    let rows = read_csv(&work.path("failures.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["way"].as_str(), rows[0]["agentCode"].as_str()),
        ("Export", "CCGM"),
        "the request columns are kept for correction"
    );
    // Correct the place in a copy and feed it back.
    work.write(
        "fixed.csv",
        failures.replace("TERMINAL DE FRANCE NORD", "TDFN"),
    );
    let out = output(&mut work.run_against(&sandbox, "fixed.csv"));
    assert_exit(&out, 0);
    assert_eq!(
        result_lines(&work.path("results.csv")),
        sandbox.expected_lines("FX0000002")
    );
    assert_eq!(sandbox.creations().len(), 2);
}

#[cfg(unix)]
#[test]
fn the_config_file_sets_flags_that_the_command_line_overrides() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("CF", 5);
    work.write("in.csv", reference_csv(&refs));
    let settings = format!(
        "out = \"from-config.csv\"\nrate = \"2000/s\"\nbase_url = \"{}\"\ntoken_url = \"{}\"\n",
        sandbox.base_url(),
        sandbox.token_url()
    );
    let with_secrets = format!(
        "{settings}[credentials]\napi_key = \"{API_KEY}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret = \"{CLIENT_SECRET}\"\n"
    );
    let path = work.write("trackmass.toml", &with_secrets);

    // Readable by others: refused before anything is sent, secret unsaid.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = output(
        work.trackmass()
            .args(["--config", "trackmass.toml", "run", "in.csv"]),
    );
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(!err.contains(CLIENT_SECRET), "{err}");
    assert_eq!(sandbox.traffic(), (0, 0));

    // Private: settings and credentials from the file, via TRACKMASS_CONFIG.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = output(
        work.trackmass()
            .args(["run", "in.csv"])
            .env("TRACKMASS_CONFIG", "trackmass.toml"),
    );
    assert_exit(&out, 0);
    sandbox.assert_results(&work.path("from-config.csv"), &refs);
    assert!(!work.path("results.csv").exists());

    // A flag wins over the file.
    let out = output(work.trackmass().args([
        "--config",
        "trackmass.toml",
        "run",
        "in.csv",
        "--out",
        "from-flag.csv",
    ]));
    assert_exit(&out, 0);
    sandbox.assert_results(&work.path("from-flag.csv"), &refs);

    // A bad value is reported against the file; an unknown key too.
    work.write("bad.toml", "rate = \"fast\"\n");
    let out = output(
        work.trackmass()
            .args(["--config", "bad.toml", "run", "in.csv"]),
    );
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--rate"), "{}", stderr(&out));
    work.write("typo.toml", "concurency = 4\n");
    let out = output(work.trackmass().args(["--config", "typo.toml", "status"]));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("unknown setting `concurency`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_subcommand_has_an_example_and_completions_are_printed() {
    let work = Workdir::new();
    for sub in [
        "run",
        "validate",
        "status",
        "resume",
        "retry",
        "export",
        "sandbox",
        "completions",
    ] {
        let out = output(work.trackmass().args([sub, "--help"]));
        assert_exit(&out, 0);
        let help = stdout(&out);
        assert!(
            help.contains("Examples:"),
            "{sub} --help has no example:\n{help}"
        );
        assert!(help.contains(&format!("trackmass {sub}")), "{sub}:\n{help}");
    }
    let out = output(work.trackmass().args(["completions", "bash"]));
    assert_exit(&out, 0);
    let script = stdout(&out);
    assert!(
        script.contains("complete") && script.contains("trackmass"),
        "{script}"
    );
    for sub in ["resume", "retry", "export", "validate", "status"] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
}

#[test]
fn a_run_whose_input_fails_to_load_leaves_the_last_run_to_resume() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("LF", 40);
    work.write("in.csv", reference_csv(&refs));
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--rate",
        "20/s",
        "--max-duration",
        "1s",
    ]));
    assert_exit(&out, 4);
    let pending = status_json(&work, "trackmass.db")["rows"]["pending"]
        .as_u64()
        .unwrap();
    assert!(pending > 0);

    // Two runs that fail while reading: a missing file, then a file whose
    // valid rows take over some of the first input's, then an unclosed quote.
    assert_exit(&output(&mut work.run_against(&sandbox, "nothere.csv")), 1);
    let mut broken = reference_csv(&refs[..30]);
    broken.push_str("\"never closed\n");
    work.write("broken.csv", &broken);
    let out = output(&mut work.run_against(&sandbox, "broken.csv"));
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("broken.csv"), "{}", stderr(&out));

    let s = status_json(&work, "trackmass.db");
    assert_eq!(s["rows"]["pending"], pending, "a failed load changed rows");
    assert!(
        s["last_batch"]["input"]
            .as_str()
            .unwrap()
            .ends_with("in.csv"),
        "{s}"
    );
    // The run's own settings (20/s, 1 s) would stop it again: faster.
    let out = output(work.continue_against(&sandbox, "resume").args([
        "--rate",
        "2000/s",
        "--max-duration",
        "1h",
    ]));
    assert_exit(&out, 0);
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[test]
fn export_and_validate_refuse_to_overwrite_their_inputs() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let csv = reference_csv(&references("OW", 5));
    work.write("in.csv", &csv);
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    let state = std::fs::read(work.path("trackmass.db")).unwrap();
    for args in [
        vec!["export", "--out", "./a.csv", "--failures", "a.csv"],
        vec!["export", "--out", "trackmass.db-wal"],
        vec!["export", "--failures", "sub/../trackmass.db"],
    ] {
        std::fs::create_dir_all(work.path("sub")).unwrap();
        let out = output(work.trackmass().args(&args));
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("same file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = output(
        work.trackmass()
            .args(["validate", "in.csv", "--rejects", "./in.csv"]),
    );
    assert_exit(&out, 2);
    assert_eq!(work.read("in.csv"), csv);
    assert_eq!(std::fs::read(work.path("trackmass.db")).unwrap(), state);
    assert!(!work.path("a.csv").exists());
}

#[test]
fn unattended_output_json_logs_and_quiet() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let mut csv = reference_csv(&references("LG", 20));
    csv.push_str("BAD\u{1}REF\n");
    work.write("in.csv", &csv);

    // Every line on stderr is a JSON object with a level and a message;
    // the reject is among them, with its line.
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--log-format",
        "json",
        "--progress",
        "never",
    ]));
    assert_exit(&out, 3);
    let lines: Vec<Value> = stderr(&out).lines().map(json).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l["message"].as_str().unwrap().contains("line 22")),
        "{lines:?}"
    );

    // -q: nothing on stderr for a run without errors, the summary on stdout.
    work.write("ok.csv", reference_csv(&references("LH", 5)));
    let out = output(work.run_against(&sandbox, "ok.csv").arg("-q"));
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), "");
    assert!(stdout(&out).contains("5 tracked"), "{}", stdout(&out));
}

#[test]
fn refused_credentials_from_the_config_file_are_named_as_its_keys() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("CK", 3)));
    let run = |api_key: &str, client_secret: &str| {
        let path = work.write(
            "trackmass.toml",
            format!(
                "[credentials]\napi_key = \"{api_key}\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = \"{client_secret}\"\n"
            ),
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = output(work.trackmass().args([
            "--config",
            "trackmass.toml",
            "run",
            "in.csv",
            "--base-url",
            &sandbox.base_url(),
            "--token-url",
            &sandbox.token_url(),
        ]));
        assert_exit(&out, 1);
        stderr(&out)
    };

    let err = run("wrong-key", CLIENT_SECRET);
    assert!(
        err.contains("refused the subscription key (credentials.api_key in trackmass.toml)"),
        "{err}"
    );
    let err = run(API_KEY, "wrong-secret");
    assert!(
        err.contains(
            "check credentials.client_id in trackmass.toml and \
             credentials.client_secret in trackmass.toml"
        ),
        "{err}"
    );
    for err in [run("wrong-key", CLIENT_SECRET), err] {
        assert!(!err.contains("TRACKMASS_"), "{err}");
        assert!(!err.contains("wrong-"), "{err}");
    }
    assert_eq!(sandbox.outcome("created"), 0);
}
