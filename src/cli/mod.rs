//! Command-line interface: clap definitions and the value parsers behind them.
//!
//! House rules:
//! - doc comments are the help text; every subcommand's long help ends with
//!   an example;
//! - values are validated while parsing (rates, durations, delimiters), so a
//!   bad flag is a usage error (exit 2) before anything runs;
//! - no flag ever carries a secret: credentials come from the environment.

mod continuation;
mod run;
mod sandbox;
mod webhooks;
pub use continuation::ContinueArgs;
pub use run::{ApiArgs, DefaultArgs, DispatchArgs, FileArgs, ProgressMode, ReadArgs, RunArgs};
use run::{DEFAULT_RATE, RUN_EXAMPLES};
use sandbox::SANDBOX_EXAMPLES;
pub use sandbox::{SandboxArgs, SandboxFaultArgs, SandboxGatewayArgs, SandboxWebhookArgs};
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
    #[arg(long, default_value = DEFAULT_RATE, value_name = "RATE")]
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

#[cfg(test)]
mod tests {
    use super::run::{parse_delimiter, parse_timeout};
    use super::sandbox::parse_whole_rate;
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
