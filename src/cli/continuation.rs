//! The flags of `trackmass resume` and `trackmass retry`: the run's own
//! flags that a continuation may change, taken from `run`'s definition
//! (parser, value name, help, heading) with the default replaced by the
//! stored run's. A flag is declared once, in `run.rs`; only the list of
//! which ones a continuation takes lives here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

use super::{DEFAULT_STATE, ProgressMode, Rate, RunArgs};

/// Settings `resume` and `retry` may change; the others are the stored
/// run's. `None` (or `false`) keeps the stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinueArgs {
    pub state: PathBuf,
    pub out: Option<PathBuf>,
    pub failures: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub rate: Option<Rate>,
    pub concurrency: Option<u16>,
    pub max_duration: Option<Duration>,
    pub progress: Option<ProgressMode>,
    pub progress_interval: Option<Duration>,
    pub sandbox: bool,
    pub base_url: Option<String>,
    pub token_url: Option<String>,
    pub allow_insecure_http: bool,
}

/// How a continuation takes one of the run's flags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// As the run declares it, default included.
    AsIs,
    /// Without the run's default: absent, the stored run's value holds.
    Override,
}

/// The run's flags a continuation takes, by clap id (the field's name).
const TAKEN: [(&str, Taken); 14] = [
    ("state", Taken::AsIs),
    ("out", Taken::Override),
    ("failures", Taken::Override),
    ("summary", Taken::Override),
    ("metrics", Taken::Override),
    ("rate", Taken::Override),
    ("concurrency", Taken::Override),
    ("max_duration", Taken::Override),
    ("progress", Taken::Override),
    ("progress_interval", Taken::Override),
    ("sandbox", Taken::Override),
    ("base_url", Taken::Override),
    ("token_url", Taken::Override),
    ("allow_insecure_http", Taken::AsIs),
];

/// `run`'s flag `id`, as a continuation takes it.
fn taken(run: &Command, id: &str, how: Taken) -> Arg {
    let Some(arg) = run.get_arguments().find(|a| a.get_id() == id) else {
        // Only a rename in run.rs can get here; `cli_definition_is_consistent`
        // builds every command, so a test fails first.
        panic!("`run` has no flag with id {id:?} for resume and retry to take");
    };
    let mut arg = arg.clone();
    if how == Taken::Override {
        let suffixed = |h: &clap::builder::StyledStr| format!("{h} [default: the run's]");
        arg = arg.default_value(None::<&str>);
        if let Some(help) = arg.get_help().map(suffixed) {
            arg = arg.help(help);
        }
        if let Some(long_help) = arg.get_long_help().map(suffixed) {
            arg = arg.long_help(long_help);
        }
    }
    arg
}

impl Args for ContinueArgs {
    fn augment_args(mut cmd: Command) -> Command {
        let run = RunArgs::augment_args(Command::new("run"));
        for (id, how) in TAKEN {
            cmd = cmd.arg(taken(&run, id, how));
        }
        // The stored run's API is replaced by a sandbox, never mixed with one.
        cmd.mut_arg("sandbox", |a| {
            a.conflicts_with_all(["base_url", "token_url"])
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ContinueArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(ContinueArgs {
            state: one(m, "state")?.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE)),
            out: one(m, "out")?,
            failures: one(m, "failures")?,
            summary: one(m, "summary")?,
            metrics: one(m, "metrics")?,
            rate: one(m, "rate")?,
            concurrency: one(m, "concurrency")?,
            max_duration: one(m, "max_duration")?,
            progress: one(m, "progress")?,
            progress_interval: one(m, "progress_interval")?,
            sandbox: one(m, "sandbox")?.unwrap_or(false),
            base_url: one(m, "base_url")?,
            token_url: one(m, "token_url")?,
            allow_insecure_http: one(m, "allow_insecure_http")?.unwrap_or(false),
        })
    }

    /// As clap's derive does: only the flags the matches hold change.
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        let given = Self::from_arg_matches(m)?;
        // Each field's clap id is its name.
        macro_rules! update {
            ($($field:ident),*) => {
                $(if m.contains_id(stringify!($field)) {
                    self.$field = given.$field;
                })*
            };
        }
        update!(
            state,
            out,
            failures,
            summary,
            metrics,
            rate,
            concurrency,
            max_duration,
            progress,
            progress_interval,
            sandbox,
            base_url,
            token_url,
            allow_insecure_http
        );
        Ok(())
    }
}

/// The value of flag `id`, if given.
fn one<T: Clone + Send + Sync + 'static>(
    m: &ArgMatches,
    id: &str,
) -> Result<Option<T>, clap::Error> {
    m.try_get_one::<T>(id).map(|v| v.cloned()).map_err(|e| {
        clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!("--{}: {e}", id.replace('_', "-")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, Parser};

    fn continued(args: &[&str]) -> ContinueArgs {
        let argv = ["trackmass", "resume"].iter().chain(args);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::cli::Command::Resume(a)) => *a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn an_update_changes_only_the_flags_it_is_given() {
        let cmd = ContinueArgs::augment_args(Command::new("resume"));
        let first = cmd
            .clone()
            .try_get_matches_from(["resume", "--rate", "5/s"])
            .expect("first");
        let mut args = ContinueArgs::from_arg_matches(&first).expect("first");
        let second = cmd
            .try_get_matches_from(["resume", "--concurrency", "3"])
            .expect("second");
        args.update_from_arg_matches(&second).expect("update");
        assert_eq!(args.rate.map(|r| r.to_string()), Some("5/s".to_string()));
        assert_eq!(args.concurrency, Some(3));
    }

    #[test]
    fn absent_flags_keep_the_runs_values_given_ones_are_read_with_runs_parsers() {
        let none = continued(&[]);
        assert_eq!(none.state, PathBuf::from(DEFAULT_STATE));
        assert_eq!(
            (
                none.out,
                none.rate,
                none.concurrency,
                none.progress_interval
            ),
            (None, None, None, None)
        );
        assert!(!none.sandbox && !none.allow_insecure_http);

        let given = continued(&[
            "--state",
            "s.db",
            "--out",
            "r.csv",
            "--rate",
            "600/min",
            "--concurrency",
            "3",
            "--max-duration",
            "6h",
            "--progress",
            "never",
            "--sandbox",
        ]);
        assert_eq!(given.state, PathBuf::from("s.db"));
        assert_eq!(given.out, Some(PathBuf::from("r.csv")));
        assert_eq!(given.rate, Some("600/min".parse().expect("rate")));
        assert_eq!(given.concurrency, Some(3));
        assert_eq!(given.max_duration, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(given.progress, Some(ProgressMode::Never));
        assert!(given.sandbox);
    }

    #[test]
    fn a_continuation_refuses_what_run_refuses() {
        for bad in [
            ["--concurrency", "0"],
            ["--rate", "fast"],
            ["--progress-interval", "1ms"],
        ] {
            let first_line =
                |command: &[&str]| match Cli::try_parse_from(command.iter().chain(&bad)) {
                    Ok(_) => panic!("{command:?} {bad:?} was taken"),
                    Err(e) => (e.kind(), e.to_string().lines().next().map(str::to_string)),
                };
            assert_eq!(
                first_line(&["trackmass", "resume"]),
                first_line(&["trackmass", "run", "in.csv"]),
                "{bad:?}"
            );
        }
        let argv = [
            "trackmass",
            "retry",
            "--sandbox",
            "--base-url",
            "https://x.example",
        ];
        match Cli::try_parse_from(argv) {
            Ok(_) => panic!("--sandbox with --base-url was taken"),
            Err(e) => assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict),
        }
    }

    #[test]
    fn help_says_the_default_is_the_runs_and_keeps_runs_words() {
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("run");
        for sub in ["resume", "retry"] {
            let continuation = command.find_subcommand(sub).expect(sub);
            for (id, how) in TAKEN {
                let arg = continuation
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .unwrap_or_else(|| panic!("{sub} lacks {id}"));
                let original = run.get_arguments().find(|a| a.get_id() == id).expect(id);
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let run_help = original
                    .get_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(help.starts_with(&run_help), "{sub} {id}: {help}");
                assert_eq!(
                    help.ends_with("[default: the run's]"),
                    how == Taken::Override,
                    "{sub} {id}: {help}"
                );
                if how == Taken::Override {
                    assert!(
                        arg.get_default_values().is_empty(),
                        "{sub} {id} has a default"
                    );
                }
            }
        }
    }
}
