//! `trackmass export`: rewrite the result files from the state file.
//!
//! Read-only and lock-free: it works while a run holds the state file,
//! and shows what that run has committed so far.

use anyhow::Result;

use crate::cli::{ExportArgs, ExportFormat};
use crate::error::{Exit, UsageError};
use crate::report;
use crate::store::{Scope, Store};

pub fn execute(args: &ExportArgs) -> Result<Exit> {
    super::require_state(&args.state)?;
    let (out, failures) = (args.out(), args.failures());
    let outputs = [("--out", out.as_path()), ("--failures", failures.as_path())];
    crate::paths::check_outputs(&crate::paths::state_files(&args.state), &outputs)?;
    crate::paths::check_writable(&outputs)?;
    let store = Store::open_read_only(&args.state)?;
    let scope = if args.all {
        Scope::Ledger
    } else {
        let batch = match args.batch {
            Some(id) => store.batch(id)?,
            None => store.latest_batch()?,
        };
        match batch {
            Some(b) => Scope::Report(b.id),
            None => {
                return Err(UsageError(format!(
                    "{}: {} recorded in this state file (`--all` writes every row)",
                    args.state.display(),
                    args.batch.map_or("no run".to_string(), |id| format!(
                        "no run #{id} with an input"
                    ))
                ))
                .into());
            }
        }
    };
    let written = match args.format {
        ExportFormat::Csv => report::write_reports(&store, scope, &out, &failures)?,
        ExportFormat::Ndjson => report::write_reports_ndjson(&store, scope, &out, &failures)?,
    };
    let print = if crate::output::is_stdout(&out) || crate::output::is_stdout(&failures) {
        super::print_stderr
    } else {
        super::print_stdout
    };
    print(&format!(
        "trackmass: wrote {} ({}) and {} ({}) from {}\n",
        out.display(),
        crate::words::count(written.results_lines, "line", "lines"),
        failures.display(),
        crate::words::count(written.failure_lines, "line", "lines"),
        args.state.display()
    ));
    Ok(Exit::Success)
}
