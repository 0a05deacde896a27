//! What is read from the ledger: the pending documents for the feeder,
//! counts by status, and the rows of the result files, for a [`Scope`].

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::{Store, not_a_state_file, sqlite_error};
use crate::input::OptionalFields;
use crate::ledger::{RunId, Status};

/// Which rows a report, a count or a requeue covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every row of the ledger.
    Ledger,
    /// The rows of a run's input (the latest input that named them), and
    /// those answered by an invocation that continued that run.
    Batch(RunId),
    /// [`Scope::Batch`] plus everything the ledger still owes (pending or
    /// exhausted), whichever input it came from: what a run's result
    /// files, summary and exit status describe.
    Report(RunId),
}

impl Scope {
    /// A condition on `items` whose one parameter, `?1`, is
    /// [`Scope::param`].
    pub(super) fn filter(self) -> &'static str {
        match self {
            Scope::Ledger => "(?1 IS NULL)",
            Scope::Batch(_) => {
                "(seen_run = ?1 OR answered_run IN (SELECT id FROM runs WHERE batch = ?1))"
            }
            Scope::Report(_) => {
                "(seen_run = ?1 OR status IN ('pending', 'exhausted')
                  OR answered_run IN (SELECT id FROM runs WHERE batch = ?1))"
            }
        }
    }

    pub(super) fn param(self) -> Option<RunId> {
        match self {
            Scope::Ledger => None,
            Scope::Batch(run) | Scope::Report(run) => Some(run),
        }
    }
}

/// A pending document handed to the dispatcher.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub id: i64,
    pub line: u64,
    pub payload: String,
    /// It was in flight when an earlier process died: sending it again is a
    /// re-send after interruption.
    pub was_in_flight: bool,
}

/// One handling unit of a tracked document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unit {
    pub spi: Option<String>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TrackedRow {
    pub document_reference: String,
    /// '' when the document has none.
    pub agent_code: String,
    pub tracking_id: String,
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone)]
pub struct FailureRow {
    pub line: u64,
    pub document_reference: String,
    pub status: Status,
    pub http_status: Option<u16>,
    pub code: String,
    pub message: String,
    pub details: String,
    pub attempts: u32,
    /// way, place, agentCode and url as sent (or, for a reject, as read).
    pub fields: OptionalFields,
    /// The input it came from (the latest that named it).
    pub input: String,
}

/// Rows per status, plus handling units found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub by_status: HashMap<Status, u64>,
    pub units: u64,
}

impl StatusCounts {
    pub fn get(&self, status: Status) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn failures(&self) -> u64 {
        Status::ALL
            .iter()
            .filter(|s| s.is_failure())
            .map(|s| self.get(*s))
            .sum()
    }

    /// Every row counted.
    pub fn total(&self) -> u64 {
        Status::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// What the ledger knows of one row naming a document (`trackmass show`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DocumentView {
    pub document_reference: String,
    /// '' when the document has none.
    pub agent_code: String,
    pub status: Status,
    pub tracking_id: Option<String>,
    pub units: Vec<Unit>,
    /// Requests sent for it.
    pub attempts: u64,
    pub http_status: Option<u16>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// When its last answer (or refusal) was recorded.
    pub updated_at: Option<String>,
    /// The input and line that last named it.
    pub input: String,
    pub line: u64,
}

impl Store {
    /// Every row of the ledger naming `reference` (one per agent code, and
    /// the rows refused before sending), oldest first.
    pub fn documents(&self, reference: &str) -> Result<Vec<DocumentView>> {
        let mut stmt = self
            .conn
            .prepare(
                // Through the two partial indexes on the reference.
                "SELECT document_reference, agent_code, status, tracking_id, units, attempts,
                        http_status, code, message, updated_at, source, line
                 FROM items WHERE id IN (
                     SELECT id FROM items WHERE document_reference = ?1 AND payload IS NOT NULL
                     UNION
                     SELECT id FROM items WHERE document_reference = ?1 AND status = 'rejected')
                 ORDER BY id",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut rows = stmt
            .query(params![reference])
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| sqlite_error(&self.path, e))? {
            let opt = |i: usize| -> Result<Option<String>> {
                row.get::<_, Option<String>>(i)
                    .map_err(|e| sqlite_error(&self.path, e))
            };
            let units = self.units(&opt(4)?.unwrap_or_default())?;
            let int = |i: usize| -> Result<Option<i64>> {
                row.get::<_, Option<i64>>(i)
                    .map_err(|e| sqlite_error(&self.path, e))
            };
            out.push(DocumentView {
                document_reference: self.text(row, 0)?,
                agent_code: self.text(row, 1)?,
                status: self.status_of(&self.text(row, 2)?)?,
                tracking_id: opt(3)?,
                units,
                attempts: int(5)?.unwrap_or(0).max(0) as u64,
                http_status: int(6)?.and_then(|h| u16::try_from(h).ok()),
                code: opt(7)?,
                message: opt(8)?,
                updated_at: opt(9)?,
                input: self.text(row, 10)?,
                line: int(11)?.unwrap_or(0).max(0) as u64,
            });
        }
        Ok(out)
    }

    pub(super) fn status_of(&self, status: &str) -> Result<Status> {
        Status::parse(status)
            .ok_or_else(|| not_a_state_file(&self.path, format!("unknown status {status:?}")))
    }

    /// Rows left in flight by a process that died (the caller holds the
    /// lock, so no live process is sending them): back to pending, flagged
    /// so that their re-send is counted.
    pub fn recover_in_flight(&mut self) -> Result<u64> {
        let n = self
            .conn
            .execute(
                "UPDATE items SET in_flight = 0, was_in_flight = 1 WHERE in_flight = 1",
                [],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(n as u64)
    }

    /// Pending documents of the whole ledger with an id above `after`, in
    /// id order.
    pub fn pending_page(&self, after: i64, limit: usize) -> Result<Vec<PendingItem>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, line, payload, was_in_flight FROM items
                 WHERE status = 'pending' AND id > ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(PendingItem {
                    id: r.get(0)?,
                    line: r.get::<_, i64>(1)? as u64,
                    payload: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    was_in_flight: r.get::<_, i64>(3)? != 0,
                })
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Pending documents not named by `run`'s input: work an earlier run
    /// left, which this one includes.
    pub fn pending_outside(&self, run: RunId) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM items WHERE status = 'pending' AND seen_run != ?1",
                params![run],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Failed documents (not rejected rows) a report on `run` lists that
    /// came from other inputs: owed from earlier runs, or answered by a
    /// continuation of this one.
    pub fn failures_from_other_inputs(&self, run: RunId) -> Result<u64> {
        self.conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM items
                     WHERE status IN ('failed', 'exhausted', 'bad_response')
                       AND seen_run != ?1 AND {}",
                    Scope::Report(run).filter()
                ),
                params![run],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Count of rows per status in `scope`.
    pub fn status_counts(&self, scope: Scope) -> Result<StatusCounts> {
        let mut counts = StatusCounts::default();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT status, count(*), coalesce(sum(unit_count), 0) FROM items
                 WHERE {} GROUP BY status",
                scope.filter()
            ))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![scope.param()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        for row in rows {
            let (status, n, units) = row.map_err(|e| sqlite_error(&self.path, e))?;
            let status = self.status_of(&status)?;
            counts.by_status.insert(status, n as u64);
            if status == Status::Tracked {
                counts.units = units as u64;
            }
        }
        Ok(counts)
    }

    /// What the ledger holds for a document: its status and the request
    /// body recorded for it.
    pub fn document(&self, reference: &str, agent_code: &str) -> Result<Option<(Status, String)>> {
        let found: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT status, payload FROM items
                 WHERE document_reference = ?1 AND agent_code = ?2 AND payload IS NOT NULL",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![reference, agent_code], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        found
            .map(|(status, payload)| Ok((self.status_of(&status)?, payload)))
            .transpose()
    }

    /// Runs `sql` (whose `{scope}` is replaced by the scope's filter) and
    /// calls `f` with each row.
    fn each_row(
        &self,
        sql: &str,
        scope: Scope,
        mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(&sql.replace("{scope}", scope.filter()))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut rows = stmt
            .query(params![scope.param()])
            .map_err(|e| sqlite_error(&self.path, e))?;
        while let Some(row) = rows.next().map_err(|e| sqlite_error(&self.path, e))? {
            f(row)?;
        }
        Ok(())
    }

    /// The `units` column's JSON ('' for none).
    fn units(&self, text: &str) -> Result<Vec<Unit>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(text)
            .map_err(|e| not_a_state_file(&self.path, format!("bad units column: {e}")))
    }

    /// Column `i` of `row`, as text ('' for NULL).
    fn text(&self, row: &rusqlite::Row<'_>, i: usize) -> Result<String> {
        Ok(row
            .get::<_, Option<String>>(i)
            .map_err(|e| sqlite_error(&self.path, e))?
            .unwrap_or_default())
    }

    /// Calls `f` with every tracked document in `scope`, in input order.
    pub fn for_each_tracked(
        &self,
        scope: Scope,
        mut f: impl FnMut(TrackedRow) -> Result<()>,
    ) -> Result<()> {
        self.each_row(
            "SELECT document_reference, agent_code, tracking_id, units FROM items
             WHERE status = 'tracked' AND {scope}
             ORDER BY seen_run, line, id",
            scope,
            |row| {
                let units = self.units(&self.text(row, 3)?)?;
                f(TrackedRow {
                    document_reference: self.text(row, 0)?,
                    agent_code: self.text(row, 1)?,
                    tracking_id: self.text(row, 2)?,
                    units,
                })
            },
        )
    }

    /// Calls `f` with every failed or rejected row in `scope`, by line.
    pub fn for_each_failure(
        &self,
        scope: Scope,
        mut f: impl FnMut(FailureRow) -> Result<()>,
    ) -> Result<()> {
        self.each_row(
            "SELECT line, document_reference, status, http_status, code, message, details,
                    attempts, coalesce(fields, payload), source
             FROM items
             WHERE status IN ('rejected', 'failed', 'exhausted', 'bad_response') AND {scope}
             ORDER BY seen_run, line, id",
            scope,
            |row| {
                let number = |i: usize| -> Result<i64> {
                    row.get::<_, i64>(i)
                        .map_err(|e| sqlite_error(&self.path, e))
                };
                f(FailureRow {
                    line: number(0)? as u64,
                    document_reference: self.text(row, 1)?,
                    status: self.status_of(&self.text(row, 2)?)?,
                    http_status: row.get(3).map_err(|e| sqlite_error(&self.path, e))?,
                    code: self.text(row, 4)?,
                    message: self.text(row, 5)?,
                    details: self.text(row, 6)?,
                    attempts: u32::try_from(number(7)?).unwrap_or(u32::MAX),
                    fields: serde_json::from_str(&self.text(row, 8)?).unwrap_or_default(),
                    input: self.text(row, 9)?,
                })
            },
        )
    }
}
