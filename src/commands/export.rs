//! `trackmass export`: rewrite the result files from the state file.
//!
//! Read-only and lock-free: it works while a run holds the state file,
//! and shows what that run has committed so far.

use anyhow::Result;

use crate::cli::ExportArgs;
use crate::error::{Exit, UsageError};
use crate::report;
use crate::store::Store;

pub fn execute(args: &ExportArgs) -> Result<Exit> {
    if !args.state.is_file() {
        return Err(UsageError(format!(
            "{}: no such state file (pass --state PATH)",
            args.state.display()
        ))
        .into());
    }
    let outputs = [
        ("--out", args.out.as_path()),
        ("--failures", args.failures.as_path()),
    ];
    crate::paths::check_outputs(&crate::paths::state_files(&args.state), &outputs)?;
    crate::paths::check_writable(&outputs)?;
    let store = Store::open_read_only(&args.state)?;
    let batch = if args.all {
        None
    } else {
        match store.latest_batch()? {
            Some(b) => Some(b.id),
            None => {
                return Err(UsageError(format!(
                    "{}: no run recorded in this state file",
                    args.state.display()
                ))
                .into());
            }
        }
    };
    let written = report::write_reports(&store, batch, &args.out, &args.failures)?;
    super::print_stdout(&format!(
        "trackmass: wrote {} ({} lines) and {} ({} lines) from {}\n",
        args.out.display(),
        written.results_lines,
        args.failures.display(),
        written.failure_lines,
        args.state.display()
    ));
    Ok(Exit::Success)
}
