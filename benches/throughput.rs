//! `cargo bench --bench throughput`: the job against the in-process sandbox,
//! one table of figures (see BENCHMARKS.md). Not a test: it asserts
//! nothing, it measures, and prints each goal next to what it measured.
//!
//! Everything runs on this machine: the sandbox in this process, the
//! release `trackmass` binary as a child process, and the comparators of
//! the per-row cost ([`comparators`]: oha and the Python peer, installed
//! by the benchmark itself). Ratios are measured within one run, so a busy
//! machine moves both sides together.
//!
//! `TRACKMASS_BENCH_SCALE=small` runs smaller sizes (a quick look);
//! `TRACKMASS_BENCH_OUT=DIR` is where the CSV of the concurrency sweep goes
//! (default `target/bench`), for `scripts/plot_concurrency.py`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trackmass::sandbox::{self, Faults, RateLimit, Sandbox};

#[path = "support/comparators.rs"]
mod comparators;

const BIN: &str = env!("CARGO_BIN_EXE_trackmass");

/// A sandbox with its own runtime.
struct Bench {
    runtime: tokio::runtime::Runtime,
    sandbox: Option<Sandbox>,
    client: reqwest::Client,
}

impl Bench {
    fn start(config: sandbox::Config) -> Bench {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sandbox = runtime
            .block_on(sandbox::start(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                config,
            ))
            .expect("sandbox starts");
        Bench {
            runtime,
            sandbox: Some(sandbox),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    fn fast() -> Bench {
        Bench::start(sandbox::Config {
            unknown_rate: 0.0,
            token_ttl: Duration::from_secs(24 * 3600),
            ..sandbox::Config::default()
        })
    }

    /// A sandbox that answers every request after `latency`.
    fn with_latency(latency: Duration) -> Bench {
        Bench::start(sandbox::Config {
            unknown_rate: 0.0,
            faults: Faults {
                latency,
                ..Faults::default()
            },
            ..sandbox::Config::default()
        })
    }

    fn sb(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("running")
    }

    fn stats(&self) -> serde_json::Value {
        let url = format!("http://{}/_sandbox/stats?documents=false", self.sb().addr());
        self.runtime
            .block_on(async { self.client.get(&url).send().await?.json().await })
            .expect("stats")
    }

    fn requests(&self) -> u64 {
        self.stats()["requests"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    }

    fn outcome(&self, name: &str) -> u64 {
        self.stats()["requests"][name].as_u64().unwrap_or(0)
    }

    fn token(&self) -> String {
        let url = self.sb().token_url();
        self.runtime
            .block_on(async {
                let v: serde_json::Value = self
                    .client
                    .post(&url)
                    .form(&[
                        ("client_id", sandbox::CLIENT_ID),
                        ("client_secret", sandbox::CLIENT_SECRET),
                        ("grant_type", "client_credentials"),
                    ])
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok::<_, reqwest::Error>(v["access_token"].as_str().unwrap_or("").to_string())
            })
            .expect("token")
    }

    /// `trackmass ARGS` against this sandbox, in `dir`.
    fn trackmass(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .env("TRACKMASS_BASE_URL", self.sb().base_url())
            .env("TRACKMASS_TOKEN_URL", self.sb().token_url())
            .env("TRACKMASS_API_KEY", sandbox::API_KEY)
            .env("TRACKMASS_CLIENT_ID", sandbox::CLIENT_ID)
            .env("TRACKMASS_CLIENT_SECRET", sandbox::CLIENT_SECRET)
            .env_remove("TRACKMASS_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        cmd
    }
}

/// Wall time and peak resident memory of a child process.
struct Measured {
    wall: Duration,
    peak_rss_mib: f64,
    code: Option<i32>,
}

/// Runs a command to completion, sampling its peak resident memory
/// (VmHWM) every 10 ms. Not wait4's ru_maxrss: Linux folds the forking
/// parent's own peak into it at exec, and the parent here holds the
/// sandbox's ledger.
fn measure(cmd: &mut Command) -> Measured {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let code = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    Measured {
        wall: started.elapsed(),
        peak_rss_mib: peak_kib as f64 / 1024.0,
        code,
    }
}

fn references(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("BENCH{i:09}")).collect()
}

/// The benchmark's input: a realistic mix of optional fields.
fn write_input(dir: &Path, n: usize) -> PathBuf {
    use std::io::Write;
    let path = dir.join(format!("in-{n}.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("input"));
    writeln!(f, "documentReference,way,place,agentCode").expect("write");
    for (i, r) in references(n).iter().enumerate() {
        let (way, place, agent) = match i % 4 {
            0 => ("Import", "MTDF", "CCGM"),
            1 => ("Export", "", "MSCU"),
            2 => ("", "FRLEH", ""),
            _ => ("Transhipment", "MTDF", "ONEY"),
        };
        writeln!(f, "{r},{way},{place},{agent}").expect("write");
    }
    path
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("s.json")).expect("summary"))
        .expect("summary JSON")
}

/// `trackmass run` of `n` rows; returns its measurement and summary.
fn run_rows(bench: &Bench, dir: &Path, n: usize, extra: &[&str]) -> (Measured, serde_json::Value) {
    let input = write_input(dir, n);
    let m = measure(
        bench
            .trackmass(dir)
            .arg("run")
            .arg(&input)
            .args(["--progress", "never", "-q", "--summary", "s.json"])
            .args(extra),
    );
    (m, summary(dir))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trackmass-bench")
        .tempdir_in(std::env::var_os("TRACKMASS_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

fn row(name: &str, measured: String, goal: &str) {
    println!("| {name} | {measured} | {goal} |");
}

const FAST: [&str; 4] = ["--rate", "100000/s", "--concurrency", "64"];

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let small = std::env::var("TRACKMASS_BENCH_SCALE").is_ok_and(|v| v == "small");
    let k = if small { 10 } else { 1 };
    let out_dir = PathBuf::from(
        std::env::var_os("TRACKMASS_BENCH_OUT").unwrap_or_else(|| "target/bench".into()),
    );
    let _ = std::fs::create_dir_all(&out_dir);

    // TRACKMASS_BENCH_ONLY=overhead,rate,latency,scale,checkpoint,resume,sweep,quota,night,webhooks
    let only = std::env::var("TRACKMASS_BENCH_ONLY").ok();
    let want = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == name))
    };

    println!("| measure | result | goal |");
    println!("| --- | --- | --- |");

    // 1. Overhead next to a raw load generator, same sandbox, same bodies.
    if want("overhead") {
        overhead(k);
    }

    // 2. Rate accuracy against a gateway limited to the same rate.
    if want("rate") {
        rate_accuracy(k);
    }

    // 3. The latency bound (Little's law): 64 in flight, 100 ms each.
    if want("latency") {
        latency_bound(k);
    }

    // 4. Scale: ingest + run + export, peak memory and wall time.
    let mut big_state: Option<(tempfile::TempDir, usize)> = None;
    if want("scale") || want("resume") {
        big_state = scale(k);
    }

    // 5. Checkpoint cost: the same run with each durability, and on tmpfs.
    if want("checkpoint") {
        checkpoint_cost(k);
    }

    // 6. Resume start-up on a big state file that is 99% done.
    if let Some((dir, n)) = big_state.filter(|_| want("resume")) {
        resume_startup(dir, n);
    }

    // 7. Throughput against concurrency at 50 ms latency, for the plot.
    if want("sweep") {
        concurrency_sweep(k, &out_dir);
    }

    // 8. The quota: gateways that limit the rate, --rate a multiple of it.
    if want("quota") {
        quota_table(k, &out_dir);
    }

    // 9. The bad night of the pace: --chaos's faults with and without 5%
    //    of requests answered 429 at random.
    if want("night") {
        night(k);
    }

    // 10. The webhook receiver: distinct events, each durable before its 200.
    if want("webhooks") {
        webhooks(k);
    }
}

/// Measure 1: the per-row cost, next to a raw load generator (oha) and the
/// Python job a user might write instead, on the same sandbox, in one run:
/// rows (or requests) per second from start to exit, and peak memory.
fn overhead(k: usize) {
    let n = 50_000 / k;
    let bench = Bench::fast();
    let dir = tempdir();
    let (m, s) = run_rows(&bench, dir.path(), n, &FAST);
    let ours = s["requests"].as_f64().unwrap_or(0.0) / m.wall.as_secs_f64();
    let ms = |k: &str| s["request_ms"][k].as_f64().unwrap_or(f64::NAN);
    let mut cells = vec![format!(
        "trackmass {ours:.0} rows/s, peak {:.1} MiB, a request's time: in-flight mark {:.2} ms, \
         turn {:.2} ms, answer {:.2} ms",
        m.peak_rss_mib,
        ms("in_flight_mark"),
        ms("turn"),
        ms("answer"),
    )];
    let url = format!("{}/track-document", bench.sb().base_url());
    match comparators::oha(&url, &bench.token(), sandbox::API_KEY, n) {
        Ok(raw) => cells.push(format!(
            "oha {raw:.0} req/s: trackmass **{:.2}** of it",
            ours / raw
        )),
        Err(why) => cells.push(format!("oha skipped: {why}")),
    }
    match python_peer_rate(&bench, n) {
        Ok((rate, peak)) => cells.push(format!(
            "Python peer {rate:.0} rows/s, peak {peak:.1} MiB: trackmass **{:.2}×** it",
            ours / rate
        )),
        Err(why) => cells.push(format!("Python peer skipped: {why}")),
    }
    row(
        &format!("per-row cost: {n} rows, no latency, 64 in flight, --durability full"),
        cells.join("; "),
        "≥ 0.8 × oha, ≥ 5 × the Python peer",
    );
}

/// The Python peer's rows per second over `n` rows (start to exit) and its
/// peak memory, against a fresh sandbox of the same kind.
fn python_peer_rate(bench: &Bench, n: usize) -> Result<(f64, f64), String> {
    let (python, script) = comparators::python_peer()?;
    let dir = tempdir();
    let input = write_input(dir.path(), n);
    let mut cmd =
        comparators::pyjob_command(&python, &script, &input, &bench.sb().base_url(), dir.path());
    cmd.env("TRACKMASS_API_KEY", sandbox::API_KEY)
        .env("TRACKMASS_ACCESS_TOKEN", bench.token());
    let m = measure(&mut cmd);
    if m.code != Some(0) {
        return Err(format!("pyjob.py exited {:?}", m.code));
    }
    Ok((n as f64 / m.wall.as_secs_f64(), m.peak_rss_mib))
}

/// Measure 2: Rate accuracy against a gateway limited to the same rate.
fn rate_accuracy(k: usize) {
    let n = 4000 / k;
    let bench = Bench::start(sandbox::Config {
        unknown_rate: 0.0,
        rate_limit: Some(RateLimit {
            calls: 200,
            period: Duration::from_secs(1),
        }),
        ..sandbox::Config::default()
    });
    let dir = tempdir();
    let (_, s) = run_rows(
        &bench,
        dir.path(),
        n,
        &["--rate", "200/s", "--concurrency", "32"],
    );
    let achieved =
        s["requests"].as_f64().unwrap_or(0.0) / s["sending_seconds"].as_f64().unwrap_or(1.0);
    row(
        &format!("rate accuracy: --rate 200/s, gateway limit 200/s, {n} rows"),
        format!(
            "{:.3} of target, {} answered 429",
            achieved / 200.0,
            bench.outcome("rate_limited")
        ),
        "≥ 0.98, 0 × 429",
    );
}

/// Measure 3: The latency bound (Little's law): 64 in flight, 100 ms each.
fn latency_bound(k: usize) {
    let n = 6400 / k;
    let bench = Bench::with_latency(Duration::from_millis(100));
    let dir = tempdir();
    let (_, s) = run_rows(&bench, dir.path(), n, &FAST);
    let achieved =
        s["requests"].as_f64().unwrap_or(0.0) / s["sending_seconds"].as_f64().unwrap_or(1.0);
    row(
        &format!("latency bound: 100 ms, --concurrency 64, {n} rows"),
        format!("{achieved:.0}/s = {:.3} of 640/s", achieved / 640.0),
        "≥ 0.95",
    );
}

/// Measure 4: Scale: ingest + run + export, peak memory and wall time. Returns the
/// biggest run's directory and rows, for the resume measure.
fn scale(k: usize) -> Option<(tempfile::TempDir, usize)> {
    let mut big_state = None;
    let mut first_rss = None;
    for n in [10_000, 100_000, 1_000_000].map(|n| n / k) {
        let bench = Bench::fast();
        let dir = tempdir();
        let (run, s) = run_rows(&bench, dir.path(), n, &FAST);
        let export = measure(bench.trackmass(dir.path()).args([
            "export",
            "--out",
            "all.csv",
            "--failures",
            "f.csv",
        ]));
        let rss = run.peak_rss_mib.max(export.peak_rss_mib);
        let base = *first_rss.get_or_insert(rss);
        row(
            &format!("scale: {n} rows (ingest + run + export)"),
            format!(
                "{:.1} s ({:.0} rows/s), peak RSS {rss:.1} MiB ({:.2}× the 10k figure), export {:.1} s, exit {:?}",
                run.wall.as_secs_f64() + export.wall.as_secs_f64(),
                s["tracked"].as_f64().unwrap_or(0.0) / run.wall.as_secs_f64(),
                rss / base,
                export.wall.as_secs_f64(),
                run.code
            ),
            "time linear; < 100 MiB at 1M, ≤ 1.5× the 10k figure",
        );
        if n == 1_000_000 / k {
            big_state = Some((dir, n));
        }
    }
    big_state
}

/// Measure 5: Checkpoint cost: the same run with each durability, and on tmpfs.
fn checkpoint_cost(k: usize) {
    let n = 50_000 / k;
    let mut figures = Vec::new();
    for (name, args, dir) in [
        (
            "--durability full (default), disk",
            vec!["--durability", "full"],
            tempdir(),
        ),
        (
            "--durability normal, disk",
            vec!["--durability", "normal"],
            tempdir(),
        ),
        (
            "--durability full, tmpfs (no disk at all)",
            vec!["--durability", "full"],
            tempfile::Builder::new()
                .prefix("trackmass-bench")
                .tempdir_in("/dev/shm")
                .unwrap_or_else(|_| tempdir()),
        ),
    ] {
        let bench = Bench::fast();
        let mut all = FAST.to_vec();
        all.extend(args);
        let (m, s) = run_rows(&bench, dir.path(), n, &all);
        let rate = s["requests"].as_f64().unwrap_or(0.0) / m.wall.as_secs_f64();
        figures.push(format!("{name}: {rate:.0} rows/s"));
    }
    row(
        &format!("checkpoint cost: {n} rows"),
        figures.join("; "),
        "the cost of durability, measured",
    );
}

/// Measure 6: Resume start-up on a big state file that is 99% done.
fn resume_startup(dir: tempfile::TempDir, n: usize) {
    let db = dir.path().join("trackmass.db");
    let conn = rusqlite::Connection::open(&db).expect("state");
    let pending = conn
        .execute(
            "UPDATE items SET status = 'pending', tracking_id = NULL, units = NULL
             WHERE id % 100 = 0 AND status = 'tracked'",
            [],
        )
        .expect("mark 1% pending");
    drop(conn);
    let bench = Bench::fast();
    let started = Instant::now();
    let mut child = bench
        .trackmass(dir.path())
        .args(["resume", "--progress", "never", "-q"])
        .args(["--base-url", &bench.sb().base_url()])
        .args(["--token-url", &bench.sb().token_url()])
        .spawn()
        .expect("resume");
    let mut first = None;
    while started.elapsed() < Duration::from_secs(60) {
        if bench.requests() > 0 {
            first = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    row(
        &format!("resume start-up: {n}-row state, {pending} pending"),
        match first {
            Some(t) => format!("{:.2} s to the first request", t.as_secs_f64()),
            None => "no request within 60 s".into(),
        },
        "< 2 s",
    );
}

/// Measure 7: Throughput against concurrency at 50 ms latency, for the plot.
fn concurrency_sweep(k: usize, out_dir: &Path) {
    let latency = 0.05;
    let mut csv = String::from("concurrency,rows_per_second,littles_law\n");
    let mut figures = Vec::new();
    for c in [1, 2, 4, 8, 16, 32, 64, 128, 256] {
        let bench = Bench::with_latency(Duration::from_millis(50));
        let dir = tempdir();
        // About 3 s of work at the bound.
        let n = ((c as f64 / latency) * 3.0 / k as f64).max(30.0) as usize;
        let concurrency = c.to_string();
        let (_, s) = run_rows(
            &bench,
            dir.path(),
            n,
            &["--rate", "100000/s", "--concurrency", &concurrency],
        );
        let achieved =
            s["requests"].as_f64().unwrap_or(0.0) / s["sending_seconds"].as_f64().unwrap_or(1.0);
        csv.push_str(&format!("{c},{achieved:.1},{:.1}\n", c as f64 / latency));
        figures.push(format!("{c}: {achieved:.0}"));
    }
    let path = out_dir.join("concurrency.csv");
    let _ = std::fs::write(&path, csv);
    row(
        "throughput by concurrency at 50 ms (rows/s)",
        format!("{} (data: {})", figures.join(", "), path.display()),
        "on the Little's-law line c / 0.05 s until the machine's limit",
    );
}

/// Posts `n` distinct events (the spec's payload, one unit each) to `url`
/// from `connections` concurrent senders; returns (events per second,
/// answers 200).
fn post_events(
    rt: &tokio::runtime::Runtime,
    url: &str,
    n: usize,
    connections: usize,
) -> (f64, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let started = Instant::now();
    let acked: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|c| {
                let (client, url) = (client.clone(), url.to_string());
                tokio::spawn(async move {
                    let mut ok = 0u64;
                    for i in (c..n).step_by(connections) {
                        let body = format!(
                            r#"{{"HandlingUnit":{{"Events":[{{"AlertDate":"2026-12-01T10:00:00+00:00","AlertType":"Creation","Direction":"Import","Location":"FRLEH","State":"Active","Type":"DIR"}}],"FreightFamily":"Container","Reference":"MSCU{i:07}","Spi":"CNI{i:010}"}}}}"#
                        );
                        if let Ok(r) = client.post(&url).body(body).send().await
                            && r.status() == 200
                        {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total
    });
    (n as f64 / started.elapsed().as_secs_f64(), acked)
}

/// The receiver (`trackmass webhooks serve`, release build) against the
/// same load generator posting to an endpoint that reads each body and
/// stores nothing (the ceiling); its peak memory over the whole run.
fn webhooks(k: usize) {
    use std::io::BufRead;
    let n = 1_000_000 / k;
    let dir = tempdir();
    let url = Command::new(BIN)
        .current_dir(dir.path())
        .args(["webhooks", "url", "https://hooks.example.fr/trackmass"])
        .stderr(Stdio::null())
        .output()
        .expect("webhooks url");
    let registered = String::from_utf8_lossy(&url.stdout).trim().to_string();
    let token = registered
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["webhooks", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("receiver");
    let mut first = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first);
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_default()
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The ceiling: the same generator against a server that reads the body
    // and answers 200.
    let sink = rt.block_on(async {
        let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            "ok"
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let (ceiling, _) = post_events(&rt, &format!("http://{sink}/x"), n / 5, 64);
    let (rate, acked) = post_events(&rt, &format!("{addr}/{token}"), n, 64);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let peak_mib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    let stored: i64 = rusqlite::Connection::open(dir.path().join("trackmass.db.events"))
        .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
        .unwrap_or(-1);
    row(
        &format!("webhook receiver: {n} distinct events from 64 concurrent senders"),
        format!(
            "**{rate:.0} events/s**, each stored (fsync'd commit) before its 200, vs {ceiling:.0}/s to an endpoint that stores nothing = {:.2}; {acked} answered 200, {stored} stored; peak RSS **{peak_mib:.1} MiB**",
            rate / ceiling
        ),
        "≥ 2,000 events/s durable; ≤ 64 MiB over 1M events",
    );
}

/// 2,000 rows through `--chaos`'s faults (hangs cut to 30 s), as the test
/// `random_429s_on_a_bad_night_do_not_collapse_the_pace` runs them; once
/// without and once with 5% of requests answered 429 whatever the pace.
fn night(k: usize) {
    let rows = 2000 / k;
    let run = |status_429: f64| {
        let bench = Bench::start(sandbox::Config {
            unknown_rate: 0.0,
            token_ttl: Duration::from_secs(24 * 3600),
            faults: Faults {
                status_429,
                hang_for: Duration::from_secs(30),
                ..Faults::chaos()
            },
            ..sandbox::Config::default()
        });
        let dir = tempdir();
        let (m, s) = run_rows(
            &bench,
            dir.path(),
            rows,
            &[
                "--rate",
                "400/s",
                "--concurrency",
                "64",
                "--timeout",
                "2s",
                "--backoff-base",
                "50ms",
                "--backoff-cap",
                "1s",
            ],
        );
        (
            m.wall.as_secs_f64(),
            s["pending"].as_u64().unwrap_or(u64::MAX),
        )
    };
    let (calm, calm_left) = run(0.0);
    let (throttled, throttled_left) = run(0.05);
    row(
        "bad night: 2,000 rows, --chaos, with 5% random 429s vs without",
        format!(
            "{throttled:.1} s vs {calm:.1} s = **{:.2}×** ({throttled_left} and {calm_left} rows left pending)",
            throttled / calm
        ),
        "≤ 3×",
    );
}

/// One gateway of the quota table.
struct Gateway {
    name: &'static str,
    /// Names its timeline files.
    slug: &'static str,
    limit: RateLimit,
    kind: sandbox::LimitKind,
    /// What it lets through per second at most.
    capacity: f64,
    /// It states its limit in `RateLimit-Policy`.
    headers: bool,
    multiples: &'static [f64],
}

/// What one run under a gateway did.
struct QuotaRun {
    share: f64,
    late_429_per_minute: f64,
    total_429: u64,
    /// Calls in the busiest second, against --rate.
    peak_over_rate: f64,
    timeline: Vec<(u64, u64, u64)>,
}

fn quota_run(gateway: &Gateway, multiple: f64, seconds: u64) -> QuotaRun {
    let bench = Bench::start(sandbox::Config {
        unknown_rate: 0.0,
        token_ttl: Duration::from_secs(24 * 3600),
        rate_limit: Some(gateway.limit),
        rate_limit_kind: gateway.kind,
        rate_limit_headers: gateway.headers,
        ..sandbox::Config::default()
    });
    let dir = tempdir();
    let rate = gateway.capacity * multiple;
    let rows = (gateway.capacity * seconds as f64) as usize;
    let (_, s) = run_rows(
        &bench,
        dir.path(),
        rows,
        &[
            "--rate",
            &format!("{}/s", rate.round()),
            "--concurrency",
            "64",
        ],
    );
    let url = format!(
        "http://{}/_sandbox/stats?documents=false&timeline=true",
        bench.sb().addr()
    );
    let stats: serde_json::Value = bench
        .runtime
        .block_on(async { bench.client.get(&url).send().await?.json().await })
        .expect("stats");
    let timeline: Vec<(u64, u64, u64)> = stats["timeline"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| Some((e[0].as_u64()?, e[1].as_u64()?, e[2].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let sending = s["sending_seconds"].as_f64().unwrap_or(1.0);
    let late: u64 = timeline.iter().filter(|e| e.0 >= 60).map(|e| e.2).sum();
    let late_minutes = ((sending - 60.0) / 60.0).max(1.0 / 60.0);
    QuotaRun {
        share: s["tracked"].as_f64().unwrap_or(0.0) / sending / gateway.capacity,
        late_429_per_minute: late as f64 / late_minutes,
        total_429: timeline.iter().map(|e| e.2).sum(),
        peak_over_rate: timeline.iter().map(|e| e.1 + e.2).max().unwrap_or(0) as f64 / rate,
        timeline,
    }
}

/// Gateway kind × `--rate` multiple → share of the limit achieved, 429s;
/// and the timeline of one run, for the plot.
fn quota_table(k: usize, out_dir: &Path) {
    // Five minutes a cell: "429s per minute after the first" is then read
    // over four minutes, not one and a half (one event more or less moved
    // it by 0.6).
    let seconds = 300 / k as u64;
    for gateway in &quota_gateways() {
        let mut cells = Vec::new();
        for &multiple in gateway.multiples {
            let run = quota_run(gateway, multiple, seconds);
            cells.push(quota_cell(gateway, multiple, &run));
            write_quota_timeline(out_dir, gateway, multiple, &run);
        }
        row(
            &format!(
                "quota: {}, {seconds} s of rows, --rate {} the limit",
                gateway.name,
                gateway
                    .multiples
                    .iter()
                    .map(|m| format!("{m}×"))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            cells.join("; "),
            "≥ 0.95 of the limit, ≤ 1 × 429 per minute after the first, never above --rate",
        );
    }
}

/// The gateways of the quota table, and the multiples of their limit that
/// `--rate` is set to.
fn quota_gateways() -> [Gateway; 4] {
    let second = Duration::from_secs(1);
    [
        Gateway {
            name: "sliding window, 40 per second",
            slug: "window-40s",
            limit: RateLimit {
                calls: 40,
                period: second,
            },
            kind: sandbox::LimitKind::Window,
            // The sandbox's window allows 5% for clock jitter.
            capacity: 40.0 / 0.95,
            headers: false,
            multiples: &[1.0, 2.0, 3.0, 10.0],
        },
        Gateway {
            name: "sliding window, 1200 per minute",
            slug: "window-1200min",
            limit: RateLimit {
                calls: 1200,
                period: Duration::from_secs(60),
            },
            kind: sandbox::LimitKind::Window,
            capacity: 20.0 / 0.95,
            headers: false,
            multiples: &[1.0, 2.0, 3.0, 10.0],
        },
        Gateway {
            name: "token bucket, 40 per second",
            slug: "bucket-40s",
            limit: RateLimit {
                calls: 40,
                period: second,
            },
            kind: sandbox::LimitKind::Bucket,
            capacity: 40.0,
            headers: false,
            multiples: &[1.0, 2.0, 3.0, 10.0],
        },
        // The same window, saying "40 per second" in RateLimit-Policy: the
        // pace keeps to 0.98 of what it says (so 0.93 of what the window's
        // jitter allowance lets through) from the first answer on.
        Gateway {
            name: "sliding window, 40 per second, stated in RateLimit-Policy",
            slug: "window-40s-stated",
            limit: RateLimit {
                calls: 40,
                period: second,
            },
            kind: sandbox::LimitKind::Window,
            capacity: 40.0 / 0.95,
            headers: true,
            multiples: &[3.0, 10.0],
        },
    ]
}

/// One cell: the share of the limit as the gateway is configured (N per
/// period) and, for a window, of what its 5% jitter allowance really lets
/// through; the 429s; the busiest second against `--rate`.
fn quota_cell(gateway: &Gateway, multiple: f64, run: &QuotaRun) -> String {
    let configured = f64::from(gateway.limit.calls) / gateway.limit.period.as_secs_f64();
    let of_configured = run.share * gateway.capacity / configured;
    let through = if (gateway.capacity - configured).abs() > 1e-9 {
        format!(" ({:.3} of what it lets through)", run.share)
    } else {
        String::new()
    };
    format!(
        "{multiple}×: {of_configured:.3} of the limit{through}, {} × 429 ({:.1}/min after the first minute), peak second {:.2} of --rate",
        run.total_429, run.late_429_per_minute, run.peak_over_rate
    )
}

/// Every cell's timeline, to plot any of them afterwards; the 40/s window
/// at 3× is also `pace.csv`, the README's plot.
fn write_quota_timeline(out_dir: &Path, gateway: &Gateway, multiple: f64, run: &QuotaRun) {
    let mut csv = String::from("second,let_through,refused,limit\n");
    for (s, through, refused) in &run.timeline {
        csv.push_str(&format!(
            "{s},{through},{refused},{:.1}\n",
            gateway.capacity
        ));
    }
    let _ = std::fs::write(
        out_dir.join(format!("pace-{}-{multiple}x.csv", gateway.slug)),
        &csv,
    );
    if gateway.kind == sandbox::LimitKind::Window
        && !gateway.headers
        && gateway.limit.period == Duration::from_secs(1)
        && multiple == 3.0
    {
        let _ = std::fs::write(out_dir.join("pace.csv"), csv);
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}
