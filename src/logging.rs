//! Log output on stderr (tracing), kept clear of the progress bar.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;
use crate::progress::BarSlot;

/// Environment variable that overrides the log filter (tracing syntax).
pub const ENV_LOG: &str = "TRACKMASS_LOG";

/// Writes to stderr with the progress bar lifted out of the way.
#[derive(Clone)]
pub struct StderrAboveBar(BarSlot);

impl Write for StderrAboveBar {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.suspend(|| io::stderr().lock().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.suspend(|| io::stderr().lock().write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StderrAboveBar {
    type Writer = StderrAboveBar;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The filter for a verbosity: -1 quiet, 0 normal, 1 debug, 2+ trace.
pub fn filter_for(verbosity: i8) -> String {
    match verbosity {
        i8::MIN..=-1 => "error".into(),
        0 => "warn,trackmass=info".into(),
        1 => "warn,trackmass=debug".into(),
        _ => "info,trackmass=trace".into(),
    }
}

/// Installs the global subscriber. Called once, by `main`.
/// Set once by [`init`]: the log is JSON lines.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the log is JSON lines (`--log-format json`): then what is
/// printed as text elsewhere (the summary line) is logged as a JSON event
/// too.
pub fn is_json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn init(format: LogFormat, verbosity: i8, slot: BarSlot) {
    JSON.store(
        format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = std::env::var(ENV_LOG)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(filter_for(verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrAboveBar(slot))
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(console::colors_enabled_stderr())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling in-process) keeps the first subscriber.
    let _ = result;
}
