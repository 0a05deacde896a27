//! Loading an input into the ledger: the run is recorded and every row
//! classified ([`crate::ledger::classify`]) and applied in one transaction,
//! so a refused or half-read input leaves the state file as it was.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use anyhow::Result;
use rusqlite::{CachedStatement, OptionalExtension, params};

use super::{RunId, Store, now_rfc3339, sqlite_error};
use crate::input::{Reject, Row, ValidRow};
use crate::ledger::{self, Known, LoadClass, LoadCounts, Status};

/// A row worth telling the user about: it names a document the ledger (or
/// an earlier row) holds with other fields, or corrects a refused one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub line: u64,
    pub document_reference: String,
    pub class: LoadClass,
}

/// Loads an input's rows into the state, chunk by chunk, in the
/// transaction [`Store::loader`] opened.
pub struct Loader<'s> {
    store: &'s mut Store,
    run: RunId,
    source: String,
    force: bool,
    /// With `--force`: documents answered by a run before this one are
    /// queued again.
    force_since: Option<RunId>,
    counts: LoadCounts,
    /// Documents whose first row in this input was not applied (other
    /// fields than the ledger's): a hash of that row's body, which later
    /// rows of the input are compared with.
    first_rows: HashMap<i64, u64>,
    /// The ledger held rejects of other inputs when the load began: only
    /// then can a valid row supersede one (a statement per row otherwise
    /// spent finding nothing).
    earlier_rejects: bool,
    /// The load's transaction is open (rolled back if dropped so).
    open: bool,
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.store.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Store {
    /// Records a `run` of the input `source` and starts loading it, in one
    /// transaction: the run and its whole input are in the state after
    /// [`Loader::finish`], or nothing of them is (an input that fails
    /// halfway, a crash while loading), so a refused input leaves the state
    /// file as it was, and an earlier run's rows are never half taken over.
    pub fn loader(&mut self, source: &str, config: &str, force: bool) -> Result<Loader<'_>> {
        let path = self.path.clone();
        let force_since = if force {
            Some(self.forced_sequence_start(source)?)
        } else {
            None
        };
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| sqlite_error(&path, e))?;
        let mut loader = Loader {
            store: self,
            run: 0,
            source: source.to_string(),
            force,
            force_since: None,
            counts: LoadCounts::default(),
            first_rows: HashMap::new(),
            earlier_rejects: false,
            open: true,
        };
        let conn = &loader.store.conn;
        let run = conn
            .execute(
                "INSERT INTO runs (command, input, config, started_at, force)
                 VALUES ('run', ?1, ?2, ?3, ?4)",
                params![source, config, now_rfc3339(), force],
            )
            .and_then(|_| {
                let run = conn.last_insert_rowid();
                conn.execute("UPDATE runs SET batch = id WHERE id = ?1", params![run])?;
                conn.execute(
                    "DELETE FROM items WHERE status = 'rejected' AND source = ?1",
                    params![source],
                )?;
                Ok(run)
            })
            .map_err(|e| sqlite_error(&path, e))?;
        loader.earlier_rejects = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM items WHERE status = 'rejected')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sqlite_error(&path, e))?;
        loader.run = run;
        loader.force_since = force_since.map(|since| since.unwrap_or(run));
        Ok(loader)
    }
}

/// The statements of a load, prepared once per chunk.
struct Statements<'c> {
    find: CachedStatement<'c>,
    insert: CachedStatement<'c>,
    see: CachedStatement<'c>,
    requeue: CachedStatement<'c>,
    drop_rejects: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c rusqlite::Connection) -> rusqlite::Result<Statements<'c>> {
        Ok(Statements {
            find: conn.prepare_cached(
                "SELECT id, status, seen_run, answered_run, payload, line FROM items
                 WHERE document_reference = ?1 AND agent_code = ?2 AND payload IS NOT NULL",
            )?,
            insert: conn.prepare_cached(
                "INSERT INTO items (source, line, document_reference, agent_code, payload, status,
                                    seen_run, message, details, updated_at, fields)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?,
            see: conn.prepare_cached(
                "UPDATE items SET seen_run = ?2, source = ?3, line = ?4 WHERE id = ?1",
            )?,
            requeue: conn.prepare_cached(
                "UPDATE items SET seen_run = ?2, source = ?3, line = ?4, payload = ?5,
                     status = 'pending', http_status = NULL, code = NULL, message = NULL,
                     details = NULL, updated_at = ?6
                 WHERE id = ?1",
            )?,
            // A valid row for a document supersedes its rejects from
            // earlier inputs (a corrected copy of failures.csv).
            drop_rejects: conn.prepare_cached(
                "DELETE FROM items WHERE status = 'rejected' AND document_reference = ?1
                     AND agent_code = ?2 AND seen_run != ?3",
            )?,
        })
    }
}

impl Loader<'_> {
    /// The run being recorded.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// Adds a chunk of validated rows to the load's transaction. Returns
    /// the rows worth a word to the user.
    pub fn add(&mut self, rows: &[Row]) -> Result<Vec<Notice>> {
        let path = self.store.path.clone();
        let now = now_rfc3339();
        let mut notices = Vec::new();
        let mut first_rows = std::mem::take(&mut self.first_rows);
        let mut st = Statements::prepare(&self.store.conn).map_err(|e| sqlite_error(&path, e))?;
        for row in rows {
            self.counts.rows += 1;
            match row {
                Row::Rejected(r) => {
                    self.counts.rejected += 1;
                    self.insert_reject(&mut st, r, &now)
                        .map_err(|e| sqlite_error(&path, e))?;
                }
                Row::Valid(v) => {
                    let class = self
                        .apply(&mut st, &mut first_rows, v, &now)
                        .map_err(|e| sqlite_error(&path, e))?;
                    self.counts.count(class);
                    if matches!(
                        class,
                        LoadClass::DuplicateDiffers { .. }
                            | LoadClass::KnownDiffers(_)
                            | LoadClass::Corrected
                    ) {
                        notices.push(Notice {
                            line: v.line,
                            document_reference: v.document_reference.clone(),
                            class,
                        });
                    }
                }
            }
        }
        drop(st);
        self.first_rows = first_rows;
        Ok(notices)
    }

    fn insert_reject(
        &self,
        st: &mut Statements<'_>,
        r: &Reject,
        now: &str,
    ) -> rusqlite::Result<()> {
        let fields = serde_json::to_string(&r.fields)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        st.insert.execute(params![
            self.source,
            r.line as i64,
            r.document_reference,
            r.fields.agent_code.as_deref().unwrap_or(""),
            Option::<String>::None,
            Status::Rejected.as_str(),
            self.run,
            r.message(),
            "",
            now,
            fields
        ])?;
        Ok(())
    }

    /// Classifies one valid row against the ledger and applies the class.
    fn apply(
        &self,
        st: &mut Statements<'_>,
        first_rows: &mut HashMap<i64, u64>,
        row: &ValidRow,
        now: &str,
    ) -> rusqlite::Result<LoadClass> {
        let existing = st
            .find
            .query_row(params![row.document_reference, row.agent_code], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        let known = existing
            .as_ref()
            .map(|(id, status, seen_run, answered_run, payload, line)| {
                let seen_at_line = (*seen_run == self.run).then_some(*line as u64);
                // A later row of the input is compared with the input's
                // first row for the document, applied or not.
                let same_fields = match first_rows.get(id) {
                    Some(first) if seen_at_line.is_some() => *first == hash_of(&row.payload),
                    _ => *payload == row.payload,
                };
                Known {
                    status: Status::parse(status).unwrap_or(Status::Pending),
                    same_fields,
                    seen_at_line,
                    answered_before_force: self
                        .force_since
                        .is_some_and(|since| answered_run.is_none_or(|a| a < since)),
                }
            });
        let class = ledger::classify(known, self.force);
        if let (Some((id, ..)), LoadClass::KnownDiffers(_)) = (&existing, class) {
            first_rows.insert(*id, hash_of(&row.payload));
        }
        let line = row.line as i64;
        match (existing, class) {
            (None, _) => {
                st.insert.execute(params![
                    self.source,
                    line,
                    row.document_reference,
                    row.agent_code,
                    row.payload,
                    Status::Pending.as_str(),
                    self.run,
                    Option::<String>::None,
                    Option::<String>::None,
                    now,
                    Option::<String>::None
                ])?;
            }
            (Some(_), LoadClass::Duplicate | LoadClass::DuplicateDiffers { .. }) => {}
            (Some((id, ..)), class) if class.requeues() => {
                st.requeue
                    .execute(params![id, self.run, self.source, line, row.payload, now])?;
            }
            (Some((id, ..)), _) => {
                st.see.execute(params![id, self.run, self.source, line])?;
            }
        }
        if self.earlier_rejects {
            st.drop_rejects
                .execute(params![row.document_reference, row.agent_code, self.run])?;
        }
        Ok(class)
    }

    pub fn counts(&self) -> &LoadCounts {
        &self.counts
    }

    /// Commits the whole input and marks the run's batch as loaded: from
    /// now on it is the batch `resume`, `retry` and `export` report on.
    pub fn finish(mut self) -> Result<LoadCounts> {
        let path = self.store.path.clone();
        self.store
            .conn
            .execute(
                "UPDATE runs SET loaded_at = ?2 WHERE id = ?1",
                params![self.run, now_rfc3339()],
            )
            .and_then(|_| self.store.conn.execute_batch("COMMIT"))
            .map_err(|e| sqlite_error(&path, e))?;
        self.open = false;
        Ok(std::mem::take(&mut self.counts))
    }
}

fn hash_of(payload: &str) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// Text for a notice, for the log and `validate`.
pub fn describe(notice: &Notice) -> String {
    match notice.class {
        LoadClass::DuplicateDiffers { first_line } => format!(
            "{} names the document of line {first_line} with other fields; \
             only line {first_line} counts",
            notice.document_reference
        ),
        LoadClass::KnownDiffers(Status::Pending) => format!(
            "{} is pending in the state file with other fields; it is sent with those \
             (--force sends this row's fields)",
            notice.document_reference
        ),
        LoadClass::KnownDiffers(status) => format!(
            "{} is already {status} in the state file with other fields; \
             not sent again (--force sends this row's fields)",
            notice.document_reference
        ),
        LoadClass::Corrected => format!(
            "{} was refused before; this row changes its fields, so it is sent again",
            notice.document_reference
        ),
        _ => notice.document_reference.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::super::test_support::{
        answer, load, load_forced, rejected, temp_store, valid, valid_with,
    };
    use super::*;
    use crate::ledger::RunOutcome;

    fn pending(store: &Store) -> Vec<String> {
        store
            .pending_page(0, 100)
            .unwrap()
            .into_iter()
            .map(|p| p.payload)
            .collect()
    }

    #[test]
    fn loading_classifies_new_duplicate_and_known_rows() {
        let (_dir, mut store) = temp_store();
        let (_, c) = load(
            &mut store,
            "a.csv",
            &[valid(2, "A"), valid(3, "B"), valid(4, "A"), rejected(5, "")],
        );
        assert_eq!((c.rows, c.new, c.duplicates, c.rejected), (4, 2, 1, 1));

        // A second run over the same rows: nothing new, both still pending.
        let (run2, c) = load(
            &mut store,
            "a.csv",
            &[valid(2, "A"), valid(3, "B"), rejected(5, "")],
        );
        assert_eq!((c.new, c.continued, c.rejected), (0, 2, 1));
        let counts = store.status_counts(Scope::Batch(run2)).unwrap();
        assert_eq!(counts.get(Status::Pending), 2);
        // The reject of line 5 was replaced, not duplicated.
        assert_eq!(counts.get(Status::Rejected), 1);
        assert_eq!(
            store
                .status_counts(Scope::Ledger)
                .unwrap()
                .get(Status::Rejected),
            1
        );
    }

    #[test]
    fn a_load_that_does_not_finish_leaves_the_state_as_it_was() {
        let (_dir, mut store) = temp_store();
        let (run1, _) = load(&mut store, "a.csv", &[valid(2, "A"), valid(3, "B")]);
        // A second input takes A over, then fails before finishing.
        let mut loader = store.loader("b.csv", "{}", false).unwrap();
        loader.add(&[valid(2, "A"), valid(3, "C")]).unwrap();
        drop(loader);
        // Nothing of it stayed: A and B are still the first run's, and the
        // first run is still the one later commands continue.
        assert_eq!(
            store
                .status_counts(Scope::Batch(run1))
                .unwrap()
                .get(Status::Pending),
            2
        );
        assert_eq!(
            store
                .status_counts(Scope::Ledger)
                .unwrap()
                .get(Status::Pending),
            2
        );
        assert_eq!(store.latest_batch().unwrap().unwrap().id, run1);
    }

    #[test]
    fn a_document_is_its_reference_and_agent_code_whatever_its_other_fields() {
        let (_dir, mut store) = temp_store();
        let (run1, _) = load(
            &mut store,
            "a.csv",
            &[
                valid(2, "A"),
                valid(3, "B"),
                valid(4, "C"),
                valid_with(5, "D", r#""agentCode":"CCGM""#),
            ],
        );
        answer(&store, "A", Status::Tracked, run1);
        answer(&store, "B", Status::Failed, run1);
        answer(&store, "C", Status::BadResponse, run1);
        // Later rows for the same documents with another way; A also from
        // another agent; one reference twice with two places.
        let mut loader = store.loader("b.csv", "{}", false).unwrap();
        let notices = loader
            .add(&[
                valid_with(2, "A", r#""way":"Import""#),
                valid_with(3, "B", r#""way":"Import""#),
                valid_with(4, "C", r#""way":"Import""#),
                valid_with(5, "A", r#""agentCode":"MSCU""#),
                valid_with(6, "E", r#""place":"ONE""#),
                valid_with(7, "E", r#""place":"TWO""#),
                valid_with(8, "D", r#""agentCode":"CCGM""#),
            ])
            .unwrap();
        let c = loader.finish().unwrap();
        let classes: Vec<(u64, LoadClass)> = notices.iter().map(|n| (n.line, n.class)).collect();
        assert_eq!(
            classes,
            [
                (2, LoadClass::KnownDiffers(Status::Tracked)),
                (3, LoadClass::Corrected),
                (4, LoadClass::KnownDiffers(Status::BadResponse)),
                (7, LoadClass::DuplicateDiffers { first_line: 6 }),
            ]
        );
        assert_eq!(
            (c.new, c.fields_differ, c.corrected, c.continued),
            (2, 3, 1, 1)
        );
        // Sent: B with its new way, A of MSCU, E with the first place, and
        // D (still pending from the first run).
        assert_eq!(
            pending(&store),
            [
                r#"{"documentReference":"B","way":"Import"}"#,
                r#"{"documentReference":"D","agentCode":"CCGM"}"#,
                r#"{"documentReference":"A","agentCode":"MSCU"}"#,
                r#"{"documentReference":"E","place":"ONE"}"#,
            ]
        );
        let documents: i64 = store
            .conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(documents, 6, "A, A of MSCU, B, C, D of CCGM, E");
        // --force sends the tracked one again with the new fields.
        let (_, c) = load_forced(
            &mut store,
            "b.csv",
            &[valid_with(2, "A", r#""way":"Import""#)],
            true,
        );
        assert_eq!(c.forced, 1);
        assert!(
            pending(&store).contains(&r#"{"documentReference":"A","way":"Import"}"#.to_string())
        );
    }

    #[test]
    fn later_rows_of_an_input_are_compared_with_its_first_row() {
        let (_dir, mut store) = temp_store();
        let (run1, _) = load(&mut store, "a.csv", &[valid(2, "A")]);
        answer(&store, "A", Status::Tracked, run1);
        // Twice the same other fields: one "fields differ", one duplicate
        // (as validate counts them); then a third set of fields.
        let export = valid_with(2, "A", r#""way":"Export""#);
        let (_, c) = load(
            &mut store,
            "b.csv",
            &[
                export.clone(),
                valid_with(3, "A", r#""way":"Export""#),
                valid_with(4, "A", r#""way":"Transit""#),
            ],
        );
        assert_eq!((c.fields_differ, c.duplicates), (2, 1));
    }

    #[test]
    fn a_valid_row_supersedes_the_documents_earlier_rejects() {
        let (_dir, mut store) = temp_store();
        load(&mut store, "a.csv", &[rejected(2, "A"), rejected(3, "B")]);
        // The corrected copy, another file: A's reject goes, B's stays.
        let (run, c) = load(&mut store, "fixed.csv", &[valid(2, "A"), rejected(3, "A")]);
        assert_eq!((c.new, c.rejected), (1, 1));
        let all = store.status_counts(Scope::Ledger).unwrap();
        assert_eq!(
            (all.get(Status::Pending), all.get(Status::Rejected)),
            (1, 2)
        );
        // A reject of this very input is kept (line 3 of fixed.csv).
        assert_eq!(
            store
                .status_counts(Scope::Batch(run))
                .unwrap()
                .get(Status::Rejected),
            1
        );
    }

    #[test]
    fn tracked_rows_are_skipped_unless_forced() {
        let (_dir, mut store) = temp_store();
        let (run1, _) = load(&mut store, "a.csv", &[valid(2, "A")]);
        answer(&store, "A", Status::Tracked, run1);
        let (_, c) = load(&mut store, "a.csv", &[valid(2, "A")]);
        assert_eq!(c.already_tracked, 1);
        assert!(pending(&store).is_empty());
        let (_, c) = load_forced(&mut store, "a.csv", &[valid(2, "A")], true);
        assert_eq!(c.forced, 1);
        assert_eq!(pending(&store).len(), 1);
    }

    #[test]
    fn a_forced_run_that_stopped_is_continued_not_restarted() {
        let (_dir, mut store) = temp_store();
        let rows = [valid(2, "A")];
        let (r1, _) = load(&mut store, "a.csv", &rows);
        answer(&store, "A", Status::Tracked, r1);
        store.end_run(r1, RunOutcome::Completed, "{}").unwrap();
        // A forced run re-queues A, answers it, then dies (no outcome).
        let (r2, c) = load_forced(&mut store, "a.csv", &rows, true);
        assert_eq!(c.forced, 1);
        answer(&store, "A", Status::Tracked, r2);
        // Run again with --force: A was answered by the unfinished forced
        // run, so it is not sent a third time.
        let (r3, c) = load_forced(&mut store, "a.csv", &rows, true);
        assert_eq!((c.forced, c.already_tracked), (0, 1));
        store.end_run(r3, RunOutcome::Completed, "{}").unwrap();
        // Once a forced run has finished, the next --force starts over.
        let (_, c) = load_forced(&mut store, "a.csv", &rows, true);
        assert_eq!(c.forced, 1);
    }

    #[test]
    fn a_resume_between_two_forced_runs_carries_the_sequence_on() {
        let (_dir, mut store) = temp_store();
        let rows = [valid(2, "A"), valid(3, "B")];
        let (r1, _) = load(&mut store, "a.csv", &rows);
        answer(&store, "A", Status::Tracked, r1);
        answer(&store, "B", Status::Tracked, r1);
        store.end_run(r1, RunOutcome::Completed, "{}").unwrap();
        // A forced run sends A again and stops; a resume of it sends B
        // again and stops too.
        let (r2, _) = load_forced(&mut store, "a.csv", &rows, true);
        answer(&store, "A", Status::Tracked, r2);
        store.end_run(r2, RunOutcome::Interrupted, "{}").unwrap();
        let batch = store.batch(r2).unwrap().unwrap();
        let resume = store
            .begin_continuation(crate::ledger::Command::Resume, &batch, "{}")
            .unwrap();
        answer(&store, "B", Status::Tracked, resume);
        store
            .end_run(resume, RunOutcome::Interrupted, "{}")
            .unwrap();
        // The next --force run continues the sequence: neither is sent a
        // third time.
        let (_, c) = load_forced(&mut store, "a.csv", &rows, true);
        assert_eq!((c.forced, c.already_tracked), (0, 2));
    }
}
