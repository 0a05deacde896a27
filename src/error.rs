//! Exit statuses and the errors that choose them.
//!
//! One function, [`exit_code`], maps an error to a status; the README's
//! table of exit codes is this file.

use std::process::ExitCode;

/// A problem with how the command was invoked (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

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

/// Status for an error that ended the command: 2 for usage, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<UsageError>().is_some() {
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
