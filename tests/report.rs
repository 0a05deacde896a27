//! `trackmass report`: the HTML page of a run shows what the run did as the
//! sandbox counted it (answers, 429s, transient failures, refusals, failures
//! by code), and a real browser renders it: headless Chromium, which
//! `.ci/run` installs (`TRACKMASS_REQUIRE_CHROMIUM=1` there: the browser
//! test fails instead of skipping).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use trackmass::sandbox::{Config, Faults, RateLimit};

use crate::common::*;

/// A run that meets a 20/s window at `--rate 60/s`, unknown documents and
/// 500s, and the sandbox that answered it.
fn a_run_with_429s_and_failures(work: &Workdir) -> TestSandbox {
    let sandbox = TestSandbox::with_config(Config {
        unknown_rate: 0.2,
        rate_limit: Some(RateLimit {
            calls: 20,
            period: Duration::from_secs(1),
        }),
        faults: Faults {
            status_500: 0.05,
            ..Faults::default()
        },
        ..Config::default()
    });
    work.write("in.csv", reference_csv(&references("RP", 150)));
    let out = output(work.run_against(&sandbox, "in.csv").args([
        "--rate",
        "60/s",
        "--progress",
        "never",
    ]));
    assert_exit(&out, 3);
    sandbox
}

/// The number in `<span id="ID">N</span>`.
fn span(html: &str, id: &str) -> u64 {
    let open = format!("<span id=\"{id}\">");
    html.split(&open)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {open} in the page"))
}

/// The sum of `data-n` over the chart's rects of `class`.
fn bars(html: &str, class: &str) -> u64 {
    html.split(&format!("<rect class=\"{class}\" data-n=\""))
        .skip(1)
        .map(|rest| {
            rest.split('"')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a count")
        })
        .sum()
}

#[test]
fn a_report_shows_what_the_run_did_as_the_sandbox_counted_it() {
    let work = Workdir::new();
    let sandbox = a_run_with_429s_and_failures(&work);
    let out = output(work.trackmass().args(["report", "--out", "run.html"]));
    assert_exit(&out, 0);
    let html = work.read("run.html");
    let said = format!(
        "wrote run.html (run #1: {} answers over ",
        span(&html, "answers")
    );
    assert!(stdout(&out).contains(&said), "{}", stdout(&out));
    let stats = sandbox.stats();
    let count = |key: &str| stats["requests"][key].as_u64().unwrap_or(0);
    let throttled = count("rate_limited");
    assert!(throttled > 0, "the window refused some: {stats}");
    assert!(count("fault_500") > 0, "some 500s: {stats}");
    // Every answer the sandbox gave, in the page's totals and in its bars.
    let answered: u64 = stats["requests"]
        .as_object()
        .expect("counts")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(span(&html, "answers"), answered, "{stats}");
    assert_eq!(span(&html, "throttled"), throttled);
    assert_eq!(bars(&html, "throttled"), throttled);
    assert_eq!(span(&html, "failed"), count("fault_500"));
    assert_eq!(bars(&html, "failed"), count("fault_500"));
    // Each tracked row had one 201, each failed row one 400.
    let status = status_json(&work, "trackmass.db");
    assert_eq!(span(&html, "created"), status["rows"]["tracked"]);
    assert_eq!(span(&html, "refused"), status["rows"]["failed"]);
    assert_eq!(bars(&html, "refused"), status["rows"]["failed"]);
    // Failures by code: the unknown documents (400 DOCUMENT_NOT_FOUND), as
    // many as failures.csv lists.
    let failures = read_csv(&work.path("failures.csv"));
    let row = html
        .split("<table id=\"failures\">")
        .nth(1)
        .and_then(|t| t.split("<td>400</td><td>DOCUMENT_NOT_FOUND</td>").nth(1))
        .and_then(|r| r.split("<td class=\"n\">").nth(1))
        .and_then(|r| r.split('<').next())
        .expect("a DOCUMENT_NOT_FOUND row in the failures table");
    assert_eq!(row.parse::<usize>().ok(), Some(failures.len()));
    assert!(html.contains("<polyline class=\"answers\""));
    assert!(html.contains("<polyline class=\"rate\""));
    assert!(
        !html.contains("src=") && !html.contains("href=") && !html.contains("<script"),
        "self-contained, nothing fetched"
    );
}

#[test]
fn a_report_names_a_run_the_state_file_does_not_hold() {
    let work = Workdir::new();
    let out = output(work.trackmass().args(["report"]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("trackmass.db: no such state file"));
    let sandbox = TestSandbox::start();
    work.write("in.csv", reference_csv(&references("RN", 3)));
    assert_exit(&output(&mut work.run_against(&sandbox, "in.csv")), 0);
    let out = output(work.trackmass().args(["report", "--run", "9"]));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("no run #9 recorded in this state file"),
        "{}",
        stderr(&out)
    );
    assert!(!work.path("report.html").exists(), "nothing half-written");
    // The report never takes the state file's place.
    let out = output(work.trackmass().args(["report", "--out", "trackmass.db"]));
    assert_exit(&out, 2);
    assert_eq!(status_json(&work, "trackmass.db")["rows"]["tracked"], 3);
}

/// Headless Chromium (`$TRACKMASS_CHROMIUM`, else Debian's), or `None`
/// (after a note) where it is not installed and
/// `TRACKMASS_REQUIRE_CHROMIUM` is not set.
fn chromium() -> Option<PathBuf> {
    external_tool(
        "TRACKMASS_CHROMIUM",
        "/usr/bin/chromium",
        "TRACKMASS_REQUIRE_CHROMIUM",
        "apt-get install chromium",
    )
}

/// Runs headless Chromium on `page` with `args`, in `work`; returns its
/// stdout. Killed after a minute.
fn browse(browser: &Path, work: &Workdir, page: &Path, args: &[&str]) -> String {
    let profile = work.path("chromium-profile");
    let mut child = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(work.path("chromium.log")).expect("chromium's log"))
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium's status") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = reader.join().expect("stdout read");
    let log = std::fs::read_to_string(work.path("chromium.log")).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {args:?} ended with {status}:\n{log}"
    );
    text
}

/// Rows (y) of the screenshot where a pixel has colour `hex` (#rrggbb).
fn rows_with(png: &Path, hex: &str) -> Vec<u32> {
    let want: Vec<u8> = (1..7)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex colour"))
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let mut rows = Vec::new();
    for y in 0..info.height {
        let line = &buf[(y * info.line_size as u32) as usize..][..info.line_size];
        if line
            .chunks(channels)
            .any(|px| px.len() >= 3 && px[..3] == want[..])
        {
            rows.push(y);
        }
    }
    rows
}

#[test]
fn a_report_renders_in_a_real_browser_with_its_charts_in_order() {
    let Some(browser) = chromium() else {
        return;
    };
    let work = Workdir::new();
    let _sandbox = a_run_with_429s_and_failures(&work);
    assert_exit(
        &output(work.trackmass().args(["report", "--out", "run.html"])),
        0,
    );
    let page = work.path("run.html");
    let html = work.read("run.html");
    // The DOM the browser built: both charts are SVG elements holding every
    // bar the file has (a parse error would drop or swallow them).
    let dom = browse(&browser, &work, &page, &["--dump-dom"]);
    assert!(dom.contains("<svg id=\"pace\""), "{dom}");
    assert!(dom.contains("<svg id=\"refusals\""), "{dom}");
    for class in ["throttled", "failed", "refused"] {
        let tag = format!("<rect class=\"{class}\"");
        assert_eq!(
            dom.matches(&tag).count(),
            html.matches(&tag).count(),
            "{class}"
        );
    }
    assert!(dom.contains("<table id=\"failures\">"));
    // The screenshot: the answers' line is drawn, and above the 429 bars
    // (the pace chart comes first).
    let shot = work.path("shot.png");
    browse(
        &browser,
        &work,
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,1400",
        ],
    );
    let answers = rows_with(&shot, trackmass::page::ANSWERS_COLOUR);
    let pace = rows_with(&shot, trackmass::page::PACE_COLOUR);
    let throttled = rows_with(&shot, trackmass::page::THROTTLED_COLOUR);
    // Each colour is also a 12-pixel legend swatch above its chart: what
    // is drawn lies well below it. A 429 bar stands on the axis, 200 px
    // under the legend; the lines lie inside the chart, under its top.
    let spread = |rows: &[u32]| match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    };
    assert!(
        spread(&answers) > 25,
        "the answers' line is drawn: {answers:?}"
    );
    assert!(spread(&pace) > 25, "the pace's line is drawn: {pace:?}");
    assert!(
        spread(&throttled) > 150,
        "the 429 bars are drawn: {throttled:?}"
    );
    // The pace chart comes first.
    assert!(
        answers.last() < throttled.first(),
        "the pace chart is above the 429 chart: {answers:?} vs {throttled:?}"
    );
}
