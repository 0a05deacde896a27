//! `trackmass validate INPUT`: the offline check of a file. Reads with the
//! same reader and rules as `run`, sends nothing, writes nothing but the
//! optional rejects file.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use anyhow::Result;
use serde::Serialize;

use crate::cli::ValidateArgs;
use crate::config::defaults_from;
use crate::error::Exit;
use crate::input::{self, CHUNK_ROWS, InputReader, ReadOptions, Reject, Row, ValidRow};
use crate::ledger::{self, Known, LoadClass, LoadCounts, Status};
use crate::progress;
use crate::report;
use crate::store::{self, Notice, Scope, Store};

/// Rejects listed on the terminal (and in `--json`); `--rejects` has all.
const REJECTS_SHOWN: usize = 20;

/// What `validate` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub input: String,
    /// Which columns are read (and as what) and which ignored.
    pub columns: String,
    /// Non-blank data rows.
    pub rows: u64,
    pub valid: u64,
    pub rejected: u64,
    /// Valid rows that repeat an earlier row's request: sent once.
    pub duplicates: u64,
    /// Rows naming a document an earlier row (or the state file) holds
    /// with other fields: not applied.
    pub fields_differ: u64,
    /// With `--state`: rows the state file already answered or holds.
    pub already_tracked: u64,
    pub already_failed: u64,
    /// Rows correcting a document the API refused: sent.
    pub corrected: u64,
    pub pending_in_state: u64,
    /// Documents the state file holds pending from other inputs: a run
    /// sends them too.
    pub pending_from_earlier: u64,
    /// Requests a run would send (pending rows of the state included).
    pub to_send: u64,
    pub rate: String,
    /// At `rate`, not counting retries.
    pub estimated_seconds: u64,
    pub rejects: Vec<RejectLine>,
    /// The first rows whose fields differ from their document's.
    pub differing: Vec<RejectLine>,
}

#[derive(Debug, Serialize)]
pub struct RejectLine {
    pub line: u64,
    pub document_reference: String,
    pub message: String,
}

pub fn execute(args: &ValidateArgs) -> Result<Exit> {
    let defaults = defaults_from(&args.defaults)?;
    check_rejects_path(args)?;
    // A state file not made yet is a ledger that holds nothing.
    let store = match &args.state {
        Some(path) => Store::open_if_exists(path)?,
        None => None,
    };
    let options = ReadOptions {
        column: args.read.column.clone(),
        delimiter: args.read.delimiter,
        encoding: args.read.encoding,
        sheet: args.read.sheet.clone(),
    };
    let mut reader = InputReader::open(&args.input, &options)?;
    let mut report = Report {
        input: args.input.display().to_string(),
        columns: reader.describe_columns(),
        rate: args.rate.to_string(),
        ..Report::default()
    };
    let keep_all = args.rejects.is_some();
    let (counts, rejects) = tally(
        &mut reader,
        &defaults,
        store.as_ref(),
        keep_all,
        &mut report,
    )?;
    input::warn_if_empty(&args.input, report.rows);
    report.duplicates = counts.duplicates;
    report.fields_differ = counts.fields_differ;
    report.already_tracked = counts.already_tracked;
    report.already_failed = counts.already_failed;
    report.corrected = counts.corrected;
    report.pending_in_state = counts.continued;
    if let Some(store) = &store {
        let pending = store.status_counts(Scope::Ledger)?.get(Status::Pending);
        report.pending_from_earlier = pending.saturating_sub(counts.continued);
    }
    report.to_send = counts.queued() + report.pending_from_earlier;
    report.estimated_seconds =
        progress::eta(report.to_send, Some(args.rate.per_second())).map_or(0, |d| d.as_secs());
    report.rejects = rejects
        .iter()
        .take(REJECTS_SHOWN)
        .map(|r| RejectLine {
            line: r.line,
            document_reference: r.document_reference.clone(),
            message: r.message(),
        })
        .collect();
    if let Some(path) = &args.rejects {
        report::write_rejects(path, &rejects)?;
    }

    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        json
    } else {
        render(&report, args.state.is_some(), args.rejects.as_deref())
    };
    // With `--rejects -`, stdout holds the rejects alone.
    if args
        .rejects
        .as_deref()
        .is_some_and(crate::output::is_stdout)
    {
        super::print_stderr(&text);
    } else {
        super::print_stdout(&text);
    }
    Ok(if report.rejected > 0 {
        Exit::RowsFailed
    } else {
        Exit::Success
    })
}

/// `--rejects` must not overwrite the input or the state file, and must be
/// writable, before anything is read.
fn check_rejects_path(args: &ValidateArgs) -> Result<()> {
    let Some(rejects) = &args.rejects else {
        return Ok(());
    };
    let mut protected = vec![("the input", args.input.clone())];
    if let Some(state) = &args.state {
        protected.extend(crate::paths::state_files(state));
    }
    crate::paths::check_outputs(&protected, &[("--rejects", rejects)])?;
    crate::paths::check_writable(&[("--rejects", rejects)])?;
    Ok(())
}

/// Reads and validates every row, counting into `report` and `LoadCounts`
/// what a run would do with it; keeps the rejects (all of them with
/// `keep_all`, else the first few to show).
fn tally(
    reader: &mut InputReader,
    defaults: &crate::input::Defaults,
    store: Option<&Store>,
    keep_all: bool,
    report: &mut Report,
) -> Result<(LoadCounts, Vec<Reject>)> {
    let columns = reader.columns().clone();
    let mut seen = Seen::default();
    let mut counts = LoadCounts::default();
    let mut rejects: Vec<Reject> = Vec::new();
    loop {
        let chunk = reader.next_chunk(CHUNK_ROWS)?;
        if chunk.is_empty() {
            break;
        }
        for row in input::validate_chunk(&chunk, &columns, defaults) {
            report.rows += 1;
            match row {
                Row::Rejected(r) => {
                    report.rejected += 1;
                    if keep_all || rejects.len() < REJECTS_SHOWN {
                        rejects.push(r);
                    }
                }
                Row::Valid(v) => {
                    report.valid += 1;
                    let class = seen.classify(&v, store)?;
                    counts.count(class);
                    if matches!(
                        class,
                        LoadClass::DuplicateDiffers { .. } | LoadClass::KnownDiffers(_)
                    ) && report.differing.len() < REJECTS_SHOWN
                    {
                        let notice = Notice {
                            line: v.line,
                            document_reference: v.document_reference.clone(),
                            class,
                        };
                        report.differing.push(RejectLine {
                            line: v.line,
                            document_reference: v.document_reference.clone(),
                            message: store::describe(&notice),
                        });
                    }
                }
            }
        }
    }
    Ok((counts, rejects))
}

/// What the rows of the file met so far, to classify each row as `run`
/// would: documents by identity, with the first row's line and request.
#[derive(Default)]
struct Seen {
    documents: HashMap<u64, (u64, u64)>,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl Seen {
    fn classify(&mut self, row: &ValidRow, store: Option<&Store>) -> Result<LoadClass> {
        let key = hash_of((&row.document_reference, &row.agent_code));
        let payload = hash_of(&row.payload);
        let known = match self.documents.get(&key) {
            Some(&(first_payload, first_line)) => Some(Known {
                status: Status::Pending,
                same_fields: first_payload == payload,
                seen_at_line: Some(first_line),
                answered_before_force: false,
            }),
            None => {
                self.documents.insert(key, (payload, row.line));
                match store {
                    Some(s) => s.document(&row.document_reference, &row.agent_code)?.map(
                        |(status, held)| Known {
                            status,
                            same_fields: held == row.payload,
                            seen_at_line: None,
                            answered_before_force: false,
                        },
                    ),
                    None => None,
                }
            }
        };
        Ok(ledger::classify(known, false))
    }
}

fn render(r: &Report, with_state: bool, rejects_file: Option<&std::path::Path>) -> String {
    use crate::words::count;
    let mut out = format!(
        "{}: {}: {} valid, {} rejected, {} (sent once)\n",
        r.input,
        count(r.rows, "row", "rows"),
        r.valid,
        r.rejected,
        count(r.duplicates, "duplicate row", "duplicate rows")
    );
    out.push_str(&format!("  {}\n", r.columns));
    if with_state {
        out.push_str(&format!(
            "  state file: {} already tracked, {} failed before (not sent again; see `trackmass retry`), \
             {} pending, {} pending from other inputs (sent too)\n",
            r.already_tracked, r.already_failed, r.pending_in_state, r.pending_from_earlier
        ));
        if r.corrected > 0 {
            out.push_str(&format!(
                "  {} the fields of documents the API refused: sent again\n",
                count(r.corrected, "row corrects", "rows correct")
            ));
        }
    }
    if r.fields_differ > 0 {
        out.push_str(&format!(
            "  {} a document already held with other fields: not sent (`run --force` sends them)\n",
            count(r.fields_differ, "row names", "rows name")
        ));
        for d in &r.differing {
            out.push_str(&format!("  line {}: {}\n", d.line, d.message));
        }
    }
    let eta = progress::format_duration(std::time::Duration::from_secs(r.estimated_seconds));
    out.push_str(&format!(
        "To send: {}, about {eta} at {} (more if the API asks to slow down or fails).\n",
        count(r.to_send, "request", "requests"),
        r.rate
    ));
    for reject in &r.rejects {
        out.push_str(&format!("  line {}: {}\n", reject.line, reject.message));
    }
    let unlisted = r.rejected.saturating_sub(r.rejects.len() as u64);
    match rejects_file {
        Some(path) if r.rejected > 0 => {
            out.push_str(&format!("Every rejected row is in {}.\n", path.display()));
        }
        None if unlisted > 0 => {
            out.push_str(&format!(
                "  … and {unlisted} more (--rejects PATH lists them all)\n"
            ));
        }
        _ => {}
    }
    out
}
