//! The bad-input corpus: `tests/data/bad/`, described case by case in its
//! `cases.toml`. Each case runs the real binary in a temp dir of its own
//! against the test sandbox and must end with its clear message or its
//! row-level rejects, nothing lost: no panic, no half-written result file,
//! a refused run sends nothing and leaves the state file byte-identical.
//!
//! Every broken expectation of a case is collected and reported at once,
//! so that one failing test shows everything wrong with its case.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::common::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bad");

/// A clear message is short: none of these limits is near a real one.
const MAX_STDERR_BYTES: usize = 64 * 1024;
const MAX_MESSAGE_CHARS: usize = 512;

/// 10 MiB: the size of the cell in the `field-10mb-*` cases.
const TEN_MIB: usize = 10 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    about: String,
    input: String,
    generate: Option<String>,
    setup: Option<String>,
    state: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    exit: i32,
    #[serde(default)]
    refused: bool,
    #[serde(default)]
    stderr: Vec<String>,
    #[serde(default)]
    stdout: Vec<String>,
    rows: Option<u64>,
    #[serde(default)]
    duplicates: u64,
    #[serde(default)]
    tracked: Vec<String>,
    #[serde(default)]
    reject: Vec<ExpectedReject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedReject {
    line: u64,
    field: String,
    says: String,
    reference: Option<String>,
}

fn manifest() -> Manifest {
    let path = format!("{CORPUS}/cases.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn case(name: &str) -> Case {
    manifest()
        .case
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name:?} in cases.toml"))
}

/// One test per case, and the list of cases that have one.
macro_rules! cases {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_case($name);
            }
        )*
        const TESTED: &[&str] = &[$($name),*];
    };
}

cases! {
    empty => "empty",
    blank_lines_only => "blank-lines-only",
    bom_only => "bom-only",
    header_only => "header-only",
    no_reference_column => "no-reference-column",
    ragged_rows => "ragged-rows",
    quoted_newlines => "quoted-newlines",
    unclosed_quote => "unclosed-quote",
    excel_semicolon_bom => "excel-semicolon-bom",
    utf16le_bom => "utf16le-bom",
    utf16be_bom => "utf16be-bom",
    utf16le_no_bom => "utf16le-no-bom",
    invalid_utf8_header => "invalid-utf8-header",
    invalid_utf8 => "invalid-utf8",
    nul_bytes => "nul-bytes",
    reference_spaces_control => "reference-spaces-control",
    formula_reference => "formula-reference",
    excel_scientific => "excel-scientific",
    field_10mb_ignored_column => "field-10mb-ignored-column",
    field_10mb_place => "field-10mb-place",
    duplicates_1m => "duplicates-1m",
    input_is_a_directory => "input-is-a-directory",
    unreadable_input => "unreadable-input",
    missing_output_dir => "missing-output-dir",
    read_only_output_dir => "read-only-output-dir",
    state_not_sqlite => "state-not-sqlite",
    state_other_tables => "state-other-tables",
    state_newer_schema => "state-newer-schema",
}

#[test]
fn the_manifest_the_files_and_the_tests_agree() {
    let manifest = manifest();
    let names: Vec<&str> = manifest.case.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, TESTED, "cases.toml and the tests list other cases");
    let mut used = vec!["cases.toml".to_string()];
    for c in &manifest.case {
        assert!(!c.about.trim().is_empty(), "{}: say what it holds", c.name);
        assert!(
            !c.refused || !c.stderr.is_empty(),
            "{}: a refusal needs its message",
            c.name
        );
        assert!(
            c.refused || c.rows.is_some(),
            "{}: a run that finishes needs `rows`",
            c.name
        );
        if c.generate.is_none() {
            used.push(c.input.clone());
        }
        if let Some(file) = c.state.as_deref().and_then(|s| s.strip_prefix("file:")) {
            used.push(file.to_string());
        }
    }
    for entry in std::fs::read_dir(CORPUS).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(used.contains(&name), "{name} belongs to no case");
    }
    for name in &used {
        assert!(Path::new(CORPUS).join(name).is_file(), "{name} is missing");
    }
}

/// Makes what a `generate` case describes, at `path`.
fn generate(kind: &str, path: &Path) {
    fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let units = bom
            .then_some(0xFEFF_u16)
            .into_iter()
            .chain(text.encode_utf16());
        for unit in units {
            if big_endian {
                bytes.extend(unit.to_be_bytes());
            } else {
                bytes.extend(unit.to_le_bytes());
            }
        }
        bytes
    }
    let utf16_text = "documentReference\r\nU1\r\nU2\r\n";
    let bytes: Vec<u8> = match kind {
        "directory" => {
            std::fs::create_dir(path).unwrap();
            return;
        }
        "utf16le-bom" => utf16(utf16_text, false, true),
        "utf16be-bom" => utf16(utf16_text, true, true),
        "utf16le-no-bom" => utf16(utf16_text, false, false),
        "invalid-utf8-header" => b"documentReference,Entrep\xf4t\nA1,X\n".to_vec(),
        "invalid-utf8" => b"documentReference,place\n\
            W1,MTDF\n\
            R\xe9f-2,MTDF\n\
            W3,Entrep\xf4t\n\
            W4,\xe2\x82\n\
            W5,MTDF\n"
            .to_vec(),
        "nul-bytes" => {
            let mut b =
                b"documentReference,place\nN1,MTDF\nN\x002,MTDF\nN3,MT\x00DF\nN4,MTDF\n".to_vec();
            b.extend([0u8; 64]);
            b
        }
        "field-10mb-ignored-column" => {
            let mut b = b"documentReference,note\nB1,short\nB2,".to_vec();
            b.extend(std::iter::repeat_n(b'X', TEN_MIB));
            b.extend(b"\nB3,short\n");
            b
        }
        "field-10mb-place" => {
            let mut b = b"documentReference,place\nP1,MTDF\nP2,".to_vec();
            b.extend(std::iter::repeat_n(b'X', TEN_MIB));
            b.extend(b"\nP3,MTDF\n");
            b
        }
        "duplicates-1m" => {
            let mut b = b"documentReference\n".to_vec();
            for _ in 0..1_000_000 {
                b.extend(b"DUP-0000001\n");
            }
            b
        }
        other => panic!("no generator {other:?}"),
    };
    std::fs::write(path, bytes).unwrap();
}

/// A state file made by a real run of another input, with the in-process
/// sandbox of `--sandbox` (the test sandbox sees nothing of it).
fn seed_state(work: &Workdir) {
    work.write("seed.csv", "documentReference\nSEED-1\nSEED-2\n");
    let out = output(work.trackmass().args([
        "run",
        "seed.csv",
        "--sandbox",
        "--rate",
        "1000/s",
        "--out",
        "seed-results.csv",
        "--failures",
        "seed-failures.csv",
        "-q",
    ]));
    assert_exit(&out, 0);
}

fn prepare_state(work: &Workdir, case: &Case) {
    let default = if case.refused { "seeded" } else { "none" };
    match case.state.as_deref().unwrap_or(default) {
        "none" => {}
        "seeded" => seed_state(work),
        "newer-schema" => {
            seed_state(work);
            let db = rusqlite::Connection::open(work.path("trackmass.db")).unwrap();
            db.pragma_update(
                None,
                "user_version",
                trackmass::testing::store::SCHEMA_VERSION + 1,
            )
            .unwrap();
        }
        "other-tables" => {
            let db = rusqlite::Connection::open(work.path("trackmass.db")).unwrap();
            db.execute_batch(
                "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);
                 INSERT INTO invoices (total) VALUES (12.5);",
            )
            .unwrap();
        }
        other => {
            let file = other
                .strip_prefix("file:")
                .unwrap_or_else(|| panic!("{}: unknown state {other:?}", case.name));
            std::fs::copy(Path::new(CORPUS).join(file), work.path("trackmass.db")).unwrap();
        }
    }
}

/// Applies `setup`. Returns whether the run must be made as an ordinary
/// user: root reads and writes through permissions, so as root (CI) the
/// binary runs as `nobody` (uid 65534) in a work dir opened to it.
fn prepare_setup(work: &Workdir, case: &Case) -> bool {
    let as_nobody = || {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        true
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    match case.setup.as_deref() {
        None => false,
        Some("unreadable") => {
            let input = work.path(&case.input);
            mode(&input, 0o000);
            if std::fs::read(&input).is_ok() {
                return as_nobody();
            }
            false
        }
        Some("read-only-out-dir") => {
            let dir = work.path("read-only");
            std::fs::create_dir(&dir).unwrap();
            mode(&dir, 0o555);
            let probe = dir.join("probe");
            if std::fs::write(&probe, "x").is_ok() {
                let _ = std::fs::remove_file(&probe);
                return as_nobody();
            }
            false
        }
        Some(other) => panic!("{}: unknown setup {other:?}", case.name),
    }
}

/// Gives back what `prepare_setup` took, so the temp dir can be removed.
fn undo_setup(work: &Workdir, case: &Case) {
    use std::os::unix::fs::PermissionsExt;
    let restore = |path: PathBuf, mode: u32| {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    };
    match case.setup.as_deref() {
        Some("unreadable") => restore(work.path(&case.input), 0o644),
        Some("read-only-out-dir") => restore(work.path("read-only"), 0o755),
        _ => {}
    }
}

/// Cells as trackmass must write them: one a spreadsheet would run as a
/// formula (or show as another) gets a leading `'` (OWASP's advice on CSV
/// injection).
fn neutralised(cell: &str) -> String {
    if guarded(cell) {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

/// A CSV's header and its rows as header → value maps.
type Table = (Vec<String>, Vec<BTreeMap<String, String>>);

/// A CSV read whole, or why it cannot be.
fn read_table(path: &Path) -> Result<Table, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| e.to_string())?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        rows.push(
            header
                .iter()
                .cloned()
                .zip(record.iter().map(String::from))
                .collect(),
        );
    }
    Ok((header, rows))
}

/// `.NAME.PID.tmp` files left anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            found.push(path);
        }
    }
    found
}

/// Shortens a text for a failure report (some cells are 10 MiB).
fn clip(text: &str) -> String {
    const KEEP: usize = 300;
    if text.chars().count() <= KEEP {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(KEEP).collect();
    format!("{head:?}… ({} bytes)", text.len())
}

/// The output paths of a run: defaults unless `args` moves them.
fn output_paths(case: &Case) -> Vec<String> {
    let mut out = "results.csv".to_string();
    let mut failures = "failures.csv".to_string();
    for pair in case.args.windows(2) {
        match pair[0].as_str() {
            "--out" => out = pair[1].clone(),
            "--failures" => failures = pair[1].clone(),
            _ => {}
        }
    }
    vec![out, failures]
}

/// Runs one case of the corpus and checks it in named steps, collecting
/// every problem before failing, so that one report says all that is wrong.
fn run_case(name: &str) {
    let case = case(name);
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    prepare_input_and_state(&case, &work);
    let state_before = std::fs::read(work.path("trackmass.db")).ok();
    let out = run_as_written(&case, &sandbox, &work);
    let mut problems = Problems::default();
    let summary = check_every_case(&mut problems, &case, &work, &out);
    if case.refused {
        check_refused(
            &mut problems,
            &case,
            &sandbox,
            &work,
            &summary,
            state_before.as_deref(),
        );
    } else {
        check_results_file(&mut problems, &case, &sandbox, &work);
        check_failures_file(&mut problems, &case, &work, &stderr(&out));
        check_sent_and_counted(&mut problems, &case, &sandbox, &summary);
    }
    problems.report(&case, &out);
}

/// What a case found wrong.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, problem: String) {
        if !ok {
            self.0.push(problem);
        }
    }

    /// Fails with every problem, and the run's output, if there is any.
    fn report(&self, case: &Case, out: &std::process::Output) {
        if self.0.is_empty() {
            return;
        }
        let mut report = format!("case {} ({}):\n", case.name, case.about);
        for p in &self.0 {
            let _ = writeln!(report, "  - {p}");
        }
        let _ = write!(
            report,
            "--- stdout\n{}\n--- stderr\n{}",
            clip_block(&stdout(out)),
            clip_block(&stderr(out))
        );
        panic!("{report}");
    }
}

/// Puts the case's input and state file in `work`.
fn prepare_input_and_state(case: &Case, work: &Workdir) {
    match case.generate.as_deref() {
        Some(kind) => generate(kind, &work.path(&case.input)),
        None => {
            std::fs::copy(Path::new(CORPUS).join(&case.input), work.path(&case.input)).unwrap();
        }
    }
    prepare_state(work, case);
}

/// Sets the case's setup up in `work` and runs it against `sandbox` (as
/// nobody when the setup asks), then undoes the setup.
fn run_as_written(case: &Case, sandbox: &TestSandbox, work: &Workdir) -> std::process::Output {
    let as_nobody = prepare_setup(work, case);
    let mut cmd = if as_nobody {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        // A copy in the work dir: the build's own directory may be closed
        // to other users (a clone in a private temp dir).
        let bin = work.path("trackmass-as-nobody");
        std::fs::copy(env!("CARGO_BIN_EXE_trackmass"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = work.run_against_at(&bin, sandbox, &case.input);
        cmd.uid(65534).gid(65534);
        cmd
    } else {
        work.run_against(sandbox, &case.input)
    };
    cmd.args(["--summary", "summary.json"]).args(&case.args);
    let out = output(&mut cmd);
    undo_setup(work, case);
    out
}

/// Every case: its exit status, its words, no panic, no flood, no
/// temporary file left, a summary. Returns the summary.
fn check_every_case(
    problems: &mut Problems,
    case: &Case,
    work: &Workdir,
    out: &std::process::Output,
) -> serde_json::Value {
    let err = stderr(out);
    let text = stdout(out);
    problems.check(
        out.status.code() == Some(case.exit),
        format!("exit status {:?}, expected {}", out.status, case.exit),
    );
    problems.check(
        !err.contains("panicked"),
        "panicked (see stderr)".to_string(),
    );
    problems.check(
        err.len() <= MAX_STDERR_BYTES,
        format!(
            "stderr is {} bytes (a message must not echo the input)",
            err.len()
        ),
    );
    for wanted in &case.stderr {
        problems.check(
            err.contains(wanted.as_str()),
            format!("stderr lacks {wanted:?}"),
        );
    }
    for wanted in &case.stdout {
        problems.check(
            text.contains(wanted.as_str()),
            format!("stdout lacks {wanted:?}"),
        );
    }
    let leftovers = temp_files(work.dir.path());
    problems.check(
        leftovers.is_empty(),
        format!("temporary files left: {leftovers:?}"),
    );
    let summary: Option<serde_json::Value> = std::fs::read_to_string(work.path("summary.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    problems.check(
        summary.is_some(),
        "no readable summary.json (--summary is written also when a run fails)".into(),
    );
    let summary = summary.unwrap_or_default();
    problems.check(
        summary["exit_code"] == case.exit,
        format!(
            "summary exit_code {}, expected {}",
            summary["exit_code"], case.exit
        ),
    );
    summary
}

/// Refused as a whole: nothing sent, nothing written, state intact.
fn check_refused(
    problems: &mut Problems,
    case: &Case,
    sandbox: &TestSandbox,
    work: &Workdir,
    summary: &serde_json::Value,
    state_before: Option<&[u8]>,
) {
    problems.check(
        sandbox.traffic() == (0, 0),
        format!(
            "the sandbox was reached: (requests, tokens) = {:?}",
            sandbox.traffic()
        ),
    );
    for file in output_paths(case) {
        problems.check(
            !work.path(&file).exists(),
            format!("{file} was written by a refused run"),
        );
    }
    problems.check(
        summary["outcome"] == "error",
        format!("summary outcome {}, expected \"error\"", summary["outcome"]),
    );
    if let Some(before) = state_before {
        let after = std::fs::read(work.path("trackmass.db")).unwrap_or_default();
        problems.check(
            *before == after,
            format!(
                "the state file changed ({} bytes before, {} after)",
                before.len(),
                after.len()
            ),
        );
        let wal = std::fs::metadata(work.path("trackmass.db-wal")).map_or(0, |m| m.len());
        problems.check(
            wal == 0,
            format!("the state file has a {wal}-byte write-ahead log"),
        );
    }
}

/// Finished: `results.csv` holds exactly what the sandbox created for the
/// case's tracked references.
fn check_results_file(problems: &mut Problems, case: &Case, sandbox: &TestSandbox, work: &Workdir) {
    let expected_results: Vec<Vec<String>> = sandbox
        .expected_results(&case.tracked)
        .into_iter()
        .map(|line| line.iter().map(|c| neutralised(c)).collect())
        .collect();
    match read_table(&work.path("results.csv")) {
        Err(e) => problems.check(false, format!("results.csv: {e}")),
        Ok((header, rows)) => {
            problems.check(
                header
                    == [
                        "documentReference",
                        "trackingId",
                        "spi",
                        "reference",
                        "agentCode",
                    ],
                format!("results.csv header {header:?}"),
            );
            let got: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    ["documentReference", "trackingId", "spi", "reference"]
                        .iter()
                        .map(|k| r.get(*k).cloned().unwrap_or_default())
                        .collect()
                })
                .collect();
            problems.check(
                got == expected_results,
                format!("results.csv is\n{got:?}\nexpected\n{expected_results:?}"),
            );
        }
    }
}

/// Finished: `failures.csv` lists the case's rejects by line, each naming
/// its field and saying what is wrong, and the log names the same lines.
fn check_failures_file(problems: &mut Problems, case: &Case, work: &Workdir, err: &str) {
    let (header, rows) = match read_table(&work.path("failures.csv")) {
        Err(e) => return problems.check(false, format!("failures.csv: {e}")),
        Ok(table) => table,
    };
    problems.check(
        header.first().map(String::as_str) == Some("line")
            && header.len() == 13
            && header.contains(&"message".to_string()),
        format!("failures.csv header {header:?}"),
    );
    let got_lines: Vec<String> = rows.iter().map(|r| r["line"].clone()).collect();
    let expected_lines: Vec<String> = case.reject.iter().map(|r| r.line.to_string()).collect();
    problems.check(
        got_lines == expected_lines,
        format!("failures.csv lines {got_lines:?}, expected {expected_lines:?}"),
    );
    for expected in &case.reject {
        let line = expected.line.to_string();
        let Some(row) = rows.iter().find(|r| r["line"] == line) else {
            continue;
        };
        check_reject_row(problems, case, expected, row, err);
    }
    if case.name == "field-10mb-place" {
        // The cell itself is kept, so the row can be corrected from
        // failures.csv.
        let kept = rows.first().map_or(0, |r| r["place"].len());
        problems.check(
            kept == TEN_MIB,
            format!("failures.csv keeps {kept} bytes of the place"),
        );
    }
}

/// One reject's line of `failures.csv`, and its log line.
fn check_reject_row(
    problems: &mut Problems,
    case: &Case,
    expected: &ExpectedReject,
    row: &BTreeMap<String, String>,
    err: &str,
) {
    let line = expected.line.to_string();
    let message = &row["message"];
    let field_prefix = format!("{}: ", expected.field);
    problems.check(
        row["status"] == "rejected" && row["attempts"] == "0" && row["httpStatus"].is_empty(),
        format!(
            "line {line}: status {:?}, attempts {:?}, httpStatus {:?}",
            row["status"], row["attempts"], row["httpStatus"]
        ),
    );
    problems.check(
        message.starts_with(&field_prefix) && message.contains(expected.says.as_str()),
        format!(
            "line {line}: message {} does not name {:?} and say {:?}",
            clip(message),
            expected.field,
            expected.says
        ),
    );
    problems.check(
        message.chars().count() <= MAX_MESSAGE_CHARS,
        format!(
            "line {line}: the message is {} characters: {}",
            message.chars().count(),
            clip(message)
        ),
    );
    if let Some(reference) = &expected.reference {
        problems.check(
            row["documentReference"] == neutralised(reference),
            format!(
                "line {line}: documentReference {}, expected {}",
                clip(&row["documentReference"]),
                clip(&neutralised(reference))
            ),
        );
    }
    let logged = format!("{}: line {line}: {}", case.input, expected.field);
    problems.check(err.contains(&logged), format!("stderr lacks {logged:?}"));
}

/// Finished: each tracked reference sent once, nothing else sent, and the
/// summary's counts are the case's.
fn check_sent_and_counted(
    problems: &mut Problems,
    case: &Case,
    sandbox: &TestSandbox,
    summary: &serde_json::Value,
) {
    let creations = sandbox.creations();
    let expected_creations: BTreeMap<String, u64> =
        case.tracked.iter().map(|r| (r.clone(), 1)).collect();
    problems.check(
        creations == expected_creations,
        format!("the sandbox created {creations:?}, expected {expected_creations:?}"),
    );
    if case.tracked.is_empty() {
        problems.check(
            sandbox.traffic() == (0, 0),
            format!(
                "nothing to send, yet (requests, tokens) = {:?}",
                sandbox.traffic()
            ),
        );
    }
    let counts = [
        ("rows", case.rows.unwrap_or(0)),
        ("rejected", case.reject.len() as u64),
        ("duplicates", case.duplicates),
        ("new", case.tracked.len() as u64),
        ("requests", case.tracked.len() as u64),
        ("tracked", case.tracked.len() as u64),
    ];
    for (key, expected) in counts {
        problems.check(
            summary[key] == expected,
            format!("summary {key} = {}, expected {expected}", summary[key]),
        );
    }
}

/// A stream for a failure report: long lines and long streams shortened.
fn clip_block(text: &str) -> String {
    const LINE: usize = 400;
    const LINES: usize = 40;
    let mut out = String::new();
    for line in text.lines().take(LINES) {
        let chars = line.chars().count();
        if chars > LINE {
            let head: String = line.chars().take(LINE).collect();
            let _ = writeln!(out, "{head}… ({chars} characters)");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    let total = text.lines().count();
    if total > LINES {
        let _ = writeln!(out, "… ({total} lines in all)");
    }
    out
}
