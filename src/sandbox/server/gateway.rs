//! The API Management gateway in front of the service: subscription key,
//! rate limit (and its headers), quota, with the gateway's own error shape.

use super::*;

/// The gateway's own error shape (domain note §3).
pub(super) fn gateway_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"statusCode": status.as_u16(), "message": message}),
    )
}

/// What the gateway made of a call.
pub(super) enum Gate {
    /// Let through, with what is left of the rate limit, if there is one.
    Admitted(Option<limits::Left>),
    /// Refused: this is the answer.
    Refused(Response),
}

/// The gateway's checks: subscription key, rate limit, quota.
///
/// Long for a reason: three checks in the order APIM makes them, each with
/// its own answer shape; the order is the point, so it reads in one place.
pub(super) fn gateway(
    shared: &Shared,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Gate {
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
        record(shared, Outcome::UnauthorizedKey);
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
        record(shared, Outcome::RateLimited);
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
        record(shared, Outcome::QuotaExceeded);
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

/// With `rate_limit_headers`, the IETF rate-limit fields on an answer.
pub(super) fn add_limit_headers(config: &Config, response: &mut Response, left: limits::Left) {
    let Some(limit) = config.rate_limit.filter(|_| config.rate_limit_headers) else {
        return;
    };
    for (name, value) in limits::headers(limit, left) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
}
