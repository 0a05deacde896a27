//! The `trackmass` binary: parse, set up logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

use trackmass::cli::Cli;
use trackmass::commands::print_stderr;
use trackmass::progress::BarSlot;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        -1
    } else {
        cli.verbose.min(2) as i8
    };
    let slot = BarSlot::default();
    trackmass::logging::init(cli.log_format, verbosity, slot.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_stderr(&format!(
                "trackmass: error: cannot start the async runtime: {e}\n"
            ));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(trackmass::run(cli, slot)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            print_stderr(&format!("trackmass: error: {e:#}\n"));
            ExitCode::from(trackmass::error::exit_code(&e))
        }
    }
}
