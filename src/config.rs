//! The validated settings of a run, built from the command line.
//!
//! [`RunConfig`] is what the rest of the program reads; it holds no secret
//! and is stored in the state file (`runs.config`) as JSON so that a run
//! can be explained later.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{DefaultArgs, ProgressMode, RunArgs};
use crate::error::UsageError;
use crate::input::{Defaults, ReadOptions};
use crate::units::Rate;

/// How requests are sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatchSettings {
    pub concurrency: usize,
    pub rate: Rate,
    pub burst: u32,
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    pub max_attempts: u32,
    #[serde(with = "human_duration")]
    pub backoff_base: Duration,
    #[serde(with = "human_duration")]
    pub backoff_cap: Duration,
    /// Failures in a row of one kind that stop the run.
    pub trip_after: u32,
    /// The receiver's path token, put back into request bodies that
    /// register its URL (the state file holds a placeholder). Read from
    /// its file at each start, never stored with the settings.
    #[serde(skip)]
    pub webhook_token: Option<crate::webhooks::token::Token>,
}

/// Everything `trackmass run` needs except credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub input: PathBuf,
    pub state: PathBuf,
    pub out: PathBuf,
    pub failures: PathBuf,
    pub summary: Option<PathBuf>,
    #[serde(default)]
    pub metrics: Option<PathBuf>,
    /// The directory the run was started in: `resume` finds relative
    /// paths from there.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    pub column: Option<String>,
    pub delimiter: Option<char>,
    /// `--encoding`, by its WHATWG name.
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub sheet: Option<String>,
    pub defaults: Defaults,
    pub force: bool,
    #[serde(default)]
    pub durability: crate::store::Durability,
    #[serde(with = "human_duration_opt")]
    pub max_duration: Option<Duration>,
    pub dispatch: DispatchSettings,
    pub base_url: String,
    pub token_url: String,
    pub send_grant_type: bool,
    pub sandbox: bool,
    pub progress: ProgressMode,
    #[serde(with = "human_duration")]
    pub progress_interval: Duration,
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> Result<RunConfig, UsageError> {
        let mut defaults = defaults_from(&args.defaults)?;
        if args.webhooks {
            defaults.url = Some(registered_url(&args.files.state)?);
            defaults.validate().map_err(|e| UsageError(e.to_string()))?;
        }
        if !args.sandbox {
            check_url(
                "--base-url",
                &args.api.base_url,
                args.api.allow_insecure_http,
            )?;
            check_url(
                "--token-url",
                &args.api.token_url,
                args.api.allow_insecure_http,
            )?;
        }
        for (flag, path) in [
            ("--out", &args.files.out),
            ("--failures", &args.files.failures),
        ] {
            if path == &args.files.state {
                return Err(UsageError(format!(
                    "{flag} {} is the state file; pick another path",
                    path.display()
                )));
            }
        }
        let discarded = |p: &std::path::Path| {
            crate::output::is_stdout(p)
                || matches!(crate::output::target(p), Ok(crate::output::Target::Discard))
        };
        if args.files.out == args.files.failures && !discarded(&args.files.out) {
            return Err(UsageError(
                "--out and --failures name the same file; pick two paths".into(),
            ));
        }
        let d = &args.dispatch;
        if d.backoff_cap < d.backoff_base {
            return Err(UsageError(
                "--backoff-cap must not be shorter than --backoff-base".into(),
            ));
        }
        Ok(RunConfig {
            input: args.input.clone(),
            state: args.files.state.clone(),
            out: args.files.out.clone(),
            failures: args.files.failures.clone(),
            summary: args.files.summary.clone(),
            metrics: args.files.metrics.clone(),
            workdir: std::env::current_dir().ok(),
            column: args.read.column.clone(),
            delimiter: args.read.delimiter.map(char::from),
            encoding: args.read.encoding.map(|e| e.name().to_string()),
            sheet: args.read.sheet.clone(),
            defaults,
            force: args.force,
            durability: args.files.durability,
            max_duration: args.max_duration,
            dispatch: DispatchSettings {
                concurrency: usize::from(d.concurrency),
                rate: d.rate,
                burst: d.burst,
                timeout: d.timeout,
                max_attempts: d.max_attempts,
                backoff_base: d.backoff_base,
                backoff_cap: d.backoff_cap,
                trip_after: d.trip_after,
                webhook_token: None,
            },
            base_url: args.api.base_url.trim().to_string(),
            token_url: args.api.token_url.trim().to_string(),
            send_grant_type: !args.api.no_grant_type,
            sandbox: args.sandbox,
            progress: args.progress,
            progress_interval: args.progress_interval,
        })
    }

    /// Makes the relative paths of a stored configuration point where they
    /// pointed when the run started, wherever `resume` is run from.
    pub fn rebase(&mut self) {
        let Some(base) = self.workdir.clone() else {
            return;
        };
        if std::env::current_dir().is_ok_and(|here| here == base) {
            return;
        }
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() && !crate::output::is_stdout(p) {
                *p = base.join(&*p);
            }
        };
        rebase(&mut self.input);
        rebase(&mut self.out);
        rebase(&mut self.failures);
        for p in [&mut self.summary, &mut self.metrics].into_iter().flatten() {
            rebase(p);
        }
    }

    /// Whether one of the outputs is standard output (`-`): the summary
    /// line then goes to stderr, so that stdout holds that file alone.
    pub fn writes_stdout(&self) -> bool {
        [&self.out, &self.failures]
            .into_iter()
            .chain(self.summary.iter())
            .chain(self.metrics.iter())
            .any(|p| crate::output::is_stdout(p))
    }

    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            column: self.column.clone(),
            delimiter: self.delimiter.map(|c| c as u8),
            encoding: self
                .encoding
                .as_deref()
                .and_then(|name| encoding_rs::Encoding::for_label(name.as_bytes())),
            sheet: self.sheet.clone(),
        }
    }
}

/// The request defaults given by flags, trimmed and checked against the
/// spec (a bad `--way` is a usage error, not a reject on every row).
pub fn defaults_from(args: &DefaultArgs) -> Result<Defaults, UsageError> {
    let trimmed = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let defaults = Defaults {
        way: trimmed(&args.way),
        place: trimmed(&args.place),
        agent_code: trimmed(&args.agent_code),
        url: trimmed(&args.webhook_url),
    };
    defaults.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(defaults)
}

/// The URL `trackmass webhooks url` printed for `state`, for `--webhooks`.
fn registered_url(state: &std::path::Path) -> Result<String, UsageError> {
    let registration = crate::webhooks::token::load_registration(state)
        .map_err(|e| UsageError(format!("--webhooks: {e:#}")))?;
    match registration {
        Some(r) => match &r.base {
            Some(base) => Ok(r.url(base)),
            None => Err(UsageError(format!(
                "--webhooks: {} records no BASE; run `trackmass webhooks url BASE --state {}` \
                 once more",
                crate::webhooks::token::path_for(state).display(),
                state.display()
            ))),
        },
        None => Err(UsageError(format!(
            "--webhooks: no receiver for {}: run `trackmass webhooks url BASE --state {}` \
             first, and start `trackmass webhooks serve` behind BASE",
            state.display(),
            state.display()
        ))),
    }
}

/// An API URL must be https, or http on this machine, or http with
/// `--allow-insecure-http`: tokens and keys travel in its headers.
pub fn check_url(flag: &str, value: &str, allow_insecure: bool) -> Result<(), UsageError> {
    let url = reqwest::Url::parse(value.trim())
        .map_err(|e| UsageError(format!("{flag} {value:?} is not a URL ({e})")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure || crate::api::is_loopback_url(value.trim()) => Ok(()),
        "http" => Err(UsageError(format!(
            "{flag} {value} is plain http: credentials would cross the network unencrypted; \
             use https, or pass --allow-insecure-http if you really mean it"
        ))),
        other => Err(UsageError(format!(
            "{flag} {value:?}: unsupported scheme {other:?} (use https)"
        ))),
    }
}

/// Serializes durations the way they are written on the command line.
mod human_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod human_duration_opt {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn config(args: &[&str]) -> Result<RunConfig, UsageError> {
        let mut full = vec!["trackmass", "run", "in.csv"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(full).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        RunConfig::from_args(&run)
    }

    #[test]
    fn plain_http_is_refused_off_this_machine() {
        let err = config(&["--base-url", "http://api.example.com/v1"]).unwrap_err();
        assert!(err.0.contains("--allow-insecure-http"), "{}", err.0);
        assert!(config(&["--base-url", "http://127.0.0.1:9/v1"]).is_ok());
        assert!(
            config(&[
                "--base-url",
                "http://api.example.com/v1",
                "--allow-insecure-http"
            ])
            .is_ok()
        );
        assert!(config(&["--token-url", "ftp://x"]).is_err());
    }

    #[test]
    fn bad_defaults_are_usage_errors() {
        let err = config(&["--way", "Sideways"]).unwrap_err();
        assert!(err.0.contains("--way"), "{}", err.0);
        let c = config(&["--way", "export", "--place", " MTDF "]).unwrap();
        assert_eq!(c.defaults.place.as_deref(), Some("MTDF"));
    }

    #[test]
    fn output_paths_must_differ() {
        assert!(config(&["--out", "trackmass.db"]).is_err());
        assert!(config(&["--out", "a.csv", "--failures", "a.csv"]).is_err());
    }

    #[test]
    fn config_serializes_without_secrets_and_readably() {
        let c = config(&["--rate", "600/min", "--timeout", "20s"]).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["dispatch"]["rate"], "600/min");
        assert_eq!(json["dispatch"]["timeout"], "20s");
    }

    #[test]
    fn a_stored_config_reads_back_the_same() {
        let c = config(&[
            "--rate",
            "600/min",
            "--max-duration",
            "6h",
            "--way",
            "Import",
        ])
        .unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: RunConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.max_duration, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(back.dispatch.rate, c.dispatch.rate);
    }
}
