//! Reading the input CSV and validating its rows against the spec.
//!
//! Reading is sequential (a CSV cannot be split safely before it is parsed),
//! validation is pure and runs on chunks in parallel with rayon. Every row
//! ends up either as a [`ValidRow`] carrying the exact JSON body to send, or
//! as a [`Reject`] naming its line and what is wrong; nothing is dropped
//! silently except blank lines.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::spec;

/// How many records are validated together: large enough to keep rayon
/// busy, small enough to keep memory flat on a million-row file.
pub const CHUNK_ROWS: usize = 8192;

/// Values applied to a row whose own cell is empty or whose column is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Defaults {
    pub way: Option<String>,
    pub place: Option<String>,
    pub agent_code: Option<String>,
    pub url: Option<String>,
}

impl Defaults {
    /// Checks the defaults themselves, so that a bad `--way` is a usage error
    /// rather than a reject on every row.
    pub fn validate(&self) -> Result<(), String> {
        let probe = Fields {
            document_reference: "probe",
            way: self.way.as_deref(),
            place: self.place.as_deref(),
            agent_code: self.agent_code.as_deref(),
            url: self.url.as_deref(),
        };
        match validate_fields(&probe) {
            Ok(_) => Ok(()),
            Err(problems) => Err(problems
                .iter()
                .map(|p| format!("--{}: {}", flag_name(p.field), p.message))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }
}

fn flag_name(field: &str) -> &str {
    match field {
        "agentCode" => "agent-code",
        "url" => "webhook-url",
        other => other,
    }
}

/// Options that shape how the file is read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Header of the column holding the document reference (`--column`).
    pub column: Option<String>,
    /// Field delimiter; detected from the header line when `None`.
    pub delimiter: Option<u8>,
    /// The file's encoding when not UTF-8 (`--encoding`): transcoded to
    /// UTF-8 as it is read.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// The sheet of a spreadsheet input (`--sheet`); the first if `None`.
    pub sheet: Option<String>,
}

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

/// A row's optional fields as text, keyed as in the request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionalFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub way: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// The request body, in the spec's property order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    document_reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    way: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    place: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

/// The field values of one row after defaults are applied and cells trimmed.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub document_reference: &'a str,
    pub way: Option<&'a str>,
    pub place: Option<&'a str>,
    pub agent_code: Option<&'a str>,
    pub url: Option<&'a str>,
}

/// Validates one row's fields against the spec and builds its JSON body.
///
/// Empty optional fields are omitted (never sent as `null`); `way` is
/// accepted in any case and sent with the spec's spelling.
pub fn validate_fields(fields: &Fields<'_>) -> Result<String, Vec<Problem>> {
    let mut problems = Vec::new();

    let reference = fields.document_reference;
    if reference.is_empty() {
        problems.push(problem("documentReference", "is empty".into()));
    } else if let Some(p) = control_character("documentReference", reference) {
        problems.push(p);
    } else if SCIENTIFIC.is_match(reference) {
        problems.push(problem(
            "documentReference",
            format!(
                "{} is a number in scientific notation, as Excel shows a long numeric \
                 reference: its last digits are lost; format the column as Text in the \
                 spreadsheet (or export it from the source system as text) and export again",
                quoted(reference)
            ),
        ));
    }

    let way = match non_empty(fields.way) {
        None => None,
        Some(w) => match spec::canonical_way(w) {
            Some(canonical) => Some(canonical),
            None => {
                problems.push(problem(
                    "way",
                    format!(
                        "{} is not a customs indicator (expected one of {})",
                        quoted(w),
                        spec::CUSTOMS_INDICATORS.join(", ")
                    ),
                ));
                None
            }
        },
    };

    let place = non_empty(fields.place);
    if let Some(p) = place {
        problems.extend(bounded_text("place", p, spec::PLACE_MAX_CHARS));
    }
    let agent_code = non_empty(fields.agent_code);
    if let Some(a) = agent_code {
        problems.extend(bounded_text("agentCode", a, spec::AGENT_CODE_MAX_CHARS));
    }

    let url = non_empty(fields.url);
    // A URL with the receiver's token placeholder (failures.csv written
    // from a run with --webhooks, as an input again) is checked as the URL
    // it stands for; the token goes in at sending.
    let placeholder = crate::webhooks::token::PLACEHOLDER;
    if let Some(u) = url
        && !spec::url_matches(&u.replace(placeholder, &"0".repeat(crate::webhooks::token::LEN)))
    {
        problems.push(problem(
            "url",
            format!(
                "{} does not match the API's webhook URL pattern \
                 (lowercase host with a dot, no port, no IP address, no query string)",
                quoted(u)
            ),
        ));
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let body = Body {
        document_reference: reference,
        way,
        place,
        agent_code,
        url,
    };
    serde_json::to_string(&body).map_err(|e| vec![problem("documentReference", e.to_string())])
}

/// A value quoted in a message, cut short when long: a 10 MB cell must
/// not become a 10 MB message.
fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    if spec::char_len(value) <= SHOWN {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(SHOWN).collect();
    format!("{:?}…", head)
}

/// A number as Excel writes a long one it shows in scientific notation
/// (`3,71424E+09`, `3.71424E+09`, `4E+11`): one digit, maybe a decimal
/// part, `E`, a sign, two or more digits.
static SCIENTIFIC: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[0-9]([.,][0-9]+)?[eE][+-][0-9]{2,}$").expect("a valid regex")
});

fn problem(field: &'static str, message: String) -> Problem {
    Problem { field, message }
}

/// A cell read back from a result file: the `'` that
/// [`crate::report::neutralise`] put before a cell that needed it is
/// removed.
pub fn unneutralise(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if crate::report::needs_guard(rest) => rest,
        _ => cell,
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn control_character(field: &'static str, value: &str) -> Option<Problem> {
    value.chars().find(|c| c.is_control()).map(|c| {
        problem(
            field,
            format!("contains the control character U+{:04X}", c as u32),
        )
    })
}

fn bounded_text(field: &'static str, value: &str, max: usize) -> Option<Problem> {
    let len = spec::char_len(value);
    if len > max {
        return Some(problem(
            field,
            format!(
                "{} is {len} characters long, the API allows at most {max}",
                quoted(value)
            ),
        ));
    }
    control_character(field, value)
}

/// Where each field lives in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub document_reference: usize,
    pub way: Option<usize>,
    pub place: Option<usize>,
    pub agent_code: Option<usize>,
    pub url: Option<usize>,
    /// Number of fields in the header: a row with another count is ragged.
    pub width: usize,
}

impl Columns {
    /// The columns read, by index, with the field each fills.
    pub fn used(&self) -> Vec<(usize, &'static str)> {
        let mut used = vec![(self.document_reference, "documentReference")];
        for (index, field) in [
            (self.way, "way"),
            (self.place, "place"),
            (self.agent_code, "agentCode"),
            (self.url, "url"),
        ] {
            if let Some(i) = index {
                used.push((i, field));
            }
        }
        used.sort();
        used
    }

    /// Which header columns are read (and as what) and which ignored, for
    /// the start line and `validate`.
    pub fn describe(&self, header: &[String]) -> String {
        let used = self.used();
        let name = |i: usize| header.get(i).map_or("", String::as_str);
        let read: Vec<String> = used
            .iter()
            .map(|(i, field)| {
                if name(*i) == *field {
                    format!("{field} (column {})", i + 1)
                } else {
                    format!("{field} from {:?} (column {})", name(*i), i + 1)
                }
            })
            .collect();
        let ignored: Vec<String> = (0..header.len())
            .filter(|i| !used.iter().any(|(u, _)| u == i))
            .map(|i| format!("{:?}", name(i)))
            .collect();
        let mut text = format!("columns read: {}", read.join(", "));
        if !ignored.is_empty() {
            text.push_str(&format!("; ignored: {}", ignored.join(", ")));
        }
        text
    }
}

/// Header names compared loosely: case, `_`, `-` and spaces do not matter.
fn normalize_header(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds the columns in a header row. `column` is `--column`.
pub fn map_columns(header: &[String], column: Option<&str>) -> Result<Columns, String> {
    let wanted_reference = column
        .map(normalize_header)
        .unwrap_or_else(|| "documentreference".to_string());
    let mut columns = Columns {
        document_reference: usize::MAX,
        way: None,
        place: None,
        agent_code: None,
        url: None,
        width: header.len(),
    };
    let mut found_reference = None;
    for (i, name) in header.iter().enumerate() {
        let key = normalize_header(name);
        let slot = if key == wanted_reference {
            if let Some(first) = found_reference {
                return Err(format!(
                    "columns {} and {} are both named {:?}; rename one or pick one with --column",
                    first + 1,
                    i + 1,
                    name.trim()
                ));
            }
            found_reference = Some(i);
            continue;
        } else {
            match key.as_str() {
                "way" => &mut columns.way,
                "place" => &mut columns.place,
                "agentcode" => &mut columns.agent_code,
                "url" | "webhookurl" => &mut columns.url,
                _ => continue,
            }
        };
        if slot.is_none() {
            *slot = Some(i);
        }
    }
    match found_reference {
        Some(i) => {
            columns.document_reference = i;
            Ok(columns)
        }
        None => {
            let found = header
                .iter()
                .map(|h| format!("{:?}", h.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            Err(match column {
                Some(c) => format!("no column named {c:?} in the header (found: {found})"),
                None => format!(
                    "no documentReference column in the header (found: {found}); \
                     name the column with --column NAME"
                ),
            })
        }
    }
}

/// One record as read: its line and its raw fields.
#[derive(Debug, Clone)]
pub struct Record {
    pub line: u64,
    pub fields: csv::ByteRecord,
}

/// Validates one record; pure.
pub fn validate_record(record: &Record, columns: &Columns, defaults: &Defaults) -> Row {
    let line = record.line;
    let raw_reference = record
        .fields
        .get(columns.document_reference)
        .map(|b| unneutralise(String::from_utf8_lossy(b).trim()).to_string())
        .unwrap_or_default();
    let reject = |problems: Vec<Problem>| {
        Row::Rejected(Reject {
            line,
            document_reference: raw_reference.clone(),
            fields: fields_as_read(record, columns, defaults),
            problems,
        })
    };

    if record.fields.len() != columns.width {
        return reject(vec![problem(
            "row",
            format!(
                "has {} fields where the header has {}",
                record.fields.len(),
                columns.width
            ),
        )]);
    }

    let mut problems = Vec::new();
    let mut cell = |index: Option<usize>, field: &'static str| -> Option<&str> {
        let bytes = record.fields.get(index?)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(unneutralise(text.trim())),
            Err(e) => {
                problems.push(problem(
                    field,
                    format!(
                        "is not valid UTF-8 (bad byte at offset {}); save the file as UTF-8, or pass --encoding windows-1252 if Excel saved it as \"CSV (semicolon)\"",
                        e.valid_up_to()
                    ),
                ));
                None
            }
        }
    };
    let document_reference = cell(Some(columns.document_reference), "documentReference");
    let way = cell(columns.way, "way");
    let place = cell(columns.place, "place");
    let agent_code = cell(columns.agent_code, "agentCode");
    let url = cell(columns.url, "url");
    if !problems.is_empty() {
        return reject(problems);
    }
    let or_default = |cell: Option<&str>, default: &Option<String>| -> Option<String> {
        match non_empty(cell) {
            Some(v) => Some(v.to_string()),
            None => default.clone(),
        }
    };
    let way = or_default(way, &defaults.way);
    let place = or_default(place, &defaults.place);
    let agent_code = or_default(agent_code, &defaults.agent_code);
    let url = or_default(url, &defaults.url);
    let fields = Fields {
        document_reference: document_reference.unwrap_or(""),
        way: way.as_deref(),
        place: place.as_deref(),
        agent_code: agent_code.as_deref(),
        url: url.as_deref(),
    };
    match validate_fields(&fields) {
        Ok(payload) => Row::Valid(ValidRow {
            line,
            document_reference: fields.document_reference.to_string(),
            agent_code: fields.agent_code.unwrap_or("").to_string(),
            payload,
        }),
        Err(problems) => reject(problems),
    }
}

/// A rejected record's optional fields, read leniently (bad UTF-8 replaced;
/// nothing from a ragged row, whose columns cannot be trusted).
fn fields_as_read(record: &Record, columns: &Columns, defaults: &Defaults) -> OptionalFields {
    let ragged = record.fields.len() != columns.width;
    let read = |index: Option<usize>, default: &Option<String>| -> Option<String> {
        let cell = index
            .filter(|_| !ragged)
            .and_then(|i| record.fields.get(i))
            .map(|b| unneutralise(String::from_utf8_lossy(b).trim()).to_string())
            .filter(|v| !v.is_empty());
        cell.or_else(|| default.clone())
    };
    OptionalFields {
        way: read(columns.way, &defaults.way),
        place: read(columns.place, &defaults.place),
        agent_code: read(columns.agent_code, &defaults.agent_code),
        url: read(columns.url, &defaults.url),
    }
}

/// Validates a chunk of records in parallel, keeping their order.
pub fn validate_chunk(records: &[Record], columns: &Columns, defaults: &Defaults) -> Vec<Row> {
    records
        .par_iter()
        .map(|r| validate_record(r, columns, defaults))
        .collect()
}

/// An error about the input file as a whole (not one row).
#[derive(Debug)]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if is_stdin(&self.path) {
            "standard input".to_string()
        } else {
            self.path.display().to_string()
        };
        match self.line {
            Some(line) => write!(f, "{name}: line {line}: {}", self.message),
            None => write!(f, "{name}: {}", self.message),
        }
    }
}

/// `-` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl std::error::Error for InputError {}

/// Line numbers as an editor shows them.
///
/// The csv crate's own line count is off after CRLF line ends and skipped
/// blank lines, and it does not know lone CR line ends; so this wrapper
/// watches the bytes the parser reads and maps a record's starting byte
/// offset to the line its content starts on. It keeps only the lines read
/// ahead of the parser (a buffer's worth), so memory stays flat.
mod lines {
    use std::collections::VecDeque;
    use std::io::{self, Read};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Copy)]
    struct Line {
        start: u64,
        empty: bool,
    }

    #[derive(Debug)]
    pub struct Index {
        /// Lines not yet passed by a query; the last one is still open.
        lines: VecDeque<Line>,
        /// Number of `lines.front()`.
        front_number: u64,
        offset: u64,
        pending_cr: bool,
        /// Number of `"` read so far: odd at the end means a quote that
        /// never closes.
        quotes: u64,
    }

    impl Index {
        pub fn new() -> Index {
            Index {
                lines: VecDeque::from([Line {
                    start: 0,
                    empty: true,
                }]),
                front_number: 1,
                offset: 0,
                pending_cr: false,
                quotes: 0,
            }
        }

        /// Whether an odd number of `"` was read.
        pub fn unbalanced_quotes(&self) -> bool {
            self.quotes % 2 == 1
        }

        pub fn observe(&mut self, bytes: &[u8]) {
            for &b in bytes {
                if b == b'"' {
                    self.quotes += 1;
                }
                let at = self.offset;
                self.offset += 1;
                if self.pending_cr {
                    self.pending_cr = false;
                    if b == b'\n' {
                        // CRLF: the new line starts after the LF.
                        if let Some(last) = self.lines.back_mut() {
                            last.start = at + 1;
                        }
                        continue;
                    }
                }
                match b {
                    b'\r' => {
                        self.pending_cr = true;
                        self.lines.push_back(Line {
                            start: at + 1,
                            empty: true,
                        });
                    }
                    b'\n' => self.lines.push_back(Line {
                        start: at + 1,
                        empty: true,
                    }),
                    _ => {
                        if let Some(last) = self.lines.back_mut() {
                            last.empty = false;
                        }
                    }
                }
            }
        }

        /// Line of the first content at or after byte `offset` (offsets
        /// only grow from one call to the next).
        pub fn line_at(&mut self, offset: u64) -> u64 {
            while self.lines.len() > 1 && self.lines.front().is_some_and(|l| l.start < offset) {
                self.lines.pop_front();
                self.front_number += 1;
            }
            let skipped = self.lines.iter().take_while(|l| l.empty).count();
            let skipped = skipped.min(self.lines.len().saturating_sub(1));
            self.front_number + skipped as u64
        }
    }

    /// A reader that reports what it reads to an [`Index`].
    pub struct Tracking<R> {
        inner: R,
        index: Arc<Mutex<Index>>,
    }

    impl<R: Read> Tracking<R> {
        pub fn new(inner: R) -> (Tracking<R>, Arc<Mutex<Index>>) {
            let index = Arc::new(Mutex::new(Index::new()));
            (
                Tracking {
                    inner,
                    index: index.clone(),
                },
                index,
            )
        }
    }

    impl<R: Read> Read for Tracking<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            if let Ok(mut index) = self.index.lock() {
                index.observe(&buf[..n]);
            }
            Ok(n)
        }
    }
}

/// A CSV input opened, its header read and its columns found.
pub struct InputReader {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read + Send>>,
    lines: std::sync::Arc<std::sync::Mutex<lines::Index>>,
    columns: Columns,
    /// The header's names, as read (trimmed).
    header: Vec<String>,
    delimiter: u8,
    header_line: u64,
    /// Line of the last record if one of its fields spans lines.
    last_multiline: Option<u64>,
}

impl fmt::Debug for InputReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputReader")
            .field("path", &self.path)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl InputReader {
    /// Opens `path`, detects its dialect and maps its header.
    pub fn open(path: &Path, options: &ReadOptions) -> Result<InputReader> {
        let input_error = |line: Option<u64>, message: String| InputError {
            path: path.to_path_buf(),
            line,
            message,
        };
        let spreadsheet = !is_stdin(path) && crate::sheet::is_spreadsheet(path);
        let source: Box<dyn Read + Send> = if is_stdin(path) {
            Box::new(io::stdin())
        } else if spreadsheet {
            Box::new(io::Cursor::new(crate::sheet::to_csv(
                path,
                options.sheet.as_deref(),
            )?))
        } else {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("{}: cannot read the input file", path.display()))?;
            if meta.is_dir() {
                return Err(input_error(None, "is a directory, not a CSV file".into()).into());
            }
            Box::new(
                File::open(path)
                    .with_context(|| format!("{}: cannot open the input file", path.display()))?,
            )
        };
        let source: Box<dyn Read + Send> = match options.encoding {
            Some(e) if e != encoding_rs::UTF_8 => Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .encoding(Some(e))
                    .bom_override(true)
                    .build(source),
            ),
            _ => source,
        };
        let mut file = BufReader::with_capacity(1 << 16, source);

        // Sniff the start of the file: encoding marks and the header line.
        let mut head = Vec::with_capacity(1 << 16);
        (&mut file)
            .take(1 << 16)
            .read_to_end(&mut head)
            .with_context(|| format!("{}: cannot read the input file", path.display()))?;
        if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
            return Err(input_error(
                None,
                "is encoded as UTF-16; save it as UTF-8 (\"CSV UTF-8\" in Excel)".into(),
            )
            .into());
        }
        let first_line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
        if first_line.len() >= 4
            && first_line.iter().filter(|b| **b == 0).count() * 3 >= first_line.len()
        {
            return Err(input_error(
                Some(1),
                "the header is full of NUL bytes: the file looks UTF-16 encoded (without a BOM); \
                 save it as UTF-8 (\"CSV UTF-8\" in Excel)"
                    .into(),
            )
            .into());
        }
        let start = if head.starts_with(UTF8_BOM) { 3 } else { 0 };
        let delimiter = match options.delimiter {
            _ if spreadsheet => b',',
            Some(d) => d,
            None => detect_delimiter(&head[start..]),
        };
        let (tracking, line_index) =
            lines::Tracking::new(io::Cursor::new(head[start..].to_vec()).chain(file));
        let rest: Box<dyn Read + Send> = Box::new(tracking);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(rest);

        // The header is the first record that is not blank.
        let mut record = csv::ByteRecord::new();
        let (header, header_line) = loop {
            let more = reader
                .read_byte_record(&mut record)
                .map_err(|e| csv_error(path, &e))?;
            if !more {
                return Err(input_error(
                    None,
                    "is empty: expected a header row with a documentReference column".into(),
                )
                .into());
            }
            if is_blank(&record) {
                continue;
            }
            let line = line_of(&line_index, &record);
            let header = record
                .iter()
                .map(|b| {
                    std::str::from_utf8(b)
                        .map(|s| s.trim().to_string())
                        .map_err(|_| {
                            input_error(
                                Some(line),
                                "the header is not valid UTF-8; save the file as UTF-8, or pass --encoding windows-1252 if Excel saved it as \"CSV (semicolon)\"".into(),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            break (header, line);
        };
        let columns = map_columns(&header, options.column.as_deref())
            .map_err(|m| input_error(Some(header_line), m))?;
        Ok(InputReader {
            path: path.to_path_buf(),
            reader,
            lines: line_index,
            columns,
            header,
            delimiter,
            header_line,
            last_multiline: None,
        })
    }

    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Which columns are read and which ignored (see [`Columns::describe`]).
    pub fn describe_columns(&self) -> String {
        self.columns.describe(&self.header)
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    pub fn header_line(&self) -> u64 {
        self.header_line
    }

    /// Reads up to `max` non-blank records; an empty vector means the end.
    pub fn next_chunk(&mut self, max: usize) -> Result<Vec<Record>> {
        let mut chunk = Vec::with_capacity(max.min(CHUNK_ROWS));
        let mut record = csv::ByteRecord::new();
        while chunk.len() < max {
            let more = self
                .reader
                .read_byte_record(&mut record)
                .map_err(|e| csv_error(&self.path, &e))?;
            if !more {
                self.check_unclosed_quote()?;
                break;
            }
            if is_blank(&record) {
                continue;
            }
            let line = line_of(&self.lines, &record);
            let multiline = record
                .iter()
                .any(|f| f.iter().any(|b| *b == b'\n' || *b == b'\r'));
            self.last_multiline = multiline.then_some(line);
            chunk.push(Record {
                line,
                fields: record.clone(),
            });
        }
        Ok(chunk)
    }
}

impl InputReader {
    /// At the end of the file: a last record spanning lines while the file
    /// holds an odd number of quotes means a quote opened and never closed,
    /// which swallowed every row after it into one field.
    fn check_unclosed_quote(&self) -> Result<()> {
        let unbalanced = self
            .lines
            .lock()
            .map(|i| i.unbalanced_quotes())
            .unwrap_or(false);
        match self.last_multiline {
            Some(line) if unbalanced => Err(InputError {
                path: self.path.clone(),
                line: Some(line),
                message: "a quoted field opens on this line and is never closed, so the rest \
                          of the file reads as one field; close the quote and run again"
                    .into(),
            }
            .into()),
            _ => Ok(()),
        }
    }
}

fn line_of(index: &std::sync::Mutex<lines::Index>, record: &csv::ByteRecord) -> u64 {
    let offset = record.position().map_or(0, |p| p.byte());
    index.lock().map_or(0, |mut i| i.line_at(offset))
}

fn csv_error(path: &Path, error: &csv::Error) -> anyhow::Error {
    let line = None;
    let message = match error.kind() {
        csv::ErrorKind::Io(e) => format!("cannot read the input file: {e}"),
        _ => format!("unreadable CSV: {error}"),
    };
    InputError {
        path: path.to_path_buf(),
        line,
        message,
    }
    .into()
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record
        .iter()
        .all(|field| field.iter().all(|b| b.is_ascii_whitespace()))
}

/// Picks `,`, `;` or tab: whichever appears most often (outside quotes) in
/// the first non-blank line. A single-column file has none: `,` then.
pub fn detect_delimiter(head: &[u8]) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut in_quotes = false;
    // The header is the first line with something other than spaces and
    // tabs on it (quoted text counts); delimiters inside quotes do not.
    let mut seen_content = false;
    for &b in head {
        match b {
            b'"' => {
                in_quotes = !in_quotes;
                seen_content = true;
            }
            b'\n' | b'\r' if !in_quotes => {
                if seen_content {
                    break;
                }
                // A blank line before the header: forget its tabs.
                counts.iter_mut().for_each(|(_, n)| *n = 0);
            }
            _ if in_quotes => {}
            _ => {
                if !b.is_ascii_whitespace() {
                    seen_content = true;
                }
                for (d, n) in counts.iter_mut() {
                    if *d == b {
                        *n += 1;
                    }
                }
            }
        }
    }
    counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
        .map_or(b',', |(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(reference: &str) -> Fields<'_> {
        Fields {
            document_reference: reference,
            way: None,
            place: None,
            agent_code: None,
            url: None,
        }
    }

    #[test]
    fn minimal_body_has_only_the_reference() {
        let body = validate_fields(&fields("3714238101")).unwrap();
        assert_eq!(body, r#"{"documentReference":"3714238101"}"#);
    }

    #[test]
    fn full_body_follows_the_spec_order_and_spelling() {
        let f = Fields {
            way: Some("import"),
            place: Some("MTDF"),
            agent_code: Some("CCGM"),
            url: Some("https://my-webhook-endpoints.com"),
            ..fields("3714238101")
        };
        let body = validate_fields(&f).unwrap();
        assert_eq!(
            body,
            r#"{"documentReference":"3714238101","way":"Import","place":"MTDF","agentCode":"CCGM","url":"https://my-webhook-endpoints.com"}"#
        );
    }

    #[test]
    fn empty_optional_fields_are_omitted_not_null() {
        let f = Fields {
            way: Some(""),
            place: Some(""),
            ..fields("X1")
        };
        let body = validate_fields(&f).unwrap();
        assert!(!body.contains("null"), "{body}");
        assert!(!body.contains("way"), "{body}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let f = Fields {
            way: Some("Inport"),
            place: Some("TERMINAL DE FRANCE NORD"),
            agent_code: Some(&"A".repeat(65)),
            url: Some("http://localhost:8080/hook"),
            ..fields("")
        };
        let problems = validate_fields(&f).unwrap_err();
        let named: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            named,
            ["documentReference", "way", "place", "agentCode", "url"]
        );
        assert!(
            problems[2].message.contains("23 characters"),
            "{problems:?}"
        );
        assert!(problems[3].message.contains("at most 64"), "{problems:?}");
    }

    #[test]
    fn place_limit_counts_characters() {
        // 20 characters, 22 bytes: allowed.
        let place = "ÉÉabcdefghijklmnopqr";
        assert_eq!(place.chars().count(), 20);
        assert!(
            validate_fields(&Fields {
                place: Some(place),
                ..fields("X")
            })
            .is_ok()
        );
        let too_long = format!("{place}s");
        assert!(
            validate_fields(&Fields {
                place: Some(&too_long),
                ..fields("X")
            })
            .is_err()
        );
    }

    #[test]
    fn control_characters_in_a_reference_are_refused() {
        let problems = validate_fields(&fields("ABC\u{0}123")).unwrap_err();
        assert!(problems[0].message.contains("U+0000"), "{problems:?}");
    }

    #[test]
    fn json_escaping_keeps_quotes_and_unicode_safe() {
        let body = validate_fields(&fields("BL \"7\" – Zürich")).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["documentReference"], "BL \"7\" – Zürich");
    }

    #[test]
    fn header_matching_is_loose_about_case_and_separators() {
        let header: Vec<String> = ["Agent_Code", "DOCUMENT_REFERENCE", "Way", "webhook-url"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = map_columns(&header, None).unwrap();
        assert_eq!(c.document_reference, 1);
        assert_eq!(c.agent_code, Some(0));
        assert_eq!(c.way, Some(2));
        assert_eq!(c.url, Some(3));
        assert_eq!(c.place, None);
    }

    #[test]
    fn column_flag_picks_another_header() {
        let header = vec!["BL number".to_string(), "place".to_string()];
        let c = map_columns(&header, Some("bl number")).unwrap();
        assert_eq!(c.document_reference, 0);
        let err = map_columns(&header, None).unwrap_err();
        assert!(err.contains("--column"), "{err}");
        assert!(err.contains("\"BL number\""), "{err}");
    }

    #[test]
    fn two_reference_columns_are_an_error() {
        let header = vec![
            "documentReference".to_string(),
            "document_reference".to_string(),
        ];
        let err = map_columns(&header, None).unwrap_err();
        assert!(err.contains("columns 1 and 2"), "{err}");
    }

    #[test]
    fn delimiter_detection() {
        assert_eq!(detect_delimiter(b"documentReference;way\r\n1;Import"), b';');
        assert_eq!(detect_delimiter(b"documentReference\tway\n"), b'\t');
        assert_eq!(detect_delimiter(b"documentReference,way,place\n"), b',');
        assert_eq!(detect_delimiter(b"documentReference\n1\n"), b',');
        // Delimiters inside quotes do not count.
        assert_eq!(detect_delimiter(b"\"a;b;c\",documentReference\n"), b',');
        // Leading blank lines are skipped.
        assert_eq!(detect_delimiter(b"\n\n documentReference;way\n"), b';');
        // A quoted header is the header, not the line after it.
        assert_eq!(detect_delimiter(b"\"documentReference\"\nMSC;123\n"), b',');
        // A blank line's tabs are not the header's.
        assert_eq!(detect_delimiter(b" \t \ndocumentReference,way\n"), b',');
    }

    fn record(line: u64, fields: &[&str]) -> Record {
        Record {
            line,
            fields: csv::ByteRecord::from(fields.to_vec()),
        }
    }

    fn columns_of(header: &[&str]) -> Columns {
        let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
        map_columns(&header, None).unwrap()
    }

    #[test]
    fn row_cells_override_defaults_and_empty_cells_take_them() {
        let columns = columns_of(&["documentReference", "way"]);
        let defaults = Defaults {
            way: Some("Export".into()),
            agent_code: Some("CCGM".into()),
            ..Defaults::default()
        };
        let Row::Valid(a) = validate_record(&record(2, &["A1", "Import"]), &columns, &defaults)
        else {
            panic!("row should be valid")
        };
        assert_eq!(
            a.payload,
            r#"{"documentReference":"A1","way":"Import","agentCode":"CCGM"}"#
        );
        let Row::Valid(b) = validate_record(&record(3, &[" B2 ", " "]), &columns, &defaults) else {
            panic!("row should be valid")
        };
        assert_eq!(
            b.payload,
            r#"{"documentReference":"B2","way":"Export","agentCode":"CCGM"}"#
        );
    }

    #[test]
    fn ragged_rows_are_rejected_with_their_line() {
        let columns = columns_of(&["documentReference", "way"]);
        let row = validate_record(&record(7, &["A1"]), &columns, &Defaults::default());
        let Row::Rejected(r) = row else {
            panic!("ragged row accepted")
        };
        assert_eq!(r.line, 7);
        assert!(r.message().contains("has 1 fields where the header has 2"));
    }

    #[test]
    fn invalid_utf8_is_a_row_reject_not_a_crash() {
        let columns = columns_of(&["documentReference"]);
        let rec = Record {
            line: 4,
            fields: csv::ByteRecord::from(vec![&b"AB\xFFCD"[..]]),
        };
        let Row::Rejected(r) = validate_record(&rec, &columns, &Defaults::default()) else {
            panic!("invalid UTF-8 accepted")
        };
        assert!(r.message().contains("not valid UTF-8"), "{}", r.message());
    }

    fn lines_of(text: &[u8]) -> Vec<(String, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        let mut reader = InputReader::open(&path, &ReadOptions::default()).unwrap();
        let mut out = vec![(String::from("header"), reader.header_line())];
        loop {
            let chunk = reader.next_chunk(1000).unwrap();
            if chunk.is_empty() {
                return out;
            }
            for r in chunk {
                out.push((String::from_utf8_lossy(&r.fields[0]).into_owned(), r.line));
            }
        }
    }

    #[test]
    fn line_numbers_are_the_editors_whatever_the_line_ends() {
        for text in [
            &b"documentReference\n\nA\nB\n\n\"C\nc\"\nD\n"[..],
            b"documentReference\r\n\r\nA\r\nB\r\n\r\n\"C\r\nc\"\r\nD\r\n",
            b"documentReference\r\rA\rB\r\r\"C\rc\"\rD\r",
            b"\xEF\xBB\xBFdocumentReference\n\nA\nB\n\n\"C\nc\"\nD",
        ] {
            let got: Vec<u64> = lines_of(text).iter().map(|(_, l)| *l).collect();
            assert_eq!(got, [1, 3, 4, 6, 8], "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn an_unclosed_quote_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "documentReference\nA\n\"B\nC\nD\n").unwrap();
        let mut reader = InputReader::open(&path, &ReadOptions::default()).unwrap();
        let err = reader.next_chunk(100).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("never closed"),
            "{err}"
        );
        // A quoted field spanning lines that does close is fine, and so is
        // a lone quote inside an unquoted field.
        std::fs::write(
            &path,
            "documentReference,note\nA,\"x\ny\"\nB,5\" pipe\"\"\n",
        )
        .unwrap();
        let mut reader = InputReader::open(&path, &ReadOptions::default()).unwrap();
        assert_eq!(reader.next_chunk(100).unwrap().len(), 2);
    }

    #[test]
    fn leading_blank_lines_move_the_header() {
        let got = lines_of(b"\n\n  \ndocumentReference\nA\n");
        assert_eq!(got, [("header".to_string(), 4), ("A".to_string(), 5)]);
    }

    #[test]
    fn line_numbers_hold_past_the_read_buffer() {
        let mut text = String::from("documentReference\r\n");
        for i in 0..20_000 {
            text.push_str(&format!("REF{i}\r\n"));
            if i % 7 == 0 {
                text.push_str("\r\n");
            }
        }
        let got = lines_of(text.as_bytes());
        let (last_ref, last_line) = got.last().unwrap().clone();
        assert_eq!(last_ref, "REF19999");
        // 20,000 rows, 2,858 blank lines (i = 0, 7, …, 19999), and the header.
        assert_eq!(last_line, 1 + 20_000 + 2_857);
    }

    #[test]
    fn invalid_defaults_are_reported_with_their_flag() {
        let d = Defaults {
            way: Some("Sideways".into()),
            url: Some("http://127.0.0.1:9/x".into()),
            ..Defaults::default()
        };
        let err = d.validate().unwrap_err();
        assert!(err.contains("--way"), "{err}");
        assert!(err.contains("--webhook-url"), "{err}");
    }
}
