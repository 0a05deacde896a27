//! `trackmass sandbox`: serve the emulator until interrupted.

use anyhow::{Context, Result};

use crate::cli::SandboxArgs;
use crate::error::Exit;
use crate::sandbox;

pub async fn execute(args: &SandboxArgs) -> Result<Exit> {
    let config = sandbox::Config {
        seed: args.seed,
        token_ttl: args.token_ttl,
        ..sandbox::Config::default()
    };
    let sb = sandbox::start(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    super::print_stdout(&format!(
        "trackmass sandbox listening on http://{addr}\n  \
         base URL   {}\n  \
         token URL  {}\n  \
         credentials: TRACKMASS_API_KEY={} TRACKMASS_CLIENT_ID={} TRACKMASS_CLIENT_SECRET={}\n  \
         ledger     http://{addr}/_sandbox/stats\n",
        sb.base_url(),
        sb.token_url(),
        sandbox::API_KEY,
        sandbox::CLIENT_ID,
        sandbox::CLIENT_SECRET,
        addr = sb.addr(),
    ));
    tokio::select! {
        served = sb.serve_forever() => served.context("the sandbox stopped")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(Exit::Success)
}
