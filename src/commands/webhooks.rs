//! `trackmass webhooks serve|url`: the receiver of SOGET's webhook events,
//! and the URL to register for it.

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::cli::{EventsExportArgs, ServeArgs, UrlArgs, WebhooksCommand};
use crate::error::{Exit, UsageError};
use crate::webhooks::receiver::{self, Counters};
use crate::webhooks::store::{self, EventStore};
use crate::webhooks::token;

pub async fn execute(command: WebhooksCommand) -> Result<Exit> {
    match command {
        WebhooksCommand::Serve(args) => serve(&args).await,
        WebhooksCommand::Url(args) => tokio::task::block_in_place(|| url(&args)),
        WebhooksCommand::Export(args) => tokio::task::block_in_place(|| export(&args)),
    }
}

fn export(args: &EventsExportArgs) -> Result<Exit> {
    let outputs = [("--out", args.out.as_path())];
    crate::paths::check_outputs(&crate::paths::state_files(&args.state), &outputs)?;
    crate::paths::check_writable(&outputs)?;
    let events = store::path_for(&args.state);
    let Some(store) = EventStore::open_read_only(&events)? else {
        return Err(UsageError(format!(
            "{}: no events received yet for {} (`trackmass webhooks serve` makes it)",
            events.display(),
            args.state.display()
        ))
        .into());
    };
    let ledger = crate::store::Store::open_read_only(&args.state)?;
    let mut lines = 0u64;
    let mut unknown = 0u64;
    crate::report::atomic_csv(&args.out, |w| {
        w.write_record(store::EXPORT_HEADER)?;
        lines = store.export(&ledger, args.latest, |row, events| {
            if row.document_reference.is_empty() {
                unknown += 1;
            }
            let e = &row.event;
            crate::report::write_safe(
                w,
                [
                    row.document_reference.as_str(),
                    &row.agent_code,
                    &row.tracking_id,
                    &e.spi,
                    &e.reference,
                    &e.alert_date,
                    &e.alert_type,
                    &e.direction,
                    &e.location,
                    &e.state,
                    &e.kind,
                    &e.freight_family,
                    &e.external_reference,
                    &row.received_at,
                    &row.deliveries.to_string(),
                    &events.to_string(),
                ],
            )
        })?;
        Ok(())
    })?;
    let print = if crate::output::is_stdout(&args.out) {
        super::print_stderr
    } else {
        super::print_stdout
    };
    print(&format!(
        "trackmass: wrote {} ({lines} {}, {unknown} for units the ledger does not know)\n",
        args.out.display(),
        if args.latest { "containers" } else { "events" },
    ));
    Ok(Exit::Success)
}

fn url(args: &UrlArgs) -> Result<Exit> {
    let base = args.base.trim();
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(UsageError(format!(
            "{base}: BASE must be the http(s) URL the receiver is reached at, \
             e.g. https://hooks.example.fr/trackmass"
        ))
        .into());
    }
    crate::store::resolve(&args.state)?;
    let (token, created) = token::load_or_create(&args.state, base)?;
    let url = token::Registration { token, base: None }.url(base);
    if created {
        tracing::info!(
            "a new webhook token was made and kept in {} (mode 0600; keep it as secret as \
             the credentials: whoever has it can post events)",
            token::path_for(&args.state).display()
        );
    }
    if let Some(why) = token::why_refused(&url) {
        tracing::warn!(
            "SOGET would refuse this URL, and run rejects rows with it: the spec's url \
             pattern does not match because {why}"
        );
    }
    super::print_stdout(&format!("{url}\n"));
    Ok(Exit::Success)
}

async fn serve(args: &ServeArgs) -> Result<Exit> {
    let stop = super::stop_signal();
    crate::store::resolve(&args.state)?;
    let Some(token) = token::load(&args.state)? else {
        bail!(
            "{}: no webhook token yet; run `trackmass webhooks url BASE --state {}` first \
             and register the URL it prints",
            token::path_for(&args.state).display(),
            args.state.display()
        );
    };
    let events = store::path_for(&args.state);
    let _lock = crate::lock::acquire_events(&events)?;
    let store = EventStore::open(&events)?;
    let totals = store.totals()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    super::print_stdout(&format!(
        "trackmass webhooks listening on http://{addr}\n  \
         events at the path of the URL `trackmass webhooks url` prints\n  \
         health http://{addr}/healthz\n  \
         store  {} ({} events)\n",
        events.display(),
        totals.events
    ));
    let counters = Arc::new(Counters::default());
    receiver::serve(listener, token, store, counters.clone(), stop)
        .await
        .context("the receiver stopped")?;
    tracing::info!("receiver stopped: {}", counters.line());
    Ok(Exit::Success)
}
