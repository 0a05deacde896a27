//! Command-line interface: clap definitions and the value parsers behind them.
//!
//! House rules:
//! - doc comments are the help text; every subcommand's long help ends with
//!   an example;
//! - values are validated while parsing (rates, durations, delimiters), so a
//!   bad flag is a usage error (exit 2) before anything runs;
//! - no flag ever carries a secret: credentials come from the environment.

mod webhooks;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
pub use webhooks::{EventsExportArgs, ServeArgs, UrlArgs, WebhooksCommand};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::units::{Rate, parse_duration, parse_fraction};

/// The state file every command uses when `--state` is not given.
pub const DEFAULT_STATE: &str = "trackmass.db";

/// `--version`: the crate's version, the commit and the build date.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TRACKMASS_BUILD"),
    ")"
);

/// Track the handling units of many documents at once with SOGET's
/// "API Tracking Code In Mass".
#[derive(Debug, Parser)]
#[command(name = "trackmass", version = VERSION, about, long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log errors only (a run, resume or retry still prints its summary
    /// line).
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More log detail (-v: debug, -vv: trace).
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Settings file (TOML): any long flag as `name = value`, plus
    /// credentials in a [credentials] table. Flags given here win.
    #[arg(long, global = true, env = "TRACKMASS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Track every document reference of a CSV file.
    #[command(after_long_help = crate::error::with_sending_statuses(RUN_EXAMPLES))]
    Run(Box<RunArgs>),
    /// Check a CSV file offline: rows, rejects, duplicates, how long a run
    /// would take. Sends nothing.
    #[command(after_long_help = VALIDATE_EXAMPLES)]
    Validate(Box<ValidateArgs>),
    /// Show where a state file stands: rows by status, failures by code,
    /// the runs and how they ended.
    #[command(after_long_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Send everything still pending, with the settings of the last run (no
    /// input file needed).
    #[command(after_long_help = crate::error::with_sending_statuses(RESUME_EXAMPLES))]
    Resume(Box<ContinueArgs>),
    /// Put failed documents back to pending and send them, with what is
    /// still pending.
    #[command(after_long_help = crate::error::with_sending_statuses(RETRY_EXAMPLES))]
    Retry(Box<RetryArgs>),
    /// Rewrite the result files from the state file (also while a run
    /// holds it).
    #[command(after_long_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Write one self-contained HTML page of a run: its pace over time
    /// against --rate, its 429s and failures over time, failures by code.
    #[command(after_long_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// What the ledger knows of documents: status, tracking ID, units
    /// (and their latest event), attempts, last error, when.
    #[command(after_long_help = SHOW_EXAMPLES)]
    Show(ShowArgs),
    /// Receive the events the trackings send (SOGET's webhooks).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Serve an emulator of the API on this machine, for rehearsals and tests.
    #[command(after_long_help = SANDBOX_EXAMPLES)]
    Sandbox(Box<SandboxArgs>),
    /// Print the man page (roff), e.g. into
    /// /usr/local/share/man/man1/trackmass.1; with a command, its own page
    /// (trackmass-run.1, ...).
    #[command(after_long_help = MAN_EXAMPLES)]
    Man {
        /// A command whose page to print (run, validate, show, ...).
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Print a shell completion script.
    #[command(after_long_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const VALIDATE_EXAMPLES: &str = "\
Examples:
  Check a customer's file before onboarding it, with the flags the run will use:
    trackmass validate customer.csv --way Import --agent-code CCGM --rate 600/min

  Also count what an existing state file already tracked, and list every reject:
    trackmass validate today.csv --state prod.db --rejects rejects.csv

Exit status: 0 every row valid, 3 some rows invalid, 1 the file cannot be read.";

const SHOW_EXAMPLES: &str = "\
Examples:
  What happened to this bill of lading?
    trackmass show 3714238101 --state prod.db
  For a script:
    trackmass show 3714238101 LEH2024330356 --state prod.db --json | jq '.[0].status'

Exit status: 0 every reference is in the ledger, 3 some are not, 2 usage error.";

const REPORT_EXAMPLES: &str = "\
Examples:
  The last run that sent requests, to open in a browser:
    trackmass report --state prod.db --out last-night.html
  An earlier invocation (its number as `trackmass status` lists it):
    trackmass report --state prod.db --run 12 --out run-12.html

The page holds everything (inline SVG and CSS, no script): it can be mailed
or archived as it is. Times are UTC.

Exit status: 0 written, 2 usage error (no such run, no state file), 1 the
page cannot be written.";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// State file to read (never written; may be in use by a run).
    #[arg(long, default_value = DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// The invocation to show (run, resume or retry), as `status` numbers
    /// them [default: the last one that sent requests]
    #[arg(long, value_name = "N")]
    pub run: Option<i64>,

    /// The HTML file to write (- for stdout).
    #[arg(long, default_value = "report.html", value_name = "PATH")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Document references to look up (as in the input: case matters).
    #[arg(value_name = "REF", required = true, num_args = 1..)]
    pub references: Vec<String>,

    /// State file to read (never written; may be in use by a run).
    #[arg(long, default_value = DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// Print JSON on stdout, for scripts.
    #[arg(long)]
    pub json: bool,
}

const STATUS_EXAMPLES: &str = "\
Examples:
  trackmass status --state prod.db
  trackmass status --state prod.db --json | jq .rows";

const RESUME_EXAMPLES: &str = "\
Examples:
  Continue after Ctrl-C, a --max-duration stop or a fatal error:
    trackmass resume --state onboarding.db

  Continue more slowly than the run was started:
    trackmass resume --state onboarding.db --rate 5/s";

const RETRY_EXAMPLES: &str = "\
Examples:
  Send again the documents whose retries ran out (network errors, 5xx,
  timeouts), whichever night they came from:
    trackmass retry --state prod.db

  Only those of run 12 (`trackmass status` lists the runs):
    trackmass retry --state prod.db --run 12

  After the API side was fixed (e.g. an agent code registered), the 400s too:
    trackmass retry --state prod.db --status failed

  A corrected copy of failures.csv is also a valid input:
    trackmass run failures-fixed.csv --state prod.db";

const EXPORT_EXAMPLES: &str = "\
Examples:
  trackmass export --state prod.db --out results.csv --failures failures.csv
  trackmass export --state prod.db --all --out everything.csv
  trackmass export --state prod.db --run 12 --out - | head";

const MAN_EXAMPLES: &str = "\
Examples:
  Install every page:
    for c in '' run validate status show resume retry export webhooks sandbox; do
      trackmass man $c > /usr/local/share/man/man1/trackmass${c:+-$c}.1
    done
  Read one without installing it:
    trackmass man run | man -l -";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  trackmass completions bash > ~/.local/share/bash-completion/completions/trackmass
  trackmass completions zsh > ~/.zfunc/_trackmass
  trackmass completions fish > ~/.config/fish/completions/trackmass.fish";

const RUN_EXAMPLES: &str = "\
Examples:
  Try it without an account, against the built-in sandbox:
    trackmass run samples/documents.csv --sandbox

  A real run (credentials from the environment):
    export TRACKMASS_API_KEY=... TRACKMASS_CLIENT_ID=... TRACKMASS_CLIENT_SECRET=...
    trackmass run documents.csv --way Import --agent-code CCGM --rate 600/min

  After an interruption, the same command continues:
    trackmass run documents.csv --way Import --agent-code CCGM --rate 600/min";

const SANDBOX_EXAMPLES: &str = "\
Examples:
  trackmass sandbox --listen 127.0.0.1:8080
  TRACKMASS_API_KEY=sandbox-key TRACKMASS_CLIENT_ID=sandbox-client \\
  TRACKMASS_CLIENT_SECRET=sandbox-secret \\
    trackmass run samples/documents.csv \\
      --base-url http://127.0.0.1:8080/api-tracking-code-in-mass/v1 \\
      --token-url http://127.0.0.1:8080/soget-connect/v1/openid-connect/token";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// CSV file with a documentReference column (header row required); `-`
    /// reads standard input.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    #[command(flatten)]
    pub files: FileArgs,

    #[command(flatten)]
    pub read: ReadArgs,

    #[command(flatten)]
    pub defaults: DefaultArgs,

    /// Send documents again even if the state file already holds an answer
    /// for them, with this input's fields. A document named twice in the
    /// file is still sent once.
    #[arg(long, help_heading = "Sending")]
    pub force: bool,

    /// Register the receiver's URL (the one `trackmass webhooks url`
    /// printed for this state file) for rows without a url.
    #[arg(
        long,
        conflicts_with = "webhook_url",
        help_heading = "Request defaults (a row's own column wins)"
    )]
    pub webhooks: bool,

    #[command(flatten)]
    pub dispatch: DispatchArgs,

    #[command(flatten)]
    pub api: ApiArgs,

    /// Stop sending after this long (e.g. 6h, for a nightly window): requests
    /// in flight finish, the files are written, exit 4; the next run
    /// continues.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Sending")]
    pub max_duration: Option<Duration>,

    /// Start the built-in sandbox on a free loopback port and run against it
    /// with its own credentials (no account needed).
    #[arg(long, help_heading = "API")]
    pub sandbox: bool,

    /// Progress display on stderr: a bar on a terminal, periodic log lines
    /// otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, value_name = "WHEN", help_heading = "Progress")]
    pub progress: ProgressMode,

    /// Time between two progress log lines (when there is no bar).
    #[arg(long, default_value = "30s", value_parser = parse_interval, value_name = "DURATION", help_heading = "Progress")]
    pub progress_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Files")]
pub struct FileArgs {
    /// State file (SQLite): the ledger of documents, what is owed and every
    /// answer; each run on it also sends what earlier runs left pending.
    #[arg(long, default_value = DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// Results CSV: one line per tracked handling unit.
    #[arg(long, default_value = "results.csv", value_name = "PATH")]
    pub out: PathBuf,

    /// Failures CSV: rows rejected locally, refused by the API, or whose
    /// retries ran out.
    #[arg(long, default_value = "failures.csv", value_name = "PATH")]
    pub failures: PathBuf,

    /// Also write the run's summary as JSON here (counts, duration, exit
    /// status), including when the run stops early.
    #[arg(long, value_name = "PATH")]
    pub summary: Option<PathBuf>,

    /// Also write the summary as a Prometheus textfile here (for
    /// node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// full: each commit of answers is on disk before it counts (nothing is
    /// lost, even to a power cut). normal: a crash of trackmass loses
    /// nothing, a power cut may lose the last answers, which are then sent
    /// again; less disk work (see BENCHMARKS.md).
    #[arg(long, value_enum, default_value_t = crate::store::Durability::Full, value_name = "MODE")]
    pub durability: crate::store::Durability,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Input")]
pub struct ReadArgs {
    /// Header of the column holding the document reference
    /// [default: documentReference or document_reference, any case]
    #[arg(long, value_name = "NAME")]
    pub column: Option<String>,

    /// Field delimiter: ',', ';', 'tab' or another single character
    /// [default: detected from the header line]
    #[arg(long, value_parser = parse_delimiter, value_name = "CHAR")]
    pub delimiter: Option<u8>,

    /// Character encoding of the file: utf-8, or windows-1252 (French
    /// Excel's "CSV (separator: semicolon)"; also latin1, iso-8859-1), or
    /// another WHATWG label [default: utf-8, with or without a BOM]
    #[arg(long, value_parser = parse_encoding, value_name = "NAME")]
    pub encoding: Option<&'static encoding_rs::Encoding>,

    /// The sheet of a spreadsheet input (.xlsx, .xlsm, .xls, .ods, read
    /// directly; line numbers are its row numbers) [default: the first]
    #[arg(long, value_name = "NAME")]
    pub sheet: Option<String>,
}

/// An encoding by its WHATWG label (`windows-1252`, `latin1`, `utf-8`, …).
fn parse_encoding(s: &str) -> Result<&'static encoding_rs::Encoding, String> {
    match encoding_rs::Encoding::for_label(s.trim().as_bytes()) {
        Some(e) if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE => Err(format!(
            "{s}: UTF-16 is not read; save the file as UTF-8 (\"CSV UTF-8\" in Excel)"
        )),
        Some(e) => Ok(e),
        None => Err(format!(
            "{s}: not an encoding name (utf-8, windows-1252, latin1, iso-8859-15, ...)"
        )),
    }
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Request defaults (a row's own column wins)")]
pub struct DefaultArgs {
    /// Customs way: Unknown, Import, Export, Transit, Transhipment,
    /// DomesticIn, DomesticOut or DomesticTranshipment.
    #[arg(long, value_name = "WAY")]
    pub way: Option<String>,

    /// Event location (at most 20 characters), e.g. MTDF.
    #[arg(long, value_name = "PLACE")]
    pub place: Option<String>,

    /// Agent code of the shipping company (at most 64 characters), e.g. CCGM.
    #[arg(long, value_name = "CODE")]
    pub agent_code: Option<String>,

    /// Webhook URL that receives the tracking events.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Sending")]
pub struct DispatchArgs {
    /// Requests in flight at once.
    #[arg(long, default_value = "8", value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N")]
    pub concurrency: u16,

    /// Most requests per period, spread evenly: N/s, N/min or N/h.
    #[arg(long, default_value = "10/s", value_name = "RATE")]
    pub rate: Rate,

    /// Requests that may go out back to back after an idle spell. With 1,
    /// no window of the rate's period ever holds more than its N requests.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub burst: u32,

    /// Time allowed for one request (below the gateway's 240 s).
    #[arg(long, default_value = "30s", value_parser = parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,

    /// Attempts per row for network errors, timeouts, 408, 429 and 5xx.
    #[arg(long, default_value = "6", value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub max_attempts: u32,

    /// First retry delay (doubles each attempt, with full jitter).
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub backoff_base: Duration,

    /// Longest retry delay.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub backoff_cap: Duration,

    /// Stop the run (exit 1, unsent rows stay pending) after this many
    /// failures in a row of the same kind (network errors, timeouts, 5xx,
    /// 429s) with no success between.
    #[arg(long, default_value = "30", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub trip_after: u32,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "API")]
pub struct ApiArgs {
    /// Base URL of the API.
    #[arg(long, env = "TRACKMASS_BASE_URL", default_value = crate::spec::DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// OAuth2 token URL (client credentials).
    #[arg(long, env = "TRACKMASS_TOKEN_URL", default_value = crate::spec::DEFAULT_TOKEN_URL, value_name = "URL")]
    pub token_url: String,

    /// Do not send grant_type=client_credentials to the token URL (for
    /// gateways that add it themselves).
    #[arg(long)]
    pub no_grant_type: bool,

    /// Allow plain http:// URLs that are not on this machine.
    #[arg(long)]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// CSV file to check (`-` reads standard input).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// A state file to compare with: rows it already tracked are counted
    /// (it is only read).
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Write every rejected row here as CSV (line, documentReference,
    /// field values, reason).
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<PathBuf>,

    /// The rate the run will use, for the time estimate.
    #[arg(long, default_value = "10/s", value_name = "RATE")]
    pub rate: Rate,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub read: ReadArgs,

    #[command(flatten)]
    pub defaults: DefaultArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// State file to read (never written).
    #[arg(long, default_value = DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// Print JSON on stdout, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Settings `resume` and `retry` may change; the others are the stored
/// run's.
#[derive(Debug, Args)]
pub struct ContinueArgs {
    /// State file (the ledger of documents).
    #[arg(long, default_value = DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// Results CSV [default: the run's]
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Failures CSV [default: the run's]
    #[arg(long, value_name = "PATH")]
    pub failures: Option<PathBuf>,

    /// Summary JSON [default: the run's]
    #[arg(long, value_name = "PATH")]
    pub summary: Option<PathBuf>,

    /// Prometheus textfile [default: the run's]
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Requests per period [default: the run's]
    #[arg(long, value_name = "RATE")]
    pub rate: Option<Rate>,

    /// Requests in flight at once [default: the run's]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N")]
    pub concurrency: Option<u16>,

    /// Stop sending after this long [default: the run's]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_duration: Option<Duration>,

    /// Progress display [default: the run's]
    #[arg(long, value_enum, value_name = "WHEN")]
    pub progress: Option<ProgressMode>,

    /// Time between two progress log lines [default: the run's]
    #[arg(long, value_parser = parse_interval, value_name = "DURATION")]
    pub progress_interval: Option<Duration>,

    /// Send to a built-in sandbox on a free loopback port, with its own
    /// credentials (a rehearsal) [default: the run's]
    #[arg(long, help_heading = "API", conflicts_with_all = ["base_url", "token_url"])]
    pub sandbox: bool,

    /// Base URL of the API [default: the run's]
    #[arg(
        long,
        env = "TRACKMASS_BASE_URL",
        value_name = "URL",
        help_heading = "API"
    )]
    pub base_url: Option<String>,

    /// OAuth2 token URL [default: the run's]
    #[arg(
        long,
        env = "TRACKMASS_TOKEN_URL",
        value_name = "URL",
        help_heading = "API"
    )]
    pub token_url: Option<String>,

    /// Allow plain http:// URLs that are not on this machine.
    #[arg(long, help_heading = "API")]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Which failures to send again: exhausted (retries ran out: network
    /// errors, timeouts, 5xx, 429), failed (refused by the API, e.g. a 400)
    /// or bad_response (a 201 that could not be read: the tracking may
    /// exist already, so a retry may create a second one).
    #[arg(long, value_enum, num_args = 1.., default_values_t = [RetryStatus::Exhausted], value_name = "STATUS")]
    pub status: Vec<RetryStatus>,

    /// Only the failures among run N's rows: those of its input, and those
    /// answered by it or a resume of it. The last run's settings and files
    /// are used all the same [default: every failure of the state file;
    /// `trackmass status` lists the runs]
    #[arg(long = "run", value_name = "N")]
    pub batch: Option<i64>,

    #[command(flatten)]
    pub run: ContinueArgs,
}

/// Failed statuses `retry` can put back to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RetryStatus {
    Exhausted,
    Failed,
    BadResponse,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// State file to read (never written; may be in use by a run).
    #[arg(long, default_value = DEFAULT_STATE, value_name = "PATH")]
    pub state: PathBuf,

    /// Results file to write [default: results.csv, or results.ndjson
    /// with --format ndjson]
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Failures file to write [default: failures.csv, or failures.ndjson
    /// with --format ndjson]
    #[arg(long, value_name = "PATH")]
    pub failures: Option<PathBuf>,

    /// Every row of the state file, not only those the last run reports
    /// on.
    #[arg(long, conflicts_with = "batch")]
    pub all: bool,

    /// The rows run N reports on (its input's, those answered since, and
    /// what the ledger still owes) [default: the last run]
    #[arg(long = "run", value_name = "N")]
    pub batch: Option<i64>,

    /// csv, or ndjson: one JSON object per line (a tracked document with its
    /// units; a failure with the failures.csv columns), for a downstream
    /// system.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv, value_name = "FORMAT")]
    pub format: ExportFormat,
}

/// How `export` writes the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

impl ExportFormat {
    /// The file name's extension: a file is what its name says.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

impl ExportArgs {
    /// `--out`, or `results.` and the format's extension.
    pub fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("results.{}", self.format.extension())))
    }

    /// `--failures`, or `failures.` and the format's extension.
    pub fn failures(&self) -> PathBuf {
        self.failures
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("failures.{}", self.format.extension())))
    }
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Seed of the deterministic catalogue and of the fault draws (same
    /// seed, same answers).
    #[arg(long, default_value = "0", value_name = "N")]
    pub seed: u64,

    /// Lifetime of the access tokens it issues.
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub token_ttl: Duration,

    /// Make tokens stop working this long after issue, earlier than their
    /// expires_in says (as when a session is revoked): clients meet 401s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub token_revoked_after: Option<Duration>,

    /// How long the token endpoint takes to answer each request.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub token_latency: Duration,

    /// Make the token endpoint's gateway append grant_type itself, as
    /// SOGET's documented call (without grant_type) suggests it may.
    #[arg(long)]
    pub gateway_adds_grant_type: bool,

    /// Share of document references the service does not know (answered
    /// 400 DOCUMENT_NOT_FOUND), as 0.02 or 2%.
    #[arg(long, default_value = "2%", value_parser = parse_fraction, value_name = "FRACTION")]
    pub unknown_rate: f64,

    #[command(flatten)]
    pub gateway: SandboxGatewayArgs,

    #[command(flatten)]
    pub faults: SandboxFaultArgs,

    #[command(flatten)]
    pub webhooks: SandboxWebhookArgs,
}

/// The sandbox's API Management gateway: rate limit and quota.
#[derive(Debug, Args)]
#[command(next_help_heading = "Gateway")]
pub struct SandboxGatewayArgs {
    /// The gateway's rate limit per subscription key, N/s or N/min: calls
    /// beyond it get 429 with Retry-After.
    #[arg(long, value_parser = parse_whole_rate, value_name = "RATE")]
    pub rate_limit: Option<Rate>,

    /// How --rate-limit counts calls: a sliding window over its period
    /// (APIM's rate-limit-by-key), or a token bucket holding one period's
    /// calls (a burst after an idle spell, then the rate).
    #[arg(long, value_enum, default_value_t = crate::sandbox::LimitKind::Window, value_name = "KIND")]
    pub rate_limit_kind: crate::sandbox::LimitKind,

    /// Answers carry the IETF rate-limit fields: `RateLimit-Policy`
    /// ("sandbox";q=CALLS;w=SECONDS) and `RateLimit` ("sandbox";r=LEFT;
    /// t=SECONDS until calls free). trackmass slows down before a 429 when
    /// it reads them.
    #[arg(long, requires = "rate_limit")]
    pub rate_limit_headers: bool,

    /// The gateway's call quota: once N calls are spent, 403 "Out of call
    /// volume quota" with Retry-After until the period ends.
    #[arg(long, value_name = "N")]
    pub quota: Option<u64>,

    /// Period of --quota, from the first call.
    #[arg(long, default_value = "1day", value_parser = parse_duration, value_name = "DURATION")]
    pub quota_period: Duration,
}

/// Faults the sandbox injects between its gateway and its service.
#[derive(Debug, Args)]
#[command(next_help_heading = "Faults (rates as 0.01 or 1%)")]
pub struct SandboxFaultArgs {
    /// A realistic mix of faults: 20 ms + up to 80 ms latency, 1% 500, 1%
    /// 502, 2% 503, 1% 504, 1% dropped connections, 0.5% answers that never
    /// come, 0.5% malformed and 0.5% truncated 201 bodies. The flags below
    /// override single values.
    #[arg(long)]
    pub chaos: bool,

    /// Fixed delay added to every answer.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub latency: Option<Duration>,

    /// Random extra delay, uniform between zero and this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub latency_spread: Option<Duration>,

    /// Share of 429 answers (Retry-After: 1) whatever the pace, as from a
    /// gateway that throttles for reasons of its own.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_429: Option<f64>,

    /// Share of 500 answers (half of them after the tracking was created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_500: Option<f64>,

    /// Share of 502 answers with a proxy's HTML page (nothing created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_502: Option<f64>,

    /// Share of 503 answers with Retry-After (nothing created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_503: Option<f64>,

    /// Share of 504 answers (half of them after the tracking was created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_504: Option<f64>,

    /// Share of connections closed without an answer (half of them after
    /// the tracking was created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_drop: Option<f64>,

    /// Share of answers that never come (for --hang-for, then a 500), to
    /// exercise client timeouts.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_hang: Option<f64>,

    /// How long a hanging answer holds.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub hang_for: Option<Duration>,

    /// Share of 201 answers whose body is not valid JSON.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_malformed: Option<f64>,

    /// Share of 201 answers cut short by a closed connection.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_truncate: Option<f64>,
}

/// The webhook calls the sandbox makes for its trackings.
#[derive(Debug, Args)]
#[command(next_help_heading = "Webhooks (beyond the spec)")]
pub struct SandboxWebhookArgs {
    /// POST the spec's webhook payload (one per handling unit and event) to
    /// this URL plus the path of the url a tracking registered, a little
    /// after its first creation. The spec's url pattern refuses local
    /// addresses; this redirects them, e.g. http://127.0.0.1:8787.
    #[arg(long, value_name = "URL")]
    pub deliver_webhooks_to: Option<String>,

    /// Delay between a creation and its first webhook call.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_delay: Duration,

    /// Retries of a webhook call not answered 2xx in time (then given up).
    #[arg(long, default_value = "5", value_name = "N")]
    pub webhook_retries: u32,

    /// Wait before the first retry of a webhook call, doubling after.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_backoff: Duration,

    /// How long a webhook call waits for its answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_timeout: Duration,

    /// Share of delivered events sent a second time (at-least-once).
    #[arg(long, default_value = "0", value_parser = parse_fraction, value_name = "RATE")]
    pub webhook_duplicates: f64,

    /// Events per unit, 1 to 6: Creation, then Loading, Departure, Arrival,
    /// Discharge, GateOut (the sandbox's invention: only Creation is
    /// documented).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=6), value_name = "N")]
    pub webhook_events: u32,

    /// Between two events of one unit.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_spacing: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the timeout must be above zero".into());
    }
    if d >= Duration::from_secs(240) {
        return Err(format!(
            "{s}: the gateway gives up on a request after 240 s, so the timeout must be shorter"
        ));
    }
    Ok(d)
}

/// A rate with a whole number of calls, as gateways count them.
fn parse_whole_rate(s: &str) -> Result<Rate, String> {
    let rate: Rate = s
        .parse()
        .map_err(|e: crate::units::BadValue| e.to_string())?;
    if rate.count.fract() != 0.0 {
        return Err(format!("{s:?}: the gateway counts whole calls per period"));
    }
    Ok(rate)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s}: at least 100ms"));
    }
    Ok(d)
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err(format!(
            "{s:?} is not a delimiter; use ',', ';', 'tab' or another single character"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_request_field_has_the_run_flag_its_table_names() {
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("run");
        for field in crate::spec::RequestField::ALL {
            assert!(
                run.get_arguments()
                    .any(|a| a.get_long() == Some(field.flag())),
                "run has no --{}",
                field.flag()
            );
        }
    }

    #[test]
    fn durations_and_timeouts() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .to_string()
                .contains("30s")
        );
        assert!(parse_timeout("240s").unwrap_err().contains("240"));
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_timeout("239s").unwrap(), Duration::from_secs(239));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.02").unwrap(), 0.02);
        assert_eq!(parse_fraction("2%").unwrap(), 0.02);
        assert_eq!(parse_fraction("100%").unwrap(), 1.0);
        assert!(parse_fraction("101%").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("often").is_err());
        assert!(parse_whole_rate("2.5/s").is_err());
        assert!(parse_whole_rate("100/min").is_ok());
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("\"").is_err());
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["trackmass", "run", "in.csv"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.dispatch.concurrency, 8);
        assert_eq!(run.dispatch.rate, "10/s".parse().unwrap());
        assert_eq!(run.dispatch.burst, 1);
        assert_eq!(run.dispatch.timeout, Duration::from_secs(30));
        assert_eq!(run.files.state, PathBuf::from("trackmass.db"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["trackmass", "run", "x.csv", "--rate", "fast"][..],
            &["trackmass", "run", "x.csv", "--concurrency", "0"],
            &["trackmass", "run", "x.csv", "--timeout", "5m"],
            &["trackmass", "run"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
