//! Config file + environment + flags -> one validated [`Config`].
//!
//! Parsing and validation are two steps, as in ripgrep's LowArgs -> HiArgs:
//! the TOML is deserialized strictly ([`file`]), then flags are merged in
//! and everything is checked once, so the rest of stencil never sees an
//! unvalidated value. Precedence: defaults < config file < environment <
//! flags (clap already folds `STENCIL_*` variables into the flags).
//!
//! A run reads its config once ([`Flags::load`]); watch and exec keep the
//! [`Flags`] and call it again on SIGHUP or an edit of the file, so a reload
//! sees the same flags over the new file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::cli::TemplateArgs;
use crate::error::{UsageContext, usage};
use crate::source::SourceSpec;
use crate::spec::{CommandSpec, Debounce, de_command_opt, duration_serde, signal_serde_opt};
use crate::template::{Limits, Whitespace};

mod file;
mod sources;

pub use sources::parse_source_flag;

/// The default time a check or reload command may run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated configuration every command works from.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The config file, when one was given.
    pub file: Option<PathBuf>,
    /// The quiescence period of templates without their own `wait`:
    /// `--debounce`, else the file's top-level `wait`.
    pub wait: Option<Debounce>,
    /// Where watch and exec serve health and metrics: `--listen`, else
    /// `[listen] address`.
    pub listen: Option<SocketAddr>,
    pub sources: BTreeMap<String, SourceSpec>,
    pub templates: Vec<TemplateSpec>,
    /// The `[exec]` table, for `stencil exec`; its flags win over it.
    pub exec: Option<ExecTable>,
    /// The top-level `on_reload_failure`: what templates that set none of
    /// their own (and `-t` templates) do when their reload fails.
    pub on_reload_failure: OnReloadFailure,
    /// The top-level `trim_blocks`, `lstrip_blocks`,
    /// `keep_trailing_newline`: what a template without its own gets.
    pub whitespace: Whitespace,
    /// `[limits]`: what one render may do.
    pub limits: Limits,
    /// `[limits] stall_timeout`: how long the watch loop may go without
    /// turning before `/healthz` fails.
    #[serde(with = "duration_serde")]
    pub stall_timeout: Duration,
}

/// The default `stall_timeout`: far longer than a turn of the loop takes
/// (renders run beside it), short enough for a liveness probe to act.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Config {
        Config {
            file: None,
            wait: None,
            listen: None,
            sources: BTreeMap::new(),
            templates: Vec::new(),
            exec: None,
            on_reload_failure: OnReloadFailure::default(),
            whitespace: Whitespace::default(),
            limits: Limits::default(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// What a failed reload does to the files it was reloading onto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReloadFailure {
    /// The new file stays: the next restart of the service reads it.
    #[default]
    Keep,
    /// The previous file is put back and the reload runs again onto it.
    Restore,
}

/// What the command line says about the configuration. Watch and exec keep
/// it to read the config again on reload with the same flags on top.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub templates: TemplateArgs,
    /// `--listen`: wins over `[listen]`.
    pub listen: Option<SocketAddr>,
    /// `--debounce`: wins over the top-level `wait`.
    pub debounce: Option<Debounce>,
    /// No template is fine: `exec --wait … -- app` only waits (dockerize and
    /// wait-for-it users do exactly that).
    pub templates_optional: bool,
}

impl From<&TemplateArgs> for Flags {
    fn from(templates: &TemplateArgs) -> Flags {
        Flags {
            templates: templates.clone(),
            ..Flags::default()
        }
    }
}

impl Flags {
    /// Reads the config file (if any) and merges the flags over it.
    pub fn load(&self) -> Result<Config> {
        let mut config = Config::load(&self.templates)?;
        if config.templates.is_empty() && !self.templates_optional {
            return Err(usage(
                "no templates: give -t SRC[:DEST] or a config file (-c) with [[templates]]",
            ));
        }
        config.listen = self.listen.or(config.listen);
        config.wait = self.debounce.or(config.wait);
        Ok(config)
    }
}

/// The `[exec]` table of the config file, as written. Flags win over it;
/// a command after `--` wins over `command`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecTable {
    /// A string runs with `sh -c`; an array is argv, no shell.
    #[serde(default, deserialize_with = "de_command_opt")]
    pub command: Option<CommandSpec>,
    #[serde(default, with = "signal_serde_opt")]
    pub reload_signal: Option<Signal>,
    #[serde(default)]
    pub restart_on_change: Option<bool>,
    #[serde(default, with = "signal_serde_opt")]
    pub kill_signal: Option<Signal>,
    #[serde(default, with = "crate::spec::duration_serde_opt")]
    pub kill_timeout: Option<Duration>,
    #[serde(default)]
    pub signal_group: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stdout => f.write_str("stdout"),
            Destination::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One template to render and where its output goes.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateSpec {
    pub source: PathBuf,
    pub destination: Destination,
    /// Default source for key()/ls()/...; may be omitted when there is one.
    pub data: Option<String>,
    #[serde(serialize_with = "mode_str")]
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub check: Option<CommandSpec>,
    pub reload: Option<CommandSpec>,
    pub on_reload_failure: OnReloadFailure,
    #[serde(with = "duration_serde")]
    pub command_timeout: Duration,
    pub backup: bool,
    pub create_dirs: bool,
    /// `secret = true`: the output is never shown (`--diff`, `--dry-run`
    /// without `--show-secrets`), nor its commands' output in `/status`.
    pub secret: bool,
    pub wait: Option<Debounce>,
    /// Jinja's whitespace switches for this template.
    pub whitespace: Whitespace,
    /// Where this template was declared, for error messages:
    /// `stencil.toml:12` or `-t flag`.
    pub origin: String,
}

impl TemplateSpec {
    /// Whether the output is for its owner's eyes only: `secret = true`, or
    /// a mode that gives nothing to group and others (`0600`, `0400`).
    pub(crate) fn is_secret(&self) -> bool {
        self.secret || self.mode.is_some_and(|m| m & 0o077 == 0)
    }
}

/// Modes printed as `"0644"` in `--print-config`.
#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
fn mode_str<S: serde::Serializer>(m: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(&format!("{m:04o}")),
        None => s.serialize_none(),
    }
}

impl Config {
    /// Reads the config file (if any) and merges the template and source
    /// flags into it.
    fn load(args: &TemplateArgs) -> Result<Config> {
        let mut config = Config::default();
        if let Some(path) = &args.config {
            config.file = Some(path.clone());
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))
                .usage_context(|| "invalid configuration".into())?;
            config
                .merge_toml(path, &text)
                .usage_context(|| format!("invalid config file {}", path.display()))?;
        }
        for data in &args.data {
            let (name, path) = data_flag(data);
            let spec = SourceSpec::File {
                path: PathBuf::from(path),
                prefix: String::new(),
            };
            config.add_source(&name, spec, &format!("--data {data}"))?;
        }
        for source in &args.sources {
            let (name, spec) = parse_source_flag(source)?;
            config.add_source(&name, spec, &format!("--source {source}"))?;
        }
        for flag in &args.templates {
            let mut t = parse_template_flag(flag)?;
            t.on_reload_failure = config.on_reload_failure;
            t.whitespace = config.whitespace;
            // --check, --create-dirs, --mode, --owner, --group: what a
            // [[templates]] table can say, for the -t templates of this run.
            if let Some(check) = &args.check {
                t.check = Some(CommandSpec::Shell(check.clone()));
            }
            t.create_dirs |= args.create_dirs;
            t.mode = args.mode.or(t.mode);
            t.owner = args.owner.clone().or(t.owner);
            t.group = args.group.clone().or(t.group);
            config.templates.push(t);
        }
        if let Some((template, data)) = &args.stdout_template {
            config.add_stdout_template(template, data.as_deref())?;
        }
        config.validate()?;
        Ok(config)
    }

    /// `stencil render TEMPLATE [DATA]`: TEMPLATE to stdout, DATA (a file,
    /// named as --data names it) its default source.
    fn add_stdout_template(&mut self, template: &Path, data: Option<&Path>) -> Result<()> {
        let mut t = parse_template_flag("-")?;
        t.source = template.to_path_buf();
        t.origin = template.display().to_string();
        t.on_reload_failure = self.on_reload_failure;
        t.whitespace = self.whitespace;
        if let Some(path) = data {
            let (name, _) = data_flag(&path.to_string_lossy());
            let spec = SourceSpec::File {
                path: path.to_path_buf(),
                prefix: String::new(),
            };
            self.add_source(&name, spec, &path.display().to_string())?;
            t.data = Some(name);
        }
        self.templates.push(t);
        Ok(())
    }

    /// A config file's text as `load` reads it, without flags or
    /// validation across templates (for the fuzz target and tools).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config> {
        let mut config = Config {
            file: Some(path.to_path_buf()),
            ..Config::default()
        };
        config.merge_toml(path, text)?;
        Ok(config)
    }

    fn add_source(&mut self, name: &str, spec: SourceSpec, origin: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(usage(format!(
                "{origin}: invalid source name {name:?}: use letters, digits, '_' and '-'"
            )));
        }
        if self.sources.contains_key(name) {
            return Err(usage(format!(
                "{origin}: a source named {name:?} is already defined; give this one another name (NAME=...)"
            )));
        }
        self.sources.insert(name.to_string(), spec);
        Ok(())
    }

    /// Checks what only makes sense across the whole config.
    fn validate(&self) -> Result<()> {
        let mut seen: HashMap<PathBuf, &str> = HashMap::new();
        for t in &self.templates {
            if let Destination::File(dest) = &t.destination {
                if let Some(first) = seen.insert(normalize(dest), &t.origin) {
                    return Err(usage(format!(
                        "{}: destination {} is also written by the template at {first}; \
                         two templates cannot write one file",
                        t.origin,
                        dest.display()
                    )));
                }
            }
            self.validate_template(t)?;
        }
        Ok(())
    }

    fn validate_template(&self, t: &TemplateSpec) -> Result<()> {
        if let Some(data) = &t.data {
            if !self.sources.contains_key(data) {
                return Err(usage(format!(
                    "{}: data = {data:?} names no source; defined: {}",
                    t.origin,
                    self.source_names()
                )));
            }
        }
        if t.destination == Destination::Stdout
            && (t.check.is_some() || t.backup || t.reload.is_some())
        {
            return Err(usage(format!(
                "{}: check, reload and backup need a destination file, not stdout",
                t.origin
            )));
        }
        if t.reload.as_ref().is_some_and(|r| r.mentions("staged")) {
            return Err(usage(format!(
                "{}: reload runs after install, when there is no staged file: \
                 use {{{{ destination }}}} (or move the command to check)",
                t.origin
            )));
        }
        Ok(())
    }

    pub fn source_names(&self) -> String {
        if self.sources.is_empty() {
            "none".into()
        } else {
            self.sources
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The name of the source key()/ls()/... read when no `source=` is given.
    pub fn default_source(&self, t: &TemplateSpec) -> Option<String> {
        t.data.clone().or_else(|| {
            (self.sources.len() == 1)
                .then(|| self.sources.keys().next().cloned().unwrap_or_default())
        })
    }
}

/// `SRC[:DEST[:RELOAD]]`. RELOAD is everything after the second colon, so a
/// reload command may contain colons itself.
pub fn parse_template_flag(flag: &str) -> Result<TemplateSpec> {
    let mut parts = flag.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    if source.is_empty() {
        return Err(usage(format!(
            "-t {flag:?}: missing template path; expected SRC[:DEST[:RELOAD]]"
        )));
    }
    let destination = match parts.next() {
        None | Some("" | "-") => Destination::Stdout,
        Some(d) => Destination::File(PathBuf::from(d)),
    };
    let reload = match parts.next() {
        None | Some("") => None,
        Some(cmd) => Some(CommandSpec::Shell(cmd.to_string())),
    };
    if reload.is_some() && destination == Destination::Stdout {
        return Err(usage(format!(
            "-t {flag:?}: a reload command needs a destination file"
        )));
    }
    Ok(TemplateSpec {
        source: PathBuf::from(source),
        destination,
        data: None,
        mode: None,
        owner: None,
        group: None,
        check: None,
        reload,
        on_reload_failure: OnReloadFailure::Keep,
        command_timeout: DEFAULT_COMMAND_TIMEOUT,
        backup: false,
        create_dirs: false,
        secret: false,
        wait: None,
        whitespace: Whitespace::default(),
        origin: format!("-t {flag}"),
    })
}

/// `--data [NAME=]FILE`: the source's name and the file. Without NAME,
/// the file's stem with what a name may not hold as `_`:
/// `vars/nginx.conf.yml` is source `nginx_conf`.
fn data_flag(data: &str) -> (String, &str) {
    if let Some((name, path)) = data.split_once('=') {
        if valid_name(name) {
            return (name.to_string(), path);
        }
    }
    let name = Path::new(data)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("data")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (name, data)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Lexical normalization, so `a/./b` and `a/b` count as one destination.
fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_flag_keeps_colons_in_the_reload_command() {
        let t = parse_template_flag("a.j2:/etc/a.conf:curl -X POST http://x:9/reload").unwrap();
        assert_eq!(t.destination, Destination::File("/etc/a.conf".into()));
        assert_eq!(
            t.reload,
            Some(CommandSpec::Shell("curl -X POST http://x:9/reload".into()))
        );
    }

    #[test]
    fn template_flag_without_dest_is_stdout() {
        assert_eq!(
            parse_template_flag("a.j2").unwrap().destination,
            Destination::Stdout
        );
        assert_eq!(
            parse_template_flag("a.j2:-").unwrap().destination,
            Destination::Stdout
        );
    }

    #[test]
    fn flags_win_over_the_file_for_listen_and_wait() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "wait = { min = \"1s\" }\n[listen]\naddress = \"127.0.0.1:1\"\n\
             [[templates]]\nsource = \"a.j2\"\n",
        )
        .unwrap();
        let mut flags = Flags::from(&TemplateArgs {
            config: Some(file),
            ..TemplateArgs::default()
        });
        let config = flags.load().unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(config.wait, Some(Debounce::parse("1s").unwrap()));
        flags.listen = Some("127.0.0.1:2".parse().unwrap());
        flags.debounce = Some(Debounce::parse("2s").unwrap());
        let config = flags.load().unwrap();
        assert_eq!(config.listen, flags.listen);
        assert_eq!(config.wait, flags.debounce);
    }
}
