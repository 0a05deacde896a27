//! The scheduling samples as shipped: the systemd units pass
//! `systemd-analyze verify`, and the service's `ExecStart` and the crontab
//! line, run as written (only the install paths moved into a temp dir)
//! under the unit's umask, track the documents against the sandbox and
//! leave a metrics file that another user can read.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/schedule")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The install paths of the samples, moved under `root`.
fn relocate(text: &str, root: &Path) -> String {
    let bin = env!("CARGO_BIN_EXE_trackmass");
    let r = root.display();
    text.replace("/usr/local/bin/trackmass", bin)
        .replace("/etc/trackmass/", &format!("{r}/etc/"))
        .replace("/var/lib/trackmass", &format!("{r}/var"))
        .replace(
            "/var/lib/node_exporter/textfile/",
            &format!("{r}/textfile/"),
        )
        .replace("/srv/exports/", &format!("{r}/srv/"))
        .replace("/var/log/trackmass/", &format!("{r}/log/"))
}

/// The value of `Key=` in a unit (the last one).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

/// A root with the samples' directories, the sample settings and
/// credentials for `sandbox`, and tonight's file.
fn install(work: &Workdir, sandbox: &TestSandbox) -> PathBuf {
    let root = work.path("root");
    for dir in ["etc", "var", "textfile", "srv", "log"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(
        root.join("etc/trackmass.toml"),
        relocate(&sample("trackmass.toml"), &root),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/credentials.env"),
        format!(
            "TRACKMASS_API_KEY={API_KEY}\nTRACKMASS_CLIENT_ID={CLIENT_ID}\n\
             TRACKMASS_CLIENT_SECRET={CLIENT_SECRET}\nTRACKMASS_BASE_URL={}\n\
             TRACKMASS_TOKEN_URL={}\n",
            sandbox.base_url(),
            sandbox.token_url()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("srv/today.csv"),
        reference_csv(&references("SMP", 5)),
    )
    .unwrap();
    root
}

/// Runs `cmd` with the process umask set to `umask` (as systemd's
/// `UMask=` does), returning its exit code.
fn with_umask(cmd: &mut Command, umask: u32) -> i32 {
    use std::os::unix::process::CommandExt;
    let mask = umask as libc::mode_t;
    // SAFETY: umask is async-signal-safe and touches only this child.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    cmd.status().unwrap().code().unwrap_or(-1)
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        // The crontab and ExecStart tests below still run.
        println!("systemd-analyze is not installed: units not verified");
        return;
    };
    assert!(probe.status.success());
    let work = Workdir::new();
    let root = work.path("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut units = Vec::new();
    for name in [
        "trackmass.service",
        "trackmass.timer",
        "trackmass-alert@.service",
    ] {
        let path = root.join(name);
        std::fs::write(&path, relocate(&sample(name), &root)).unwrap();
        units.push(path);
    }
    let out = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&units),
    );
    assert!(
        out.status.success() && stderr(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
}

#[test]
fn the_services_exec_start_as_written_tracks_and_leaves_readable_metrics() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let root = install(&work, &sandbox);
    let unit = relocate(&sample("trackmass.service"), &root);
    let exec: Vec<String> = unit_value(&unit, "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let umask = u32::from_str_radix(&unit_value(&unit, "UMask"), 8).unwrap();
    let config = unit_value(&unit, "Environment");
    let (key, value) = config.split_once('=').unwrap();
    let mut cmd = work.trackmass_at(Path::new(&exec[0]));
    cmd.args(&exec[1..])
        .current_dir(root.join("var"))
        .env(key, value)
        .envs(
            std::fs::read_to_string(root.join("etc/credentials.env"))
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let code = with_umask(&mut cmd, umask);
    let success: Vec<i32> = std::iter::once(0)
        .chain(
            unit_value(&unit, "SuccessExitStatus")
                .split_whitespace()
                .map(|c| c.parse().unwrap()),
        )
        .collect();
    assert!(success.contains(&code), "exit {code}");
    // The settings' files, where the sample puts them.
    assert!(!result_lines(&root.join("var/results.csv")).is_empty());
    // Under UMask=0077 the results are the owner's only, and the metrics
    // readable by node_exporter.
    assert_eq!(mode(&root.join("var/results.csv")), 0o600);
    assert_eq!(mode(&root.join("textfile/trackmass.prom")), 0o644);
    let metrics = std::fs::read_to_string(root.join("textfile/trackmass.prom")).unwrap();
    assert!(metrics.contains("trackmass_"), "{metrics}");
}

#[test]
fn the_crontab_line_as_written_tracks_and_stays_quiet() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let root = install(&work, &sandbox);
    let crontab = relocate(&sample("crontab"), &root);
    let line = crontab
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    // The five time fields, then the command cron gives to sh.
    let command = line.splitn(6, ' ').nth(5).unwrap();
    let out = output(
        work.trackmass_at(Path::new("/bin/sh"))
            .args(["-c", command])
            .current_dir(root.join("var")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing on stdout: cron would mail it as a failure.
    assert_eq!(stdout(&out), "");
    assert!(!result_lines(&root.join("var/results.csv")).is_empty());
    assert!(root.join("log/nightly.log").exists());
}
