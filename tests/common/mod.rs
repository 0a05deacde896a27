//! Test helpers: a sandbox on a loopback port, the real binary in a temp
//! dir, CSV readers for the result files, bounded polling.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use trackmass::sandbox::{self, Sandbox};

/// Credentials the test sandbox accepts.
pub const API_KEY: &str = sandbox::API_KEY;
pub const CLIENT_ID: &str = sandbox::CLIENT_ID;
pub const CLIENT_SECRET: &str = sandbox::CLIENT_SECRET;

/// A sandbox on 127.0.0.1:0 with its own runtime, stopped when dropped.
pub struct TestSandbox {
    runtime: tokio::runtime::Runtime,
    sandbox: Option<Sandbox>,
    pub config: sandbox::Config,
    /// Built once: a reqwest client loads root certificates, which costs
    /// tens of milliseconds of CPU.
    client: reqwest::Client,
}

impl TestSandbox {
    /// A sandbox that knows every document and injects no fault.
    pub fn start() -> TestSandbox {
        TestSandbox::with_config(sandbox::Config {
            unknown_rate: 0.0,
            ..sandbox::Config::default()
        })
    }

    /// A sandbox whose service answers every request 503: rows run out of
    /// attempts (`exhausted`).
    pub fn always_503() -> TestSandbox {
        TestSandbox::with_config(sandbox::Config {
            unknown_rate: 0.0,
            faults: sandbox::faults::Faults {
                status_503: 1.0,
                ..sandbox::faults::Faults::default()
            },
            ..sandbox::Config::default()
        })
    }

    /// Expected `results.csv` lines for `reference` from this sandbox.
    pub fn expected_lines(&self, reference: &str) -> Vec<[String; 4]> {
        expected_lines_for(&self.config, reference)
    }

    /// Expected `results.csv` for these references, in order.
    pub fn expected_results(&self, references: &[String]) -> Vec<[String; 4]> {
        references
            .iter()
            .flat_map(|r| self.expected_lines(r))
            .collect()
    }

    /// Asserts that the result file at `path` holds exactly the lines this
    /// sandbox created for `references`, in order.
    #[track_caller]
    pub fn assert_results(&self, path: &Path, references: &[String]) {
        assert_eq!(result_lines(path), self.expected_results(references));
    }

    pub fn with_config(config: sandbox::Config) -> TestSandbox {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let sandbox = runtime
            .block_on(sandbox::start(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                config.clone(),
            ))
            .expect("sandbox starts");
        TestSandbox {
            runtime,
            sandbox: Some(sandbox),
            config,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    fn sb(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("running")
    }

    pub fn base_url(&self) -> String {
        self.sb().base_url()
    }

    pub fn token_url(&self) -> String {
        self.sb().token_url()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.sb().addr(), path)
    }

    /// The sandbox's ledger.
    pub fn stats(&self) -> serde_json::Value {
        let url = self.url("/_sandbox/stats");
        self.runtime.block_on(async {
            self.client
                .get(&url)
                .send()
                .await
                .expect("stats reachable")
                .json()
                .await
                .expect("stats are JSON")
        })
    }

    /// Count of requests with this outcome in the ledger.
    pub fn outcome(&self, name: &str) -> u64 {
        self.stats()["requests"][name].as_u64().unwrap_or(0)
    }

    /// Every request the sandbox answered (or dropped), and tokens issued:
    /// zero and zero means nothing reached it.
    pub fn traffic(&self) -> (u64, u64) {
        let stats = self.stats();
        let requests = stats["requests"]
            .as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
            .unwrap_or(0);
        (requests, stats["tokens_issued"].as_u64().unwrap_or(0))
    }

    /// Creations per document reference.
    pub fn creations(&self) -> BTreeMap<String, u64> {
        serde_json::from_value(self.stats()["documents"].clone()).expect("documents map")
    }

    /// An access token from this sandbox.
    pub fn access_token(&self) -> String {
        self.runtime
            .block_on(fetch_token(&self.client, &self.token_url()))
    }

    /// A client to reuse (one per sandbox).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            let _ = self.runtime.block_on(sb.shutdown());
        }
    }
}

/// The form that gets a token from the sandbox.
pub const TOKEN_FORM: [(&str, &str); 3] = [
    ("client_id", CLIENT_ID),
    ("client_secret", CLIENT_SECRET),
    ("grant_type", "client_credentials"),
];

/// An access token from the token endpoint at `token_url`.
pub async fn fetch_token(client: &reqwest::Client, token_url: &str) -> String {
    let answer: serde_json::Value = client
        .post(token_url)
        .form(&TOKEN_FORM)
        .send()
        .await
        .expect("token endpoint reachable")
        .json()
        .await
        .expect("token answer is JSON");
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {answer}"))
        .to_string()
}

/// A temporary working directory for one test.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// `trackmass` with a clean environment, in this directory.
    pub fn trackmass(&self) -> Command {
        self.trackmass_at(Path::new(env!("CARGO_BIN_EXE_trackmass")))
    }

    /// [`Workdir::trackmass`] with the binary at `program` (a copy).
    pub fn trackmass_at(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("TRACKMASS_") || key.ends_with("_PROXY") || key.ends_with("_proxy") {
                cmd.env_remove(key);
            }
        }
        cmd.env("NO_COLOR", "1");
        cmd
    }

    /// `trackmass run INPUT` pointed at `sandbox` with its credentials.
    pub fn run_against(&self, sandbox: &TestSandbox, input: &str) -> Command {
        self.run_against_at(Path::new(env!("CARGO_BIN_EXE_trackmass")), sandbox, input)
    }

    /// [`Workdir::run_against`] with the binary at `program` (a copy).
    pub fn run_against_at(&self, program: &Path, sandbox: &TestSandbox, input: &str) -> Command {
        let mut cmd = self.trackmass_at(program);
        cmd.args(["run", input, "--rate", "2000/s", "--concurrency", "8"])
            .env("TRACKMASS_BASE_URL", sandbox.base_url())
            .env("TRACKMASS_TOKEN_URL", sandbox.token_url());
        with_credentials(&mut cmd);
        cmd
    }

    /// `trackmass resume` or `retry` (`command`) pointed at `sandbox`,
    /// which may not be the one the run started with.
    pub fn continue_against(&self, sandbox: &TestSandbox, command: &str) -> Command {
        let mut cmd = self.trackmass();
        cmd.args([
            command,
            "--base-url",
            &sandbox.base_url(),
            "--token-url",
            &sandbox.token_url(),
        ]);
        with_credentials(&mut cmd);
        cmd
    }
}

/// The sandbox's credentials in the environment.
pub fn with_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("TRACKMASS_API_KEY", API_KEY)
        .env("TRACKMASS_CLIENT_ID", CLIENT_ID)
        .env("TRACKMASS_CLIENT_SECRET", CLIENT_SECRET)
}

/// Starts `trackmass sandbox --listen 127.0.0.1:0 ARGS…` as a process and
/// returns it with the base URL it printed (`http://127.0.0.1:PORT`).
pub fn spawn_sandbox(work: &Workdir, args: &[&str]) -> (Child, String) {
    use std::io::BufRead;
    let mut child = work
        .trackmass()
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sandbox process starts");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .expect("sandbox prints its address");
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    (child, base)
}

/// Mode bits of a file.
#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A path as a C string, for the libc calls of the tests.
#[cfg(unix)]
pub fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in a test path")
}

/// Makes a FIFO (named pipe) at `path`.
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    let c = c_path(path);
    // SAFETY: a valid C string; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Parses JSON, naming the text when it is not.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `trackmass status --json` of this state file.
pub fn status_json(work: &Workdir, state: &str) -> serde_json::Value {
    let out = output(
        work.trackmass()
            .args(["status", "--state", state, "--json"]),
    );
    assert_exit(&out, 0);
    json(&stdout(&out))
}

/// A base URL on a loopback port that nothing listens on.
pub fn dead_api_url() -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!(
        "http://{}/api-tracking-code-in-mass/v1",
        dead.local_addr().expect("addr")
    )
}

/// Runs a command to completion.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("trackmass runs")
}

/// Exit code, with both streams shown when the assertion fails.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Rows of a CSV file as header → value maps.
pub fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Header of a CSV file.
pub fn csv_header(path: &Path) -> Vec<String> {
    let mut reader = csv::Reader::from_path(path).expect("csv");
    reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect()
}

/// Waits until `check` holds, polling every 10 ms, for at most `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a child process with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` distinct, valid document references.
pub fn references(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:07}")).collect()
}

/// A CSV with just a documentReference column.
pub fn reference_csv(refs: &[String]) -> String {
    let mut s = String::from("documentReference\n");
    for r in refs {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// Expected `results.csv` lines for `reference`, from the sandbox's own
/// deterministic catalogue: none for a document it does not know.
pub fn expected_lines_for(config: &sandbox::Config, reference: &str) -> Vec<[String; 4]> {
    let Some(doc) = sandbox::catalogue::lookup(config.seed, reference, config.unknown_rate) else {
        return Vec::new();
    };
    if doc.units.is_empty() {
        return vec![[
            reference.to_string(),
            doc.tracking_id,
            String::new(),
            String::new(),
        ]];
    }
    doc.units
        .iter()
        .map(|u| {
            [
                reference.to_string(),
                doc.tracking_id.clone(),
                u.spi.clone(),
                u.reference.clone(),
            ]
        })
        .collect()
}

/// `results.csv` as a list of its four columns.
pub fn result_lines(path: &Path) -> Vec<[String; 4]> {
    read_csv(path)
        .into_iter()
        .map(|r| {
            [
                r["documentReference"].clone(),
                r["trackingId"].clone(),
                r["spi"].clone(),
                r["reference"].clone(),
            ]
        })
        .collect()
}

/// Sends a signal (e.g. `libc::SIGINT`) to a child process.
pub fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) has no memory effects; the pid is our own child.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// A runtime of its own and a listener on 127.0.0.1:0 bound in it, with
/// its address: the base of every scripted server.
pub fn loopback_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            0,
        ))))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (runtime, listener, addr)
}

/// Serves `app` on 127.0.0.1:0 from a runtime of its own (kept alive by the
/// caller), for scripted servers; returns the runtime and the address.
pub fn serve_on_loopback(app: axum::Router) -> (tokio::runtime::Runtime, SocketAddr) {
    let (runtime, listener, addr) = loopback_listener();
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (runtime, addr)
}

/// The `documentReference` of a request body, or "" (for scripted servers).
pub fn reference_in(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default()["documentReference"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The executable of an external tool the conformance tests drive: `$var`
/// if set, else `default` under the crate. `None` (after a note on stderr)
/// if it is missing, unless `$require` is set, as CI sets it: then the
/// test fails instead of skipping.
pub fn external_tool(var: &str, default: &str, require: &str, hint: &str) -> Option<PathBuf> {
    use std::io::Write;
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {} does not exist",
        bin.display()
    );
    // Not through eprintln!, which the test harness captures.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {} not found ({hint})",
        bin.display()
    );
    None
}

/// Whether a result file writes `cell` behind a `'`: it starts with a
/// formula character (`= + - @`, tab, CR), a full-width or small lookalike
/// of `= + - @`, whitespace, an invisible character or `'`, or it holds a
/// control character.
pub fn guarded(cell: &str) -> bool {
    let Some(c) = cell.chars().next() else {
        return false;
    };
    "=+-@\t\r'\u{FF1D}\u{FF0B}\u{FF0D}\u{FF20}\u{FE66}\u{FE62}\u{FE63}\u{FE6B}".contains(c)
        || c.is_whitespace()
        || matches!(c, '\u{AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
        || cell.chars().any(char::is_control)
}
