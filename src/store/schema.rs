//! The state file's tables, its schema version, and the migrations from
//! the files older versions wrote. Each migration is one transaction: a
//! file is wholly upgraded or left byte for byte as it was.
//!
//! History: 1 had no batches; 2 kept one row per distinct request body, so
//! the same document with another `way` was a second row (and a second
//! tracking); 3 keeps one row per document, the reference qualified by the
//! agent code, and moves the rows merged by the migration to `superseded`.

use std::path::Path;

use anyhow::{Result, bail};
use rusqlite::Connection;

use super::{not_a_state_file, now_rfc3339, sqlite_error};

/// Version of the schema this build writes. A file with a higher
/// `user_version` was written by a newer trackmass and is refused.
pub const SCHEMA_VERSION: i64 = 3;

/// The columns of `items` (and of `superseded`, which adds two), in the
/// order both have on disk whether created or migrated.
const ITEM_COLUMNS: &str = "id, source, line, document_reference, payload, status, seen_run, \
     attempts, in_flight, was_in_flight, http_status, code, message, details, tracking_id, \
     units, unit_count, answered_run, updated_at, fields, agent_code";

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
    -- The run whose input this invocation reports on: its own id for
    -- `run`, the continued run's for `resume` and `retry`.
    batch       INTEGER,
    -- When its input was wholly loaded (a `run` whose loading failed never
    -- becomes the batch that later commands continue).
    loaded_at   TEXT,
    -- Started with --force.
    force       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE items (
    id                 INTEGER PRIMARY KEY,
    source             TEXT NOT NULL,
    line               INTEGER NOT NULL,
    document_reference TEXT NOT NULL,
    -- The request body sent for the document; NULL for a rejected row.
    payload            TEXT,
    status             TEXT NOT NULL,
    -- The latest run whose input named it (source and line are there).
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
    fields             TEXT,
    -- With document_reference, the document's identity ('' for none).
    agent_code         TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX items_document ON items(document_reference, agent_code)
    WHERE payload IS NOT NULL;
CREATE INDEX items_pending ON items(id) WHERE status = 'pending';
CREATE INDEX items_run_line ON items(seen_run, line);
-- Rows a process was sending when it died: found at start without a scan.
CREATE INDEX items_in_flight ON items(id) WHERE in_flight = 1;
CREATE INDEX items_rejected ON items(source) WHERE status = 'rejected';
-- Finds a document's rejects when a valid row for it arrives (once per row).
CREATE INDEX items_rejected_document ON items(document_reference, agent_code)
    WHERE status = 'rejected';
";

/// What each second of a run's sending did (see [`crate::timeline`]), for
/// `trackmass report`. Added without a version bump: it only ever adds to
/// what a file holds, older builds ignore it, and [`ensure_added`] creates
/// it in a file opened for writing that lacks it.
const SECONDS: &str = "
CREATE TABLE IF NOT EXISTS seconds (
    run        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    refused    INTEGER NOT NULL,
    throttled  INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    pace       REAL NOT NULL,
    rate       REAL NOT NULL,
    paused_ms  INTEGER NOT NULL,
    PRIMARY KEY (run, at)
) WITHOUT ROWID;
";

/// Creates the tables added without a version bump ([`SECONDS`]).
pub(super) fn ensure_added(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SECONDS)
}

/// Rows a migration merged into the row that now stands for their
/// document: kept, never deleted.
const SUPERSEDED: &str = "
CREATE TABLE superseded (
    id INTEGER, source TEXT, line INTEGER, document_reference TEXT, payload TEXT,
    status TEXT, seen_run INTEGER, attempts INTEGER, in_flight INTEGER,
    was_in_flight INTEGER, http_status INTEGER, code TEXT, message TEXT,
    details TEXT, tracking_id TEXT, units TEXT, unit_count INTEGER,
    answered_run INTEGER, updated_at TEXT, fields TEXT, agent_code TEXT,
    -- The row of items that now stands for the document.
    merged_into INTEGER NOT NULL,
    superseded_at TEXT NOT NULL
);
";

/// Creates a state file at `path` (which must not exist) holding the whole
/// schema: built under a temporary name beside it, then linked into place
/// without replacing anything, so no half-made or empty state file is ever
/// left at `path`.
pub(super) fn create(path: &Path) -> Result<()> {
    let temp = crate::output::temp_beside(path, ".new", 0o600)?.into_temp_path();
    {
        let conn = Connection::open(&temp)?;
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} {SUPERSEDED} {SECONDS} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
        conn.close().map_err(|(_, e)| e)?;
    }
    match temp.persist_noclobber(path) {
        Ok(()) => Ok(()),
        // Another process made it first: use theirs.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error.into()),
    }
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

/// Refuses a database that has no trackmass tables.
fn check_foreign(conn: &Connection, path: &Path) -> Result<()> {
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs', 'items')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sqlite_error(path, e))?;
    if tables == 2 {
        return Ok(());
    }
    let any: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| sqlite_error(path, e))?;
    Err(not_a_state_file(
        path,
        if any > 0 {
            "it is a SQLite database with other tables"
        } else {
            "it is an empty SQLite database"
        },
    ))
}

/// Checks a file opened read-only: a state file of this very schema.
pub(super) fn check_readable(conn: &Connection, path: &Path) -> Result<()> {
    let version = schema_version(conn, path)?;
    if version == 0 {
        check_foreign(conn, path)?;
    }
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
    Ok(())
}

/// Checks a file opened for writing and brings an older schema up to
/// date. Returns what a migration did, if one ran.
pub(super) fn check_and_migrate(conn: &Connection, path: &Path) -> Result<Option<String>> {
    let version = schema_version(conn, path)?;
    if version > SCHEMA_VERSION {
        bail!(
            "{}: this state file was written by a newer trackmass (schema {version}, \
             this build knows {SCHEMA_VERSION}); upgrade trackmass to use it",
            path.display()
        );
    }
    if version == SCHEMA_VERSION {
        return Ok(None);
    }
    if version == 0 {
        // Every file trackmass makes carries its version from the start.
        check_foreign(conn, path)?;
        return Err(not_a_state_file(path, "it has no schema version"));
    }
    let merged = migrate(conn, version).map_err(|e| sqlite_error(path, e))?;
    Ok(Some(format!(
        "state file upgraded from schema {version} to {SCHEMA_VERSION}: one row per document; \
         {merged} rows that asked again for a document already held were merged into it \
         (kept in the table `superseded`)"
    )))
}

/// Runs every step from `from` to the current version in one transaction.
/// Returns how many rows were merged into their documents.
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<u64> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let steps = || -> rusqlite::Result<u64> {
        if from < 2 {
            conn.execute_batch(
                "ALTER TABLE runs ADD COLUMN batch INTEGER;
                 ALTER TABLE runs ADD COLUMN loaded_at TEXT;
                 UPDATE runs SET batch = id, loaded_at = started_at WHERE command = 'run';
                 ALTER TABLE items ADD COLUMN fields TEXT;",
            )?;
        }
        let merged = one_row_per_document(conn)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        Ok(merged)
    };
    match steps() {
        Ok(merged) => {
            conn.execute_batch("COMMIT")?;
            Ok(merged)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Schema 2 → 3. Rows of one document (same reference and agent code) are
/// merged into one, which keeps the best outcome: a tracking (the first
/// one), else a 201 that could not be read, else a request still owed,
/// else the latest answer. It takes over the latest input that named any
/// of them. The others move to `superseded`, nothing is deleted.
fn one_row_per_document(conn: &Connection) -> rusqlite::Result<u64> {
    conn.execute_batch(
        "ALTER TABLE runs ADD COLUMN force INTEGER NOT NULL DEFAULT 0;
         UPDATE runs SET force = 1
             WHERE json_valid(config) AND json_extract(config, '$.force') = 1;
         ALTER TABLE items ADD COLUMN agent_code TEXT NOT NULL DEFAULT '';
         UPDATE items SET agent_code = coalesce(json_extract(payload, '$.agentCode'), '')
             WHERE payload IS NOT NULL AND json_valid(payload);
         UPDATE items SET agent_code = coalesce(json_extract(fields, '$.agentCode'), '')
             WHERE payload IS NULL AND fields IS NOT NULL AND json_valid(fields);",
    )?;
    conn.execute_batch(SUPERSEDED)?;
    // One pass ranks every document's rows (the survivor first) and finds
    // its latest input; a correlated query per survivor would be
    // quadratic in the documents merged.
    conn.execute_batch(
        "CREATE TEMP TABLE ranked AS
             SELECT id,
                    first_value(id) OVER best AS survivor,
                    row_number() OVER best AS rank,
                    first_value(seen_run) OVER latest AS latest_run,
                    first_value(source) OVER latest AS latest_source,
                    first_value(line) OVER latest AS latest_line
             FROM items WHERE payload IS NOT NULL
             WINDOW best AS (
                        PARTITION BY document_reference, agent_code
                        ORDER BY CASE status WHEN 'tracked' THEN 0 WHEN 'bad_response' THEN 1
                                             WHEN 'pending' THEN 2 ELSE 3 END,
                                 CASE WHEN status IN ('tracked', 'bad_response', 'pending')
                                      THEN id ELSE -id END),
                    latest AS (
                        PARTITION BY document_reference, agent_code
                        ORDER BY seen_run DESC, id DESC);
         CREATE INDEX temp.ranked_id ON ranked(id);
         UPDATE items SET seen_run = r.latest_run, source = r.latest_source, line = r.latest_line
             FROM ranked r
             WHERE r.id = items.id AND r.rank = 1
               AND (items.seen_run != r.latest_run OR items.source != r.latest_source
                    OR items.line != r.latest_line);",
    )?;
    let merged = conn.execute(
        &format!(
            "INSERT INTO superseded ({ITEM_COLUMNS}, merged_into, superseded_at)
             SELECT {cols}, r.survivor, ?1 FROM items JOIN ranked r ON r.id = items.id
             WHERE r.rank > 1",
            cols = ITEM_COLUMNS
                .split(", ")
                .map(|c| format!("items.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        [now_rfc3339()],
    )?;
    conn.execute_batch(
        "DELETE FROM items WHERE id IN (SELECT id FROM ranked WHERE rank > 1);
         DROP TABLE ranked;
         DROP INDEX IF EXISTS items_payload;
         DROP INDEX IF EXISTS items_pending;
         CREATE UNIQUE INDEX items_document ON items(document_reference, agent_code)
             WHERE payload IS NOT NULL;
         CREATE INDEX items_pending ON items(id) WHERE status = 'pending';
                  CREATE INDEX items_in_flight ON items(id) WHERE in_flight = 1;
         CREATE INDEX items_rejected_document ON items(document_reference, agent_code)
             WHERE status = 'rejected';",
    )?;
    Ok(merged as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schema 2 as trackmass 99c7ffe created it.
    const SCHEMA_2: &str = "
        CREATE TABLE runs (id INTEGER PRIMARY KEY, command TEXT NOT NULL, input TEXT,
            config TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, outcome TEXT,
            summary TEXT, batch INTEGER, loaded_at TEXT);
        CREATE TABLE items (id INTEGER PRIMARY KEY, source TEXT NOT NULL, line INTEGER NOT NULL,
            document_reference TEXT NOT NULL, payload TEXT, status TEXT NOT NULL,
            seen_run INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            in_flight INTEGER NOT NULL DEFAULT 0, was_in_flight INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER, code TEXT, message TEXT, details TEXT, tracking_id TEXT,
            units TEXT, unit_count INTEGER, answered_run INTEGER, updated_at TEXT, fields TEXT);
        CREATE UNIQUE INDEX items_payload ON items(payload) WHERE payload IS NOT NULL;
        CREATE INDEX items_pending ON items(seen_run, id) WHERE status = 'pending';
        CREATE INDEX items_run_line ON items(seen_run, line);
        CREATE INDEX items_rejected ON items(source) WHERE status = 'rejected';
        PRAGMA user_version = 2;";

    fn item(conn: &Connection, id: i64, reference: &str, payload: &str, status: &str, run: i64) {
        conn.execute(
            "INSERT INTO items (id, source, line, document_reference, payload, status, seen_run,
                 tracking_id, answered_run)
             VALUES (?1, 'in.csv', ?1 + 1, ?2, ?3, ?4, ?5,
                 CASE WHEN ?4 = 'tracked' THEN 'TRK' || ?1 END, ?5)",
            rusqlite::params![id, reference, payload, status, run],
        )
        .unwrap();
    }

    #[test]
    fn schema_2_becomes_one_row_per_document_and_keeps_the_rest_aside() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_2).unwrap();
        conn.execute(
            "INSERT INTO runs (id, command, config, started_at, batch, loaded_at, outcome)
             VALUES (1, 'run', '{\"force\":false}', 't', 1, 't', 'completed'),
                    (2, 'run', '{\"force\":true}', 't', 2, 't', 'interrupted')",
            [],
        )
        .unwrap();
        // A: tracked twice (plain, then with a way): the first tracking stays.
        item(&conn, 1, "A", r#"{"documentReference":"A"}"#, "tracked", 1);
        item(
            &conn,
            2,
            "A",
            r#"{"documentReference":"A","way":"Export"}"#,
            "tracked",
            2,
        );
        // B: failed, then corrected and still pending: the owed request stays.
        item(&conn, 3, "B", r#"{"documentReference":"B"}"#, "failed", 1);
        item(
            &conn,
            4,
            "B",
            r#"{"documentReference":"B","place":"X"}"#,
            "pending",
            2,
        );
        // C: failed, then exhausted: the latest answer stays.
        item(&conn, 5, "C", r#"{"documentReference":"C"}"#, "failed", 1);
        item(
            &conn,
            6,
            "C",
            r#"{"documentReference":"C","place":"Y"}"#,
            "exhausted",
            2,
        );
        // D with and without an agent code: two documents.
        item(&conn, 7, "D", r#"{"documentReference":"D"}"#, "tracked", 1);
        item(
            &conn,
            8,
            "D",
            r#"{"documentReference":"D","agentCode":"CCGM"}"#,
            "tracked",
            1,
        );
        let report = check_and_migrate(&conn, Path::new("t.db"))
            .unwrap()
            .unwrap();
        assert!(report.contains("3 rows"), "{report}");

        let rows: Vec<(i64, String, String, String, i64)> = conn
            .prepare("SELECT id, document_reference, agent_code, status, seen_run FROM items ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [
            (1, "A", "", "tracked", 2),
            (4, "B", "", "pending", 2),
            (6, "C", "", "exhausted", 2),
            (7, "D", "", "tracked", 1),
            (8, "D", "CCGM", "tracked", 1),
        ];
        assert_eq!(rows.len(), expected.len(), "{rows:?}");
        for (row, want) in rows.iter().zip(expected) {
            assert_eq!(
                (row.0, row.1.as_str(), row.2.as_str(), row.3.as_str(), row.4),
                want
            );
        }
        let aside: Vec<(i64, String, i64)> = conn
            .prepare("SELECT id, status, merged_into FROM superseded ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            aside,
            [
                (2, "tracked".to_string(), 1),
                (3, "failed".to_string(), 4),
                (5, "failed".to_string(), 6)
            ]
        );
        let forced: Vec<i64> = conn
            .prepare("SELECT force FROM runs ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(forced, [0, 1]);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_migration_that_fails_leaves_the_file_as_it_was() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_2).unwrap();
        // A table in the way of the migration makes it fail halfway.
        conn.execute_batch("CREATE TABLE superseded (x)").unwrap();
        item(&conn, 1, "A", r#"{"documentReference":"A"}"#, "tracked", 1);
        assert!(check_and_migrate(&conn, Path::new("t.db")).is_err());
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
        let columns: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('items') WHERE name = 'agent_code'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(columns, 0, "the ALTER TABLE was rolled back");
    }
}
