//! `trackmass run INPUT`: load, dispatch, report.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiSettings, CredentialNames, Credentials, Found, TokenSource};
use crate::cli::ProgressMode;
use crate::config::RunConfig;
use crate::dispatch::{self, DispatchReport};
use crate::error::Exit;
use crate::input::{self, CHUNK_ROWS, InputReader, Row};
use crate::ledger::{Command, LoadClass, LoadCounts, RunId, RunOutcome, Status, StopReason};
use crate::progress::{self, BarSlot, Progress, Totals};
use crate::report;
use crate::sandbox;
use crate::secret::Secret;
use crate::store::{self, PendingItem, RunRecord, Scope, Store, Writer, now_rfc3339};
use crate::summary::{ErrorSummary, Summary};

/// Rejected rows shown in the log before the rest are only counted.
const REJECTS_LOGGED: u64 = 20;

/// Pending rows read from the state per query.
const PAGE_ROWS: usize = 512;

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

/// `trackmass run`: checks, takes the state, loads the input and sends.
pub async fn execute(config: RunConfig, ui: Ui) -> Result<Exit> {
    let started = Started::now();
    let result = async {
        // Credentials first: fail before doing any work.
        let credentials = credentials(&config, &ui)?;
        check_paths(&config)?;
        // The header is checked before the state file is touched.
        let reader = InputReader::open(&config.input, &config.read_options())?;
        // One process per state file; held until this function returns.
        let _lock = crate::lock::acquire(&config.state, Command::Run)?;
        let mut store = Store::open(&config.state)?;
        let config_json =
            serde_json::to_string(&config).context("cannot serialize the configuration")?;
        // Reading and validating a big file takes seconds: let the runtime
        // move its other tasks (signals) to another thread.
        let (run, load) =
            tokio::task::block_in_place(|| load_input(&config, &mut store, reader, &config_json))?;
        let pending_earlier = store.pending_outside(run)?;
        let start = Start::Load {
            load,
            pending_earlier,
        };
        session(&config, &ui, store, run, start, credentials, &started).await
    }
    .await;
    finish_with_error(result, Command::Run, &config, &started)
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
    Credentials::from_lookup(move |name| lookup(name))
        .map(Some)
        .map_err(anyhow::Error::msg)
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
    let outcome = match connect(config, credentials).await {
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
    if let Some(fatal) = &summary.fatal {
        tracing::error!("{fatal}");
    }
    write_summary_files(config, &summary, &summary.prometheus())?;
    let line = format!("trackmass: {}\n", summary.line());
    if config.writes_stdout() {
        super::print_stderr(&line);
    } else {
        super::print_stdout(&line);
    }
    if let Some(sb) = sandbox {
        let _ = sb.shutdown().await;
    }
    Ok(summary.outcome.exit())
}

/// The API client, against the in-process sandbox for `--sandbox`.
async fn connect(
    config: &RunConfig,
    credentials: Option<Credentials>,
) -> Result<(Option<sandbox::Sandbox>, Api)> {
    let (sandbox, credentials, base_url, token_url) = match credentials {
        Some(credentials) => (
            None,
            credentials,
            config.base_url.clone(),
            config.token_url.clone(),
        ),
        None => {
            let sb = sandbox::start(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                sandbox::Config::default(),
            )
            .await
            .context("cannot start the sandbox")?;
            tracing::info!("sandbox listening on http://{}", sb.addr());
            let credentials = Credentials {
                api_key: Secret::new(sandbox::API_KEY),
                token: TokenSource::Client {
                    client_id: Secret::new(sandbox::CLIENT_ID),
                    client_secret: Secret::new(sandbox::CLIENT_SECRET),
                },
                names: CredentialNames::default(),
            };
            let (b, t) = (sb.base_url(), sb.token_url());
            (Some(sb), credentials, b, t)
        }
    };
    let api = Api::new(
        &ApiSettings {
            base_url,
            token_url,
            timeout: config.dispatch.timeout,
            send_grant_type: config.send_grant_type,
            pool: config.dispatch.concurrency,
        },
        credentials,
    )?;
    Ok((sandbox, api))
}

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
        let included = if pending_earlier > 0 {
            format!(" ({pending_earlier} pending from earlier runs included)")
        } else {
            String::new()
        };
        tracing::info!(
            "{pending} rows to send{included} at {} with {} in flight (about {} at --rate; \
             longer if the API takes more than {} ms a request, or asks to slow down)",
            config.dispatch.rate,
            config.dispatch.concurrency,
            progress::eta(pending, Some(config.dispatch.rate.per_second()))
                .map_or_else(|| "unknown".into(), progress::format_duration),
            // Little's law: what --concurrency allows at --rate.
            (config.dispatch.concurrency as f64 / config.dispatch.rate.per_second() * 1000.0)
                .round()
        );
        let (r, stop) =
            send_pending(config, ui, store, invocation, api, totals, started.instant).await?;
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
    tracing::debug!(?written, "result files written");
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
        outcome,
        exit_code: outcome.exit().code(),
        fatal: report.fatal,
        results: config.out.display().to_string(),
        failures: config.failures.display().to_string(),
    })
}

/// Checks, before any work, what a run will need: `--concurrency` fits
/// the open-files limit, and the output paths can be written without
/// overwriting the state file (or its companions), the input, or each
/// other.
pub fn check_paths(config: &RunConfig) -> Result<()> {
    crate::os::check_concurrency(config.dispatch.concurrency, crate::os::open_files_limit())
        .map_err(crate::error::UsageError)?;
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

/// The input's identity in the state: its absolute path when it has one.
fn canonical_source(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Records the run and reads, validates (in parallel) and stores its input,
/// chunk by chunk, in one transaction. Returns the run.
fn load_input(
    config: &RunConfig,
    store: &mut Store,
    mut reader: InputReader,
    config_json: &str,
) -> Result<(RunId, LoadCounts)> {
    let columns = reader.columns().clone();
    // Runs are recorded by the input's identity, as rows are.
    let source = canonical_source(&config.input);
    let mut loader = store.loader(&source, config_json, config.force)?;
    let run = loader.run();
    let mut rejects_logged = 0u64;
    let mut notices_logged = 0u64;
    loop {
        let chunk = reader.next_chunk(CHUNK_ROWS)?;
        if chunk.is_empty() {
            break;
        }
        let rows = input::validate_chunk(&chunk, &columns, &config.defaults);
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
        "{}: {} rows: {} new, {} already tracked, {} failed before, {} continued{extra}, \
         {} duplicate rows, {} rejected",
        config.input.display(),
        counts.rows,
        counts.new,
        counts.already_tracked,
        counts.already_failed,
        counts.continued,
        counts.duplicates,
        counts.rejected
    );
    Ok((run, counts))
}

/// Feeds pending documents from the ledger to the dispatcher; shows
/// progress; handles Ctrl-C / SIGTERM. Returns the report and why sending
/// stopped early, if it did.
async fn send_pending(
    config: &RunConfig,
    ui: &Ui,
    store: &Store,
    invocation: RunId,
    api: Api,
    totals: Totals,
    started: Instant,
) -> Result<(DispatchReport, Option<StopReason>)> {
    let writer = Arc::new(Writer::spawn(store, invocation, config.durability)?);
    let (tx, rx) = mpsc::channel::<PendingItem>(PAGE_ROWS * 2);
    let reader = store.reader()?;
    let feeder = std::thread::Builder::new()
        .name("state-reader".into())
        .spawn(move || feed(reader, tx))
        .context("cannot start the state reader thread")?;

    let display = progress_display(config.progress, config.progress_interval, ui);
    let view = Arc::new(crate::progress::PaceView::default());
    let progress = Progress::start(
        display,
        totals,
        writer.committed(),
        view.clone(),
        ui.slot.clone(),
    );

    let stop = CancellationToken::new();
    let stopped_by: Arc<std::sync::Mutex<Option<StopReason>>> = Arc::default();
    let signals = tokio::spawn(watch_signals(stop.clone(), stopped_by.clone(), ui.exit_now));
    let deadline = config.max_duration.map(|limit| {
        let (stop, stopped_by) = (stop.clone(), stopped_by.clone());
        let left = limit.saturating_sub(started.elapsed());
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            set_stop_reason(&stopped_by, StopReason::MaxDuration);
            tracing::warn!(
                "--max-duration reached: stopping; requests in flight finish, then the files are written"
            );
            stop.cancel();
        })
    });

    let mut report = dispatch::dispatch(
        Arc::new(api),
        writer.clone(),
        rx,
        config.dispatch.clone(),
        view,
        stop.clone(),
    )
    .await;
    signals.abort();
    // From here on only the result files are written (atomically): a
    // signal stops the process at once.
    let exit_now = ui.exit_now;
    tokio::spawn(async move {
        if next_signal().await {
            super::print_stderr(
                "trackmass: stopped while writing the result files; run again to finish\n",
            );
            exit_now(Exit::Interrupted);
        }
    });
    if let Some(d) = deadline {
        d.abort();
    }
    progress.finish().await;

    // A failure of the state threads stops the run, but the result files
    // and the summary are still written from what was committed.
    let mut problems = Vec::new();
    match feeder.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("{e:#}")),
        Err(_) => problems.push("the state reader thread panicked".to_string()),
    }
    match Arc::into_inner(writer) {
        Some(writer) => {
            if let Err(e) = writer.finish() {
                problems.push(format!("{e:#}"));
            }
        }
        None => problems.push("the state writer is still in use".to_string()),
    }
    if !problems.is_empty() {
        let problem = problems.join("; ");
        report.fatal = Some(match report.fatal.take() {
            Some(f) => format!("{f}; {problem}"),
            None => problem,
        });
    }
    let stopped_by = stopped_by.lock().ok().and_then(|s| *s);
    Ok((report, stopped_by))
}

/// Records the first reason to stop.
fn set_stop_reason(slot: &std::sync::Mutex<Option<StopReason>>, reason: StopReason) {
    if let Ok(mut s) = slot.lock()
        && s.is_none()
    {
        *s = Some(reason);
    }
}

/// Pages through the ledger's pending documents in id order until the
/// dispatcher hangs up.
fn feed(reader: Store, tx: mpsc::Sender<PendingItem>) -> Result<()> {
    let mut after = 0;
    loop {
        let page = reader.pending_page(after, PAGE_ROWS)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id;
        for item in page {
            if tx.blocking_send(item).is_err() {
                return Ok(());
            }
        }
    }
}

fn progress_display(mode: ProgressMode, interval: Duration, ui: &Ui) -> progress::Display {
    let terminal = std::io::stderr().is_terminal();
    match mode {
        ProgressMode::Never => progress::Display::Off,
        ProgressMode::Always => progress::Display::Bar,
        ProgressMode::Auto if ui.quiet => progress::Display::Off,
        ProgressMode::Auto if terminal => progress::Display::Bar,
        ProgressMode::Auto => progress::Display::Lines { interval },
    }
}

/// First Ctrl-C or SIGTERM: stop sending, finish what is in flight, write
/// the files, exit 4. Second: exit 4 at once (the state stays consistent:
/// every commit is atomic).
async fn watch_signals(
    stop: CancellationToken,
    stopped_by: Arc<std::sync::Mutex<Option<StopReason>>>,
    exit_now: fn(Exit) -> !,
) {
    let mut first = true;
    loop {
        if !next_signal().await {
            return;
        }
        if first {
            first = false;
            set_stop_reason(&stopped_by, StopReason::Signal);
            stop.cancel();
            tracing::warn!(
                "stopping: waiting for requests in flight, then writing the result files \
                 (press Ctrl-C again to quit at once)"
            );
        } else {
            super::print_stderr(
                "trackmass: stopped at once; run the same command again to continue\n",
            );
            exit_now(Exit::Interrupted);
        }
    }
}

/// Ctrl-C, SIGTERM, or SIGHUP (the terminal of an interactive onboarding
/// closed, an ssh session lost): each stops the run cleanly.
#[cfg(unix)]
async fn next_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        r = term.recv() => r.is_some(),
        r = hup.recv() => r.is_some(),
    }
}

#[cfg(not(unix))]
async fn next_signal() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}
