//! The state file: a SQLite database that is the ledger of documents and
//! the single source of truth.
//!
//! It holds one row per document (`items`, unique on the reference and the
//! agent code) plus the rows refused locally, and one row per invocation
//! (`runs`). This file opens it and checks that it is what it claims to
//! be; the rest is one job per file:
//! - [`schema`]: the tables, the version, migrations from older files;
//! - [`load`]: an input's rows into the ledger, in one transaction;
//! - [`writer`]: the thread that commits answers in grouped transactions;
//! - [`queries`]: what the result files, `status` and the feeder read;
//! - [`history`]: the runs, and putting failed documents back to pending;
//! - `seconds`: what each second of a run's sending did, for
//!   `trackmass report` (the table `seconds`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use rusqlite::{Connection, OpenFlags};

mod history;
mod load;
mod queries;
pub mod schema;
mod seconds;
mod writer;

pub use crate::ledger::{RunId, Status};
pub use history::{FailureGroup, Overview, RunRecord};
pub use load::{Notice, describe};
pub use queries::{DocumentView, FailureRow, PendingItem, Scope, StatusCounts, TrackedRow, Unit};
pub use schema::SCHEMA_VERSION;
pub use writer::{Committed, Outcome, Writer};

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

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// An open state file.
pub struct Store {
    conn: Connection,
    /// As the user named it: what messages say.
    path: PathBuf,
    /// Where it really is (symlinks resolved): what is opened and locked.
    real: PathBuf,
    /// The file it was when opened, to notice a removal or replacement.
    id: Option<FileId>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A file's identity on its file system (device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<Option<FileId>> {
        let meta = std::fs::metadata(path)?;
        Ok(Self::from_metadata(&meta))
    }

    #[cfg(unix)]
    fn from_metadata(meta: &std::fs::Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    #[cfg(not(unix))]
    fn from_metadata(_meta: &std::fs::Metadata) -> Option<FileId> {
        None
    }
}

pub(crate) fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
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

pub(crate) fn not_a_state_file(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "{}: not a trackmass state file ({why}); pass another --state path, \
         or move this file away to start a new ledger there",
        path.display()
    )
}

pub(crate) fn sqlite_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    anyhow!("{}: state file error: {e}", path.display())
}

/// Where a state path really leads: the file behind its symlinks, or (for a
/// file not made yet) its resolved directory and its name. A directory, a
/// missing directory and a symlink to nothing are refused.
pub fn resolve(path: &Path) -> Result<PathBuf> {
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
    if path.is_symlink() && !path.exists() {
        bail!(
            "{}: is a symbolic link to a file that does not exist; \
             remove the link or point it at a state file",
            path.display()
        );
    }
    Ok(crate::paths::identity(path))
}

/// Refuses an existing path that cannot be a state file (not a regular
/// file, or empty) before SQLite is let near it.
fn check_existing(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if !meta.is_file() {
        bail!(
            "{}: is not a regular file ({}), so not a state file; pass another --state path",
            path.display(),
            crate::paths::kind(meta)
        );
    }
    if meta.len() == 0 {
        bail!(
            "{}: not a trackmass state file: it is empty (0 bytes), and trackmass never \
             leaves a state file empty; delete it to start a new ledger at this path, \
             or pass another --state path",
            path.display()
        );
    }
    Ok(())
}

impl Store {
    /// Opens the state file for writing; creates it, with the current
    /// schema, when the path names no file (atomically: a state file
    /// either holds the whole schema or does not exist). An older file is
    /// migrated.
    pub fn open(path: &Path) -> Result<Store> {
        let real = resolve(path)?;
        match std::fs::metadata(&real) {
            Ok(meta) => check_existing(path, &meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                schema::create(&real)
                    .with_context(|| format!("{}: cannot create the state file", path.display()))?;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: cannot read the state file", path.display()));
            }
        }
        let conn = Connection::open(&real)
            .with_context(|| format!("{}: cannot open the state file", path.display()))?;
        if let Some(migrated) = schema::check_and_migrate(&conn, path)? {
            tracing::info!("{}: {migrated}", path.display());
        }
        configure(&conn, Durability::Full).map_err(|e| sqlite_error(path, e))?;
        schema::ensure_added(&conn).map_err(|e| sqlite_error(path, e))?;
        let id = FileId::of(&real).ok().flatten();
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            real,
            id,
        })
    }

    /// Opens an existing state file without writing to it.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let real = resolve(path)?;
        match std::fs::metadata(&real) {
            Ok(meta) => check_existing(path, &meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{}: no such state file", path.display())
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: cannot read the state file", path.display()));
            }
        }
        let conn = Connection::open_with_flags(
            &real,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("{}: cannot open the state file", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| sqlite_error(path, e))?;
        schema::check_readable(&conn, path)?;
        let id = FileId::of(&real).ok().flatten();
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            real,
            id,
        })
    }

    /// [`Store::open_read_only`], or `None` when the path names no file
    /// yet (a ledger that holds nothing).
    pub fn open_if_exists(path: &Path) -> Result<Option<Store>> {
        let real = resolve(path)?;
        if !real.exists() {
            return Ok(None);
        }
        Store::open_read_only(path).map(Some)
    }

    /// The path as the user named it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another read-only connection to the same file (for a thread).
    pub fn reader(&self) -> Result<Store> {
        let mut store = Store::open_read_only(&self.real)?;
        store.path = self.path.clone();
        Ok(store)
    }

    /// Fails if the path no longer names the file this store opened: it
    /// was removed or replaced while in use, and what was recorded since
    /// went to a file nobody will read.
    pub fn check_unchanged(&self) -> Result<()> {
        let Some(id) = self.id else {
            return Ok(());
        };
        match FileId::of(&self.real) {
            Ok(Some(now)) if now == id => Ok(()),
            Ok(_) => bail!(
                "{}: the state file was replaced by another file while this command held it; \
                 what it recorded is not in the file now at that path. The result files \
                 written by this command hold its answers; restore the original file before \
                 the next run, or it sends every document again",
                self.path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{}: the state file was removed while this command held it; the ledger is \
                 lost. The result files written by this command hold its answers; the next \
                 run on this path starts a new ledger and sends every document again",
                self.path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", self.path.display())),
        }
    }
}

/// Building blocks of the store's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::input::{Problem, Reject, Row, ValidRow};
    use crate::ledger::LoadCounts;

    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    /// A valid row for `reference` with `extra` JSON members in its body
    /// (`"way":"Export"`); an `"agentCode"` among them names the agent.
    pub fn valid_with(line: u64, reference: &str, extra: &str) -> Row {
        let agent_code = extra
            .split("\"agentCode\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string();
        let sep = if extra.is_empty() { "" } else { "," };
        Row::Valid(ValidRow {
            line,
            document_reference: reference.into(),
            agent_code,
            payload: format!(r#"{{"documentReference":"{reference}"{sep}{extra}}}"#),
        })
    }

    pub fn valid(line: u64, reference: &str) -> Row {
        valid_with(line, reference, "")
    }

    pub fn rejected(line: u64, reference: &str) -> Row {
        Row::Rejected(Reject {
            line,
            document_reference: reference.into(),
            fields: Default::default(),
            problems: vec![Problem {
                field: "way",
                message: "is not a customs indicator".into(),
            }],
        })
    }

    /// Loads `rows` as a run of `source`.
    pub fn load(store: &mut Store, source: &str, rows: &[Row]) -> (RunId, LoadCounts) {
        load_forced(store, source, rows, false)
    }

    pub fn load_forced(
        store: &mut Store,
        source: &str,
        rows: &[Row],
        force: bool,
    ) -> (RunId, LoadCounts) {
        let mut loader = store.loader(source, "{}", force).unwrap();
        let run = loader.run();
        loader.add(rows).unwrap();
        (run, loader.finish().unwrap())
    }

    /// Gives every row of `reference` this status (and answer), as if `run`
    /// had answered it.
    pub fn answer(store: &Store, reference: &str, status: Status, run: RunId) {
        store
            .conn
            .execute(
                "UPDATE items SET status = ?2, answered_run = ?3,
                     http_status = CASE ?2 WHEN 'failed' THEN 400 END
                 WHERE document_reference = ?1",
                rusqlite::params![reference, status.as_str(), run],
            )
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_empty_file_or_an_empty_database_is_refused_not_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.db");
        std::fs::write(&path, "").unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("empty (0 bytes)"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // A SQLite file with nothing in it is somebody else's too.
        let other = dir.path().join("blank.db");
        let conn = Connection::open(&other).unwrap();
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.execute_batch("VACUUM").unwrap();
        drop(conn);
        let err = Store::open(&other).unwrap_err().to_string();
        assert!(err.contains("not a trackmass state file"), "{err}");
    }

    #[test]
    fn a_new_state_file_is_created_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.status_counts(Scope::Ledger).unwrap().failures(), 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
        // No temporary file is left beside it.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("state.db"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
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
    fn a_symlink_opens_its_target_and_a_dangling_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.db");
        let link = dir.path().join("link.db");
        drop(Store::open(&real).unwrap());
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let store = Store::open(&link).unwrap();
        assert_eq!(store.real, crate::paths::identity(&real));
        assert_eq!(store.path(), link.as_path());
        let dangling = dir.path().join("dangling.db");
        std::os::unix::fs::symlink(dir.path().join("nowhere.db"), &dangling).unwrap();
        let err = Store::open(&dangling).unwrap_err().to_string();
        assert!(
            err.contains("symbolic link to a file that does not exist"),
            "{err}"
        );
        assert!(!dir.path().join("nowhere.db").exists());
    }

    #[test]
    fn removal_or_replacement_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        store.check_unchanged().unwrap();
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let err = store.check_unchanged().unwrap_err().to_string();
        assert!(err.contains("was removed"), "{err}");
        drop(Store::open(&path).unwrap());
        let err = store.check_unchanged().unwrap_err().to_string();
        assert!(err.contains("was replaced"), "{err}");
    }
}
