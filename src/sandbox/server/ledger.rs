//! What the sandbox has seen, for `GET /_sandbox/stats` (and its reset):
//! requests by outcome, tokens, creations per document, the rate limit's
//! timeline.

use super::*;

/// What the sandbox has seen, for `GET /_sandbox/stats`.
#[derive(Default)]
pub(super) struct Ledger {
    /// Requests by outcome (`created`, `duplicate`, `invalid`, …).
    outcomes: BTreeMap<&'static str, u64>,
    pub(super) tokens_issued: u64,
    /// Token requests received (counted on arrival, before any latency).
    pub(super) token_requests: u64,
    /// Creations per document reference.
    pub(super) created: HashMap<String, u64>,
    /// Requests per fault key (document reference, or body hash), so that
    /// the nth request about a document meets the same fault every time.
    pub(super) seen: HashMap<String, u64>,
    /// With a rate limit: calls the gateway let through and refused (429),
    /// per second since its first call, for a timeline of the pace.
    first_call: Option<Instant>,
    timeline: BTreeMap<u64, (u64, u64)>,
}

impl Ledger {
    /// A call counted by the rate limit at `now`: let through or refused.
    pub(super) fn limited(&mut self, now: Instant, refused: bool) {
        let first = *self.first_call.get_or_insert(now);
        let second = now.saturating_duration_since(first).as_secs();
        let entry = self.timeline.entry(second).or_default();
        if refused {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }

    pub(super) fn count(&mut self, outcome: Outcome) {
        *self.outcomes.entry(outcome.name()).or_default() += 1;
    }
}

/// What became of a request, as the stats count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A tracking created, and one found again for a document already
    /// created.
    Created,
    Duplicate,
    /// A path the sandbox does not serve.
    NotFound,
    /// The token endpoint refused the request.
    TokenRefused,
    /// The gateway: no or a wrong subscription key, the rate limit, the
    /// quota.
    UnauthorizedKey,
    RateLimited,
    QuotaExceeded,
    /// The service: no or a wrong bearer token, not JSON, a body the
    /// spec refuses, a document it does not know.
    UnauthorizedToken,
    UnsupportedMediaType,
    Invalid,
    UnknownDocument,
    /// A fault injected in place of the answer.
    Fault(Fault),
}

impl Outcome {
    /// Its key in `/_sandbox/stats`'s `requests`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Duplicate => "duplicate",
            Outcome::NotFound => "not_found",
            Outcome::TokenRefused => "token_refused",
            Outcome::UnauthorizedKey => "unauthorized_key",
            Outcome::RateLimited => "rate_limited",
            Outcome::QuotaExceeded => "quota_exceeded",
            Outcome::UnauthorizedToken => "unauthorized_token",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Invalid => "invalid",
            Outcome::UnknownDocument => "unknown_document",
            Outcome::Fault(fault) => fault.name(),
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct StatsQuery {
    /// `documents=false` leaves out the per-document counts.
    documents: Option<bool>,
    /// `timeline=true` adds, with a rate limit, the calls let through and
    /// refused per second since the first one.
    timeline: Option<bool>,
}

pub(super) async fn stats(State(shared): Ctx, Query(q): Query<StatsQuery>) -> Response {
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

pub(super) async fn reset(State(shared): Ctx) -> Response {
    if let Ok(mut l) = shared.ledger.lock() {
        *l = Ledger::default();
    }
    json_response(StatusCode::OK, json!({"reset": true}))
}
