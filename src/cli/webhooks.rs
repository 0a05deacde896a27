//! The `webhooks` subcommands' arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Receive SOGET's webhook events at the secret path, storing each one
    /// durably before answering 2xx. Runs until SIGTERM or Ctrl-C.
    #[command(after_long_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Print the URL to register with SOGET: BASE plus the secret path
    /// token (created on first use, kept beside the state file).
    #[command(after_long_help = URL_EXAMPLES)]
    Url(UrlArgs),
    /// Write the events received, one line each with the document and
    /// tracking ID they belong to (read-only: the receiver and a run may
    /// be going).
    #[command(after_long_help = EXPORT_EXAMPLES)]
    Export(EventsExportArgs),
}

const EXPORT_EXAMPLES: &str = "\
Examples:
  Every event, with its document:
    trackmass webhooks export --out events.csv
  A status board, one line per container with its last event:
    trackmass webhooks export --latest --out board.csv";

#[derive(Debug, Args)]
pub struct EventsExportArgs {
    /// State file whose events store (STATE.events) and ledger are read.
    #[arg(long, default_value = super::DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// CSV to write (`-` for standard output).
    #[arg(long, default_value = "events.csv", value_name = "PATH")]
    pub out: PathBuf,

    /// One line per container: its last event (by AlertDate).
    #[arg(long)]
    pub latest: bool,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  Receive events on the default address, behind a reverse proxy for TLS:
    trackmass webhooks serve --state /var/lib/trackmass/trackmass.db
  A free port on loopback (the address is logged):
    trackmass webhooks serve --listen 127.0.0.1:0";

const URL_EXAMPLES: &str = "\
Examples:
  The URL to give to run --webhook-url (or run --webhooks):
    trackmass webhooks url https://hooks.transitaire-normand.fr/trackmass";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port). TLS is the reverse
    /// proxy's job.
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// State file whose webhook token and events store (STATE.events) are
    /// used; the state file itself is neither locked nor written.
    #[arg(long, default_value = super::DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,
}

#[derive(Debug, Args)]
pub struct UrlArgs {
    /// Public https URL the reverse proxy serves the receiver at, e.g.
    /// https://hooks.example.fr/trackmass.
    #[arg(value_name = "BASE")]
    pub base: String,

    /// State file the token is kept beside.
    #[arg(long, default_value = super::DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,
}
