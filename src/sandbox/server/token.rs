//! The token endpoint (SOGET Connect's client-credentials grant): the
//! answers and refusals of an OpenID Connect provider.

use super::*;

/// Keycloak-like error answer of the token endpoint.
pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = json_response(
        status,
        json!({"error": error, "error_description": description}),
    );
    no_store(r.headers_mut());
    r
}

pub(super) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `POST /soget-connect/v1/openid-connect/token`, checked in Keycloak's
/// order: duplicated parameters, grant type, then the client.
///
/// Long for a reason: the refusals are a list in that order, each a few
/// lines; the order is what a client meets, so it stays readable in one
/// place.
pub(super) async fn token(State(shared): Ctx, body: Bytes) -> Response {
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
        record(&shared, Outcome::TokenRefused);
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
            record(&shared, Outcome::TokenRefused);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing form parameter: grant_type",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            record(&shared, Outcome::TokenRefused);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            );
        }
    }
    let Some(client_id) = param("client_id") else {
        record(&shared, Outcome::TokenRefused);
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
        record(&shared, Outcome::TokenRefused);
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
