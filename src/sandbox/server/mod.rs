//! The sandbox's HTTP routes: token endpoint, gateway checks, the tracking
//! service, and the ledger that tests read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::catalogue;
use super::deliver::{Deliverer, Tracking};
use super::faults::{self, Fault, Phase};
use super::limits::{self, Limiter, QuotaCounter};
use super::{CloseConnection, Config};
use crate::spec;

mod gateway;
mod inject;
mod ledger;
mod schema;
mod service;
mod token;

use gateway::{Gate, add_limit_headers, gateway, gateway_error};
use inject::{hash_bytes, inject};
use ledger::{Ledger, Outcome, reset, stats};
use schema::sub_error;
pub use schema::validate_body;
use service::{Answer, Created, activity_id, created_body, created_response, service};
use token::token;

struct Shared {
    config: Config,
    tokens: Mutex<HashMap<String, Instant>>,
    token_counter: AtomicU64,
    ledger: Mutex<Ledger>,
    window: Option<Mutex<Limiter>>,
    quota: Option<Mutex<QuotaCounter>>,
    /// Webhook deliveries, when told where to make them.
    deliverer: Option<Arc<Deliverer>>,
}

type Ctx = State<Arc<Shared>>;

pub fn router(config: Config) -> Router {
    let shared = Arc::new(Shared {
        window: config
            .rate_limit
            .map(|r| Mutex::new(Limiter::new(r, config.rate_limit_kind))),
        quota: config.quota.map(|q| Mutex::new(QuotaCounter::new(q))),
        tokens: Mutex::new(HashMap::new()),
        token_counter: AtomicU64::new(0),
        ledger: Mutex::new(Ledger::default()),
        deliverer: config
            .webhooks
            .clone()
            .map(|w| Arc::new(Deliverer::new(w, config.seed))),
        config,
    });
    Router::new()
        .route(spec::TOKEN_PATH, post(token))
        .route(
            &format!("{}{}", spec::API_BASE_PATH, spec::TRACK_PATH),
            post(track),
        )
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/reset", post(reset))
        .fallback(not_found)
        .with_state(shared)
}

fn record(shared: &Shared, outcome: Outcome) {
    if let Ok(mut l) = shared.ledger.lock() {
        l.count(outcome);
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

async fn not_found(State(shared): Ctx) -> Response {
    record(&shared, Outcome::NotFound);
    gateway_error(StatusCode::NOT_FOUND, "Resource not found")
}

/// The order of a real call: the gateway (key, rate limit, quota), the
/// network between gateway and service (latency, proxy faults), the service
/// (token, body, catalogue), and faults on the way back.
async fn track(
    State(shared): Ctx,
    Query(query): Query<HashMap<String, String>>,
    close: Option<axum::Extension<CloseConnection>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let left = match gateway(&shared, &query, &headers) {
        Gate::Admitted(left) => left,
        Gate::Refused(refused) => return refused,
    };
    let mut response = serve(&shared, close, &headers, &body).await;
    if let Some(left) = left {
        add_limit_headers(&shared.config, &mut response, left);
    }
    response
}

/// A call the gateway let through: the service, with the faults drawn.
async fn serve(
    shared: &Arc<Shared>,
    close: Option<axum::Extension<CloseConnection>>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let shared = shared.clone();
    // The fault draw is keyed by the document (or the raw body).
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let key = value
        .as_ref()
        .and_then(|v| v.get("documentReference"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("body:{:016x}", hash_bytes(body)), str::to_owned);
    let nth = match shared.ledger.lock() {
        Ok(mut l) => {
            let n = l.seen.entry(key.clone()).or_default();
            *n += 1;
            *n
        }
        Err(_) => 1,
    };
    let draw = faults::draw(&shared.config.faults, shared.config.seed, &key, nth);
    if !draw.delay.is_zero() {
        tokio::time::sleep(draw.delay).await;
    }
    let fault = draw.fault;
    if let Some((f, Phase::BeforeService)) = fault {
        return inject(&shared, f, close.as_ref().map(|c| &c.0), None).await;
    }

    let (response, created) = match service(&shared, headers, value, body) {
        Answer::Created(created) => (created_response(&created), Some(created)),
        Answer::Refused(refusal) => (refusal, None),
    };
    match (fault, created) {
        (Some((f, Phase::AfterService)), Some(created)) => {
            inject(&shared, f, close.as_ref().map(|c| &c.0), Some(&created)).await
        }
        (_, Some(created)) => {
            record(
                &shared,
                if created.first {
                    Outcome::Created
                } else {
                    Outcome::Duplicate
                },
            );
            response
        }
        (_, None) => response,
    }
}
