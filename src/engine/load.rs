//! `run`'s first step: read and validate (in parallel) its input and load
//! it into the ledger as a batch of its own, logging what the ledger makes
//! of each row.

use std::path::Path;

use anyhow::Result;

use crate::config::RunConfig;
use crate::input::{self, CHUNK_ROWS, InputReader, Row};
use crate::ledger::{LoadClass, LoadCounts, RunId};
use crate::store::{self, Store};

/// Rejected rows shown in the log before the rest are only counted.
const REJECTS_LOGGED: u64 = 20;

/// The input's identity in the state: its absolute path when it has one.
fn canonical_source(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Records the run and reads, validates (in parallel) and stores its input,
/// chunk by chunk, in one transaction. Returns the run.
///
/// Long for a reason: the transaction is this function's scope (begun,
/// fed chunk by chunk, committed or dropped on any error), so its steps
/// stay in one body where that scope can be seen.
pub fn load_input(
    config: &RunConfig,
    store: &mut Store,
    mut reader: InputReader,
    config_json: &str,
) -> Result<(RunId, LoadCounts)> {
    let columns = reader.columns().clone();
    tracing::info!("{}: {}", config.input.display(), reader.describe_columns());
    // Runs are recorded by the input's identity, as rows are.
    let source = canonical_source(&config.input);
    let mut loader = store.loader(&source, config_json, config.force)?;
    // The receiver's token stays out of the state file.
    let token = crate::webhooks::token::load(&config.state)?;
    let run = loader.run();
    let mut rejects_logged = 0u64;
    let mut notices_logged = 0u64;
    loop {
        let chunk = reader.next_chunk(CHUNK_ROWS)?;
        if chunk.is_empty() {
            break;
        }
        let mut rows = input::validate_chunk(&chunk, &columns, &config.defaults);
        if token.is_some() {
            mask_rows(&mut rows, token.as_ref());
        }
        for row in &rows {
            if let Row::Rejected(r) = row {
                rejects_logged += 1;
                if rejects_logged <= REJECTS_LOGGED {
                    tracing::warn!(
                        "{}: line {}: {}",
                        config.input.display(),
                        r.line,
                        r.message()
                    );
                }
            }
        }
        for notice in loader.add(&rows)? {
            notices_logged += 1;
            if notices_logged > REJECTS_LOGGED {
                continue;
            }
            let text = format!(
                "{}: line {}: {}",
                config.input.display(),
                notice.line,
                store::describe(&notice)
            );
            if notice.class == LoadClass::Corrected {
                tracing::info!("{text}");
            } else {
                tracing::warn!("{text}");
            }
        }
    }
    let counts = loader.finish()?;
    if counts.rejected > REJECTS_LOGGED {
        tracing::warn!(
            "{} more rejected rows; all are listed in {}",
            counts.rejected - REJECTS_LOGGED,
            config.failures.display()
        );
    }
    if notices_logged > REJECTS_LOGGED {
        tracing::warn!(
            "{} more rows name documents the state file holds with other fields \
             (`trackmass validate --state` lists them all)",
            notices_logged - REJECTS_LOGGED
        );
    }
    let mut extra = String::new();
    for (n, what) in [
        (
            counts.fields_differ,
            "with other fields than the ledger holds (not applied)",
        ),
        (counts.corrected, "corrections of refused documents"),
        (counts.forced, "sent again (--force)"),
    ] {
        if n > 0 {
            extra.push_str(&format!(", {n} {what}"));
        }
    }
    tracing::info!(
        "{}: {}: {} new, {} already tracked, {} failed before, {} continued{extra}, \
         {} duplicate rows, {} rejected",
        config.input.display(),
        crate::words::count(counts.rows, "row", "rows"),
        counts.new,
        counts.already_tracked,
        counts.already_failed,
        counts.continued,
        counts.duplicates,
        counts.rejected
    );
    crate::input::warn_if_empty(&config.input, counts.rows);
    Ok((run, counts))
}

/// Rows with the receiver's path token replaced by its placeholder: the
/// request bodies and a reject's fields as the state file keeps them.
fn mask_rows(rows: &mut [Row], token: Option<&crate::webhooks::token::Token>) {
    use crate::webhooks::token::mask;
    for row in rows {
        match row {
            Row::Valid(v) => v.payload = mask(&v.payload, token).into_owned(),
            Row::Rejected(r) => {
                if let Some(url) = &mut r.fields.url {
                    *url = mask(url, token).into_owned();
                }
                for p in &mut r.problems {
                    p.message = mask(&p.message, token).into_owned();
                }
            }
        }
    }
}
