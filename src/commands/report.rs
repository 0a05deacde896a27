//! `trackmass report`: one self-contained HTML page of a run, from the
//! state file (read-only, lock-free: it works while a run holds the file).

use anyhow::Result;

use crate::cli::ReportArgs;
use crate::error::{Exit, UsageError};
use crate::page::{self, Page};
use crate::store::Store;

pub fn execute(args: &ReportArgs) -> Result<Exit> {
    super::require_state(&args.state)?;
    let outputs = [("--out", args.out.as_path())];
    crate::paths::check_outputs(&crate::paths::state_files(&args.state), &outputs)?;
    crate::paths::check_writable(&outputs)?;
    let store = Store::open_read_only(&args.state)?;
    let runs = store.runs()?;
    let wanted = match args.run {
        Some(id) => Some(id),
        None => store
            .latest_run_with_seconds()?
            .or_else(|| runs.last().map(|r| r.id)),
    };
    let Some(run) = wanted.and_then(|id| runs.iter().find(|r| r.id == id)) else {
        return Err(UsageError(format!(
            "{}: {} recorded in this state file",
            args.state.display(),
            args.run
                .map_or("no run".to_string(), |id| format!("no run #{id}"))
        ))
        .into());
    };
    let seconds = store.seconds(run.id)?;
    let failures = store.failures_answered_in(run.id)?;
    let state = args.state.display().to_string();
    let html = page::render(&Page {
        state: &state,
        run,
        seconds: &seconds,
        failures: &failures,
    });
    crate::output::write(&args.out, 0o600, |w| {
        w.write_all(html.as_bytes())?;
        Ok(())
    })?;
    if !crate::output::is_stdout(&args.out) {
        let answers: u64 = seconds.iter().map(|s| u64::from(s.answers())).sum();
        let span = match (seconds.first(), seconds.last()) {
            (Some(first), Some(last)) => last.at - first.at + 1,
            _ => 0,
        };
        super::print_stdout(&format!(
            "trackmass: wrote {} (run #{}: {} over {span} s) from {}\n",
            args.out.display(),
            run.id,
            crate::words::count(answers, "answer", "answers"),
            args.state.display()
        ));
    }
    Ok(Exit::Success)
}
