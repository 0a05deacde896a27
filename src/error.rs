//! Exit statuses and the errors that choose them.
//!
//! One function, [`exit_code`], maps an error to a status; the README's
//! table of exit codes is this file.

use std::process::ExitCode;

/// A problem with how the command was invoked (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A problem with how the command was invoked (exit 2) that keeps its
/// cause's chain: a configuration file that cannot be read or merged.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsageCause(pub anyhow::Error);

/// How a command ended, when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Every row tracked (or already tracked).
    Success,
    /// Finished, but some rows were rejected or failed.
    RowsFailed,
    /// Stopped before the end by a fatal condition; rerun to continue.
    Fatal,
    /// Stopped before the end (Ctrl-C, SIGTERM); rerun to continue.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Fatal => 1,
            Exit::RowsFailed => 3,
            Exit::Interrupted => 4,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// What the statuses of a command that sends (`run`, `resume`, `retry`)
/// mean: the one table their help prints. They describe the ledger, not
/// only this invocation's rows.
pub const SENDING_STATUSES: [(u8, &str); 5] = [
    (0, "everything tracked"),
    (3, "some rows failed or were rejected"),
    (
        4,
        "stopped with work left (--max-duration, a signal: the same command continues)",
    ),
    (
        1,
        "fatal (credentials, quota, API unreachable: rows stay pending)",
    ),
    (2, "usage error"),
];

/// [`SENDING_STATUSES`] as the paragraph that ends a sending command's
/// help, after `examples`, wrapped at 78 columns.
pub fn with_sending_statuses(examples: &str) -> String {
    let sentence = format!(
        "Exit status (of the ledger, not only of this run's rows): {}.",
        SENDING_STATUSES
            .iter()
            .map(|(code, meaning)| format!("{code} {meaning}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut text = format!("{examples}\n\n");
    let mut width = 0;
    for word in sentence.split(' ') {
        if width > 0 && width + 1 + word.len() > 78 {
            text.push('\n');
            width = 0;
        } else if width > 0 {
            text.push(' ');
            width += 1;
        }
        text.push_str(word);
        width += word.len();
    }
    text
}

/// Status for an error that ended the command: 2 for usage, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<UsageError>().is_some() || error.downcast_ref::<UsageCause>().is_some()
    {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_others_1() {
        assert_eq!(exit_code(&UsageError("x".into()).into()), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), 1);
        let wrapped = anyhow::Error::from(UsageError("x".into())).context("while starting");
        assert_eq!(exit_code(&wrapped), 2);
        // A usage error with a cause keeps the cause's chain, and its text.
        let cause = anyhow::anyhow!("not valid TOML").context("trackmass.toml");
        let (text, depth) = (format!("{cause:#}"), cause.chain().count());
        let usage = anyhow::Error::from(UsageCause(cause));
        assert_eq!(exit_code(&usage), 2);
        assert_eq!(format!("{usage:#}"), text);
        assert_eq!(usage.chain().count(), depth, "{usage:#}");
    }

    #[test]
    fn the_help_table_has_every_status_once_with_its_code() {
        let mut codes: Vec<u8> = SENDING_STATUSES.iter().map(|(c, _)| *c).collect();
        let ended = [
            Exit::Success,
            Exit::Fatal,
            Exit::RowsFailed,
            Exit::Interrupted,
        ];
        for exit in ended {
            assert!(codes.contains(&exit.code()), "{exit:?} is not in the table");
        }
        assert!(codes.contains(&exit_code(&UsageError("x".into()).into())));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), SENDING_STATUSES.len(), "a code listed twice");
        let help = with_sending_statuses("Examples:\n  trackmass run x.csv");
        assert!(help.starts_with("Examples:\n  trackmass run x.csv\n\nExit status"));
        assert!(help.lines().all(|l| l.len() <= 78), "{help}");
        assert!(help.replace('\n', " ").contains(
            "4 stopped with work left (--max-duration, a signal: the same command continues)"
        ));
    }

    #[test]
    fn documented_codes() {
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Fatal,
            Exit::RowsFailed,
            Exit::Interrupted,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 3, 4]);
    }
}
