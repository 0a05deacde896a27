//! The benchmark's comparators for the per-row cost: oha (a raw load
//! generator posting one fixed body) and the Python job a data engineer
//! would write instead (`../shared/peers/pyjob.py`: asyncio, aiohttp,
//! aiolimiter, a batched sqlite3 checkpoint). The benchmark installs both
//! itself, under `target/bench-tools`, and says why when it cannot.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the installed comparators live.
fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-tools")
}

/// oha: on `PATH`, or installed with `cargo install oha --locked` into
/// `target/bench-tools` (once; a few minutes).
pub fn oha_binary() -> Result<PathBuf, String> {
    if let Some(found) = super::which("oha") {
        return Ok(found);
    }
    let root = tools_dir();
    let bin = root.join("bin/oha");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "installing oha into {} (cargo install oha --locked)…",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", "oha", "--locked", "--quiet", "--root"])
        .arg(&root)
        .status()
        .map_err(|e| format!("cannot run cargo install oha: {e}"))?;
    if !status.success() || !bin.is_file() {
        return Err(format!("cargo install oha --locked failed ({status})"));
    }
    Ok(bin)
}

/// Requests per second of oha posting one fixed body `n` times, 64 at a
/// time, with the run's headers.
pub fn oha(url: &str, token: &str, api_key: &str, n: usize) -> Result<f64, String> {
    let bin = oha_binary()?;
    let out = Command::new(bin)
        .args(["-n", &n.to_string(), "-c", "64", "-m", "POST", "--no-tui"])
        .args(["--output-format", "json"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("Ocp-Apim-Subscription-Key: {api_key}")])
        .args([
            "-d",
            r#"{"documentReference":"BENCH000000001","way":"Import"}"#,
        ])
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run oha: {e}"))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "oha's output is not its JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let rate = report["summary"]["requestsPerSec"]
        .as_f64()
        .ok_or_else(|| format!("no summary.requestsPerSec in oha's report: {report}"))?;
    let ok = report["statusCodeDistribution"]["201"]
        .as_u64()
        .unwrap_or(0);
    if ok < n as u64 * 9 / 10 {
        return Err(format!(
            "oha's requests were mostly not created (201 × {ok} of {n}): {}",
            report["statusCodeDistribution"]
        ));
    }
    Ok(rate)
}

/// The Python peer: the script, and a venv under `target/bench-tools/py`
/// holding its two packages at the versions pinned in
/// `tools/bench/pyjob-requirements.txt`.
pub fn python_peer() -> Result<(PathBuf, PathBuf), String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = std::env::var_os("TRACKMASS_PYJOB")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../shared/peers/pyjob.py"));
    if !script.is_file() {
        return Err(format!(
            "{} not found (set TRACKMASS_PYJOB to the peer's script)",
            script.display()
        ));
    }
    let venv = tools_dir().join("py");
    let python = venv.join("bin/python");
    if !python.is_file() {
        eprintln!("making a venv for the Python peer in {}…", venv.display());
        run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run_ok(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("-r")
                .arg(manifest.join("tools/bench/pyjob-requirements.txt")),
        )?;
    }
    Ok((python, script))
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

/// The Python peer's command for `input` against `base_url`, 64 in flight
/// and no rate limit, its state and results in `dir`.
pub fn pyjob_command(
    python: &Path,
    script: &Path,
    input: &Path,
    base_url: &str,
    dir: &Path,
) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(input)
        .args(["--base-url", base_url, "--concurrency", "64"])
        .arg("--state")
        .arg(dir.join("pyjob.db"))
        .arg("--out")
        .arg(dir.join("pyresults.csv"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}
