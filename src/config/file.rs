//! The config file as written: TOML deserialized strictly, so an unknown
//! or mistyped key is an error with its line and column, then turned into
//! the plain values of [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::sources::SourceTable;
use super::{
    Config, DEFAULT_COMMAND_TIMEOUT, Destination, ExecTable, OnReloadFailure, TemplateSpec,
    valid_name,
};
use crate::spec::{CommandSpec, Debounce, de_command_opt, duration_serde, duration_serde_opt};
use crate::template::{MAX_DEPTH_CEILING, Whitespace};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    wait: Option<WaitToml>,
    listen: Option<ListenToml>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<SourceTable>>,
    #[serde(default)]
    templates: Vec<Spanned<TemplateToml>>,
    exec: Option<ExecTable>,
    on_reload_failure: Option<OnReloadFailure>,
    trim_blocks: Option<bool>,
    lstrip_blocks: Option<bool>,
    keep_trailing_newline: Option<bool>,
    limits: Option<LimitsToml>,
}

/// `[limits]`: what one render may do, and how long the loop may go
/// without turning before `/healthz` fails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsToml {
    render_fuel: Option<u64>,
    #[serde(default, deserialize_with = "crate::spec::size_serde::deserialize")]
    max_output: Option<u64>,
    max_depth: Option<usize>,
    #[serde(default, with = "duration_serde_opt")]
    stall_timeout: Option<Duration>,
}

impl LimitsToml {
    /// Over the defaults; a value that would stop every render, or that
    /// minijinja cannot take, is an error naming the key.
    fn apply(self, path: &Path, config: &mut Config) -> Result<()> {
        let at = path.display();
        if let Some(fuel) = self.render_fuel {
            if fuel < MIN_FUEL {
                anyhow::bail!("{at}: [limits] render_fuel must be at least {MIN_FUEL}");
            }
            config.limits.render_fuel = fuel;
        }
        if let Some(max) = self.max_output {
            if max == 0 {
                anyhow::bail!("{at}: [limits] max_output must be at least 1 byte");
            }
            config.limits.max_output = max;
        }
        if let Some(depth) = self.max_depth {
            if !(1..=MAX_DEPTH_CEILING).contains(&depth) {
                anyhow::bail!("{at}: [limits] max_depth must be between 1 and {MAX_DEPTH_CEILING}");
            }
            config.limits.max_depth = depth;
        }
        if let Some(stall) = self.stall_timeout {
            if stall < Duration::from_secs(1) {
                anyhow::bail!("{at}: [limits] stall_timeout must be at least 1s");
            }
            config.stall_timeout = stall;
        }
        Ok(())
    }
}

/// Less fuel than this fails even an empty template's render.
const MIN_FUEL: u64 = 1000;

/// `trim_blocks`, `lstrip_blocks`, `keep_trailing_newline`: at the top
/// level they are the defaults of every template; in `[[templates]]` they
/// override them for that template.
/// (Written out in both structs, not flattened: serde's `flatten` would
/// turn off `deny_unknown_fields`.)
fn whitespace_over(
    trim: Option<bool>,
    lstrip: Option<bool>,
    keep: Option<bool>,
    base: Whitespace,
) -> Whitespace {
    Whitespace {
        trim_blocks: trim.unwrap_or(base.trim_blocks),
        lstrip_blocks: lstrip.unwrap_or(base.lstrip_blocks),
        keep_trailing_newline: keep.unwrap_or(base.keep_trailing_newline),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateToml {
    source: PathBuf,
    destination: Option<String>,
    data: Option<String>,
    #[serde(default, deserialize_with = "de_mode")]
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default, deserialize_with = "de_command_opt")]
    check: Option<CommandSpec>,
    #[serde(default, deserialize_with = "de_command_opt")]
    reload: Option<CommandSpec>,
    on_reload_failure: Option<OnReloadFailure>,
    #[serde(default, with = "duration_serde_opt")]
    command_timeout: Option<Duration>,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    create_dirs: bool,
    /// The output holds secrets: `--diff` and `--dry-run` print no content
    /// and `/status` no command output.
    #[serde(default)]
    secret: bool,
    wait: Option<WaitToml>,
    trim_blocks: Option<bool>,
    lstrip_blocks: Option<bool>,
    keep_trailing_newline: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenToml {
    /// As `--listen` takes it: a bare port is on 127.0.0.1.
    #[serde(deserialize_with = "de_listen")]
    address: std::net::SocketAddr,
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<std::net::SocketAddr, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Port(u16),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Port(p) => Ok((std::net::Ipv4Addr::LOCALHOST, p).into()),
        Raw::Text(s) => crate::spec::parse_listen(&s).map_err(serde::de::Error::custom),
    }
}

/// `wait = { min = "500ms", max = "5s" }`; `max` is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitToml {
    #[serde(with = "duration_serde")]
    min: Duration,
    #[serde(default, with = "duration_serde_opt")]
    max: Option<Duration>,
}

impl From<WaitToml> for Debounce {
    fn from(w: WaitToml) -> Debounce {
        Debounce::new(w.min, w.max)
    }
}

/// `mode = "0640"`, an octal string as chmod takes it. A bare TOML integer
/// is refused: `mode = 644` would be decimal 644 (0o1204), and `0o644`
/// cannot be told apart from decimal 420 once parsed.
fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Str(String),
        Int(i64),
    }
    let mode = match Raw::deserialize(d)? {
        Raw::Str(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid mode {s:?}: expected an octal string such as \"0644\""
            ))
        })?,
        Raw::Int(i) => {
            return Err(serde::de::Error::custom(format!(
                "mode must be a quoted octal string such as \"0644\", not the number {i}"
            )));
        }
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!(
            "invalid mode {mode:o}: at most 4 octal digits (e.g. \"0644\")"
        )));
    }
    Ok(Some(mode))
}

impl Config {
    /// Adds what the config file at `path` (with contents `text`) says.
    /// Relative paths in it are taken from its directory.
    pub(super) fn merge_toml(&mut self, path: &Path, text: &str) -> Result<()> {
        let file: FileConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let position = |span: std::ops::Range<usize>| {
            let (line, col) = line_col(text, span.start);
            format!("{}:{line}:{col}", path.display())
        };
        self.wait = file.wait.map(Debounce::from);
        self.listen = file.listen.map(|l| l.address);
        self.exec = file.exec;
        if let Some(limits) = file.limits {
            limits.apply(path, self)?;
        }
        self.on_reload_failure = file.on_reload_failure.unwrap_or_default();
        self.whitespace = whitespace_over(
            file.trim_blocks,
            file.lstrip_blocks,
            file.keep_trailing_newline,
            Whitespace::default(),
        );
        for (name, table) in file.sources {
            let at = position(table.span());
            let table = table.into_inner();
            let kind_at = position(table.kind_span());
            let spec = table.into_spec(&name, &at, &kind_at, base)?;
            if !valid_name(&name) {
                anyhow::bail!(
                    "{at}: invalid source name {name:?}: use letters, digits, '_' and '-'"
                );
            }
            self.sources.insert(name, spec);
        }
        for tmpl in file.templates {
            let at = position(tmpl.span());
            let whitespace = self.whitespace;
            let spec = tmpl
                .into_inner()
                .resolve(base, at, self.on_reload_failure, whitespace);
            self.templates.push(spec);
        }
        Ok(())
    }
}

impl TemplateToml {
    /// The template as stencil uses it; `on_reload_failure` and
    /// `defaults` are the top-level defaults.
    fn resolve(
        self,
        base: &Path,
        origin: String,
        on_reload_failure: OnReloadFailure,
        defaults: Whitespace,
    ) -> TemplateSpec {
        let destination = match self.destination.as_deref() {
            None | Some("-") => Destination::Stdout,
            Some(d) => Destination::File(base.join(d)),
        };
        TemplateSpec {
            source: base.join(self.source),
            destination,
            data: self.data,
            mode: self.mode,
            owner: self.owner,
            group: self.group,
            check: self.check,
            reload: self.reload,
            on_reload_failure: self.on_reload_failure.unwrap_or(on_reload_failure),
            command_timeout: self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
            backup: self.backup,
            create_dirs: self.create_dirs,
            secret: self.secret,
            wait: self.wait.map(Debounce::from),
            whitespace: whitespace_over(
                self.trim_blocks,
                self.lstrip_blocks,
                self.keep_trailing_newline,
                defaults,
            ),
            origin,
        }
    }
}

/// A config file's TOML error. toml prints the line with a caret, which
/// helps with every key but `password` and `token`, the only ones whose
/// values are secrets: there it says `FILE:LINE:COL: message` without the
/// line (and without a mistyped value, `invalid type: integer `…``).
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let Some(span) = e.span() else {
        return anyhow::anyhow!("{e}");
    };
    let (line, col) = line_col(text, span.start);
    let key = text.lines().nth(line - 1).unwrap_or_default();
    let key = key.split('=').next().unwrap_or_default().trim();
    if !matches!(key, "password" | "token") {
        return anyhow::anyhow!("{e}");
    }
    let mut why = e.message().trim().replace('\n', "; ");
    if let Some((head, rest)) = why.split_once('`') {
        if let Some((_, tail)) = rest.split_once('`') {
            if head.starts_with("invalid") {
                why = format!("{head}`…`{tail}");
            }
        }
    }
    anyhow::anyhow!("{}: line {line}, column {col}: {why}", path.display())
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn durations_in_the_file_are_bounded() {
        let text = "[[templates]]\nsource = \"a.j2\"\ncommand_timeout = \"500000000000y\"\n";
        let err = Config::from_toml(Path::new("s.toml"), text).unwrap_err();
        assert!(format!("{err:#}").contains("too long"), "{err:#}");
        let text = "wait = { min = \"200000000000y\" }\n";
        assert!(Config::from_toml(Path::new("s.toml"), text).is_err());
    }
}
