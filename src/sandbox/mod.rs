//! An emulator of SOGET's API behind its Azure API Management gateway.
//!
//! Narrow interface: [`start`] binds an address with a [`Config`] and returns
//! a [`Sandbox`] that knows its bound address and stops on
//! [`Sandbox::shutdown`] (or when dropped). `trackmass sandbox`, `trackmass
//! run --sandbox` and the tests all go through it. The job itself never
//! calls into this module except to start it.

pub mod catalogue;
pub mod deliver;
pub mod faults;
pub mod limits;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

pub use faults::Faults;
pub use limits::{LimitKind, Quota, RateLimit};
pub use server::validate_body;

/// The sandbox's credentials (not secrets: they only open the sandbox).
pub const CLIENT_ID: &str = "sandbox-client";
pub const CLIENT_SECRET: &str = "sandbox-secret";
pub const API_KEY: &str = "sandbox-key";

/// Share of unknown references by default.
pub const DEFAULT_UNKNOWN_RATE: f64 = 0.02;

/// How the sandbox behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the deterministic catalogue.
    pub seed: u64,
    /// Lifetime of issued access tokens, as `expires_in` announces it.
    pub token_ttl: Duration,
    /// When set, tokens stop working this long after issue, whatever
    /// `expires_in` said (a key rotated or a session revoked early).
    pub token_revoked_after: Option<Duration>,
    /// How long the token endpoint takes to answer (a busy Keycloak).
    pub token_latency: Duration,
    pub client_id: String,
    pub client_secret: String,
    pub api_key: String,
    /// The token endpoint's gateway appends `grant_type=client_credentials`
    /// to every request (a client sending it too gets 400 "duplicated
    /// parameter").
    pub gateway_adds_grant_type: bool,
    /// Share of references the service does not know (400).
    pub unknown_rate: f64,
    /// The gateway's per-key rate limit (429 beyond it).
    pub rate_limit: Option<RateLimit>,
    /// How it counts calls against it.
    pub rate_limit_kind: LimitKind,
    /// Answers under the rate limit carry `RateLimit-Policy` and
    /// `RateLimit` (the IETF fields): calls left and when more free.
    pub rate_limit_headers: bool,
    /// The gateway's call quota (403 once spent).
    pub quota: Option<Quota>,
    pub faults: Faults,
    /// Where to deliver webhook calls, instead of each request's `url`.
    pub webhooks: Option<Webhooks>,
}

/// Webhook delivery (beyond the spec, for trying the lifecycle locally).
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Events go here plus the path of the `url` the request registered.
    pub target: String,
    /// Delay between the creation of a tracking and its first event.
    pub delay: Duration,
    /// Retries of a delivery not answered 2xx in time...
    pub retries: u32,
    /// ...the first after this, then doubling.
    pub backoff: Duration,
    /// How long a delivery waits for its answer.
    pub timeout: Duration,
    /// Share of delivered events sent a second time.
    pub duplicates: f64,
    /// Events per unit: `Creation`, then the rest of [`deliver::SEQUENCE`].
    pub events: u32,
    /// Between two events of a unit.
    pub spacing: Duration,
}

impl Webhooks {
    /// Deliveries to `target`: `Creation` only, no duplicate, 5 retries.
    pub fn to(target: impl Into<String>) -> Webhooks {
        Webhooks {
            target: target.into(),
            delay: Duration::from_secs(2),
            retries: 5,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            duplicates: 0.0,
            events: 1,
            spacing: Duration::from_secs(1),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 0,
            token_ttl: Duration::from_secs(300),
            token_revoked_after: None,
            token_latency: Duration::ZERO,
            gateway_adds_grant_type: false,
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            api_key: API_KEY.into(),
            unknown_rate: DEFAULT_UNKNOWN_RATE,
            rate_limit: None,
            rate_limit_kind: LimitKind::Window,
            rate_limit_headers: false,
            quota: None,
            faults: Faults::default(),
            webhooks: None,
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
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = server::router(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(accept_loop(listener, app, stopped));
    Ok(Sandbox {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Asks the connection serving a request to close without answering.
#[derive(Clone)]
pub(crate) struct CloseConnection(Arc<Notify>);

impl CloseConnection {
    pub(crate) fn close(&self) {
        self.0.notify_one();
    }
}

/// Serves connections itself (rather than `axum::serve`) so that a handler
/// can close its connection without an answer, as a broken proxy does.
/// Stopping drops every connection at once.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    mut stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, go on.
                        tracing::warn!("sandbox: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                connections.spawn(serve_connection(stream, app.clone()));
            }
        }
    }
    connections.abort_all();
    Ok(())
}

async fn serve_connection(stream: tokio::net::TcpStream, app: axum::Router) {
    use tower::ServiceExt;
    let close = CloseConnection(Arc::new(Notify::new()));
    let closer = close.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(closer.clone());
            app.clone().oneshot(request)
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        // Dropping the connection closes the socket, answer or not.
        _ = close.0.notified() => {}
    }
}
