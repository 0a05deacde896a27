//! The ledger's vocabulary, shared by every module: where a document
//! stands ([`Status`]), how an invocation ended ([`RunOutcome`]), why it
//! stopped early ([`StopReason`]), and what loading one input row does to
//! the ledger ([`classify`], pure and table-tested).
//!
//! A **document** is the unit: the reference as validated (trimmed),
//! qualified by the agent code when the row gives one, since a bill of
//! lading number is unique only within its carrier. `way`, `place` and
//! `url` are attributes of the request for that document, not part of its
//! identity. The state file tracks each document once.

use serde::{Deserialize, Serialize};

use crate::error::Exit;

/// Identifies an invocation in the `runs` table.
pub type RunId = i64;

/// Where a document (or a rejected row) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Valid, not yet answered: owed.
    Pending,
    /// The API created a tracking for it.
    Tracked,
    /// Refused locally by validation; never sent.
    Rejected,
    /// The API refused it (a 4xx about this document).
    Failed,
    /// Transient errors until the attempts ran out: still owed.
    Exhausted,
    /// The API said 201 but the body could not be read.
    BadResponse,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Tracked,
        Status::Rejected,
        Status::Failed,
        Status::Exhausted,
        Status::BadResponse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Tracked => "tracked",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Exhausted => "exhausted",
            Status::BadResponse => "bad_response",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a row in this status goes to `failures.csv`.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::Rejected | Status::Failed | Status::Exhausted | Status::BadResponse
        )
    }

    /// Whether the ledger still owes a request for it: every run's files
    /// cover these rows, whichever input they came from.
    pub fn is_owed(self) -> bool {
        matches!(self, Status::Pending | Status::Exhausted)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The commands that record themselves in the `runs` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Loads an input, then sends everything owed.
    Run,
    /// Sends everything pending, without an input.
    Resume,
    /// Puts failed documents back to pending, then sends.
    Retry,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Resume => "resume",
            Command::Retry => "retry",
        }
    }

    pub fn parse(s: &str) -> Option<Command> {
        [Command::Run, Command::Resume, Command::Retry]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How an invocation ended, as the `runs` table and the summary say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Nothing owed, nothing failed among its rows.
    Completed,
    /// Nothing pending, but some of its rows were rejected or failed.
    CompletedWithFailures,
    /// A fatal condition stopped sending; rows not sent stay pending.
    Fatal,
    /// Stopped early (signal, deadline) with work left.
    Interrupted,
    /// Failed outright (no credentials, bad input, state file unusable).
    Error,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 5] = [
        RunOutcome::Completed,
        RunOutcome::CompletedWithFailures,
        RunOutcome::Fatal,
        RunOutcome::Interrupted,
        RunOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::CompletedWithFailures => "completed_with_failures",
            RunOutcome::Fatal => "fatal",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<RunOutcome> {
        RunOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the invocation went to its end (nothing left pending).
    pub fn finished(self) -> bool {
        matches!(
            self,
            RunOutcome::Completed | RunOutcome::CompletedWithFailures
        )
    }

    /// The exit status of an invocation that ended this way (an `Error`
    /// is a fatal error unless it was a usage error, which the caller
    /// knows).
    pub fn exit(self) -> Exit {
        match self {
            RunOutcome::Completed => Exit::Success,
            RunOutcome::CompletedWithFailures => Exit::RowsFailed,
            RunOutcome::Fatal | RunOutcome::Error => Exit::Fatal,
            RunOutcome::Interrupted => Exit::Interrupted,
        }
    }

    /// How the ledger stands after sending: `fatal` wins, then work left
    /// (`owed_pending`, anywhere in the ledger) or an early stop, then
    /// failures among the invocation's rows.
    pub fn decide(fatal: bool, stopped: bool, owed_pending: u64, failures: u64) -> RunOutcome {
        if fatal {
            RunOutcome::Fatal
        } else if stopped || owed_pending > 0 {
            RunOutcome::Interrupted
        } else if failures > 0 {
            RunOutcome::CompletedWithFailures
        } else {
            RunOutcome::Completed
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why sending stopped before the work ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// Ctrl-C or SIGTERM.
    #[serde(rename = "signal")]
    Signal,
    /// The `--max-duration` deadline.
    #[serde(rename = "--max-duration")]
    MaxDuration,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Signal => "signal",
            StopReason::MaxDuration => "--max-duration",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the ledger knows of a document when a row names it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub status: Status,
    /// The row asks for exactly the request the ledger holds (same `way`,
    /// `place` and `url`).
    pub same_fields: bool,
    /// An earlier row of the same input named it already: that row's line.
    pub seen_at_line: Option<u64>,
    /// Its last answer came before the `--force` sequence this run belongs
    /// to (or it was never answered): `--force` sends it again.
    pub answered_before_force: bool,
}

/// What loading one valid row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadClass {
    /// A document the ledger did not hold: queued.
    New,
    /// The same request as an earlier row of this input: sent once.
    Duplicate,
    /// The same document as an earlier row of this input with other
    /// fields: that first row's fields are sent, this row is reported.
    DuplicateDiffers { first_line: u64 },
    /// Held by the ledger from an earlier run, in this status, with the
    /// same fields: not sent again (pending ones are sent as owed).
    Known(Status),
    /// Held by the ledger with other fields: not sent again, reported as
    /// "fields differ" (`--force` sends this row's fields).
    KnownDiffers(Status),
    /// Queued again with this row's fields because of `--force`.
    Forced,
    /// The API refused the document (or retries ran out) and this row
    /// changes its fields: a correction, queued with the new fields.
    Corrected,
}

impl LoadClass {
    /// Whether the row's own fields replace the ledger's and the document
    /// goes back to pending.
    pub fn requeues(self) -> bool {
        matches!(self, LoadClass::Forced | LoadClass::Corrected)
    }
}

/// The rule for a row whose document the ledger may hold. Pure.
pub fn classify(known: Option<Known>, force: bool) -> LoadClass {
    let Some(k) = known else {
        return LoadClass::New;
    };
    if let Some(first_line) = k.seen_at_line {
        return if k.same_fields {
            LoadClass::Duplicate
        } else {
            LoadClass::DuplicateDiffers { first_line }
        };
    }
    if force {
        let answered = k.status != Status::Pending && k.answered_before_force;
        let refreshed = k.status == Status::Pending && !k.same_fields;
        if answered || refreshed {
            return LoadClass::Forced;
        }
    }
    match (k.same_fields, k.status) {
        (true, status) => LoadClass::Known(status),
        (false, Status::Failed | Status::Exhausted) => LoadClass::Corrected,
        (false, status) => LoadClass::KnownDiffers(status),
    }
}

/// Counts gathered while loading an input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadCounts {
    /// Non-blank data rows read.
    pub rows: u64,
    pub rejected: u64,
    pub new: u64,
    /// Rows identical to an earlier row of the input.
    pub duplicates: u64,
    pub already_tracked: u64,
    /// Failed in an earlier run; left as is (`retry` or `--force` sends them
    /// again).
    pub already_failed: u64,
    /// Rows naming a document the ledger (or an earlier row of the input)
    /// holds with other fields: not applied (`--force` applies them).
    pub fields_differ: u64,
    /// Rows correcting the fields of a document the API refused: sent.
    pub corrected: u64,
    /// Of this input, left pending by an earlier run: sent now.
    pub continued: u64,
    pub forced: u64,
}

impl LoadCounts {
    pub fn count(&mut self, class: LoadClass) {
        match class {
            LoadClass::New => self.new += 1,
            LoadClass::Duplicate => self.duplicates += 1,
            LoadClass::DuplicateDiffers { .. } | LoadClass::KnownDiffers(_) => {
                self.fields_differ += 1;
            }
            LoadClass::Known(Status::Tracked) => self.already_tracked += 1,
            LoadClass::Known(Status::Pending) => self.continued += 1,
            LoadClass::Known(_) => self.already_failed += 1,
            LoadClass::Forced => self.forced += 1,
            LoadClass::Corrected => self.corrected += 1,
        }
    }

    /// Requests this input adds to the work owed.
    pub fn queued(&self) -> u64 {
        self.new + self.forced + self.corrected + self.continued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(status: Status, same_fields: bool) -> Known {
        Known {
            status,
            same_fields,
            seen_at_line: None,
            answered_before_force: true,
        }
    }

    #[test]
    fn the_load_rule_as_a_table() {
        use LoadClass::{Corrected, Duplicate, DuplicateDiffers, Forced, KnownDiffers, New};
        use Status::*;
        let in_input = |same, line| Known {
            seen_at_line: Some(line),
            ..known(Pending, same)
        };
        let cases: &[(Option<Known>, bool, LoadClass)] = &[
            (None, false, New),
            (None, true, New),
            // Twice in one input: one request, the first row's fields.
            (Some(in_input(true, 3)), false, Duplicate),
            (
                Some(in_input(false, 3)),
                false,
                DuplicateDiffers { first_line: 3 },
            ),
            (
                Some(in_input(false, 3)),
                true,
                DuplicateDiffers { first_line: 3 },
            ),
            // Held from an earlier run with the same fields.
            (Some(known(Tracked, true)), false, LoadClass::Known(Tracked)),
            (Some(known(Pending, true)), false, LoadClass::Known(Pending)),
            (Some(known(Failed, true)), false, LoadClass::Known(Failed)),
            (
                Some(known(BadResponse, true)),
                false,
                LoadClass::Known(BadResponse),
            ),
            // With other fields: a tracked document is not tracked twice.
            (Some(known(Tracked, false)), false, KnownDiffers(Tracked)),
            (Some(known(Pending, false)), false, KnownDiffers(Pending)),
            (
                Some(known(BadResponse, false)),
                false,
                KnownDiffers(BadResponse),
            ),
            // A refused document with new fields is a correction.
            (Some(known(Failed, false)), false, Corrected),
            (Some(known(Exhausted, false)), false, Corrected),
            // --force sends answered documents again, with this row's fields.
            (Some(known(Tracked, true)), true, Forced),
            (Some(known(Tracked, false)), true, Forced),
            (Some(known(Failed, false)), true, Forced),
            (Some(known(Pending, true)), true, LoadClass::Known(Pending)),
            (Some(known(Pending, false)), true, Forced),
        ];
        for (k, force, expected) in cases {
            assert_eq!(classify(*k, *force), *expected, "{k:?} force={force}");
        }
        // A --force run continuing an earlier --force run does not send a
        // third time what that one already sent again.
        let resent = Known {
            answered_before_force: false,
            ..known(Tracked, true)
        };
        assert_eq!(classify(Some(resent), true), LoadClass::Known(Tracked));
    }

    #[test]
    fn counts_follow_the_classes() {
        let mut c = LoadCounts::default();
        for class in [
            LoadClass::New,
            LoadClass::New,
            LoadClass::Duplicate,
            LoadClass::DuplicateDiffers { first_line: 2 },
            LoadClass::KnownDiffers(Status::Tracked),
            LoadClass::Known(Status::Tracked),
            LoadClass::Known(Status::Pending),
            LoadClass::Known(Status::Exhausted),
            LoadClass::Forced,
            LoadClass::Corrected,
        ] {
            c.count(class);
        }
        assert_eq!(
            (c.new, c.duplicates, c.fields_differ, c.already_tracked),
            (2, 1, 2, 1)
        );
        assert_eq!(
            (c.continued, c.already_failed, c.forced, c.corrected),
            (1, 1, 1, 1)
        );
        assert_eq!(c.queued(), 5);
    }

    #[test]
    fn outcomes_decide_the_exit_status() {
        use RunOutcome::*;
        let cases = [
            ((true, false, 0, 0), Fatal, 1),
            ((true, true, 5, 5), Fatal, 1),
            ((false, true, 0, 0), Interrupted, 4),
            ((false, false, 3, 0), Interrupted, 4),
            ((false, false, 3, 9), Interrupted, 4),
            ((false, false, 0, 2), CompletedWithFailures, 3),
            ((false, false, 0, 0), Completed, 0),
        ];
        for ((fatal, stopped, pending, failures), outcome, code) in cases {
            let o = RunOutcome::decide(fatal, stopped, pending, failures);
            assert_eq!(o, outcome);
            assert_eq!(o.exit().code(), code);
        }
        for o in RunOutcome::ALL {
            assert_eq!(RunOutcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::Value::from(o.as_str())
            );
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            serde_json::to_value(StopReason::MaxDuration).unwrap(),
            "--max-duration"
        );
    }
}
