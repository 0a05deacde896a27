//! trackmass: track the handling units of many documents at once with
//! SOGET's "API Tracking Code In Mass".
//!
//! `csv input → validate (rayon) → state (SQLite queue + ledger) →
//! dispatcher (tokio, governor, semaphore, retry, auth) → state → result
//! files`, with [`sandbox`] an emulator of the API that the job only starts
//! for `--sandbox`.

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod input;
pub mod lock;
pub mod logging;
pub mod pace;
pub mod progress;
pub mod report;
pub mod retry;
pub mod sandbox;
pub mod secret;
pub mod spec;
pub mod store;

use anyhow::Result;

use cli::{Cli, Command};
use config::RunConfig;
use error::Exit;
use progress::BarSlot;

/// Runs the parsed command line.
pub async fn run(cli: Cli, slot: BarSlot) -> Result<Exit> {
    match cli.command {
        Command::Run(args) => {
            let config = RunConfig::from_args(&args)?;
            let ui = commands::run::Ui {
                quiet: cli.quiet,
                slot,
            };
            commands::run::execute(config, ui).await
        }
        Command::Sandbox(args) => commands::sandbox::execute(&args).await,
    }
}
