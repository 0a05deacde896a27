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
    println!("trackmass sandbox listening on http://{}", sb.addr());
    println!("  base URL   {}", sb.base_url());
    println!("  token URL  {}", sb.token_url());
    println!(
        "  credentials: TRACKMASS_API_KEY={} TRACKMASS_CLIENT_ID={} TRACKMASS_CLIENT_SECRET={}",
        sandbox::API_KEY,
        sandbox::CLIENT_ID,
        sandbox::CLIENT_SECRET
    );
    println!("  ledger     http://{}/_sandbox/stats", sb.addr());
    tokio::select! {
        served = sb.serve_forever() => served.context("the sandbox stopped")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(Exit::Success)
}
