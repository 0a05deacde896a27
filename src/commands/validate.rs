//! `trackmass validate INPUT`: the offline check of a file. Reads with the
//! same reader and rules as `run`, sends nothing, writes nothing but the
//! optional rejects file.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use anyhow::Result;
use serde::Serialize;

use crate::cli::ValidateArgs;
use crate::config::defaults_from;
use crate::error::Exit;
use crate::input::{self, CHUNK_ROWS, InputReader, ReadOptions, Reject, Row};
use crate::progress;
use crate::report;
use crate::store::{Status, Store};

/// Rejects listed on the terminal (and in `--json`); `--rejects` has all.
const REJECTS_SHOWN: usize = 20;

/// What `validate` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub input: String,
    /// Non-blank data rows.
    pub rows: u64,
    pub valid: u64,
    pub rejected: u64,
    /// Valid rows that repeat an earlier row's request: sent once.
    pub duplicates: u64,
    /// With `--state`: rows the state file already answered or holds.
    pub already_tracked: u64,
    pub already_failed: u64,
    pub pending_in_state: u64,
    /// Requests a run would send (pending rows of the state included).
    pub to_send: u64,
    pub rate: String,
    /// At `rate`, not counting retries.
    pub estimated_seconds: u64,
    pub rejects: Vec<RejectLine>,
}

#[derive(Debug, Serialize)]
pub struct RejectLine {
    pub line: u64,
    pub document_reference: String,
    pub message: String,
}

pub fn execute(args: &ValidateArgs) -> Result<Exit> {
    let defaults = defaults_from(&args.defaults)?;
    if let Some(rejects) = &args.rejects {
        let mut protected = vec![("the input", args.input.clone())];
        if let Some(state) = &args.state {
            protected.extend(crate::paths::state_files(state));
        }
        crate::paths::check_outputs(&protected, &[("--rejects", rejects)])?;
        crate::paths::check_writable(&[("--rejects", rejects)])?;
    }
    let store = args
        .state
        .as_deref()
        .map(Store::open_read_only)
        .transpose()?;
    let options = ReadOptions {
        column: args.read.column.clone(),
        delimiter: args.read.delimiter,
    };
    let mut reader = InputReader::open(&args.input, &options)?;
    let columns = reader.columns().clone();
    let mut report = Report {
        input: args.input.display().to_string(),
        rate: args.rate.to_string(),
        ..Report::default()
    };
    let mut seen: HashSet<u64> = HashSet::new();
    let mut rejects: Vec<Reject> = Vec::new();
    let keep_all = args.rejects.is_some();
    loop {
        let chunk = reader.next_chunk(CHUNK_ROWS)?;
        if chunk.is_empty() {
            break;
        }
        for row in input::validate_chunk(&chunk, &columns, &defaults) {
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
                    let mut h = DefaultHasher::new();
                    v.payload.hash(&mut h);
                    if !seen.insert(h.finish()) {
                        report.duplicates += 1;
                        continue;
                    }
                    let known = match &store {
                        Some(s) => s.status_of_payload(&v.payload)?,
                        None => None,
                    };
                    match known {
                        None => report.to_send += 1,
                        Some(Status::Tracked) => report.already_tracked += 1,
                        Some(Status::Pending) => {
                            report.pending_in_state += 1;
                            report.to_send += 1;
                        }
                        Some(_) => report.already_failed += 1,
                    }
                }
            }
        }
    }
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
    super::print_stdout(&text);
    Ok(if report.rejected > 0 {
        Exit::RowsFailed
    } else {
        Exit::Success
    })
}

fn render(r: &Report, with_state: bool, rejects_file: Option<&std::path::Path>) -> String {
    let mut out = format!(
        "{}: {} rows: {} valid, {} rejected, {} duplicate rows (sent once)\n",
        r.input, r.rows, r.valid, r.rejected, r.duplicates
    );
    if with_state {
        out.push_str(&format!(
            "  state file: {} already tracked, {} failed before (not sent again; see `trackmass retry`), {} pending\n",
            r.already_tracked, r.already_failed, r.pending_in_state
        ));
    }
    let eta = progress::format_duration(std::time::Duration::from_secs(r.estimated_seconds));
    out.push_str(&format!(
        "To send: {} requests, about {eta} at {} (more if the API asks to slow down or fails).\n",
        r.to_send, r.rate
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
