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

use super::Config;
use super::catalogue;
use crate::spec;

struct Shared {
    config: Config,
    tokens: Mutex<HashMap<String, Instant>>,
    token_counter: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// What the sandbox has seen, for `GET /_sandbox/stats`.
#[derive(Default)]
struct Ledger {
    /// Requests by outcome (`created`, `duplicate`, `invalid`, …).
    outcomes: BTreeMap<&'static str, u64>,
    tokens_issued: u64,
    /// Creations per document reference.
    created: HashMap<String, u64>,
}

impl Ledger {
    fn count(&mut self, outcome: &'static str) {
        *self.outcomes.entry(outcome).or_default() += 1;
    }
}

type Ctx = State<Arc<Shared>>;

pub fn router(config: Config) -> Router {
    let shared = Arc::new(Shared {
        config,
        tokens: Mutex::new(HashMap::new()),
        token_counter: AtomicU64::new(0),
        ledger: Mutex::new(Ledger::default()),
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
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
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
        tokens.insert(token.clone(), now + config.token_ttl);
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

/// Gateway checks, then the service: token, body, catalogue.
async fn track(
    State(shared): Ctx,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
        record(&shared, "unauthorized_key");
        let mut r = gateway_error(StatusCode::UNAUTHORIZED, message);
        let realm = format!(
            "AzureApiManagementKey realm=\"{}\",name=\"{}\",type=\"header\"",
            spec::API_BASE_PATH,
            spec::SUBSCRIPTION_KEY_HEADER
        );
        if let Ok(v) = HeaderValue::from_str(&realm) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return r;
    }

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
        record(&shared, "unauthorized_token");
        let message = if bearer.is_none() {
            "Missing bearer token"
        } else {
            "Invalid or expired access token"
        };
        return business_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message, None);
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
        record(&shared, "unsupported_media_type");
        return business_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
            None,
        );
    }

    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            record(&shared, "invalid");
            return business_error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_REQUEST",
                &format!("Malformed JSON request: {e}"),
                None,
            );
        }
    };
    let reference = match validate_body(&value) {
        Ok(r) => r,
        Err(sub_errors) => {
            record(&shared, "invalid");
            return business_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "The request is not valid",
                Some(sub_errors),
            );
        }
    };

    let document = catalogue::document(config.seed, &reference);
    let first = match shared.ledger.lock() {
        Ok(mut l) => {
            let n = l.created.entry(reference.clone()).or_default();
            *n += 1;
            let first = *n == 1;
            l.count(if first { "created" } else { "duplicate" });
            first
        }
        Err(_) => true,
    };
    tracing::trace!(reference, first, "tracked");
    let units: Vec<Value> = document
        .units
        .iter()
        .map(|u| json!({"spi": u.spi, "reference": u.reference}))
        .collect();
    json_response(
        StatusCode::CREATED,
        json!({"trackingId": document.tracking_id, "trackedHandlingUnits": units}),
    )
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
}

async fn stats(State(shared): Ctx, Query(q): Query<StatsQuery>) -> Response {
    let Ok(l) = shared.ledger.lock() else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "ledger unavailable");
    };
    let creations: u64 = l.created.values().sum();
    let mut body = json!({
        "requests": l.outcomes,
        "tokens_issued": l.tokens_issued,
        "documents_created": l.created.len(),
        "creations": creations,
        "max_creations_per_document": l.created.values().max().copied().unwrap_or(0),
    });
    if q.documents.unwrap_or(true) {
        body["documents"] = json!(l.created);
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
