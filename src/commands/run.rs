//! `trackmass run INPUT`: load the input into the ledger, then the
//! [engine](crate::engine) sends what the ledger owes and reports.

use anyhow::{Context, Result};

use crate::config::RunConfig;
use crate::engine::{self, Start, Started, Ui, load::load_input};
use crate::error::Exit;
use crate::input::InputReader;
use crate::ledger::Command;
use crate::store::Store;

/// `trackmass run`: checks, takes the state, loads the input and sends.
pub async fn execute(config: RunConfig, ui: Ui) -> Result<Exit> {
    let started = Started::now();
    let result = async {
        // Credentials first: fail before doing any work.
        let credentials = engine::credentials(&config, &ui)?;
        engine::check_paths(&config)?;
        // The header is checked before the state file is touched.
        let reader = InputReader::open(&config.input, &config.read_options())?;
        // One process per state file; held until this function returns.
        let _lock = crate::lock::acquire(&config.state, Command::Run)?;
        let mut store = Store::open(&config.state)?;
        let config_json =
            serde_json::to_string(&config).context("cannot serialize the configuration")?;
        let token = crate::webhooks::token::load(&config.state)?;
        let config_json = crate::webhooks::token::mask(&config_json, token.as_ref()).into_owned();
        // Reading and validating a big file takes seconds: let the runtime
        // move its other tasks (signals) to another thread.
        let (run, load) =
            tokio::task::block_in_place(|| load_input(&config, &mut store, reader, &config_json))?;
        let pending_earlier = store.pending_outside(run)?;
        let start = Start::Load {
            load,
            pending_earlier,
        };
        engine::session(&config, &ui, store, run, start, credentials, &started).await
    }
    .await;
    engine::finish_with_error(result, Command::Run, &config, &started)
}
