//! Spreadsheet inputs (`.xlsx`, `.xlsm`, `.xls`, `.ods`, read with
//! calamine): one sheet turned into CSV text that the CSV reader then
//! reads like any file, one line per spreadsheet row, so that line numbers
//! in messages are the row numbers the spreadsheet shows.
//!
//! Cells become text as the spreadsheet shows them, with two guards:
//! - a number too large to be exact (15 digits and more, Excel's
//!   precision) is written in scientific notation (`3.71424E+15`), which
//!   validation refuses as a reference whose digits were lost;
//! - a line break inside a cell becomes U+000B (a control character that
//!   is no line end), so the row keeps its number and validation refuses
//!   the cell for its control character instead of reading two lines.

use std::path::Path;

use anyhow::{Context, Result, bail};
use calamine::{Data, Reader};

/// Whether `path` names a spreadsheet, by its extension.
pub fn is_spreadsheet(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "xlsx" | "xlsm" | "xls" | "ods"
        )
    })
}

/// The text of one cell.
fn cell_text(cell: &Data) -> String {
    let text = match cell {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number(*f),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Data::DateTime(d) => d.to_string(),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    };
    text.replace(['\r', '\n'], "\u{0B}")
}

/// A number as the spreadsheet shows it: an integer without `.0`; one past
/// Excel's 15 significant digits in scientific notation.
fn number(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        return format!("{f:.0}");
    }
    if f.is_finite() && f.abs() >= 1e15 {
        let text = format!("{f:.5E}");
        return match text.split_once('E') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}E+{e}"),
            _ => text,
        };
    }
    f.to_string()
}

/// The sheet (`sheet`, or the first) of the spreadsheet at `path` as CSV
/// text, row 1 of the sheet on line 1.
pub fn to_csv(path: &Path, sheet: Option<&str>) -> Result<Vec<u8>> {
    let mut book = calamine::open_workbook_auto(path)
        .with_context(|| format!("{}: cannot read the spreadsheet", path.display()))?;
    let names = book.sheet_names();
    let name = match sheet {
        Some(s) if names.iter().any(|n| n == s) => s.to_string(),
        Some(s) => bail!(
            "{}: no sheet named {s:?} (it has {})",
            path.display(),
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => match names.first() {
            Some(first) => first.clone(),
            None => bail!("{}: the spreadsheet has no sheet", path.display()),
        },
    };
    let range = book
        .worksheet_range(&name)
        .with_context(|| format!("{}: cannot read the sheet {name:?}", path.display()))?;
    let mut out = Vec::new();
    {
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(&mut out);
        // Rows above the used range are blank lines: line N is row N.
        let (first_row, first_col) = range.start().unwrap_or((0, 0));
        for _ in 0..first_row {
            writer.write_record(std::iter::empty::<&str>())?;
        }
        for row in range.rows() {
            let cells = std::iter::repeat_n(String::new(), first_col as usize)
                .chain(row.iter().map(cell_text));
            writer.write_record(cells)?;
        }
        writer.flush()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_the_spreadsheet_shows_them_or_refusably() {
        assert_eq!(number(3714238101.0), "3714238101");
        assert_eq!(number(42.5), "42.5");
        assert_eq!(number(3.71424e15), "3.71424E+15");
        assert_eq!(cell_text(&Data::String("a\nb".into())), "a\u{0B}b");
        assert!(is_spreadsheet(Path::new("x.XLSX")));
        assert!(!is_spreadsheet(Path::new("x.csv")));
    }
}
