//! The HTTP side: credentials, the OAuth2 token, and one `POST /track-document`.
//!
//! [`Api::track`] sends one request and turns whatever comes back (an
//! answer, a timeout, a dropped connection) into a [`Verdict`]; deciding
//! what to do next is the dispatcher's job.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use crate::ratelimit;
use crate::retry::{self, TransportFailure, Verdict};
use crate::secret::Secret;
use crate::spec;

/// Largest answer body read; anything bigger is refused unread.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Environment variables holding credentials.
pub const ENV_API_KEY: &str = "TRACKMASS_API_KEY";
pub const ENV_ACCESS_TOKEN: &str = "TRACKMASS_ACCESS_TOKEN";
pub const ENV_CLIENT_ID: &str = "TRACKMASS_CLIENT_ID";
pub const ENV_CLIENT_SECRET: &str = "TRACKMASS_CLIENT_SECRET";

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A ready token (`TRACKMASS_ACCESS_TOKEN`): used as is, never refreshed.
    Static(Secret),
    /// OAuth2 client credentials, exchanged at the token URL.
    Client {
        client_id: Secret,
        client_secret: Secret,
    },
}

/// Everything secret a run needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_key: Secret,
    pub token: TokenSource,
    /// Where each one came from, as messages name it.
    pub names: CredentialNames,
}

/// How messages name each credential: its environment variable, or the
/// key of the configuration file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialNames {
    pub api_key: String,
    pub client_id: String,
    pub client_secret: String,
    pub access_token: String,
}

impl Default for CredentialNames {
    fn default() -> CredentialNames {
        CredentialNames {
            api_key: ENV_API_KEY.into(),
            client_id: ENV_CLIENT_ID.into(),
            client_secret: ENV_CLIENT_SECRET.into(),
            access_token: ENV_ACCESS_TOKEN.into(),
        }
    }
}

/// A credential as looked up, and how messages name where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub name: String,
}

impl Credentials {
    /// Reads credentials with `lookup`, by environment variable name (the
    /// process environment, then the configuration file). Empty values
    /// count as missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<Found>) -> Result<Credentials, String> {
        let mut names = CredentialNames::default();
        let mut get = |var: &str| {
            let found = lookup(var).filter(|f| !f.value.trim().is_empty())?;
            let name = match var {
                ENV_API_KEY => &mut names.api_key,
                ENV_CLIENT_ID => &mut names.client_id,
                ENV_CLIENT_SECRET => &mut names.client_secret,
                _ => &mut names.access_token,
            };
            *name = found.name;
            Some(found.value)
        };
        let api_key = get(ENV_API_KEY);
        let token = get(ENV_ACCESS_TOKEN);
        let client_id = get(ENV_CLIENT_ID);
        let client_secret = get(ENV_CLIENT_SECRET);
        let mut missing = Vec::new();
        if api_key.is_none() {
            missing.push(ENV_API_KEY.to_string());
        }
        let token = match (token, client_id, client_secret) {
            (Some(t), _, _) => Some(TokenSource::Static(Secret::new(t))),
            (None, Some(id), Some(secret)) => Some(TokenSource::Client {
                client_id: Secret::new(id),
                client_secret: Secret::new(secret),
            }),
            (None, Some(_), None) => {
                missing.push(ENV_CLIENT_SECRET.to_string());
                None
            }
            (None, None, Some(_)) => {
                missing.push(ENV_CLIENT_ID.to_string());
                None
            }
            (None, None, None) => {
                missing.push(format!(
                    "{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (or {ENV_ACCESS_TOKEN})"
                ));
                None
            }
        };
        match (api_key, token) {
            (Some(key), Some(token)) if missing.is_empty() => Ok(Credentials {
                api_key: Secret::new(key),
                token,
                names,
            }),
            _ => Err(format!(
                "missing credentials: set {} in the environment \
                 (or try the job without an account: add --sandbox)",
                missing.join(", ")
            )),
        }
    }
}

/// Connection settings that are not secret.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub base_url: String,
    pub token_url: String,
    pub timeout: Duration,
    /// Send `grant_type=client_credentials` with the client credentials.
    pub send_grant_type: bool,
    /// Most idle connections kept open (the concurrency).
    pub pool: usize,
}

/// Whether `url` points at this machine.
pub fn is_loopback_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| match u.host()? {
            url::Host::Domain(d) => Some(d.eq_ignore_ascii_case("localhost")),
            url::Host::Ipv4(ip) => Some(ip.is_loopback()),
            url::Host::Ipv6(ip) => Some(ip.is_loopback()),
        })
        .unwrap_or(false)
}

/// Whether requests bypass the environment's proxy: when both URLs are on
/// this machine.
fn local_only(settings: &ApiSettings) -> bool {
    is_loopback_url(&settings.base_url) && is_loopback_url(&settings.token_url)
}

/// The proxy the client will use for `url`, if any.
fn proxy_of(settings: &ApiSettings, url: &str) -> Option<Proxy> {
    if local_only(settings) {
        return None;
    }
    proxy_for(url, |name| std::env::var(name).ok())
}

fn http_client(settings: &ApiSettings) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("trackmass/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(settings.pool.max(1));
    if local_only(settings) {
        // A proxy from the environment must not capture local traffic.
        builder = builder.no_proxy();
    }
    builder.build().context("cannot build the HTTP client")
}

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
    fn new(token: &Secret, generation: u64) -> Option<Bearer> {
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
struct Cached {
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
struct TokenResponse {
    access_token: String,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    expires_in: Option<f64>,
}

/// `expires_in` as a number, or as a string holding one (`"3599"`, as
/// some identity providers send it); anything else counts as absent.
fn number_or_numeric_string<'de, D: serde::Deserializer<'de>>(
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
struct TokenError {
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
    fn new(
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
                    let failure = transport_failure(&e, self.proxy.as_ref());
                    last = describe_failure(failure, &e, self.proxy.as_ref());
                    if failure == TransportFailure::Tls {
                        last.push_str(
                            "; if its certificate is signed by a private CA, trust that CA (the \
                             system store, or SSL_CERT_FILE / SSL_CERT_DIR naming a PEM file or \
                             directory)",
                        );
                    }
                    if failure.permanent() || failure == TransportFailure::Proxy {
                        break;
                    }
                    continue;
                }
            };
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                let to = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(|l| format!(" to {}", retry::one_line(l.split('?').next().unwrap_or(l))))
                    .unwrap_or_default();
                return Err(AuthError::Unavailable {
                    url: self.token_url.clone(),
                    reason: format!(
                        "it answered a redirect (HTTP {status}{to}): the token URL is probably \
                         wrong; check --token-url (token endpoints answer a POST directly)"
                    ),
                });
            }
            let body = match read_bounded(response).await {
                Ok(b) => b,
                Err(reason) => {
                    last = reason;
                    continue;
                }
            };
            if status == 200 {
                let parsed: TokenResponse =
                    serde_json::from_slice(&body).map_err(|e| AuthError::Unavailable {
                        url: self.token_url.clone(),
                        reason: format!("unreadable token response ({e})"),
                    })?;
                self.fetches.fetch_add(1, Ordering::Relaxed);
                let lifetime = token_lifetime(parsed.expires_in);
                return Ok((Secret::new(parsed.access_token), lifetime));
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
                continue;
            }
            if status == 429 || status >= 500 {
                last = format!("HTTP {status}");
                continue;
            }
            let detail = match (code.is_empty(), description.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!(" {code}"),
                (_, false) => format!(" {code}: {description}"),
            };
            return Err(AuthError::Refused {
                status,
                detail,
                check: self.client_names.clone(),
            });
        }
        Err(AuthError::Unavailable {
            url: self.token_url.clone(),
            reason: last,
        })
    }
}

/// The tracking API.
pub struct Api {
    http: reqwest::Client,
    /// Parsed once: parsing it for every request was a tenth of the
    /// client's work per row.
    endpoint: reqwest::Url,
    api_key: HeaderValue,
    auth: Auth,
    names: CredentialNames,
    /// The proxy requests go through, if any.
    proxy: Option<Proxy>,
}

impl Api {
    pub fn new(settings: &ApiSettings, credentials: Credentials) -> Result<Api> {
        let http = http_client(settings)?;
        let mut api_key = HeaderValue::from_str(credentials.api_key.expose()).map_err(|_| {
            anyhow::anyhow!(
                "{} contains characters not allowed in a header",
                credentials.names.api_key
            )
        })?;
        api_key.set_sensitive(true);
        let endpoint = format!(
            "{}{}",
            settings.base_url.trim_end_matches('/'),
            spec::TRACK_PATH
        );
        let endpoint = reqwest::Url::parse(&endpoint)
            .with_context(|| format!("the API URL {endpoint:?} is not a URL"))?;
        Ok(Api {
            auth: Auth::new(
                credentials.token,
                &credentials.names,
                http.clone(),
                settings,
            )?,
            http,
            endpoint,
            api_key,
            names: credentials.names,
            proxy: proxy_of(settings, &settings.base_url),
        })
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// How messages name the credentials.
    pub fn names(&self) -> &CredentialNames {
        &self.names
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Sends one request body with a token from [`Auth::bearer`] (taken
    /// before the request's rate slot, so that a token fetch never delays
    /// requests into a bunch). With the verdict, the limit the gateway
    /// states (`RateLimit-Policy`, requests per second), if it does.
    pub async fn track(&self, bearer: &Bearer, payload: &str) -> (Verdict, Option<f64>) {
        let sent = self
            .http
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, bearer.header.clone())
            .header(spec::SUBSCRIPTION_KEY_HEADER, self.api_key.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(payload.to_owned())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let failure = transport_failure(&e, self.proxy.as_ref());
                let verdict = Verdict::Unanswered {
                    failure,
                    reason: describe_failure(failure, &e, self.proxy.as_ref()),
                };
                return (verdict, None);
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let stated = response
            .headers()
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
            .and_then(ratelimit::stated);
        let verdict = match read_bounded(response).await {
            Ok(body) => retry::classify(status, retry_after.as_deref(), &body, SystemTime::now()),
            Err(reason) if (200..300).contains(&status) => Verdict::BadResponse {
                http_status: status,
                reason: format!("HTTP {status} but the body could not be read: {reason}"),
            },
            // A 4xx says what it says by its status; its body is only the
            // detail.
            Err(reason) if (400..500).contains(&status) => retry::classify(
                status,
                retry_after.as_deref(),
                format!("(body unreadable: {reason})").as_bytes(),
                SystemTime::now(),
            ),
            Err(reason) => Verdict::Retry {
                http_status: Some(status),
                reason: format!("HTTP {status}, body unreadable: {reason}"),
                retry_after: None,
                throttled: status == 429,
            },
        };
        (verdict, stated)
    }
}

/// Reads a body up to [`MAX_BODY_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if let Some(len) = response.content_length()
        && len > MAX_BODY_BYTES as u64
    {
        return Err(format!(
            "body of {len} bytes is over the {MAX_BODY_BYTES}-byte limit"
        ));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(format!("body is over the {MAX_BODY_BYTES}-byte limit"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_reason(&e)),
        }
    }
}

/// A proxy requests go through, as messages name it: its URL without
/// credentials, and the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub url: String,
    pub variable: String,
}

/// The proxy the environment sets for `url`, as reqwest reads it on Unix
/// (`HTTPS_PROXY`/`HTTP_PROXY` by scheme, then `ALL_PROXY`, lowercase
/// forms too; `NO_PROXY` exempts hosts), to name it when it fails.
pub fn proxy_for(url: &str, env: impl Fn(&str) -> Option<String>) -> Option<Proxy> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let get = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    if let Some(no_proxy) = get("NO_PROXY") {
        let exempt = no_proxy.split(',').map(str::trim).any(|entry| {
            let entry = entry.trim_start_matches('.').to_ascii_lowercase();
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        });
        if exempt {
            return None;
        }
    }
    let scheme_var = if url.scheme() == "https" {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    let (variable, value) = [scheme_var, "ALL_PROXY"]
        .into_iter()
        .find_map(|v| get(v).map(|value| (v.to_string(), value)))?;
    let shown = match reqwest::Url::parse(&value) {
        Ok(mut p) => {
            let _ = p.set_username("");
            let _ = p.set_password(None);
            p.to_string()
        }
        Err(_) => "(unparsable)".to_string(),
    };
    Some(Proxy {
        url: shown,
        variable,
    })
}

/// What a failed request ran into, read once from the client's error.
pub fn transport_failure(e: &reqwest::Error, proxy: Option<&Proxy>) -> TransportFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    let mut dns = false;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                return TransportFailure::TooManyFiles;
            }
            // An io::Error's `source` skips the error it wraps (hyper-rustls
            // wraps rustls's in two of them): look inside.
            let mut inner = io.get_ref();
            while let Some(wrapped) = inner {
                if wrapped.downcast_ref::<rustls::Error>().is_some() {
                    return TransportFailure::Tls;
                }
                inner = wrapped
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::get_ref);
            }
            io_kind.get_or_insert(io.kind());
        }
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return TransportFailure::Tls;
        }
        // hyper-util's resolver says so in its own error, not in a type.
        dns |= cause.to_string().starts_with("dns error");
        source = cause.source();
    }
    if e.is_connect() && proxy.is_some() {
        return TransportFailure::Proxy;
    }
    if e.is_timeout() {
        return TransportFailure::TimedOut;
    }
    if dns {
        return TransportFailure::Dns;
    }
    use std::io::ErrorKind;
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => TransportFailure::Refused,
        Some(
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof,
        ) => TransportFailure::Reset,
        _ if e.is_connect() => TransportFailure::Refused,
        _ if e.is_body() || e.is_decode() => TransportFailure::CutShort,
        _ => TransportFailure::Other,
    }
}

/// The reason of a failure for messages: what happened, and through
/// which proxy when one was used.
fn describe_failure(
    failure: TransportFailure,
    e: &reqwest::Error,
    proxy: Option<&Proxy>,
) -> String {
    let reason = transport_reason(e);
    match (failure, proxy) {
        (TransportFailure::Proxy, Some(p)) => format!(
            "the proxy {} (from {}) could not be used: {reason}; check the proxy or unset {}",
            p.url, p.variable, p.variable
        ),
        _ => reason,
    }
}

/// A short reason for a transport failure, without URLs or secrets.
fn transport_reason(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "answer cut short"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    // The innermost cause says what happened (reset, refused, …).
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    match cause {
        Some(c) if !c.is_empty() => format!("{kind}: {c}"),
        _ => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_for_a_url_is_read_as_reqwest_reads_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let https = "https://api.example.com/v1";
        let p = proxy_for(
            https,
            env(&[("HTTPS_PROXY", "http://user:pw@proxy.corp:3128")]),
        )
        .unwrap();
        assert_eq!(p.url, "http://proxy.corp:3128/", "credentials left out");
        assert_eq!(p.variable, "HTTPS_PROXY");
        let p = proxy_for(
            https,
            env(&[("https_proxy", "http://p:1"), ("ALL_PROXY", "http://q:2")]),
        )
        .unwrap();
        assert_eq!(p.url, "http://p:1/");
        let p = proxy_for(https, env(&[("all_proxy", "http://q:2")])).unwrap();
        assert_eq!(p.variable, "ALL_PROXY");
        assert_eq!(proxy_for(https, env(&[("HTTP_PROXY", "http://p:1")])), None);
        for exempt in [
            "example.com",
            ".example.com",
            "api.example.com",
            "*",
            "x.org, example.com",
        ] {
            let vars: &'static [(&str, &str)] = Box::leak(Box::new([
                ("HTTPS_PROXY", "http://p:1"),
                ("NO_PROXY", exempt),
            ]));
            assert_eq!(proxy_for(https, env(vars)), None, "{exempt}");
        }
        assert!(
            proxy_for(
                https,
                env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "ample.com")])
            )
            .is_some()
        );
    }

    #[test]
    fn expires_in_may_be_a_number_or_a_numeric_string() {
        let parse = |json: &str| {
            serde_json::from_str::<TokenResponse>(json)
                .unwrap()
                .expires_in
        };
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":3599}"#),
            Some(3599.0)
        );
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":"3599"}"#),
            Some(3599.0)
        );
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":" 60 "}"#),
            Some(60.0)
        );
        assert_eq!(parse(r#"{"access_token":"t","expires_in":"soon"}"#), None);
        assert_eq!(parse(r#"{"access_token":"t","expires_in":null}"#), None);
        assert_eq!(parse(r#"{"access_token":"t"}"#), None);
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<Found> + 'a {
        move |k| {
            pairs.iter().find(|(n, _)| *n == k).map(|(n, v)| Found {
                value: v.to_string(),
                name: n.to_string(),
            })
        }
    }

    #[test]
    fn a_ready_token_that_cannot_go_in_a_header_is_refused_at_start() {
        let credentials = Credentials {
            api_key: Secret::new("k"),
            token: TokenSource::Static(Secret::new("bad\ntoken")),
            names: CredentialNames::default(),
        };
        let settings = ApiSettings {
            base_url: "http://127.0.0.1:1".into(),
            token_url: "http://127.0.0.1:1/token".into(),
            timeout: Duration::from_secs(1),
            send_grant_type: true,
            pool: 1,
        };
        let Err(err) = Api::new(&settings, credentials) else {
            panic!("a token with a line break was accepted");
        };
        let err = err.to_string();
        assert!(err.contains(ENV_ACCESS_TOKEN), "{err}");
        assert!(!err.contains("bad"), "{err}");
    }

    #[test]
    fn credentials_are_named_where_they_were_found() {
        let lookup = |var: &str| {
            let name = match var {
                ENV_API_KEY => "credentials.api_key in t.toml".to_string(),
                _ => var.to_string(),
            };
            let value = if var == ENV_ACCESS_TOKEN { "" } else { "v" };
            Some(Found {
                value: value.into(),
                name,
            })
        };
        let c = Credentials::from_lookup(lookup).unwrap();
        assert_eq!(c.names.api_key, "credentials.api_key in t.toml");
        assert_eq!(c.names.client_id, ENV_CLIENT_ID);
        // An empty token is missing: client credentials are used.
        assert!(matches!(c.token, TokenSource::Client { .. }));
    }

    #[test]
    fn credentials_from_client_id_and_secret() {
        let c = Credentials::from_lookup(env(&[
            (ENV_API_KEY, "k"),
            (ENV_CLIENT_ID, "id"),
            (ENV_CLIENT_SECRET, "s"),
        ]))
        .unwrap();
        assert!(matches!(c.token, TokenSource::Client { .. }));
    }

    #[test]
    fn a_ready_token_wins_over_client_credentials() {
        let c = Credentials::from_lookup(env(&[
            (ENV_API_KEY, "k"),
            (ENV_ACCESS_TOKEN, "t"),
            (ENV_CLIENT_ID, "id"),
        ]))
        .unwrap();
        assert!(matches!(c.token, TokenSource::Static(_)));
    }

    #[test]
    fn missing_credentials_name_the_variables_and_the_sandbox() {
        let err = Credentials::from_lookup(env(&[])).unwrap_err();
        for name in [
            ENV_API_KEY,
            ENV_CLIENT_ID,
            ENV_CLIENT_SECRET,
            ENV_ACCESS_TOKEN,
            "--sandbox",
        ] {
            assert!(err.contains(name), "{err} lacks {name}");
        }
        let err = Credentials::from_lookup(env(&[(ENV_API_KEY, "k"), (ENV_CLIENT_ID, "id")]))
            .unwrap_err();
        assert!(
            err.contains(ENV_CLIENT_SECRET) && !err.contains(ENV_API_KEY),
            "{err}"
        );
        let err = Credentials::from_lookup(env(&[(ENV_API_KEY, " "), (ENV_ACCESS_TOKEN, "t")]))
            .unwrap_err();
        assert!(err.contains(ENV_API_KEY), "{err}");
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:8080/x"));
        assert!(is_loopback_url("http://[::1]:1/"));
        assert!(is_loopback_url("http://localhost/"));
        assert!(!is_loopback_url("http://10.0.0.1/"));
        assert!(!is_loopback_url(
            "https://soget-api-integration.azure-api.net/"
        ));
        assert!(!is_loopback_url("not a url"));
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        assert_eq!(token_lifetime(Some(300.0)), Duration::from_secs(300));
        assert_eq!(token_lifetime(None), Duration::from_secs(300));
        assert_eq!(token_lifetime(Some(1e300)), Duration::from_secs(86_400));
        assert_eq!(token_lifetime(Some(f64::NAN)), Duration::from_secs(300));
        assert_eq!(token_lifetime(Some(0.01)), Duration::from_secs(1));
    }

    #[test]
    fn refresh_margin_is_a_fifth_up_to_a_minute() {
        assert_eq!(
            refresh_margin(Duration::from_secs(300)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
