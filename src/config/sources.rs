//! `[sources.NAME]` tables and `--source NAME=URL` flags, by one code path.
//!
//! A `--source` URL is turned into the table it stands for
//! (`etcd=http://h:2379?prefix=/a/` is `kind = "etcd"`, `endpoints =
//! ["http://h:2379"]`, `prefix = "/a/"`), and every table, from the file or
//! from a flag, becomes a [`SourceSpec`] in [`SourceTable::into_spec`]: the
//! defaults from the environment (`ETCDCTL_*`, `CONSUL_HTTP_*`), then what the
//! table says. A setting cannot mean one thing in a file and another in a
//! flag.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;
use toml::Spanned;

use crate::error::usage;
use crate::runtime::Tls;
use crate::source::SourceSpec;
use crate::source::consul::{AclFiltered, ConsulClient, ConsulConfig};
use crate::source::etcd::EtcdConfig;
use crate::spec::{duration_serde_opt, parse_duration};

/// Probing more often than this would load the cluster for nothing.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// One flat table for every kind, so a misspelt key is reported at its own
/// line and column (serde's internally tagged enums lose the position).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceTable {
    kind: Spanned<String>,
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
    acl_filtered: Option<String>,
    max_watch_queries: Option<usize>,
    #[serde(default, with = "duration_serde_opt")]
    max_stale: Option<Duration>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default, with = "duration_serde_opt")]
    timeout: Option<Duration>,
    #[serde(default, with = "duration_serde_opt")]
    probe_interval: Option<Duration>,
    max_response_size: Option<usize>,
}

impl SourceTable {
    fn of_kind(kind: &str) -> SourceTable {
        SourceTable {
            kind: Spanned::new(0..0, kind.to_string()),
            path: None,
            prefix: None,
            endpoints: None,
            username: None,
            password: None,
            password_file: None,
            address: None,
            token: None,
            token_file: None,
            datacenter: None,
            stale: None,
            acl_filtered: None,
            max_watch_queries: None,
            max_stale: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout: None,
            probe_interval: None,
            max_response_size: None,
        }
    }

    /// Where `kind` was written, as a byte range of the config file.
    pub(super) fn kind_span(&self) -> std::ops::Range<usize> {
        self.kind.span()
    }

    /// The source this table describes. `at` names where it was declared
    /// (`stencil.toml:3:1`, `--source "…"`) and `kind_at` where its kind
    /// was; relative paths are taken from `base`.
    pub(super) fn into_spec(
        mut self,
        name: &str,
        at: &str,
        kind_at: &str,
        base: &Path,
    ) -> Result<SourceSpec> {
        let kind = self.kind.get_ref().clone();
        let foreign = self.foreign_keys(&kind);
        if !foreign.is_empty() {
            bail!(
                "{at}: source {name:?} of kind {kind:?} does not take {}",
                foreign.join(", ")
            );
        }
        let tls = self.take_tls(base);
        Ok(match kind.as_str() {
            "file" => SourceSpec::File {
                path: base.join(self.path.ok_or_else(|| {
                    anyhow::anyhow!("{at}: source {name:?} of kind \"file\" needs `path`")
                })?),
                prefix: self.prefix.unwrap_or_default(),
            },
            "etcd" => SourceSpec::Etcd(self.etcd(name, at, base, tls)?),
            "consul" => SourceSpec::Consul(self.consul(at, base, tls)?),
            other => bail!(
                "{kind_at}: source {name:?}: unknown kind {other:?}; \
                 this version of stencil knows \"file\", \"etcd\" and \"consul\""
            ),
        })
    }

    /// The variables etcdctl reads are the defaults; what the table says wins.
    fn etcd(self, name: &str, at: &str, base: &Path, tls: Option<Tls>) -> Result<EtcdConfig> {
        let mut etcd = EtcdConfig::from_env();
        if let Some(e) = self.endpoints {
            if e.is_empty() {
                bail!("{at}: source {name:?}: endpoints is empty");
            }
            etcd.endpoints = e;
        }
        if let Some(p) = self.prefix {
            etcd.prefix = p;
        }
        if self.username.is_some() {
            etcd.username = self.username;
            etcd.password = None;
        }
        if self.password.is_some() {
            etcd.password = self.password;
        }
        if let Some(f) = self.password_file {
            etcd.password_file = Some(base.join(f));
            etcd.password = None;
        }
        if let Some(tls) = tls {
            etcd.tls = tls;
        }
        if let Some(t) = self.timeout {
            etcd.timeout = t;
        }
        if let Some(n) = self.max_response_size {
            etcd.max_response_size = check_size(at, n)?;
        }
        if let Some(p) = self.probe_interval {
            if p < MIN_PROBE_INTERVAL {
                bail!("{at}: source {name:?}: probe_interval must be at least 100ms");
            }
            etcd.probe_interval = p;
        }
        Ok(etcd)
    }

    /// The variables the consul CLI reads are the defaults; what the table
    /// says wins.
    fn consul(self, at: &str, base: &Path, tls: Option<Tls>) -> Result<ConsulConfig> {
        let mut consul = ConsulConfig::from_env();
        if let Some(a) = self.address {
            ConsulClient::check_address(&a).map_err(|e| anyhow::anyhow!("{at}: {e:#}"))?;
            consul.address = a;
        }
        if let Some(p) = self.prefix {
            consul.prefix = p;
        }
        if self.token.is_some() {
            consul.token = self.token;
            consul.token_file = None;
        }
        if let Some(f) = self.token_file {
            consul.token_file = Some(base.join(f));
            consul.token = None;
        }
        if self.datacenter.is_some() {
            consul.datacenter = self.datacenter.filter(|d| !d.is_empty());
        }
        if let Some(s) = self.stale {
            consul.stale = s;
        }
        if self.max_stale.is_some() {
            consul.max_stale = self.max_stale;
        }
        if let Some(f) = self.acl_filtered {
            consul.acl_filtered = AclFiltered::parse(&f).ok_or_else(|| {
                anyhow::anyhow!("{at}: acl_filtered = {f:?}: use \"error\" or \"warn\"")
            })?;
        }
        if let Some(n) = self.max_watch_queries {
            if n == 0 {
                anyhow::bail!("{at}: max_watch_queries = 0: a watch needs at least 1 query");
            }
            consul.max_watch_queries = n;
        }
        if let Some(tls) = tls {
            consul.tls = tls;
        }
        if let Some(n) = self.max_response_size {
            consul.max_response_size = check_size(at, n)?;
        }
        if let Some(t) = self.timeout {
            consul.timeout = t;
        }
        Ok(consul)
    }

    /// The TLS files this table names, relative to `base`; `None` when it
    /// names none (the environment's defaults then stand).
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
        let etcd = kind == "etcd";
        let consul = kind == "consul";
        let network = etcd || consul;
        [
            (self.path.is_some(), "path", kind == "file"),
            (self.endpoints.is_some(), "endpoints", etcd),
            (self.username.is_some(), "username", etcd),
            (self.password.is_some(), "password", etcd),
            (self.password_file.is_some(), "password_file", etcd),
            (self.address.is_some(), "address", consul),
            (self.token.is_some(), "token", consul),
            (self.token_file.is_some(), "token_file", consul),
            (self.datacenter.is_some(), "datacenter", consul),
            (self.stale.is_some(), "stale", consul),
            (self.acl_filtered.is_some(), "acl_filtered", consul),
            (
                self.max_watch_queries.is_some(),
                "max_watch_queries",
                consul,
            ),
            (self.max_stale.is_some(), "max_stale", consul),
            (self.ca_file.is_some(), "ca_file", network),
            (self.cert_file.is_some(), "cert_file", network),
            (self.key_file.is_some(), "key_file", network),
            (self.timeout.is_some(), "timeout", network),
            (self.probe_interval.is_some(), "probe_interval", etcd),
            (
                self.max_response_size.is_some(),
                "max_response_size",
                network,
            ),
        ]
        .into_iter()
        .filter(|&(present, _, allowed)| present && !allowed)
        .map(|(_, name, _)| name)
        .collect()
    }
}

/// Smaller than this, not even an error reply fits.
const MIN_RESPONSE_SIZE: usize = 1024;

/// A `max_response_size` that leaves room for any reply at all.
fn check_size(at: &str, n: usize) -> Result<usize> {
    if n < MIN_RESPONSE_SIZE {
        bail!("{at}: max_response_size = {n}: use at least {MIN_RESPONSE_SIZE} bytes");
    }
    Ok(n)
}

/// `--source NAME=URL`. The URL's scheme says the kind: `file:///path` (or a
/// bare path), `etcd+http://host:port` (or `etcd+https`, endpoints separated
/// by commas), `consul+http://host:port` (or `consul+https`); a plain
/// `http(s)://` URL is taken as the kind the name says, so
/// `--source etcd=http://127.0.0.1:2379?prefix=/apps/web/` and
/// `--source consul=http://127.0.0.1:8500?prefix=apps/web/` work as written
/// in the design. Query parameters: `prefix`, `timeout`; for Consul also
/// `dc`, `stale`, `max_stale`, `acl_filtered` and `max_watch_queries`. A token
/// never goes in the URL.
pub fn parse_source_flag(flag: &str) -> Result<(String, SourceSpec)> {
    let Some((name, url)) = flag.split_once('=') else {
        return Err(usage(format!(
            "--source {flag:?}: expected NAME=URL, e.g. data=file:///etc/app/data.json"
        )));
    };
    // Never with a password: the flag is quoted in every message below.
    let at = format!("--source {:?}", crate::spec::redact_urls(flag));
    let table = table_from_url(name, url).map_err(|e| match e {
        // Not quoting the flag: it would repeat the token in the message.
        UrlError::Token => usage(format!(
            "--source {name}: a token does not go in the URL, where process lists and \
             logs show it: use CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE or token_file \
             in a config file"
        )),
        UrlError::Bad(why) => usage(format!("{at}: {why}")),
    })?;
    let spec = table
        .into_spec(name, &at, &at, Path::new(""))
        .map_err(|e| usage(format!("{e:#}")))?;
    Ok((name.to_string(), spec))
}

enum UrlError {
    Token,
    Bad(String),
}

impl From<String> for UrlError {
    fn from(s: String) -> Self {
        UrlError::Bad(s)
    }
}

/// The table a `--source` URL stands for.
fn table_from_url(name: &str, text: &str) -> Result<SourceTable, UrlError> {
    if text.is_empty() {
        return Err("the URL is empty".to_string().into());
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        // A bare path, or `file:PATH`: relative paths are welcome here.
        let path = text.strip_prefix("file:").unwrap_or(text);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut table = SourceTable::of_kind("file");
        table.path = Some(PathBuf::from(path));
        apply_params(&mut table, query)?;
        return Ok(table);
    };
    let kind = match scheme {
        "file" => "file",
        "etcd+http" | "etcd+https" => "etcd",
        "consul+http" | "consul+https" => "consul",
        "http" | "https" if name.starts_with("etcd") => "etcd",
        "http" | "https" if name.starts_with("consul") => "consul",
        "http" | "https" => {
            return Err(format!(
                "say which kind of server this is: etcd+{scheme}://… or consul+{scheme}://… \
                 (the name alone cannot tell)"
            )
            .into());
        }
        other => return Err(format!("unsupported URL scheme {other:?}").into()),
    };
    let mut table = SourceTable::of_kind(kind);
    if kind == "file" {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        let path = url
            .to_file_path()
            .map_err(|()| "expected file:///ABSOLUTE/PATH (or a plain path)".to_string())?;
        table.path = Some(path);
        apply_params(&mut table, url.query().unwrap_or(""))?;
        return Ok(table);
    }
    let http = scheme.rsplit('+').next().unwrap_or(scheme);
    // etcd takes several endpoints, `h1:2379,h2:2379`, which is not one URL:
    // each host is checked as a URL of its own.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hosts: Vec<String> = authority
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| server_url(http, h))
        .collect::<Result<_, _>>()?;
    let url = url::Url::parse(&format!("{http}://placeholder{tail}"))
        .map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.path(), "" | "/") {
        return Err(format!("a server URL has no path ({:?})", url.path()).into());
    }
    apply_params(&mut table, url.query().unwrap_or(""))?;
    if kind == "consul" {
        match hosts.as_slice() {
            [] => return Err("no address in the URL".to_string().into()),
            [one] => table.address = Some(one.clone()),
            _ => {
                return Err(format!(
                    "{:?} is not one host:port; Consul takes one agent's address",
                    crate::spec::redact_urls(&format!("{http}://{authority}"))
                )
                .into());
            }
        }
    } else {
        if hosts.is_empty() {
            return Err("no endpoint in the URL".to_string().into());
        }
        table.endpoints = Some(hosts);
    }
    Ok(table)
}

/// `http://host:port`, checked by the url crate.
fn server_url(http: &str, host: &str) -> Result<String, String> {
    let text = format!("{http}://{host}");
    let shown = crate::spec::redact_urls(&text);
    let shown = shown.strip_prefix(&format!("{http}://")).unwrap_or(&shown);
    let url = url::Url::parse(&text).map_err(|e| format!("{shown:?} is not host:port ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{shown:?}: a user or password does not go in the URL, where process lists and \
             logs show it: use a config file (etcd: username, password_file; Consul: token_file)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} is not host:port"));
    }
    Ok(text)
}

/// The query parameters of a `--source` URL, as table keys.
fn apply_params(table: &mut SourceTable, query: &str) -> Result<(), UrlError> {
    let network = table.kind.get_ref() != "file";
    let consul = table.kind.get_ref() == "consul";
    let etcd = table.kind.get_ref() == "etcd";
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (key, value) in params {
        match key.as_str() {
            "prefix" => table.prefix = Some(value),
            "timeout" if network => table.timeout = Some(parse_duration(&value)?),
            "max_response_size" if network => {
                table.max_response_size = Some(value.parse().map_err(|_| {
                    format!("max_response_size={value:?}: use a whole number of bytes")
                })?);
            }
            "probe_interval" if etcd => table.probe_interval = Some(parse_duration(&value)?),
            "dc" if consul => table.datacenter = Some(value),
            "stale" if consul => {
                table.stale = Some(match value.as_str() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(format!("stale={other:?}: use stale or stale=false").into());
                    }
                });
            }
            "acl_filtered" if consul => table.acl_filtered = Some(value),
            "max_watch_queries" if consul => {
                table.max_watch_queries = Some(value.parse().map_err(|_| {
                    format!("max_watch_queries={value:?}: use a whole number of queries")
                })?);
            }
            "max_stale" if consul => table.max_stale = Some(parse_duration(&value)?),
            "token" if consul => return Err(UrlError::Token),
            other => return Err(format!("unknown URL parameter {other:?}").into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(flag: &str) -> SourceSpec {
        parse_source_flag(flag).unwrap().1
    }

    #[test]
    fn etcd_urls_take_several_endpoints_and_a_prefix() {
        let SourceSpec::Etcd(e) = spec("kv=etcd+https://a:2379,b:2379?prefix=/apps/web/") else {
            panic!("not etcd")
        };
        assert_eq!(e.endpoints, ["https://a:2379", "https://b:2379"]);
        assert_eq!(e.prefix, "/apps/web/");
    }

    #[test]
    fn consul_urls_take_dc_stale_and_timeout() {
        let SourceSpec::Consul(c) = spec("consul=http://127.0.0.1:8500/?dc=eu&stale&timeout=3s")
        else {
            panic!("not consul")
        };
        assert_eq!(c.address, "http://127.0.0.1:8500");
        assert_eq!(c.datacenter.as_deref(), Some("eu"));
        assert!(c.stale);
        assert_eq!(c.timeout, Duration::from_secs(3));
    }

    #[test]
    fn file_urls_and_bare_paths() {
        let file = |flag| match spec(flag) {
            SourceSpec::File { path, prefix } => (path, prefix),
            other => panic!("{other:?}"),
        };
        assert_eq!(file("d=vars.json"), ("vars.json".into(), String::new()));
        assert_eq!(
            file("d=file:vars.json"),
            ("vars.json".into(), String::new())
        );
        assert_eq!(
            file("d=file:///etc/a%20b.json?prefix=x"),
            ("/etc/a b.json".into(), "x".into())
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (flag, needle) in [
            ("kv=etcd+http://?prefix=/a", "no endpoint"),
            ("kv=http://127.0.0.1:2379", "say which kind"),
            ("etcd=gopher://x", "unsupported URL scheme"),
            ("consul=consul+http://?prefix=a", "no address"),
            ("consul=http://a:1,b:2", "not one host:port"),
            ("etcd=http://a:1/v3", "no path"),
            ("etcd=http://a:1?timeout=500000000000y", "too long"),
            ("etcd=http://a:1?dc=x", "unknown URL parameter"),
            ("etcd=http://a:notaport", "not host:port"),
            (
                "etcd=http://a:1?max_response_size=10",
                "at least 1024 bytes",
            ),
            (
                "consul=http://a:1?max_response_size=1MB",
                "whole number of bytes",
            ),
        ] {
            let err = format!("{:#}", parse_source_flag(flag).unwrap_err());
            assert!(err.contains(needle), "{flag}: {err}");
        }
        let err = format!(
            "{:#}",
            parse_source_flag("consul=http://a:1?token=s3cr3t").unwrap_err()
        );
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
