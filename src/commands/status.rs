//! `trackmass status`: where a state file stands, read-only.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::error::Exit;
use crate::ledger::Status;
use crate::lock::Holder;
use crate::store::{FailureGroup, Overview, RunRecord, Scope, StatusCounts, Store};

/// Everything `status` shows; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    pub state: String,
    /// Rows of the whole state file by status, and their total.
    pub rows: Counts,
    pub handling_units: u64,
    /// With no run going on: rows a run was sending when it stopped or
    /// died; the next run sends them again.
    pub in_flight_at_interruption: u64,
    /// While a run goes on: rows it is sending now.
    pub in_flight_now: u64,
    pub failures: Vec<FailureGroup>,
    /// The rows the last run reports on (its input's, those answered since,
    /// and what the ledger still owes): what `export` writes.
    pub last_batch: Option<Batch>,
    /// The process running on this state file now, if any.
    pub running: Option<Holder>,
    pub runs: Vec<RunRecord>,
    /// What the webhook receiver stored, if it has run for this state.
    pub events: Option<Events>,
}

#[derive(Debug, Serialize)]
pub struct Events {
    /// Distinct events stored, and their deliveries (redeliveries count).
    pub stored: u64,
    pub deliveries: u64,
    /// Containers (units) with at least one event.
    pub containers: u64,
    /// Bodies kept that are not the spec's payload.
    pub unreadable: u64,
    /// Containers by the `AlertType` of their latest event, most first.
    pub latest: Vec<(String, u64)>,
}

/// The receiver's store of `state`, if there is one.
fn events(state: &Path) -> Result<Option<Events>> {
    use crate::webhooks::store::{EventStore, path_for};
    let Some(store) = EventStore::open_read_only(&path_for(state))? else {
        return Ok(None);
    };
    let t = store.totals()?;
    Ok(Some(Events {
        stored: t.events,
        deliveries: t.deliveries,
        containers: t.units,
        unreadable: t.unreadable,
        latest: store.latest_types()?,
    }))
}

#[derive(Debug, Serialize)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub tracked: u64,
    pub rejected: u64,
    pub failed: u64,
    pub exhausted: u64,
    pub bad_response: u64,
}

impl From<&StatusCounts> for Counts {
    fn from(c: &StatusCounts) -> Counts {
        Counts {
            total: c.total(),
            pending: c.get(Status::Pending),
            tracked: c.get(Status::Tracked),
            rejected: c.get(Status::Rejected),
            failed: c.get(Status::Failed),
            exhausted: c.get(Status::Exhausted),
            bad_response: c.get(Status::BadResponse),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Batch {
    pub run: i64,
    pub input: Option<String>,
    pub rows: Counts,
    pub handling_units: u64,
}

pub fn execute(args: &StatusArgs) -> Result<Exit> {
    let report = gather(&args.state)?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        json
    } else {
        render(&report)
    };
    super::print_stdout(&text);
    Ok(Exit::Success)
}

/// Reads the state file (never writing it: a run may hold it).
pub fn gather(state: &Path) -> Result<Report> {
    super::require_state(state)?;
    let store = Store::open_read_only(state)?;
    let Overview {
        counts,
        in_flight,
        interrupted,
        failures,
    } = store.overview()?;
    let last_batch = match store.latest_batch()? {
        Some(batch) => {
            let c = store.status_counts(Scope::Report(batch.id))?;
            Some(Batch {
                run: batch.id,
                input: batch.input,
                rows: Counts::from(&c),
                handling_units: c.units,
            })
        }
        None => None,
    };
    let runs = store.runs()?;
    let running = runs
        .last()
        .filter(|r| r.ended_at.is_none())
        .and_then(|_| crate::lock::holder(state));
    // Rows marked in flight belong to the live run if there is one, else to
    // a process that died with them.
    let (in_flight_now, left_in_flight) = if running.is_some() {
        (in_flight, 0)
    } else {
        (0, in_flight)
    };
    Ok(Report {
        state: state.display().to_string(),
        rows: Counts::from(&counts),
        handling_units: counts.units,
        in_flight_at_interruption: left_in_flight + interrupted,
        in_flight_now,
        failures,
        last_batch,
        running,
        runs,
        events: events(state)?,
    })
}

/// The report for a terminal.
pub fn render(r: &Report) -> String {
    let mut out = rows_by_status(r);
    render_events(&mut out, r);
    if let Some(b) = &r.last_batch {
        let _ = writeln!(
            out,
            "\nLast run's files: {} (run #{}): {} rows, {} tracked, {} pending, {} failed, {} rejected",
            b.input.as_deref().unwrap_or("?"),
            b.run,
            b.rows.total,
            b.rows.tracked,
            b.rows.pending,
            b.rows.failed + b.rows.exhausted + b.rows.bad_response,
            b.rows.rejected
        );
    }
    if !r.runs.is_empty() {
        let _ = writeln!(out, "\nRuns:");
        for run in &r.runs {
            let ended = match (&run.ended_at, run.outcome) {
                (Some(end), Some(outcome)) => format!("→ {end}  {outcome}"),
                _ if r.running.is_some() && Some(run.id) == r.runs.last().map(|l| l.id) => {
                    "running".to_string()
                }
                _ => "no end recorded (the process died)".to_string(),
            };
            let requests = run
                .summary
                .as_ref()
                .and_then(|s| s.get("requests"))
                .and_then(serde_json::Value::as_u64)
                .map(|n| format!(", {}", crate::words::count(n, "request", "requests")))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  #{:<4}{:<8}{} {ended}{requests}",
                run.id, run.command, run.started_at
            );
        }
    }
    if let Some(h) = &r.running {
        let _ = writeln!(
            out,
            "\nIn use by trackmass {} (pid {} on {}, since {}).",
            h.command, h.pid, h.host, h.since
        );
    }
    let next = if r.running.is_some() {
        None
    } else if r.rows.pending > 0 {
        Some(format!(
            "`trackmass resume --state {}` sends the {} pending rows.",
            r.state, r.rows.pending
        ))
    } else if r.rows.exhausted > 0 {
        Some(format!(
            "`trackmass retry --state {}` sends the {} exhausted rows again.",
            r.state, r.rows.exhausted
        ))
    } else {
        None
    };
    if let Some(next) = next {
        let _ = writeln!(out, "\nNext: {next}");
    }
    out
}

/// The documents by status, each failed status with its codes.
fn rows_by_status(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} documents, {} rejected {}",
        r.state,
        r.rows.total - r.rows.rejected,
        r.rows.rejected,
        if r.rows.rejected == 1 { "row" } else { "rows" }
    );
    let line = |out: &mut String, name: &str, n: u64, note: String| {
        let _ = writeln!(out, "  {name:<13}{n:>9}{note}");
    };
    line(
        &mut out,
        "tracked",
        r.rows.tracked,
        format!("   {} handling units", r.handling_units),
    );
    let mut notes = Vec::new();
    if r.in_flight_now > 0 {
        notes.push(format!("{} being sent now", r.in_flight_now));
    }
    if r.in_flight_at_interruption > 0 {
        notes.push(format!(
            "{} were in flight at an interruption",
            r.in_flight_at_interruption
        ));
    }
    let interrupted = if notes.is_empty() {
        String::new()
    } else {
        format!("   {}", notes.join(", "))
    };
    line(&mut out, "pending", r.rows.pending, interrupted);
    line(&mut out, "rejected", r.rows.rejected, String::new());
    for (name, n, status) in [
        ("failed", r.rows.failed, Status::Failed),
        ("exhausted", r.rows.exhausted, Status::Exhausted),
        ("bad_response", r.rows.bad_response, Status::BadResponse),
    ] {
        line(&mut out, name, n, String::new());
        for g in r.failures.iter().filter(|g| g.status == status) {
            let what = match (g.http_status, g.code.as_deref()) {
                (Some(h), Some(c)) => format!("{h} {c}"),
                (Some(h), None) => h.to_string(),
                (None, Some(c)) => c.to_string(),
                (None, None) => "no answer".to_string(),
            };
            let _ = writeln!(out, "    {:>9}  {what}", g.rows);
        }
    }
    out
}

/// What the webhook receiver stored, if it ran.
fn render_events(out: &mut String, r: &Report) {
    if let Some(e) = &r.events {
        let latest: Vec<String> = e.latest.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(
            out,
            "\nEvents: {} stored ({} deliveries) for {} containers; latest: {}{}",
            e.stored,
            e.deliveries,
            e.containers,
            if latest.is_empty() {
                "none".to_string()
            } else {
                latest.join(", ")
            },
            if e.unreadable > 0 {
                format!("; {} unreadable bodies kept", e.unreadable)
            } else {
                String::new()
            }
        );
    }
}
