//! The state file: a SQLite database that is the single source of truth.
//!
//! It holds one row per distinct request (`items`, keyed by the exact JSON
//! body) plus the rows refused locally, and one row per invocation (`runs`).
//! The input is loaded here before anything is sent, outcomes are written
//! back by one writer thread in grouped transactions, and every result file
//! is regenerated from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::input::{OptionalFields, Reject, Row, ValidRow};

mod history;

pub use history::{FailureGroup, Overview, RunRecord};

/// Version of the schema this build writes. A file with a higher
/// `user_version` was written by a newer trackmass and is refused.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    input       TEXT,
    config      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    outcome     TEXT,
    summary     TEXT,
    -- The run whose input rows this invocation works on (items.seen_run):
    -- its own id for `run`, the continued run's for `resume` and `retry`.
    batch       INTEGER,
    -- When its input was wholly loaded (a `run` whose loading failed never
    -- becomes the batch that later commands continue).
    loaded_at   TEXT
);
CREATE TABLE items (
    id                 INTEGER PRIMARY KEY,
    source             TEXT NOT NULL,
    line               INTEGER NOT NULL,
    document_reference TEXT NOT NULL,
    payload            TEXT,
    status             TEXT NOT NULL,
    seen_run           INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    in_flight          INTEGER NOT NULL DEFAULT 0,
    was_in_flight      INTEGER NOT NULL DEFAULT 0,
    http_status        INTEGER,
    code               TEXT,
    message            TEXT,
    details            TEXT,
    tracking_id        TEXT,
    units              TEXT,
    unit_count         INTEGER,
    answered_run       INTEGER,
    updated_at         TEXT,
    -- A rejected row's way, place, agentCode and url as read (JSON): it has
    -- no payload, and failures.csv gives them back for correction.
    fields             TEXT
);
CREATE UNIQUE INDEX items_payload ON items(payload) WHERE payload IS NOT NULL;
CREATE INDEX items_pending ON items(seen_run, id) WHERE status = 'pending';
CREATE INDEX items_run_line ON items(seen_run, line);
CREATE INDEX items_rejected ON items(source) WHERE status = 'rejected';
";

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Valid, not yet answered.
    Pending,
    /// The API created a tracking for it.
    Tracked,
    /// Refused locally by validation; never sent.
    Rejected,
    /// The API refused it (a 4xx about this row).
    Failed,
    /// Transient errors until the attempts ran out.
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
}

/// What loading one valid row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadClass {
    /// Never seen before: queued.
    New,
    /// Same payload as an earlier line of this input: not queued again.
    Duplicate,
    /// Already in the state from an earlier run, in this status.
    Known(Status),
    /// Already done in an earlier run and queued again because of `--force`.
    Forced,
}

/// Counts gathered while loading an input.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadCounts {
    /// Non-blank data rows read.
    pub rows: u64,
    pub rejected: u64,
    pub new: u64,
    pub duplicates: u64,
    pub already_tracked: u64,
    /// Failed in an earlier run; left as is (`--force` sends them again).
    pub already_failed: u64,
    /// Left pending by an earlier, interrupted run: continued now.
    pub continued: u64,
    pub forced: u64,
}

impl LoadCounts {
    fn count(&mut self, class: LoadClass) {
        match class {
            LoadClass::New => self.new += 1,
            LoadClass::Duplicate => self.duplicates += 1,
            LoadClass::Known(Status::Tracked) => self.already_tracked += 1,
            LoadClass::Known(Status::Pending) => self.continued += 1,
            LoadClass::Known(_) => self.already_failed += 1,
            LoadClass::Forced => self.forced += 1,
        }
    }
}

/// How the writer makes a commit durable.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit is on disk (fsync) before its outcomes count as done:
    /// nothing acknowledged is lost, even to a power cut.
    #[default]
    Full,
    /// Commits reach the OS at once and the disk at WAL checkpoints: a
    /// crash of trackmass loses nothing; a power cut or OS crash may lose
    /// the last answers, whose rows are then sent again.
    Normal,
}

/// Identifies an invocation in the `runs` table.
pub type RunId = i64;

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// An open state file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before an outcome counts as done. Grouped
    // commits keep the fsync count far below one per row.
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Creates the file readable by its owner only, before SQLite opens it:
/// the state file holds the references and answers of a customer.
fn create_private(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("{}: cannot create the state file", path.display()))
        }
    }
}

fn not_a_state_file(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "{}: not a trackmass state file ({why}); pass another --state path or move this file away",
        path.display()
    )
}

impl Store {
    /// Opens the state file, creating it with the current schema if needed.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            bail!(
                "{}: the directory {} does not exist",
                path.display(),
                dir.display()
            );
        }
        if path.is_dir() {
            bail!("{}: is a directory, not a state file", path.display());
        }
        create_private(path)?;
        let conn = Connection::open(path)
            .with_context(|| format!("{}: cannot open the state file", path.display()))?;
        Self::check_and_migrate(&conn, path)?;
        configure(&conn, Durability::Full).map_err(|e| sqlite_error(path, e))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing state file without writing to it.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !path.is_file() {
            bail!("{}: no such state file", path.display());
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("{}: cannot open the state file", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| sqlite_error(path, e))?;
        let version = Self::schema_version(&conn, path)?;
        if version != SCHEMA_VERSION {
            bail!(
                "{}: state file schema {version} is not the one this trackmass reads ({SCHEMA_VERSION}); \
                 {}",
                path.display(),
                if version < SCHEMA_VERSION {
                    "it was written by an older trackmass: `trackmass resume` (or `run`) upgrades it"
                } else {
                    "it was written by a newer trackmass: upgrade trackmass to read it"
                }
            );
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => {
                    not_a_state_file(path, "it is not a SQLite database")
                }
                _ => sqlite_error(path, e),
            })
    }

    fn check_and_migrate(conn: &Connection, path: &Path) -> Result<()> {
        let version = Self::schema_version(conn, path)?;
        if version > SCHEMA_VERSION {
            bail!(
                "{}: this state file was written by a newer trackmass (schema {version}, \
                 this build knows {SCHEMA_VERSION}); upgrade trackmass to use it",
                path.display()
            );
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version == 1 {
            conn.execute_batch(&format!(
                "BEGIN;
                 ALTER TABLE runs ADD COLUMN batch INTEGER;
                 ALTER TABLE runs ADD COLUMN loaded_at TEXT;
                 UPDATE runs SET batch = id, loaded_at = started_at WHERE command = 'run';
                 ALTER TABLE items ADD COLUMN fields TEXT;
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))
            .map_err(|e| sqlite_error(path, e))?;
            return Ok(());
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| sqlite_error(path, e))?;
        if tables > 0 {
            return Err(not_a_state_file(
                path,
                "it is a SQLite database with other tables",
            ));
        }
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| sqlite_error(path, e))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

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
            force_since: None,
            counts: LoadCounts::default(),
            open: true,
        };
        let conn = &loader.store.conn;
        conn.execute(
            "INSERT INTO runs (command, input, config, started_at) VALUES ('run', ?1, ?2, ?3)",
            params![source, config, now_rfc3339()],
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
        .map(|run| {
            loader.run = run;
            loader.force_since = force_since.map(|since| since.unwrap_or(run));
        })
        .map_err(|e| sqlite_error(&path, e))?;
        Ok(loader)
    }

    /// With `--force`, rows answered before this run are sent again. But if
    /// the runs just before this one on the same input were `--force` runs
    /// that did not finish, this run continues them: only rows answered
    /// before the first of them are sent again, not the ones they already
    /// re-sent. Returns that first run (`None`: the new run itself).
    fn forced_sequence_start(&self, source: &str) -> Result<Option<RunId>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, config, outcome FROM runs WHERE input = ?1 ORDER BY id DESC")
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![source], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut since = None;
        for row in rows {
            let (id, config, outcome) = row.map_err(|e| sqlite_error(&self.path, e))?;
            let forced = serde_json::from_str::<serde_json::Value>(&config)
                .ok()
                .and_then(|c| c.get("force").and_then(serde_json::Value::as_bool))
                .unwrap_or(false);
            let finished = matches!(
                outcome.as_deref(),
                Some("completed" | "completed_with_failures")
            );
            if !forced || finished {
                break;
            }
            since = Some(id);
        }
        Ok(since)
    }

    /// Rows of `run` left in flight by a process that died: they go back to
    /// pending and are flagged so that their re-send is counted.
    pub fn recover_in_flight(&mut self, run: RunId) -> Result<u64> {
        let n = self
            .conn
            .execute(
                "UPDATE items SET in_flight = 0, was_in_flight = 1
                 WHERE in_flight = 1 AND seen_run = ?1",
                params![run],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(n as u64)
    }

    /// Pending rows of `run` with an id above `after`, in id order.
    pub fn pending_page(&self, run: RunId, after: i64, limit: usize) -> Result<Vec<PendingItem>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, line, payload, was_in_flight FROM items
                 WHERE seen_run = ?1 AND status = 'pending' AND id > ?2
                 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![run, after, limit as i64], |r| {
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

    /// Count of rows per status among those of `run` (or all rows).
    pub fn status_counts(&self, run: Option<RunId>) -> Result<StatusCounts> {
        let mut counts = StatusCounts::default();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT status, count(*), coalesce(sum(unit_count), 0) FROM items
                 WHERE ?1 IS NULL OR seen_run = ?1 GROUP BY status",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![run], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| sqlite_error(&self.path, e))?;
        for row in rows {
            let (status, n, units) = row.map_err(|e| sqlite_error(&self.path, e))?;
            let status = Status::parse(&status).ok_or_else(|| {
                not_a_state_file(&self.path, format!("unknown status {status:?}"))
            })?;
            counts.by_status.insert(status, n as u64);
            if status == Status::Tracked {
                counts.units = units as u64;
            }
        }
        Ok(counts)
    }

    /// Calls `f` with every tracked row of `run` (or of the whole state), in
    /// input order.
    pub fn for_each_tracked(
        &self,
        run: Option<RunId>,
        mut f: impl FnMut(TrackedRow) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT document_reference, tracking_id, units FROM items
                 WHERE status = 'tracked' AND (?1 IS NULL OR seen_run = ?1)
                 ORDER BY seen_run, line, id",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut rows = stmt
            .query(params![run])
            .map_err(|e| sqlite_error(&self.path, e))?;
        while let Some(row) = rows.next().map_err(|e| sqlite_error(&self.path, e))? {
            let units: Option<String> = row.get(2).map_err(|e| sqlite_error(&self.path, e))?;
            let units: Vec<Unit> = match units {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| not_a_state_file(&self.path, format!("bad units column: {e}")))?,
                None => Vec::new(),
            };
            f(TrackedRow {
                document_reference: row.get(0).map_err(|e| sqlite_error(&self.path, e))?,
                tracking_id: row
                    .get::<_, Option<String>>(1)
                    .map_err(|e| sqlite_error(&self.path, e))?
                    .unwrap_or_default(),
                units,
            })?;
        }
        Ok(())
    }

    /// Calls `f` with every failed or rejected row of `run` (or of the whole
    /// state), by line.
    pub fn for_each_failure(
        &self,
        run: Option<RunId>,
        mut f: impl FnMut(FailureRow) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT line, document_reference, status, http_status, code, message, details, attempts,
                        coalesce(fields, payload)
                 FROM items
                 WHERE status IN ('rejected', 'failed', 'exhausted', 'bad_response')
                   AND (?1 IS NULL OR seen_run = ?1)
                 ORDER BY seen_run, line, id",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let mut rows = stmt
            .query(params![run])
            .map_err(|e| sqlite_error(&self.path, e))?;
        while let Some(row) = rows.next().map_err(|e| sqlite_error(&self.path, e))? {
            let get_text = |i: usize| -> Result<String> {
                Ok(row
                    .get::<_, Option<String>>(i)
                    .map_err(|e| sqlite_error(&self.path, e))?
                    .unwrap_or_default())
            };
            let status: String = get_text(2)?;
            f(FailureRow {
                line: row
                    .get::<_, i64>(0)
                    .map_err(|e| sqlite_error(&self.path, e))? as u64,
                document_reference: get_text(1)?,
                status: Status::parse(&status).ok_or_else(|| {
                    not_a_state_file(&self.path, format!("unknown status {status:?}"))
                })?,
                http_status: row.get(3).map_err(|e| sqlite_error(&self.path, e))?,
                code: get_text(4)?,
                message: get_text(5)?,
                details: get_text(6)?,
                attempts: row.get(7).map_err(|e| sqlite_error(&self.path, e))?,
                fields: {
                    let json: Option<String> =
                        row.get(8).map_err(|e| sqlite_error(&self.path, e))?;
                    json.and_then(|j| serde_json::from_str(&j).ok())
                        .unwrap_or_default()
                },
            })?;
        }
        Ok(())
    }
}

/// A pending row handed to the dispatcher.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub id: i64,
    pub line: u64,
    pub payload: String,
    /// It was in flight when an earlier process died: sending it again is a
    /// re-send after interruption.
    pub was_in_flight: bool,
}

/// One handling unit of a tracked row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unit {
    pub spi: Option<String>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TrackedRow {
    pub document_reference: String,
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
}

fn sqlite_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    anyhow!("{}: state file error: {e}", path.display())
}

/// Loads an input's rows into the state, a chunk per transaction.
pub struct Loader<'s> {
    store: &'s mut Store,
    run: RunId,
    source: String,
    /// With `--force`: rows answered by a run before this one are queued
    /// again.
    force_since: Option<RunId>,
    counts: LoadCounts,
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

impl Loader<'_> {
    /// The run being recorded.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// Adds a chunk of validated rows to the load's transaction.
    pub fn add(&mut self, rows: &[Row]) -> Result<()> {
        let path = self.store.path.clone();
        let tx = &self.store.conn;
        {
            let now = now_rfc3339();
            let mut find = tx
                .prepare_cached(
                    "SELECT id, status, seen_run, answered_run FROM items WHERE payload = ?1",
                )
                .map_err(|e| sqlite_error(&path, e))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO items (source, line, document_reference, payload, status, seen_run,
                                        message, details, updated_at, fields)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(|e| sqlite_error(&path, e))?;
            let mut see = tx
                .prepare_cached(
                    "UPDATE items SET seen_run = ?2, source = ?3, line = ?4,
                        status = CASE WHEN ?5 THEN 'pending' ELSE status END
                     WHERE id = ?1",
                )
                .map_err(|e| sqlite_error(&path, e))?;
            for row in rows {
                self.counts.rows += 1;
                match row {
                    Row::Rejected(r) => {
                        self.counts.rejected += 1;
                        let (message, details) = reject_text(r);
                        let fields = serde_json::to_string(&r.fields)
                            .map_err(|e| anyhow!("cannot serialize a row's fields: {e}"))?;
                        insert
                            .execute(params![
                                self.source,
                                r.line as i64,
                                r.document_reference,
                                Option::<String>::None,
                                Status::Rejected.as_str(),
                                self.run,
                                message,
                                details,
                                now,
                                fields
                            ])
                            .map_err(|e| sqlite_error(&path, e))?;
                    }
                    Row::Valid(v) => {
                        let class = Self::classify(
                            &mut find,
                            &mut insert,
                            &mut see,
                            v,
                            self.run,
                            &self.source,
                            self.force_since,
                            &now,
                        )
                        .map_err(|e| sqlite_error(&path, e))?;
                        self.counts.count(class);
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        find: &mut rusqlite::CachedStatement<'_>,
        insert: &mut rusqlite::CachedStatement<'_>,
        see: &mut rusqlite::CachedStatement<'_>,
        row: &ValidRow,
        run: RunId,
        source: &str,
        force_since: Option<RunId>,
        now: &str,
    ) -> rusqlite::Result<LoadClass> {
        let existing = find
            .query_row(params![row.payload], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .optional()?;
        let Some((id, status, seen_run, answered_run)) = existing else {
            insert.execute(params![
                source,
                row.line as i64,
                row.document_reference,
                row.payload,
                Status::Pending.as_str(),
                run,
                Option::<String>::None,
                Option::<String>::None,
                now,
                Option::<String>::None
            ])?;
            return Ok(LoadClass::New);
        };
        if seen_run == run {
            return Ok(LoadClass::Duplicate);
        }
        let status = Status::parse(&status).unwrap_or(Status::Pending);
        let requeue = force_since.is_some_and(|since| {
            status != Status::Pending && answered_run.is_none_or(|a| a < since)
        });
        see.execute(params![id, run, source, row.line as i64, requeue])?;
        Ok(if requeue {
            LoadClass::Forced
        } else {
            LoadClass::Known(status)
        })
    }

    pub fn counts(&self) -> &LoadCounts {
        &self.counts
    }

    /// Commits the whole input and marks the run's batch as loaded: from
    /// now on it is the batch `resume`, `retry` and `export` work on.
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

/// `message` and `details` of a local reject: the reasons, and nothing
/// more (no HTTP status, no API code: it was never sent).
fn reject_text(r: &Reject) -> (String, String) {
    (r.message(), String::new())
}

/// The final word on one request, as the writer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Tracked {
        tracking_id: String,
        units: Vec<Unit>,
    },
    /// Failed, exhausted or bad_response, with what the API said.
    Failed {
        status: Status,
        http_status: Option<u16>,
        code: String,
        message: String,
        details: String,
    },
    /// Not answered (dispatch stopped): back to pending. `maybe_sent` when
    /// the last request may have reached the service (a timeout, a dropped
    /// connection, a 500 or 504): sending it again is then counted as a
    /// re-send after interruption.
    Requeue { maybe_sent: bool },
    /// The request never left (dispatch stopped while it waited for its
    /// turn, or no token could be had): back to pending, the attempt not
    /// counted. `was_in_flight`: an earlier request for it may have reached
    /// the service (so the next one is a re-send).
    NotSent { was_in_flight: bool },
}

enum Op {
    /// Mark a row in flight (one more attempt) and acknowledge after commit.
    Dispatch {
        id: i64,
        ack: oneshot::Sender<()>,
    },
    Outcome {
        id: i64,
        outcome: Outcome,
    },
    Flush {
        ack: oneshot::Sender<()>,
    },
}

/// Counters of committed outcomes, read by the progress display.
#[derive(Debug, Default)]
pub struct Committed {
    pub tracked: AtomicU64,
    pub failed: AtomicU64,
    pub units: AtomicU64,
}

/// The single writer: a thread owning a connection, committing whatever has
/// queued up since its last commit in one transaction.
pub struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    committed: Arc<Committed>,
}

/// The writer stopped (its error is returned by [`Writer::finish`]).
#[derive(Debug, thiserror::Error)]
#[error("the state file writer stopped")]
pub struct WriterGone;

/// Most operations applied in one transaction.
const MAX_GROUP: usize = 4096;

impl Writer {
    /// `run` is recorded with each answer (`answered_run`).
    pub fn spawn(path: &Path, run: RunId, durability: Durability) -> Result<Writer> {
        let conn = Connection::open(path)
            .with_context(|| format!("{}: cannot open the state file", path.display()))?;
        configure(&conn, durability).map_err(|e| sqlite_error(path, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let committed = Arc::new(Committed::default());
        let counters = committed.clone();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(conn, &path, run, rx, &counters))
            .context("cannot start the state writer thread")?;
        Ok(Writer {
            tx,
            thread: Some(thread),
            committed,
        })
    }

    pub fn committed(&self) -> Arc<Committed> {
        self.committed.clone()
    }

    /// Marks a row in flight; returns once that is durable, so a crash
    /// afterwards is known to have interrupted this request.
    pub async fn dispatched(&self, id: i64) -> Result<(), WriterGone> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Dispatch { id, ack })
            .map_err(|_| WriterGone)?;
        done.await.map_err(|_| WriterGone)
    }

    /// Queues an outcome; it counts as done once committed.
    pub fn record(&self, id: i64, outcome: Outcome) -> Result<(), WriterGone> {
        self.tx
            .send(Op::Outcome { id, outcome })
            .map_err(|_| WriterGone)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), WriterGone> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Op::Flush { ack }).map_err(|_| WriterGone)?;
        done.await.map_err(|_| WriterGone)
    }

    /// Commits what is queued and stops the thread.
    pub fn finish(mut self) -> Result<()> {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the state writer thread panicked"))?,
            None => Ok(()),
        }
    }
}

fn write_loop(
    mut conn: Connection,
    path: &Path,
    run: RunId,
    mut rx: mpsc::UnboundedReceiver<Op>,
    committed: &Committed,
) -> Result<()> {
    let mut group = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let delta = apply(&mut conn, run, &group).map_err(|e| sqlite_error(path, e))?;
        committed
            .tracked
            .fetch_add(delta.tracked, Ordering::Relaxed);
        committed.failed.fetch_add(delta.failed, Ordering::Relaxed);
        committed.units.fetch_add(delta.units, Ordering::Relaxed);
        for op in group.drain(..) {
            match op {
                Op::Dispatch { ack, .. } | Op::Flush { ack } => {
                    let _ = ack.send(());
                }
                Op::Outcome { .. } => {}
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Delta {
    tracked: u64,
    failed: u64,
    units: u64,
}

fn apply(conn: &mut Connection, run: RunId, group: &[Op]) -> rusqlite::Result<Delta> {
    let mut delta = Delta::default();
    let tx = conn.transaction()?;
    {
        let now = now_rfc3339();
        let mut dispatch = tx.prepare_cached(
            "UPDATE items SET in_flight = 1, was_in_flight = 0, attempts = attempts + 1,
                 updated_at = ?2 WHERE id = ?1",
        )?;
        let mut tracked = tx.prepare_cached(
            "UPDATE items SET status = 'tracked', in_flight = 0, http_status = 201,
                 tracking_id = ?2, units = ?3, unit_count = ?4,
                 code = NULL, message = NULL, details = NULL, updated_at = ?5, answered_run = ?6
             WHERE id = ?1",
        )?;
        let mut failed = tx.prepare_cached(
            "UPDATE items SET status = ?2, in_flight = 0, http_status = ?3, code = ?4,
                 message = ?5, details = ?6, updated_at = ?7, answered_run = ?8
             WHERE id = ?1",
        )?;
        let mut requeue = tx.prepare_cached(
            "UPDATE items SET status = 'pending', in_flight = 0, was_in_flight = ?3,
                 updated_at = ?2 WHERE id = ?1",
        )?;
        let mut not_sent = tx.prepare_cached(
            "UPDATE items SET status = 'pending', in_flight = 0, was_in_flight = ?3,
                 attempts = max(attempts - 1, 0), updated_at = ?2 WHERE id = ?1",
        )?;
        for op in group {
            match op {
                Op::Dispatch { id, .. } => {
                    dispatch.execute(params![id, now])?;
                }
                Op::Outcome { id, outcome } => match outcome {
                    Outcome::Tracked { tracking_id, units } => {
                        let json = serde_json::to_string(units)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
                        tracked.execute(params![
                            id,
                            tracking_id,
                            json,
                            units.len() as i64,
                            now,
                            run
                        ])?;
                        delta.tracked += 1;
                        delta.units += units.len() as u64;
                    }
                    Outcome::Failed {
                        status,
                        http_status,
                        code,
                        message,
                        details,
                    } => {
                        failed.execute(params![
                            id,
                            status.as_str(),
                            http_status,
                            code,
                            message,
                            details,
                            now,
                            run
                        ])?;
                        delta.failed += 1;
                    }
                    Outcome::Requeue { maybe_sent } => {
                        requeue.execute(params![id, now, maybe_sent])?;
                    }
                    Outcome::NotSent { was_in_flight } => {
                        not_sent.execute(params![id, now, was_in_flight])?;
                    }
                },
                Op::Flush { .. } => {}
            }
        }
    }
    tx.commit()?;
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Problem, Reject, ValidRow};

    fn valid(line: u64, reference: &str) -> Row {
        Row::Valid(ValidRow {
            line,
            document_reference: reference.into(),
            payload: format!(r#"{{"documentReference":"{reference}"}}"#),
        })
    }

    fn rejected(line: u64) -> Row {
        Row::Rejected(Reject {
            line,
            document_reference: String::new(),
            fields: Default::default(),
            problems: vec![Problem {
                field: "documentReference",
                message: "is empty".into(),
            }],
        })
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn loading_classifies_new_duplicate_and_known_rows() {
        let (_dir, mut store) = temp_store();
        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        loader
            .add(&[valid(2, "A"), valid(3, "B"), valid(4, "A"), rejected(5)])
            .unwrap();
        let c = loader.finish().unwrap();
        assert_eq!((c.rows, c.new, c.duplicates, c.rejected), (4, 2, 1, 1));

        // A second run over the same rows: nothing new, both still pending.
        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        let run2 = loader.run();
        loader
            .add(&[valid(2, "A"), valid(3, "B"), rejected(5)])
            .unwrap();
        let c = loader.finish().unwrap();
        assert_eq!((c.new, c.continued, c.rejected), (0, 2, 1));
        let counts = store.status_counts(Some(run2)).unwrap();
        assert_eq!(counts.get(Status::Pending), 2);
        // The reject of line 5 was replaced, not duplicated.
        assert_eq!(counts.get(Status::Rejected), 1);
        assert_eq!(store.status_counts(None).unwrap().get(Status::Rejected), 1);
    }

    #[test]
    fn a_load_that_does_not_finish_leaves_the_state_as_it_was() {
        let (_dir, mut store) = temp_store();
        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        let run1 = loader.run();
        loader.add(&[valid(2, "A"), valid(3, "B")]).unwrap();
        loader.finish().unwrap();
        // A second input takes A over, then fails before finishing.
        let mut loader = store.loader("b.csv", "{}", false).unwrap();
        loader.add(&[valid(2, "A"), valid(3, "C")]).unwrap();
        drop(loader);
        // Nothing of it stayed: A and B are still the first run's, and the
        // first run is still the one later commands continue.
        assert_eq!(
            store
                .status_counts(Some(run1))
                .unwrap()
                .get(Status::Pending),
            2
        );
        assert_eq!(store.status_counts(None).unwrap().get(Status::Pending), 2);
        assert_eq!(store.latest_batch().unwrap().unwrap().id, run1);
    }

    #[test]
    fn tracked_rows_are_skipped_unless_forced() {
        let (dir, mut store) = temp_store();
        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        let run1 = loader.run();
        loader.add(&[valid(2, "A")]).unwrap();
        loader.finish().unwrap();
        let id = store.pending_page(run1, 0, 10).unwrap()[0].id;
        store
            .conn
            .execute("UPDATE items SET status = 'tracked' WHERE id = ?1", [id])
            .unwrap();

        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        let run2 = loader.run();
        loader.add(&[valid(2, "A")]).unwrap();
        assert_eq!(loader.finish().unwrap().already_tracked, 1);
        assert!(store.pending_page(run2, 0, 10).unwrap().is_empty());

        let mut loader = store.loader("a.csv", "{}", true).unwrap();
        let run3 = loader.run();
        loader.add(&[valid(2, "A")]).unwrap();
        assert_eq!(loader.finish().unwrap().forced, 1);
        assert_eq!(store.pending_page(run3, 0, 10).unwrap().len(), 1);
        drop(dir);
    }

    #[test]
    fn a_forced_run_that_stopped_is_continued_not_restarted() {
        let (_dir, mut store) = temp_store();
        let answer = |store: &Store, run: RunId| {
            store
                .conn
                .execute(
                    "UPDATE items SET status = 'tracked', answered_run = ?1",
                    [run],
                )
                .unwrap();
        };
        let load = |store: &mut Store, config: &str, force: bool| -> (RunId, LoadCounts) {
            let mut loader = store.loader("a.csv", config, force).unwrap();
            let run = loader.run();
            loader.add(&[valid(2, "A")]).unwrap();
            (run, loader.finish().unwrap())
        };
        let (r1, _) = load(&mut store, r#"{"force":false}"#, false);
        answer(&store, r1);
        store.end_run(r1, "completed", "{}").unwrap();
        // A forced run re-queues A, answers it, then dies (no outcome).
        let (r2, c) = load(&mut store, r#"{"force":true}"#, true);
        assert_eq!(c.forced, 1);
        answer(&store, r2);
        // Run again with --force: A was answered by the unfinished forced
        // run, so it is not sent a third time.
        let (r3, c) = load(&mut store, r#"{"force":true}"#, true);
        assert_eq!((c.forced, c.already_tracked), (0, 1));
        store.end_run(r3, "completed", "{}").unwrap();
        // Once a forced run has finished, the next --force starts over.
        let (_, c) = load(&mut store, r#"{"force":true}"#, true);
        assert_eq!(c.forced, 1);
    }

    #[test]
    fn writer_commits_outcomes_and_in_flight_marks() {
        let (dir, mut store) = temp_store();
        let mut loader = store.loader("a.csv", "{}", false).unwrap();
        let run = loader.run();
        loader.add(&[valid(2, "A"), valid(3, "B")]).unwrap();
        loader.finish().unwrap();
        let page = store.pending_page(run, 0, 10).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let writer = Writer::spawn(store.path(), run, Durability::Full).unwrap();
        rt.block_on(async {
            writer.dispatched(page[0].id).await.unwrap();
            writer.dispatched(page[1].id).await.unwrap();
            writer
                .record(
                    page[0].id,
                    Outcome::Tracked {
                        tracking_id: "TRK0000000001".into(),
                        units: vec![Unit {
                            spi: Some("CNI0000000001".into()),
                            reference: Some("CSQU3054383".into()),
                        }],
                    },
                )
                .unwrap();
            writer.flush().await.unwrap();
        });
        writer.finish().unwrap();
        // B was in flight when the "process" stopped: recovery flags it.
        assert_eq!(store.recover_in_flight(run).unwrap(), 1);
        let page = store.pending_page(run, 0, 10).unwrap();
        assert_eq!(page.len(), 1);
        assert!(page[0].was_in_flight);
        let mut tracked = Vec::new();
        store
            .for_each_tracked(Some(run), |r| {
                tracked.push(r);
                Ok(())
            })
            .unwrap();
        assert_eq!(tracked.len(), 1);
        assert_eq!(
            tracked[0].units[0].reference.as_deref(),
            Some("CSQU3054383")
        );
        drop(dir);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.db");
        std::fs::write(
            &path,
            "this is not a database, it is a grocery list\n".repeat(100),
        )
        .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a trackmass state file"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer trackmass"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn the_state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = temp_store();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        drop(dir);
    }
}
