//! Reading the input CSV and validating its rows against the spec.
//!
//! Reading is sequential (a CSV cannot be split safely before it is parsed),
//! validation is pure and runs on chunks in parallel with rayon. Every row
//! ends up either as a [`ValidRow`] carrying the exact JSON body to send, or
//! as a [`Reject`] naming its line and what is wrong; nothing is dropped
//! silently except blank lines.
//!
//! - `reader`: opening the file, sniffing its dialect, records with lines;
//! - `lines`: the line index behind those line numbers;
//! - `header`: which column holds which field;
//! - `validate`: a record's fields against the spec, into a request body.

use std::path::{Path, PathBuf};

use serde::Serialize;

mod header;
mod lines;
mod reader;
mod validate;

pub use header::{Columns, map_columns};
pub use reader::{InputReader, ReadOptions};
pub use validate::{
    Defaults, Fields, unneutralise, validate_chunk, validate_fields, validate_record,
};

/// How many records are validated together: large enough to keep rayon
/// busy, small enough to keep memory flat on a million-row file.
pub const CHUNK_ROWS: usize = 8192;

/// A row that passed validation: the exact request body to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRow {
    pub line: u64,
    pub document_reference: String,
    /// With the reference, the document's identity ('' when none is given).
    pub agent_code: String,
    /// Canonical JSON body: fixed key order, empty fields omitted. Two rows
    /// that would send the same request have the same payload.
    pub payload: String,
}

/// A row refused before sending, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    /// The reference as read (may be empty or unreadable).
    pub document_reference: String,
    /// The other fields as read (defaults applied), so that the row can be
    /// corrected from `failures.csv` alone.
    pub fields: OptionalFields,
    pub problems: Vec<Problem>,
}

/// A request's optional fields as text, keyed as in the request body: a
/// row's as read, or the defaults applied to every row ([`Defaults`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionalFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub way: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// `agent_code` in the run settings that state files before this
    /// shape stored.
    #[serde(default, alias = "agent_code", skip_serializing_if = "Option::is_none")]
    pub agent_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Reject {
    /// One sentence for logs and the `message` column.
    pub fn message(&self) -> String {
        self.problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One thing wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

/// The outcome of reading and validating one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Valid(ValidRow),
    Rejected(Reject),
}

impl Row {
    pub fn line(&self) -> u64 {
        match self {
            Row::Valid(v) => v.line,
            Row::Rejected(r) => r.line,
        }
    }
}

/// One record as read: its line and its raw fields.
#[derive(Debug, Clone)]
pub struct Record {
    pub line: u64,
    pub fields: csv::ByteRecord,
}

/// An error about the input file as a whole (not one row).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", name(path), line.map_or(String::new(), |l| format!("line {l}: ")))]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub message: String,
}

/// The input as messages name it.
fn name(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_string()
    } else {
        path.display().to_string()
    }
}

/// Warns, when `rows` is 0, that `path` had a header and no data row:
/// not an error (exit 0), never silent.
pub fn warn_if_empty(path: &Path, rows: u64) {
    if rows == 0 {
        tracing::warn!(
            "{}: no data row after the header: nothing of it to send (an export that \
             came out empty?)",
            path.display()
        );
    }
}

/// `-` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

#[cfg(test)]
mod tests;
