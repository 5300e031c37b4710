//! Command-line interface: one clap-derive tree.
//!
//! Every option can also be set as `STENCIL_<NAME>` in the environment
//! (12-factor); flags win over the environment, which wins over the config
//! file. The doc comments here become `--help` and the man pages in man/, so
//! they carry the examples.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::spec::{Debounce, parse_duration, parse_listen, parse_mode};

mod convert;
pub use convert::{ConfdArgs, ConsulTemplateArgs, ConvertArgs, ConvertCommand};

mod exec;
use exec::EXEC_EXAMPLES;
pub use exec::ExecArgs;

mod parse;
pub use parse::parse;

const ABOUT: &str = "Render configuration files from templates with data from environment \
variables, data files, Consul and etcd; install them atomically; check before and reload after.";

/// `stencil --version`: the version, the git commit and the build date
/// (build.rs), as rustc prints them. `-V` and the man pages show the version alone, so the
/// committed pages do not change with every commit.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("STENCIL_GIT_COMMIT"),
    " ",
    env!("STENCIL_BUILD_DATE"),
    ")"
);

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

  # The sidecar: keep files current, reload, serve health and metrics:
  stencil watch -c /etc/stencil/stencil.toml --listen 127.0.0.1:9180

  # The container entrypoint: render, wait for the database, become the app:
  stencil exec -t /tpl/app.conf.j2:/etc/app.conf --wait tcp://db:5432 -- app --serve

  # Replace envsubst:
  stencil subst '$HOST $PORT' < in.conf > out.conf

Exit status, the same for every command and the same error:
  0  done: every file is in place
  1  something failed while running: a render (missing data), a check or
     reload command, a source, a write, a --wait
  2  something a person must fix before anything can run: a flag, the
     config file, a template or data file that is missing or does not parse
  exec passes its app's status through (stencil-exec(1)).";

#[derive(Debug, Parser)]
#[command(
    name = "stencil",
    version,
    long_version = LONG_VERSION,
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

    /// Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when
    /// stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]
    #[arg(long, global = true, env = "STENCIL_LOG_TIMESTAMPS", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", require_equals = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub log_timestamps: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(l: LogLevel) -> tracing::Level {
        match l {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
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
    /// render, install or command failed, 2 a usage or configuration error
    /// (a missing or unparsable template or data file included).
    /// A failed render, check or write leaves the old file byte for byte.
    #[command(after_help = RENDER_EXAMPLES)]
    Render(RenderArgs),

    /// Keep files current: re-render and reload when their data changes.
    ///
    /// Watches exactly what each template read (etcd and Consul keys, data
    /// files, the templates themselves), re-renders only the templates a
    /// change affects, and keeps the last good file while a source is down
    /// or a render fails. SIGHUP reloads the configuration; SIGTERM and
    /// SIGINT exit 0 after the batch in progress (at most 5 s). Renders run
    /// within [limits] (stencil.toml(5)); /healthz fails when the loop is
    /// stuck for stall_timeout.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),

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

    /// Render, wait for dependencies, then become the app: the container entrypoint.
    ///
    /// Renders every template as render does (waiting up to --wait-for-data
    /// for missing data), waits for each --wait dependency, then replaces
    /// itself with CMD through exec(2): the app keeps stencil's PID, its
    /// environment, arguments, stdin, stdout and stderr exactly, and gets
    /// signals directly. A failed render or wait exits non-zero before the
    /// app starts, naming what failed.
    ///
    /// With --watch, stencil stays as the app's parent and supervises it: the
    /// app runs in its own process group; SIGHUP, SIGINT, SIGQUIT, SIGTERM,
    /// SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the app's process (to
    /// its whole group with --signal-group) and nothing else; SIGTERM and
    /// SIGINT also SIGKILL the group if it still runs
    /// after --kill-timeout; orphaned processes are reaped. Exit status: the
    /// app's, or 128+N when signal N killed it (137 after the SIGKILL); 1 when
    /// a render or wait failed; 2 on a usage error; 126 when CMD cannot be
    /// run, 127 when it is not found.
    #[command(after_help = EXEC_EXAMPLES)]
    Exec(ExecArgs),

    /// Turn a confd or consul-template setup into stencil.toml and Jinja templates.
    ///
    /// Writes DIR/stencil.toml and DIR/templates/*.j2, refusing to overwrite
    /// unless --force, and prints a report of every judgement call.
    Convert(ConvertArgs),

    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  stencil completions bash > /usr/share/bash-completion/completions/stencil"
    )]
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
  # To stdout with a data file's variables, like j2 and minijinja-cli:
  stencil render nginx.conf.j2 vars/nginx.yml

  # One file, data from the environment:
  HOST=db.internal stencil render -t app.conf.j2:/etc/app/app.conf

  # With a reload command (the third field):
  stencil render -t nginx.conf.j2:/etc/nginx/nginx.conf:'nginx -s reload'

  # Data from a JSON, TOML, YAML or .env file, read with key('db/host'):
  stencil render --data vars.json -t app.conf.j2:/etc/app/app.conf

  # Everything in a config file; show the diff, write nothing:
  stencil render -c stencil.toml --dry-run --diff";

const WATCH_EXAMPLES: &str = "\
Examples:
  # The sidecar: watch, reload, serve health and metrics:
  stencil watch -c /etc/stencil/stencil.toml --listen 127.0.0.1:9180

  # Wait until the data has been quiet for 500ms (at most 5s) before acting:
  stencil watch -c stencil.toml --debounce 500ms:5s

  # Render once, waiting for data to appear, run the commands, exit:
  stencil watch -c stencil.toml --once";

const CHECK_EXAMPLES: &str = "\
Examples:
  stencil check -c /etc/stencil/stencil.toml
  stencil check -t app.conf.j2:/etc/app.conf";

const DEPS_EXAMPLES: &str = "\
Example:
  stencil deps -c stencil.toml";

/// `stencil subst -h` shows these; `--help` adds to them (after_long_help).
macro_rules! subst_examples {
    () => {
        "\
Examples:
  # Replace every variable (GNU envsubst's default):
  stencil subst < in.conf > out.conf

  # Only $HOST and $PORT; leaves nginx's $host and $remote_addr alone:
  stencil subst '$HOST $PORT' < nginx.conf.tmpl > nginx.conf

  # Which variables does a format name?
  stencil subst --variables '$HOST ${PORT}'"
    };
}

const SUBST_EXAMPLES: &str = subst_examples!();

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
    /// etcd=http://127.0.0.1:2379?prefix=/apps/web/ reads etcd and
    /// consul=http://127.0.0.1:8500?prefix=apps/web/ reads Consul KV (or
    /// etcd+http://… and consul+http://… under any name). The source is then
    /// read in templates with key('k', source='NAME').
    #[arg(long = "source", env = "STENCIL_SOURCE", value_name = "NAME=URL")]
    pub sources: Vec<String>,

    /// Print the configuration as stencil understood it, then exit.
    #[arg(long, env = "STENCIL_PRINT_CONFIG")]
    pub print_config: bool,

    /// For the -t templates: check the staged file with CMD before installing it.
    ///
    /// As `check` in stencil.toml(5): a shell command, {{ staged }} is the
    /// staged file. Example: --check 'nginx -t -c {{ staged }}'.
    #[arg(long = "check", env = "STENCIL_CHECK", value_name = "CMD")]
    pub check: Option<String>,

    /// For the -t templates: create a missing destination directory.
    #[arg(long, env = "STENCIL_CREATE_DIRS")]
    pub create_dirs: bool,

    /// For the -t templates: the file mode, octal as chmod takes it (e.g. 0640).
    #[arg(long, env = "STENCIL_MODE", value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<u32>,

    /// For the -t templates: the owner of the file, a name or a numeric id.
    #[arg(long, env = "STENCIL_OWNER", value_name = "USER")]
    pub owner: Option<String>,

    /// For the -t templates: the group of the file, a name or a numeric id.
    #[arg(long, env = "STENCIL_GROUP", value_name = "GROUP")]
    pub group: Option<String>,

    /// `stencil render TEMPLATE [DATA]`: a template to stdout, and the data
    /// file that is its default source.
    #[arg(skip)]
    pub stdout_template: Option<(PathBuf, Option<PathBuf>)>,
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// A template to render to stdout, as j2 and minijinja-cli do.
    ///
    /// Adds to -t and the config file's templates.
    #[arg(value_name = "TEMPLATE")]
    pub template: Option<PathBuf>,

    /// A data file for TEMPLATE (JSON, TOML, YAML or .env): its top-level
    /// keys are variables, typed ({{ server.port }}, {{ vars.server.port }}).
    #[arg(value_name = "DATA", requires = "template")]
    pub data_file: Option<PathBuf>,

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

    /// With --diff or --dry-run, show the content of secret files too.
    ///
    /// A file whose mode gives nothing to group or others (0600, 0400 …),
    /// or whose template says secret = true, is shown as its size and a
    /// hash unless this is given. Example: stencil render --diff --show-secrets
    #[arg(long, env = "STENCIL_SHOW_SECRETS")]
    pub show_secrets: bool,

    /// Install files but run no reload command.
    #[arg(long, env = "STENCIL_NO_RELOAD")]
    pub no_reload: bool,

    /// How long to wait for missing data before failing (e.g. 30s, 2m). Default: fail at once.
    #[arg(long, env = "STENCIL_WAIT_FOR_DATA", value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for_data: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub templates: TemplateArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub watch: WatchOptions,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Watching")]
pub struct WatchOptions {
    /// Serve /healthz, /readyz, /metrics and /status on this address (e.g. 127.0.0.1:9180).
    ///
    /// A bare port (--listen 9180) is 127.0.0.1:9180: the endpoints have no
    /// authentication, so reaching them from elsewhere takes an explicit
    /// address (--listen 0.0.0.0:9180), which logs a warning.
    #[arg(long, env = "STENCIL_LISTEN", value_name = "ADDR|PORT", value_parser = parse_listen)]
    pub listen: Option<std::net::SocketAddr>,

    /// Render everything once, waiting for missing data, run the commands, then exit.
    #[arg(long, env = "STENCIL_ONCE")]
    pub once: bool,

    /// Quiet period before acting on a change: MIN or MIN:MAX (default MAX: 4 × MIN).
    ///
    /// For templates without their own `wait`; the config file's top-level
    /// `wait = { min, max }` sets the same.
    #[arg(long, env = "STENCIL_DEBOUNCE", value_name = "MIN[:MAX]", value_parser = Debounce::parse)]
    pub debounce: Option<Debounce>,
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
#[command(after_long_help = concat!(subst_examples!(), "

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
  exit status 1 naming every such variable, with nothing written."))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
