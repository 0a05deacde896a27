//! Paths and what they name: an output must not destroy an input (the
//! state file and its companions, the input file, or another output of the
//! same command); identities and kinds of files for messages.

use std::path::{Path, PathBuf};

use crate::error::UsageError;

/// Where a path points, whether or not the file exists yet: its directory
/// resolved (symlinks, `..`) plus its name.
pub fn identity(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// The state file and the files SQLite and the lock keep beside it (at its
/// resolved path), with the webhook receiver's token and events store,
/// named for messages as `--state`.
pub fn state_files(state: &Path) -> Vec<(&'static str, PathBuf)> {
    let real = identity(state);
    let mut files = vec![("--state", state.to_path_buf()), ("--state", real.clone())];
    for suffix in [
        "-wal",
        "-shm",
        "-journal",
        ".lock",
        ".webhook-token",
        ".events",
        ".events-wal",
        ".events-shm",
        ".events-journal",
        ".events.lock",
    ] {
        let mut name = real.as_os_str().to_owned();
        name.push(suffix);
        files.push(("--state", PathBuf::from(name)));
    }
    files
}

/// What kind of file this is, for messages: "a directory", "a FIFO", …
pub fn kind(meta: &std::fs::Metadata) -> String {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return "a directory".into();
    }
    if file_type.is_symlink() {
        return "a symbolic link".into();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)".into();
        }
        if file_type.is_socket() {
            return "a socket".into();
        }
        if file_type.is_char_device() {
            return "a character device".into();
        }
        if file_type.is_block_device() {
            return "a block device".into();
        }
    }
    if file_type.is_file() {
        "a regular file".into()
    } else {
        "not a regular file".into()
    }
}

/// Refuses an output that is the same file as a protected one or as an
/// earlier output; at most one output may be `-` (standard output).
pub fn check_outputs(
    protected: &[(&str, PathBuf)],
    outputs: &[(&str, &Path)],
) -> Result<(), UsageError> {
    let mut taken: Vec<(&str, PathBuf)> = protected
        .iter()
        .map(|(name, path)| (*name, identity(path)))
        .collect();
    let mut stdout: Option<&str> = None;
    for (flag, path) in outputs {
        if crate::output::is_stdout(path) {
            if let Some(other) = stdout {
                return Err(UsageError(format!(
                    "{other} and {flag} both write to standard output (-); give one of them a file"
                )));
            }
            stdout = Some(flag);
            continue;
        }
        // Two outputs thrown away collide with nothing.
        if matches!(
            crate::output::target(path),
            Ok(crate::output::Target::Discard)
        ) {
            continue;
        }
        let id = identity(path);
        if let Some((other, _)) = taken.iter().find(|(_, p)| *p == id) {
            return Err(UsageError(format!(
                "{flag} {} is the same file as {other}; writing it would destroy that file",
                path.display()
            )));
        }
        taken.push((flag, id));
    }
    Ok(())
}

/// Checks, before any work is done, that each output can be written (see
/// [`crate::output::check`]).
pub fn check_writable(outputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (flag, path) in outputs {
        crate::output::check(flag, path)?;
    }
    Ok(())
}

/// Makes a FIFO (named pipe) at `path`, for the unit tests.
#[cfg(all(test, unix))]
pub(crate) fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_by_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let dotted = dir.path().join("sub/../a.csv");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = check_outputs(&[], &[("--out", &a), ("--failures", &dotted)]).unwrap_err();
        assert!(err.0.contains("--failures"), "{}", err.0);
        let wal = dir.path().join("s.db-wal");
        let err =
            check_outputs(&state_files(&dir.path().join("s.db")), &[("--out", &wal)]).unwrap_err();
        assert!(err.0.contains("--state"), "{}", err.0);
        assert!(check_outputs(&state_files(&dir.path().join("s.db")), &[("--out", &a)]).is_ok());
    }
}
