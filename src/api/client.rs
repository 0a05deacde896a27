//! The HTTP client and what its failures mean: settings (timeouts,
//! proxies, loopback), the proxy in use, a transport error classified once
//! into a [`TransportFailure`] with a reason that names the cause.

use super::*;

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
pub(super) fn local_only(settings: &ApiSettings) -> bool {
    is_loopback_url(&settings.base_url) && is_loopback_url(&settings.token_url)
}

/// The proxy the client will use for `url`, if any.
pub(super) fn proxy_of(settings: &ApiSettings, url: &str) -> Option<Proxy> {
    if local_only(settings) {
        return None;
    }
    proxy_for(url, |name| std::env::var(name).ok())
}

pub(super) fn http_client(settings: &ApiSettings) -> Result<reqwest::Client> {
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
pub(super) fn describe_failure(
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
pub(super) fn transport_reason(e: &reqwest::Error) -> String {
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
