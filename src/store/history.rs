//! The `runs` table (what was invoked, when, how it ended) and the
//! questions asked of the ledger as a whole: `status`, `resume`, `retry`.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{RunId, Scope, Status, StatusCounts, Store, now_rfc3339, sqlite_error};
use crate::ledger::{Command, RunOutcome};

/// One invocation, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub command: Command,
    /// The input file (absolute path when known); none for commands that
    /// read no input.
    pub input: Option<String>,
    /// The run whose rows it worked on.
    pub batch: Option<RunId>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// None while running or when the process died.
    pub outcome: Option<RunOutcome>,
    /// The summary it wrote at the end, as JSON.
    pub summary: Option<serde_json::Value>,
    /// Its settings (JSON), without secrets.
    #[serde(skip)]
    pub config: String,
}

/// Failed rows of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    pub status: Status,
    pub http_status: Option<u16>,
    pub code: Option<String>,
    pub rows: u64,
}

/// Where the whole state file stands.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub counts: StatusCounts,
    /// Rows a process was sending when it died (not yet recovered).
    pub in_flight: u64,
    /// Pending rows that were in flight at an interruption: the next run
    /// sends them again.
    pub interrupted: u64,
    pub failures: Vec<FailureGroup>,
}

const RUN_COLUMNS: &str =
    "id, command, input, batch, started_at, ended_at, outcome, summary, config";

/// A stored name that this build does not know: the file is not one of ours.
fn unknown(column: usize, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unknown value {value:?}").into(),
    )
}

fn run_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let command: String = r.get(1)?;
    let outcome: Option<String> = r.get(6)?;
    let summary: Option<String> = r.get(7)?;
    Ok(RunRecord {
        id: r.get(0)?,
        command: Command::parse(&command).ok_or_else(|| unknown(1, &command))?,
        input: r.get(2)?,
        batch: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        outcome: outcome
            .map(|o| RunOutcome::parse(&o).ok_or_else(|| unknown(6, &o)))
            .transpose()?,
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        config: r.get(8)?,
    })
}

impl Store {
    /// Records the start of an invocation that continues `batch`.
    pub fn begin_continuation(
        &mut self,
        command: Command,
        batch: &RunRecord,
        config: &str,
    ) -> Result<RunId> {
        self.conn
            .execute(
                // It carries on the run's --force sequence, if any.
                "INSERT INTO runs (command, input, config, started_at, batch, loaded_at, force)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4, coalesce((SELECT force FROM runs WHERE id = ?5), 0))",
                params![
                    command.as_str(),
                    batch.input,
                    config,
                    now_rfc3339(),
                    batch.id
                ],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how an invocation ended.
    pub fn end_run(&mut self, run: RunId, outcome: RunOutcome, summary: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET ended_at = ?2, outcome = ?3, summary = ?4 WHERE id = ?1",
                params![run, now_rfc3339(), outcome.as_str(), summary],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(())
    }

    /// The `run` that started the batch the latest invocation worked on:
    /// what `resume`, `retry` and `export` continue.
    pub fn latest_batch(&self) -> Result<Option<RunRecord>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE id = (
                        SELECT batch FROM runs
                        WHERE batch IS NOT NULL AND loaded_at IS NOT NULL
                        ORDER BY id DESC LIMIT 1)"
                ),
                [],
                run_record,
            )
            .optional()
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// The `run` #`id`, if it loaded its input (a run that other commands
    /// can report on).
    pub fn batch(&self, id: RunId) -> Result<Option<RunRecord>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE id = ?1 AND command = 'run' AND loaded_at IS NOT NULL"
                ),
                params![id],
                run_record,
            )
            .optional()
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// With `--force`, documents answered before this run are sent again.
    /// But if the runs just before this one on the same input were
    /// `--force` runs that did not finish, this run continues them: only
    /// documents answered before the first of them are sent again, not the
    /// ones they already re-sent. Returns that first run (`None`: the new
    /// run itself).
    pub(super) fn forced_sequence_start(&self, source: &str) -> Result<Option<RunId>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, force, outcome FROM runs WHERE input = ?1 ORDER BY id DESC")
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![source], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut since = None;
        for row in rows {
            let (id, forced, outcome) = row.map_err(|e| sqlite_error(&self.path, e))?;
            let finished = outcome
                .as_deref()
                .and_then(RunOutcome::parse)
                .is_some_and(RunOutcome::finished);
            if !forced || finished {
                break;
            }
            since = Some(id);
        }
        Ok(since)
    }

    /// Every invocation, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id"))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map([], run_record)
            .map_err(|e| sqlite_error(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Puts the failed documents in `scope` in these statuses back to
    /// pending. Returns how many.
    pub fn requeue(&mut self, scope: Scope, statuses: &[Status]) -> Result<u64> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare(&format!(
                    "UPDATE items SET status = 'pending', http_status = NULL, code = NULL,
                         message = NULL, details = NULL, updated_at = ?3
                     WHERE {} AND status = ?2 AND payload IS NOT NULL",
                    scope.filter()
                ))
                .map_err(|e| sqlite_error(&self.path, e))?;
            let now = now_rfc3339();
            for status in statuses {
                n += stmt
                    .execute(params![scope.param(), status.as_str(), now])
                    .map_err(|e| sqlite_error(&self.path, e))? as u64;
            }
        }
        tx.commit().map_err(|e| sqlite_error(&self.path, e))?;
        Ok(n)
    }

    /// Failed rows by kind, most first: of the whole file, or those whose
    /// last answer came in run `answered_in`.
    pub(super) fn failure_groups(&self, answered_in: Option<RunId>) -> Result<Vec<FailureGroup>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT status, http_status, code, count(*) FROM items
                 WHERE status IN ('failed', 'exhausted', 'bad_response')
                   AND (?1 IS NULL OR answered_run = ?1)
                 GROUP BY status, http_status, code ORDER BY count(*) DESC, status, code",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![answered_in], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<u16>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut failures = Vec::new();
        for row in rows {
            let (status, http_status, code, n) = row.map_err(|e| sqlite_error(&self.path, e))?;
            failures.push(FailureGroup {
                status: self.status_of(&status)?,
                http_status,
                code: code.filter(|c| !c.is_empty()),
                rows: n as u64,
            });
        }
        Ok(failures)
    }

    /// Counts over the whole state file.
    pub fn overview(&self) -> Result<Overview> {
        let counts = self.status_counts(Scope::Ledger)?;
        let count = |sql: &str| -> Result<u64> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| sqlite_error(&self.path, e))
        };
        let in_flight = count("SELECT count(*) FROM items WHERE in_flight = 1")?;
        let interrupted = count(
            "SELECT count(*) FROM items WHERE status = 'pending' AND was_in_flight = 1 AND in_flight = 0",
        )?;
        let failures = self.failure_groups(None)?;
        Ok(Overview {
            counts,
            in_flight,
            interrupted,
            failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{answer, load, temp_store, valid};
    use super::*;

    #[test]
    fn continuations_share_the_batch_of_the_run_they_continue() {
        let (_dir, mut store) = temp_store();
        assert!(store.latest_batch().unwrap().is_none());
        let (first, _) = load(&mut store, "a.csv", &[valid(2, "A")]);
        let (second, _) = load(&mut store, "b.csv", &[valid(2, "B")]);
        let batch = store.latest_batch().unwrap().unwrap();
        assert_eq!(batch.id, second);
        assert_eq!(store.batch(first).unwrap().unwrap().id, first);
        let resume = store
            .begin_continuation(Command::Resume, &batch, "{}")
            .unwrap();
        assert!(resume > second);
        assert!(
            store.batch(resume).unwrap().is_none(),
            "not a run with an input"
        );
        assert_eq!(store.latest_batch().unwrap().unwrap().id, second);
        store
            .end_run(resume, RunOutcome::Interrupted, "{}")
            .unwrap();
        let runs = store.runs().unwrap();
        let batches: Vec<_> = runs.iter().map(|r| r.batch).collect();
        assert_eq!(batches, [Some(first), Some(second), Some(second)]);
        assert_eq!(runs[2].command, Command::Resume);
        assert_eq!(runs[2].outcome, Some(RunOutcome::Interrupted));
    }

    #[test]
    fn requeue_covers_the_ledger_or_one_runs_rows() {
        let (_dir, mut store) = temp_store();
        let (old, _) = load(&mut store, "old.csv", &[valid(2, "OLD")]);
        answer(&store, "OLD", Status::Exhausted, old);
        let (run, _) = load(
            &mut store,
            "new.csv",
            &[valid(2, "A"), valid(3, "B"), valid(4, "C"), valid(5, "D")],
        );
        answer(&store, "A", Status::Exhausted, run);
        answer(&store, "B", Status::Failed, run);
        answer(&store, "C", Status::BadResponse, run);
        // Run N's rows only: the older run's exhausted row stays.
        assert_eq!(
            store
                .requeue(Scope::Batch(run), &[Status::Exhausted])
                .unwrap(),
            1
        );
        let pending = |store: &Store| {
            store
                .status_counts(Scope::Ledger)
                .unwrap()
                .get(Status::Pending)
        };
        assert_eq!(pending(&store), 2, "A again, and D");
        assert_eq!(
            store
                .status_counts(Scope::Batch(old))
                .unwrap()
                .get(Status::Exhausted),
            1
        );
        // The whole ledger: the older run's too.
        assert_eq!(
            store.requeue(Scope::Ledger, &[Status::Exhausted]).unwrap(),
            1
        );
        assert_eq!(
            store
                .requeue(Scope::Ledger, &[Status::Failed, Status::BadResponse])
                .unwrap(),
            2
        );
        assert_eq!(pending(&store), 5);
    }

    #[test]
    fn overview_groups_failures_by_code() {
        let (_dir, mut store) = temp_store();
        let (run, _) = load(
            &mut store,
            "a.csv",
            &[valid(2, "A"), valid(3, "B"), valid(4, "C"), valid(5, "D")],
        );
        for r in ["A", "B", "C"] {
            answer(&store, r, Status::Failed, run);
        }
        store
            .conn
            .execute_batch(
                "UPDATE items SET code = 'DOCUMENT_NOT_FOUND' WHERE document_reference IN ('A', 'B');
                 UPDATE items SET code = 'INVALID_AGENT' WHERE document_reference = 'C';
                 UPDATE items SET in_flight = 1 WHERE document_reference = 'D';",
            )
            .unwrap();
        let o = store.overview().unwrap();
        assert_eq!(o.in_flight, 1);
        assert_eq!(o.counts.get(Status::Failed), 3);
        assert_eq!(o.failures[0].code.as_deref(), Some("DOCUMENT_NOT_FOUND"));
        assert_eq!(o.failures[0].rows, 2);
        assert_eq!(o.failures[1].rows, 1);
    }
}
