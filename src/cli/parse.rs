//! Parsing with a clap tree of the one subcommand that runs.
//!
//! Building the whole derive tree (every subcommand, every argument, the
//! completion shells) and dropping it was about a fifth of a one-shot
//! render's instructions. When the arguments name a subcommand, a tree of
//! the root's global arguments and that subcommand alone parses them, with
//! the same `Args` derives, so the values and the `STENCIL_*` variables are
//! the same. Anything that tree refuses (an error, --help, --version) is
//! parsed again by the whole tree, so help and error messages are exactly
//! the whole tree's; completions and man pages are built from it too.

use std::ffi::OsString;

use clap::{Args, FromArgMatches, Parser};

use super::{CheckArgs, Cli, DepsArgs, ExecArgs, GlobalArgs, RenderArgs, SubstArgs, WatchArgs};

/// Parses `args` (the first is the program name) as [`Cli::try_parse_from`]
/// does.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    if let Some(tree) = subcommand_name(&args).and_then(one_subcommand)
        && let Ok(matches) = tree.try_get_matches_from(&args)
        && let Ok(cli) = Cli::from_arg_matches(&matches)
    {
        return Ok(cli);
    }
    Cli::try_parse_from(args)
}

/// The subcommand the arguments name: the first argument that is not a
/// global option or its value. None when anything else comes first, which
/// the whole tree then handles (an error or help).
fn subcommand_name(args: &[OsString]) -> Option<&str> {
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let arg = arg.to_str()?;
        match arg {
            "--log-level" | "--log-format" => {
                rest.next()?;
            }
            _ if arg.starts_with("--log-level=")
                || arg.starts_with("--log-format=")
                || arg == "--log-timestamps"
                || arg.starts_with("--log-timestamps=") => {}
            _ if arg.starts_with('-') => return None,
            _ => return Some(arg),
        }
    }
    None
}

/// The root with its global arguments and the subcommand `name` alone.
/// The subcommand's about and examples are left out: only the whole tree
/// prints help.
fn one_subcommand(name: &str) -> Option<clap::Command> {
    use clap::Command;
    let sub = match name {
        "render" => RenderArgs::augment_args(Command::new("render")),
        "watch" => WatchArgs::augment_args(Command::new("watch")),
        "check" => CheckArgs::augment_args(Command::new("check")),
        "deps" => DepsArgs::augment_args(Command::new("deps")),
        "subst" => SubstArgs::augment_args(Command::new("subst")),
        "exec" => ExecArgs::augment_args(Command::new("exec")),
        _ => return None,
    };
    let root = clap::Command::new("stencil")
        .subcommand_required(true)
        .subcommand(sub);
    Some(GlobalArgs::augment_args(root))
}

/// The subcommands [`one_subcommand`] builds alone, for the test that
/// compares them with the whole tree's. (convert, completions and man are
/// rarely run and parse with the whole tree.)
#[cfg(test)]
const FAST: &[&str] = &["render", "watch", "check", "deps", "subst", "exec"];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Every argument of a subcommand as the parser sees it: id, flags,
    /// variable, defaults, whether global, how many values. Not --version:
    /// the whole tree answers it.
    fn shape(cmd: &clap::Command) -> Vec<String> {
        let mut args: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_id() != "version")
            .map(|a| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {} {} {} {:?} {:?} {:?}",
                    a.get_id(),
                    a.get_short(),
                    a.get_long(),
                    a.get_env(),
                    a.get_default_values(),
                    a.is_global_set(),
                    a.is_required_set(),
                    a.is_require_equals_set(),
                    a.get_num_args(),
                    a.get_action(),
                    a.get_value_delimiter(),
                )
            })
            .collect();
        args.sort();
        args
    }

    #[test]
    fn one_subcommand_has_the_whole_trees_arguments() {
        let mut whole = Cli::command();
        whole.build();
        for name in FAST {
            let mut one = one_subcommand(name).unwrap();
            one.build();
            assert_eq!(shape(&one), shape(&whole), "root arguments beside {name}");
            let a = one.find_subcommand(name).unwrap();
            let b = whole.find_subcommand(name).unwrap();
            assert_eq!(shape(a), shape(b), "{name}");
        }
        let every: Vec<&str> = whole.get_subcommands().map(|c| c.get_name()).collect();
        for name in every {
            if !FAST.contains(&name) {
                assert!(one_subcommand(name).is_none(), "{name}");
            }
        }
    }

    #[test]
    fn parses_as_the_whole_tree() {
        for args in [
            &["stencil", "render", "-t", "a.j2", "-t", "b.j2:/tmp/b"][..],
            &[
                "stencil",
                "--log-level",
                "debug",
                "render",
                "--dry-run",
                "--diff",
            ],
            &["stencil", "--log-format=json", "check", "-c", "x.toml"],
            &["stencil", "--log-timestamps", "deps", "--json", "-t", "a"],
            &[
                "stencil",
                "render",
                "--log-timestamps=false",
                "--mode",
                "0640",
            ],
            &["stencil", "subst", "$A ${B}", "-o", "out"],
            &["stencil", "watch", "--listen", "9180", "--debounce", "1s"],
            &[
                "stencil", "exec", "-t", "a.j2", "--", "app", "--serve", "-x",
            ],
        ] {
            let fast = parse(os(args)).unwrap();
            let whole = Cli::try_parse_from(os(args)).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{whole:?}"), "{args:?}");
        }
    }

    #[test]
    fn errors_and_help_are_the_whole_trees() {
        for args in [
            &["stencil", "render", "--nope"][..],
            &["stencil", "render", "--help"],
            &["stencil", "render", "--mode", "99"],
            &["stencil", "--version"],
            &["stencil", "subst", "-V"],
            &["stencil"],
            &["stencil", "rendr"],
        ] {
            let fast = parse(os(args)).unwrap_err();
            let whole = Cli::try_parse_from(os(args)).unwrap_err();
            assert_eq!(fast.render().to_string(), whole.render().to_string());
            assert_eq!(fast.kind(), whole.kind());
        }
    }

    #[test]
    fn finds_the_subcommand_after_global_options() {
        let name = |a: &[&str]| subcommand_name(&os(a)).map(str::to_string);
        assert_eq!(name(&["s", "render"]).as_deref(), Some("render"));
        assert_eq!(
            name(&["s", "--log-level", "debug", "exec"]).as_deref(),
            Some("exec")
        );
        assert_eq!(
            name(&["s", "--log-level=debug", "watch"]).as_deref(),
            Some("watch")
        );
        assert_eq!(
            name(&["s", "--log-timestamps", "subst"]).as_deref(),
            Some("subst")
        );
        assert_eq!(name(&["s", "-h", "render"]), None);
        assert_eq!(name(&["s", "--log-level"]), None);
    }
}
