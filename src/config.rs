//! Config file + environment + flags -> one validated [`Config`].
//!
//! Parsing and validation are two steps, as in ripgrep's LowArgs -> HiArgs:
//! the TOML is deserialized strictly (an unknown or mistyped key is an error
//! with its line and column), then flags are merged in and everything is
//! checked once, so the rest of stencil never sees an unvalidated value.
//! Precedence: defaults < config file < environment < flags (clap already
//! folds `STENCIL_*` variables into the flags).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cli::TemplateArgs;
use crate::command::CommandSpec;
use crate::error::{UsageContext, usage};
use crate::runtime::Tls;
use crate::source::consul::ConsulConfig;
use crate::source::etcd::EtcdConfig;

/// The default time a check or reload command may run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated configuration every command works from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// The config file, when one was given.
    pub file: Option<PathBuf>,
    /// The quiescence period of templates without their own `wait`.
    pub wait: Option<WaitSpec>,
    /// `[listen] address`: where watch and exec serve health and metrics.
    pub listen: Option<std::net::SocketAddr>,
    pub sources: BTreeMap<String, SourceSpec>,
    pub templates: Vec<TemplateSpec>,
    /// The `[exec]` table, for `stencil exec`; its flags win over it.
    pub exec: Option<crate::exec::ExecTable>,
}

/// A data source, by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    /// A JSON, TOML, YAML or dotenv file.
    File {
        path: PathBuf,
        /// Keys in templates are relative to this prefix.
        prefix: String,
    },
    /// etcd v3 through its HTTP/JSON gateway.
    Etcd(EtcdConfig),
    /// Consul KV.
    Consul(ConsulConfig),
}

impl SourceSpec {
    /// The `kind` as written in the config file (the serde tag).
    pub fn kind(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["kind"].as_str().map(String::from))
            .unwrap_or_default()
    }
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
    #[serde(with = "mode_str")]
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub check: Option<CommandSpec>,
    pub reload: Option<CommandSpec>,
    #[serde(with = "duration_str")]
    pub command_timeout: Duration,
    pub backup: bool,
    pub create_dirs: bool,
    pub wait: Option<WaitSpec>,
    /// Where this template was declared, for error messages:
    /// `stencil.toml:12` or `-t flag`.
    pub origin: String,
}

/// Quiescence before acting on changes (watch mode).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WaitSpec {
    #[serde(with = "duration_str")]
    pub min: Duration,
    #[serde(with = "duration_str")]
    pub max: Duration,
}

/// Durations printed as `30s` in `--print-config`.
pub mod duration_str {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

// ---------------------------------------------------------------------------
// The TOML file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    wait: Option<WaitToml>,
    listen: Option<ListenToml>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Spanned<SourceToml>>,
    #[serde(default)]
    templates: Vec<toml::Spanned<TemplateToml>>,
    exec: Option<crate::exec::ExecTable>,
}

/// One flat table for every kind, so a misspelt key is reported at its own
/// line and column (serde's internally tagged enums lose the position).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceToml {
    kind: toml::Spanned<String>,
    path: Option<PathBuf>,
    prefix: Option<String>,
    endpoints: Option<Vec<String>>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    address: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    datacenter: Option<String>,
    stale: Option<bool>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration")]
    timeout: Option<Duration>,
}

impl SourceToml {
    /// The TLS files this table names, relative to the config's directory;
    /// `None` when it names none (the environment's defaults then stand).
    fn take_tls(&mut self, base: &Path) -> Option<Tls> {
        let tls = Tls {
            ca_file: self.ca_file.take().map(|f| base.join(f)),
            cert_file: self.cert_file.take().map(|f| base.join(f)),
            key_file: self.key_file.take().map(|f| base.join(f)),
        };
        (tls != Tls::default()).then_some(tls)
    }

    /// The keys set in this table that `kind` does not use, for an error.
    fn foreign_keys(&self, kind: &str) -> Vec<&'static str> {
        let mut set = Vec::new();
        let etcd = kind == "etcd";
        let consul = kind == "consul";
        let file = kind == "file";
        let mut check = |present: bool, name: &'static str, allowed: bool| {
            if present && !allowed {
                set.push(name);
            }
        };
        check(self.path.is_some(), "path", file);
        check(self.endpoints.is_some(), "endpoints", etcd);
        check(self.username.is_some(), "username", etcd);
        check(self.password.is_some(), "password", etcd);
        check(self.password_file.is_some(), "password_file", etcd);
        check(self.address.is_some(), "address", consul);
        check(self.token.is_some(), "token", consul);
        check(self.token_file.is_some(), "token_file", consul);
        check(self.datacenter.is_some(), "datacenter", consul);
        check(self.stale.is_some(), "stale", consul);
        check(self.ca_file.is_some(), "ca_file", etcd || consul);
        check(self.cert_file.is_some(), "cert_file", etcd || consul);
        check(self.key_file.is_some(), "key_file", etcd || consul);
        check(self.timeout.is_some(), "timeout", etcd || consul);
        set
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
    #[serde(default, deserialize_with = "de_command")]
    check: Option<CommandSpec>,
    #[serde(default, deserialize_with = "de_command")]
    reload: Option<CommandSpec>,
    #[serde(default, deserialize_with = "de_duration")]
    command_timeout: Option<Duration>,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    create_dirs: bool,
    wait: Option<WaitToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenToml {
    address: std::net::SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitToml {
    #[serde(deserialize_with = "de_duration_req")]
    min: Duration,
    #[serde(default, deserialize_with = "de_duration")]
    max: Option<Duration>,
}

impl WaitToml {
    fn resolve(self) -> WaitSpec {
        WaitSpec::new(self.min, self.max)
    }
}

impl WaitSpec {
    /// `max` defaults to 4 × `min`, as consul-template does, and is never
    /// below `min`.
    pub fn new(min: Duration, max: Option<Duration>) -> WaitSpec {
        WaitSpec {
            min,
            max: max.unwrap_or(min * 4).max(min),
        }
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

/// Modes printed as `"0644"` in `--print-config`.
mod mode_str {
    pub fn serialize<S: serde::Serializer>(m: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.serialize_str(&format!("{m:04o}")),
            None => s.serialize_none(),
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration_req(d).map(Some)
}

fn de_duration_req<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::cli::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CommandSpec>, D::Error> {
    let spec = CommandSpec::deserialize(d)?;
    spec.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(spec))
}

// ---------------------------------------------------------------------------

impl Config {
    /// Reads the config file (if any) and merges the flags into it.
    pub fn load(args: &TemplateArgs) -> Result<Config> {
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
            let (name, path) = match data.split_once('=') {
                Some((name, path)) if valid_name(name) => (name.to_string(), path),
                _ => {
                    let name = Path::new(data)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("data")
                        .to_string();
                    (name, data.as_str())
                }
            };
            config.add_source(
                &name,
                SourceSpec::File {
                    path: PathBuf::from(path),
                    prefix: String::new(),
                },
                &format!("--data {data}"),
            )?;
        }
        for source in &args.sources {
            let (name, spec) = parse_source_flag(source)?;
            config.add_source(&name, spec, &format!("--source {source}"))?;
        }
        for flag in &args.templates {
            config.templates.push(parse_template_flag(flag)?);
        }
        config.validate()?;
        Ok(config)
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

    fn merge_toml(&mut self, path: &Path, text: &str) -> Result<()> {
        let file: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        self.wait = file.wait.map(WaitToml::resolve);
        self.listen = file.listen.map(|l| l.address);
        let position = |span: std::ops::Range<usize>| {
            let (line, col) = line_col(text, span.start);
            format!("{}:{line}:{col}", path.display())
        };
        for (name, source) in file.sources {
            let at = position(source.span());
            let mut source = source.into_inner();
            let kind = source.kind.get_ref().clone();
            let foreign = source.foreign_keys(&kind);
            if !foreign.is_empty() {
                anyhow::bail!(
                    "{at}: source {name:?} of kind {kind:?} does not take {}",
                    foreign.join(", ")
                );
            }
            let tls = source.take_tls(&base);
            let spec = match kind.as_str() {
                "file" => SourceSpec::File {
                    path: base.join(source.path.ok_or_else(|| {
                        anyhow::anyhow!("{at}: source {name:?} of kind \"file\" needs `path`")
                    })?),
                    prefix: source.prefix.unwrap_or_default(),
                },
                "etcd" => {
                    // The variables etcdctl reads are the defaults; what the
                    // file says wins.
                    let mut etcd = EtcdConfig::from_env();
                    if let Some(e) = source.endpoints {
                        if e.is_empty() {
                            anyhow::bail!("{at}: source {name:?}: endpoints is empty");
                        }
                        etcd.endpoints = e;
                    }
                    if let Some(p) = source.prefix {
                        etcd.prefix = p;
                    }
                    if source.username.is_some() {
                        etcd.username = source.username;
                        etcd.password = None;
                    }
                    if source.password.is_some() {
                        etcd.password = source.password;
                    }
                    if let Some(f) = source.password_file {
                        etcd.password_file = Some(base.join(f));
                        etcd.password = None;
                    }
                    if let Some(tls) = tls {
                        etcd.tls = tls;
                    }
                    if let Some(t) = source.timeout {
                        etcd.timeout = t;
                    }
                    SourceSpec::Etcd(etcd)
                }
                "consul" => {
                    // The variables the consul CLI reads are the defaults;
                    // what the file says wins.
                    let mut consul = ConsulConfig::from_env();
                    if let Some(a) = source.address {
                        consul.address = a;
                    }
                    if let Some(p) = source.prefix {
                        consul.prefix = p;
                    }
                    if source.token.is_some() {
                        consul.token = source.token;
                        consul.token_file = None;
                    }
                    if let Some(f) = source.token_file {
                        consul.token_file = Some(base.join(f));
                        consul.token = None;
                    }
                    if source.datacenter.is_some() {
                        consul.datacenter = source.datacenter;
                    }
                    if let Some(s) = source.stale {
                        consul.stale = s;
                    }
                    if let Some(tls) = tls {
                        consul.tls = tls;
                    }
                    if let Some(t) = source.timeout {
                        consul.timeout = t;
                    }
                    SourceSpec::Consul(consul)
                }
                other => {
                    let (line, col) = line_col(text, source.kind.span().start);
                    anyhow::bail!(
                        "{}:{line}:{col}: source {name:?}: unknown kind {other:?}; \
                         this version of stencil knows \"file\", \"etcd\" and \"consul\"",
                        path.display()
                    )
                }
            };
            if !valid_name(&name) {
                anyhow::bail!(
                    "{at}: invalid source name {name:?}: use letters, digits, '_' and '-'"
                );
            }
            self.sources.insert(name, spec);
        }
        self.exec = file.exec;
        for tmpl in file.templates {
            let at = position(tmpl.span());
            let t = tmpl.into_inner();
            let destination = match t.destination.as_deref() {
                None | Some("-") => Destination::Stdout,
                Some(d) => Destination::File(base.join(d)),
            };
            let wait = t.wait.map(WaitToml::resolve);
            self.templates.push(TemplateSpec {
                source: base.join(t.source),
                destination,
                data: t.data,
                mode: t.mode,
                owner: t.owner,
                group: t.group,
                check: t.check,
                reload: t.reload,
                command_timeout: t.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
                backup: t.backup,
                create_dirs: t.create_dirs,
                wait,
                origin: at,
            });
        }
        Ok(())
    }

    /// Checks what only makes sense across the whole config.
    fn validate(&self) -> Result<()> {
        if self.templates.is_empty() {
            return Err(usage(
                "no templates: give -t SRC[:DEST] or a config file (-c) with [[templates]]",
            ));
        }
        let mut seen: HashMap<PathBuf, &str> = HashMap::new();
        for t in &self.templates {
            if let Destination::File(dest) = &t.destination {
                let key = normalize(dest);
                if let Some(first) = seen.insert(key, &t.origin) {
                    return Err(usage(format!(
                        "{}: destination {} is also written by the template at {first}; \
                         two templates cannot write one file",
                        t.origin,
                        dest.display()
                    )));
                }
            }
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
            if let Some(reload) = &t.reload {
                if reload.mentions("staged") {
                    return Err(usage(format!(
                        "{}: reload runs after install, when there is no staged file: \
                         use {{{{ destination }}}} (or move the command to check)",
                        t.origin
                    )));
                }
            }
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
        None | Some("") | Some("-") => Destination::Stdout,
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
        command_timeout: DEFAULT_COMMAND_TIMEOUT,
        backup: false,
        create_dirs: false,
        wait: None,
        origin: format!("-t {flag}"),
    })
}

/// `NAME=URL`. The URL's scheme says the kind: `file:///path`,
/// `etcd+http://host:port` (or `etcd+https`, endpoints separated by commas),
/// `consul+http://host:port` (or `consul+https`); a plain `http(s)://` URL
/// is taken as the kind the name says, so
/// `--source etcd=http://127.0.0.1:2379?prefix=/apps/web/` and
/// `--source consul=http://127.0.0.1:8500?prefix=apps/web/` work as written
/// in the design. Query parameters: `prefix`, `timeout`; for Consul also
/// `dc` and `stale`. A token never goes in the URL.
pub fn parse_source_flag(flag: &str) -> Result<(String, SourceSpec)> {
    let Some((name, url)) = flag.split_once('=') else {
        return Err(usage(format!(
            "--source {flag:?}: expected NAME=URL, e.g. data=file:///etc/app/data.json"
        )));
    };
    let bad = |why: String| usage(format!("--source {flag:?}: {why}"));
    if url.is_empty() {
        return Err(bad("the URL is empty".into()));
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None if url.starts_with("file:") => ("file", &url[5..]),
        None => ("file", url),
    };
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut params: BTreeMap<&str, &str> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k, v);
    }
    let kind = match scheme {
        "file" => "file",
        "etcd+http" | "etcd+https" => "etcd",
        "consul+http" | "consul+https" => "consul",
        "http" | "https" if name.starts_with("etcd") => "etcd",
        "http" | "https" if name.starts_with("consul") => "consul",
        "http" | "https" => {
            return Err(bad(format!(
                "say which kind of server this is: etcd+{scheme}://… or consul+{scheme}://… \
                 (the name alone cannot tell)"
            )));
        }
        other => return Err(bad(format!("unsupported URL scheme {other:?}"))),
    };
    let spec = match kind {
        "file" => {
            if location.is_empty() {
                return Err(bad("the URL has no path".into()));
            }
            SourceSpec::File {
                path: PathBuf::from(location),
                prefix: params.remove("prefix").unwrap_or_default().to_string(),
            }
        }
        "consul" => {
            let http = scheme.trim_start_matches("consul+");
            if params.contains_key("token") {
                // Not `bad`: it would repeat the token in the message.
                return Err(usage(format!(
                    "--source {name}: a token does not go in the URL, where process lists and \
                     logs show it: use CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE or token_file \
                     in a config file"
                )));
            }
            let location = location.trim_end_matches('/');
            if location.is_empty() {
                return Err(bad("no address in the URL".into()));
            }
            if location.contains(',') || location.contains('/') {
                return Err(bad(format!(
                    "{location:?} is not one host:port; Consul takes one agent's address"
                )));
            }
            let mut consul = ConsulConfig::from_env();
            consul.address = format!("{http}://{location}");
            if let Some(p) = params.remove("prefix") {
                consul.prefix = p.to_string();
            }
            if let Some(dc) = params.remove("dc") {
                consul.datacenter = Some(dc.to_string()).filter(|d| !d.is_empty());
            }
            if let Some(s) = params.remove("stale") {
                consul.stale = match s {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    other => return Err(bad(format!("stale={other:?}: use stale or stale=false"))),
                };
            }
            if let Some(t) = params.remove("timeout") {
                consul.timeout = crate::cli::parse_duration(t).map_err(bad)?;
            }
            crate::source::consul::ConsulClient::check_address(&consul.address)
                .map_err(|e| bad(format!("{e:#}")))?;
            SourceSpec::Consul(consul)
        }
        _ => {
            let http = scheme.trim_start_matches("etcd+");
            let mut etcd = EtcdConfig::from_env();
            etcd.endpoints = location
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| format!("{http}://{e}"))
                .collect();
            if etcd.endpoints.is_empty() {
                return Err(bad("no endpoint in the URL".into()));
            }
            if let Some(p) = params.remove("prefix") {
                etcd.prefix = p.to_string();
            }
            if let Some(t) = params.remove("timeout") {
                etcd.timeout = crate::cli::parse_duration(t).map_err(bad)?;
            }
            SourceSpec::Etcd(etcd)
        }
    };
    if let Some(k) = params.keys().next() {
        return Err(bad(format!("unknown URL parameter {k:?}")));
    }
    Ok((name.to_string(), spec))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Lexical normalization, so `a/./b` and `a/b` count as one destination.
fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
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

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
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
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
