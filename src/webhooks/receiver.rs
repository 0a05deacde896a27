//! The receiver: an HTTP server that takes SOGET's webhook POSTs at the
//! secret path and answers 2xx only once what it took is on disk.
//!
//! - `POST` to a path whose last segment is the token (a reverse proxy may
//!   keep or strip the registered URL's prefix): the body (at most
//!   [`MAX_BODY`]) is read into events and handed to the writer thread;
//!   the answer waits for their commit. 200 when stored (new or again),
//!   202 when the body is not the spec's payload (kept as unreadable:
//!   sending it again would not make it readable), 413 over the bound,
//!   503 when the store cannot write (the sender retries later).
//! - Another method on that path: 405. `GET /healthz`: 200 (for the proxy).
//!   Any other path: 404, nothing stored, and the path is never logged (a
//!   near miss could hold most of the token).
//! - The writer commits whatever deliveries are waiting in one transaction
//!   (one fsync for all), so concurrent deliveries share a commit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::payload;
use super::store::{Delivery, EventStore, Stored};
use super::token::Token;

/// The largest body taken (a delivery is one unit's events: a few hundred
/// bytes).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest a body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most deliveries in one commit.
const MAX_GROUP: usize = 1024;

/// What the receiver did, for its log line when it stops (and the tests).
#[derive(Debug, Default)]
pub struct Counters {
    pub events_new: AtomicU64,
    pub events_again: AtomicU64,
    pub unreadable: AtomicU64,
    pub not_found: AtomicU64,
    pub too_large: AtomicU64,
    pub refused_method: AtomicU64,
    pub store_failed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "{} events stored, {} delivered again (stored once), {} unreadable bodies kept; \
             refused: {} wrong path, {} too large, {} wrong method; {} failed to store (503)",
            Self::get(&self.events_new),
            Self::get(&self.events_again),
            Self::get(&self.unreadable),
            Self::get(&self.not_found),
            Self::get(&self.too_large),
            Self::get(&self.refused_method),
            Self::get(&self.store_failed),
        )
    }
}

struct Job {
    delivery: Delivery,
    done: oneshot::Sender<Result<Stored, NotStored>>,
}

/// A delivery the events store could not commit (the receiver answers
/// 503, so the sender tries again).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotStored {
    #[error("the events writer has stopped")]
    WriterStopped,
    #[error("{0}")]
    Store(String),
}

/// The thread that owns the events store and commits deliveries in groups.
pub struct Writer {
    tx: std::sync::mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(mut store: EventStore) -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                while jobs.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let (deliveries, waiting): (Vec<_>, Vec<_>) =
                    jobs.into_iter().map(|j| (j.delivery, j.done)).unzip();
                match store.store(&deliveries, &crate::store::now_rfc3339()) {
                    Ok(stored) => {
                        for (done, s) in waiting.into_iter().zip(stored) {
                            let _ = done.send(Ok(s));
                        }
                    }
                    Err(e) => {
                        let error = NotStored::Store(format!("{e:#}"));
                        for done in waiting {
                            let _ = done.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Writer { tx, thread }
    }

    /// Stores one delivery; resolves once it is committed.
    pub async fn store(&self, delivery: Delivery) -> Result<Stored, NotStored> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { delivery, done })
            .map_err(|_| NotStored::WriterStopped)?;
        wait.await.unwrap_or(Err(NotStored::WriterStopped))
    }

    /// Waits for the last commits.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

struct App {
    token: Token,
    writer: Writer,
    counters: Arc<Counters>,
}

/// Serves until `shutdown` resolves, then lets the requests in progress
/// finish and the writer commit them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Token,
    store: EventStore,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(App {
        token,
        writer: Writer::start(store),
        counters,
    });
    let router = axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app.clone());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    // Every handler is done: the router's clone of the app is gone.
    if let Ok(app) = Arc::try_unwrap(app) {
        app.writer.finish();
    }
    served
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/healthz" {
        return match *req.method() {
            Method::GET | Method::HEAD => plain(StatusCode::OK, "ok\n"),
            _ => plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
        };
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if !app.token.matches(last.as_bytes()) {
        Counters::add(&app.counters.not_found, 1);
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        Counters::add(&app.counters.refused_method, 1);
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, &())).await {
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "the body took too long\n"),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Counters::add(&app.counters.too_large, 1);
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB\n");
        }
        Ok(Err(_)) => return plain(StatusCode::BAD_REQUEST, "the body could not be read\n"),
        Ok(Ok(body)) => body,
    };
    let delivery = match payload::events(&body) {
        Ok(events) => Delivery::Events(events),
        Err(unreadable) => Delivery::Unreadable {
            body: body.to_vec(),
            reason: unreadable.to_string(),
        },
    };
    match app.writer.store(delivery).await {
        Ok(stored) => {
            Counters::add(&app.counters.events_new, stored.new);
            Counters::add(&app.counters.events_again, stored.again);
            Counters::add(&app.counters.unreadable, stored.unreadable);
            if stored.unreadable > 0 {
                tracing::warn!(
                    "a webhook body that is not the spec's payload was kept as unreadable \
                     (in the events store's table `unreadable`)"
                );
                plain(StatusCode::ACCEPTED, "kept as unreadable\n")
            } else {
                plain(StatusCode::OK, "stored\n")
            }
        }
        Err(e) => {
            Counters::add(&app.counters.store_failed, 1);
            tracing::error!("cannot store a webhook delivery (answered 503): {e}");
            let mut response = Response::new(Body::from("cannot store now, retry later\n"));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}
