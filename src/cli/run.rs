//! `trackmass run`'s flags, in the groups its `--help` shows (files,
//! input, request defaults, sending, API), and the parsers of the values
//! only they take.

use super::*;

pub(super) const RUN_EXAMPLES: &str = "\
Examples:
  Try it without an account, against the built-in sandbox:
    trackmass run samples/documents.csv --sandbox

  A real run (credentials from the environment):
    export TRACKMASS_API_KEY=... TRACKMASS_CLIENT_ID=... TRACKMASS_CLIENT_SECRET=...
    trackmass run documents.csv --way Import --agent-code CCGM --rate 600/min

  After an interruption, the same command continues:
    trackmass run documents.csv --way Import --agent-code CCGM --rate 600/min";

/// `--rate` when not given: the run's pace, and `validate`'s estimate.
pub(super) const DEFAULT_RATE: &str = "10/s";

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
pub(super) fn parse_encoding(s: &str) -> Result<&'static encoding_rs::Encoding, String> {
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
    #[arg(long, default_value = DEFAULT_RATE, value_name = "RATE")]
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

pub(super) fn parse_timeout(s: &str) -> Result<Duration, String> {
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

pub(super) fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s}: at least 100ms"));
    }
    Ok(d)
}

pub(super) fn parse_delimiter(s: &str) -> Result<u8, String> {
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
