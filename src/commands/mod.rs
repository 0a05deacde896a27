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
