//! `trackmass show REF…`: what the ledger knows of documents, read-only,
//! with each unit's latest event when the receiver has stored some.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::cli::ShowArgs;
use crate::error::Exit;
use crate::store::{DocumentView, Store};
use crate::webhooks::payload::Event;
use crate::webhooks::store::{EventStore, path_for};
use crate::words::count;

/// One reference looked up: its rows in the ledger (none if unknown).
#[derive(Debug, Serialize)]
pub struct Shown {
    pub reference: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub document: DocumentView,
    /// Per unit, in the answer's order: its latest event and its count.
    pub latest_events: Vec<Option<Latest>>,
}

#[derive(Debug, Serialize)]
pub struct Latest {
    pub event: Event,
    pub events: u64,
}

pub fn execute(args: &ShowArgs) -> Result<Exit> {
    super::require_state(&args.state)?;
    let store = Store::open_read_only(&args.state)?;
    let events = EventStore::open_read_only(&path_for(&args.state))?;
    let mut shown = Vec::new();
    for reference in &args.references {
        let mut rows = Vec::new();
        for document in store.documents(reference)? {
            let mut latest_events = Vec::new();
            for unit in &document.units {
                let latest = match &events {
                    Some(e) => e
                        .latest_for(
                            unit.spi.as_deref().unwrap_or_default(),
                            unit.reference.as_deref().unwrap_or_default(),
                        )?
                        .map(|(event, events)| Latest { event, events }),
                    None => None,
                };
                latest_events.push(latest);
            }
            rows.push(Row {
                document,
                latest_events,
            });
        }
        shown.push(Shown {
            reference: reference.clone(),
            rows,
        });
    }
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&shown)?;
        json.push('\n');
        json
    } else {
        render(&shown)
    };
    super::print_stdout(&text);
    Ok(if shown.iter().all(|s| !s.rows.is_empty()) {
        Exit::Success
    } else {
        Exit::RowsFailed
    })
}

/// The lookup for a terminal.
///
/// Long for a reason: one document's lines in the order they print
/// (status, tracking, units with their events, last answer, requests),
/// each a few lines of formatting.
pub fn render(shown: &[Shown]) -> String {
    let mut out = String::new();
    for s in shown {
        if s.rows.is_empty() {
            let _ = writeln!(out, "{}: not in the ledger", s.reference);
            continue;
        }
        for row in &s.rows {
            let d = &row.document;
            let agent = if d.agent_code.is_empty() {
                String::new()
            } else {
                format!(" (agent code {})", d.agent_code)
            };
            let _ = writeln!(out, "{}{agent}: {}", d.document_reference, d.status);
            if let Some(t) = &d.tracking_id {
                let _ = writeln!(
                    out,
                    "  tracking ID {t}, {}",
                    count(d.units.len() as u64, "handling unit", "handling units")
                );
            }
            for (unit, latest) in d.units.iter().zip(&row.latest_events) {
                let event = match latest {
                    Some(l) => format!(
                        "   last event {} at {} ({} in all)",
                        l.event.alert_type,
                        l.event.alert_date,
                        count(l.events, "event", "events")
                    ),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "    {} {}{event}",
                    unit.reference.as_deref().unwrap_or("-"),
                    unit.spi.as_deref().unwrap_or("-"),
                );
            }
            if d.http_status.is_some() || d.message.is_some() {
                let what = [
                    d.http_status.map(|h| format!("HTTP {h}")),
                    d.code.clone(),
                    d.message.clone(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                let label = if d.status == crate::ledger::Status::Rejected {
                    "refused before sending"
                } else {
                    "last answer"
                };
                let _ = writeln!(out, "  {label}: {what}");
            }
            // The row's last change: its last request, or (never sent) the
            // last time an input named it or a run put it back to pending.
            let when = d.updated_at.as_deref().map(|u| {
                if d.attempts == 0 {
                    format!(", last changed at {u}")
                } else {
                    format!(", last at {u}")
                }
            });
            let _ = writeln!(
                out,
                "  {}{}; from {} line {}",
                if d.attempts == 0 {
                    "never sent".to_string()
                } else {
                    count(d.attempts, "request", "requests")
                },
                when.unwrap_or_default(),
                d.input,
                d.line
            );
        }
    }
    out
}
