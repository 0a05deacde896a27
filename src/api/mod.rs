//! The HTTP side: credentials, the OAuth2 token, and one `POST /track-document`.
//!
//! [`Api::track`] sends one request and turns whatever comes back (an
//! answer, a timeout, a dropped connection) into a [`Verdict`]; deciding
//! what to do next is the dispatcher's job.
//!
//! - `credentials`: the key and the token's source, by name, never a flag;
//! - `token`: the bearer token, fetched, cached and renewed;
//! - `client`: the HTTP client, proxies, and transport failures classified.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use crate::ratelimit;
use crate::retry::{self, TransportFailure, Verdict};
use crate::secret::Secret;
use crate::spec;

mod client;
mod credentials;
mod token;

pub use client::*;
pub use credentials::*;
pub use token::*;

/// Largest answer body read; anything bigger is refused unread.
pub const MAX_BODY_BYTES: usize = 1 << 20;

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

#[cfg(test)]
mod tests;
