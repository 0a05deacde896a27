//! One module per subcommand; each exposes an `execute` that returns how
//! the command ended.

pub mod export;
pub mod report;
pub mod resume;
pub mod run;
pub mod sandbox;
pub mod show;
pub mod status;
pub mod validate;
pub mod webhooks;

/// A command that reads a state file refuses a path that names none
/// (exit 2), rather than creating one or saying less.
pub fn require_state(state: &std::path::Path) -> anyhow::Result<()> {
    if state.exists() {
        return Ok(());
    }
    Err(crate::error::UsageError(format!(
        "{}: no such state file (pass --state PATH)",
        state.display()
    ))
    .into())
}

/// Prints to stdout without panicking when nobody reads it any more
/// (`trackmass ... | head`, a closed pipe in a scheduler): output is a
/// courtesy, the state file and result files are what count.
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Same as [`print_stdout`], for stderr.
pub fn print_stderr(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// SIGTERM (systemd's stop, `kill`, a container's end) or Ctrl-C: what
/// ends a server command (`sandbox`, `webhooks serve`) cleanly, exit 0.
/// The handlers are installed when this is called, not when the future is
/// first awaited: call it before saying where the server listens, so a
/// signal sent as soon as that is read cannot kill the process instead.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, interrupt) {
                (Some(mut term), Some(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                (None, Some(mut interrupt)) => {
                    interrupt.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
