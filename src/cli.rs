//! Command-line interface: one clap-derive tree.
//!
//! Every option can also be set as `STENCIL_<NAME>` in the environment
//! (12-factor); flags win over the environment, which wins over the config
//! file. The doc comments here become `--help` and the man pages in man/, so
//! they carry the examples.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Render configuration files from templates with data from environment \
variables, data files, Consul and etcd; install them atomically; check before and reload after.";

const EXAMPLES: &str = "\
Examples:
  # Render one file from the environment, installing it atomically:
  stencil render -t app.conf.j2:/etc/app/app.conf

  # Render to stdout:
  stencil render -t app.conf.j2

  # Everything a config file describes, showing what would change:
  stencil render -c /etc/stencil/stencil.toml --dry-run --diff

  # Validate config and templates without touching anything:
  stencil check -c stencil.toml

  # Replace envsubst:
  stencil subst '$HOST $PORT' < in.conf > out.conf";

#[derive(Debug, Parser)]
#[command(
    name = "stencil",
    version,
    about = ABOUT,
    after_help = EXAMPLES,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Logging")]
pub struct GlobalArgs {
    /// How much to log on stderr.
    #[arg(long, global = true, env = "STENCIL_LOG", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log line format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, env = "STENCIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render templates once, install the files that changed, run their commands.
    ///
    /// The exit status says whether every file is in place: 0 all done, 1 a
    /// render, install or command failed, 2 a usage or configuration error.
    /// A failed render, check or write leaves the old file byte for byte.
    #[command(after_help = RENDER_EXAMPLES)]
    Render(RenderArgs),

    /// Parse the config and every template; touch no network, write nothing.
    ///
    /// Lists every error found, not just the first, and exits 2 if there is any.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),

    /// Show what each template reads: env vars, keys, prefixes and files.
    ///
    /// Renders every template in memory (writing nothing, running nothing)
    /// and prints the reads recorded while rendering. Watch mode watches
    /// exactly these.
    #[command(after_help = DEPS_EXAMPLES)]
    Deps(DepsArgs),

    /// Substitute environment variables in shell format strings (envsubst).
    ///
    /// Reads standard input, replaces references of the form $VAR and ${VAR}
    /// with the values of environment variables, and writes to standard
    /// output, byte for byte like GNU envsubst. With SHELL-FORMAT, only the
    /// variables it names are replaced.
    #[command(after_help = SUBST_EXAMPLES)]
    Subst(SubstArgs),

    /// Print a shell completion script.
    #[command(after_help = "Example:\n  stencil completions bash > /etc/bash_completion.d/stencil")]
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Write the man pages (stencil.1 and one per command) into a directory.
    #[command(after_help = "Example:\n  stencil man man/")]
    Man {
        /// Directory to write the pages into.
        #[arg(default_value = "man")]
        dir: PathBuf,
    },
}

const RENDER_EXAMPLES: &str = "\
Examples:
  # One file, data from the environment:
  HOST=db.internal stencil render -t app.conf.j2:/etc/app/app.conf

  # With a reload command (the third field):
  stencil render -t nginx.conf.j2:/etc/nginx/nginx.conf:'nginx -s reload'

  # Data from a JSON, TOML, YAML or .env file, read with key('db/host'):
  stencil render --data vars.json -t app.conf.j2:/etc/app/app.conf

  # Everything in a config file; show the diff, write nothing:
  stencil render -c stencil.toml --dry-run --diff";

const CHECK_EXAMPLES: &str = "\
Examples:
  stencil check -c /etc/stencil/stencil.toml
  stencil check -t app.conf.j2:/etc/app.conf";

const DEPS_EXAMPLES: &str = "\
Example:
  stencil deps -c stencil.toml";

const SUBST_EXAMPLES: &str = "\
Examples:
  # Replace every variable (GNU envsubst's default):
  stencil subst < in.conf > out.conf

  # Only $HOST and $PORT; leaves nginx's $host and $remote_addr alone:
  stencil subst '$HOST $PORT' < nginx.conf.tmpl > nginx.conf

  # Which variables does a format name?
  stencil subst --variables '$HOST ${PORT}'";

/// Where templates, data and sources come from; shared by the commands that
/// render.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Templates and data")]
pub struct TemplateArgs {
    /// Config file (TOML) with [[templates]] and [sources.NAME]; see stencil.toml(5).
    #[arg(short = 'c', long, env = "STENCIL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A template to render: SRC, SRC:DEST or SRC:DEST:RELOAD.
    ///
    /// Without DEST, or with DEST "-", the output goes to stdout. RELOAD is a
    /// shell command run after DEST changed. Repeatable; adds to the config
    /// file's templates.
    #[arg(
        short = 't',
        long = "template",
        env = "STENCIL_TEMPLATE",
        value_name = "SRC[:DEST[:RELOAD]]"
    )]
    pub templates: Vec<String>,

    /// A data file as a source: [NAME=]FILE (JSON, TOML, YAML or .env).
    ///
    /// NAME defaults to the file name without its extension. Nested objects
    /// become /-separated keys: {"db": {"host": "x"}} is key('db/host').
    #[arg(long = "data", env = "STENCIL_DATA", value_name = "[NAME=]FILE")]
    pub data: Vec<String>,

    /// A source as NAME=URL; file:///path/data.json is a data file.
    ///
    /// The source is then read in templates with key('k', source='NAME').
    #[arg(long = "source", env = "STENCIL_SOURCE", value_name = "NAME=URL")]
    pub sources: Vec<String>,

    /// Print the configuration as stencil understood it, then exit.
    #[arg(long, env = "STENCIL_PRINT_CONFIG")]
    pub print_config: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub templates: TemplateArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Show what would be written (to stdout); write nothing, run no command.
    #[arg(long, env = "STENCIL_DRY_RUN")]
    pub dry_run: bool,

    /// Print a unified diff of each file that changes against its current content.
    #[arg(long, env = "STENCIL_DIFF")]
    pub diff: bool,

    /// Install files but run no reload command.
    #[arg(long, env = "STENCIL_NO_RELOAD")]
    pub no_reload: bool,

    /// How long to wait for missing data before failing (e.g. 30s, 2m). Default: fail at once.
    #[arg(long, env = "STENCIL_WAIT_FOR_DATA", value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for_data: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub templates: TemplateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DepsArgs {
    #[command(flatten)]
    pub templates: TemplateArgs,

    /// Print the dependencies as JSON instead of text.
    #[arg(long, env = "STENCIL_DEPS_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
#[command(after_long_help = "\
Examples:
  # Replace every variable (GNU envsubst's default):
  stencil subst < in.conf > out.conf

  # Only $HOST and $PORT; leaves nginx's $host and $remote_addr alone:
  stencil subst '$HOST $PORT' < nginx.conf.tmpl > nginx.conf

  # Which variables does a format name?
  stencil subst --variables '$HOST ${PORT}'

  # Defaults, and refuse to write a file with a blank in it:
  stencil subst --extended --no-empty -i app.conf.tmpl -o /etc/app.conf

Migrating from envsubst:
  Replace `envsubst` with `stencil subst`; arguments, input and output stay
  the same, byte for byte. The exit status of a usage error (missing
  SHELL-FORMAT for -v, too many arguments) is 2 where envsubst exits 1.
  --extended adds ${VAR:-default}, ${VAR-default}, ${VAR:=default},
  ${VAR=default}, ${VAR:?message}, ${VAR?message}, ${VAR:+alt} and
  ${VAR+alt} as in a POSIX shell (quotes in the word are kept as written;
  \\$, \\} and \\\\ escape). --no-unset and --no-empty turn a silent blank into
  exit status 1 naming every such variable, with nothing written.")]
pub struct SubstArgs {
    /// Only replace the variables named in this string, e.g. '$HOST ${PORT}'.
    ///
    /// Any other $NAME or ${NAME} passes through as written, so nginx's
    /// $host stays $host.
    #[arg(value_name = "SHELL-FORMAT")]
    pub shell_format: Option<std::ffi::OsString>,

    /// Print the variables named in SHELL-FORMAT, one per line, and exit.
    #[arg(short = 'v', long)]
    pub variables: bool,

    /// Also expand ${VAR:-default}, ${VAR:=default}, ${VAR:?message},
    /// ${VAR:+alt} and their forms without the colon, as a POSIX shell does.
    ///
    /// Off by default, so plain `stencil subst` stays GNU-identical (envsubst
    /// copies these forms unchanged).
    #[arg(long, env = "STENCIL_SUBST_EXTENDED")]
    pub extended: bool,

    /// Fail (exit 1, write nothing) if a referenced variable is unset,
    /// naming every such variable.
    #[arg(long, env = "STENCIL_SUBST_NO_UNSET")]
    pub no_unset: bool,

    /// Fail (exit 1, write nothing) if a referenced variable is empty or
    /// unset, naming every such variable. Implies --no-unset.
    #[arg(long, env = "STENCIL_SUBST_NO_EMPTY")]
    pub no_empty: bool,

    /// Read this file instead of standard input ("-": standard input).
    #[arg(short = 'i', long, env = "STENCIL_SUBST_INPUT", value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Write this file instead of standard output, atomically like render:
    /// staged beside it, fsynced, renamed over it; unchanged if equal.
    #[arg(short = 'o', long, env = "STENCIL_SUBST_OUTPUT", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Parses "500ms", "30s", "2m", "1h30m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); examples: 500ms, 30s, 2m"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
