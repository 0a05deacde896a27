//! `--config trackmass.toml`: settings from a file, flags winning.
//!
//! Every top-level key is a long flag (`rate = "50/s"`, `max_duration =
//! "6h"`, `force = true`; `-` or `_` alike). The file's settings are placed
//! on the command line right after the subcommand, before the user's own
//! arguments: clap then reads them with the same parsers and the same
//! errors, and a flag given on the command line overrides them (flags
//! override themselves). A key that only another subcommand knows is
//! ignored, so one file can serve `run`, `resume` and `status`; a key no
//! subcommand knows is an error. A flag that also reads an environment
//! variable is taken from the environment when that is set
//! (flags > environment > file > defaults).
//!
//! A file is trusted only if only its owner can change it, as ssh does with
//! its configuration: it and its directory must belong to the user running
//! trackmass (or root) and not be writable by group or others (a directory
//! with the sticky bit, such as /tmp, may be), whatever the file holds —
//! its settings choose where credentials are sent (`token_url`) and which
//! files are overwritten (`out`).
//!
//! Credentials may live in a `[credentials]` table (`api_key`, `client_id`,
//! `client_secret`, `access_token`), only if the file is readable by its
//! owner alone; the environment wins over them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::api;

/// Keys of the `[credentials]` table and the variables they stand for.
pub const CREDENTIAL_KEYS: [(&str, &str); 4] = [
    ("api_key", api::ENV_API_KEY),
    ("client_id", api::ENV_CLIENT_ID),
    ("client_secret", api::ENV_CLIENT_SECRET),
    ("access_token", api::ENV_ACCESS_TOKEN),
];

/// A parsed configuration file.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    settings: toml::Table,
    /// Environment variable name → value.
    secrets: HashMap<&'static str, String>,
}

impl ConfigFile {
    /// Reads and checks a configuration file: the file checked is the one
    /// read (opened once, at its resolved path, without following a link).
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let cannot = || format!("{}: cannot read the configuration file", path.display());
        let real = std::fs::canonicalize(path).with_context(cannot)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        }
        let mut file = options.open(&real).with_context(cannot)?;
        let meta = file.metadata().with_context(cannot)?;
        if !meta.is_file() {
            bail!(
                "{}: is {}, not a configuration file",
                path.display(),
                crate::paths::kind(&meta)
            );
        }
        let dir = real.parent().unwrap_or(Path::new("/"));
        let dir_meta = std::fs::metadata(dir).with_context(cannot)?;
        check_trusted(path, &meta, dir, &dir_meta)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).with_context(cannot)?;
        Self::parse(path, &text, Some(&meta))
    }

    /// Parses a configuration file's text (`path` for messages; `meta`, the
    /// file's, to check that one holding credentials is private).
    pub fn parse(path: &Path, text: &str, meta: Option<&std::fs::Metadata>) -> Result<ConfigFile> {
        let mut settings: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax_error(path, text, &e))?;
        let mut secrets = HashMap::new();
        if let Some(table) = settings.remove("credentials") {
            let toml::Value::Table(table) = table else {
                bail!("{}: `credentials` must be a table", path.display());
            };
            for (key, value) in table {
                let Some((_, var)) = CREDENTIAL_KEYS.iter().find(|(k, _)| *k == key) else {
                    bail!(
                        "{}: unknown key `{key}` in [credentials] (known: {})",
                        path.display(),
                        CREDENTIAL_KEYS.map(|(k, _)| k).join(", ")
                    );
                };
                let toml::Value::String(value) = value else {
                    bail!("{}: credentials.{key} must be a string", path.display());
                };
                secrets.insert(*var, value);
            }
            if let Some(meta) = meta.filter(|_| !secrets.is_empty()) {
                check_private(path, meta)?;
            }
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            settings,
            secrets,
        })
    }

    /// The credential that `var` names, from the file, named as its key
    /// in the file.
    pub fn secret(&self, var: &str) -> Option<api::Found> {
        let value = self.secrets.get(var)?;
        let key = CREDENTIAL_KEYS.iter().find(|(_, v)| *v == var)?.0;
        Some(api::Found {
            value: value.clone(),
            name: format!("credentials.{key} in {}", self.path.display()),
        })
    }

    /// `argv` with the file's settings for `subcommand` inserted right
    /// after the subcommand's name. `env` tells whether an environment
    /// variable is set.
    pub fn merge_args(
        &self,
        command: &clap::Command,
        argv: &[OsString],
        env: impl Fn(&str) -> bool,
    ) -> Result<Vec<OsString>> {
        let Some(at) = subcommand_position(command, argv) else {
            return Ok(argv.to_vec());
        };
        let name = argv[at].to_string_lossy();
        let Some(sub) = command.find_subcommand(name.as_ref()) else {
            return Ok(argv.to_vec());
        };
        let mut extra = Vec::new();
        for (key, value) in &self.settings {
            let long = key.replace('_', "-");
            let known_here = sub
                .get_arguments()
                .chain(command.get_arguments().filter(|a| a.is_global_set()))
                .find(|a| a.get_long() == Some(long.as_str()));
            let Some(arg) = known_here else {
                let known_elsewhere = command.get_subcommands().any(|s| {
                    s.get_arguments()
                        .any(|a| a.get_long() == Some(long.as_str()))
                }) || command
                    .get_arguments()
                    .any(|a| a.get_long() == Some(long.as_str()));
                if known_elsewhere && long != "config" {
                    continue;
                }
                bail!(
                    "{}: unknown setting `{key}` (settings are long flags without \
                     the dashes, e.g. rate = \"50/s\"; credentials go in a [credentials] table)",
                    self.path.display()
                );
            };
            if given(argv, arg) || arg.get_env().is_some_and(|var| env(&var.to_string_lossy())) {
                continue;
            }
            let flag = format!("--{long}");
            let takes_value = arg.get_action().takes_values();
            match value {
                toml::Value::Boolean(b) if !takes_value => {
                    if *b {
                        extra.push(OsString::from(flag));
                    }
                }
                toml::Value::Array(items) if takes_value => {
                    extra.push(OsString::from(&flag));
                    for item in items {
                        extra.push(OsString::from(scalar(&self.path, key, item)?));
                    }
                }
                other if takes_value => {
                    extra.push(OsString::from(format!(
                        "{flag}={}",
                        scalar(&self.path, key, other)?
                    )));
                }
                _ => bail!(
                    "{}: setting `{key}` is a switch: write {key} = true or false",
                    self.path.display()
                ),
            }
        }
        let mut merged = argv[..=at].to_vec();
        merged.extend(extra);
        merged.extend_from_slice(&argv[at + 1..]);
        Ok(merged)
    }
}

/// A TOML syntax error by position and reason only: the parser's own
/// message quotes the offending line, which may hold a secret.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let at = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    anyhow::anyhow!(
        "{}: not valid TOML{at}: {}",
        path.display(),
        e.message().trim()
    )
}

/// Whether the user's own arguments give this flag (then the file's value
/// is left out: the command line wins, also for flags given before the
/// subcommand and for flags that take several values).
fn given(argv: &[OsString], arg: &clap::Arg) -> bool {
    let long = arg.get_long().map(|l| format!("--{l}"));
    let short = arg.get_short();
    argv.iter().skip(1).any(|word| {
        let word = word.to_string_lossy();
        if let Some(long) = &long
            && (word == long.as_str() || word.starts_with(&format!("{long}=")))
        {
            return true;
        }
        match (short, word.strip_prefix('-')) {
            (Some(c), Some(rest)) if !rest.starts_with('-') => rest.starts_with(c),
            _ => false,
        }
    })
}

/// A setting's value as it would be written on the command line.
fn scalar(path: &Path, key: &str, value: &toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => bail!(
            "{}: setting `{key}` must be a string, a number or a boolean",
            path.display()
        ),
    })
}

/// Where the subcommand's name is in `argv`: the first word that is
/// neither a global flag nor a global flag's value.
fn subcommand_position(command: &clap::Command, argv: &[OsString]) -> Option<usize> {
    let valued: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut i = 1;
    while i < argv.len() {
        let word = argv[i].to_string_lossy();
        if word == "--" {
            return None;
        }
        if word.starts_with('-') {
            if valued.iter().any(|v| *v == word) {
                i += 1;
            }
            i += 1;
            continue;
        }
        return Some(i);
    }
    None
}

/// Only its owner (or root) may change the file: refuses a file, or the
/// directory holding it, that another user owns or that group or others
/// may write.
#[cfg(unix)]
fn check_trusted(
    path: &Path,
    file: &std::fs::Metadata,
    dir_path: &Path,
    dir: &std::fs::Metadata,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = "whoever can change it chooses where the credentials are sent and \
               which files are overwritten";
    // What each check is about, as the message says it, and what to fix.
    let dir_is = format!("its directory {} is", dir_path.display());
    for (what, meta, fix) in [("is", file, path), (dir_is.as_str(), dir, dir_path)] {
        if meta.uid() != me && meta.uid() != 0 {
            bail!(
                "{}: {what} owned by uid {}, not by you (uid {me}) or root; {why}: \
                 use a copy of your own",
                path.display(),
                meta.uid()
            );
        }
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky_dir {
            bail!(
                "{}: {what} writable by group or others (mode {:o}); {why}: \
                 run `chmod go-w {}`",
                path.display(),
                meta.mode() & 0o7777,
                fix.display()
            );
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_trusted(
    _path: &Path,
    _file: &std::fs::Metadata,
    _dir_path: &Path,
    _dir: &std::fs::Metadata,
) -> Result<()> {
    Ok(())
}

/// A file holding credentials must be private to its owner.
#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{}: holds credentials but is readable by group or others (mode {:o}); \
             run `chmod 600 {}`, or keep the credentials in the environment",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn file(text: &str) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from("t.toml"),
            settings: text.parse().unwrap(),
            secrets: HashMap::new(),
        }
    }

    fn merged(config: &str, argv: &[&str]) -> Result<Vec<String>> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let args = file(config).merge_args(&crate::cli::Cli::command(), &argv, |_| false)?;
        Ok(args
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn settings_go_after_the_subcommand_before_the_users_flags() {
        let args = merged(
            "rate = \"50/s\"\nforce = true\nconcurrency = 16\nquiet = false\n",
            &[
                "trackmass",
                "--log-format",
                "json",
                "run",
                "in.csv",
                "--rate",
                "5/s",
            ],
        )
        .unwrap();
        assert_eq!(&args[..4], ["trackmass", "--log-format", "json", "run"]);
        // The user's --rate replaces the file's.
        assert!(!args.contains(&"--rate=50/s".to_string()), "{args:?}");
        assert!(args.contains(&"--force".to_string()), "{args:?}");
        assert!(args.contains(&"--concurrency=16".to_string()), "{args:?}");
        assert!(!args.contains(&"--quiet".to_string()), "{args:?}");
        assert_eq!(&args[args.len() - 3..], ["in.csv", "--rate", "5/s"]);
    }

    #[test]
    fn a_flag_on_the_command_line_replaces_the_files_value() {
        let args = merged(
            "log_format = \"json\"\nstatus = [\"bad_response\"]\n",
            &[
                "trackmass",
                "--log-format",
                "text",
                "retry",
                "--status",
                "exhausted",
            ],
        )
        .unwrap();
        assert_eq!(
            args,
            [
                "trackmass",
                "--log-format",
                "text",
                "retry",
                "--status",
                "exhausted"
            ]
        );
        let args = merged("quiet = true\n", &["trackmass", "-qv", "status"]).unwrap();
        assert_eq!(args, ["trackmass", "-qv", "status"]);
    }

    #[test]
    fn a_syntax_error_names_the_place_not_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "rate = \"5/s\"\n[credentials]\napi_key = \"SUPERSECRET\n",
        )
        .unwrap();
        let err = format!("{:#}", ConfigFile::load(&path).unwrap_err());
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("SUPERSECRET"), "{err}");
    }

    #[test]
    fn keys_of_other_subcommands_are_skipped_unknown_keys_refused() {
        let args = merged("rate = \"50/s\"\njson = true\n", &["trackmass", "status"]).unwrap();
        assert_eq!(args, ["trackmass", "status", "--json"]);
        let err = merged("rat = \"50/s\"\n", &["trackmass", "run", "x.csv"]).unwrap_err();
        assert!(err.to_string().contains("unknown setting `rat`"), "{err}");
    }

    #[test]
    fn the_environment_wins_over_the_file_for_flags_that_read_it() {
        let argv: Vec<OsString> = ["trackmass", "run", "x.csv"]
            .iter()
            .map(OsString::from)
            .collect();
        let f = file("base_url = \"https://file.example/v1\"\n");
        let with_env = f
            .merge_args(&crate::cli::Cli::command(), &argv, |v| {
                v == "TRACKMASS_BASE_URL"
            })
            .unwrap();
        assert_eq!(with_env, argv);
        let without = f
            .merge_args(&crate::cli::Cli::command(), &argv, |_| false)
            .unwrap();
        assert!(
            without
                .iter()
                .any(|a| a == "--base-url=https://file.example/v1")
        );
    }

    #[test]
    fn the_scheduling_sample_configures_a_run() {
        // Parsed without the ownership check: a checkout's modes follow
        // the umask of whoever cloned it.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/schedule/trackmass.toml");
        let file =
            ConfigFile::parse(&path, &std::fs::read_to_string(&path).unwrap(), None).unwrap();
        let argv: Vec<OsString> = ["trackmass", "run", "today.csv"]
            .iter()
            .map(OsString::from)
            .collect();
        let command = crate::cli::Cli::command();
        let merged = file.merge_args(&command, &argv, |_| false).unwrap();
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&merged).unwrap();
        assert_eq!(cli.log_format, crate::cli::LogFormat::Json);
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("not a run")
        };
        assert_eq!(run.dispatch.rate.to_string(), "600/min");
        assert_eq!(
            run.max_duration,
            Some(std::time::Duration::from_secs(6 * 3600))
        );
        assert!(run.files.summary.is_some() && run.files.metrics.is_some());
    }

    #[cfg(unix)]
    #[test]
    fn credentials_need_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[credentials]\napi_key = \"k\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("readable by group or others (mode 644)"),
            "{err}"
        );
        assert!(!err.contains("\"k\""), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = ConfigFile::load(&path).unwrap();
        let found = f.secret(api::ENV_API_KEY).unwrap();
        assert_eq!(found.value, "k");
        assert_eq!(
            found.name,
            format!("credentials.api_key in {}", path.display())
        );
        assert_eq!(f.secret(api::ENV_CLIENT_ID), None);
        // Settings without credentials may be world-readable.
        std::fs::write(&path, "rate = \"5/s\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ConfigFile::load(&path).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_or_directory_others_can_change_is_refused_whatever_it_holds() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "token_url = \"https://elsewhere.example/token\"\n").unwrap();
        mode(&path, 0o664);
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others (mode 664)"),
            "{err}"
        );
        assert!(err.contains("chmod go-w"), "{err}");
        mode(&path, 0o644);
        assert!(ConfigFile::load(&path).is_ok());
        // Its directory, likewise; unless it is sticky like /tmp.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let inner = shared.join("t.toml");
        std::fs::write(&inner, "rate = \"5/s\"\n").unwrap();
        mode(&inner, 0o600);
        mode(&shared, 0o777);
        let err = ConfigFile::load(&inner).unwrap_err().to_string();
        assert!(err.contains("its directory"), "{err}");
        assert!(err.contains("(mode 777)"), "{err}");
        mode(&shared, 0o1777);
        assert!(ConfigFile::load(&inner).is_ok());
        mode(&shared, 0o700);
    }
}
