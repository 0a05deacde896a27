//! The `seconds` table: what each second of a run's sending did, as the
//! dispatch control counted it ([`crate::timeline`]), and the questions
//! `trackmass report` asks of one run.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::{FailureGroup, RunId, Store, sqlite_error};
use crate::timeline::Second;

impl Store {
    /// Whether this file has the `seconds` table (files written before it
    /// existed, opened read-only, do not).
    fn has_seconds(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'seconds'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Run `run`'s seconds, in order; empty when it sent nothing (or ran
    /// before trackmass kept them).
    pub fn seconds(&self, run: RunId) -> Result<Vec<Second>> {
        if !self.has_seconds()? {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at, created, refused, throttled, failed, pace, rate, paused_ms
                 FROM seconds WHERE run = ?1 ORDER BY at",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![run], |r| {
                Ok(Second {
                    at: r.get(0)?,
                    created: r.get(1)?,
                    refused: r.get(2)?,
                    throttled: r.get(3)?,
                    failed: r.get(4)?,
                    pace: r.get(5)?,
                    rate: r.get(6)?,
                    paused_ms: r.get::<_, i64>(7)?.max(0) as u64,
                })
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// The latest invocation that has seconds: the one a report shows by
    /// default.
    pub fn latest_run_with_seconds(&self) -> Result<Option<RunId>> {
        if !self.has_seconds()? {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT max(run) FROM seconds", [], |r| r.get(0))
            .optional()
            .map(Option::flatten)
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// The rows whose last answer came in run `run` and failed, by kind.
    pub fn failures_answered_in(&self, run: RunId) -> Result<Vec<FailureGroup>> {
        self.failure_groups(Some(run))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{load, temp_store, valid};
    use super::super::{Durability, Outcome, Writer};
    use crate::ledger::Status;
    use crate::timeline::Second;

    #[test]
    fn the_writer_keeps_a_runs_seconds_and_a_report_reads_them_back() {
        let (_dir, mut store) = temp_store();
        let (run, _) = load(&mut store, "a.csv", &[valid(2, "A"), valid(3, "B")]);
        assert_eq!(store.latest_run_with_seconds().unwrap(), None);
        let page = store.pending_page(0, 10).unwrap();
        let writer = Writer::spawn(&store, run, Durability::Full).unwrap();
        let second = |at, created, throttled| Second {
            at,
            created,
            throttled,
            pace: 20.0,
            rate: 40.0,
            ..Second::default()
        };
        writer.second(second(1_000, 3, 1)).unwrap();
        writer.second(second(1_002, 5, 0)).unwrap();
        writer
            .record(
                page[0].id,
                Outcome::Failed {
                    status: Status::Failed,
                    http_status: Some(404),
                    code: "NOT_FOUND".into(),
                    message: "unknown".into(),
                    details: String::new(),
                },
            )
            .unwrap();
        writer.finish().unwrap();
        let got: Vec<_> = store
            .seconds(run)
            .unwrap()
            .iter()
            .map(|s| (s.at, s.created, s.throttled, s.rate))
            .collect();
        assert_eq!(got, [(1_000, 3, 1, 40.0), (1_002, 5, 0, 40.0)]);
        assert_eq!(store.latest_run_with_seconds().unwrap(), Some(run));
        let failures = store.failures_answered_in(run).unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(
            (
                failures[0].http_status,
                failures[0].code.as_deref(),
                failures[0].rows
            ),
            (Some(404), Some("NOT_FOUND"), 1)
        );
        assert!(store.failures_answered_in(run + 1).unwrap().is_empty());
    }
}
