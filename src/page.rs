//! The HTML page `trackmass report` writes: one self-contained file (inline
//! CSS and SVG, no script, nothing fetched) showing one run's pace over
//! time against `--rate`, its 429s and failures over time, and its failures
//! by code. Pure: the ledger's rows in, the page out.
//!
//! Every text that came from the API or the input (codes, paths) is escaped.

use std::fmt::Write as _;

use crate::store::{FailureGroup, RunRecord};
use crate::timeline::Second;

/// Columns at most in a chart: a longer run is drawn in buckets of several
/// seconds (rates averaged over the bucket, counts summed).
const MAX_COLUMNS: usize = 720;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
/// Room for the axis labels.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 24.0;

/// Series colours; the browser test looks for them in a screenshot.
pub const ANSWERS_COLOUR: &str = "#1f6fd1";
pub const PACE_COLOUR: &str = "#f08c00";
pub const THROTTLED_COLOUR: &str = "#d62728";
pub const FAILED_COLOUR: &str = "#6a3d9a";
pub const REFUSED_COLOUR: &str = "#8c8c8c";

/// What one page shows.
pub struct Page<'a> {
    /// The state file, as the user named it.
    pub state: &'a str,
    pub run: &'a RunRecord,
    pub seconds: &'a [Second],
    pub failures: &'a [FailureGroup],
}

/// One column of a chart: `width` seconds from `at`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Column {
    pub at: i64,
    pub width: u32,
    /// Answers per second over the column.
    pub answers: f64,
    /// The pace allowed at the column's last answered second, per second.
    pub pace: f64,
    pub rate: f64,
    pub throttled: u32,
    pub failed: u32,
    pub refused: u32,
    pub paused_ms: u64,
}

/// The seconds from the first to the last as columns of `width` seconds,
/// seconds without answers included (as zeros), at most [`MAX_COLUMNS`].
pub fn columns(seconds: &[Second]) -> Vec<Column> {
    let (Some(first), Some(last)) = (seconds.first(), seconds.last()) else {
        return Vec::new();
    };
    let span = (last.at - first.at + 1).max(1) as usize;
    let width = span.div_ceil(MAX_COLUMNS).max(1);
    let mut columns: Vec<Column> = (0..span.div_ceil(width))
        .map(|i| Column {
            at: first.at + (i * width) as i64,
            width: width as u32,
            rate: first.rate,
            ..Column::default()
        })
        .collect();
    for s in seconds {
        let Some(c) = columns.get_mut(((s.at - first.at) as usize) / width) else {
            continue;
        };
        c.answers += f64::from(s.answers()) / width as f64;
        c.throttled += s.throttled;
        c.failed += s.failed;
        c.refused += s.refused;
        c.paused_ms = c.paused_ms.max(s.paused_ms);
        c.rate = s.rate;
        // A second that only holds a pause has no pace of its own.
        if s.answers() > 0 {
            c.pace = s.pace;
        }
    }
    // A column with no answers keeps the pace of the one before it.
    let mut last_pace = first.pace;
    for c in columns.iter_mut() {
        if c.answers == 0.0 && c.pace == 0.0 {
            c.pace = last_pace;
        }
        last_pace = c.pace;
    }
    columns
}

/// A round step for about `ticks` ticks up to `max`: 1, 2 or 5 × 10^k.
pub fn tick_step(max: f64, ticks: u32) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / f64::from(ticks.max(1));
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// `s` safe in HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A Unix second as `HH:MM:SS` (UTC).
fn clock(at: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.get(11..19).unwrap_or(&text).to_string()
}

/// The whole page.
pub fn render(page: &Page<'_>) -> String {
    let columns = columns(page.seconds);
    let totals = Totals::of(page.seconds);
    let run = page.run;
    let mut html = String::new();
    let title = format!("trackmass report: run #{} ({})", run.id, run.command);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    html.push_str(&summary(page, &totals));
    if columns.is_empty() {
        html.push_str(
            "<p id=\"no-seconds\">This run answered no request, so there is no pace to draw \
             (or it ran before trackmass kept a run's seconds).</p>\n",
        );
    } else {
        html.push_str(&pace_chart(&columns));
        html.push_str(&refusals_chart(&columns));
    }
    html.push_str(&failures_table(page.failures));
    html.push_str("<p class=\"note\">Times are UTC. Written by trackmass ");
    html.push_str(&escape(crate::cli::VERSION));
    html.push_str(" from the state file; nothing on this page is fetched.</p>\n</body>\n</html>\n");
    html
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right}.bar{display:inline-block;height:10px;background:#6a3d9a}\
.note{color:#666;font-size:12px}svg text{font-size:11px;fill:#444}\
.legend span{margin-right:16px}.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}";

/// Sums over the run's seconds.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    answers: u64,
    created: u64,
    refused: u64,
    throttled: u64,
    failed: u64,
    paused_ms: u64,
    /// Seconds from the first answer's second to the last's, inclusive.
    span: u64,
    rate: f64,
}

impl Totals {
    fn of(seconds: &[Second]) -> Totals {
        let mut t = Totals::default();
        for s in seconds {
            t.answers += u64::from(s.answers());
            t.created += u64::from(s.created);
            t.refused += u64::from(s.refused);
            t.throttled += u64::from(s.throttled);
            t.failed += u64::from(s.failed);
            t.paused_ms += s.paused_ms;
            t.rate = s.rate;
        }
        if let (Some(first), Some(last)) = (seconds.first(), seconds.last()) {
            t.span = (last.at - first.at + 1) as u64;
        }
        t
    }
}

fn summary(page: &Page<'_>, t: &Totals) -> String {
    let run = page.run;
    let mut rows = vec![
        ("State file", escape(page.state)),
        (
            "Input",
            escape(
                run.input
                    .as_deref()
                    .unwrap_or("(none: continued the run it names)"),
            ),
        ),
        ("Started", escape(&run.started_at)),
        (
            "Ended",
            escape(
                run.ended_at
                    .as_deref()
                    .unwrap_or("(still running, or it died)"),
            ),
        ),
        (
            "Outcome",
            run.outcome
                .map_or("(none recorded)".to_string(), |o| escape(o.as_str())),
        ),
    ];
    if t.span > 0 {
        // The run's own measure of its sending time (first request out to
        // last answer in), as its summary says it; else the seconds drawn.
        let sending = run
            .summary
            .as_ref()
            .and_then(|s| s["sending_seconds"].as_f64())
            .filter(|s| *s > 0.0)
            .unwrap_or(t.span as f64);
        rows.push((
            "Answers",
            format!(
                "<span id=\"answers\">{}</span> in {sending:.1} s of sending ({:.1}/s; --rate {:.1}/s)",
                t.answers,
                t.answers as f64 / sending,
                t.rate
            ),
        ));
        rows.push((
            "Of which",
            format!(
                "<span id=\"created\">{}</span> created, <span id=\"refused\">{}</span> refused \
                 by the API, <span id=\"throttled\">{}</span> × 429, <span id=\"failed\">{}</span> \
                 failed otherwise (5xx, timeouts, resets, a refused token or quota)",
                t.created, t.refused, t.throttled, t.failed
            ),
        ));
        rows.push((
            "Paused by 429s",
            format!("{:.1} s", t.paused_ms as f64 / 1000.0),
        ));
    }
    let mut html = String::from("<table id=\"summary\">\n");
    for (k, v) in rows {
        let _ = writeln!(html, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    html.push_str("</table>\n");
    html
}

/// Chart geometry: x of a column's left edge, y of a value.
struct Frame {
    columns: usize,
    top: f64,
}

impl Frame {
    fn x(&self, i: f64) -> f64 {
        LEFT + (WIDTH - LEFT - 8.0) * i / self.columns.max(1) as f64
    }
    fn y(&self, v: f64) -> f64 {
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - (v / self.top).clamp(0.0, 1.0))
    }
    fn column_width(&self) -> f64 {
        (WIDTH - LEFT - 8.0) / self.columns.max(1) as f64
    }
}

/// Axes, ticks and time labels of a chart whose values go up to `max`.
fn axes(svg: &mut String, frame: &Frame, columns: &[Column], unit: &str) {
    let step = tick_step(frame.top, 4);
    let mut v = 0.0;
    while v <= frame.top + 1e-9 {
        let y = frame.y(v);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - 8.0,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
        v += step;
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{:.1}\">{}</text>",
        TOP - 12.0,
        escape(unit)
    );
    let labels = 6.min(columns.len());
    for k in 0..labels {
        let i = k * (columns.len() - 1) / (labels - 1).max(1);
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            frame.x(i as f64 + 0.5),
            HEIGHT - 8.0,
            clock(columns[i].at)
        );
    }
}

/// A number without a pointless ".0".
fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

fn pace_chart(columns: &[Column]) -> String {
    let peak = columns
        .iter()
        .map(|c| c.answers.max(c.pace).max(c.rate))
        .fold(0.0, f64::max);
    let frame = Frame {
        columns: columns.len(),
        top: (peak * 1.1).max(1.0),
    };
    let width = columns[0].width;
    let mut svg = format!(
        "<h2>Pace</h2>\n<p class=\"legend\"><span><i class=\"swatch\" style=\"background:{ANSWERS_COLOUR}\"></i>answers per second{}</span>\
         <span><i class=\"swatch\" style=\"background:{PACE_COLOUR}\"></i>the pace allowed</span>\
         <span><i class=\"swatch\" style=\"background:#999\"></i>--rate</span>\
         <span><i class=\"swatch\" style=\"background:#fde2e2\"></i>paused by a 429</span></p>\n\
         <svg id=\"pace\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">",
        if width > 1 {
            format!(" (averaged over {width} s)")
        } else {
            String::new()
        }
    );
    // Pauses first, under the lines.
    let per_column_ms = f64::from(width) * 1000.0;
    for (i, c) in columns.iter().enumerate() {
        if c.paused_ms > 0 {
            let w = (c.paused_ms as f64 / per_column_ms * frame.column_width()).max(1.0);
            let _ = write!(
                svg,
                "<rect class=\"pause\" x=\"{:.1}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#fde2e2\"/>",
                frame.x(i as f64),
                HEIGHT - TOP - BOTTOM
            );
        }
    }
    axes(&mut svg, &frame, columns, "per second");
    let line = |value: fn(&Column) -> f64| -> String {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:.1},{:.1}", frame.x(i as f64 + 0.5), frame.y(value(c))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        svg,
        "<polyline class=\"rate\" fill=\"none\" stroke=\"#999\" stroke-dasharray=\"6 4\" points=\"{}\"/>\
         <polyline class=\"pace\" fill=\"none\" stroke=\"{PACE_COLOUR}\" stroke-width=\"2\" points=\"{}\"/>\
         <polyline class=\"answers\" fill=\"none\" stroke=\"{ANSWERS_COLOUR}\" stroke-width=\"2\" points=\"{}\"/>",
        line(|c| c.rate),
        line(|c| c.pace),
        line(|c| c.answers)
    );
    svg.push_str("</svg>\n");
    svg
}

fn refusals_chart(columns: &[Column]) -> String {
    let peak = columns
        .iter()
        .map(|c| c.throttled + c.failed + c.refused)
        .max()
        .unwrap_or(0);
    let frame = Frame {
        columns: columns.len(),
        top: (f64::from(peak) * 1.1).max(1.0),
    };
    let width = columns[0].width;
    let mut svg = format!(
        "<h2>429s and failures</h2>\n<p class=\"legend\">\
         <span><i class=\"swatch\" style=\"background:{THROTTLED_COLOUR}\"></i>429</span>\
         <span><i class=\"swatch\" style=\"background:{FAILED_COLOUR}\"></i>failed otherwise (5xx, timeout, reset, a refused token or quota)</span>\
         <span><i class=\"swatch\" style=\"background:{REFUSED_COLOUR}\"></i>refused by the API (4xx)</span>\
         <span>per {}</span></p>\n\
         <svg id=\"refusals\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">",
        if width > 1 {
            format!("{width} s")
        } else {
            "second".to_string()
        }
    );
    axes(&mut svg, &frame, columns, "answers");
    let bar_width = (frame.column_width() * 0.9).max(1.0);
    for (i, c) in columns.iter().enumerate() {
        let mut base = 0u32;
        for (class, n, colour) in [
            ("throttled", c.throttled, THROTTLED_COLOUR),
            ("failed", c.failed, FAILED_COLOUR),
            ("refused", c.refused, REFUSED_COLOUR),
        ] {
            if n == 0 {
                continue;
            }
            let y_top = frame.y(f64::from(base + n));
            let y_bottom = frame.y(f64::from(base));
            let _ = write!(
                svg,
                "<rect class=\"{class}\" data-n=\"{n}\" x=\"{:.1}\" y=\"{y_top:.1}\" width=\"{bar_width:.1}\" \
                 height=\"{:.1}\" fill=\"{colour}\"/>",
                frame.x(i as f64),
                (y_bottom - y_top).max(1.0)
            );
            base += n;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn failures_table(failures: &[FailureGroup]) -> String {
    let mut html = String::from("<h2>Failures by code</h2>\n");
    if failures.is_empty() {
        html.push_str("<p id=\"no-failures\">No row of this run failed.</p>\n");
        return html;
    }
    let most = failures.iter().map(|f| f.rows).max().unwrap_or(1).max(1);
    html.push_str(
        "<table id=\"failures\">\n<tr><th>status</th><th>HTTP</th><th>code</th><th>rows</th><th></th></tr>\n",
    );
    for f in failures {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td><span class=\"bar\" style=\"width:{}px\"></span></td></tr>",
            f.status,
            f.http_status.map_or(String::new(), |h| h.to_string()),
            escape(f.code.as_deref().unwrap_or("")),
            f.rows,
            (f.rows * 300).div_ceil(most)
        );
    }
    html.push_str("</table>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Command, Status};

    fn second(at: i64, created: u32, throttled: u32) -> Second {
        Second {
            at,
            created,
            throttled,
            pace: 10.0,
            rate: 20.0,
            ..Second::default()
        }
    }

    #[test]
    fn seconds_become_columns_gaps_included() {
        let got = columns(&[second(100, 4, 1), second(103, 2, 0)]);
        let shape: Vec<_> = got
            .iter()
            .map(|c| (c.at, c.width, c.answers, c.throttled))
            .collect();
        assert_eq!(
            shape,
            [
                (100, 1, 5.0, 1),
                (101, 1, 0.0, 0),
                (102, 1, 0.0, 0),
                (103, 1, 2.0, 0)
            ]
        );
        // The gap keeps the pace it had.
        assert_eq!(got[1].pace, 10.0);
        assert!(columns(&[]).is_empty());
    }

    #[test]
    fn a_long_run_is_drawn_in_buckets_whose_rates_are_averages() {
        // 1,441 s: buckets of 3 s (1441 / 720 rounded up), 481 columns.
        let seconds: Vec<Second> = (0..=1440).map(|i| second(i, 6, 0)).collect();
        let got = columns(&seconds);
        assert_eq!(got.len(), 481);
        assert_eq!(got[0].width, 3);
        assert_eq!(got[0].answers, 6.0, "an average, not the sum");
        // The last bucket holds one second of three.
        assert_eq!(got[480].answers, 2.0);
        let counts: u32 = columns(&[second(0, 0, 2), second(1, 0, 3), second(1441, 0, 1)])
            .iter()
            .map(|c| c.throttled)
            .sum();
        assert_eq!(counts, 6, "counts are summed, not averaged");
        // A second that only holds a pause (no answer, no pace) does not
        // pull its bucket's pace to 0.
        let mut seconds: Vec<Second> = (0..=1440).map(|i| second(i, 6, 0)).collect();
        seconds[2] = Second {
            at: 2,
            paused_ms: 1_000,
            ..Second::default()
        };
        let got = columns(&seconds);
        assert_eq!((got[0].pace, got[0].paused_ms), (10.0, 1_000));
    }

    #[test]
    fn tick_steps_are_round() {
        for (max, ticks, step) in [
            (44.0, 4, 20.0),
            (40.0, 4, 10.0),
            (0.5, 4, 0.2),
            (1200.0, 4, 500.0),
            (0.0, 4, 1.0),
            (f64::NAN, 4, 1.0),
        ] {
            let got = tick_step(max, ticks);
            assert!((got - step).abs() < 1e-9, "{max} in {ticks}: {got}");
        }
    }

    #[test]
    fn text_from_outside_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'\u{7}"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;\u{fffd}"
        );
    }

    #[test]
    fn the_page_draws_every_column_and_escapes_codes() {
        let run = RunRecord {
            id: 7,
            command: Command::Run,
            input: Some("<in>.csv".into()),
            batch: Some(7),
            started_at: "2026-12-02T10:00:00Z".into(),
            ended_at: None,
            outcome: None,
            summary: None,
            config: String::new(),
        };
        let failures = [FailureGroup {
            status: Status::Failed,
            http_status: Some(404),
            code: Some("<NOT_FOUND>".into()),
            rows: 3,
        }];
        let seconds = [second(100, 4, 1), second(102, 2, 2)];
        let html = render(&Page {
            state: "s.db",
            run: &run,
            seconds: &seconds,
            failures: &failures,
        });
        assert!(html.contains("&lt;NOT_FOUND&gt;") && !html.contains("<NOT_FOUND>"));
        assert!(html.contains("&lt;in&gt;.csv"));
        // Three columns (one a gap), one point each on every line.
        let answers = html
            .split("class=\"answers\"")
            .nth(1)
            .and_then(|s| s.split("points=\"").nth(1))
            .and_then(|s| s.split('"').next())
            .expect("the answers line");
        assert_eq!(answers.split(' ').count(), 3);
        assert_eq!(html.matches("class=\"throttled\"").count(), 2);
        assert!(html.contains("<span id=\"throttled\">3</span>"));
        // Without a summary, the seconds drawn are the sending time.
        assert!(html.contains("</span> in 3.0 s of sending (3.0/s; --rate 20.0/s)"));
        let summarised = RunRecord {
            summary: Some(serde_json::json!({"sending_seconds": 2.5})),
            ..run.clone()
        };
        let html = render(&Page {
            state: "s.db",
            run: &summarised,
            seconds: &seconds,
            failures: &failures,
        });
        assert!(
            html.contains("</span> in 2.5 s of sending (3.6/s; --rate 20.0/s)"),
            "the run's own measure, as its summary says it"
        );
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "nothing fetched"
        );
    }
}
