//! `trackmass sandbox`'s flags: the emulator's own, then its gateway,
//! faults and webhooks, each a group with its heading.

use super::*;

pub(super) const SANDBOX_EXAMPLES: &str = "\
Examples:
  trackmass sandbox --listen 127.0.0.1:8080
  TRACKMASS_API_KEY=sandbox-key TRACKMASS_CLIENT_ID=sandbox-client \\
  TRACKMASS_CLIENT_SECRET=sandbox-secret \\
    trackmass run samples/documents.csv \\
      --base-url http://127.0.0.1:8080/api-tracking-code-in-mass/v1 \\
      --token-url http://127.0.0.1:8080/soget-connect/v1/openid-connect/token";

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Seed of the deterministic catalogue and of the fault draws (same
    /// seed, same answers).
    #[arg(long, default_value = "0", value_name = "N")]
    pub seed: u64,

    /// Lifetime of the access tokens it issues.
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub token_ttl: Duration,

    /// Make tokens stop working this long after issue, earlier than their
    /// expires_in says (as when a session is revoked): clients meet 401s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub token_revoked_after: Option<Duration>,

    /// How long the token endpoint takes to answer each request.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub token_latency: Duration,

    /// Make the token endpoint's gateway append grant_type itself, as
    /// SOGET's documented call (without grant_type) suggests it may.
    #[arg(long)]
    pub gateway_adds_grant_type: bool,

    /// Share of document references the service does not know (answered
    /// 400 DOCUMENT_NOT_FOUND), as 0.02 or 2%.
    #[arg(long, default_value = "2%", value_parser = parse_fraction, value_name = "FRACTION")]
    pub unknown_rate: f64,

    #[command(flatten)]
    pub gateway: SandboxGatewayArgs,

    #[command(flatten)]
    pub faults: SandboxFaultArgs,

    #[command(flatten)]
    pub webhooks: SandboxWebhookArgs,
}

/// The sandbox's API Management gateway: rate limit and quota.
#[derive(Debug, Args)]
#[command(next_help_heading = "Gateway")]
pub struct SandboxGatewayArgs {
    /// The gateway's rate limit per subscription key, N/s or N/min: calls
    /// beyond it get 429 with Retry-After.
    #[arg(long, value_parser = parse_whole_rate, value_name = "RATE")]
    pub rate_limit: Option<Rate>,

    /// How --rate-limit counts calls: a sliding window over its period
    /// (APIM's rate-limit-by-key), or a token bucket holding one period's
    /// calls (a burst after an idle spell, then the rate).
    #[arg(long, value_enum, default_value_t = crate::sandbox::LimitKind::Window, value_name = "KIND")]
    pub rate_limit_kind: crate::sandbox::LimitKind,

    /// Answers carry the IETF rate-limit fields: `RateLimit-Policy`
    /// ("sandbox";q=CALLS;w=SECONDS) and `RateLimit` ("sandbox";r=LEFT;
    /// t=SECONDS until calls free). trackmass slows down before a 429 when
    /// it reads them.
    #[arg(long, requires = "rate_limit")]
    pub rate_limit_headers: bool,

    /// The gateway's call quota: once N calls are spent, 403 "Out of call
    /// volume quota" with Retry-After until the period ends.
    #[arg(long, value_name = "N")]
    pub quota: Option<u64>,

    /// Period of --quota, from the first call.
    #[arg(long, default_value = "1day", value_parser = parse_duration, value_name = "DURATION")]
    pub quota_period: Duration,
}

/// Faults the sandbox injects between its gateway and its service.
#[derive(Debug, Args)]
#[command(next_help_heading = "Faults (rates as 0.01 or 1%)")]
pub struct SandboxFaultArgs {
    /// A realistic mix of faults: 20 ms + up to 80 ms latency, 1% 500, 1%
    /// 502, 2% 503, 1% 504, 1% dropped connections, 0.5% answers that never
    /// come, 0.5% malformed and 0.5% truncated 201 bodies. The flags below
    /// override single values.
    #[arg(long)]
    pub chaos: bool,

    /// Fixed delay added to every answer.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub latency: Option<Duration>,

    /// Random extra delay, uniform between zero and this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub latency_spread: Option<Duration>,

    /// Share of 429 answers (Retry-After: 1) whatever the pace, as from a
    /// gateway that throttles for reasons of its own.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_429: Option<f64>,

    /// Share of 500 answers (half of them after the tracking was created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_500: Option<f64>,

    /// Share of 502 answers with a proxy's HTML page (nothing created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_502: Option<f64>,

    /// Share of 503 answers with Retry-After (nothing created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_503: Option<f64>,

    /// Share of 504 answers (half of them after the tracking was created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_504: Option<f64>,

    /// Share of connections closed without an answer (half of them after
    /// the tracking was created).
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_drop: Option<f64>,

    /// Share of answers that never come (for --hang-for, then a 500), to
    /// exercise client timeouts.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_hang: Option<f64>,

    /// How long a hanging answer holds.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub hang_for: Option<Duration>,

    /// Share of 201 answers whose body is not valid JSON.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_malformed: Option<f64>,

    /// Share of 201 answers cut short by a closed connection.
    #[arg(long, value_parser = parse_fraction, value_name = "RATE")]
    pub fault_truncate: Option<f64>,
}

/// The webhook calls the sandbox makes for its trackings.
#[derive(Debug, Args)]
#[command(next_help_heading = "Webhooks (beyond the spec)")]
pub struct SandboxWebhookArgs {
    /// POST the spec's webhook payload (one per handling unit and event) to
    /// this URL plus the path of the url a tracking registered, a little
    /// after its first creation. The spec's url pattern refuses local
    /// addresses; this redirects them, e.g. http://127.0.0.1:8787.
    #[arg(long, value_name = "URL")]
    pub deliver_webhooks_to: Option<String>,

    /// Delay between a creation and its first webhook call.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_delay: Duration,

    /// Retries of a webhook call not answered 2xx in time (then given up).
    #[arg(long, default_value = "5", value_name = "N")]
    pub webhook_retries: u32,

    /// Wait before the first retry of a webhook call, doubling after.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_backoff: Duration,

    /// How long a webhook call waits for its answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_timeout: Duration,

    /// Share of delivered events sent a second time (at-least-once).
    #[arg(long, default_value = "0", value_parser = parse_fraction, value_name = "RATE")]
    pub webhook_duplicates: f64,

    /// Events per unit, 1 to 6: Creation, then Loading, Departure, Arrival,
    /// Discharge, GateOut (the sandbox's invention: only Creation is
    /// documented).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=6), value_name = "N")]
    pub webhook_events: u32,

    /// Between two events of one unit.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub webhook_spacing: Duration,
}

/// A rate with a whole number of calls, as gateways count them.
pub(super) fn parse_whole_rate(s: &str) -> Result<Rate, String> {
    let rate: Rate = s
        .parse()
        .map_err(|e: crate::units::BadValue| e.to_string())?;
    if rate.count.fract() != 0.0 {
        return Err(format!("{s:?}: the gateway counts whole calls per period"));
    }
    Ok(rate)
}
