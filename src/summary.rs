//! What a run did: the line printed at the end, the `--summary` JSON and
//! the `--metrics` Prometheus textfile. Pure: the caller writes the files.

use serde::Serialize;

use crate::ledger::{Command, LoadCounts, RunOutcome, StopReason};

/// What a run did, as printed at the end and stored in the state file.
/// Its counts (but `load`) are over the rows it reports on: its input's,
/// those it answered, and what the ledger still owes.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub command: Command,
    pub input: String,
    pub state: String,
    /// When it started and ended (RFC 3339, UTC).
    pub started_at: String,
    pub ended_at: String,
    /// Counts from reading the input (all zero for resume and retry).
    #[serde(flatten)]
    pub load: LoadCounts,
    /// Documents left pending by earlier runs (of other inputs) that this
    /// run sent too.
    pub pending_earlier: u64,
    /// Failed rows put back to pending by `retry`.
    pub retried: u64,
    pub tracked: u64,
    /// Of those, tracked before this invocation started.
    pub tracked_before: u64,
    pub handling_units: u64,
    /// failed, exhausted and bad_response (rejected rows not included).
    pub failed: u64,
    /// Of those, from other inputs than the run's (owed from earlier runs).
    pub failed_earlier: u64,
    /// Of those, exhausted: `trackmass retry` sends them again.
    pub exhausted: u64,
    /// Left pending in the whole ledger.
    pub pending: u64,
    pub requests: u64,
    pub resent_after_interruption: u64,
    /// 429 answers met, and the lowest share of --rate the pace fell to.
    pub throttled: u64,
    pub lowest_pace_percent: f64,
    /// Why the run stopped before the end, when it did.
    pub stopped_by: Option<StopReason>,
    pub elapsed_seconds: f64,
    /// From the first request out to the last answer in; `requests /
    /// sending_seconds` is the rate achieved.
    pub sending_seconds: f64,
    /// Where a request's time went, on average.
    pub request_ms: RequestMs,
    pub outcome: RunOutcome,
    pub exit_code: u8,
    pub fatal: Option<String>,
    pub results: String,
    pub failures: String,
}

/// Where a request's time went, in milliseconds, averaged over the run's
/// requests: with `--concurrency` they bound the rate (Little's law), and
/// say which to look at when a run goes slower than `--rate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RequestMs {
    /// Waiting for the row's in-flight mark to be committed (the disk).
    pub in_flight_mark: f64,
    /// Waiting for its turn: a token, then the pace's slot.
    pub turn: f64,
    /// From the request out to its answer in (the network and the API).
    pub answer: f64,
}

impl RequestMs {
    /// The averages of `total` over `requests`, to the microsecond.
    pub fn of(total: &crate::engine::dispatch::RequestTime, requests: u64) -> RequestMs {
        let ms = |d: std::time::Duration| {
            if requests == 0 {
                return 0.0;
            }
            (d.as_secs_f64() * 1000.0 / requests as f64 * 1000.0).round() / 1000.0
        };
        RequestMs {
            in_flight_mark: ms(total.marking),
            turn: ms(total.turn),
            answer: ms(total.answer),
        }
    }
}

/// The summary of a command that failed before it could count anything
/// (no credentials, a bad state file): still written, so that a scheduler
/// never reads yesterday's file as today's.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSummary {
    pub command: Command,
    pub state: String,
    pub started_at: String,
    pub ended_at: String,
    pub outcome: RunOutcome,
    pub exit_code: u8,
    pub error: String,
}

impl Summary {
    /// The one-line summary printed at the end.
    pub fn line(&self) -> String {
        // The rate of sending (first request out to last answer in), not
        // of the whole run with its loading; left out where a handful of
        // requests make no rate.
        let rate = if self.requests >= 10 && self.sending_seconds > 0.0 {
            format!(" ({:.1}/s)", self.requests as f64 / self.sending_seconds)
        } else {
            String::new()
        };
        let (head, parts) = (self.head(), self.outcomes());
        let mut line = format!(
            "{head} → {}; {} in {:.1}s{rate}",
            parts.join(", "),
            crate::words::count(self.requests, "request", "requests"),
            self.elapsed_seconds,
        );
        if self.resent_after_interruption > 0 {
            line.push_str(&format!(
                ", {} re-sent after interruption",
                self.resent_after_interruption
            ));
        }
        if self.throttled > 0 {
            line.push_str(&format!(
                ", {} answered 429 (pace down to {}% of --rate)",
                self.throttled, self.lowest_pace_percent
            ));
        }
        line.push_str(&format!(
            ". Wrote {} and {}.",
            shown(&self.results),
            shown(&self.failures)
        ));
        line.push_str(&self.what_next());
        line
    }

    /// What the line is about: the input and its rows, or the run a
    /// retry or resume continued.
    fn head(&self) -> String {
        match self.command {
            Command::Run => {
                let mut head = format!(
                    "{}: {}",
                    self.input,
                    crate::words::count(self.load.rows, "row", "rows")
                );
                let mut notes = Vec::new();
                if self.load.new > 0 && self.load.new != self.load.rows {
                    notes.push(format!("{} new", self.load.new));
                }
                if self.pending_earlier > 0 {
                    notes.push(format!(
                        "{} pending from earlier runs included",
                        self.pending_earlier
                    ));
                }
                if !notes.is_empty() {
                    head.push_str(&format!(" ({})", notes.join(", ")));
                }
                head
            }
            Command::Retry => format!(
                "{} (retry of {})",
                self.input,
                crate::words::count(self.retried, "row", "rows")
            ),
            Command::Resume => format!("{} (resume)", self.input),
        }
    }

    /// What became of the rows: tracked, units, and each kind of row that
    /// was not tracked, when there is any.
    fn outcomes(&self) -> Vec<String> {
        let mut tracked = format!("{} tracked", self.tracked);
        if self.tracked_before > 0 {
            tracked.push_str(&format!(" ({} before this run)", self.tracked_before));
        }
        let mut parts = vec![
            tracked,
            crate::words::count(self.handling_units, "handling unit", "handling units"),
        ];
        let mut count = |n: u64, what: &str| {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        };
        count(self.load.rejected, "rejected");
        let failed = if self.failed_earlier > 0 {
            format!("failed ({} of earlier inputs)", self.failed_earlier)
        } else {
            "failed".to_string()
        };
        count(self.failed, &failed);
        let one = |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        count(
            self.load.duplicates,
            one(self.load.duplicates, "duplicate row", "duplicate rows"),
        );
        count(
            self.load.fields_differ,
            one(
                self.load.fields_differ,
                "row with other fields than the ledger holds (not applied)",
                "rows with other fields than the ledger holds (not applied)",
            ),
        );
        count(self.pending, "pending");
        parts
    }

    /// The sentences after the files: rows left failed by an earlier run,
    /// and the command that continues a stopped or exhausted run.
    fn what_next(&self) -> String {
        let mut line = String::new();
        let state = &self.state;
        match self.load.already_failed {
            0 => {}
            1 => line.push_str(
                " 1 row failed in an earlier run and was not sent again (trackmass retry sends it).",
            ),
            n => line.push_str(&format!(
                " {n} rows failed in an earlier run and were not sent again \
                 (trackmass retry sends them)."
            )),
        }
        match self.outcome {
            RunOutcome::Interrupted => line.push_str(&format!(
                " Stopped ({}): run `trackmass resume --state {state}` to continue.",
                self.stopped_by
                    .map_or("work left", |s| s.as_str())
            )),
            RunOutcome::Fatal => line.push_str(&format!(
                " Stopped: fix the error above, then run `trackmass resume --state {state}` to continue."
            )),
            _ if self.exhausted > 0 => line.push_str(&format!(
                " {} exhausted (retries ran out): `trackmass retry --state {state}` sends them again.",
                self.exhausted
            )),
            _ => {}
        }
        line
    }

    /// The summary as a Prometheus textfile (for node_exporter's textfile
    /// collector): gauges describing the last run.
    pub fn prometheus(&self) -> String {
        let mut out = Metrics::default();
        out.gauge(
            "trackmass_last_run_rows",
            "Rows of the last run by outcome.",
            &[
                ("read", self.load.rows as f64),
                ("new", self.load.new as f64),
                ("duplicate", self.load.duplicates as f64),
                ("rejected", self.load.rejected as f64),
                ("already_tracked", self.load.already_tracked as f64),
                ("tracked", self.tracked as f64),
                ("failed", self.failed as f64),
                ("pending", self.pending as f64),
            ],
            "outcome",
        );
        out.single(
            "trackmass_last_run_handling_units",
            "Handling units of the tracked rows.",
            self.handling_units as f64,
        );
        out.single(
            "trackmass_last_run_requests",
            "POST requests sent (every attempt).",
            self.requests as f64,
        );
        out.single(
            "trackmass_last_run_throttled",
            "429 answers met.",
            self.throttled as f64,
        );
        out.single(
            "trackmass_last_run_resent_after_interruption",
            "Rows sent again because a run stopped while they were in flight.",
            self.resent_after_interruption as f64,
        );
        out.single(
            "trackmass_last_run_duration_seconds",
            "Wall time of the last run.",
            self.elapsed_seconds,
        );
        out.common(self.exit_code, &self.ended_at);
        out.text
    }
}

/// An output path as a sentence names it.
fn shown(path: &str) -> &str {
    if crate::output::is_stdout(std::path::Path::new(path)) {
        "standard output"
    } else {
        path
    }
}

impl ErrorSummary {
    pub fn prometheus(&self) -> String {
        let mut out = Metrics::default();
        out.common(self.exit_code, &self.ended_at);
        out.text
    }
}

/// Builds a Prometheus text exposition.
#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn header(&mut self, name: &str, help: &str) {
        self.text
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
    }

    fn single(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help);
        self.text.push_str(&format!("{name} {value}\n"));
    }

    fn gauge(&mut self, name: &str, help: &str, values: &[(&str, f64)], label: &str) {
        self.header(name, help);
        for (key, value) in values {
            self.text
                .push_str(&format!("{name}{{{label}=\"{key}\"}} {value}\n"));
        }
    }

    /// Exit code and end time, present in every textfile.
    fn common(&mut self, exit_code: u8, ended_at: &str) {
        self.single(
            "trackmass_last_run_exit_code",
            "Exit status of the last run (0 all tracked, 1 fatal, 2 usage, 3 some rows failed, 4 stopped).",
            f64::from(exit_code),
        );
        let ended = humantime::parse_rfc3339(ended_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.single(
            "trackmass_last_run_end_timestamp_seconds",
            "When the last run ended (Unix time).",
            ended,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            command: Command::Run,
            input: "in.csv".into(),
            state: "s.db".into(),
            started_at: "2026-11-26T01:00:00Z".into(),
            ended_at: "2026-11-26T01:00:30Z".into(),
            load: LoadCounts {
                rows: 10,
                new: 6,
                rejected: 1,
                already_tracked: 3,
                ..LoadCounts::default()
            },
            pending_earlier: 0,
            retried: 0,
            tracked: 8,
            tracked_before: 3,
            handling_units: 17,
            failed: 1,
            failed_earlier: 0,
            exhausted: 0,
            pending: 0,
            requests: 6,
            resent_after_interruption: 0,
            throttled: 0,
            lowest_pace_percent: 100.0,
            stopped_by: None,
            elapsed_seconds: 30.0,
            sending_seconds: 29.0,
            request_ms: RequestMs::default(),
            outcome: RunOutcome::CompletedWithFailures,
            exit_code: 3,
            fatal: None,
            results: "results.csv".into(),
            failures: "failures.csv".into(),
        }
    }

    #[test]
    fn request_times_are_averaged_over_the_requests() {
        use crate::engine::dispatch::RequestTime;
        use std::time::Duration;
        let total = RequestTime {
            marking: Duration::from_micros(4_001),
            turn: Duration::from_secs(2),
            answer: Duration::from_millis(300),
        };
        // (requests, expected in_flight_mark, turn, answer in ms)
        let cases = [
            (4, (1.0, 500.0, 75.0)),
            (3, (1.334, 666.667, 100.0)),
            (0, (0.0, 0.0, 0.0)),
        ];
        for (requests, (mark, turn, answer)) in cases {
            assert_eq!(
                RequestMs::of(&total, requests),
                RequestMs {
                    in_flight_mark: mark,
                    turn,
                    answer
                },
                "{requests} requests"
            );
        }
    }

    #[test]
    fn the_line_says_what_was_new_and_what_was_skipped() {
        let line = summary().line();
        assert!(
            line.starts_with("in.csv: 10 rows (6 new) → 8 tracked (3 before this run)"),
            "{line}"
        );
        assert!(line.contains("1 rejected, 1 failed"), "{line}");
        let mut s = summary();
        s.command = Command::Resume;
        s.outcome = RunOutcome::Interrupted;
        s.stopped_by = Some(StopReason::Signal);
        let line = s.line();
        assert!(line.starts_with("in.csv (resume) →"), "{line}");
        assert!(
            line.contains("Stopped (signal): run `trackmass resume --state s.db` to continue"),
            "{line}"
        );
        let mut s = summary();
        s.pending_earlier = 169;
        s.exhausted = 1;
        s.failed_earlier = 1;
        let line = s.line();
        assert!(
            line.starts_with("in.csv: 10 rows (6 new, 169 pending from earlier runs included) →"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "1 exhausted (retries ran out): `trackmass retry --state s.db` sends them again."
            ),
            "{line}"
        );
    }

    #[test]
    fn prometheus_textfile_has_one_sample_per_line_and_the_exit_code() {
        let text = summary().prometheus();
        assert!(
            text.contains("trackmass_last_run_rows{outcome=\"tracked\"} 8\n"),
            "{text}"
        );
        assert!(text.contains("trackmass_last_run_exit_code 3\n"), "{text}");
        assert!(
            text.contains("trackmass_last_run_end_timestamp_seconds 1795654830\n"),
            "{text}"
        );
        for line in text.lines() {
            let ok = line.starts_with("# HELP trackmass_")
                || line.starts_with("# TYPE trackmass_")
                || (line.starts_with("trackmass_")
                    && line
                        .rsplit(' ')
                        .next()
                        .is_some_and(|v| v.parse::<f64>().is_ok()));
            assert!(ok, "not exposition format: {line:?}");
        }
    }
}
