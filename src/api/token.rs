//! The OAuth2 bearer token: fetched with client credentials, cached,
//! renewed before it expires or when the API refuses it, one fetch at a
//! time for every request task.

use super::*;

/// A bearer token, as the `Authorization` header it is sent in (built once
/// per token, marked sensitive so that it is never printed), and the
/// generation it belongs to (bumped at each fetch).
#[derive(Debug, Clone)]
pub struct Bearer {
    pub header: HeaderValue,
    pub generation: u64,
}

impl Bearer {
    /// `None` if the token cannot go in a header.
    pub(super) fn new(token: &Secret, generation: u64) -> Option<Bearer> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.expose())).ok()?;
        header.set_sensitive(true);
        Some(Bearer { header, generation })
    }
}

/// Why no token could be had. Always fatal for the run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the token endpoint refused the client credentials (HTTP {status}{detail}); \
         check {check}"
    )]
    Refused {
        status: u16,
        detail: String,
        /// The credentials to check, named as the user gave them.
        check: String,
    },
    #[error("the token endpoint {url} could not be used: {reason}")]
    Unavailable { url: String, reason: String },
}

/// The fetch side of [`Auth`]; the token itself is in `Auth::current`.
pub(super) struct Cached {
    refresh_at: Instant,
    generation: u64,
    /// A fetch failed (fatal for the run): every request waiting for the
    /// lock gets this at once instead of fetching again in turn.
    failed: Option<AuthError>,
}

/// Hands out bearer tokens: one fetch at a time however many requests wait,
/// refreshed ahead of expiry and after a 401.
pub struct Auth {
    source: TokenSource,
    http: reqwest::Client,
    token_url: String,
    /// The client credentials as messages name them.
    client_names: String,
    send_grant_type: AtomicBool,
    /// The proxy the token endpoint is reached through, if any.
    proxy: Option<Proxy>,
    cache: tokio::sync::Mutex<Cached>,
    /// The newest token and the moment requests stop going out with it
    /// (past `refresh_at`, short of expiry; `None`: never), `None` before
    /// the first fetch and after a 401. Apart from `cache`, which a fetch
    /// holds for its whole length; replaced only under it.
    current: std::sync::Mutex<Option<(Bearer, Option<Instant>)>>,
    /// The newest token generation the API has accepted.
    accepted: AtomicU64,
    fetches: AtomicU64,
}

#[derive(Deserialize)]
pub(super) struct TokenResponse {
    access_token: String,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    pub(super) expires_in: Option<f64>,
}

/// `expires_in` as a number, or as a string holding one (`"3599"`, as
/// some identity providers send it); anything else counts as absent.
pub(super) fn number_or_numeric_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<f64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    })
}

#[derive(Deserialize)]
pub(super) struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

/// The lifetime `expires_in` announces, between a second and a day (300 s
/// when absent or unreadable).
pub fn token_lifetime(expires_in: Option<f64>) -> Duration {
    expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s.min(86_400.0)).ok())
        .unwrap_or(Duration::from_secs(300))
        .clamp(Duration::from_secs(1), Duration::from_secs(86_400))
}

/// How long before `expires_in` runs out a token is replaced.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(60))
}

impl Auth {
    pub(super) fn new(
        source: TokenSource,
        names: &CredentialNames,
        http: reqwest::Client,
        settings: &ApiSettings,
    ) -> Result<Auth> {
        let generation = 0;
        let bearer = match &source {
            TokenSource::Static(t) => Some(Bearer::new(t, generation).ok_or_else(|| {
                anyhow::anyhow!(
                    "{} contains characters not allowed in a header",
                    names.access_token
                )
            })?),
            TokenSource::Client { .. } => None,
        };
        Ok(Auth {
            source,
            client_names: format!("{} and {}", names.client_id, names.client_secret),
            http,
            token_url: settings.token_url.clone(),
            send_grant_type: AtomicBool::new(settings.send_grant_type),
            proxy: proxy_of(settings, &settings.token_url),
            current: std::sync::Mutex::new(bearer.map(|b| (b, None))),
            cache: tokio::sync::Mutex::new(Cached {
                refresh_at: Instant::now() + Duration::from_secs(10 * 365 * 86_400),
                generation,
                failed: None,
            }),
            accepted: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        })
    }

    /// Whether a refused token can be replaced by a fresh one.
    pub fn can_refresh(&self) -> bool {
        matches!(self.source, TokenSource::Client { .. })
    }

    /// Number of tokens fetched so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A token valid for a while yet.
    pub async fn bearer(&self) -> Result<Bearer, AuthError> {
        let mut cache = self.cache.lock().await;
        if self.fresh(&cache)
            && let Some((bearer, _)) = self.current.lock().ok().and_then(|c| c.clone())
        {
            return Ok(bearer);
        }
        if let Some(failed) = &cache.failed {
            return Err(failed.clone());
        }
        let (token, lifetime) = match self.fetch().await {
            Ok(t) => t,
            Err(e) => {
                cache.failed = Some(e.clone());
                return Err(e);
            }
        };
        cache.generation += 1;
        let now = Instant::now();
        let margin = refresh_margin(lifetime);
        cache.refresh_at = now
            .checked_add(lifetime.saturating_sub(margin))
            .unwrap_or(now);
        let Some(bearer) = Bearer::new(&token, cache.generation) else {
            let e = AuthError::Unavailable {
                url: self.token_url.clone(),
                reason: "the token it issued contains characters not allowed in a header".into(),
            };
            cache.failed = Some(e.clone());
            return Err(e);
        };
        // A past instant, not "never", if the lifetime overflows.
        let until = now
            .checked_add(lifetime.saturating_sub(margin / 2))
            .unwrap_or(now);
        self.publish(Some((bearer.clone(), Some(until))));
        Ok(bearer)
    }

    /// Whether the cached token is not yet due for refresh (a static
    /// token never is).
    fn fresh(&self, cache: &Cached) -> bool {
        Instant::now() < cache.refresh_at || !self.can_refresh()
    }

    fn publish(&self, current: Option<(Bearer, Option<Instant>)>) {
        if let Ok(mut slot) = self.current.lock() {
            *slot = current;
        }
    }

    /// The token a request whose slot has come goes out with, without
    /// waiting: the newest one, unless refused or within half the refresh
    /// margin of expiry. Past its refresh time it still serves while the
    /// next one is fetched, so slots do not pass while requests wait for a
    /// fetch. `None` if there is no such token.
    pub fn usable(&self) -> Option<Bearer> {
        let current = self.current.lock().ok()?;
        match current.as_ref()? {
            (bearer, None) => Some(bearer.clone()),
            (bearer, Some(until)) if Instant::now() < *until => Some(bearer.clone()),
            _ => None,
        }
    }

    /// The API accepted the token of `generation` (it answered a request
    /// sent with it, other than 401).
    pub fn accepted(&self, generation: u64) {
        self.accepted.fetch_max(generation, Ordering::Relaxed);
    }

    /// Whether the API accepted the token of `generation` or a newer one:
    /// a 401 for it then means the token ran out early (revoked, clocks
    /// apart), not that the client credentials are refused.
    pub fn accepted_since(&self, generation: u64) -> bool {
        self.accepted.load(Ordering::Relaxed) >= generation
    }

    /// Drops the token of `generation` after it was refused, unless a newer
    /// one was fetched meanwhile (many requests may report the same 401):
    /// at once, not after a fetch in progress, so that no request goes with
    /// it meanwhile; the next [`Auth::bearer`] fetches another.
    pub fn invalidate(&self, generation: u64) {
        if !self.can_refresh() {
            return;
        }
        if let Ok(mut current) = self.current.lock()
            && current
                .as_ref()
                .is_some_and(|(b, _)| b.generation == generation)
        {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<(Secret, Duration), AuthError> {
        let TokenSource::Client {
            client_id,
            client_secret,
        } = &self.source
        else {
            return Err(AuthError::Unavailable {
                url: self.token_url.clone(),
                reason: "no client credentials".into(),
            });
        };
        let mut last = String::new();
        for attempt in 1..=4u32 {
            if attempt > 1 {
                tokio::time::sleep(retry::backoff(
                    attempt - 1,
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                    1.0,
                ))
                .await;
            }
            let with_grant = self.send_grant_type.load(Ordering::Relaxed);
            let mut form = vec![
                ("client_id", client_id.expose()),
                ("client_secret", client_secret.expose()),
            ];
            if with_grant {
                form.push(("grant_type", "client_credentials"));
            }
            let response = match self.http.post(&self.token_url).form(&form).send().await {
                Ok(r) => r,
                Err(e) => {
                    let (reason, give_up) = self.unanswered(&e);
                    last = reason;
                    if give_up {
                        break;
                    }
                    continue;
                }
            };
            match self.read_answer(response, with_grant).await {
                TokenAnswer::Token(token) => return Ok(token),
                TokenAnswer::Again(Some(reason)) => last = reason,
                TokenAnswer::Again(None) => {}
                TokenAnswer::Failed(error) => return Err(error),
            }
        }
        Err(AuthError::Unavailable {
            url: self.token_url.clone(),
            reason: last,
        })
    }

    /// Why a token request got no answer, and whether trying again is
    /// pointless (a certificate, a proxy).
    fn unanswered(&self, e: &reqwest::Error) -> (String, bool) {
        let failure = transport_failure(e, self.proxy.as_ref());
        let mut reason = describe_failure(failure, e, self.proxy.as_ref());
        if failure == TransportFailure::Tls {
            reason.push_str(
                "; if its certificate is signed by a private CA, trust that CA (the \
                 system store, or SSL_CERT_FILE / SSL_CERT_DIR naming a PEM file or \
                 directory)",
            );
        }
        let give_up = failure.permanent() || failure == TransportFailure::Proxy;
        (reason, give_up)
    }

    /// What the token endpoint's answer means: a token, a reason to ask
    /// again (a 429 or 5xx, a body cut short, a gateway that adds
    /// grant_type itself), or a refusal.
    async fn read_answer(&self, response: reqwest::Response, with_grant: bool) -> TokenAnswer {
        let unavailable = |reason: String| {
            TokenAnswer::Failed(AuthError::Unavailable {
                url: self.token_url.clone(),
                reason,
            })
        };
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| format!(" to {}", retry::one_line(l.split('?').next().unwrap_or(l))))
                .unwrap_or_default();
            return unavailable(format!(
                "it answered a redirect (HTTP {status}{to}): the token URL is probably \
                 wrong; check --token-url (token endpoints answer a POST directly)"
            ));
        }
        let body = match read_bounded(response).await {
            Ok(b) => b,
            Err(reason) => return TokenAnswer::Again(Some(reason)),
        };
        if status == 200 {
            return match serde_json::from_slice::<TokenResponse>(&body) {
                Ok(parsed) => {
                    self.fetches.fetch_add(1, Ordering::Relaxed);
                    let lifetime = token_lifetime(parsed.expires_in);
                    TokenAnswer::Token((Secret::new(parsed.access_token), lifetime))
                }
                Err(e) => unavailable(format!("unreadable token response ({e})")),
            };
        }
        let error: Option<TokenError> = serde_json::from_slice(&body).ok();
        let (code, description) = error
            .map(|e| {
                (
                    e.error.unwrap_or_default(),
                    e.error_description.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        if status == 400 && with_grant && description.contains("duplicated parameter") {
            // The gateway adds grant_type itself (domain note §4).
            self.send_grant_type.store(false, Ordering::Relaxed);
            tracing::info!("token endpoint adds grant_type itself; no longer sending it");
            return TokenAnswer::Again(None);
        }
        if status == 429 || status >= 500 {
            return TokenAnswer::Again(Some(format!("HTTP {status}")));
        }
        let detail = match (code.is_empty(), description.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(" {code}"),
            (_, false) => format!(" {code}: {description}"),
        };
        TokenAnswer::Failed(AuthError::Refused {
            status,
            detail,
            check: self.client_names.clone(),
        })
    }
}

/// What one answer of the token endpoint comes to.
enum TokenAnswer {
    Token((Secret, Duration)),
    /// Worth asking again; the reason, if any, stands if no later attempt
    /// gets further.
    Again(Option<String>),
    Failed(AuthError),
}
