//! One sending session: the state reader feeding pending documents, the
//! state writer, the progress display, Ctrl-C / SIGTERM / SIGHUP and
//! `--max-duration`, around [`super::dispatch`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Ui;
use super::dispatch::{self, DispatchReport};
use crate::api::Api;
use crate::cli::ProgressMode;
use crate::config::RunConfig;
use crate::error::Exit;
use crate::ledger::{RunId, StopReason};
use crate::progress::{self, Progress, Totals};
use crate::store::{PendingItem, Store, Writer};

/// Pending rows read from the state per query.
const PAGE_ROWS: usize = 512;

/// Feeds pending documents from the ledger to the dispatcher; shows
/// progress; handles Ctrl-C / SIGTERM. Returns the report and why sending
/// stopped early, if it did.
///
/// Long for a reason: one `select!` loop over the page feed, the signals,
/// the deadline and the progress ticks; each arm is short, and the loop
/// is the order in which they are weighed.
pub async fn send_pending(
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

    let mut settings = config.dispatch.clone();
    settings.webhook_token = crate::webhooks::token::load(&config.state)?;
    let mut report = dispatch::dispatch(
        Arc::new(api),
        writer.clone(),
        rx,
        settings,
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
            crate::commands::print_stderr(
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
        tracing::error!("{problem}");
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
            crate::commands::print_stderr(
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
