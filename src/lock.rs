//! One process per state file: an OS file lock on `STATE.lock`.
//!
//! The lock is `flock`-style (via `std::fs::File::try_lock`): the kernel
//! drops it when the process ends, however it ends, so a crashed run never
//! blocks the next night. The file also records who holds it, so the
//! refusal can name the holder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Who holds a state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub since: String,
    pub command: String,
}

/// Held until dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file that goes with a state file.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of `state` for `command`, or fails at once naming the
/// process that holds it.
pub fn acquire(state: &Path, command: &str) -> Result<StateLock> {
    let path = lock_path(state);
    if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "{}: the directory {} does not exist",
            state.display(),
            dir.display()
        );
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("{}: cannot open the lock file", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = serde_json::from_str::<Holder>(&text)
                .map(|h| {
                    format!(
                        "trackmass {} (pid {} on {}, since {})",
                        h.command, h.pid, h.host, h.since
                    )
                })
                .unwrap_or_else(|_| "another process".to_string());
            bail!(
                "{}: the state file is in use by {holder}; wait for it to finish, \
                 or stop it, before running again (nothing was sent)",
                state.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("{}: cannot lock", path.display()));
        }
    }
    let holder = Holder {
        pid: std::process::id(),
        host: hostname(),
        since: crate::store::now_rfc3339(),
        command: command.to_string(),
    };
    let json = serde_json::to_string(&holder).unwrap_or_default();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| file.write_all(json.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("{}: cannot write the lock file", path.display()))?;
    Ok(StateLock { _file: file, path })
}

/// The process that last took the lock of `state`, if it runs on this
/// machine and is still alive. Only reads: never takes the lock, so it
/// cannot get in the way of a run that starts at the same moment.
pub fn holder(state: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(lock_path(state)).ok()?;
    let holder: Holder = serde_json::from_str(&text).ok()?;
    (holder.host == hostname() && process_alive(holder.pid)).then_some(holder)
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    false
}

/// This machine's name.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let first = acquire(&state, "run").unwrap();
        let err = acquire(&state, "run").unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&hostname()), "{err}");
        assert!(err.contains("s.db"), "{err}");
        assert_eq!(holder(&state).map(|h| h.pid), Some(std::process::id()));
        drop(first);
        assert!(
            acquire(&state, "run").is_ok(),
            "the lock outlived its holder"
        );
    }

    #[test]
    fn lock_file_sits_next_to_the_state_file() {
        assert_eq!(
            lock_path(Path::new("/x/prod.db")),
            PathBuf::from("/x/prod.db.lock")
        );
    }
}
