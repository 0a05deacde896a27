//! Reading: opening the file (or standard input), sniffing its dialect
//! (delimiter, BOM, encoding), reading the header and handing out records
//! with the line they start on.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{CHUNK_ROWS, Columns, InputError, Record, is_stdin, lines, map_columns};

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
        let input_error = error_in(path);
        let (source, spreadsheet) = open_source(path, options)?;
        let mut file = BufReader::with_capacity(1 << 16, source);

        // Sniff the start of the file: encoding marks and the header line.
        let mut head = Vec::with_capacity(1 << 16);
        (&mut file)
            .take(1 << 16)
            .read_to_end(&mut head)
            .with_context(|| format!("{}: cannot read the input file", path.display()))?;
        refuse_utf16(path, &head)?;
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

        let (header, header_line) = read_header(path, &mut reader, &line_index)?;
        let columns = map_columns(&header, options.column.as_deref())
            .map_err(|e| input_error(Some(header_line), e.to_string()))?;
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
/// Makes the errors about `path`, at a line or about the whole file.
fn error_in(path: &Path) -> impl Fn(Option<u64>, String) -> InputError + '_ {
    move |line, message| InputError {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// The bytes of the input, UTF-8 from here on: standard input, a
/// spreadsheet's sheet as CSV, or the file, transcoded from `--encoding`.
/// Says whether it is a spreadsheet (whose CSV is always comma-separated).
fn open_source(path: &Path, options: &ReadOptions) -> Result<(Box<dyn Read + Send>, bool)> {
    let input_error = error_in(path);
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
    Ok((source, spreadsheet))
}

/// Refuses a file that is UTF-16 (by its BOM, or a header full of NULs).
fn refuse_utf16(path: &Path, head: &[u8]) -> Result<()> {
    let input_error = error_in(path);
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
    Ok(())
}

/// The header: the first record that is not blank, its names trimmed, and
/// its line.
fn read_header(
    path: &Path,
    reader: &mut csv::Reader<Box<dyn Read + Send>>,
    line_index: &std::sync::Arc<std::sync::Mutex<lines::Index>>,
) -> Result<(Vec<String>, u64)> {
    let input_error = error_in(path);
    // The header is the first record that is not blank.
    let mut record = csv::ByteRecord::new();
    let found = loop {
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
        let line = line_of(line_index, &record);
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
    Ok(found)
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
