//! `trackmass resume` and `trackmass retry`: send what the ledger owes,
//! with the last run's settings, and rewrite its files.

use anyhow::{Context, Result};

use crate::cli::{ContinueArgs, RetryStatus};
use crate::config::RunConfig;
use crate::engine::{self, Start, Started, Ui};
use crate::error::{Exit, UsageError};
use crate::ledger::{Command, RunId, Status};
use crate::store::{Scope, Store};

/// Sends every pending document of the ledger; `retry` (`requeue` not
/// empty) first puts the failed documents in those statuses back to
/// pending: those of the whole ledger, or of run `only` (its input's rows
/// and what it, or a continuation of it, answered). Either way with the
/// last run's settings, writing its files.
///
/// Long for a reason: the checks a continuation makes before it sends
/// (a state file, its lock, a run to continue, its settings, the
/// overrides), in that order, each with its own message.
pub async fn execute(
    command: Command,
    args: &ContinueArgs,
    requeue: &[RetryStatus],
    only: Option<RunId>,
    ui: Ui,
) -> Result<Exit> {
    let started = Started::now();
    if !args.state.exists() {
        return Err(UsageError(format!(
            "{}: no such state file; start with `trackmass run INPUT --state {}`",
            args.state.display(),
            args.state.display()
        ))
        .into());
    }
    let _lock = crate::lock::acquire(&args.state, command)?;
    let mut store = Store::open(&args.state)?;
    // The last run's settings and files, whatever rows are retried.
    let batch = store.latest_batch()?.ok_or_else(|| {
        UsageError(format!(
            "{}: no run to continue in this state file; start one with `trackmass run INPUT`",
            args.state.display()
        ))
    })?;
    if let Some(id) = only
        && store.batch(id)?.is_none()
    {
        return Err(UsageError(format!(
            "{}: no run #{id} that loaded an input (`trackmass status --state {}` lists the runs)",
            args.state.display(),
            args.state.display()
        ))
        .into());
    }
    let mut config: RunConfig = serde_json::from_str(&batch.config).with_context(|| {
        format!(
            "{}: the settings of run #{} cannot be read back",
            args.state.display(),
            batch.id
        )
    })?;
    config.rebase();
    apply_overrides(&mut config, args)?;

    let result = async {
        let credentials = engine::credentials(&config, &ui)?;
        engine::check_paths(&config)?;
        let statuses: Vec<Status> = requeue.iter().map(|s| status_of(*s)).collect();
        let retried = if statuses.is_empty() {
            0
        } else {
            let scope = only.map_or(Scope::Ledger, Scope::Batch);
            let n = store.requeue(scope, &statuses)?;
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            tracing::info!(
                "{n} rows ({}) put back to pending",
                names.join(", ")
            );
            if statuses.contains(&Status::BadResponse) && n > 0 {
                tracing::warn!(
                    "bad_response rows may already have a tracking: sending them again may create a second one"
                );
            }
            n
        };
        let config_json =
            serde_json::to_string(&config).context("cannot serialize the configuration")?;
        let token = crate::webhooks::token::load(&config.state)?;
        let config_json = crate::webhooks::token::mask(&config_json, token.as_ref()).into_owned();
        let invocation = store.begin_continuation(command, &batch, &config_json)?;
        let start = Start::Continue {
            command,
            batch: Box::new(batch),
            retried,
        };
        engine::session(&config, &ui, store, invocation, start, credentials, &started).await
    }
    .await;
    engine::finish_with_error(result, command, &config, &started)
}

fn status_of(s: RetryStatus) -> Status {
    match s {
        RetryStatus::Exhausted => Status::Exhausted,
        RetryStatus::Failed => Status::Failed,
        RetryStatus::BadResponse => Status::BadResponse,
    }
}

/// The settings `resume` and `retry` may change.
fn apply_overrides(config: &mut RunConfig, args: &ContinueArgs) -> Result<(), UsageError> {
    for (flag, given, stored) in [
        ("--base-url", &args.base_url, &mut config.base_url),
        ("--token-url", &args.token_url, &mut config.token_url),
    ] {
        if let Some(url) = given {
            crate::config::check_url(flag, url, args.allow_insecure_http)?;
            *stored = url.trim().to_string();
        }
    }
    config.state = args.state.clone();
    if let Some(out) = &args.out {
        config.out = out.clone();
    }
    if let Some(failures) = &args.failures {
        config.failures = failures.clone();
    }
    if args.summary.is_some() {
        config.summary = args.summary.clone();
    }
    if args.metrics.is_some() {
        config.metrics = args.metrics.clone();
    }
    if let Some(rate) = args.rate {
        config.dispatch.rate = rate;
    }
    if let Some(n) = args.concurrency {
        config.dispatch.concurrency = usize::from(n);
    }
    if args.max_duration.is_some() {
        config.max_duration = args.max_duration;
    }
    if let Some(p) = args.progress {
        config.progress = p;
    }
    if let Some(every) = args.progress_interval {
        config.progress_interval = every;
    }
    if args.sandbox {
        config.sandbox = true;
    }
    Ok(())
}
