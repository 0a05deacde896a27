//! The tracking service behind the gateway: the bearer token, the media
//! type, the body, the catalogue; a tracking created (and its webhooks
//! scheduled) or the business error.

use super::*;

/// The service's `HttpBusinessError`.
pub(super) fn business_error(
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

/// A tracking the service created (or found again).
pub(super) struct Created {
    reference: String,
    document: catalogue::Document,
    /// The first creation of this document (later ones are duplicates).
    pub(super) first: bool,
    /// The webhook URL the request registered, if any.
    url: Option<String>,
    way: Option<String>,
    place: Option<String>,
}

/// What the service made of a request.
pub(super) enum Answer {
    Created(Created),
    Refused(Response),
}

/// The service behind the gateway: token, media type, body, catalogue.
pub(super) fn service(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    value: Option<Value>,
    body: &[u8],
) -> Answer {
    if let Err(refused) = check_token(shared, headers) {
        return Answer::Refused(*refused);
    }
    match check_request(shared, headers, value, body) {
        Ok((value, reference)) => create(shared, &value, reference),
        Err(refused) => Answer::Refused(*refused),
    }
}

/// The bearer token: one the token endpoint issued, not expired.
fn check_token(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
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
        record(shared, Outcome::UnauthorizedToken);
        let message = if bearer.is_none() {
            "Missing bearer token"
        } else {
            "Invalid or expired access token"
        };
        return Err(Box::new(business_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            message,
            None,
        )));
    }
    Ok(())
}

/// The request itself: a body, JSON by its media type and its text, that
/// the spec's schema accepts. Returns it with its document reference.
fn check_request(
    shared: &Shared,
    headers: &HeaderMap,
    value: Option<Value>,
    body: &[u8],
) -> Result<(Value, String), Box<Response>> {
    // The spec does not mark the body required, but the service cannot
    // track nothing: a 400, as a Spring service says it, with the spec's
    // error shape (rather than a 415 the spec does not document).
    if body.is_empty() {
        record(shared, Outcome::Invalid);
        return Err(Box::new(business_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Required request body is missing",
            None,
        )));
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
        record(shared, Outcome::UnsupportedMediaType);
        return Err(Box::new(business_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
            None,
        )));
    }

    let Some(value) = value else {
        record(shared, Outcome::Invalid);
        let reason = serde_json::from_slice::<Value>(body)
            .err()
            .map_or_else(String::new, |e| format!(": {e}"));
        return Err(Box::new(business_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_REQUEST",
            &format!("Malformed JSON request{reason}"),
            None,
        )));
    };
    match validate_body(&value) {
        Ok(reference) => Ok((value, reference)),
        Err(sub_errors) => {
            record(shared, Outcome::Invalid);
            Err(Box::new(business_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "The request is not valid",
                Some(sub_errors),
            )))
        }
    }
}

/// The document in the catalogue: a tracking created (counted, and its
/// webhooks scheduled the first time), or DOCUMENT_NOT_FOUND.
fn create(shared: &Arc<Shared>, value: &Value, reference: String) -> Answer {
    let config = &shared.config;
    let Some(document) = catalogue::lookup(config.seed, &reference, config.unknown_rate) else {
        record(shared, Outcome::UnknownDocument);
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

pub(super) fn created_body(created: &Created) -> String {
    let units: Vec<Value> = created
        .document
        .units
        .iter()
        .map(|u| json!({"spi": u.spi, "reference": u.reference}))
        .collect();
    json!({"trackingId": created.document.tracking_id, "trackedHandlingUnits": units}).to_string()
}

pub(super) fn created_response(created: &Created) -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        created_body(created),
    )
        .into_response()
}

pub(super) fn activity_id(seed: u64) -> String {
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

/// Starts the webhook deliveries of a first creation, when the request
/// registered a URL and the sandbox was told where to deliver.
pub(super) fn schedule_webhooks(shared: &Arc<Shared>, created: &Created) {
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
