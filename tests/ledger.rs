//! The state file as a ledger of documents, through the binary: nothing
//! stranded between nights, nothing tracked twice, no state file or output
//! path tricked, schema 2 files migrated without losing a row.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// Runs `cmd` until the sandbox has created `n` trackings, then Ctrl-C:
/// the run must stop with exit 4.
fn stop_after(
    sandbox: &TestSandbox,
    cmd: &mut std::process::Command,
    n: u64,
) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    wait_for(Duration::from_secs(60), "some trackings", || {
        sandbox.outcome("created") >= n
    });
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().expect("run ends");
    assert_exit(&out, 4);
    out
}

/// Every document created exactly once.
#[track_caller]
fn created_once(sandbox: &TestSandbox, expected: usize) {
    let creations = sandbox.creations();
    assert_eq!(creations.len(), expected, "{creations:?}");
    let twice: BTreeMap<_, _> = creations.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "created more than once: {twice:?}");
}

#[test]
fn night_two_sends_what_night_one_left_and_reports_it() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let night1 = references("NA", 120);
    let night2 = references("NB", 40);
    work.write("night1.csv", reference_csv(&night1));
    work.write("night2.csv", reference_csv(&night2));

    // Night 1 is stopped with most of its rows pending.
    let mut cmd = work.run_against(&sandbox, "night1.csv");
    cmd.args(["--rate", "40/s", "--summary", "night1.json"]);
    let out = stop_after(&sandbox, &mut cmd, 10);
    let first = json(&work.read("night1.json"));
    let left = first["pending"].as_u64().unwrap();
    assert!(left > 0 && left < 120, "{first}");
    assert!(
        stdout(&out).contains("run `trackmass resume --state trackmass.db` to continue"),
        "{}",
        stdout(&out)
    );

    // What night 1 tracked, and so what it left.
    let out = output(
        work.trackmass()
            .args(["export", "--out", "n1.csv", "--failures", "n1f.csv"]),
    );
    assert_exit(&out, 0);
    let done: std::collections::BTreeSet<String> = result_lines(&work.path("n1.csv"))
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    let leftover: Vec<String> = night1
        .iter()
        .filter(|r| !done.contains(*r))
        .cloned()
        .collect();
    assert_eq!(leftover.len() as u64, left);

    // Night 2, another file: it sends its own rows and night 1's leftovers.
    let out = output(
        work.run_against(&sandbox, "night2.csv")
            .args(["--summary", "night2.json"]),
    );
    assert_exit(&out, 0);
    let s = json(&work.read("night2.json"));
    assert_eq!(s["pending_earlier"], left);
    assert_eq!(s["requests"], 40 + left);
    assert_eq!(s["pending"], 0);
    assert!(
        stdout(&out).contains(&format!("({left} pending from earlier runs included)")),
        "{}",
        stdout(&out)
    );
    created_once(&sandbox, 160);
    // Night 2's results: the leftovers it tracked (in night 1's order),
    // then its own rows; nothing night 1 had tracked already.
    let mut expected = leftover.clone();
    expected.extend(night2.iter().cloned());
    sandbox.assert_results(&work.path("results.csv"), &expected);
    // Nothing left anywhere: resume has nothing to do, status agrees.
    let st = status_json(&work, "trackmass.db");
    assert_eq!(st["rows"]["pending"], 0);
    assert_eq!(st["rows"]["tracked"], 160);
    let out = output(&mut work.continue_against(&sandbox, "resume"));
    assert_exit(&out, 0);
    created_once(&sandbox, 160);
    // export --all lists every document once.
    let out = output(work.trackmass().args([
        "export",
        "--all",
        "--out",
        "all.csv",
        "--failures",
        "all-failures.csv",
    ]));
    assert_exit(&out, 0);
    let all: std::collections::BTreeSet<String> = result_lines(&work.path("all.csv"))
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    assert_eq!(all.len(), 160);
}

#[test]
fn a_document_named_again_with_other_fields_is_not_tracked_twice() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("WY", 20);
    work.write("in.csv", reference_csv(&refs));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    // The same documents with a way, and one reference twice with two
    // places (a new document: one request, with the first place).
    let mut csv = String::from("documentReference,place\n");
    csv.push_str("WZ0000001,MTDF\nWZ0000001,FRLEH\n");
    work.write("again.csv", &csv);
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--way",
        "import",
        "--summary",
        "s.json",
    ]));
    assert_exit(&out, 0);
    let s = json(&work.read("s.json"));
    assert_eq!(
        (s["requests"].as_u64(), s["fields_differ"].as_u64()),
        (Some(0), Some(20))
    );
    assert!(
        stderr(&out).contains("is already tracked in the state file with other fields"),
        "{}",
        stderr(&out)
    );
    // Each unit once in the results.
    sandbox.assert_results(&work.path("results.csv"), &refs);
    let out = output(&mut work.run_against(&sandbox, "again.csv"));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("again.csv: line 3: WZ0000001 names the document of line 2"),
        "{}",
        stderr(&out)
    );
    created_once(&sandbox, 21);
    assert_eq!(
        sandbox.outcome("created"),
        21,
        "no duplicate request reached the API"
    );
    // --force sends this row's fields: the document again, once.
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--way", "import", "--force"]),
    );
    assert_exit(&out, 0);
    assert_eq!(sandbox.outcome("duplicate"), 20);
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[test]
fn exhausted_rows_of_night_one_are_retried_the_morning_after_night_two() {
    let work = Workdir::new();
    let night1 = references("EA", 10);
    let night2 = references("EB", 10);
    work.write("night1.csv", reference_csv(&night1));
    work.write("night2.csv", reference_csv(&night2));
    let down = TestSandbox::always_503();
    let out = output(
        work.run_against(&down, "night1.csv")
            .args(["--max-attempts", "1"]),
    );
    assert_exit(&out, 3);
    let up = TestSandbox::start();
    // Night 2: its own rows tracked; night 1's exhausted rows are still
    // owed, so they stay in failures.csv and the night exits 3.
    let out = output(&mut work.run_against(&up, "night2.csv"));
    assert_exit(&out, 3);
    assert!(
        stdout(&out)
            .contains("10 exhausted (retries ran out): `trackmass retry --state trackmass.db`"),
        "{}",
        stdout(&out)
    );
    let failures = read_csv(&work.path("failures.csv"));
    let exhausted: Vec<&str> = failures
        .iter()
        .filter(|r| r["status"] == "exhausted")
        .map(|r| r["documentReference"].as_str())
        .collect();
    assert_eq!(
        exhausted,
        night1.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // The morning after: retry reaches them.
    let out = output(&mut work.continue_against(&up, "retry"));
    assert_exit(&out, 0);
    created_once(&up, 20);
    let mut both = night2.clone();
    both.extend(night1.iter().cloned());
    let got: Vec<String> = result_lines(&work.path("results.csv"))
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    for r in &both {
        assert!(got.contains(r), "{r} missing from the results after retry");
    }
    assert_eq!(read_csv(&work.path("failures.csv")).len(), 0);
}

#[cfg(unix)]
#[test]
fn a_symlink_to_a_held_state_file_is_refused_and_nothing_is_created_twice() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("SY", 150);
    work.write("in.csv", reference_csv(&refs));
    std::os::unix::fs::symlink("real.db", work.path("link.db")).unwrap();
    let mut first = work.run_against(&sandbox, "in.csv");
    first
        .args(["--state", "real.db", "--rate", "30/s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = first.spawn().unwrap();
    wait_for(Duration::from_secs(60), "the first run to send", || {
        sandbox.outcome("created") >= 5
    });
    for path in ["link.db", "./sub/../real.db"] {
        std::fs::create_dir_all(work.path("sub")).unwrap();
        let out = output(work.run_against(&sandbox, "in.csv").args([
            "--state",
            path,
            "--out",
            "second.csv",
            "--failures",
            "second-f.csv",
        ]));
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("in use by trackmass run"),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("pid {}", child.id())),
            "{}",
            stderr(&out)
        );
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    created_once(&sandbox, 150);
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[cfg(unix)]
#[test]
fn a_planted_lock_symlink_is_refused_and_its_target_untouched() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("PL", 3)));
    let victim = work.write("victim.txt", "do not touch\n");
    std::os::unix::fs::symlink(&victim, work.path("trackmass.db.lock")).unwrap();
    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("the lock file is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(work.read("victim.txt"), "do not touch\n");
    assert_eq!(sandbox.traffic(), (0, 0));
}

#[test]
fn an_empty_state_file_is_refused_and_nothing_is_sent() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("ZB", 3)));
    work.write("trackmass.db", "");
    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("trackmass.db: not a trackmass state file"),
        "{err}"
    );
    assert!(
        err.contains("empty (0 bytes)") && err.contains("delete it"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(work.path("trackmass.db")).unwrap().len(),
        0
    );
    assert_eq!(sandbox.traffic(), (0, 0));
    assert!(!work.path("results.csv").exists());
}

#[cfg(unix)]
#[test]
fn a_fifo_output_is_refused_and_the_null_device_is_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("FF", 5);
    work.write("in.csv", reference_csv(&refs));
    let fifo = work.path("results.fifo");
    mkfifo(&fifo);
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--out", "results.fifo"]),
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("results.fifo: is a FIFO"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(sandbox.traffic(), (0, 0), "sent before refusing an output");

    // The null device takes the failures and stays the null device; as
    // root, a device node of it in the test directory too.
    let node = work.path("null-node");
    let c = c_path(&node);
    // SAFETY: a valid C string; mknod only creates a node (it fails
    // unless privileged, and then that case is left out).
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
    let mut devices = vec![Path::new("/dev/null")];
    if made {
        devices.push(node.as_path());
    }
    for device in devices {
        let out = output(
            work.run_against(&sandbox, "in.csv")
                .arg("--failures")
                .arg(device),
        );
        assert_exit(&out, 0);
        let meta = std::fs::symlink_metadata(device).unwrap();
        assert!(
            meta.file_type().is_char_device(),
            "{} was replaced",
            device.display()
        );
    }
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[test]
fn out_dash_writes_the_results_to_stdout_and_the_summary_to_stderr() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("SO", 6);
    work.write("in.csv", reference_csv(&refs));
    let out = output(work.run_against(&sandbox, "in.csv").args(["--out", "-"]));
    assert_exit(&out, 0);
    work.write("from-stdout.csv", &out.stdout);
    sandbox.assert_results(&work.path("from-stdout.csv"), &refs);
    assert!(
        stderr(&out).contains("trackmass: in.csv: 6 rows"),
        "{}",
        stderr(&out)
    );
    assert!(!work.path("-").exists());
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--out", "-", "--failures", "-"]),
    );
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("both write to standard output"),
        "{}",
        stderr(&out)
    );
}

#[cfg(unix)]
#[test]
fn a_configuration_file_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("CF", 3)));
    let config = work.write("trackmass.toml", "out = \"elsewhere.csv\"\n");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .args(["--config", "trackmass.toml"]),
    );
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("trackmass.toml: is writable by group or others (mode 664)"),
        "{err}"
    );
    assert!(err.contains("chmod go-w trackmass.toml"), "{err}");
    assert_eq!(sandbox.traffic(), (0, 0));
    // Owned by another user (only root can make one here).
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = c_path(&config);
    // SAFETY: a valid C string; chown changes the file's owner or fails.
    if unsafe { libc::chown(c.as_ptr(), 65534, 65534) } == 0 {
        let out = output(
            work.run_against(&sandbox, "in.csv")
                .args(["--config", "trackmass.toml"]),
        );
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("is owned by uid 65534"),
            "{}",
            stderr(&out)
        );
        assert_eq!(sandbox.traffic(), (0, 0));
    }
}

#[test]
fn validate_before_the_first_run_counts_nothing_as_tracked() {
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("VF", 4)));
    let out =
        output(
            work.trackmass()
                .args(["validate", "in.csv", "--state", "onboarding.db", "--json"]),
        );
    assert_exit(&out, 0);
    let r = json(&stdout(&out));
    assert_eq!(
        (r["already_tracked"].as_u64(), r["to_send"].as_u64()),
        (Some(0), Some(4))
    );
    assert!(
        !work.path("onboarding.db").exists(),
        "validate created the state file"
    );
}

#[cfg(unix)]
#[test]
fn a_state_file_removed_during_a_run_ends_it_with_exit_1() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("RM", 150);
    work.write("in.csv", reference_csv(&refs));
    let child = work
        .run_against(&sandbox, "in.csv")
        .args(["--rate", "30/s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "some trackings", || {
        sandbox.outcome("created") >= 5
    });
    // While it runs: status says what is being sent, not "interrupted".
    let st = status_json(&work, "trackmass.db");
    assert!(st["running"].is_object(), "{st}");
    assert_eq!(st["in_flight_at_interruption"], 0, "{st}");
    std::fs::remove_file(work.path("trackmass.db")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 1);
    assert!(
        stderr(&out)
            .contains("trackmass.db: the state file was removed while this command held it"),
        "{}",
        stderr(&out)
    );
    // What it tracked is still in its results.
    assert!(!result_lines(&work.path("results.csv")).is_empty());
}

#[test]
fn a_schema_2_state_file_is_migrated_with_every_row_and_outcome() {
    let work = Workdir::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-v2/v2.db");
    std::fs::copy(&fixture, work.path("v2.db")).unwrap();
    // Every request row of the fixture, by id: (reference, status, tracking).
    let rows = |db: &Path, table: &str| -> BTreeMap<i64, (String, String, Option<String>)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id, document_reference, status, tracking_id FROM {table}"
            ))
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let before = rows(&work.path("v2.db"), "items");
    assert_eq!(before.len(), 28);

    // resume migrates it and sends what was pending (3 documents).
    let sandbox = TestSandbox::start();
    let out = output(work.continue_against(&sandbox, "resume").args([
        "--state",
        "v2.db",
        "--out",
        "r.csv",
        "--failures",
        "f.csv",
    ]));
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("upgraded from schema 2 to 3") && stderr(&out).contains("2 rows"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sandbox.outcome("created"), 3);

    // Nothing lost: every row is in items or, merged, in superseded, with
    // its outcome; the pending ones are now tracked.
    let mut after = rows(&work.path("v2.db"), "items");
    let aside = rows(&work.path("v2.db"), "superseded");
    assert_eq!(aside.keys().copied().collect::<Vec<_>>(), [4, 16]);
    after.extend(aside);
    assert_eq!(after.len(), before.len());
    for (id, (reference, status, tracking)) in &before {
        let (r, s, t) = &after[id];
        assert_eq!(r, reference);
        if status == "pending" {
            assert_eq!(s, "tracked", "{reference} was pending");
        } else {
            assert_eq!((s, t), (status, tracking), "{reference} (row {id})");
        }
    }
    // One row per document: FIX0000003 once (its first tracking), the
    // agent's FIX0000002 apart; FIX0000004 keeps its latest answer.
    let st = status_json(&work, "v2.db");
    assert_eq!(st["rows"]["total"], 26);
    assert_eq!(st["rows"]["tracked"], 11 + 3);
    assert_eq!(st["rows"]["failed"], 7);
    assert_eq!(st["rows"]["exhausted"], 4);
    // The whole ledger: FIX0000003 once with its units once each, the
    // agent's FIX0000002 apart from the plain one, FIX0000004 once with its
    // latest answer.
    let out = output(work.trackmass().args([
        "export",
        "--state",
        "v2.db",
        "--all",
        "--out",
        "all.csv",
        "--failures",
        "allf.csv",
    ]));
    assert_exit(&out, 0);
    let results = read_csv(&work.path("all.csv"));
    let fix3: Vec<_> = results
        .iter()
        .filter(|r| r["documentReference"] == "FIX0000003")
        .collect();
    assert!(!fix3.is_empty());
    let units: std::collections::BTreeSet<_> =
        fix3.iter().map(|r| r["reference"].clone()).collect();
    assert_eq!(
        units.len(),
        fix3.len(),
        "a unit of FIX0000003 twice in the results"
    );
    let fix2: std::collections::BTreeSet<&str> = results
        .iter()
        .filter(|r| r["documentReference"] == "FIX0000002")
        .map(|r| r["agentCode"].as_str())
        .collect();
    assert_eq!(fix2, ["", "CCGM"].into());
    let failures = read_csv(&work.path("allf.csv"));
    let fix4: Vec<_> = failures
        .iter()
        .filter(|r| r["documentReference"] == "FIX0000004")
        .collect();
    assert_eq!(fix4.len(), 1);
    assert_eq!(
        (fix4[0]["status"].as_str(), fix4[0]["place"].as_str()),
        ("exhausted", "MTDF")
    );
    // The resume's own files: run 3's input and what the ledger still owes.
    let own: Vec<String> = read_csv(&work.path("r.csv"))
        .iter()
        .map(|r| r["documentReference"].clone())
        .collect();
    assert!(own.iter().all(|r| r.starts_with("FIXC")), "{own:?}");
    assert_eq!(
        read_csv(&work.path("f.csv")).len(),
        1 + 4,
        "FIXC000001 failed, 4 exhausted"
    );
    // The runs read back with their outcomes.
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs[0]["outcome"], "completed_with_failures");
    assert_eq!(runs[2]["outcome"], "interrupted");
}

#[test]
fn retry_run_n_sends_only_that_runs_failures() {
    let work = Workdir::new();
    let monday = references("RA", 5);
    let tuesday = references("RB", 5);
    work.write("monday.csv", reference_csv(&monday));
    work.write("tuesday.csv", reference_csv(&tuesday));
    let down = TestSandbox::always_503();
    for night in ["monday.csv", "tuesday.csv"] {
        let out = output(work.run_against(&down, night).args(["--max-attempts", "1"]));
        assert_exit(&out, 3);
    }
    let up = TestSandbox::start();
    let out = output(work.continue_against(&up, "retry").args(["--run", "1"]));
    // Tuesday's documents are still owed: exit 3, and they stay listed.
    assert_exit(&out, 3);
    let sent: Vec<String> = up.creations().into_keys().collect();
    assert_eq!(sent, monday);
    let exhausted: Vec<String> = read_csv(&work.path("failures.csv"))
        .into_iter()
        .filter(|r| r["status"] == "exhausted")
        .map(|r| r["documentReference"].clone())
        .collect();
    assert_eq!(exhausted, tuesday);
    let out = output(work.continue_against(&up, "retry").args(["--run", "7"]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no run #7"), "{}", stderr(&out));
}

#[test]
fn export_to_a_pipe_closed_early_ends_quietly() {
    use std::io::Read;
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    // Enough results to fill a pipe's buffer several times.
    work.write("in.csv", reference_csv(&references("BP", 1500)));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    let mut child = work
        .trackmass()
        .args(["export", "--out", "-", "--failures", "f.csv"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_exact(&mut first)
        .unwrap();
    // The reader (as `| head`) is gone now.
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
    assert!(first.starts_with(b"\"documentReference\""));
}

#[cfg(unix)]
#[test]
fn a_hangup_stops_the_run_cleanly_like_ctrl_c() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("HU", 150);
    work.write("in.csv", reference_csv(&refs));
    let child = work
        .run_against(&sandbox, "in.csv")
        .args(["--rate", "40/s", "--summary", "s.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "some trackings", || {
        sandbox.outcome("created") >= 5
    });
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 4);
    let s = json(&work.read("s.json"));
    assert_eq!(s["stopped_by"], "signal");
    let pending = s["pending"].as_u64().unwrap();
    assert!(pending > 0, "{s}");
    // The next command continues it.
    assert_exit(&output(&mut work.continue_against(&sandbox, "resume")), 0);
    created_once(&sandbox, 150);
}
