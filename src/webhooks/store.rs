//! The events store: a SQLite file beside the state file (`STATE.events`)
//! holding every event the receiver took, once each with how many times it
//! was delivered, and the bodies it could not read, as received.
//!
//! Its own file rather than tables in the state file: SQLite lets one
//! writer at a time into a file, and the receiver must answer SOGET within
//! a bounded time while a nightly run commits its answers. On two files
//! neither waits for the other's write lock, and a run's lock on the state
//! (one process per state file) does not keep the receiver out. The events
//! file has its own lock, taken by the receiver: one receiver per store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, params};

use super::payload::Event;

/// Marks a trackmass events store (`PRAGMA application_id`).
const APPLICATION_ID: i64 = 0x544d_4556; // "TMEV"
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE events (
    id                 INTEGER PRIMARY KEY,
    -- The unit and every field of the event (payload::Event::key): the
    -- same event delivered again is this row, its deliveries counted.
    key                TEXT NOT NULL UNIQUE,
    spi                TEXT NOT NULL,
    reference          TEXT NOT NULL,
    external_reference TEXT NOT NULL,
    freight_family     TEXT NOT NULL,
    alert_date         TEXT NOT NULL,
    alert_type         TEXT NOT NULL,
    direction          TEXT NOT NULL,
    location           TEXT NOT NULL,
    state              TEXT NOT NULL,
    type               TEXT NOT NULL,
    received_at        TEXT NOT NULL,
    deliveries         INTEGER NOT NULL DEFAULT 1
);
-- A unit's events by date: the export's joins and its latest event.
CREATE INDEX events_unit ON events(spi, reference, alert_date);
CREATE INDEX events_reference ON events(reference);
-- Bodies that are not the spec's payload, kept as received (bounded).
CREATE TABLE unreadable (
    id          INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    size        INTEGER NOT NULL,
    body        BLOB NOT NULL,
    reason      TEXT NOT NULL
);
";

/// The events store that goes with a state file: its resolved path plus
/// `.events`.
pub fn path_for(state: &Path) -> PathBuf {
    let mut name = crate::paths::identity(state).into_os_string();
    name.push(".events");
    PathBuf::from(name)
}

/// What one delivery was, for the receiver to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Events(Vec<Event>),
    Unreadable { body: Vec<u8>, reason: String },
}

/// What storing deliveries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Events stored for the first time.
    pub new: u64,
    /// Events that were already stored (a redelivery).
    pub again: u64,
    /// Bodies kept as unreadable.
    pub unreadable: u64,
}

/// Counts over the whole store, for `status` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub events: u64,
    pub deliveries: u64,
    pub units: u64,
    pub unreadable: u64,
}

pub struct EventStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Refuses a path that is there but is not a plain file (a symbolic link,
/// a FIFO, a device): never opened, never written through.
fn check_kind(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(meta) => bail!(
            "{}: is {}, not an events store trackmass made; it is left untouched: \
             move it away, then start again",
            path.display(),
            crate::paths::kind(&meta)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Creates the store at `path` (which must not exist) with the whole
/// schema: built under a temporary name beside it, then linked into place
/// without replacing anything.
fn create(path: &Path) -> Result<()> {
    let temp = crate::output::temp_beside(path, ".new", 0o600)
        .with_context(|| format!("{}: cannot create the events store", path.display()))?
        .into_temp_path();
    {
        let conn = Connection::open(&temp)?;
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {VERSION}; COMMIT;"
        ))?;
        conn.close().map_err(|(_, e)| e)?;
    }
    match temp.persist_noclobber(path) {
        Ok(()) => Ok(()),
        // Another process made it first: use theirs.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error)
            .with_context(|| format!("{}: cannot create the events store", path.display())),
    }
}

fn sqlite(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: events store error: {e}", path.display())
}

impl EventStore {
    /// Opens the store for writing, creating it if there is none.
    pub fn open(path: &Path) -> Result<EventStore> {
        if !check_kind(path)? {
            create(path)?;
        }
        let store = EventStore::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        store
            .conn
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| store.conn.pragma_update(None, "synchronous", "FULL"))
            .map_err(|e| sqlite(path, e))?;
        Ok(store)
    }

    /// Opens an existing store without writing to it; `None` if there is
    /// none yet (no event received).
    pub fn open_read_only(path: &Path) -> Result<Option<EventStore>> {
        if !check_kind(path)? {
            return Ok(None);
        }
        EventStore::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map(Some)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<EventStore> {
        let conn = Connection::open_with_flags(
            path,
            flags | OpenFlags::SQLITE_OPEN_NOFOLLOW | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite(path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| sqlite(path, e))?;
        let id: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|_| not_a_store(path))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sqlite(path, e))?;
        if id != APPLICATION_ID {
            return Err(not_a_store(path));
        }
        if version > VERSION {
            bail!(
                "{}: an events store of a newer trackmass (version {version}); \
                 use that version",
                path.display()
            );
        }
        Ok(EventStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Stores deliveries in one transaction (one fsync for all of them):
    /// each event once, a redelivery counted on the stored row.
    pub fn store(&mut self, deliveries: &[Delivery], received_at: &str) -> Result<Vec<Stored>> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sqlite(&path, e))?;
        let mut out = Vec::with_capacity(deliveries.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (key, spi, reference, external_reference,
                         freight_family, alert_date, alert_type, direction, location,
                         state, type, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT(key) DO UPDATE SET deliveries = deliveries + 1
                     RETURNING deliveries",
                )
                .map_err(|e| sqlite(&path, e))?;
            let mut unreadable = tx
                .prepare_cached(
                    "INSERT INTO unreadable (received_at, size, body, reason)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| sqlite(&path, e))?;
            for delivery in deliveries {
                let mut stored = Stored::default();
                match delivery {
                    Delivery::Events(events) => {
                        for e in events {
                            let deliveries: i64 = insert
                                .query_row(
                                    params![
                                        e.key(),
                                        e.spi,
                                        e.reference,
                                        e.external_reference,
                                        e.freight_family,
                                        e.alert_date,
                                        e.alert_type,
                                        e.direction,
                                        e.location,
                                        e.state,
                                        e.kind,
                                        received_at
                                    ],
                                    |r| r.get(0),
                                )
                                .map_err(|e| sqlite(&path, e))?;
                            if deliveries == 1 {
                                stored.new += 1;
                            } else {
                                stored.again += 1;
                            }
                        }
                    }
                    Delivery::Unreadable { body, reason } => {
                        unreadable
                            .execute(params![received_at, body.len() as i64, body, reason])
                            .map_err(|e| sqlite(&path, e))?;
                        stored.unreadable += 1;
                    }
                }
                out.push(stored);
            }
        }
        tx.commit().map_err(|e| sqlite(&path, e))?;
        Ok(out)
    }

    /// Counts over the whole store.
    pub fn totals(&self) -> Result<Totals> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(deliveries), 0),
                        count(DISTINCT spi || char(0) || reference),
                        (SELECT count(*) FROM unreadable)
                 FROM events",
                [],
                |r| {
                    Ok(Totals {
                        events: r.get::<_, i64>(0)? as u64,
                        deliveries: r.get::<_, i64>(1)? as u64,
                        units: r.get::<_, i64>(2)? as u64,
                        unreadable: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .map_err(|e| sqlite(&self.path, e))
    }
}

/// One line of the events export: an event and the document it belongs
/// to ('' when the ledger knows none of its unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    pub document_reference: String,
    pub agent_code: String,
    pub tracking_id: String,
    pub event: Event,
    pub received_at: String,
    pub deliveries: u64,
}

/// The export's columns, in order.
pub const EXPORT_HEADER: [&str; 16] = [
    "documentReference",
    "agentCode",
    "trackingId",
    "spi",
    "reference",
    "alertDate",
    "alertType",
    "direction",
    "location",
    "state",
    "type",
    "freightFamily",
    "externalReference",
    "receivedAt",
    "deliveries",
    "events",
];

impl EventStore {
    /// Calls `each` with every event (or, `latest`, each unit's last one by
    /// `AlertDate`, with its unit's event count), tied to its document
    /// through the units the ledger recorded: by `Spi`, then by
    /// `Reference` (the latest document naming it). The ledger's units
    /// are copied into temporary tables first (one pass, on disk), so
    /// memory stays flat whatever the sizes.
    ///
    /// Long for a reason: the temporary tables live in this one
    /// transaction, filled, joined and dropped in the order written here.
    pub fn export(
        &self,
        ledger: &crate::store::Store,
        latest: bool,
        mut each: impl FnMut(&ExportRow, u64) -> Result<()>,
    ) -> Result<u64> {
        let path = &self.path;
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS by_spi (
                     spi TEXT PRIMARY KEY, doc TEXT, agent TEXT, tid TEXT);
                 CREATE TEMP TABLE IF NOT EXISTS by_ref (
                     reference TEXT PRIMARY KEY, doc TEXT, agent TEXT, tid TEXT);
                 DELETE FROM temp.by_spi; DELETE FROM temp.by_ref;
                 BEGIN;",
            )
            .map_err(|e| sqlite(path, e))?;
        {
            let mut spi = self
                .conn
                .prepare("INSERT OR IGNORE INTO temp.by_spi VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| sqlite(path, e))?;
            let mut reference = self
                .conn
                .prepare("INSERT OR REPLACE INTO temp.by_ref VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| sqlite(path, e))?;
            ledger.for_each_tracked(crate::store::Scope::Ledger, |row| {
                for unit in &row.units {
                    if let Some(s) = unit.spi.as_deref().filter(|s| !s.is_empty()) {
                        spi.execute(params![
                            s,
                            row.document_reference,
                            row.agent_code,
                            row.tracking_id
                        ])
                        .map_err(|e| sqlite(path, e))?;
                    }
                    if let Some(r) = unit.reference.as_deref().filter(|r| !r.is_empty()) {
                        reference
                            .execute(params![
                                r,
                                row.document_reference,
                                row.agent_code,
                                row.tracking_id
                            ])
                            .map_err(|e| sqlite(path, e))?;
                    }
                }
                Ok(())
            })?;
        }
        self.conn
            .execute_batch("COMMIT;")
            .map_err(|e| sqlite(path, e))?;
        let pick = if latest {
            "WHERE e.id = (SELECT l.id FROM events l
                           WHERE l.spi = e.spi AND l.reference = e.reference
                           ORDER BY l.alert_date DESC, l.id DESC LIMIT 1)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT coalesce(s.doc, r.doc, ''), coalesce(s.agent, r.agent, ''),
                    coalesce(s.tid, r.tid, ''),
                    e.spi, e.reference, e.external_reference, e.freight_family,
                    e.alert_date, e.alert_type, e.direction, e.location, e.state, e.type,
                    e.received_at, e.deliveries,
                    (SELECT count(*) FROM events c
                     WHERE c.spi = e.spi AND c.reference = e.reference)
             FROM events e
             LEFT JOIN temp.by_spi s ON e.spi <> '' AND s.spi = e.spi
             LEFT JOIN temp.by_ref r ON s.spi IS NULL AND e.reference <> ''
                                        AND r.reference = e.reference
             {pick}
             ORDER BY e.id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| sqlite(path, e))?;
        let mut rows = stmt.query([]).map_err(|e| sqlite(path, e))?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| sqlite(path, e))? {
            let text = |i: usize| -> Result<String> {
                row.get::<_, String>(i).map_err(|e| sqlite(path, e))
            };
            let out = ExportRow {
                document_reference: text(0)?,
                agent_code: text(1)?,
                tracking_id: text(2)?,
                event: event_at(row, 3, path)?,
                received_at: text(13)?,
                deliveries: row.get::<_, i64>(14).map_err(|e| sqlite(path, e))? as u64,
            };
            let events = row.get::<_, i64>(15).map_err(|e| sqlite(path, e))? as u64;
            each(&out, events)?;
            n += 1;
        }
        Ok(n)
    }

    /// A unit's last event (by `AlertDate`) and how many it has.
    pub fn latest_for(&self, spi: &str, reference: &str) -> Result<Option<(Event, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT spi, reference, external_reference, freight_family, alert_date,
                        alert_type, direction, location, state, type,
                        (SELECT count(*) FROM events c WHERE c.spi = e.spi AND c.reference = e.reference)
                 FROM events e WHERE spi = ?1 AND reference = ?2
                 ORDER BY alert_date DESC, id DESC LIMIT 1",
            )
            .map_err(|e| sqlite(&self.path, e))?;
        let mut rows = stmt
            .query(params![spi, reference])
            .map_err(|e| sqlite(&self.path, e))?;
        let Some(row) = rows.next().map_err(|e| sqlite(&self.path, e))? else {
            return Ok(None);
        };
        let event = event_at(row, 0, &self.path)?;
        let n: i64 = row.get(10).map_err(|e| sqlite(&self.path, e))?;
        Ok(Some((event, n as u64)))
    }

    /// Units with events and how many have each `AlertType` as their
    /// latest, most first.
    pub fn latest_types(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT e.alert_type, count(*) FROM events e
                 WHERE e.id = (SELECT l.id FROM events l
                               WHERE l.spi = e.spi AND l.reference = e.reference
                               ORDER BY l.alert_date DESC, l.id DESC LIMIT 1)
                 GROUP BY e.alert_type ORDER BY count(*) DESC, e.alert_type",
            )
            .map_err(|e| sqlite(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| sqlite(&self.path, e))?;
        rows.map(|r| r.map_err(|e| sqlite(&self.path, e))).collect()
    }
}

/// The ten event columns of a query, from `first` on, in the table's order
/// (spi, reference, external_reference, freight_family, alert_date,
/// alert_type, direction, location, state, type).
fn event_at(row: &rusqlite::Row<'_>, first: usize, path: &Path) -> Result<Event> {
    let text = |i: usize| -> Result<String> {
        row.get::<_, String>(first + i).map_err(|e| sqlite(path, e))
    };
    Ok(Event {
        spi: text(0)?,
        reference: text(1)?,
        external_reference: text(2)?,
        freight_family: text(3)?,
        alert_date: text(4)?,
        alert_type: text(5)?,
        direction: text(6)?,
        location: text(7)?,
        state: text(8)?,
        kind: text(9)?,
    })
}

fn not_a_store(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: not a trackmass events store; it is left untouched: move it away, \
         then start again",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(alert_type: &str) -> Event {
        Event {
            spi: "CNI1".into(),
            reference: "MSCU1234565".into(),
            external_reference: String::new(),
            freight_family: "Container".into(),
            alert_date: "2026-12-01T10:00:00+00:00".into(),
            alert_type: alert_type.into(),
            direction: "Import".into(),
            location: "FRLEH".into(),
            state: "Active".into(),
            kind: "DIR".into(),
        }
    }

    #[test]
    fn an_event_delivered_twice_is_stored_once_and_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db.events");
        let mut store = EventStore::open(&path).unwrap();
        let one = Delivery::Events(vec![event("Creation"), event("Discharge")]);
        let stored = store.store(&[one.clone(), one], "now").unwrap();
        assert_eq!(
            stored,
            [
                Stored {
                    new: 2,
                    ..Stored::default()
                },
                Stored {
                    again: 2,
                    ..Stored::default()
                }
            ]
        );
        let bad = Delivery::Unreadable {
            body: b"{\"nope\":1}".to_vec(),
            reason: "not the webhook payload".into(),
        };
        store.store(&[bad], "now").unwrap();
        let totals = store.totals().unwrap();
        assert_eq!(
            totals,
            Totals {
                events: 2,
                deliveries: 4,
                units: 1,
                unreadable: 1
            }
        );
        // Reopened: what was committed is there.
        drop(store);
        let again = EventStore::open_read_only(&path).unwrap().unwrap();
        assert_eq!(again.totals().unwrap(), totals);
    }

    #[test]
    fn a_file_that_is_not_an_events_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let before = std::fs::read(&other).unwrap();
        let err = EventStore::open(&other).unwrap_err().to_string();
        assert!(err.contains("not a trackmass events store"), "{err}");
        assert_eq!(std::fs::read(&other).unwrap(), before);
        #[cfg(unix)]
        {
            let link = dir.path().join("s.db.events");
            std::os::unix::fs::symlink(&other, &link).unwrap();
            let err = EventStore::open(&link).unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{err}");
        }
        assert!(
            EventStore::open_read_only(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }
}
