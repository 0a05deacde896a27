//! The per-row attempt policy: what one answer means for its row, given
//! what the row went through and what the run knows at that moment. Pure
//! and tested as a table; `engine::dispatch`'s `send_one` is the short driver that
//! does what it says (records, sleeps, renews the token, stops the run).

use std::time::Duration;

use crate::api::CredentialNames;
use crate::ledger::Status;
use crate::pace::Throttle;
use crate::retry::{Credential, FailureKind, TransportFailure, Verdict};
use crate::store::Outcome;

/// Most fresh tokens one row asks for after 401s.
pub const MAX_TOKEN_RENEWALS: u32 = 4;

/// What a row went through in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Transient failures other than 429s: those count against
    /// `--max-attempts`. A 429 is the run's pace, not the row's fault.
    pub failures: u32,
    /// Fresh tokens fetched after this row's 401s.
    pub renewals: u32,
    /// A request for the row may have reached the service unanswered (in
    /// this run, or before it): its next request is a re-send.
    pub maybe_sent: bool,
}

/// What the run knows when an answer comes.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The row's input line, for messages.
    pub line: u64,
    pub max_attempts: u32,
    /// The longest `Retry-After` worth waiting for.
    pub longest_wait: Duration,
    /// The credentials can give a fresh token (client credentials).
    pub can_refresh: bool,
    /// The API accepted this request's token, or a newer one, meanwhile.
    pub token_accepted_since: bool,
    /// The pace's reaction to this answer, if it is a 429.
    pub throttle: Option<Throttle>,
    /// The backoff for this row's next failure (drawn by the driver).
    pub backoff: Duration,
    pub names: &'a CredentialNames,
    pub endpoint: &'a str,
}

/// The row's next step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Its final outcome: recorded, done.
    Finish(Outcome),
    /// Its attempts ran out: `exhausted`, unless the breaker takes it for a
    /// victim of an outage (then it stays pending).
    RanOut(Outcome),
    /// The token was refused: drop it, then go again through the gate.
    Renew,
    /// Go again through the gate at once (a pause in force covers it).
    Again,
    /// Wait this long, then go again.
    Wait(Duration),
    /// Stop the run: the row goes back to pending, and this is why.
    Stop(String),
}

/// What the breaker counts this answer as, if it is a transient failure.
pub fn failure_kind(verdict: &Verdict) -> Option<FailureKind> {
    match verdict {
        Verdict::Unanswered { failure, .. } if !failure.permanent() => {
            Some(FailureKind::Transport(*failure))
        }
        Verdict::Retry { http_status, .. } => Some(FailureKind::Http(http_status.unwrap_or(0))),
        _ => None,
    }
}

fn failed(
    status: Status,
    http_status: Option<u16>,
    code: &str,
    message: String,
    details: &str,
) -> Outcome {
    Outcome::Failed {
        status,
        http_status,
        code: code.to_string(),
        message,
        details: details.to_string(),
    }
}

/// The next step of a row after `verdict`; updates what the row went
/// through.
pub fn next(verdict: Verdict, row: &mut Attempts, facts: &Facts<'_>) -> Step {
    match verdict {
        Verdict::Created { tracking_id, units } => {
            Step::Finish(Outcome::Tracked { tracking_id, units })
        }
        Verdict::BadResponse {
            http_status,
            reason,
        } => Step::Finish(failed(
            Status::BadResponse,
            Some(http_status),
            "",
            reason,
            "",
        )),
        Verdict::RowError {
            http_status,
            code,
            message,
            details,
        } => Step::Finish(failed(
            Status::Failed,
            Some(http_status),
            &code,
            message,
            &details,
        )),
        Verdict::Unauthorized { culprit, message } => unauthorized(culprit, &message, row, facts),
        Verdict::Fatal { message, .. } => Step::Stop(format!(
            "{message}; rows not sent stay pending, rerun to continue"
        )),
        Verdict::Unanswered { failure, reason } if failure.permanent() => {
            Step::Stop(permanent_failure_message(failure, &reason, facts.endpoint))
        }
        Verdict::Unanswered { failure, reason } => {
            row.maybe_sent |= failure.maybe_sent();
            transient(None, reason, None, false, row, facts)
        }
        Verdict::Retry {
            http_status,
            reason,
            retry_after,
            throttled,
        } => {
            row.maybe_sent |= matches!(http_status, Some(500) | Some(504));
            transient(http_status, reason, retry_after, throttled, row, facts)
        }
    }
}

/// A 401. The first one gets a fresh token. A later one does too if the
/// API accepted that token (or a newer one) meanwhile: it ran out while
/// the row waited to retry, the credentials are fine. A fresh token never
/// accepted means refused credentials.
fn unauthorized(culprit: Credential, message: &str, row: &mut Attempts, facts: &Facts<'_>) -> Step {
    let refreshable = culprit == Credential::AccessToken && facts.can_refresh;
    let renew = refreshable
        && row.renewals < MAX_TOKEN_RENEWALS
        && (row.renewals == 0 || facts.token_accepted_since);
    if renew {
        row.renewals += 1;
        return Step::Renew;
    }
    if refreshable && row.renewals >= MAX_TOKEN_RENEWALS && facts.token_accepted_since {
        return Step::Stop(format!(
            "the API refused {} fresh access tokens for line {}, though it accepted them for \
             others: tokens seem to be revoked before their expires_in ({message}); rerun to \
             continue",
            row.renewals, facts.line
        ));
    }
    Step::Stop(unauthorized_message(
        culprit,
        message,
        refreshable,
        facts.names,
    ))
}

/// A failure worth another attempt: a 429 goes by the pace, the others by
/// the row's attempts and its backoff.
fn transient(
    http_status: Option<u16>,
    reason: String,
    retry_after: Option<Duration>,
    throttled: bool,
    row: &mut Attempts,
    facts: &Facts<'_>,
) -> Step {
    if let Some(wait) = retry_after
        && wait > facts.longest_wait
    {
        return Step::Stop(format!(
            "the API asks to wait {} before trying again ({reason}), longer than {}; stopping: \
             rows not sent stay pending, rerun later",
            humantime::format_duration(wait),
            humantime::format_duration(facts.longest_wait)
        ));
    }
    if throttled {
        return match facts.throttle {
            Some(Throttle::RowWaits(wait)) => Step::Wait(wait),
            _ => Step::Again,
        };
    }
    row.failures += 1;
    if row.failures >= facts.max_attempts {
        return Step::RanOut(failed(
            Status::Exhausted,
            http_status,
            "",
            format!("gave up after {} attempts; last: {reason}", row.failures),
            "",
        ));
    }
    Step::Wait(retry_after.map_or(facts.backoff, |r| r.max(facts.backoff)))
}

/// The message for a failure that trying again cannot cure.
pub fn permanent_failure_message(
    failure: TransportFailure,
    reason: &str,
    endpoint: &str,
) -> String {
    match failure {
        TransportFailure::Tls => format!(
            "TLS with {endpoint} failed ({reason}): if its certificate is signed by a private \
             CA, trust that CA (the system store, or SSL_CERT_FILE / SSL_CERT_DIR naming a PEM \
             file or directory); nothing was sent, rerun once it is trusted"
        ),
        TransportFailure::TooManyFiles => format!(
            "this process ran out of file descriptors ({reason}): lower --concurrency or raise \
             the limit (ulimit -n); rows not sent stay pending, rerun to continue"
        ),
        _ => format!("{reason}; rows not sent stay pending, rerun to continue"),
    }
}

/// A refused credential, named as the user gave it.
pub fn unauthorized_message(
    culprit: Credential,
    message: &str,
    refreshed: bool,
    names: &CredentialNames,
) -> String {
    let what = match culprit {
        Credential::SubscriptionKey => {
            format!("the API refused the subscription key ({})", names.api_key)
        }
        Credential::AccessToken if refreshed => format!(
            "the API refused the access token, even a freshly issued one \
             (check that the client {} is allowed to use this API)",
            names.client_id
        ),
        Credential::AccessToken => format!(
            "the API refused the access token ({}); it may have expired",
            names.access_token
        ),
    };
    format!(
        "{what}: {message}; nothing more was sent, rerun with the right credentials to continue"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Unit;

    fn facts(names: &CredentialNames) -> Facts<'_> {
        Facts {
            line: 7,
            max_attempts: 3,
            longest_wait: Duration::from_secs(300),
            can_refresh: true,
            token_accepted_since: false,
            throttle: None,
            backoff: Duration::from_millis(250),
            names,
            endpoint: "https://api.example.com/v1/track-document",
        }
    }

    fn retry(status: u16, retry_after: Option<u64>) -> Verdict {
        Verdict::Retry {
            http_status: Some(status),
            reason: format!("HTTP {status}"),
            retry_after: retry_after.map(Duration::from_secs),
            throttled: status == 429,
        }
    }

    fn unanswered(failure: TransportFailure) -> Verdict {
        Verdict::Unanswered {
            failure,
            reason: "connection failed".into(),
        }
    }

    #[test]
    fn the_policy_as_a_table() {
        let names = CredentialNames::default();
        let base = facts(&names);
        let secs = Duration::from_secs;
        let fresh = Attempts::default();
        let two_failures = Attempts {
            failures: 2,
            ..fresh
        };
        let created = Verdict::Created {
            tracking_id: "TRK1".into(),
            units: vec![Unit {
                spi: None,
                reference: Some("CSQU3054383".into()),
            }],
        };
        let token_401 = Verdict::Unauthorized {
            culprit: Credential::AccessToken,
            message: "expired".into(),
        };
        let key_401 = Verdict::Unauthorized {
            culprit: Credential::SubscriptionKey,
            message: "denied".into(),
        };
        let paused = Facts {
            throttle: Some(Throttle::SameEvent),
            ..base
        };
        let noise = Facts {
            throttle: Some(Throttle::RowWaits(secs(1))),
            ..base
        };
        let accepted_since = Facts {
            token_accepted_since: true,
            ..base
        };
        // (verdict, row before, facts) → (step kind, row after)
        let cases: Vec<(Verdict, Attempts, Facts<'_>, &str, Attempts)> = vec![
            (created, fresh, base, "finish tracked", fresh),
            (
                retry(503, None),
                fresh,
                base,
                "wait 250ms",
                Attempts {
                    failures: 1,
                    ..fresh
                },
            ),
            (
                retry(503, Some(2)),
                fresh,
                base,
                "wait 2s",
                Attempts {
                    failures: 1,
                    ..fresh
                },
            ),
            (
                retry(503, None),
                two_failures,
                base,
                "ran out",
                Attempts {
                    failures: 3,
                    ..fresh
                },
            ),
            (
                retry(504, None),
                fresh,
                base,
                "wait 250ms",
                Attempts {
                    failures: 1,
                    maybe_sent: true,
                    ..fresh
                },
            ),
            (retry(503, Some(3600)), fresh, base, "stop", fresh),
            // A 429 goes by the pace and uses up no attempt.
            (
                retry(429, Some(1)),
                two_failures,
                paused,
                "again",
                two_failures,
            ),
            (
                retry(429, Some(1)),
                two_failures,
                noise,
                "wait 1s",
                two_failures,
            ),
            (
                unanswered(TransportFailure::Refused),
                fresh,
                base,
                "wait 250ms",
                Attempts {
                    failures: 1,
                    ..fresh
                },
            ),
            (
                unanswered(TransportFailure::TimedOut),
                fresh,
                base,
                "wait 250ms",
                Attempts {
                    failures: 1,
                    maybe_sent: true,
                    ..fresh
                },
            ),
            (
                unanswered(TransportFailure::Tls),
                fresh,
                base,
                "stop",
                fresh,
            ),
            (
                unanswered(TransportFailure::TooManyFiles),
                fresh,
                base,
                "stop",
                fresh,
            ),
            // Tokens: the first 401 renews; a second only if the API took
            // tokens meanwhile; a refused key stops at once.
            (
                token_401.clone(),
                fresh,
                base,
                "renew",
                Attempts {
                    renewals: 1,
                    ..fresh
                },
            ),
            (
                token_401.clone(),
                Attempts {
                    renewals: 1,
                    ..fresh
                },
                base,
                "stop",
                Attempts {
                    renewals: 1,
                    ..fresh
                },
            ),
            (
                token_401.clone(),
                Attempts {
                    renewals: 1,
                    ..fresh
                },
                accepted_since,
                "renew",
                Attempts {
                    renewals: 2,
                    ..fresh
                },
            ),
            (
                token_401,
                Attempts {
                    renewals: 4,
                    ..fresh
                },
                accepted_since,
                "stop",
                Attempts {
                    renewals: 4,
                    ..fresh
                },
            ),
            (key_401, fresh, base, "stop", fresh),
        ];
        for (verdict, before, facts, expected, after) in cases {
            let shown = format!("{verdict:?}");
            let mut row = before;
            let step = next(verdict, &mut row, &facts);
            let kind = match &step {
                Step::Finish(Outcome::Tracked { .. }) => "finish tracked".to_string(),
                Step::Finish(_) => "finish failed".to_string(),
                Step::RanOut(_) => "ran out".to_string(),
                Step::Renew => "renew".to_string(),
                Step::Again => "again".to_string(),
                Step::Wait(d) => format!("wait {}", humantime::format_duration(*d)),
                Step::Stop(_) => "stop".to_string(),
            };
            assert_eq!(kind, expected, "{shown} from {before:?}");
            assert_eq!(row, after, "{shown} from {before:?}");
        }
    }

    #[test]
    fn row_errors_and_unreadable_201s_are_final() {
        let names = CredentialNames::default();
        let f = facts(&names);
        let mut row = Attempts::default();
        let step = next(
            Verdict::RowError {
                http_status: 400,
                code: "DOCUMENT_NOT_FOUND".into(),
                message: "unknown".into(),
                details: "".into(),
            },
            &mut row,
            &f,
        );
        assert!(matches!(
            step,
            Step::Finish(Outcome::Failed {
                status: Status::Failed,
                ..
            })
        ));
        let step = next(
            Verdict::BadResponse {
                http_status: 201,
                reason: "no trackingId".into(),
            },
            &mut row,
            &f,
        );
        assert!(matches!(
            step,
            Step::Finish(Outcome::Failed {
                status: Status::BadResponse,
                ..
            })
        ));
    }

    #[test]
    fn messages_name_the_credential_and_the_way_out() {
        let names = CredentialNames::default();
        let key = unauthorized_message(Credential::SubscriptionKey, "Access denied", false, &names);
        assert!(key.contains("TRACKMASS_API_KEY"), "{key}");
        let token = unauthorized_message(Credential::AccessToken, "expired", true, &names);
        assert!(token.contains("freshly issued"), "{token}");
        let from_file = CredentialNames {
            api_key: "credentials.api_key in /etc/trackmass.toml".into(),
            ..CredentialNames::default()
        };
        let key = unauthorized_message(Credential::SubscriptionKey, "denied", false, &from_file);
        assert!(
            key.contains("(credentials.api_key in /etc/trackmass.toml)"),
            "{key}"
        );
        let tls = permanent_failure_message(TransportFailure::Tls, "UnknownIssuer", "https://x/v1");
        assert!(
            tls.contains("SSL_CERT_FILE") && tls.contains("SSL_CERT_DIR"),
            "{tls}"
        );
        let names = CredentialNames::default();
        let mut row = Attempts {
            renewals: MAX_TOKEN_RENEWALS,
            ..Attempts::default()
        };
        let f = Facts {
            token_accepted_since: true,
            ..facts(&names)
        };
        let Step::Stop(revoked) = next(
            Verdict::Unauthorized {
                culprit: Credential::AccessToken,
                message: "revoked".into(),
            },
            &mut row,
            &f,
        ) else {
            panic!("not a stop")
        };
        assert!(
            revoked.contains("refused 4 fresh access tokens for line 7"),
            "{revoked}"
        );
    }
}
