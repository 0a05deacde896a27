//! What the operating system lets this process do: the open-files limit,
//! raised at start to what the system allows, and checked against
//! `--concurrency` before anything is sent.

/// File descriptors a run needs besides one socket per request in flight:
/// the state file and its WAL, result files, the token client, stdio, the
/// runtime's own.
pub const SPARE_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files to the hard one (as most servers
/// do: the soft default of 1024 is a relic). Returns the soft limit now in
/// force, `None` where it cannot be read.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}

/// The soft limit on open files, `None` where it cannot be read.
#[cfg(unix)]
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

#[cfg(not(unix))]
pub fn open_files_limit() -> Option<u64> {
    None
}

/// Refuses a `--concurrency` the open-files limit cannot hold, saying what
/// would fit; a local limit must not look like the API failing.
pub fn check_concurrency(concurrency: usize, limit: Option<u64>) -> Result<(), TooManyFiles> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let needed = concurrency as u64 + SPARE_DESCRIPTORS;
    if needed <= limit {
        return Ok(());
    }
    Err(TooManyFiles {
        concurrency,
        needed,
        limit,
    })
}

/// `--concurrency` needs more open files than the process may open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--concurrency {concurrency} needs about {needed} open files, and this process may open \
     {limit} (ulimit -n); use --concurrency {} or less, or raise the limit",
    .limit.saturating_sub(SPARE_DESCRIPTORS).max(1)
)]
pub struct TooManyFiles {
    pub concurrency: usize,
    pub needed: u64,
    pub limit: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_must_fit_the_open_files_limit() {
        assert!(check_concurrency(8, Some(1024)).is_ok());
        assert!(check_concurrency(960, Some(1024)).is_ok());
        let err = check_concurrency(1024, Some(1024)).unwrap_err().to_string();
        assert!(err.contains("use --concurrency 960 or less"), "{err}");
        assert!(check_concurrency(1024, None).is_ok());
    }
}
