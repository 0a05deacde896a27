//! `trackmass sandbox`: serve the emulator until Ctrl-C or SIGTERM (exit 0).

use anyhow::{Context, Result};

use crate::cli::SandboxArgs;
use crate::error::Exit;
use crate::sandbox;
use crate::sandbox::{Faults, Quota, RateLimit, Webhooks};

pub async fn execute(args: &SandboxArgs) -> Result<Exit> {
    let stop = super::stop_signal();
    let config = config_from(args);
    let sb = sandbox::start(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    super::print_stdout(&format!(
        "trackmass sandbox listening on http://{addr}\n  \
         base URL   {}\n  \
         token URL  {}\n  \
         credentials: TRACKMASS_API_KEY={} TRACKMASS_CLIENT_ID={} TRACKMASS_CLIENT_SECRET={}\n  \
         ledger     http://{addr}/_sandbox/stats\n",
        sb.base_url(),
        sb.token_url(),
        sandbox::API_KEY,
        sandbox::CLIENT_ID,
        sandbox::CLIENT_SECRET,
        addr = sb.addr(),
    ));
    tokio::select! {
        served = sb.serve_forever() => served.context("the sandbox stopped")?,
        () = stop => {}
    }
    Ok(Exit::Success)
}

/// The sandbox's configuration from its flags: `--chaos` first, then each
/// explicit fault flag over it.
pub fn config_from(args: &SandboxArgs) -> sandbox::Config {
    let base = if args.faults.chaos {
        Faults::chaos()
    } else {
        Faults::default()
    };
    let faults = Faults {
        latency: args.faults.latency.unwrap_or(base.latency),
        latency_spread: args.faults.latency_spread.unwrap_or(base.latency_spread),
        status_429: args.faults.fault_429.unwrap_or(base.status_429),
        status_500: args.faults.fault_500.unwrap_or(base.status_500),
        status_502: args.faults.fault_502.unwrap_or(base.status_502),
        status_503: args.faults.fault_503.unwrap_or(base.status_503),
        status_504: args.faults.fault_504.unwrap_or(base.status_504),
        drop: args.faults.fault_drop.unwrap_or(base.drop),
        hang: args.faults.fault_hang.unwrap_or(base.hang),
        hang_for: args.faults.hang_for.unwrap_or(base.hang_for),
        malformed: args.faults.fault_malformed.unwrap_or(base.malformed),
        truncate: args.faults.fault_truncate.unwrap_or(base.truncate),
    };
    sandbox::Config {
        seed: args.seed,
        token_ttl: args.token_ttl,
        token_revoked_after: args.token_revoked_after,
        token_latency: args.token_latency,
        gateway_adds_grant_type: args.gateway_adds_grant_type,
        unknown_rate: args.unknown_rate,
        rate_limit: args.gateway.rate_limit.map(|r| RateLimit {
            calls: r.count as u32,
            period: r.period,
        }),
        rate_limit_kind: args.gateway.rate_limit_kind,
        rate_limit_headers: args.gateway.rate_limit_headers,
        quota: args.gateway.quota.map(|calls| Quota {
            calls,
            period: args.gateway.quota_period,
        }),
        faults,
        webhooks: args
            .webhooks
            .deliver_webhooks_to
            .clone()
            .map(|target| Webhooks {
                delay: args.webhooks.webhook_delay,
                retries: args.webhooks.webhook_retries,
                backoff: args.webhooks.webhook_backoff,
                timeout: args.webhooks.webhook_timeout,
                duplicates: args.webhooks.webhook_duplicates,
                events: args.webhooks.webhook_events,
                spacing: args.webhooks.webhook_spacing,
                ..Webhooks::to(target)
            }),
        ..sandbox::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn config(args: &[&str]) -> sandbox::Config {
        let mut full = vec!["trackmass", "sandbox"];
        full.extend_from_slice(args);
        let Command::Sandbox(a) = Cli::try_parse_from(full).unwrap().command else {
            panic!("not sandbox")
        };
        config_from(&a)
    }

    #[test]
    fn chaos_is_a_preset_that_flags_override() {
        let c = config(&["--chaos", "--fault-503", "0", "--latency", "5ms"]);
        assert_eq!(c.faults.status_503, 0.0);
        assert_eq!(c.faults.latency, std::time::Duration::from_millis(5));
        assert_eq!(c.faults.status_500, Faults::chaos().status_500);
        assert_eq!(config(&[]).faults, Faults::default());
    }

    #[test]
    fn gateway_limits_from_flags() {
        let c = config(&[
            "--rate-limit",
            "600/min",
            "--quota",
            "10",
            "--quota-period",
            "1h",
        ]);
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                calls: 600,
                period: std::time::Duration::from_secs(60)
            })
        );
        assert_eq!(
            c.quota,
            Some(Quota {
                calls: 10,
                period: std::time::Duration::from_secs(3600)
            })
        );
    }
}
