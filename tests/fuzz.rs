//! Property-based fuzzing of what the job reads from outside: the input
//! CSV (reading, line numbers, validation) and the API's answers (status,
//! `Retry-After`, body), plus the backoff arithmetic. Deterministic: a fixed
//! seed, a fixed number of cases, failures kept in
//! `tests/fuzz.proptest-regressions` (replayed first on every run).
//!
//! - `TRACKMASS_FUZZ_CASES`: cases per round (default: a few seconds'
//!   worth in a debug build);
//! - `TRACKMASS_FUZZ_SECONDS`: keep running rounds, each with the next
//!   seed, until this much time has passed (`scripts/fuzz.sh`);
//! - `TRACKMASS_FUZZ_SEED`: the first seed (default fixed).

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, RngAlgorithm, RngSeed, TestCaseError,
    TestError, TestRunner,
};
use serde_json::{Value, json};

use trackmass::spec;
use trackmass::testing::input::{
    Columns, Defaults, InputReader, ReadOptions, Record, Row, map_columns, validate_chunk,
    validate_record,
};
use trackmass::testing::retry::{
    self, MAX_RETRY_AFTER, RAW_EXCERPT_CHARS, Verdict, backoff, classify, parse_retry_after,
};

use crate::common::guarded;
use trackmass::testing::store::Unit;

/// The kept corpus of failing cases (proptest seeds), relative to the
/// package root where `cargo test` runs.
const REGRESSIONS: &str = "tests/fuzz.proptest-regressions";
const DEFAULT_SEED: u64 = 0x7472_6163_6b6d_6173;

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Runs `property` on `cases` values of `strategy` (more rounds with the
/// following seeds while `TRACKMASS_FUZZ_SECONDS` lasts). A failure is
/// shrunk, its seed saved to [`REGRESSIONS`], and the test fails with the
/// minimal input.
fn fuzz<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = env_number("TRACKMASS_FUZZ_CASES").map_or(default_cases, |n| n as u32);
    let budget = env_number("TRACKMASS_FUZZ_SECONDS").map(Duration::from_secs);
    // Each property draws from its own sequence.
    let seed = name.bytes().fold(
        env_number("TRACKMASS_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3),
    );
    let started = Instant::now();
    let mut round = 0u64;
    loop {
        let round_seed = seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut runner = TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
            rng_algorithm: RngAlgorithm::ChaCha,
            rng_seed: RngSeed::Fixed(round_seed),
            max_shrink_iters: 4096,
            ..ProptestConfig::default()
        });
        match runner.run(&strategy, &property) {
            Ok(()) => {}
            Err(TestError::Fail(reason, minimal)) => panic!(
                "{name}: {reason}\nminimal failing input: {minimal:#?}\n\
                 (round seed {round_seed}; the case is saved in {REGRESSIONS})"
            ),
            Err(TestError::Abort(reason)) => panic!("{name}: aborted: {reason}"),
        }
        round += 1;
        match budget {
            Some(budget) if started.elapsed() < budget => continue,
            _ => break,
        }
    }
    if budget.is_some() {
        eprintln!(
            "{name}: {} rounds of {cases} cases in {:.0?}",
            round,
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------
// The input: arbitrary files.

/// Bytes that mean something to a CSV reader, and some that do not.
fn csv_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b",;\t\"\r\n  '=+@".to_vec()),
        5 => prop::sample::select(b"abcXYZ0189-_./:".to_vec()),
        1 => prop::sample::select(vec![0x00, 0x07, 0x1b, 0x7f, 0xa0, 0xc2, 0xc3, 0xa9, 0xe2, 0x80, 0xa8, 0xef, 0xbb, 0xbf, 0xfe, 0xff]),
        1 => any::<u8>(),
    ]
}

/// Header lines that map (or nearly map) the columns.
const HEADERS: &[&[u8]] = &[
    b"documentReference",
    b"documentReference,way,place,agentCode,url",
    b"Document Reference;Way;Place;Agent_Code;Webhook-URL;note",
    b"\xEF\xBB\xBFdocument_reference\tplace\tagentCode",
    b"\"documentReference\",\"url\"",
    b"\n \r\n documentReference , way ",
    b"way,documentReference,documentReference",
    b"\xFF\xFEd\0o\0c\0",
    b"\"document\nReference\",way",
    b"note,\"a,b\",DOCUMENTREFERENCE,place",
    b"",
];

/// Pieces of rows: values that pass or nearly pass validation, the
/// characters that structure a CSV file, and junk.
fn csv_token() -> impl Strategy<Value = Vec<u8>> {
    let words: Vec<&[u8]> = vec![
        b"3714238101",
        b"BL-42",
        b" MSC 7 ",
        b"import",
        b"Transhipment",
        b"Inport",
        b"MTDF",
        b"TERMINAL DE FRANCE NORD",
        b"CCGM",
        b"https://hooks.example.com",
        b"http://localhost:1/x",
        b"'=SUM(A1)",
        b"'-42",
        b"'@x",
        b"'",
        "Zürich".as_bytes(),
        "港".as_bytes(),
        "😀".as_bytes(),
        "\u{a0}".as_bytes(),
        "\u{2028}".as_bytes(),
    ];
    prop_oneof![
        4 => prop::sample::select(words).prop_map(<[u8]>::to_vec),
        4 => prop::sample::select(vec![&b","[..], b";", b"\t", b"\"", b"\"\"", b"\r\n", b"\n", b"\r", b" "])
            .prop_map(<[u8]>::to_vec),
        1 => csv_byte().prop_map(|b| vec![b]),
    ]
}

fn arbitrary_file() -> impl Strategy<Value = Vec<u8>> {
    let header_end = prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\n", b"\r\n", b"\r", b""]);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300),
        2 => (
            prop::sample::select(HEADERS),
            header_end.clone(),
            prop::collection::vec(csv_byte(), 0..600),
        )
            .prop_map(|(header, end, body)| [header, end, &body].concat()),
        3 => (
            prop::sample::select(HEADERS),
            header_end,
            prop::collection::vec(csv_token(), 0..120),
        )
            .prop_map(|(header, end, body)| [header, end, &body.concat()].concat()),
    ]
}

fn valid_defaults() -> impl Strategy<Value = Defaults> {
    prop::sample::select(vec![
        Defaults::default(),
        Defaults {
            way: Some("Import".into()),
            agent_code: Some("CCGM".into()),
            ..Defaults::default()
        },
        Defaults {
            way: Some("transit".into()),
            place: Some("MTDF".into()),
            agent_code: Some("A".repeat(64)),
            url: Some("https://hooks.example.com/soget".into()),
        },
    ])
}

fn read_options() -> impl Strategy<Value = ReadOptions> {
    (
        prop::sample::select(vec![None, None, None, Some(b','), Some(b';'), Some(b'\t')]),
        prop::sample::select(vec![
            None,
            None,
            None,
            None,
            None,
            Some("place".to_string()),
        ]),
    )
        .prop_map(|(delimiter, column)| ReadOptions {
            column,
            delimiter,
            encoding: None,
            sheet: None,
        })
}

/// Number of lines as an editor counts them (CRLF, LF and lone CR each end
/// one), after a BOM.
fn line_breaks(text: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' => {
                n += 1;
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

/// What the file's records became: every record with its row, in order.
struct Read {
    header_line: u64,
    columns: Columns,
    records: Vec<(Record, Row)>,
    /// The error that ended reading early, if any.
    error: Option<String>,
}

/// Reads and validates a whole file as `run` does, in chunks of `chunk`
/// records; `Err` if the file cannot be opened (with the message).
fn read_file(
    bytes: &[u8],
    options: &ReadOptions,
    defaults: &Defaults,
    chunk: usize,
) -> Result<Result<Read, String>, TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let path = dir.path().join("in.csv");
    std::fs::write(&path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut reader = match InputReader::open(&path, options) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let columns = reader.columns().clone();
    let mut read = Read {
        header_line: reader.header_line(),
        columns,
        records: Vec::new(),
        error: None,
    };
    loop {
        let records = match reader.next_chunk(chunk) {
            Ok(records) => records,
            Err(e) => {
                read.error = Some(format!("{e:#}"));
                break;
            }
        };
        if records.is_empty() {
            break;
        }
        let rows = validate_chunk(&records, &read.columns, defaults);
        prop_assert_eq!(rows.len(), records.len());
        for (record, row) in records.into_iter().zip(rows) {
            // Validation is pure: in parallel or alone, the same answer.
            prop_assert_eq!(&row, &validate_record(&record, &read.columns, defaults));
            read.records.push((record, row));
        }
    }
    Ok(Ok(read))
}

/// A cell read back: trimmed, and without the `'` that the result files
/// put before a value a spreadsheet would run as a formula, or before a
/// value that starts with `'` itself.
fn as_read(text: &str) -> &str {
    let text = text.trim();
    match text.strip_prefix('\'') {
        Some(rest) if guarded(rest) => rest,
        _ => text,
    }
}

/// A cell as the validator sees it: `None` if the column is absent,
/// `Some(Err)` if it is not UTF-8, else its text as read.
fn cell(record: &Record, index: Option<usize>) -> Option<Result<&str, ()>> {
    let bytes = record.fields.get(index?)?;
    Some(std::str::from_utf8(bytes).map(as_read).map_err(|_| ()))
}

/// Independent statement of the spec's rules for one record: the body it
/// must produce, or `None` if it must be rejected.
fn expected_body(record: &Record, columns: &Columns, defaults: &Defaults) -> Option<Value> {
    if record.fields.len() != columns.width {
        return None;
    }
    let reference = match cell(record, Some(columns.document_reference))? {
        Ok(r) => r.to_string(),
        Err(()) => return None,
    };
    if reference.is_empty() || reference.chars().any(char::is_control) {
        return None;
    }
    // Excel's scientific notation: one digit, maybe a decimal part, E, a
    // sign, two or more digits.
    let b = reference.as_bytes();
    let sci = b.len() >= 5
        && b[0].is_ascii_digit()
        && reference
            .to_ascii_uppercase()
            .split_once('E')
            .is_some_and(|(m, e)| {
                let m_ok = m.len() == 1
                    || (m.len() > 2
                        && matches!(m.as_bytes()[1], b'.' | b',')
                        && m[2..].bytes().all(|c| c.is_ascii_digit()));
                let e_ok = e.len() >= 3
                    && matches!(e.as_bytes()[0], b'+' | b'-')
                    && e[1..].bytes().all(|c| c.is_ascii_digit());
                m_ok && e_ok
            });
    if sci {
        return None;
    }
    let mut body = serde_json::Map::new();
    body.insert("documentReference".into(), json!(reference));
    let optional = [
        ("way", columns.way, &defaults.way),
        ("place", columns.place, &defaults.place),
        ("agentCode", columns.agent_code, &defaults.agent_code),
        ("url", columns.url, &defaults.url),
    ];
    let mut valid = true;
    for (key, index, default) in optional {
        let value = match cell(record, index) {
            Some(Err(())) => return None,
            Some(Ok(v)) if !v.is_empty() => Some(v.to_string()),
            _ => default.clone(),
        };
        let Some(value) = value else { continue };
        let ok = match key {
            "way" => spec::CUSTOMS_INDICATORS
                .iter()
                .any(|w| w.eq_ignore_ascii_case(&value)),
            "place" => value.chars().count() <= 20 && !value.chars().any(char::is_control),
            "agentCode" => value.chars().count() <= 64 && !value.chars().any(char::is_control),
            _ => spec::url_matches(&value),
        };
        valid &= ok;
        let value = match key {
            "way" => spec::CUSTOMS_INDICATORS
                .iter()
                .find(|w| w.eq_ignore_ascii_case(&value))
                .map_or(value.clone(), |w| w.to_string()),
            _ => value,
        };
        body.insert(key.into(), json!(value));
    }
    valid.then_some(Value::Object(body))
}

/// One row against the oracle: a valid row sends exactly the expected
/// body, which the spec allows; a rejected row should have been, and says
/// why.
fn check_row(
    record: &Record,
    row: &Row,
    columns: &Columns,
    defaults: &Defaults,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(row.line(), record.line);
    let expected = expected_body(record, columns, defaults);
    match (row, expected) {
        (Row::Valid(valid), Some(expected)) => {
            let body: Value = serde_json::from_str(&valid.payload).map_err(|e| {
                TestCaseError::fail(format!("payload is not JSON ({e}): {}", valid.payload))
            })?;
            prop_assert_eq!(&body, &expected, "payload {}", valid.payload);
            prop_assert_eq!(
                body["documentReference"].as_str(),
                Some(valid.document_reference.as_str())
            );
            // The limits, restated on the body actually sent.
            if let Some(place) = body.get("place").and_then(Value::as_str) {
                prop_assert!(place.chars().count() <= 20, "place {place:?}");
            }
            if let Some(agent) = body.get("agentCode").and_then(Value::as_str) {
                prop_assert!(agent.chars().count() <= 64, "agentCode {agent:?}");
            }
            // The sandbox's schema check (the spec, independently coded)
            // accepts it.
            let accepted = trackmass::sandbox::validate_body(&body);
            prop_assert!(
                accepted.is_ok(),
                "the spec refuses {}: {:?}",
                valid.payload,
                accepted
            );
        }
        (Row::Rejected(reject), None) => {
            prop_assert!(!reject.problems.is_empty());
            prop_assert!(!reject.message().trim().is_empty());
            for p in &reject.problems {
                prop_assert!(!p.message.trim().is_empty(), "{:?}", reject);
                prop_assert!(
                    [
                        "row",
                        "documentReference",
                        "way",
                        "place",
                        "agentCode",
                        "url"
                    ]
                    .contains(&p.field),
                    "{:?}",
                    reject
                );
            }
            let reference = record
                .fields
                .get(columns.document_reference)
                .map(|b| as_read(&String::from_utf8_lossy(b)).to_string())
                .unwrap_or_default();
            prop_assert_eq!(&reject.document_reference, &reference);
        }
        (Row::Valid(valid), None) => {
            return Err(TestCaseError::fail(format!(
                "accepted a row the spec refuses: {:?} → {}",
                record.fields, valid.payload
            )));
        }
        (Row::Rejected(reject), Some(expected)) => {
            return Err(TestCaseError::fail(format!(
                "rejected a valid row {:?} (expected {expected}): {}",
                record.fields,
                reject.message()
            )));
        }
    }
    Ok(())
}

#[test]
fn arbitrary_files_are_read_and_validated_without_a_panic() {
    fuzz(
        "arbitrary_files",
        700,
        (
            arbitrary_file(),
            read_options(),
            valid_defaults(),
            1usize..40,
        ),
        |(bytes, options, defaults, chunk)| {
            let read = match read_file(&bytes, &options, &defaults, chunk)? {
                Ok(read) => read,
                Err(message) => {
                    prop_assert!(!message.trim().is_empty());
                    return Ok(());
                }
            };
            if let Some(message) = &read.error {
                prop_assert!(!message.trim().is_empty());
            }
            let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            let lines = line_breaks(body) + 1;
            let columns = &read.columns;
            prop_assert!(columns.document_reference < columns.width);
            for index in [columns.way, columns.place, columns.agent_code, columns.url]
                .into_iter()
                .flatten()
            {
                prop_assert!(index < columns.width);
            }
            prop_assert!((1..=lines).contains(&read.header_line));
            let mut last = read.header_line;
            for (record, row) in &read.records {
                prop_assert!(
                    record.line > last && record.line <= lines,
                    "line {} after {last} (of {lines})",
                    record.line
                );
                last = record.line;
                check_row(record, row, columns, &defaults)?;
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------
// The input: generated files whose lines are known.

/// A column of a generated file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Col {
    Reference,
    Way,
    Place,
    AgentCode,
    Url,
    Other,
}

fn header_name(col: Col) -> BoxedStrategy<String> {
    let names: &[&str] = match col {
        Col::Reference => &[
            "documentReference",
            "DocumentReference",
            "document_reference",
            "Document Reference",
            " DOCUMENT-REFERENCE ",
        ],
        Col::Way => &["way", "Way", " WAY"],
        Col::Place => &["place", "Place"],
        Col::AgentCode => &["agentCode", "agent_code", "Agent Code"],
        Col::Url => &["url", "webhookUrl", "Webhook-URL"],
        Col::Other => &["note", "Remarks", "comment (free text)"],
    };
    prop::sample::select(names.to_vec())
        .prop_map(str::to_string)
        .boxed()
}

/// Characters of generated cells: plain text mostly, and everything that
/// is hard for a CSV reader or the validator.
fn cell_char() -> impl Strategy<Value = char> {
    prop_oneof![
        10 => prop::sample::select("abcdefXYZ0123456789-_./:".chars().collect::<Vec<_>>()),
        2 => Just(' '),
        2 => prop::sample::select(vec!['"', ',', ';', '\t', '\'', '=', '+', '-', '@']),
        1 => prop::sample::select(vec!['\n', '\r']),
        2 => prop::sample::select(vec!['é', 'ß', '中', '港', '😀', '\u{a0}', '\u{2028}', '\u{3000}', '\u{feff}']),
        1 => prop::sample::select(vec!['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}']),
    ]
}

fn cell_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(cell_char(), 0..max).prop_map(|c| c.into_iter().collect())
}

/// A cell for a column: values near the spec's limits and edge cases, or
/// random text.
fn cell_for(col: Col) -> BoxedStrategy<String> {
    let special: BoxedStrategy<String> = match col {
        Col::Reference => {
            prop::sample::select(vec!["3714238101", " BL-42 ", "", "  ", "REF\u{7}X"])
                .prop_map(str::to_string)
                .boxed()
        }
        Col::Way => prop::sample::select(vec![
            "",
            "import",
            "EXPORT",
            " Transit ",
            "domestictranshipment",
            "Inport",
            "Unknown",
            "imp ort",
        ])
        .prop_map(str::to_string)
        .boxed(),
        Col::Place => (prop::sample::select(vec!['A', 'é', '港', ' ']), 18usize..23)
            .prop_map(|(c, n)| format!("P{}", c.to_string().repeat(n)))
            .boxed(),
        Col::AgentCode => (prop::sample::select(vec!['C', 'ü', '😀']), 62usize..67)
            .prop_map(|(c, n)| c.to_string().repeat(n))
            .boxed(),
        Col::Url => prop::sample::select(vec![
            "",
            "https://hooks.example.com",
            "hooks.example.org/a_b/c",
            "http://localhost:8080/x",
            "https://Hooks.Example.com",
            "https://hooks.example.com/a?b=c",
            "http://10.0.0.1/x",
        ])
        .prop_map(str::to_string)
        .boxed(),
        Col::Other => cell_text(30).boxed(),
    };
    prop_oneof![2 => special, 3 => cell_text(24)].boxed()
}

/// A generated line after the header.
#[derive(Debug, Clone)]
enum Line {
    /// Empty or spaces only: skipped.
    Blank(String),
    /// Cells (quoted when `quote` or when they must be), possibly one
    /// short or one too many.
    Row {
        cells: Vec<String>,
        quote: Vec<bool>,
    },
}

#[derive(Debug, Clone)]
struct Doc {
    bom: bool,
    delimiter: u8,
    /// Give the delimiter to the reader instead of letting it detect it.
    explicit_delimiter: bool,
    columns: Vec<(Col, String)>,
    quote_header: bool,
    leading_blanks: Vec<String>,
    lines: Vec<(Line, &'static str)>,
    /// The last line without a line end.
    unterminated: bool,
    /// A first row about this much over 64 KiB long, so that the rows after
    /// it straddle the reader's first buffer (the sniffed head).
    pad: Option<u16>,
}

fn doc() -> impl Strategy<Value = Doc> {
    let optional = prop::sample::subsequence(
        vec![Col::Way, Col::Place, Col::AgentCode, Col::Url, Col::Other],
        0..=5,
    );
    let columns = optional
        .prop_map(|mut cols| {
            cols.push(Col::Reference);
            cols
        })
        .prop_shuffle()
        .prop_flat_map(|cols| {
            cols.iter()
                .map(|c| {
                    header_name(*c).prop_map({
                        let c = *c;
                        move |name| (c, name)
                    })
                })
                .collect::<Vec<_>>()
        });
    // Blank lines before the header hold spaces only: a tab there is
    // counted by delimiter detection (reported).
    let leading_blank = prop::sample::select(vec!["", " ", "   "]).prop_map(str::to_string);
    let blank = prop::sample::select(vec!["", " ", "   ", "\t", " \t "]).prop_map(str::to_string);
    let ending = prop::sample::select(vec!["\n", "\r\n", "\r", "\n", "\r\n"]);
    (
        any::<bool>(),
        prop::sample::select(vec![b',', b';', b'\t']),
        any::<bool>(),
        columns,
        any::<bool>(),
        prop::collection::vec(leading_blank, 0..3),
        (any::<bool>(), prop::option::weighted(0.1, 0u16..400)),
    )
        .prop_flat_map(
            move |(bom, delimiter, explicit, columns, quote_header, leading, ends)| {
                let width = columns.len();
                let cols: Vec<Col> = columns.iter().map(|(c, _)| *c).collect();
                let row = (
                    cols.iter().map(|c| cell_for(*c)).collect::<Vec<_>>(),
                    prop::collection::vec(prop::bool::weighted(0.2), width + 1),
                    prop::sample::select(vec![0i8, 0, 0, 0, 0, 0, -1, 1]),
                    cell_for(Col::Other),
                )
                    .prop_map(move |(mut cells, quote, ragged, extra)| {
                        match ragged {
                            -1 if cells.len() > 1 => {
                                cells.pop();
                            }
                            1 => cells.push(extra),
                            _ => {}
                        }
                        Line::Row { cells, quote }
                    });
                let line = prop_oneof![
                    1 => blank.clone().prop_map(Line::Blank),
                    6 => row,
                ];
                (
                    Just((
                        bom,
                        delimiter,
                        explicit,
                        columns,
                        quote_header,
                        leading,
                        ends,
                    )),
                    prop::collection::vec((line, ending.clone()), 0..14),
                )
            },
        )
        .prop_map(
            |(
                (
                    bom,
                    delimiter,
                    explicit_delimiter,
                    columns,
                    quote_header,
                    leading_blanks,
                    (unterminated, pad),
                ),
                lines,
            )| Doc {
                bom,
                delimiter,
                explicit_delimiter,
                columns,
                quote_header,
                leading_blanks,
                lines,
                unterminated,
                pad,
            },
        )
}

/// What the reader must report for a generated file.
struct Rendered {
    bytes: Vec<u8>,
    header_line: u64,
    /// Per expected record: its line and its cells.
    records: Vec<(u64, Vec<String>)>,
}

/// Writes the file and, independently of the reader, where each record
/// starts.
fn render(doc: &Doc) -> Rendered {
    let mut text = String::new();
    // A header of one column has no delimiter to detect: `,` then.
    let delimiter = if doc.explicit_delimiter || doc.columns.len() > 1 {
        doc.delimiter as char
    } else {
        ','
    };
    let field = |s: &str, quote: bool| -> String {
        // Quoted when asked or when it holds anything a reader splits on
        // (any of the three delimiters: detection may pick another one
        // when the header has a single column).
        if quote || s.contains(['"', ',', ';', '\t', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let line_of = |text: &str| line_breaks(text.as_bytes()) + 1;
    for blank in &doc.leading_blanks {
        text.push_str(blank);
        text.push('\n');
    }
    let header_line = line_of(&text);
    let header: Vec<String> = doc
        .columns
        .iter()
        .map(|(_, name)| field(name, doc.quote_header))
        .collect();
    text.push_str(&header.join(&delimiter.to_string()));
    text.push_str("\r\n");
    let mut records = Vec::new();
    if let Some(pad) = doc.pad {
        let mut cells = vec![String::new(); doc.columns.len()];
        let reference = doc
            .columns
            .iter()
            .position(|(c, _)| *c == Col::Reference)
            .unwrap();
        cells[reference] = "x".repeat(65_300 + usize::from(pad));
        records.push((line_of(&text), cells.clone()));
        text.push_str(&cells.join(&delimiter.to_string()));
        text.push_str("\r\n");
    }
    for (i, (line, ending)) in doc.lines.iter().enumerate() {
        match line {
            Line::Blank(spaces) => text.push_str(spaces),
            Line::Row { cells, quote } => {
                let blank = cells
                    .iter()
                    .all(|c| c.bytes().all(|b| b.is_ascii_whitespace()));
                if !blank {
                    records.push((line_of(&text), cells.clone()));
                }
                let fields: Vec<String> =
                    cells.iter().zip(quote).map(|(c, q)| field(c, *q)).collect();
                text.push_str(&fields.join(&delimiter.to_string()));
            }
        }
        if !(doc.unterminated && i + 1 == doc.lines.len()) {
            text.push_str(ending);
        }
    }
    let mut bytes = Vec::new();
    if doc.bom {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    bytes.extend_from_slice(text.as_bytes());
    Rendered {
        bytes,
        header_line,
        records,
    }
}

#[test]
fn generated_files_report_every_row_on_its_editor_line() {
    fuzz(
        "generated_files",
        350,
        (doc(), valid_defaults(), 1usize..20),
        |(doc, defaults, chunk)| {
            let rendered = render(&doc);
            let options = ReadOptions {
                column: None,
                delimiter: doc.explicit_delimiter.then_some(doc.delimiter),
                encoding: None,
                sheet: None,
            };
            let read = match read_file(&rendered.bytes, &options, &defaults, chunk)? {
                Ok(read) => read,
                Err(message) => {
                    return Err(TestCaseError::fail(format!(
                        "a well-formed file was refused: {message}\n{:?}",
                        String::from_utf8_lossy(&rendered.bytes)
                    )));
                }
            };
            prop_assert!(read.error.is_none(), "{:?}", read.error);
            prop_assert_eq!(read.header_line, rendered.header_line);
            let expected_columns: Vec<Col> = doc.columns.iter().map(|(c, _)| *c).collect();
            let position = |col: Col| expected_columns.iter().position(|c| *c == col);
            prop_assert_eq!(
                &read.columns,
                &Columns {
                    document_reference: position(Col::Reference).unwrap(),
                    way: position(Col::Way),
                    place: position(Col::Place),
                    agent_code: position(Col::AgentCode),
                    url: position(Col::Url),
                    width: expected_columns.len(),
                }
            );
            let got: Vec<(u64, Vec<String>)> = read
                .records
                .iter()
                .map(|(r, _)| {
                    (
                        r.line,
                        r.fields
                            .iter()
                            .map(|f| String::from_utf8_lossy(f).into_owned())
                            .collect(),
                    )
                })
                .collect();
            prop_assert_eq!(
                &got,
                &rendered.records,
                "file {:?}",
                String::from_utf8_lossy(&rendered.bytes)
            );
            for (record, row) in &read.records {
                check_row(record, row, &read.columns, &defaults)?;
            }
            Ok(())
        },
    );
}

/// A kept corpus of the cases a random search rarely hits: a CRLF, a lone
/// CR, a quoted line break and a BOM each straddling the end of the
/// reader's first 64 KiB, at every offset around it.
#[test]
fn line_ends_straddling_the_first_buffer_keep_their_lines() {
    const HEAD: usize = 1 << 16;
    for bom in [false, true] {
        for (end, quoted) in [
            ("\r\n", false),
            ("\r", false),
            ("\n", false),
            ("\r\n", true),
        ] {
            for shift in 0..6 {
                let header = "documentReference,note\r\n";
                let prefix = if bom { 3 } else { 0 };
                // The first row's line end (or the line break inside its
                // quoted note) ends `shift` bytes either side of HEAD.
                let target = HEAD - 3 + shift;
                let note_len = target - prefix - header.len() - "A,".len() - usize::from(quoted);
                let first = if quoted {
                    format!("A,\"{}{end}x\"\r\n", "n".repeat(note_len))
                } else {
                    format!("A,{}{end}", "n".repeat(note_len))
                };
                let mut text = format!("{header}{first}B,b{end}{end}C,c{end}");
                if bom {
                    text.insert(0, '\u{feff}');
                }
                let expected: Vec<u64> = if quoted { vec![2, 4, 6] } else { vec![2, 3, 5] };
                let read = read_file(
                    text.as_bytes(),
                    &ReadOptions::default(),
                    &Defaults::default(),
                    2,
                )
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}"));
                assert!(read.error.is_none(), "{:?}", read.error);
                let lines: Vec<u64> = read.records.iter().map(|(r, _)| r.line).collect();
                assert_eq!(
                    lines, expected,
                    "bom {bom}, end {end:?}, quoted {quoted}, shift {shift}"
                );
                for (record, row) in &read.records {
                    check_row(record, row, &read.columns, &Defaults::default()).unwrap();
                    assert!(matches!(row, Row::Valid(_)), "{row:?}");
                }
            }
        }
    }
}

#[test]
fn arbitrary_headers_map_or_say_why() {
    let name = prop_oneof![
        cell_text(12),
        header_name(Col::Reference),
        header_name(Col::Way),
        header_name(Col::Url),
    ];
    fuzz(
        "headers",
        1000,
        (
            prop::collection::vec(name, 0..7),
            prop::option::of(prop_oneof![cell_text(8), header_name(Col::Place)]),
        ),
        |(header, column)| match map_columns(&header, column.as_deref()) {
            Ok(columns) => {
                prop_assert_eq!(columns.width, header.len());
                let norm = |s: &str| -> String {
                    s.trim()
                        .chars()
                        .filter(|c| !matches!(c, '_' | '-' | ' '))
                        .flat_map(char::to_lowercase)
                        .collect()
                };
                let wanted = column
                    .as_deref()
                    .map_or("documentreference".to_string(), norm);
                prop_assert_eq!(norm(&header[columns.document_reference]), wanted);
                for index in [columns.way, columns.place, columns.agent_code, columns.url]
                    .into_iter()
                    .flatten()
                {
                    prop_assert!(index < header.len() && index != columns.document_reference);
                }
                Ok(())
            }
            Err(error) => {
                prop_assert!(!error.to_string().trim().is_empty());
                Ok(())
            }
        },
    );
}

// ---------------------------------------------------------------------
// The API's answers.

fn now_strategy() -> impl Strategy<Value = SystemTime> {
    // From the epoch to the year 9000.
    (0u64..221_845_392_000).prop_map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

fn retry_after_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any_text(),
        "[0-9]{1,25}",
        " ?-?[0-9]{0,6}(\\.[0-9]{0,12})?([eE][-+]?[0-9]{1,4})? ?",
        Just("inf".to_string()),
        Just("NaN".to_string()),
        "(Mon|Tue|Sun|Xyz), [0-9]{1,3} (Jan|Feb|Nov|Dec|Foo) [0-9]{1,12} [0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3} (GMT|UTC)",
    ]
}

fn status_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![
        any::<u16>(),
        100u16..600,
        prop::sample::select(vec![
            200, 201, 204, 301, 400, 401, 403, 404, 405, 408, 409, 415, 422, 429, 500, 502, 503,
            504
        ]),
    ]
}

/// Any text: `any::<String>()` leaves out control characters, which
/// answers do carry.
fn any_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect()),
        "[\\x00-\\x1f\\x7f\u{85}\u{2028}\"\\\\a-z ]{0,16}",
    ]
    .boxed()
}

/// Arbitrary JSON values, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any_text().prop_map(Value::from),
        prop::sample::select(vec!["trackingId", "TRK1", "", "subErrors", "message"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "trackingId",
                        "trackedHandlingUnits",
                        "spi",
                        "reference",
                        "statusCode",
                        "message",
                        "code",
                        "status",
                        "subErrors",
                        "field",
                        "rejectedValue",
                        "title",
                        "detail",
                        "errors",
                        "other",
                    ]),
                    inner,
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// Bodies of every shape: bytes, JSON of any shape, JSON cut short.
fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = serde_json::to_string_pretty(&v)
                .unwrap_or_default()
                .into_bytes();
            let at = if text.is_empty() {
                0
            } else {
                cut.index(text.len())
            };
            text[..at].to_vec()
        }),
    ]
}

/// Whether a body is what the spec answers with a 201: an object whose
/// `trackingId` is a non-empty string.
fn has_tracking_id(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("trackingId")
                .and_then(Value::as_str)
                .map(|s| !s.is_empty())
        })
        .unwrap_or(false)
}

/// A text meant for failures.csv and log lines: one line, no control
/// characters.
fn single_line(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

#[test]
fn any_answer_is_classified_without_a_panic() {
    fuzz(
        "any_answer",
        3000,
        (
            status_strategy(),
            prop::option::of(retry_after_value()),
            body_strategy(),
            now_strategy(),
        ),
        |(status, retry_after, body, now)| {
            let verdict = classify(status, retry_after.as_deref(), &body, now);
            let wait = retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now));
            match status {
                200..=299 => match &verdict {
                    Verdict::Created { tracking_id, .. } => {
                        prop_assert!(!tracking_id.is_empty());
                        prop_assert!(
                            has_tracking_id(&body),
                            "read a tracking from {:?}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    Verdict::BadResponse {
                        http_status,
                        reason,
                    } => {
                        prop_assert_eq!(*http_status, status);
                        prop_assert!(!reason.is_empty() && single_line(reason), "{:?}", reason);
                        prop_assert!(
                            reason.chars().count() <= RAW_EXCERPT_CHARS + 200,
                            "{} chars",
                            reason.chars().count()
                        );
                    }
                    other => return Err(TestCaseError::fail(format!("{status} → {other:?}"))),
                },
                300..=399 | 403 | 404 | 405 => {
                    prop_assert!(
                        matches!(&verdict, Verdict::Fatal { http_status, .. } if *http_status == status),
                        "{} → {:?}",
                        status,
                        verdict
                    );
                }
                401 => prop_assert!(
                    matches!(verdict, Verdict::Unauthorized { .. }),
                    "{:?}",
                    verdict
                ),
                408 | 429 | 500 | 502 | 503 | 504 => match &verdict {
                    Verdict::Retry {
                        http_status,
                        retry_after,
                        throttled,
                        reason,
                    } => {
                        prop_assert_eq!(*http_status, Some(status));
                        prop_assert_eq!(*throttled, status == 429);
                        prop_assert_eq!(*retry_after, wait);
                        prop_assert!(retry_after.is_none_or(|w| w <= MAX_RETRY_AFTER));
                        prop_assert!(!reason.is_empty());
                    }
                    other => return Err(TestCaseError::fail(format!("{status} → {other:?}"))),
                },
                400..=499 => {
                    prop_assert!(
                        matches!(&verdict, Verdict::RowError { http_status, .. } if *http_status == status),
                        "{} → {:?}",
                        status,
                        verdict
                    );
                }
                _ => {
                    prop_assert!(
                        matches!(&verdict, Verdict::Fatal { http_status, .. } if *http_status == status),
                        "{} → {:?}",
                        status,
                        verdict
                    );
                }
            }
            // The helpers behind the messages hold for any body.
            let excerpt = retry::excerpt(&body);
            prop_assert!(excerpt.chars().count() <= RAW_EXCERPT_CHARS + 1);
            prop_assert!(single_line(&excerpt), "{:?}", excerpt);
            let summary = retry::error_summary(&body);
            prop_assert!(
                !summary.is_empty() && single_line(&summary),
                "{:?}",
                summary
            );
            Ok(())
        },
    );
}

/// A unit of a well-formed answer.
fn unit_strategy() -> impl Strategy<Value = (Option<String>, Option<String>)> {
    (
        prop::option::of(prop_oneof!["CNI[0-9]{10}", any_text()]),
        prop::option::of(prop_oneof!["[A-Z]{3}U[0-9]{7}", any_text()]),
    )
}

#[test]
fn a_well_formed_201_yields_its_tracking_and_a_cut_one_a_bad_response() {
    fuzz(
        "well_formed_201",
        1500,
        (
            prop_oneof![
                "TRK[0-9]{10}",
                any_text().prop_filter("non-empty", |s| !s.is_empty())
            ],
            prop::option::of(prop::collection::vec(unit_strategy(), 0..9)),
            any::<bool>(),
            any::<bool>(),
            any::<prop::sample::Index>(),
        ),
        |(tracking_id, units, extra_fields, pretty, cut)| {
            let mut body = serde_json::Map::new();
            body.insert("trackingId".into(), json!(tracking_id));
            if let Some(units) = &units {
                body.insert(
                    "trackedHandlingUnits".into(),
                    Value::Array(
                        units
                            .iter()
                            .map(|(spi, reference)| json!({"spi": spi, "reference": reference}))
                            .collect(),
                    ),
                );
            }
            if extra_fields {
                body.insert("documentReference".into(), json!("3714238101"));
                body.insert("createdAt".into(), json!("2026-01-01T00:00:00Z"));
            }
            let body = Value::Object(body);
            let text = if pretty {
                serde_json::to_string_pretty(&body).unwrap()
            } else {
                body.to_string()
            };
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
            let expected_units: Vec<Unit> = units
                .unwrap_or_default()
                .into_iter()
                .map(|(spi, reference)| Unit { spi, reference })
                .collect();
            prop_assert_eq!(
                classify(201, None, text.as_bytes(), now),
                Verdict::Created {
                    tracking_id: tracking_id.clone(),
                    units: expected_units
                }
            );
            // The same body cut short by a closed connection: a bad
            // response (the tracking exists, the answer is lost), never a
            // tracking.
            let at = cut.index(text.len());
            match classify(201, None, &text.as_bytes()[..at], now) {
                Verdict::BadResponse {
                    http_status: 201,
                    reason,
                } => {
                    prop_assert!(single_line(&reason), "{:?}", reason);
                }
                other => return Err(TestCaseError::fail(format!("cut at {at}: {other:?}"))),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------
// Waiting: Retry-After and backoff.

/// IMF-fixdate of a time, computed here (Howard Hinnant's civil_from_days)
/// rather than with the parser's own arithmetic.
fn imf_fixdate(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn retry_after_is_never_a_panic_nor_more_than_a_day() {
    fuzz(
        "retry_after_any",
        3000,
        (retry_after_value(), now_strategy()),
        |(value, now)| {
            let wait = parse_retry_after(&value, now);
            prop_assert!(
                wait.is_none_or(|w| w <= MAX_RETRY_AFTER),
                "{value:?} → {wait:?}"
            );
            Ok(())
        },
    );
}

#[test]
fn retry_after_reads_seconds_and_dates_exactly() {
    fuzz(
        "retry_after_exact",
        3000,
        (
            any::<u64>(),
            0.0f64..200_000.0,
            // Up to the year 9000, so that two days later is still a
            // four-digit year.
            (0u64..221_845_392_000).prop_map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            -200_000i64..200_000,
        ),
        |(secs, fraction, now, offset)| {
            prop_assert_eq!(
                parse_retry_after(&secs.to_string(), now),
                Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
            );
            prop_assert_eq!(
                parse_retry_after(&format!(" {fraction} "), now),
                Some(Duration::from_secs_f64(fraction).min(MAX_RETRY_AFTER))
            );
            let when = if offset >= 0 {
                now + Duration::from_secs(offset as u64)
            } else {
                now.checked_sub(Duration::from_secs(offset.unsigned_abs()))
                    .filter(|t| *t >= SystemTime::UNIX_EPOCH)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            let expected = when
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_RETRY_AFTER);
            let date = imf_fixdate(when);
            prop_assert_eq!(parse_retry_after(&date, now), Some(expected), "{}", date);
            Ok(())
        },
    );
}

fn duration_strategy() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..3_600_000).prop_map(Duration::from_millis),
        (0u64..10_000_000_000).prop_map(Duration::from_nanos),
        Just(Duration::ZERO),
        Just(Duration::MAX),
    ]
}

#[test]
fn backoff_never_exceeds_its_cap_nor_its_exponential_ceiling() {
    fuzz(
        "backoff",
        3000,
        (
            prop_oneof![any::<u32>(), 0u32..40],
            duration_strategy(),
            duration_strategy(),
            prop_oneof![
                0.0f64..1.0,
                Just(0.0),
                Just(1.0 - f64::EPSILON),
                Just(1.0),
                Just(f64::NAN),
                any::<f64>(),
            ],
        ),
        |(attempt, base, cap, unit)| {
            let wait = backoff(attempt, base, cap, unit);
            prop_assert!(wait <= cap, "{wait:?} > cap {cap:?}");
            let exp = attempt.saturating_sub(1).min(30);
            let ceiling = base.saturating_mul(1u32 << exp);
            prop_assert!(wait <= ceiling, "{wait:?} > ceiling {ceiling:?}");
            if unit == 0.0 || unit.is_nan() {
                prop_assert_eq!(wait, Duration::ZERO);
            }
            Ok(())
        },
    );
}

#[test]
fn token_lifetimes_stay_between_a_second_and_a_day() {
    fuzz(
        "token_lifetime",
        2000,
        prop_oneof![
            any::<f64>().prop_map(Some),
            (1.0f64..86_400.0).prop_map(Some),
            Just(None),
        ],
        |expires_in| {
            let lifetime = trackmass::api::token_lifetime(expires_in);
            prop_assert!(
                (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&lifetime),
                "{expires_in:?} → {lifetime:?}"
            );
            if let Some(s) = expires_in.filter(|s| (1.0..=86_400.0).contains(s)) {
                prop_assert_eq!(lifetime, Duration::from_secs_f64(s));
            }
            Ok(())
        },
    );
}
