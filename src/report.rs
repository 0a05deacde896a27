//! Result files, written from the state file and never by hand: what their
//! lines hold. How a path is written (atomically, `-` for stdout, never
//! replacing what is not a regular file) is [`crate::output`]'s.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::input::{OptionalFields, Reject};
use crate::store::{FailureRow, Scope, Store, TrackedRow};

/// `agentCode` comes last: it was added after the first four, and with the
/// reference it names the document (the same number from two agents is
/// two documents).
pub const RESULTS_HEADER: [&str; 5] = [
    "documentReference",
    "trackingId",
    "spi",
    "reference",
    "agentCode",
];
/// `failures.csv` is itself an input for `run`: documentReference and the
/// request columns come first, what went wrong after.
/// `input` (last) is the file the row came from: a run's failures.csv also
/// lists what the ledger still owes from earlier inputs, whose `line` is a
/// line of that file.
pub const FAILURES_HEADER: [&str; 13] = [
    "line",
    "documentReference",
    "way",
    "place",
    "agentCode",
    "url",
    "status",
    "httpStatus",
    "code",
    "message",
    "details",
    "attempts",
    "input",
];

/// Lines of `results.csv` for one tracked document: one per handling
/// unit, or one with empty unit columns when the document has none.
pub fn result_lines(row: &TrackedRow) -> Vec<[&str; 5]> {
    if row.units.is_empty() {
        return vec![[
            &row.document_reference,
            &row.tracking_id,
            "",
            "",
            &row.agent_code,
        ]];
    }
    row.units
        .iter()
        .map(|u| {
            [
                row.document_reference.as_str(),
                row.tracking_id.as_str(),
                u.spi.as_deref().unwrap_or(""),
                u.reference.as_deref().unwrap_or(""),
                row.agent_code.as_str(),
            ]
        })
        .collect()
}

/// The first six columns of `failures.csv` and of a rejects file: what a
/// corrected copy needs to be an input again.
fn request_columns(line: u64, reference: &str, fields: &OptionalFields) -> [String; 6] {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        line.to_string(),
        reference.to_string(),
        text(&fields.way),
        text(&fields.place),
        text(&fields.agent_code),
        text(&fields.url),
    ]
}

/// The line of `failures.csv` for one failed or rejected row.
pub fn failure_line(row: &FailureRow) -> [String; 13] {
    let [line, reference, way, place, agent_code, url] =
        request_columns(row.line, &row.document_reference, &row.fields);
    [
        line,
        reference,
        way,
        place,
        agent_code,
        url,
        row.status.as_str().to_string(),
        row.http_status.map(|s| s.to_string()).unwrap_or_default(),
        row.code.clone(),
        row.message.clone(),
        row.details.clone(),
        row.attempts.to_string(),
        row.input.clone(),
    ]
}

/// Header of `validate --rejects`: an input for `run` once corrected.
pub const REJECTS_HEADER: [&str; 7] = [
    "line",
    "documentReference",
    "way",
    "place",
    "agentCode",
    "url",
    "reason",
];

/// The line of a rejects file for one rejected row.
pub fn reject_line(r: &Reject) -> [String; 7] {
    let [line, reference, way, place, agent_code, url] =
        request_columns(r.line, &r.document_reference, &r.fields);
    [line, reference, way, place, agent_code, url, r.message()]
}

/// Writes the rejects of `validate` (atomically).
pub fn write_rejects(path: &Path, rejects: &[Reject]) -> Result<()> {
    atomic_csv(path, |w| {
        w.write_record(REJECTS_HEADER)?;
        for r in rejects {
            write_safe(w, reject_line(r))?;
        }
        Ok(())
    })
}

/// First characters that make a spreadsheet read a cell as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Lookalikes of those that some spreadsheets fold to them (full-width and
/// small forms).
const LOOKALIKE_STARTS: [char; 8] = [
    '\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}', '\u{FE66}', '\u{FE62}', '\u{FE63}', '\u{FE6B}',
];

/// Characters that do not show: a cell starting with one hides what
/// follows (a formula behind a zero-width space, a bidi override).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Whether a cell is written with a leading `'`: it starts with a
/// formula character, a lookalike of one, whitespace (a space, a line
/// feed, a no-break space) or an invisible character, or it holds a
/// control character anywhere; or it starts with `'` itself, so that the
/// reader, which removes one such quote, gives back every value as it was.
pub fn needs_guard(cell: &str) -> bool {
    let Some(first) = cell.chars().next() else {
        return false;
    };
    FORMULA_STARTS.contains(&first)
        || LOOKALIKE_STARTS.contains(&first)
        || first == '\''
        || first.is_whitespace()
        || invisible(first)
        || cell.chars().any(char::is_control)
}

/// A cell as written to a result file: one that a spreadsheet could run as
/// a formula or show as something else gets a leading `'` (OWASP's advice
/// against CSV injection), see [`needs_guard`];
/// [`crate::input::unneutralise`] undoes it.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if needs_guard(cell) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Writes one data line, every cell neutralised.
pub(crate) fn write_safe<I, T>(w: &mut CsvOut<'_>, cells: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    w.write_record(
        cells
            .into_iter()
            .map(|c| neutralise(c.as_ref()).into_owned()),
    )?;
    Ok(())
}

/// Counts of what was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub results_lines: u64,
    pub failure_lines: u64,
}

/// Writes `results.csv` and `failures.csv` for the rows in `scope`.
pub fn write_reports(store: &Store, scope: Scope, out: &Path, failures: &Path) -> Result<Written> {
    let mut written = Written::default();
    atomic_csv(out, |w| {
        w.write_record(RESULTS_HEADER)?;
        store.for_each_tracked(scope, |row| {
            for line in result_lines(&row) {
                write_safe(w, line)?;
                written.results_lines += 1;
            }
            Ok(())
        })
    })?;
    atomic_csv(failures, |w| {
        w.write_record(FAILURES_HEADER)?;
        store.for_each_failure(scope, |row| {
            write_safe(w, failure_line(&row))?;
            written.failure_lines += 1;
            Ok(())
        })
    })?;
    Ok(written)
}

/// The same rows as JSON lines, for a downstream system: one object per
/// tracked document (its units in an array) in `out`, one per failed or
/// rejected row (the `failures.csv` columns; numbers as numbers) in
/// `failures`. Values are as the API and the input gave them: JSON needs no
/// spreadsheet guard.
pub fn write_reports_ndjson(
    store: &Store,
    scope: Scope,
    out: &Path,
    failures: &Path,
) -> Result<Written> {
    let mut written = Written::default();
    crate::output::write(out, 0o600, |w| {
        store.for_each_tracked(scope, |row| {
            let units: Vec<serde_json::Value> = row
                .units
                .iter()
                .map(|u| serde_json::json!({"spi": u.spi, "reference": u.reference}))
                .collect();
            let line = serde_json::json!({
                "documentReference": row.document_reference,
                "agentCode": row.agent_code,
                "trackingId": row.tracking_id,
                "units": units,
            });
            writeln!(w, "{line}")?;
            written.results_lines += 1;
            Ok(())
        })
    })?;
    crate::output::write(failures, 0o600, |w| {
        store.for_each_failure(scope, |row| {
            let cells = failure_line(&row);
            let mut object = serde_json::Map::new();
            for (key, value) in FAILURES_HEADER.iter().zip(cells) {
                let number = matches!(*key, "line" | "httpStatus" | "attempts")
                    .then(|| value.parse::<u64>().ok())
                    .flatten();
                let v = match number {
                    Some(n) => serde_json::Value::from(n),
                    None if value.is_empty() && *key == "httpStatus" => serde_json::Value::Null,
                    None => serde_json::Value::from(value),
                };
                object.insert((*key).to_string(), v);
            }
            writeln!(w, "{}", serde_json::Value::Object(object))?;
            written.failure_lines += 1;
            Ok(())
        })
    })?;
    Ok(written)
}

/// A CSV being written to one of the [`crate::output`] targets.
pub(crate) type CsvOut<'a> = csv::Writer<&'a mut dyn Write>;

/// Writes a CSV through `fill` to `path`, atomically (see
/// [`crate::output`]). On any error `path` is left as it was.
pub(crate) fn atomic_csv(
    path: &Path,
    fill: impl FnOnce(&mut CsvOut<'_>) -> Result<()>,
) -> Result<()> {
    crate::output::write(path, 0o600, |out| {
        // Every field quoted, as OWASP advises: a spreadsheet that splits on
        // another delimiter still sees one cell.
        let mut writer = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(out);
        fill(&mut writer)?;
        writer
            .flush()
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
        Ok(())
    })
}

/// Writes `bytes` to `path` atomically, readable by the owner only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::write(path, 0o600, |out| Ok(out.write_all(bytes)?))
}

/// Same as [`write_atomic`], readable by all (0644 whatever the umask):
/// for the metrics textfile, which node_exporter reads as another user.
/// It holds counts only.
pub fn write_atomic_public(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::write_readable_by_all(path, |out| Ok(out.write_all(bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Status, Unit};

    #[test]
    fn a_document_without_units_gets_one_line() {
        let row = TrackedRow {
            document_reference: "D1".into(),
            agent_code: String::new(),
            tracking_id: "TRK1".into(),
            units: vec![],
        };
        assert_eq!(result_lines(&row), vec![["D1", "TRK1", "", "", ""]]);
    }

    #[test]
    fn one_line_per_unit() {
        let row = TrackedRow {
            document_reference: "D1".into(),
            agent_code: "CCGM".into(),
            tracking_id: "TRK1".into(),
            units: vec![
                Unit {
                    spi: Some("CNI1".into()),
                    reference: Some("CSQU3054383".into()),
                },
                Unit {
                    spi: None,
                    reference: Some("MWCU6059784".into()),
                },
            ],
        };
        assert_eq!(
            result_lines(&row),
            vec![
                ["D1", "TRK1", "CNI1", "CSQU3054383", "CCGM"],
                ["D1", "TRK1", "", "MWCU6059784", "CCGM"]
            ]
        );
    }

    #[test]
    fn failure_columns_follow_the_header() {
        let row = FailureRow {
            line: 12,
            document_reference: "D2".into(),
            status: Status::Failed,
            http_status: Some(400),
            code: "DOC_UNKNOWN".into(),
            message: "Unknown document".into(),
            details: "documentReference: not found".into(),
            attempts: 1,
            input: "/srv/in.csv".into(),
            fields: crate::input::OptionalFields {
                way: Some("Import".into()),
                agent_code: Some("CCGM".into()),
                ..Default::default()
            },
        };
        let line = failure_line(&row);
        let column = |name: &str| {
            let i = FAILURES_HEADER.iter().position(|h| *h == name).unwrap();
            line[i].as_str()
        };
        assert_eq!(column("line"), "12");
        assert_eq!(column("way"), "Import");
        assert_eq!(column("place"), "");
        assert_eq!(column("agentCode"), "CCGM");
        assert_eq!(column("status"), "failed");
        assert_eq!(column("httpStatus"), "400");
        assert_eq!(column("attempts"), "1");
        assert_eq!(column("input"), "/srv/in.csv");
        assert_eq!(line.len(), FAILURES_HEADER.len());
    }

    #[test]
    fn formulas_are_neutralised_and_the_reader_undoes_it() {
        for cell in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            let written = neutralise(cell);
            assert_eq!(written, format!("'{cell}"));
            assert_eq!(crate::input::unneutralise(&written), cell);
        }
        // Whitespace, invisible characters, lookalikes, control characters.
        for cell in [
            " =1+1",
            "\n=1",
            "\u{A0}=1",
            "\u{200B}=1",
            "\u{FEFF}x",
            "\u{202E}gnp.exe",
            "\u{FF1D}HYPERLINK(\"x\")",
            "\u{FE62}1",
            "CSQU\u{7}3054383",
            "TRK\u{1B}[31m",
        ] {
            let written = neutralise(cell);
            assert_eq!(written, format!("'{cell}"), "{cell:?}");
            assert_eq!(crate::input::unneutralise(&written), cell);
        }
        for cell in ["ABC123", "", "a=b", "1-2", "CNI 12", "Zoé", "x\u{200B}"] {
            assert_eq!(neutralise(cell), cell);
            assert_eq!(crate::input::unneutralise(cell), cell);
        }
        // A value that starts with a quote survives the round trip too.
        for cell in ["'-ABC", "'quoted", "''"] {
            assert_eq!(crate::input::unneutralise(&neutralise(cell)), cell);
        }
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        std::fs::write(&path, "old contents\n").unwrap();
        let err = atomic_csv(&path, |w| {
            w.write_record(["a"])?;
            anyhow::bail!("simulated failure")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old contents\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("results.csv");
        let err = atomic_csv(&path, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
