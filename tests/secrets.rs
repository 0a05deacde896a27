//! Credentials never reach an output. The job runs with distinctive secret
//! values (subscription key, client id, client secret, access tokens)
//! through success, refusal, faults, a kill, trace logging in both log
//! formats and a configuration file; then every byte of every file in the
//! working directory (state file, its -wal and -shm, the lock file, result
//! files, summary, metrics, logs) and every stdout and stderr is searched
//! for each secret, raw and in the encodings it travels in (form-encoded,
//! percent-encoded, base64, HTTP Basic). Each scenario first checks that
//! the secrets did reach the sandbox, so that finding none means something.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use trackmass::sandbox::catalogue::Stream;
use trackmass::sandbox::{Config, Faults};

use crate::common::*;

/// The credentials the sandboxes of this module accept. Long, unlike any
/// other text, and with characters that form and percent encoding change
/// (`+`, `/`, `=`, `%`, space), so that each encoded form differs.
const API_KEY: &str = "apimKEY+7Qx3Vb9ZrL2/pW8sK4nYd6=Hf1Jc0";
const CLIENT_ID: &str = "clientID.Mg5Aqz7Ty%Wv2Nb4";
const CLIENT_SECRET: &str = "s3cr3t Pass+word/Yk9%Tb=Lr6Xq8Dj";

/// Values the sandboxes refuse, as distinctive.
const WRONG_API_KEY: &str = "wrongKEY+Ue4Rt6Yh/Io0Pj8Zx2=Cv5";
const WRONG_CLIENT_SECRET: &str = "wr0ng Secret+Gh7/Jk3%Lp9=Qw1Er5";
const BOGUS_ACCESS_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.bogusTOKEN.Zm9vYmFyQmF6cXV4";

/// A sandbox that accepts only the distinctive credentials above.
fn distinctive(config: Config) -> TestSandbox {
    TestSandbox::with_config(Config {
        api_key: API_KEY.into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..config
    })
}

/// `trackmass ARGS…` pointed at `sandbox` with these credentials in the
/// environment (none of the helpers' default ones).
fn trackmass_with(
    work: &Workdir,
    sandbox: &TestSandbox,
    api_key: &str,
    client_secret: &str,
) -> Command {
    let mut cmd = work.trackmass();
    cmd.env("TRACKMASS_BASE_URL", sandbox.base_url())
        .env("TRACKMASS_TOKEN_URL", sandbox.token_url())
        .env("TRACKMASS_API_KEY", api_key)
        .env("TRACKMASS_CLIENT_ID", CLIENT_ID)
        .env("TRACKMASS_CLIENT_SECRET", client_secret);
    cmd
}

/// The access token the sandbox issues `n`th (from 0), as its token
/// endpoint computes it. [`checked_issued_tokens`] proves the formula on a
/// token fetched for real.
fn nth_sandbox_token(seed: u64, n: u64) -> String {
    let mut stream = Stream::new(seed ^ 0x0074_6f6b_656e, &n.to_string());
    format!(
        "sbx.{:016x}{:016x}.{n}",
        stream.next_u64(),
        stream.next_u64()
    )
}

/// A token fetched from `sandbox` with the distinctive client credentials.
fn fetch_token(sandbox: &TestSandbox) -> String {
    let url = sandbox.token_url();
    let answer: serde_json::Value = sandbox.block_on(async {
        sandbox
            .client()
            .post(&url)
            .form(&[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .expect("token endpoint reachable")
            .json()
            .await
            .expect("token answer is JSON")
    });
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {answer}"))
        .to_string()
}

/// Every token `sandbox` issued so far. Fetches one more and checks that
/// the formula predicted it, so that a change in the sandbox's token format
/// fails here instead of making the search look for the wrong strings.
fn checked_issued_tokens(sandbox: &TestSandbox) -> Vec<String> {
    let issued = sandbox.stats()["tokens_issued"]
        .as_u64()
        .expect("tokens_issued");
    let probe = fetch_token(sandbox);
    assert_eq!(
        probe,
        nth_sandbox_token(sandbox.config.seed, issued),
        "the sandbox's token format changed: update nth_sandbox_token"
    );
    (0..issued)
        .map(|n| nth_sandbox_token(sandbox.config.seed, n))
        .collect()
}

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn form_encoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn percent_encoded(s: &str) -> String {
    form_encoded(s).replace('+', "%20")
}

/// One string that must appear nowhere, and what it is.
#[derive(Debug, Clone)]
struct Needle {
    what: String,
    bytes: Vec<u8>,
}

/// A secret in every form it could be written in: raw, form-encoded,
/// percent-encoded, base64 (standard and URL-safe), and a fragment of its
/// middle (an excerpt cut short still leaks).
fn needles_for(name: &str, secret: &str) -> Vec<Needle> {
    let mut forms = vec![
        ("raw", secret.to_string()),
        ("form-encoded", form_encoded(secret)),
        ("percent-encoded", percent_encoded(secret)),
        ("base64", base64(secret.as_bytes(), B64_STD, false)),
        ("base64url", base64(secret.as_bytes(), B64_URL, false)),
    ];
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 24 {
        let middle = chars.len() / 2;
        forms.push((
            "middle fragment",
            chars[middle - 6..middle + 6].iter().collect(),
        ));
    }
    let mut needles: Vec<Needle> = Vec::new();
    for (form, text) in forms {
        if !needles.iter().any(|n| n.bytes == text.as_bytes()) {
            needles.push(Needle {
                what: format!("{name} ({form}: {text:?})"),
                bytes: text.into_bytes(),
            });
        }
    }
    needles
}

/// The client credentials as an HTTP Basic `Authorization` carries them
/// (RFC 6749 §2.3.1: each form-encoded, then `id:secret` in base64).
fn basic_auth_needles(client_id: &str, client_secret: &str) -> Vec<Needle> {
    let plain = format!("{client_id}:{client_secret}");
    let encoded = format!(
        "{}:{}",
        form_encoded(client_id),
        form_encoded(client_secret)
    );
    [plain, encoded]
        .iter()
        .flat_map(|pair| {
            [B64_STD, B64_URL].map(|alphabet| {
                let text = base64(pair.as_bytes(), alphabet, false);
                Needle {
                    what: format!("client id:secret as HTTP Basic ({text:?})"),
                    bytes: text.into_bytes(),
                }
            })
        })
        .collect()
}

/// The needles for the credentials the job was given in a scenario, plus
/// every access token the sandbox issued.
fn all_needles(secrets: &[(&str, &str)], tokens: &[String]) -> Vec<Needle> {
    let mut needles: Vec<Needle> = secrets
        .iter()
        .flat_map(|(name, value)| needles_for(name, value))
        .collect();
    needles.extend(basic_auth_needles(CLIENT_ID, CLIENT_SECRET));
    needles.extend(basic_auth_needles(CLIENT_ID, WRONG_CLIENT_SECRET));
    for (i, token) in tokens.iter().enumerate() {
        needles.extend(needles_for(&format!("access token #{i}"), token));
        // The random part alone, should a token be shown cut or re-framed.
        if let Some(core) = token.split('.').nth(1) {
            needles.push(Needle {
                what: format!("access token #{i} core ({core})"),
                bytes: core.as_bytes().to_vec(),
            });
        }
    }
    needles
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// What the job left behind and printed.
struct Evidence<'a> {
    work: &'a Workdir,
    /// Files the test itself wrote with secrets in them (the config file).
    excluded: Vec<PathBuf>,
    streams: Vec<(String, Vec<u8>)>,
}

impl<'a> Evidence<'a> {
    fn new(work: &'a Workdir) -> Evidence<'a> {
        Evidence {
            work,
            excluded: Vec::new(),
            streams: Vec::new(),
        }
    }

    /// Keeps a command's stdout and stderr for the search.
    fn add(&mut self, label: &str, out: &Output) {
        self.streams
            .push((format!("{label}: stdout"), out.stdout.clone()));
        self.streams
            .push((format!("{label}: stderr"), out.stderr.clone()));
    }

    /// Every place a needle was found, with its context; and the names of
    /// the files searched.
    fn leaks(&self, needles: &[Needle]) -> (Vec<String>, Vec<String>) {
        let mut sources: Vec<(String, Vec<u8>)> = self.streams.clone();
        let mut searched = Vec::new();
        for path in files_under(self.work.dir.path()) {
            if self.excluded.contains(&path) {
                continue;
            }
            let name = path
                .strip_prefix(self.work.dir.path())
                .unwrap_or(&path)
                .display()
                .to_string();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            searched.push(format!("{name} ({} bytes)", bytes.len()));
            sources.push((name, bytes));
        }
        let mut found = Vec::new();
        for (source, bytes) in &sources {
            for needle in needles {
                if let Some(at) = find(bytes, &needle.bytes) {
                    let from = at.saturating_sub(80);
                    let to = (at + needle.bytes.len() + 80).min(bytes.len());
                    found.push(format!(
                        "{} in {source} at byte {at}: …{}…",
                        needle.what,
                        String::from_utf8_lossy(&bytes[from..to])
                    ));
                }
            }
        }
        (found, searched)
    }

    /// Fails naming every leak.
    fn assert_clean(&self, needles: &[Needle]) {
        let (found, searched) = self.leaks(needles);
        assert!(
            found.is_empty(),
            "secrets leaked:\n{}\n(searched {} needles in {} streams and the files {searched:?})",
            found.join("\n"),
            needles.len(),
            self.streams.len()
        );
    }
}

/// The state file (and its -wal, -shm and lock file where present) and the
/// result files are readable by their owner only.
#[cfg(unix)]
fn assert_private(work: &Workdir, state: &str, results: &[&str]) {
    let mut files = vec![state.to_string(), format!("{state}.lock")];
    for suffix in ["-wal", "-shm"] {
        if work.path(&format!("{state}{suffix}")).exists() {
            files.push(format!("{state}{suffix}"));
        }
    }
    files.extend(results.iter().map(|s| s.to_string()));
    for name in files {
        assert_eq!(
            mode(&work.path(&name)),
            0o600,
            "{name} is readable by others than its owner"
        );
    }
}

#[cfg(not(unix))]
fn assert_private(_: &Workdir, _: &str, _: &[&str]) {}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Input with rows that are tracked, unknown to the sandbox (400 with the
/// service's error body kept in failures.csv) and rejected before sending.
fn mixed_input(work: &Workdir, prefix: &str, n: usize) -> Vec<String> {
    let refs = references(prefix, n);
    let mut csv = reference_csv(&refs);
    csv.push_str("\nRAGGED,ROW\nBAD\u{7}REF\n");
    work.write("in.csv", csv);
    refs
}

/// The three credentials, and every token the sandbox issued, appear in
/// none of the evidence.
fn assert_no_credential(sandbox: &TestSandbox, evidence: &Evidence) {
    let tokens = checked_issued_tokens(sandbox);
    let needles = all_needles(
        &[
            ("subscription key", API_KEY),
            ("client id", CLIENT_ID),
            ("client secret", CLIENT_SECRET),
        ],
        &tokens,
    );
    evidence.assert_clean(&needles);
}

#[test]
fn secrets_stay_out_of_every_output_of_traced_runs() {
    let sandbox = distinctive(Config {
        unknown_rate: 0.2,
        ..Config::default()
    });
    let work = Workdir::new();
    let refs = mixed_input(&work, "SEC", 40);
    let mut evidence = Evidence::new(&work);

    // Trace logging as JSON, with a summary and metrics.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
            .args(["-vv", "--log-format", "json", "run", "in.csv"])
            .args(["--rate", "2000/s", "--summary", "summary.json"])
            .args(["--metrics", "metrics.prom"]),
    );
    assert_exit(&out, 3);
    evidence.add("run -vv --log-format json", &out);
    // The secrets reached the sandbox: it issued a token for the client
    // credentials and created trackings for requests carrying the key.
    let created = sandbox.outcome("created");
    let unknown = sandbox.outcome("unknown_document");
    assert!(created > 0 && unknown > 0, "{}", sandbox.stats());
    assert_eq!(created + unknown, refs.len() as u64);
    assert!(sandbox.stats()["tokens_issued"].as_u64() >= Some(1));
    let summary = json(&work.read("summary.json"));
    assert_eq!(summary["rejected"], 2, "{summary}");
    // Trace logging is on: the log shows the answers.
    let err = stderr(&out);
    assert!(
        err.lines()
            .filter(|l| l.contains("\"level\":\"TRACE\"") || l.contains("\"level\":\"DEBUG\""))
            .count()
            > 0,
        "no debug or trace lines in {err}"
    );
    assert!(
        err.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "a log line is not JSON: {err}"
    );

    // Everything at trace level, dependencies included, as text; --force
    // sends every row again.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
            .env("TRACKMASS_LOG", "trace")
            .args(["-vv", "run", "in.csv", "--force", "--rate", "2000/s"])
            .args(["--summary", "summary.json", "--metrics", "metrics.prom"]),
    );
    assert_exit(&out, 3);
    evidence.add("run --force with TRACKMASS_LOG=trace", &out);
    assert_eq!(
        sandbox.outcome("created") + sandbox.outcome("duplicate"),
        2 * created,
        "{}",
        sandbox.stats()
    );

    // The operating commands, which read the state file back.
    for args in [
        &["status", "--json"][..],
        &["-vv", "status"],
        &[
            "-vv",
            "--log-format",
            "json",
            "export",
            "--out",
            "export.csv",
        ],
        &["validate", "in.csv", "--json", "--rejects", "rejects.csv"],
    ] {
        let out = output(trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET).args(args));
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{args:?}: {}",
            stderr(&out)
        );
        evidence.add(&args.join(" "), &out);
    }

    assert_no_credential(&sandbox, &evidence);
    assert_private(
        &work,
        "trackmass.db",
        &["results.csv", "failures.csv", "export.csv"],
    );
}

#[test]
fn refused_credentials_are_not_repeated_anywhere() {
    let sandbox = distinctive(Config {
        unknown_rate: 0.0,
        ..Config::default()
    });
    let work = Workdir::new();
    mixed_input(&work, "REF", 30);
    let mut evidence = Evidence::new(&work);

    // A wrong client secret: the token endpoint refuses it.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, WRONG_CLIENT_SECRET)
            .args(["-vv", "--log-format", "json", "run", "in.csv"])
            .args(["--summary", "refused-secret.json"]),
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("TRACKMASS_CLIENT_SECRET"),
        "{}",
        stderr(&out)
    );
    evidence.add("wrong client secret", &out);
    assert!(sandbox.outcome("token_refused") >= 1, "{}", sandbox.stats());
    assert_eq!(sandbox.stats()["tokens_issued"], 0);

    // A wrong subscription key: the gateway refuses it.
    let out = output(
        trackmass_with(&work, &sandbox, WRONG_API_KEY, CLIENT_SECRET).args([
            "-vv",
            "run",
            "in.csv",
            "--summary",
            "refused-key.json",
        ]),
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("TRACKMASS_API_KEY"),
        "{}",
        stderr(&out)
    );
    evidence.add("wrong subscription key", &out);
    assert!(
        sandbox.outcome("unauthorized_key") >= 1,
        "{}",
        sandbox.stats()
    );

    // A ready access token the service does not know.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
            .env_remove("TRACKMASS_CLIENT_ID")
            .env_remove("TRACKMASS_CLIENT_SECRET")
            .env("TRACKMASS_ACCESS_TOKEN", BOGUS_ACCESS_TOKEN)
            .args(["-vv", "--log-format", "json", "run", "in.csv"])
            .args(["--summary", "refused-token.json"]),
    );
    assert_exit(&out, 1);
    evidence.add("unknown access token", &out);
    assert!(
        sandbox.outcome("unauthorized_token") >= 1,
        "{}",
        sandbox.stats()
    );
    assert_eq!(sandbox.outcome("created"), 0);

    let out = output(work.trackmass().args(["status", "--json"]));
    assert_exit(&out, 0);
    evidence.add("status --json", &out);

    let tokens = checked_issued_tokens(&sandbox);
    assert_eq!(tokens.len(), 1, "the sandbox issued tokens to the job");
    let needles = all_needles(
        &[
            ("subscription key", API_KEY),
            ("wrong subscription key", WRONG_API_KEY),
            ("client id", CLIENT_ID),
            ("client secret", CLIENT_SECRET),
            ("wrong client secret", WRONG_CLIENT_SECRET),
            ("unknown access token", BOGUS_ACCESS_TOKEN),
        ],
        &[],
    );
    evidence.assert_clean(&needles);
    assert_private(&work, "trackmass.db", &["results.csv", "failures.csv"]);
}

#[test]
fn secrets_stay_out_of_a_run_through_faults_token_expiry_and_a_retry() {
    let sandbox = distinctive(Config {
        unknown_rate: 0.1,
        // Tokens die after 1 s though they announce 2 s: some requests meet
        // the service's 401, and the job fetches a fresh token.
        token_ttl: Duration::from_secs(2),
        token_revoked_after: Some(Duration::from_secs(1)),
        faults: Faults {
            status_500: 0.1,
            status_502: 0.05,
            status_503: 0.3,
            drop: 0.05,
            malformed: 0.05,
            truncate: 0.05,
            ..Faults::default()
        },
        ..Config::default()
    });
    let work = Workdir::new();
    let refs = references("FLT", 120);
    work.write("in.csv", reference_csv(&refs));
    let mut evidence = Evidence::new(&work);

    // 120 rows at 50/s take at least 2.4 s: beyond a token's real life.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
            .args(["-vv", "--log-format", "json", "run", "in.csv"])
            .args(["--rate", "50/s", "--max-attempts", "2", "--timeout", "5s"])
            .args(["--backoff-base", "10ms", "--backoff-cap", "20ms"])
            .args(["--summary", "summary.json", "--metrics", "metrics.prom"]),
    );
    assert_exit(&out, 3);
    evidence.add("run through faults", &out);
    let stats = sandbox.stats();
    assert!(sandbox.outcome("created") > 0, "{stats}");
    assert!(sandbox.outcome("fault_503") > 0, "{stats}");
    assert!(sandbox.outcome("unauthorized_token") > 0, "{stats}");
    assert!(stats["tokens_issued"].as_u64() >= Some(2), "{stats}");
    let failures = read_csv(&work.path("failures.csv"));
    for status in ["exhausted", "bad_response", "failed"] {
        assert!(
            failures.iter().any(|f| f["status"] == status),
            "no {status} row in {failures:?}"
        );
    }

    // The morning after: retry the exhausted rows, with trace logs.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET).args([
            "-vv",
            "retry",
            "--summary",
            "retry.json",
        ]),
    );
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    evidence.add("retry", &out);

    assert_no_credential(&sandbox, &evidence);
    assert_private(&work, "trackmass.db", &["results.csv", "failures.csv"]);
}

#[test]
fn a_killed_run_leaves_no_secret_in_the_state_files_wal() {
    let sandbox = distinctive(Config {
        unknown_rate: 0.0,
        ..Config::default()
    });
    let work = Workdir::new();
    let refs = references("KIL", 2000);
    work.write("in.csv", reference_csv(&refs));
    let mut evidence = Evidence::new(&work);

    // Logs go to files in the working directory, searched like the rest.
    let mut child = trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
        .args(["-vv", "--log-format", "json", "run", "in.csv"])
        .args(["--rate", "200/s"])
        .stdin(Stdio::null())
        .stdout(File::create(work.path("killed.stdout")).unwrap())
        .stderr(File::create(work.path("killed.stderr")).unwrap())
        .spawn()
        .expect("trackmass starts");
    wait_for(Duration::from_secs(30), "50 trackings", || {
        sandbox.outcome("created") >= 50
    });
    kill9(&mut child);
    // SQLite had no chance to checkpoint: the answers are in the -wal.
    assert!(
        work.path("trackmass.db-wal").exists(),
        "no -wal after a kill: {:?}",
        files_under(work.dir.path())
    );
    assert!(sandbox.outcome("created") < refs.len() as u64);
    assert_no_credential(&sandbox, &evidence);
    assert_private(&work, "trackmass.db", &[]);

    // The same command continues and finishes.
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
            .args(["-vv", "run", "in.csv", "--rate", "2000/s"]),
    );
    assert_exit(&out, 0);
    evidence.add("run after the kill", &out);
    sandbox.assert_results(&work.path("results.csv"), &refs);
    assert_no_credential(&sandbox, &evidence);
    assert_private(&work, "trackmass.db", &["results.csv", "failures.csv"]);
}

#[test]
fn a_ready_access_token_stays_out_of_every_output() {
    let sandbox = distinctive(Config {
        unknown_rate: 0.2,
        ..Config::default()
    });
    let token = fetch_token(&sandbox);
    let work = Workdir::new();
    mixed_input(&work, "TOK", 25);
    let mut evidence = Evidence::new(&work);
    let out = output(
        trackmass_with(&work, &sandbox, API_KEY, CLIENT_SECRET)
            .env_remove("TRACKMASS_CLIENT_ID")
            .env_remove("TRACKMASS_CLIENT_SECRET")
            .env("TRACKMASS_ACCESS_TOKEN", &token)
            .args(["-vv", "--log-format", "json", "run", "in.csv"])
            .args(["--summary", "summary.json", "--metrics", "metrics.prom"]),
    );
    assert_exit(&out, 3);
    evidence.add("run with a ready token", &out);
    // The job used the token it was given, and fetched none.
    assert_eq!(sandbox.stats()["tokens_issued"], 1);
    assert!(sandbox.outcome("created") > 0, "{}", sandbox.stats());
    assert_eq!(sandbox.outcome("unauthorized_token"), 0);

    let out = output(work.trackmass().args(["-vv", "status", "--json"]));
    assert_exit(&out, 0);
    evidence.add("status --json", &out);

    let tokens = checked_issued_tokens(&sandbox);
    assert_eq!(tokens, [token]);
    let needles = all_needles(&[("subscription key", API_KEY)], &tokens);
    evidence.assert_clean(&needles);
    assert_private(&work, "trackmass.db", &["results.csv", "failures.csv"]);
}

#[cfg(unix)]
#[test]
fn credentials_from_a_config_file_stay_in_it() {
    use std::os::unix::fs::PermissionsExt;

    let sandbox = distinctive(Config {
        unknown_rate: 0.2,
        ..Config::default()
    });
    let work = Workdir::new();
    mixed_input(&work, "CFG", 30);
    let config = work.write(
        "trackmass.toml",
        format!(
            "base_url = \"{}\"\ntoken_url = \"{}\"\nrate = \"2000/s\"\n\
             summary = \"summary.json\"\nmetrics = \"metrics.prom\"\n\n\
             [credentials]\napi_key = \"{API_KEY}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret = \"{CLIENT_SECRET}\"\n",
            sandbox.base_url(),
            sandbox.token_url()
        ),
    );
    let mut evidence = Evidence::new(&work);
    evidence.excluded.push(config.clone());
    let needles = all_needles(
        &[
            ("subscription key", API_KEY),
            ("client id", CLIENT_ID),
            ("client secret", CLIENT_SECRET),
        ],
        &[],
    );
    // The search finds the secrets where they are: in the file itself.
    let (found, _) = Evidence {
        work: &work,
        excluded: Vec::new(),
        streams: Vec::new(),
    }
    .leaks(&needles);
    for secret in ["subscription key", "client id", "client secret"] {
        assert!(
            found
                .iter()
                .any(|f| f.starts_with(secret) && f.contains("trackmass.toml")),
            "the search misses the {secret} in the config file: {found:?}"
        );
    }

    // Readable by others: refused, saying why, before anything is sent.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = output(work.trackmass().args([
        "-vv",
        "--log-format",
        "json",
        "--config",
        "trackmass.toml",
        "run",
        "in.csv",
    ]));
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("readable by group or others (mode 644)") && err.contains("chmod 600"),
        "{err}"
    );
    evidence.add("config file mode 644", &out);
    assert_eq!(sandbox.traffic(), (0, 0), "sent with a public config file");
    assert!(!work.path("trackmass.db").exists());

    // Private: the run takes its credentials from it, through
    // TRACKMASS_CONFIG this time.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = output(
        work.trackmass()
            .env("TRACKMASS_CONFIG", "trackmass.toml")
            .args(["-vv", "--log-format", "json", "run", "in.csv"]),
    );
    assert_exit(&out, 3);
    evidence.add("run with the config file", &out);
    assert!(sandbox.outcome("created") > 0, "{}", sandbox.stats());
    assert!(work.path("summary.json").exists() && work.path("metrics.prom").exists());

    for args in [
        &["--config", "trackmass.toml", "status", "--json"][..],
        &["--config", "trackmass.toml", "-vv", "export"],
        &[
            "--config",
            "trackmass.toml",
            "-vv",
            "retry",
            "--status",
            "failed",
        ],
    ] {
        let out = output(work.trackmass().args(args));
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{args:?}: {}",
            stderr(&out)
        );
        evidence.add(&args.join(" "), &out);
    }

    assert!(!checked_issued_tokens(&sandbox).is_empty());
    assert_no_credential(&sandbox, &evidence);
    assert_private(&work, "trackmass.db", &["results.csv", "failures.csv"]);
    assert_eq!(mode(&config), 0o600, "the config file's mode was changed");
}
