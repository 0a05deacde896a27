//! The `runs` table (what was invoked, when, how it ended) and the
//! questions asked of the state as a whole: `status`, `resume`, `retry`.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{RunId, Status, StatusCounts, Store, not_a_state_file, now_rfc3339, sqlite_error};

/// One invocation, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub command: String,
    /// The input file (absolute path when known); none for commands that
    /// read no input.
    pub input: Option<String>,
    /// The run whose rows it worked on.
    pub batch: Option<RunId>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// completed, completed_with_failures, fatal, interrupted, error; none
    /// while running or when the process died.
    pub outcome: Option<String>,
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

fn run_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let summary: Option<String> = r.get(7)?;
    Ok(RunRecord {
        id: r.get(0)?,
        command: r.get(1)?,
        input: r.get(2)?,
        batch: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        outcome: r.get(6)?,
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        config: r.get(8)?,
    })
}

impl Store {
    /// Records the start of an invocation that continues `batch`.
    pub fn begin_continuation(
        &mut self,
        command: &str,
        batch: &RunRecord,
        config: &str,
    ) -> Result<RunId> {
        self.conn
            .execute(
                "INSERT INTO runs (command, input, config, started_at, batch, loaded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
                params![command, batch.input, config, now_rfc3339(), batch.id],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how an invocation ended.
    pub fn end_run(&mut self, run: RunId, outcome: &str, summary: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET ended_at = ?2, outcome = ?3, summary = ?4 WHERE id = ?1",
                params![run, now_rfc3339(), outcome, summary],
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

    /// Puts the failed rows of `batch` in these statuses back to pending.
    /// Returns how many.
    pub fn requeue(&mut self, batch: RunId, statuses: &[Status]) -> Result<u64> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare(
                    "UPDATE items SET status = 'pending', http_status = NULL, code = NULL,
                         message = NULL, details = NULL, updated_at = ?3
                     WHERE seen_run = ?1 AND status = ?2 AND payload IS NOT NULL",
                )
                .map_err(|e| sqlite_error(&self.path, e))?;
            let now = now_rfc3339();
            for status in statuses {
                n += stmt
                    .execute(params![batch, status.as_str(), now])
                    .map_err(|e| sqlite_error(&self.path, e))? as u64;
            }
        }
        tx.commit().map_err(|e| sqlite_error(&self.path, e))?;
        Ok(n)
    }

    /// The status of the row that sends exactly this body, if the state
    /// holds one.
    pub fn status_of_payload(&self, payload: &str) -> Result<Option<Status>> {
        let status: Option<String> = self
            .conn
            .prepare_cached("SELECT status FROM items WHERE payload = ?1")
            .and_then(|mut stmt| stmt.query_row(params![payload], |r| r.get(0)).optional())
            .map_err(|e| sqlite_error(&self.path, e))?;
        status
            .map(|s| {
                Status::parse(&s)
                    .ok_or_else(|| not_a_state_file(&self.path, format!("unknown status {s:?}")))
            })
            .transpose()
    }

    /// Counts over the whole state file.
    pub fn overview(&self) -> Result<Overview> {
        let counts = self.status_counts(None)?;
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
        let mut stmt = self
            .conn
            .prepare(
                "SELECT status, http_status, code, count(*) FROM items
                 WHERE status IN ('failed', 'exhausted', 'bad_response')
                 GROUP BY status, http_status, code ORDER BY count(*) DESC, status, code",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
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
            let status = Status::parse(&status).ok_or_else(|| {
                not_a_state_file(&self.path, format!("unknown status {status:?}"))
            })?;
            failures.push(FailureGroup {
                status,
                http_status,
                code: code.filter(|c| !c.is_empty()),
                rows: n as u64,
            });
        }
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
    use super::*;
    use crate::input::{Row, ValidRow};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    fn load(store: &mut Store, refs: &[&str]) -> RunId {
        let rows: Vec<Row> = refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Row::Valid(ValidRow {
                    line: i as u64 + 2,
                    document_reference: r.to_string(),
                    payload: format!(r#"{{"documentReference":"{r}"}}"#),
                })
            })
            .collect();
        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        let run = loader.run();
        loader.add(&rows).unwrap();
        loader.finish().unwrap();
        run
    }

    fn set_status(store: &Store, reference: &str, status: &str, code: Option<&str>) {
        store
            .conn
            .execute(
                "UPDATE items SET status = ?2, code = ?3, http_status = 400 WHERE document_reference = ?1",
                params![reference, status, code],
            )
            .unwrap();
    }

    #[test]
    fn continuations_share_the_batch_of_the_run_they_continue() {
        let (_dir, mut store) = store();
        assert!(store.latest_batch().unwrap().is_none());
        let first = load(&mut store, &["A"]);
        let second = load(&mut store, &["B"]);
        let batch = store.latest_batch().unwrap().unwrap();
        assert_eq!(batch.id, second);
        let resume = store.begin_continuation("resume", &batch, "{}").unwrap();
        assert!(resume > second);
        assert_eq!(store.latest_batch().unwrap().unwrap().id, second);
        let runs = store.runs().unwrap();
        let batches: Vec<_> = runs.iter().map(|r| r.batch).collect();
        assert_eq!(batches, [Some(first), Some(second), Some(second)]);
    }

    #[test]
    fn requeue_touches_only_the_chosen_statuses_of_the_batch() {
        let (_dir, mut store) = store();
        let old = load(&mut store, &["OLD"]);
        set_status(&store, "OLD", "exhausted", None);
        let run = load(&mut store, &["A", "B", "C", "D"]);
        assert_ne!(old, run);
        set_status(&store, "A", "exhausted", None);
        set_status(&store, "B", "failed", Some("DOCUMENT_NOT_FOUND"));
        set_status(&store, "C", "bad_response", None);
        assert_eq!(store.requeue(run, &[Status::Exhausted]).unwrap(), 1);
        let counts = store.status_counts(Some(run)).unwrap();
        assert_eq!(counts.get(Status::Pending), 2, "A again, and D");
        assert_eq!(counts.get(Status::Failed), 1);
        // The row of the older batch is not this batch's failure.
        assert_eq!(
            store
                .status_counts(Some(old))
                .unwrap()
                .get(Status::Exhausted),
            1
        );
        assert_eq!(
            store
                .requeue(run, &[Status::Failed, Status::BadResponse])
                .unwrap(),
            2
        );
        assert_eq!(
            store.status_counts(Some(run)).unwrap().get(Status::Pending),
            4
        );
    }

    #[test]
    fn overview_groups_failures_by_code() {
        let (_dir, mut store) = store();
        load(&mut store, &["A", "B", "C", "D"]);
        set_status(&store, "A", "failed", Some("DOCUMENT_NOT_FOUND"));
        set_status(&store, "B", "failed", Some("DOCUMENT_NOT_FOUND"));
        set_status(&store, "C", "failed", Some("INVALID_AGENT"));
        store
            .conn
            .execute(
                "UPDATE items SET in_flight = 1 WHERE document_reference = 'D'",
                [],
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
