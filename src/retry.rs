//! What an answer means and how long to wait before trying again.
//!
//! Pure functions only: the HTTP client feeds them a status, headers and a
//! body; the dispatcher acts on the [`Verdict`]. Every branch is unit-tested
//! here without a network.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::store::Unit;

/// Longest excerpt of an unreadable body kept in the state file.
pub const RAW_EXCERPT_CHARS: usize = 2000;

/// What one HTTP exchange means for its row and for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 201 with a readable body.
    Created {
        tracking_id: String,
        units: Vec<Unit>,
    },
    /// 2xx whose body cannot be read: the tracking probably exists, so the
    /// row must not be sent again automatically.
    BadResponse { http_status: u16, reason: String },
    /// The API refused this row (its fault, not the run's).
    RowError {
        http_status: u16,
        code: String,
        message: String,
        details: String,
    },
    /// No HTTP answer: the request failed on the way, for this reason.
    /// Worth another attempt unless the failure is permanent.
    Unanswered {
        failure: TransportFailure,
        reason: String,
    },
    /// An HTTP answer worth another attempt later.
    Retry {
        http_status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
        /// A 429: the subscription's rate limit, shared by the whole run.
        throttled: bool,
    },
    /// 401: a credential was refused.
    Unauthorized {
        culprit: Credential,
        message: String,
    },
    /// Nothing this run can cure (wrong URL, quota spent, …).
    Fatal { http_status: u16, message: String },
}

impl Verdict {
    /// The answer in a few words for a request log line: its HTTP status
    /// (or why there was none) and what it means.
    pub fn brief(&self) -> String {
        match self {
            Verdict::Created { units, .. } => format!("201 created, {} units", units.len()),
            Verdict::BadResponse { http_status, .. } => format!("{http_status} unreadable"),
            Verdict::RowError {
                http_status, code, ..
            } => format!("{http_status} {code}"),
            Verdict::Unanswered { failure, .. } => format!("no answer ({failure:?})"),
            Verdict::Retry {
                http_status,
                throttled,
                ..
            } => match (http_status, throttled) {
                (Some(h), true) => format!("{h} throttled"),
                (Some(h), false) => format!("{h} retry"),
                (None, _) => "no answer".to_string(),
            },
            Verdict::Unauthorized { .. } => "401 unauthorized".to_string(),
            Verdict::Fatal { http_status, .. } => format!("{http_status} fatal"),
        }
    }
}

/// How a request failed without an HTTP answer, classified once where the
/// client's error is read, and acted on by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportFailure {
    /// No answer within `--timeout` (the request may have arrived).
    TimedOut,
    /// The server's address refused the connection.
    Refused,
    /// The API's host name did not resolve.
    Dns,
    /// The TLS handshake failed (most often an untrusted certificate):
    /// permanent, trying again changes nothing.
    Tls,
    /// The proxy from the environment could not be used.
    Proxy,
    /// The connection was closed or reset before the answer.
    Reset,
    /// The answer was cut short.
    CutShort,
    /// This process ran out of file descriptors: a local limit, not the
    /// API's doing, and permanent for this run.
    TooManyFiles,
    /// Anything else on the way.
    Other,
}

impl TransportFailure {
    /// Trying again cannot help: the run stops at once.
    pub fn permanent(self) -> bool {
        matches!(self, TransportFailure::Tls | TransportFailure::TooManyFiles)
    }

    /// The request may have reached the service (so a new one may track
    /// the document twice).
    pub fn maybe_sent(self) -> bool {
        matches!(
            self,
            TransportFailure::TimedOut
                | TransportFailure::Reset
                | TransportFailure::CutShort
                | TransportFailure::Other
        )
    }

    /// Nothing answered: the API was not reached at all (an outage seen
    /// from here when every request fails so).
    pub fn unreached(self) -> bool {
        matches!(
            self,
            TransportFailure::Refused
                | TransportFailure::Dns
                | TransportFailure::Tls
                | TransportFailure::Proxy
                | TransportFailure::TimedOut
        )
    }
}

/// What the circuit breaker counts failures in a row of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    Http(u16),
    Transport(TransportFailure),
}

/// Which credential a 401 blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The gateway refused `Ocp-Apim-Subscription-Key`.
    SubscriptionKey,
    /// The bearer token was refused (by the gateway or the service).
    AccessToken,
}

/// The spec's `HttpBusinessError`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BusinessError {
    status: Option<String>,
    code: Option<String>,
    message: Option<String>,
    sub_errors: Option<Vec<SubError>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubError {
    field: Option<String>,
    rejected_value: Option<serde_json::Value>,
    message: Option<String>,
}

/// Azure API Management's own error body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayError {
    /// Required, to tell this shape from the others; not shown (it is the
    /// HTTP status, which every message quoting this body already gives).
    #[serde(rename = "statusCode")]
    _status_code: u16,
    message: String,
}

/// ASP.NET's ProblemDetails, which a .NET service may answer instead.
#[derive(Debug, Deserialize)]
struct ProblemDetails {
    title: Option<String>,
    detail: Option<String>,
    errors: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrackingResponse {
    tracking_id: Option<String>,
    tracked_handling_units: Option<Vec<Unit>>,
}

/// Classifies a complete HTTP answer.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], now: SystemTime) -> Verdict {
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    match status {
        200..=299 => created(status, body),
        300..=399 => Verdict::Fatal {
            http_status: status,
            message: format!("the API answered a redirect (HTTP {status}); check --base-url"),
        },
        401 => unauthorized(body),
        403 => Verdict::Fatal {
            http_status: status,
            message: format!("access forbidden (HTTP 403): {}", error_summary(body)),
        },
        404 | 405 => Verdict::Fatal {
            http_status: status,
            message: format!(
                "the endpoint does not exist (HTTP {status}: {}); check --base-url",
                error_summary(body)
            ),
        },
        408 | 429 | 500 | 502 | 503 | 504 => Verdict::Retry {
            http_status: Some(status),
            reason: format!("HTTP {status} {}", reason_phrase(status)),
            retry_after,
            throttled: status == 429,
        },
        400..=499 => row_error(status, body),
        _ => Verdict::Fatal {
            http_status: status,
            message: format!(
                "the API answered HTTP {status} {}: {}",
                reason_phrase(status),
                error_summary(body)
            ),
        },
    }
}

fn created(status: u16, body: &[u8]) -> Verdict {
    let bad = |reason: String| Verdict::BadResponse {
        http_status: status,
        reason,
    };
    // The usual answer, an object that reads as the struct, is read
    // straight into it. Anything else takes the way through a `Value`,
    // which says why it is unreadable as it always did: an object, not
    // anything serde could read as the struct's fields (a JSON array is
    // read field by field), and its errors without a position.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let direct = object
        .then(|| serde_json::from_slice::<TrackingResponse>(body).ok())
        .flatten();
    let parsed: TrackingResponse = match direct {
        Some(p) => p,
        None => match serde_json::from_slice::<serde_json::Value>(body).and_then(|v| {
            if v.is_object() {
                serde_json::from_value(v)
            } else {
                Err(serde::de::Error::custom("the body is not a JSON object"))
            }
        }) {
            Ok(p) => p,
            Err(e) => {
                return bad(format!(
                    "HTTP {status} with an unreadable body ({e}): {}",
                    excerpt(body)
                ));
            }
        },
    };
    match parsed.tracking_id {
        Some(id) if !id.is_empty() => Verdict::Created {
            tracking_id: id,
            units: parsed.tracked_handling_units.unwrap_or_default(),
        },
        _ => bad(format!(
            "HTTP {status} without a trackingId: {}",
            excerpt(body)
        )),
    }
}

fn unauthorized(body: &[u8]) -> Verdict {
    if let Ok(g) = serde_json::from_slice::<GatewayError>(body) {
        let culprit = if g.message.to_ascii_lowercase().contains("subscription key") {
            Credential::SubscriptionKey
        } else {
            Credential::AccessToken
        };
        return Verdict::Unauthorized {
            culprit,
            message: one_line(&g.message),
        };
    }
    Verdict::Unauthorized {
        culprit: Credential::AccessToken,
        message: error_summary(body),
    }
}

fn row_error(status: u16, body: &[u8]) -> Verdict {
    if let Ok(e) = serde_json::from_slice::<BusinessError>(body)
        && (e.code.is_some() || e.message.is_some() || e.sub_errors.is_some())
    {
        let details = e
            .sub_errors
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let mut text = format!(
                    "{}: {}",
                    s.field.as_deref().unwrap_or("?"),
                    s.message.as_deref().unwrap_or("invalid")
                );
                match &s.rejected_value {
                    Some(serde_json::Value::String(v)) => {
                        text.push_str(&format!(" (rejected {v:?})"))
                    }
                    Some(serde_json::Value::Null) | None => {}
                    Some(v) => text.push_str(&format!(" (rejected {v})")),
                }
                text
            })
            .collect::<Vec<_>>()
            .join(" | ");
        return Verdict::RowError {
            http_status: status,
            code: no_controls(&e.code.or(e.status).unwrap_or_default()),
            message: no_controls(&e.message.unwrap_or_default()),
            details: no_controls(&details),
        };
    }
    if let Ok(p) = serde_json::from_slice::<ProblemDetails>(body)
        && (p.title.is_some() || p.errors.is_some())
    {
        let details = p
            .errors
            .unwrap_or_default()
            .iter()
            .map(|(field, v)| format!("{field}: {}", flatten_messages(v)))
            .collect::<Vec<_>>()
            .join(" | ");
        return Verdict::RowError {
            http_status: status,
            code: String::new(),
            message: no_controls(&p.detail.or(p.title).unwrap_or_default()),
            details: no_controls(&details),
        };
    }
    Verdict::RowError {
        http_status: status,
        code: String::new(),
        message: format!("HTTP {status} {}", reason_phrase(status)),
        details: excerpt(body),
    }
}

fn flatten_messages(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => items
            .iter()
            .map(flatten_messages)
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Text from a server, made safe for a log line: control characters
/// (line breaks that could forge log lines among them) become spaces, and
/// it is bounded.
pub fn one_line(text: &str) -> String {
    let cleaned = no_controls(text);
    let trimmed = cleaned.trim();
    if trimmed.chars().count() > RAW_EXCERPT_CHARS {
        let mut short: String = trimmed.chars().take(RAW_EXCERPT_CHARS).collect();
        short.push('…');
        short
    } else {
        trimmed.to_string()
    }
}

/// Server text with control characters as spaces, trimmed, unbounded (for
/// the failures file, where every sub-error counts).
pub fn no_controls(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A short, single-line description of an error body of any shape.
pub fn error_summary(body: &[u8]) -> String {
    let is_object = serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object());
    if is_object
        && let Ok(g) = serde_json::from_slice::<GatewayError>(body)
        && !one_line(&g.message).is_empty()
    {
        return one_line(&g.message);
    }
    if is_object && let Ok(e) = serde_json::from_slice::<BusinessError>(body) {
        let text = [e.code, e.message]
            .into_iter()
            .flatten()
            .map(|t| one_line(&t))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        if !text.is_empty() {
            return text;
        }
    }
    if body.is_empty() {
        return "empty body".into();
    }
    let text = excerpt(body);
    if text.trim().is_empty() {
        "a body of blanks".into()
    } else {
        text
    }
}

/// The body as text, on one line, bounded.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(RAW_EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > RAW_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Longest `Retry-After` taken at its word; anything longer is read as
/// this (a day): far beyond any wait a run would sit through.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// `Retry-After` as seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs()))
    } else if let Ok(secs) = value.parse::<f64>()
        && secs >= 0.0
    {
        Duration::try_from_secs_f64(secs).unwrap_or(MAX_RETRY_AFTER)
    } else {
        // The three forms RFC 9110 has recipients accept (IMF-fixdate,
        // RFC 850, asctime), by the crate hyper already builds.
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter: a delay drawn uniformly from
/// `[0, min(cap, base · 2^(attempt-1))]`, `unit` being the draw in `[0, 1)`.
/// `attempt` counts the attempts already made (1 after the first failure).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(cap);
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * unit)
        .unwrap_or(ceiling)
        .min(ceiling)
}

/// Trips after `threshold` failures in a row of the same kind, with no
/// success between: the API is down or refusing everything, and going on
/// would only burn attempts.
///
/// It also keeps the streak's victims: rows that ran out of attempts while
/// the streak lasted. If the streak trips the breaker, the API was down,
/// not those rows at fault, and they go back to pending with the rest.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    kind: Option<FailureKind>,
    streak: u32,
    /// Row ids, with whether their last request may have arrived.
    victims: Vec<(i64, bool)>,
    tripped: bool,
}

impl Breaker {
    pub fn new(threshold: u32) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            kind: None,
            streak: 0,
            victims: Vec::new(),
            tripped: false,
        }
    }

    /// Records a failure of `kind`; `true` once the streak reaches the
    /// threshold.
    pub fn failure(&mut self, kind: FailureKind) -> bool {
        if self.kind == Some(kind) {
            self.streak += 1;
        } else {
            self.kind = Some(kind);
            self.streak = 1;
            self.victims.clear();
        }
        if self.streak >= self.threshold {
            self.tripped = true;
        }
        self.tripped
    }

    /// Any answer that shows the API working breaks the streak.
    pub fn success(&mut self) {
        self.kind = None;
        self.streak = 0;
        self.victims.clear();
    }

    /// A row ran out of attempts: it is kept as a victim of the current
    /// streak (`true`), or, once the breaker has tripped, it must stay
    /// pending at once (`false`).
    pub fn ran_out(&mut self, row: i64, maybe_sent: bool) -> bool {
        if !self.tripped {
            self.victims.push((row, maybe_sent));
        }
        !self.tripped
    }

    /// The victims of the streak that tripped the breaker (empty before).
    pub fn take_victims(&mut self) -> Vec<(i64, bool)> {
        if self.tripped {
            std::mem::take(&mut self.victims)
        } else {
            Vec::new()
        }
    }

    /// At the end of sending: if every one of the run's `requests` failed
    /// the same way without reaching the API (refused, DNS, TLS, proxy, no
    /// answer), that is an outage whatever the number of rows. Trips the
    /// breaker and returns the failure, so that the rows that ran out go
    /// back to pending.
    pub fn outage(&mut self, requests: u64) -> Option<TransportFailure> {
        match self.kind {
            Some(FailureKind::Transport(failure))
                if !self.tripped
                    && failure.unreached()
                    && requests > 0
                    && u64::from(self.streak) == requests =>
            {
                self.tripped = true;
                Some(failure)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP_503: FailureKind = FailureKind::Http(503);
    const TIMED_OUT: FailureKind = FailureKind::Transport(TransportFailure::TimedOut);
    const REFUSED: FailureKind = FailureKind::Transport(TransportFailure::Refused);

    #[test]
    fn the_breaker_trips_on_a_streak_of_one_kind_only() {
        let mut b = Breaker::new(3);
        assert!(!b.failure(HTTP_503));
        assert!(!b.failure(HTTP_503));
        assert!(!b.failure(TIMED_OUT), "another kind restarts the streak");
        assert!(!b.failure(TIMED_OUT));
        b.success();
        assert!(!b.failure(TIMED_OUT));
        assert!(!b.failure(TIMED_OUT));
        assert!(b.failure(TIMED_OUT));
    }

    #[test]
    fn rows_that_ran_out_during_the_tripping_streak_are_its_victims() {
        let mut b = Breaker::new(3);
        assert!(!b.failure(HTTP_503));
        assert!(b.ran_out(1, false));
        b.success();
        // Row 1 ran out before a success: not a victim of a later streak.
        assert!(!b.failure(TIMED_OUT));
        assert!(b.ran_out(2, true));
        assert!(!b.failure(TIMED_OUT));
        assert!(b.take_victims().is_empty(), "not tripped yet");
        assert!(b.failure(TIMED_OUT));
        assert_eq!(b.take_victims(), [(2, true)]);
        assert!(!b.ran_out(3, false), "after the trip a row stays pending");
    }

    #[test]
    fn every_request_unreached_is_an_outage_whatever_the_count() {
        // Three rows, two attempts each, every one refused.
        let mut b = Breaker::new(30);
        for row in 1..=3 {
            for _ in 0..2 {
                assert!(!b.failure(REFUSED));
            }
            assert!(b.ran_out(row, false));
        }
        assert_eq!(b.outage(6), Some(TransportFailure::Refused));
        assert_eq!(b.take_victims(), [(1, false), (2, false), (3, false)]);
        // An answer somewhere in the run: not an outage.
        let mut b = Breaker::new(30);
        b.failure(HTTP_503);
        b.failure(REFUSED);
        assert_eq!(b.outage(2), None);
        // HTTP answers mean the API was reached.
        let mut b = Breaker::new(30);
        b.failure(HTTP_503);
        assert_eq!(b.outage(1), None);
        // Failures that may have reached it are not an outage either.
        let mut b = Breaker::new(30);
        b.failure(FailureKind::Transport(TransportFailure::Reset));
        assert_eq!(b.outage(1), None);
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
    }

    #[test]
    fn a_created_body_reads_the_same_straight_or_through_a_value() {
        // Read straight into the struct (the usual answer), or, when that
        // fails, through a Value as before: a duplicated key keeps the last
        // value, an array is not an object, a wrong type says why.
        let cases: [(&[u8], Result<&str, &str>); 5] = [
            (
                br#" {"trackingId":"T1","trackedHandlingUnits":[]}"#,
                Ok("T1"),
            ),
            (br#"{"trackingId":"A","trackingId":"B"}"#, Ok("B")),
            (br#"["T1", []]"#, Err("the body is not a JSON object")),
            (
                br#"{"trackingId":7}"#,
                Err("invalid type: integer `7`, expected a string"),
            ),
            (br#"{"trackingId":"T1""#, Err("EOF while parsing an object")),
        ];
        for (body, expected) in cases {
            let got = classify(201, None, body, now());
            match (expected, &got) {
                (Ok(id), Verdict::Created { tracking_id, .. }) => assert_eq!(tracking_id, id),
                (Err(why), Verdict::BadResponse { reason, .. }) => {
                    assert!(reason.contains(why), "{reason}");
                }
                _ => panic!("{}: {got:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn created_with_units() {
        let body = br#"{"trackingId":"TRK0000000001","trackedHandlingUnits":[{"spi":"CNI0000000001","reference":"CGMU0000001"}]}"#;
        let Verdict::Created { tracking_id, units } = classify(201, None, body, now()) else {
            panic!("not created")
        };
        assert_eq!(tracking_id, "TRK0000000001");
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].spi.as_deref(), Some("CNI0000000001"));
    }

    #[test]
    fn created_with_null_units_has_none() {
        let body = br#"{"trackingId":"TRK1","trackedHandlingUnits":null}"#;
        assert_eq!(
            classify(201, None, body, now()),
            Verdict::Created {
                tracking_id: "TRK1".into(),
                units: vec![]
            }
        );
    }

    #[test]
    fn unreadable_201_is_a_bad_response_with_the_raw_body() {
        for body in [
            &b"{\"trackingId\":\"TRK00"[..],
            b"<html>ok</html>",
            br#"{"trackedHandlingUnits":[]}"#,
            br#"{"trackingId":null}"#,
        ] {
            match classify(201, None, body, now()) {
                Verdict::BadResponse {
                    http_status,
                    reason,
                } => {
                    assert_eq!(http_status, 201);
                    let shown = String::from_utf8_lossy(body);
                    assert!(reason.contains(shown.as_ref()), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn business_400_keeps_code_message_and_flattened_sub_errors() {
        let body = br#"{"status":"BAD_REQUEST","timestamp":"2026-01-01T00:00:00Z","code":"VALIDATION","message":"Invalid request","subErrors":[{"section":"TrackingBatchPost","field":"place","rejectedValue":"TOO LONG PLACE NAME XX","message":"size must be between 0 and 20"},{"section":null,"field":"way","rejectedValue":null,"message":"unknown"}]}"#;
        let Verdict::RowError {
            http_status,
            code,
            message,
            details,
        } = classify(400, None, body, now())
        else {
            panic!("not a row error")
        };
        assert_eq!(http_status, 400);
        assert_eq!(code, "VALIDATION");
        assert_eq!(message, "Invalid request");
        assert_eq!(
            details,
            "place: size must be between 0 and 20 (rejected \"TOO LONG PLACE NAME XX\") | way: unknown"
        );
    }

    #[test]
    fn problem_details_400_is_understood() {
        let body = br#"{"type":"https://tools.ietf.org/html/rfc9110#section-15.5.1","title":"One or more validation errors occurred.","status":400,"errors":{"place":["The field place must be a string with a maximum length of 20."]}}"#;
        let Verdict::RowError {
            message, details, ..
        } = classify(400, None, body, now())
        else {
            panic!("not a row error")
        };
        assert_eq!(message, "One or more validation errors occurred.");
        assert!(details.starts_with("place: The field place"), "{details}");
    }

    #[test]
    fn gateway_401_blames_the_subscription_key() {
        let body = br#"{"statusCode":401,"message":"Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."}"#;
        assert!(matches!(
            classify(401, None, body, now()),
            Verdict::Unauthorized {
                culprit: Credential::SubscriptionKey,
                ..
            }
        ));
    }

    #[test]
    fn jwt_and_service_401_blame_the_token() {
        let gateway =
            br#"{"statusCode":401,"message":"Unauthorized. Access token is missing or invalid."}"#;
        let service =
            br#"{"status":"UNAUTHORIZED","code":"INVALID_TOKEN","message":"Token expired"}"#;
        for body in [&gateway[..], &service[..]] {
            assert!(matches!(
                classify(401, None, body, now()),
                Verdict::Unauthorized {
                    culprit: Credential::AccessToken,
                    ..
                }
            ));
        }
    }

    #[test]
    fn transient_statuses_are_retried_and_429_is_throttling() {
        for status in [408, 429, 500, 502, 503, 504] {
            match classify(status, Some("7"), b"<html>busy</html>", now()) {
                Verdict::Retry {
                    http_status,
                    retry_after,
                    throttled,
                    ..
                } => {
                    assert_eq!(http_status, Some(status));
                    assert_eq!(retry_after, Some(Duration::from_secs(7)));
                    assert_eq!(throttled, status == 429);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_endpoint_and_quota_are_fatal() {
        for status in [403, 404, 405, 501, 301] {
            assert!(
                matches!(classify(status, None, b"", now()), Verdict::Fatal { .. }),
                "{status}"
            );
        }
        let quota = br#"{"statusCode":403,"message":"Out of call volume quota. Quota will be replenished in 5.03:23:11."}"#;
        let Verdict::Fatal { message, .. } = classify(403, Some("3600"), quota, now()) else {
            panic!()
        };
        assert!(message.contains("replenished in 5.03:23:11"), "{message}");
    }

    #[test]
    fn other_4xx_are_row_errors_with_an_excerpt() {
        let Verdict::RowError {
            http_status,
            details,
            ..
        } = classify(422, None, b"nope", now())
        else {
            panic!()
        };
        assert_eq!(http_status, 422);
        assert_eq!(details, "nope");
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 1.5 ", now()),
            Some(Duration::from_millis(1500))
        );
        // 1_764_000_000 is 2025-11-24T16:00:00Z.
        assert_eq!(
            parse_retry_after("Mon, 24 Nov 2025 16:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Mon, 24 Nov 2025 15:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        // A date that is not one of the three forms (a one-digit day, a
        // weekday that does not match the date) is unreadable, as any
        // other unreadable value: the pause falls back to its default.
        assert_eq!(
            parse_retry_after("Mon, 4 Nov 2025 16:00:30 GMT", now()),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 24 Nov 2025 16:00:30 GMT", now()),
            None
        );
        // The obsolete forms a recipient must still accept.
        assert_eq!(
            parse_retry_after("Monday, 24-Nov-25 16:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon Nov 24 16:00:30 2025", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        // Absurd values from a broken proxy are bounded, never a panic.
        for absurd in [
            "1e300",
            "18446744073709551615",
            "inf",
            "Fri, 01 Jan 99999999999 00:00:00 GMT",
        ] {
            let wait = parse_retry_after(absurd, now());
            assert!(
                wait.is_none() || wait <= Some(MAX_RETRY_AFTER),
                "{absurd}: {wait:?}"
            );
        }
        assert_eq!(parse_retry_after("-3", now()), None);
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, base, cap, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(4, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(20, base, cap, 1.0), cap);
        assert_eq!(backoff(200, base, cap, 1.0), cap);
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(3, base, cap, 0.0), Duration::ZERO);
    }

    #[test]
    fn excerpt_is_bounded_and_single_line() {
        let body = format!("line1\nline2{}", "x".repeat(5000));
        let e = excerpt(body.as_bytes());
        assert!(!e.contains('\n'));
        assert_eq!(e.chars().count(), RAW_EXCERPT_CHARS + 1);
    }
}
