//! The run lifecycle that `run`, `resume` and `retry` drive: connect (the
//! API, or the sandbox for `--sandbox`), send what the ledger owes, write
//! the result files from the ledger, the summary and the metrics, and say
//! how it ended. The commands only decide what the ledger owes first
//! (`run` loads its input with [`load`], `retry` puts failures back) and
//! return the exit status; only `main` ends the process.
//!
//! [`send`] runs one sending session (the state reader, the writer, the
//! progress display, signals); [`dispatch`] the request tasks; [`control`]
//! the one owner of the pace, the breaker and the counters they share.

pub mod connect;
pub mod control;

pub mod dispatch;
pub mod load;
pub mod send;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::api::{Api, Credentials, Found};
use crate::config::RunConfig;
use crate::error::Exit;
use crate::ledger::{Command, LoadCounts, RunId, RunOutcome, Status, StopReason};
use crate::progress::{self, BarSlot, Totals};
use crate::report;
use crate::store::{RunRecord, Scope, Store, now_rfc3339};
use crate::summary::{ErrorSummary, Summary};
use dispatch::DispatchReport;

/// What a command gets from its surroundings besides its settings.
#[derive(Clone)]
pub struct Ui {
    pub quiet: bool,
    pub slot: BarSlot,
    /// Where credentials are looked up: the environment, then the
    /// configuration file.
    pub secrets: SecretLookup,
    /// Ends the process at once with this status (a second Ctrl-C): given
    /// by `main`, the only place that ends the process.
    pub exit_now: fn(Exit) -> !,
}

/// Looks up a credential by its environment variable's name.
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<Found> + Send + Sync>;

/// What an invocation works on. Every one sends all the ledger owes
/// (pending documents, whichever input they came from) and reports on a
/// batch: the rows of a run's input, what was answered since, and what the
/// ledger still owes.
pub enum Start {
    /// `run`: its input, loaded into a batch of its own; `pending_earlier`
    /// documents left pending by earlier runs go with it.
    Load {
        load: LoadCounts,
        pending_earlier: u64,
    },
    /// `resume` and `retry`: report on this batch (after `retried` failed
    /// documents were put back to pending).
    Continue {
        command: Command,
        batch: Box<RunRecord>,
        retried: u64,
    },
}

impl Start {
    fn command(&self) -> Command {
        match self {
            Start::Load { .. } => Command::Run,
            Start::Continue { command, .. } => *command,
        }
    }

    /// The run whose rows are worked on: the invocation itself for `run`.
    fn batch(&self, invocation: RunId) -> RunId {
        match self {
            Start::Load { .. } => invocation,
            Start::Continue { batch, .. } => batch.id,
        }
    }
}

/// When a command fails outright, its summary and metrics files still say
/// so (a scheduler must not read yesterday's files as today's).
pub fn finish_with_error(
    result: Result<Exit>,
    command: Command,
    config: &RunConfig,
    started: &Started,
) -> Result<Exit> {
    let Err(error) = result else {
        return result;
    };
    // A usage error may be about these very paths (--summary naming the
    // input): write nothing then.
    if error.downcast_ref::<crate::error::UsageError>().is_some() {
        return Err(error);
    }
    let summary = ErrorSummary {
        command,
        state: config.state.display().to_string(),
        started_at: started.at.clone(),
        ended_at: now_rfc3339(),
        outcome: RunOutcome::Error,
        exit_code: crate::error::exit_code(&error),
        error: format!("{error:#}"),
    };
    if let Err(e) = write_summary_files(config, &summary, &summary.prometheus()) {
        tracing::error!("{e:#}");
    }
    Err(error)
}

/// Writes `--summary` (JSON, private) and `--metrics` (Prometheus textfile,
/// readable by node_exporter) when asked. Both are attempted; the first
/// failure is returned.
fn write_summary_files(
    config: &RunConfig,
    summary: &impl Serialize,
    prometheus: &str,
) -> Result<()> {
    let json = config
        .summary
        .as_ref()
        // A path that cannot be written was refused already, saying why.
        .filter(|path| crate::output::target(path).is_ok())
        .map(|path| {
            let json =
                serde_json::to_vec_pretty(summary).context("cannot serialize the summary")?;
            report::write_atomic(path, &json)
        })
        .transpose();
    let metrics = config
        .metrics
        .as_ref()
        .filter(|path| crate::output::target(path).is_ok())
        .map(|path| report::write_atomic_public(path, prometheus.as_bytes()))
        .transpose();
    json.and(metrics).map(|_| ())
}

/// When a command started, for durations and for the summary.
pub struct Started {
    pub instant: Instant,
    pub at: String,
}

impl Started {
    pub fn now() -> Started {
        Started {
            instant: Instant::now(),
            at: now_rfc3339(),
        }
    }
}

/// The credentials a run will use, checked before anything else is done;
/// `None` for `--sandbox`, which brings its own.
pub fn credentials(config: &RunConfig, ui: &Ui) -> Result<Option<Credentials>> {
    if config.sandbox {
        return Ok(None);
    }
    let lookup = ui.secrets.clone();
    Ok(Some(Credentials::from_lookup(move |name| lookup(name))?))
}

/// Sends the pending rows of a batch (after loading the input for `run`),
/// then writes the result files, the summary and the metrics.
pub async fn session(
    config: &RunConfig,
    ui: &Ui,
    mut store: Store,
    invocation: RunId,
    start: Start,
    credentials: Option<Credentials>,
    started: &Started,
) -> Result<Exit> {
    let mut sandbox = None;
    let outcome = match connect::connect(config, credentials).await {
        Ok((sb, api)) => {
            sandbox = sb;
            work(config, ui, &mut store, invocation, &start, api, started).await
        }
        Err(e) => Err(e),
    };
    // A state file removed or replaced while this command held it: its
    // answers went to a file nobody will read again.
    let outcome = outcome.and_then(|summary| store.check_unchanged().map(|()| summary));
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            let _ = store.end_run(
                invocation,
                RunOutcome::Error,
                &serde_json::json!({"error": format!("{e:#}")}).to_string(),
            );
            return Err(e);
        }
    };
    store.end_run(
        invocation,
        summary.outcome,
        &serde_json::to_string(&summary).unwrap_or_default(),
    )?;
    // A fatal cause was logged when it happened (once): the summary
    // files and the exit status carry it from here.
    write_summary_files(config, &summary, &summary.prometheus())?;
    // With --log-format json, the summary is a log event too: its figures
    // are fields of one JSON line.
    if crate::logging::is_json() {
        tracing::info!(
            outcome = summary.outcome.as_str(),
            exit_code = summary.exit_code,
            tracked = summary.tracked,
            failed = summary.failed,
            rejected = summary.load.rejected,
            pending = summary.pending,
            requests = summary.requests,
            sending_seconds = summary.sending_seconds,
            "summary: {}",
            summary.line()
        );
    }
    let line = format!("trackmass: {}\n", summary.line());
    if config.writes_stdout() {
        crate::commands::print_stderr(&line);
    } else {
        crate::commands::print_stdout(&line);
    }
    if let Some(sb) = sandbox {
        let _ = sb.shutdown().await;
    }
    Ok(summary.outcome.exit())
}

/// Sends the pending rows of the batch and sums up what the ledger holds
/// after it.
///
/// Long for a reason: half of it is the `Summary` literal, each field read
/// from the counts before and after; the rest is the order of a run
/// (recover, count, send, count again, write the files).
async fn work(
    config: &RunConfig,
    ui: &Ui,
    store: &mut Store,
    invocation: RunId,
    start: &Start,
    api: Api,
    started: &Started,
) -> Result<Summary> {
    let batch = start.batch(invocation);
    let scope = Scope::Report(batch);
    let recovered = store.recover_in_flight()?;
    if recovered > 0 {
        tracing::warn!(
            "{recovered} rows were in flight when an earlier run stopped; they will be sent again"
        );
    }

    let before = store.status_counts(scope)?;
    let pending = before.get(Status::Pending);
    let total = before.total() - before.get(Status::Rejected);
    let totals = Totals {
        total,
        done_before: total - pending,
        failed_before: before.failures() - before.get(Status::Rejected),
    };
    let pending_earlier = match start {
        Start::Load {
            pending_earlier, ..
        } => *pending_earlier,
        Start::Continue { .. } => 0,
    };

    let mut report = DispatchReport::default();
    let mut stopped_by: Option<StopReason> = None;
    if pending > 0 {
        announce(config, pending, pending_earlier);
        let (r, stop) =
            send::send_pending(config, ui, store, invocation, api, totals, started.instant).await?;
        report = r;
        stopped_by = stop;
    } else {
        tracing::info!("nothing to send");
    }

    let after = store.status_counts(scope)?;
    let (load, retried) = match start {
        Start::Load { load, .. } => (load.clone(), 0),
        // Nothing was read, but the input's rejects still belong to it.
        Start::Continue { retried, .. } => (
            LoadCounts {
                rejected: after.get(Status::Rejected),
                ..LoadCounts::default()
            },
            *retried,
        ),
    };
    let written = tokio::task::block_in_place(|| {
        report::write_reports(store, scope, &config.out, &config.failures)
    })?;
    tracing::debug!(
        results = written.results_lines,
        failures = written.failure_lines,
        "result files written"
    );
    let still_pending = after.get(Status::Pending);
    let outcome = RunOutcome::decide(
        report.fatal.is_some(),
        stopped_by.is_some(),
        still_pending,
        after.failures(),
    );
    Ok(Summary {
        command: start.command(),
        input: config.input.display().to_string(),
        state: config.state.display().to_string(),
        started_at: started.at.clone(),
        ended_at: now_rfc3339(),
        load,
        pending_earlier,
        retried,
        tracked: after.get(Status::Tracked),
        tracked_before: before.get(Status::Tracked),
        handling_units: after.units,
        failed: after.failures() - after.get(Status::Rejected),
        failed_earlier: store.failures_from_other_inputs(batch)?,
        exhausted: after.get(Status::Exhausted),
        pending: still_pending,
        requests: report.requests,
        resent_after_interruption: report.resent_after_interruption,
        throttled: report.throttled,
        lowest_pace_percent: (report.lowest_pace * 100.0).round(),
        stopped_by,
        elapsed_seconds: started.instant.elapsed().as_secs_f64(),
        sending_seconds: report.sending.as_secs_f64(),
        request_ms: crate::summary::RequestMs::of(&report.time, report.requests),
        outcome,
        exit_code: outcome.exit().code(),
        fatal: report.fatal,
        results: config.out.display().to_string(),
        failures: config.failures.display().to_string(),
    })
}

/// The start line: what is sent, at what pace, and about how long that
/// takes at `--rate` (with the latency `--concurrency` allows there).
fn announce(config: &RunConfig, pending: u64, pending_earlier: u64) {
    let included = if pending_earlier > 0 {
        format!(" ({pending_earlier} pending from earlier runs included)")
    } else {
        String::new()
    };
    tracing::info!(
        "{} to send{included} at {} with {} in flight (about {} at --rate; \
         longer if the API takes more than {} ms a request, or asks to slow down)",
        crate::words::count(pending, "row", "rows"),
        config.dispatch.rate,
        config.dispatch.concurrency,
        progress::eta(pending, Some(config.dispatch.rate.per_second()))
            .map_or_else(|| "unknown".into(), progress::format_duration),
        // Little's law: what --concurrency allows at --rate.
        (config.dispatch.concurrency as f64 / config.dispatch.rate.per_second() * 1000.0).round()
    );
}

/// Checks, before any work, what a run will need: `--concurrency` fits
/// the open-files limit, and the output paths can be written without
/// overwriting the state file (or its companions), the input, or each
/// other.
pub fn check_paths(config: &RunConfig) -> Result<()> {
    crate::os::check_concurrency(config.dispatch.concurrency, crate::os::open_files_limit())
        .map_err(|e| crate::error::UsageError(e.to_string()))?;
    let mut protected = crate::paths::state_files(&config.state);
    protected.push(("the input", config.input.clone()));
    let mut outputs = vec![
        ("--out", config.out.as_path()),
        ("--failures", config.failures.as_path()),
    ];
    if let Some(summary) = &config.summary {
        outputs.push(("--summary", summary));
    }
    if let Some(metrics) = &config.metrics {
        outputs.push(("--metrics", metrics));
    }
    crate::paths::check_outputs(&protected, &outputs)?;
    crate::paths::check_writable(&outputs)
}
