//! The `trackmass` binary: parse (with the configuration file), set up
//! logging, run, map to an exit code.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};

use trackmass::api::Found;
use trackmass::cli::Cli;
use trackmass::commands::print_stderr;
use trackmass::config_file::ConfigFile;
use trackmass::engine::SecretLookup;
use trackmass::progress::BarSlot;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (cli, secrets) = match parse(&argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            print_stderr(&format!("trackmass: error: {e:#}\n"));
            return ExitCode::from(trackmass::error::exit_code(&e));
        }
    };
    let verbosity = if cli.quiet {
        -1
    } else {
        cli.verbose.min(2) as i8
    };
    // Before any socket is opened: up to what the system allows.
    trackmass::os::raise_open_files_limit();
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
    let json = cli.log_format == trackmass::cli::LogFormat::Json;
    match runtime.block_on(trackmass::run(cli, slot, secrets, exit_now)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            let code = trackmass::error::exit_code(&e);
            if json {
                // One JSON object like every other line of the log.
                tracing::error!(exit_code = code, "{e:#}");
            } else {
                print_stderr(&format!("trackmass: error: {e:#}\n"));
            }
            ExitCode::from(code)
        }
    }
}

/// Ends the process at once (a second Ctrl-C): the state file is
/// consistent at every moment, each commit being atomic.
fn exit_now(exit: trackmass::error::Exit) -> ! {
    std::process::exit(i32::from(exit.code()))
}

/// Parses the command line; with `--config` (or `TRACKMASS_CONFIG`), parses
/// it again with the file's settings placed before the user's flags.
/// Help, version and clap's own errors exit here, as clap does.
fn parse(argv: &[OsString]) -> anyhow::Result<(Cli, SecretLookup)> {
    let command = Cli::command();
    let matches = command.clone().get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let env_lookup = |name: &str| {
        let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
        Some(Found {
            value,
            name: name.to_string(),
        })
    };
    let Some(path) = cli.config.clone() else {
        return Ok((cli, Arc::new(env_lookup)));
    };
    let file = ConfigFile::load(&path).map_err(trackmass::error::UsageCause)?;
    let merged = file
        .merge_args(&command, argv, |var| std::env::var_os(var).is_some())
        .map_err(trackmass::error::UsageCause)?;
    let cli = match command.try_get_matches_from(&merged) {
        Ok(m) => Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit()),
        Err(e) => {
            // The command line alone parsed: the file's settings are at fault.
            let rendered = e.render().to_string();
            let message = rendered.trim().trim_start_matches("error: ");
            return Err(
                trackmass::error::UsageError(format!("{}: {message}", path.display())).into(),
            );
        }
    };
    let secrets: SecretLookup =
        Arc::new(move |name: &str| env_lookup(name).or_else(|| file.secret(name)));
    Ok((cli, secrets))
}
