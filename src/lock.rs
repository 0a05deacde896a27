//! One process per state file: an OS file lock on `STATE.lock`, beside the
//! state file's real path.
//!
//! The lock is `flock`-style (via `std::fs::File::try_lock`): the kernel
//! drops it when the process ends, however it ends, so a crashed run never
//! blocks the next night. It is taken on the state file's resolved path
//! (symlinks followed, `..` removed), so every name for one database takes
//! the same lock. The lock file is opened without following a symlink and
//! only if it is a regular file: one planted there is refused, never
//! written through. It also records who holds it, so the refusal can name
//! the holder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::ledger::Command;

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
}

/// The lock file that goes with a state file (its resolved path plus
/// `.lock`).
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = crate::paths::identity(state).into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens the lock file, creating it if needed, refusing a symlink, a FIFO,
/// a device or anything else that is not a plain file.
fn open_lock_file(path: &Path, create: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    if create {
        options.write(true).create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let refused = |what: &str| {
        anyhow::anyhow!(
            "{}: the lock file is {what}, not a file trackmass made; \
             it is left untouched: remove it, then run again (nothing was sent)",
            path.display()
        )
    };
    let file = match options.open(path) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refused("a symbolic link")),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("{}: cannot open the lock file", path.display()));
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("{}: cannot read the lock file", path.display()))?;
    if !meta.is_file() {
        return Err(refused(&crate::paths::kind(&meta)));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(refused("a hard link to another file"));
        }
    }
    Ok(file)
}

/// Takes the lock of `state` for `command`, or fails at once naming the
/// process that holds it.
pub fn acquire(state: &Path, command: Command) -> Result<StateLock> {
    take(
        state,
        command.as_str(),
        "the state file is in use by",
        "wait for it to finish, or stop it, before running again (nothing was sent)",
    )
}

/// Takes the lock of the webhook receiver's events store (`EVENTS.lock`):
/// one receiver per store.
pub fn acquire_events(events: &Path) -> Result<StateLock> {
    take(
        events,
        "webhooks serve",
        "the events store is in use by",
        "one receiver per store: stop that one first, or pass another --state",
    )
}

fn take(state: &Path, label: &str, in_use: &str, advice: &str) -> Result<StateLock> {
    if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "{}: the directory {} does not exist",
            state.display(),
            dir.display()
        );
    }
    let path = lock_path(state);
    let mut file = open_lock_file(&path, true)?;
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
            bail!("{}: {in_use} {holder}; {advice}", state.display());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("{}: cannot lock", path.display()));
        }
    }
    let holder = Holder {
        pid: std::process::id(),
        host: hostname(),
        since: crate::store::now_rfc3339(),
        command: label.to_string(),
    };
    let json = serde_json::to_string(&holder).unwrap_or_default();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| file.write_all(json.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("{}: cannot write the lock file", path.display()))?;
    Ok(StateLock { _file: file })
}

/// The process that last took the lock of `state`, if it runs on this
/// machine and is still alive. Only reads: never takes the lock, so it
/// cannot get in the way of a run that starts at the same moment.
pub fn holder(state: &Path) -> Option<Holder> {
    let mut text = String::new();
    open_lock_file(&lock_path(state), false)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
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
        let first = acquire(&state, Command::Run).unwrap();
        let err = acquire(&state, Command::Run).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&hostname()), "{err}");
        assert!(err.contains("s.db"), "{err}");
        assert_eq!(holder(&state).map(|h| h.pid), Some(std::process::id()));
        drop(first);
        assert!(
            acquire(&state, Command::Run).is_ok(),
            "the lock outlived its holder"
        );
    }

    #[test]
    fn lock_file_sits_next_to_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = crate::paths::identity(dir.path());
        assert_eq!(
            lock_path(&dir.path().join("prod.db")),
            real.join("prod.db.lock")
        );
    }

    #[cfg(unix)]
    #[test]
    fn every_name_of_a_state_file_takes_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.db");
        std::fs::write(&real, "x").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let _first = acquire(&real, Command::Run).unwrap();
        assert!(acquire(&link, Command::Run).is_err());
        assert!(acquire(&dir.path().join("sub/../real.db"), Command::Resume).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_lock_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, lock_path(&state)).unwrap();
        let err = acquire(&state, Command::Run).unwrap_err().to_string();
        assert!(err.contains("a symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(holder(&state).is_none());
        // A FIFO there is refused too, without blocking.
        std::fs::remove_file(lock_path(&state)).unwrap();
        crate::paths::mkfifo(&lock_path(&state));
        let err = acquire(&state, Command::Run).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        // A hard link to another file, likewise.
        std::fs::remove_file(lock_path(&state)).unwrap();
        std::fs::hard_link(&victim, lock_path(&state)).unwrap();
        let err = acquire(&state, Command::Run).unwrap_err().to_string();
        assert!(err.contains("hard link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
