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

/// What the sandbox has seen, for `GET /_sandbox/stats`.
#[derive(Default)]
struct Ledger {
    /// Requests by outcome (`created`, `duplicate`, `invalid`, …).
    outcomes: BTreeMap<&'static str, u64>,
    tokens_issued: u64,
    /// Token requests received (counted on arrival, before any latency).
    token_requests: u64,
    /// Creations per document reference.
    created: HashMap<String, u64>,
    /// Requests per fault key (document reference, or body hash), so that
    /// the nth request about a document meets the same fault every time.
    seen: HashMap<String, u64>,
    /// With a rate limit: calls the gateway let through and refused (429),
    /// per second since its first call, for a timeline of the pace.
    first_call: Option<Instant>,
    timeline: BTreeMap<u64, (u64, u64)>,
}

impl Ledger {
    /// A call counted by the rate limit at `now`: let through or refused.
    fn limited(&mut self, now: Instant, refused: bool) {
        let first = *self.first_call.get_or_insert(now);
        let second = now.saturating_duration_since(first).as_secs();
        let entry = self.timeline.entry(second).or_default();
        if refused {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }

    fn count(&mut self, outcome: &'static str) {
        *self.outcomes.entry(outcome).or_default() += 1;
    }
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

fn record(shared: &Shared, outcome: &'static str) {
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

/// The gateway's own error shape (domain note §3).
fn gateway_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"statusCode": status.as_u16(), "message": message}),
    )
}

/// The service's `HttpBusinessError`.
fn business_error(
    status: StatusCode,
    code: &str,
    message: &str,
    sub_errors: Option<Vec<Value>>,
) -> Response {
    let status_text = status
        .canonical_reason()
        .unwrap_or("Error")
        .to_ascii_uppercase()
        .replace(' ', "_");
    json_response(
        status,
        json!({
            "status": status_text,
            "timestamp": timestamp(),
            "code": code,
            "message": message,
            "subErrors": sub_errors,
        }),
    )
}

async fn not_found(State(shared): Ctx) -> Response {
    record(&shared, "not_found");
    gateway_error(StatusCode::NOT_FOUND, "Resource not found")
}

/// Keycloak-like error answer of the token endpoint.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = json_response(
        status,
        json!({"error": error, "error_description": description}),
    );
    no_store(r.headers_mut());
    r
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `POST /soget-connect/v1/openid-connect/token`, checked in Keycloak's
/// order: duplicated parameters, grant type, then the client.
async fn token(State(shared): Ctx, body: Bytes) -> Response {
    if let Ok(mut l) = shared.ledger.lock() {
        l.token_requests += 1;
    }
    if !shared.config.token_latency.is_zero() {
        tokio::time::sleep(shared.config.token_latency).await;
    }
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if shared.config.gateway_adds_grant_type {
        // A façade that appends grant_type itself, as SOGET's documented
        // call (client_id and client_secret only) suggests: a client that
        // sends one too gets Keycloak's "duplicated parameter".
        pairs.push(("grant_type".into(), "client_credentials".into()));
    }
    let mut seen = std::collections::HashSet::new();
    if pairs.iter().any(|(k, _)| !seen.insert(k.as_str())) {
        record(&shared, "token_refused");
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "duplicated parameter",
        );
    }
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match param("grant_type") {
        None => {
            record(&shared, "token_refused");
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing form parameter: grant_type",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            record(&shared, "token_refused");
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            );
        }
    }
    let Some(client_id) = param("client_id") else {
        record(&shared, "token_refused");
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Missing client_id parameter",
        );
    };
    let config = &shared.config;
    if client_id != config.client_id
        || param("client_secret") != Some(config.client_secret.as_str())
    {
        record(&shared, "token_refused");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let n = shared.token_counter.fetch_add(1, Ordering::Relaxed);
    let mut stream = catalogue::Stream::new(config.seed ^ 0x0074_6f6b_656e, &n.to_string());
    let token = format!(
        "sbx.{:016x}{:016x}.{n}",
        stream.next_u64(),
        stream.next_u64()
    );
    if let Ok(mut tokens) = shared.tokens.lock() {
        let now = Instant::now();
        tokens.retain(|_, expiry| *expiry > now);
        let lifetime = config
            .token_revoked_after
            .unwrap_or(config.token_ttl)
            .min(config.token_ttl);
        tokens.insert(token.clone(), now.checked_add(lifetime).unwrap_or(now));
    }
    if let Ok(mut l) = shared.ledger.lock() {
        l.tokens_issued += 1;
    }
    let mut r = json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "expires_in": config.token_ttl.as_secs(),
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "profile email",
        }),
    );
    no_store(r.headers_mut());
    r
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

/// With `rate_limit_headers`, the IETF rate-limit fields on an answer.
fn add_limit_headers(config: &Config, response: &mut Response, left: limits::Left) {
    let Some(limit) = config.rate_limit.filter(|_| config.rate_limit_headers) else {
        return;
    };
    for (name, value) in limits::headers(limit, left) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
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
                    "created"
                } else {
                    "duplicate"
                },
            );
            response
        }
        (_, None) => response,
    }
}

/// What the gateway made of a call.
enum Gate {
    /// Let through, with what is left of the rate limit, if there is one.
    Admitted(Option<limits::Left>),
    /// Refused: this is the answer.
    Refused(Response),
}

/// The gateway's checks: subscription key, rate limit, quota.
fn gateway(shared: &Shared, query: &HashMap<String, String>, headers: &HeaderMap) -> Gate {
    let config = &shared.config;
    let key = headers
        .get(spec::SUBSCRIPTION_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| query.get("subscription-key").map(String::as_str));
    let key_problem = match key {
        None => Some(
            "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
        ),
        Some(k) if k != config.api_key => Some(
            "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
        ),
        Some(_) => None,
    };
    if let Some(message) = key_problem {
        record(shared, "unauthorized_key");
        let mut r = gateway_error(StatusCode::UNAUTHORIZED, message);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let realm = format!(
            "AzureApiManagementKey realm=\"http://{host}{}\",name=\"{}\",type=\"header\"",
            spec::API_BASE_PATH,
            spec::SUBSCRIPTION_KEY_HEADER
        );
        if let Ok(v) = HeaderValue::from_str(&realm) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return Gate::Refused(r);
    }
    let now = Instant::now();
    let verdict = shared
        .window
        .as_ref()
        .and_then(|window| window.lock().ok().map(|mut w| w.admit(now)));
    if let Some(admitted) = verdict
        && let Ok(mut l) = shared.ledger.lock()
    {
        l.limited(now, admitted.is_err());
    }
    if let Some(Err(wait)) = verdict {
        record(shared, "rate_limited");
        let secs = limits::retry_after_secs(wait);
        let mut r = gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Rate limit is exceeded. Try again in {secs} seconds."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        add_limit_headers(
            &shared.config,
            &mut r,
            limits::Left {
                calls: 0,
                reset: wait,
            },
        );
        return Gate::Refused(r);
    }
    if let Some(quota) = &shared.quota
        && let Ok(mut q) = quota.lock()
        && let Err(wait) = q.take(now)
    {
        record(shared, "quota_exceeded");
        let mut r = gateway_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Out of call volume quota. Quota will be replenished in {}.",
                limits::timespan(wait)
            ),
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(limits::retry_after_secs(wait)),
        );
        return Gate::Refused(r);
    }
    Gate::Admitted(verdict.and_then(Result::ok))
}

/// A tracking the service created (or found again).
struct Created {
    reference: String,
    document: catalogue::Document,
    /// The first creation of this document (later ones are duplicates).
    first: bool,
    /// The webhook URL the request registered, if any.
    url: Option<String>,
    way: Option<String>,
    place: Option<String>,
}

/// What the service made of a request.
enum Answer {
    Created(Created),
    Refused(Response),
}

/// The service behind the gateway: token, media type, body, catalogue.
fn service(shared: &Arc<Shared>, headers: &HeaderMap, value: Option<Value>, body: &[u8]) -> Answer {
    let config = &shared.config;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = bearer.is_some_and(|t| {
        shared
            .tokens
            .lock()
            .map(|tokens| tokens.get(t).is_some_and(|expiry| *expiry > Instant::now()))
            .unwrap_or(false)
    });
    if !token_ok {
        record(shared, "unauthorized_token");
        let message = if bearer.is_none() {
            "Missing bearer token"
        } else {
            "Invalid or expired access token"
        };
        return Answer::Refused(business_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            message,
            None,
        ));
    }

    // The spec does not mark the body required, but the service cannot
    // track nothing: a 400, as a Spring service says it, with the spec's
    // error shape (rather than a 415 the spec does not document).
    if body.is_empty() {
        record(shared, "invalid");
        return Answer::Refused(business_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Required request body is missing",
            None,
        ));
    }

    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_content {
        record(shared, "unsupported_media_type");
        return Answer::Refused(business_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
            None,
        ));
    }

    let Some(value) = value else {
        record(shared, "invalid");
        let reason = serde_json::from_slice::<Value>(body)
            .err()
            .map_or_else(String::new, |e| format!(": {e}"));
        return Answer::Refused(business_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_REQUEST",
            &format!("Malformed JSON request{reason}"),
            None,
        ));
    };
    let reference = match validate_body(&value) {
        Ok(r) => r,
        Err(sub_errors) => {
            record(shared, "invalid");
            return Answer::Refused(business_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "The request is not valid",
                Some(sub_errors),
            ));
        }
    };
    let Some(document) = catalogue::lookup(config.seed, &reference, config.unknown_rate) else {
        record(shared, "unknown_document");
        return Answer::Refused(business_error(
            StatusCode::BAD_REQUEST,
            "DOCUMENT_NOT_FOUND",
            &format!("No announcement document found with reference '{reference}'"),
            Some(vec![sub_error(
                "documentReference",
                Some(&Value::String(reference.clone())),
                "unknown document reference",
            )]),
        ));
    };
    // The creation counts in the ledger whatever happens to the answer.
    let first = match shared.ledger.lock() {
        Ok(mut l) => {
            let n = l.created.entry(reference.clone()).or_default();
            *n += 1;
            *n == 1
        }
        Err(_) => true,
    };
    let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    let created = Created {
        reference,
        document,
        first,
        url: text("url"),
        way: text("way"),
        place: text("place"),
    };
    if first {
        schedule_webhooks(shared, &created);
    }
    Answer::Created(created)
}

fn created_body(created: &Created) -> String {
    let units: Vec<Value> = created
        .document
        .units
        .iter()
        .map(|u| json!({"spi": u.spi, "reference": u.reference}))
        .collect();
    json!({"trackingId": created.document.tracking_id, "trackedHandlingUnits": units}).to_string()
}

fn created_response(created: &Created) -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        created_body(created),
    )
        .into_response()
}

/// Replaces the answer with a fault. `created` is set when the service
/// already created the tracking.
async fn inject(
    shared: &Shared,
    fault: Fault,
    close: Option<&CloseConnection>,
    created: Option<&Created>,
) -> Response {
    let config = &shared.config;
    record(shared, fault.name());
    match fault {
        Fault::Status(500) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"statusCode": 500, "message": "Internal server error", "activityId": activity_id(config.seed)}),
        ),
        Fault::Status(502) => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n",
        )
            .into_response(),
        Fault::Status(429) => {
            let mut r = gateway_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit is exceeded. Try again in 1 seconds.",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Fault::Status(503) => {
            let mut r = gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Fault::Status(other) => {
            let status = StatusCode::from_u16(other).unwrap_or(StatusCode::GATEWAY_TIMEOUT);
            gateway_error(status, status.canonical_reason().unwrap_or("Gateway Timeout"))
        }
        Fault::Drop => {
            match close {
                Some(c) => c.close(),
                None => return gateway_error(StatusCode::BAD_GATEWAY, "connection dropped"),
            }
            std::future::pending::<Response>().await
        }
        Fault::Hang => {
            tokio::time::sleep(config.faults.hang_for).await;
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"statusCode": 500, "message": "Internal server error", "activityId": activity_id(config.seed)}),
            )
        }
        Fault::Malformed => {
            let full = created.map_or_else(|| "{}".to_string(), created_body);
            let cut = full.len() / 2;
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                full.get(..cut).unwrap_or("{").to_string(),
            )
                .into_response()
        }
        Fault::Truncate => {
            let full = created.map_or_else(|| "{}".to_string(), created_body);
            let half = Bytes::from(full.as_bytes()[..full.len() / 2].to_vec());
            // Send the first half, give it time to leave, then break the
            // connection: the client sees a 201 whose body never completes.
            let first = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
            let cut = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Err(std::io::Error::other("connection cut by the sandbox"))
            });
            let chunks = futures_util::StreamExt::chain(first, cut);
            let mut r = Response::new(axum::body::Body::from_stream(chunks));
            *r.status_mut() = StatusCode::CREATED;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
            r
        }
    }
}

fn activity_id(seed: u64) -> String {
    let mut s = catalogue::Stream::new(seed, &format!("{:?}", Instant::now()));
    let (a, b) = (s.next_u64(), s.next_u64());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut s = catalogue::Stream::new(0, &String::from_utf8_lossy(bytes));
    s.next_u64()
}

/// Starts the webhook deliveries of a first creation, when the request
/// registered a URL and the sandbox was told where to deliver.
fn schedule_webhooks(shared: &Arc<Shared>, created: &Created) {
    let (Some(deliverer), Some(url)) = (&shared.deliverer, &created.url) else {
        return;
    };
    deliverer.schedule(Tracking {
        url: url.clone(),
        document_reference: created.reference.clone(),
        direction: created.way.clone().unwrap_or_else(|| "Import".into()),
        location: created.place.clone().unwrap_or_else(|| "MTDF".into()),
        units: created
            .document
            .units
            .iter()
            .map(|u| (u.spi.clone(), u.reference.clone()))
            .collect(),
    });
}

fn sub_error(field: &str, rejected: Option<&Value>, message: &str) -> Value {
    let rejected = match rejected {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    };
    json!({
        "section": "TrackingBatchPost",
        "field": field,
        "rejectedValue": rejected,
        "message": message,
    })
}

/// Checks a request body against `TrackingBatchPost`, as the spec states
/// it: required `documentReference`, types, nullability, `maxLength` in
/// characters, the `way` enum, the `url` pattern and no other property.
/// Returns the document reference, or one sub-error per offending field.
pub fn validate_body(value: &Value) -> Result<String, Vec<Value>> {
    let Some(object) = value.as_object() else {
        return Err(vec![sub_error("", Some(value), "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    for (key, v) in object {
        if !spec::BODY_PROPERTIES.contains(&key.as_str()) {
            errors.push(sub_error(key, Some(v), "is not a known property"));
        }
    }
    let reference = match object.get("documentReference") {
        None | Some(Value::Null) => {
            errors.push(sub_error("documentReference", None, "must not be null"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(sub_error(
                "documentReference",
                Some(&Value::String(s.clone())),
                "size must be at least 1",
            ));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(sub_error(
                "documentReference",
                Some(other),
                "must be a string",
            ));
            None
        }
    };
    match object.get("way") {
        None => {}
        Some(Value::String(w)) if spec::CUSTOMS_INDICATORS.contains(&w.as_str()) => {}
        Some(other) => errors.push(sub_error(
            "way",
            Some(other),
            &format!("must be one of {}", spec::CUSTOMS_INDICATORS.join(", ")),
        )),
    }
    for (field, max) in [
        ("place", spec::PLACE_MAX_CHARS),
        ("agentCode", spec::AGENT_CODE_MAX_CHARS),
    ] {
        match object.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if spec::char_len(s) <= max => {}
            Some(Value::String(s)) => errors.push(sub_error(
                field,
                Some(&Value::String(s.clone())),
                &format!("size must be between 0 and {max}"),
            )),
            Some(other) => errors.push(sub_error(field, Some(other), "must be a string")),
        }
    }
    match object.get("url") {
        None => {}
        Some(Value::String(u)) if spec::url_matches(u) => {}
        Some(Value::String(u)) => errors.push(sub_error(
            "url",
            Some(&Value::String(u.clone())),
            &format!("must match \"{}\"", spec::URL_PATTERN),
        )),
        Some(other) => errors.push(sub_error("url", Some(other), "must be a string")),
    }
    match (reference, errors.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(errors),
    }
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    /// `documents=false` leaves out the per-document counts.
    documents: Option<bool>,
    /// `timeline=true` adds, with a rate limit, the calls let through and
    /// refused per second since the first one.
    timeline: Option<bool>,
}

async fn stats(State(shared): Ctx, Query(q): Query<StatsQuery>) -> Response {
    let Ok(l) = shared.ledger.lock() else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "ledger unavailable");
    };
    let creations: u64 = l.created.values().sum();
    let mut body = json!({
        "requests": l.outcomes,
        "tokens_issued": l.tokens_issued,
        "token_requests": l.token_requests,
        "documents_created": l.created.len(),
        "creations": creations,
        "max_creations_per_document": l.created.values().max().copied().unwrap_or(0),
    });
    let deliveries = shared
        .deliverer
        .as_ref()
        .map(|d| d.counts())
        .unwrap_or_default();
    body["webhooks_delivered"] = json!(deliveries.delivered);
    body["webhooks_failed"] = json!(deliveries.failed);
    body["webhooks"] = json!(deliveries);
    if q.documents.unwrap_or(true) {
        body["documents"] = json!(l.created);
    }
    if q.timeline.unwrap_or(false) {
        body["timeline"] = json!(
            l.timeline
                .iter()
                .map(|(second, (through, refused))| json!([second, through, refused]))
                .collect::<Vec<_>>()
        );
    }
    json_response(StatusCode::OK, body)
}

async fn reset(State(shared): Ctx) -> Response {
    if let Ok(mut l) = shared.ledger.lock() {
        *l = Ledger::default();
    }
    json_response(StatusCode::OK, json!({"reset": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_bodies_pass() {
        for body in [
            json!({"documentReference": "3714238101"}),
            json!({"documentReference": "3714238101", "way": "Import", "place": "MTDF", "agentCode": "CCGM", "url": "https://my-webhook-endpoints.com"}),
            json!({"documentReference": "X", "place": null, "agentCode": null}),
        ] {
            assert!(validate_body(&body).is_ok(), "{body}");
        }
    }

    #[test]
    fn each_offending_field_gets_its_sub_error() {
        let body = json!({
            "documentReference": "",
            "way": "import",
            "place": "x".repeat(21),
            "agentCode": 12,
            "url": null,
            "extra": true,
        });
        let errors = validate_body(&body).unwrap_err();
        let mut fields: Vec<&str> = errors
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "agentCode",
                "documentReference",
                "extra",
                "place",
                "url",
                "way"
            ]
        );
        for e in &errors {
            assert!(
                e["rejectedValue"].is_string() || e["rejectedValue"].is_null(),
                "{e}"
            );
        }
    }

    #[test]
    fn non_objects_and_missing_reference_are_refused() {
        assert!(validate_body(&json!([1, 2])).is_err());
        assert!(validate_body(&json!({"way": "Import"})).is_err());
        assert!(validate_body(&json!({"documentReference": null})).is_err());
    }
}
