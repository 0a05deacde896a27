//! An emulator of SOGET's API behind its Azure API Management gateway.
//!
//! Narrow interface: [`start`] binds an address with a [`Config`] and returns
//! a [`Sandbox`] that knows its bound address and stops on
//! [`Sandbox::shutdown`] (or when dropped). `trackmass sandbox`, `trackmass
//! run --sandbox` and the tests all go through it. The job itself never
//! calls into this module except to start it.

pub mod catalogue;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;

pub use server::validate_body;

/// The sandbox's credentials (not secrets: they only open the sandbox).
pub const CLIENT_ID: &str = "sandbox-client";
pub const CLIENT_SECRET: &str = "sandbox-secret";
pub const API_KEY: &str = "sandbox-key";

/// How the sandbox behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the deterministic catalogue.
    pub seed: u64,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    pub client_id: String,
    pub client_secret: String,
    pub api_key: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 0,
            token_ttl: Duration::from_secs(300),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            api_key: API_KEY.into(),
        }
    }
}

/// A running sandbox.
pub struct Sandbox {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Sandbox {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/api-tracking-code-in-mass/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, crate::spec::API_BASE_PATH)
    }

    /// `http://ADDR/soget-connect/v1/openid-connect/token`
    pub fn token_url(&self) -> String {
        format!("http://{}{}", self.addr, crate::spec::TOKEN_PATH)
    }

    /// Stops accepting, lets requests under way finish, and returns.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Serves until the process ends (for `trackmass sandbox`).
    pub async fn serve_forever(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (port 0 picks a free port) and serves in the background on
/// the current tokio runtime.
pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Sandbox> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = server::router(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Sandbox {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}
