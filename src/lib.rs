//! trackmass: track the handling units of many documents at once with
//! SOGET's "API Tracking Code In Mass".
//!
//! `csv input → validate (rayon) → ledger of documents (SQLite, [`store`];
//! its vocabulary in `ledger`) → [`engine`] (request tasks, the per-row
//! `attempt` policy, one lock (`engine::control`) owning the `pace` and the breaker,
//! tokens) → ledger → result files`, with [`sandbox`] an emulator of the
//! API that the job only starts for `--sandbox`. The [`commands`] are thin:
//! they decide what the ledger owes and return the exit status, which only
//! `main` turns into the process's end.

pub mod api;
pub(crate) mod attempt;
pub mod cli;
pub mod commands;
pub(crate) mod config;
pub mod config_file;
pub mod engine;

pub mod error;
pub(crate) mod input;
pub(crate) mod ledger;
pub(crate) mod lock;
pub mod logging;
pub mod os;
pub(crate) mod output;
pub(crate) mod pace;
pub mod page;
pub(crate) mod paths;
pub mod progress;
pub(crate) mod ratelimit;
pub(crate) mod report;
pub(crate) mod retry;
pub mod sandbox;
pub(crate) mod secret;
pub(crate) mod sheet;
pub mod spec;
pub(crate) mod store;
pub(crate) mod summary;
#[doc(hidden)]
pub mod testing;
pub(crate) mod timeline;
pub(crate) mod units;
pub(crate) mod webhooks;
pub(crate) mod words;

use anyhow::Result;

use cli::{Cli, Command};
use config::RunConfig;
use error::Exit;
use progress::BarSlot;

/// Runs the parsed command line. `secrets` looks credentials up (the
/// environment, then the configuration file).
pub async fn run(
    cli: Cli,
    slot: BarSlot,
    secrets: engine::SecretLookup,
    exit_now: fn(Exit) -> !,
) -> Result<Exit> {
    let ui = engine::Ui {
        quiet: cli.quiet,
        slot,
        secrets,
        exit_now,
    };
    match cli.command {
        Command::Run(args) => {
            let config = RunConfig::from_args(&args)?;
            commands::run::execute(config, ui).await
        }
        Command::Resume(args) => {
            commands::resume::execute(ledger::Command::Resume, &args, &[], None, ui).await
        }
        Command::Retry(args) => {
            commands::resume::execute(
                ledger::Command::Retry,
                &args.run,
                &args.status,
                args.batch,
                ui,
            )
            .await
        }
        Command::Validate(args) => {
            tokio::task::block_in_place(|| commands::validate::execute(&args))
        }
        Command::Status(args) => commands::status::execute(&args),
        Command::Show(args) => commands::show::execute(&args),
        Command::Report(args) => tokio::task::block_in_place(|| commands::report::execute(&args)),
        Command::Export(args) => tokio::task::block_in_place(|| commands::export::execute(&args)),
        Command::Webhooks(command) => commands::webhooks::execute(command).await,
        Command::Sandbox(args) => commands::sandbox::execute(&args).await,
        Command::Man { command } => {
            let top = <Cli as clap::CommandFactory>::command();
            let page = match &command {
                None => top,
                Some(name) => {
                    let Some(sub) = top.find_subcommand(name).cloned() else {
                        return Err(error::UsageError(format!(
                            "{name}: not a trackmass command (run, validate, status, show, ...)"
                        ))
                        .into());
                    };
                    // Named as the top page refers to it: trackmass-run(1).
                    let full = format!("trackmass-{}", sub.get_name());
                    let bin = format!("trackmass {}", sub.get_name());
                    sub.display_name(full).bin_name(bin).version(cli::VERSION)
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page).render(&mut out)?;
            commands::print_stdout(&String::from_utf8_lossy(&out));
            Ok(Exit::Success)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "trackmass",
                &mut out,
            );
            commands::print_stdout(&String::from_utf8_lossy(&out));
            Ok(Exit::Success)
        }
    }
}
