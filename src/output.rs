//! Files trackmass writes (result files, rejects, summary, metrics): a path
//! given for writing is what it claims to be, and is written atomically.
//!
//! - `-` (or `/dev/stdout`) is standard output.
//! - A path that names nothing yet is created; a regular file is replaced
//!   whole: written under an unpredictable temporary name beside it
//!   (`O_EXCL`, never following a link), synced, renamed over it, so a
//!   reader sees the old file or the new one.
//! - A symbolic link is followed: the file it points to is replaced, the
//!   link stays. A link to nothing is refused.
//! - The null device (`/dev/null`, or a node of the same device) takes the
//!   output and discards it.
//! - Anything else (a FIFO, a socket, another device, a directory) is
//!   refused before any work is done, and never replaced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The path that means standard output.
pub const STDOUT: &str = "-";

/// Whether `path` means standard output: `-`, or `/dev/stdout` (which
/// would otherwise lead, through /proc, to whatever stdout is: a pipe, a
/// terminal, or a file that replacing would cut off from the shell).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == STDOUT || path == Path::new("/dev/stdout")
}

/// Where the bytes written for a path go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// The null device: written through (discarded), never replaced.
    Discard,
    /// A regular file (existing or not) at this resolved path.
    File(PathBuf),
}

#[cfg(unix)]
fn is_null_device(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
}

#[cfg(not(unix))]
fn is_null_device(_meta: &std::fs::Metadata) -> bool {
    false
}

/// What writing `path` means, or why it must not be written.
pub fn target(path: &Path) -> Result<Target> {
    if is_stdout(path) {
        return Ok(Target::Stdout);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                bail!(
                    "{}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
            return Ok(Target::File(crate::paths::identity(path)));
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let meta = if link.file_type().is_symlink() {
        match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(_) => bail!(
                "{}: is a symbolic link to a file that does not exist; \
                 remove the link or point it at a file",
                path.display()
            ),
        }
    } else {
        link
    };
    if meta.is_file() {
        return Ok(Target::File(crate::paths::identity(path)));
    }
    if is_null_device(&meta) {
        return Ok(Target::Discard);
    }
    if meta.is_dir() {
        bail!("{}: is a directory", path.display());
    }
    bail!(
        "{}: is {}, not a regular file; trackmass replaces the files it writes \
         and never replaces anything else (use `-` to write to standard output)",
        path.display(),
        crate::paths::kind(&meta)
    )
}

/// Checks, before any work is done, that `path` can be written: what it is
/// (see [`target`]), and that its directory takes a new file (a probe,
/// removed at once). Finding this out after a night of sending would waste
/// the night.
pub fn check(flag: &str, path: &Path) -> Result<()> {
    let Target::File(real) = target(path).with_context(|| flag.to_string())? else {
        return Ok(());
    };
    let dir = real.parent().unwrap_or(Path::new("."));
    match tempfile::Builder::new()
        .prefix(".trackmass-probe-")
        .tempfile_in(dir)
    {
        Ok(_probe) => Ok(()),
        Err(e) => bail!(
            "{flag}: {}: cannot write in {} ({e})",
            path.display(),
            dir.display()
        ),
    }
}

/// Writes `path` through `fill` (see the module's rules), with these
/// permissions for a new file (the umask applies). On any error, a file
/// that was there is left as it was and no temporary file remains.
pub fn write(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    write_with(path, mode, false, fill)
}

/// [`write`], readable by all whatever the umask (0644, set on the file
/// before it takes the name): for a file another user must read, as
/// node_exporter reads the metrics textfile under a service's
/// `UMask=0077`. Only for files that hold nothing secret.
pub fn write_readable_by_all(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    write_with(path, 0o644, true, fill)
}

fn write_with(
    path: &Path,
    mode: u32,
    exact: bool,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    match target(path)? {
        Target::Stdout => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let written = fill(&mut out).and_then(|()| Ok(out.flush()?));
            match written {
                // The reader went away (`| head`): it has what it wanted.
                Err(e) if broken_pipe(&e) => Ok(()),
                other => other.context("cannot write to standard output"),
            }
        }
        Target::Discard => fill(&mut std::io::sink()),
        Target::File(real) => replace(path, &real, mode, exact, fill),
    }
}

/// A new file beside `path`, named `.NAME.XXXXXX{suffix}` with random
/// characters (created with `O_EXCL`, so never a file or link that was
/// there), with these permissions (the umask applies). It is removed when
/// dropped, unless persisted.
pub fn temp_beside(
    path: &Path,
    suffix: &str,
    mode: u32,
) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trackmass".into());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder.tempfile_in(dir)
}

/// Whether an error comes from writing to a pipe nobody reads any more.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            cause
                .downcast_ref::<csv::Error>()
                .and_then(|e| match e.kind() {
                    csv::ErrorKind::Io(io) => Some(io),
                    _ => None,
                })
        });
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn replace(
    path: &Path,
    real: &Path,
    mode: u32,
    exact: bool,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut temp = temp_beside(real, ".tmp", mode)
        .with_context(|| format!("{}: cannot write here", path.display()))?;
    {
        let file: &mut File = temp.as_file_mut();
        let mut out = BufWriter::new(file);
        fill(&mut out).with_context(|| format!("{}: cannot write", path.display()))?;
        out.flush()
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    #[cfg(unix)]
    if exact {
        use std::os::unix::fs::PermissionsExt;
        // fchmod on the open file: the umask does not apply.
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("{}: cannot set its mode", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = exact;
    temp.as_file()
        .sync_all()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    // What is there now must still be a file to replace (or nothing).
    if let Ok(meta) = std::fs::symlink_metadata(real)
        && !meta.is_file()
    {
        bail!(
            "{}: became {} while it was written; left untouched",
            path.display(),
            crate::paths::kind(&meta)
        );
    }
    temp.persist(real)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: cannot replace the file", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_is_replaced_whole_and_a_failure_leaves_it_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        write(&path, 0o600, |w| Ok(w.write_all(b"first\n")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let err = write(&path, 0o600, |w| {
            w.write_all(b"half")?;
            bail!("simulated failure")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        assert_eq!(
            names(dir.path()),
            ["results.csv"],
            "temporary file left behind"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_updates_its_target_and_a_dangling_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.csv");
        let link = dir.path().join("link.csv");
        std::fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, 0o600, |w| Ok(w.write_all(b"new")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let dangling = dir.path().join("dangling.csv");
        std::os::unix::fs::symlink(dir.path().join("nowhere.csv"), &dangling).unwrap();
        let err = format!("{:#}", check("--out", &dangling).unwrap_err());
        assert!(
            err.contains("symbolic link to a file that does not exist"),
            "{err}"
        );
        assert!(!dir.path().join("nowhere.csv").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_and_the_null_device_discards() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        crate::paths::mkfifo(&fifo);
        let err = format!("{:#}", check("--out", &fifo).unwrap_err());
        assert!(err.contains("is a FIFO"), "{err}");
        assert!(err.contains("use `-`"), "{err}");
        assert!(write(&fifo, 0o600, |w| Ok(w.write_all(b"x")?)).is_err());
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(target(Path::new("/dev/null")).unwrap(), Target::Discard);
        write(Path::new("/dev/null"), 0o600, |w| Ok(w.write_all(b"gone")?)).unwrap();
        assert!(
            std::fs::symlink_metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("results.csv");
        let err = format!("{:#}", check("--out", &path).unwrap_err());
        assert!(err.contains("does not exist"), "{err}");
        assert_eq!(target(Path::new("-")).unwrap(), Target::Stdout);
        assert_eq!(target(Path::new("/dev/stdout")).unwrap(), Target::Stdout);
    }
}
