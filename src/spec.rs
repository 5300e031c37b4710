//! Plain values parsed from text: durations, signals, the debounce spec,
//! `--wait` targets and check/reload/exec commands.
//!
//! This is the leaf every layer may use (the command line, the config file,
//! exec and watch all parse the same values) and it uses nothing of the
//! crate, so it can never be part of an import cycle. Each parser returns
//! `Err(String)`: clap prefixes it with the flag and serde with the key and
//! position, so the message itself says only what is wrong with the text.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest duration any flag or key takes: one year.
///
/// Every duration ends up added to a clock (`Instant::now() + d`), which
/// panics on overflow; a bound keeps "500000000000y" a usage error (exit 2)
/// instead of an abort. A year is longer than any timeout or quiet period
/// anyone means.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses "500ms", "30s", "2m", "1h30m", at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); examples: 500ms, 30s, 2m"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is too long: at most {}d (a year)",
            MAX_DURATION.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// Durations in TOML and in `--print-config`: `"30s"`.
pub mod duration_serde {
    use super::{Deserialize, Deserializer, Duration, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// [`duration_serde`] for an optional key.
pub mod duration_serde_opt {
    use super::{Deserializer, Duration, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration_serde::deserialize(d).map(Some)
    }
}

/// `SIGHUP`, `HUP`, `hup` or `1`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {s:?}; examples: SIGHUP, USR1, SIGTERM"))
}

/// Optional signals in TOML and in `--print-config`: `"SIGHUP"`.
pub mod signal_serde_opt {
    use super::{Deserialize, Deserializer, Serializer, Signal};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub fn serialize<S: Serializer>(s: &Option<Signal>, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_str(s.as_str()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Signal>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_signal(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Quiescence before acting on changes (watch mode): the data must be
/// still for `min`, but no longer than `max` after the first change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debounce {
    #[serde(with = "duration_serde")]
    pub min: Duration,
    #[serde(with = "duration_serde")]
    pub max: Duration,
}

impl Debounce {
    /// `max` defaults to 4 × `min`, as consul-template does, and is never
    /// below `min`. Both are bounded by [`MAX_DURATION`], so the product
    /// cannot overflow.
    pub fn new(min: Duration, max: Option<Duration>) -> Debounce {
        Debounce {
            min,
            max: max.unwrap_or(min * 4).max(min),
        }
    }

    /// `500ms` or `500ms:5s`.
    pub fn parse(s: &str) -> Result<Debounce, String> {
        let (min, max) = match s.split_once(':') {
            Some((min, max)) => (parse_duration(min)?, Some(parse_duration(max)?)),
            None => (parse_duration(s)?, None),
        };
        Ok(Debounce::new(min, max))
    }
}

/// A `--wait` dependency: `tcp://host:port` (accepts a connection),
/// `http(s)://…` (answers 2xx), `file:///path` (exists).
#[derive(Debug, Clone, PartialEq)]
pub struct WaitTarget {
    /// As given, for messages.
    text: String,
    kind: WaitKind,
}

/// What a [`WaitTarget`] waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitKind {
    Tcp { host: String, port: u16 },
    Http(url::Url),
    File(PathBuf),
}

impl fmt::Display for WaitTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl WaitTarget {
    pub fn parse(s: &str) -> Result<WaitTarget, String> {
        let text = s.trim().to_string();
        let bad = |why: &str| {
            format!(
                "{why}; examples: tcp://db:5432, http://api:8080/healthz, \
                 file:///run/secrets/token"
            )
        };
        let url = url::Url::parse(&text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        // url accepts `http:///x` as host `x`; a URL written without a host
        // is a mistake worth naming.
        let after_scheme = &text[url.scheme().len()..];
        let has_authority = after_scheme.starts_with("://") && !after_scheme[3..].starts_with('/');
        let kind = match url.scheme() {
            "tcp" => {
                let host = match url.host() {
                    Some(url::Host::Domain(d)) if has_authority => d.to_string(),
                    Some(url::Host::Ipv4(a)) => a.to_string(),
                    Some(url::Host::Ipv6(a)) => a.to_string(),
                    _ => return Err(bad("expected tcp://host:port")),
                };
                if !matches!(url.path(), "" | "/") || url.query().is_some() {
                    return Err(bad("expected tcp://host:port"));
                }
                let port = url
                    .port()
                    .ok_or_else(|| bad("a tcp address needs a port"))?;
                WaitKind::Tcp { host, port }
            }
            "http" | "https" => {
                if !has_authority {
                    return Err(bad("the URL has no host"));
                }
                WaitKind::Http(url)
            }
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("expected file:///ABSOLUTE/PATH"))?;
                WaitKind::File(path)
            }
            other => return Err(bad(&format!("unsupported scheme {other:?}"))),
        };
        // Shown in log lines and errors: never with its password.
        let text = redact_urls(&text);
        Ok(WaitTarget { text, kind })
    }

    pub fn kind(&self) -> &WaitKind {
        &self.kind
    }
}

/// A check, reload or exec command: a string runs with `sh -c`, an array
/// is argv with no shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CommandSpec {
    /// Run with `sh -c`.
    Shell(String),
    /// Run as argv, no shell.
    Argv(Vec<String>),
}

impl CommandSpec {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CommandSpec::Shell(s) if s.trim().is_empty() => Err("the command is empty".into()),
            CommandSpec::Argv(v) if v.is_empty() || v[0].is_empty() => {
                Err("the command array is empty".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether the command uses the `{{ name }}` placeholder.
    pub fn mentions(&self, name: &str) -> bool {
        let probe = "\u{0}";
        self.substitute(&[(name, probe)]) != *self
    }

    /// The command with `{{ name }}` placeholders replaced. In a shell string
    /// the value is shell-quoted when it needs to be; argv elements get it
    /// verbatim.
    #[must_use]
    pub fn substitute(&self, vars: &[(&str, &str)]) -> CommandSpec {
        match self {
            CommandSpec::Shell(s) => CommandSpec::Shell(replace_placeholders(s, vars, true)),
            CommandSpec::Argv(v) => CommandSpec::Argv(
                v.iter()
                    .map(|a| replace_placeholders(a, vars, false))
                    .collect(),
            ),
        }
    }
}

/// Commands in TOML: a non-empty string or array.
pub fn de_command_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CommandSpec>, D::Error> {
    let spec = CommandSpec::deserialize(d)?;
    spec.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(spec))
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandSpec::Shell(s) => f.write_str(s),
            CommandSpec::Argv(v) => {
                let quoted: Vec<String> = v
                    .iter()
                    .map(|a| shlex::try_quote(a).map_or_else(|_| a.clone(), |q| q.into_owned()))
                    .collect();
                f.write_str(&quoted.join(" "))
            }
        }
    }
}

fn replace_placeholders(s: &str, vars: &[(&str, &str)], quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + len].trim();
        match vars.iter().find(|(k, _)| *k == name) {
            Some((_, value)) => {
                out.push_str(&rest[..start]);
                if quote {
                    match shlex::try_quote(value) {
                        Ok(q) => out.push_str(&q),
                        Err(_) => out.push_str(value),
                    }
                } else {
                    out.push_str(value);
                }
            }
            // Not ours: leave it for the command (it may be a Go template
            // or similar).
            None => out.push_str(&rest[..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// A listen address: `HOST:PORT`, or a bare `PORT` on 127.0.0.1. The
/// endpoints have no authentication, so the short form stays on the
/// machine; `0.0.0.0:9180` is written out when that is meant.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok((std::net::Ipv4Addr::LOCALHOST, port).into());
    }
    s.parse().map_err(|_| {
        format!("invalid listen address {s:?}: expected PORT, IP:PORT or [IPv6]:PORT, e.g. 9180 or 127.0.0.1:9180")
    })
}

/// Serializes a URL as [`redact_urls`] shows it (`--print-config`).
pub fn serialize_redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_urls(url))
}

/// Serializes URLs as [`redact_urls`] shows them (`--print-config`).
pub fn serialize_redacted_list<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_urls(u)))
}

/// `text` with the password of every URL in it replaced by `***`:
/// `http://web:PASS@host` -> `http://web:***@host`. A user name alone
/// (`https://TOKEN@host`) is often a token, so it goes too: `***@host`.
///
/// Every URL stencil shows (sources, `--wait` targets) goes through this,
/// whether or not it parses: a mistyped URL's message must not print the
/// password either. The user information runs to the last `@` before
/// white space or a quote, so a password with a raw `/` or `@` goes whole.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        match word.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &word[..userinfo_end];
                match userinfo.split_once(':') {
                    Some((user, _)) if !user.is_empty() => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    _ => out.push_str("***"),
                }
                out.push_str(&word[userinfo_end..]);
            }
            None => out.push_str(word),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `--mode`: an octal string as chmod takes it, as `mode` in the config file.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!(
            "expected an octal mode of at most 4 digits such as 0644, not {s:?}"
        )),
    }
}

/// A size in bytes: a plain number, or one with a unit (`512KiB`, `16MiB`,
/// `1GiB`; `K`, `M`, `G` and `KB`, `MB`, `GB` are the same powers of 1024,
/// since nobody means 1000 when capping a config file).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "invalid size {s:?}; examples: 65536, 512KiB, 16MiB"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("invalid size {s:?}; examples: 65536, 512KiB, 16MiB"))
}

/// Sizes in TOML: a number of bytes or a string with a unit (`"16MiB"`);
/// in `--print-config`, bytes.
pub mod size_serde {
    use super::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Bytes(n)) => Ok(Some(n)),
            Some(Raw::Text(s)) => super::parse_size(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 K"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert!(parse_size("16 furlongs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        let err = parse_duration("500000000000y").unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(parse_duration("366d").is_err());
        assert!(Debounce::parse("1s:200000000000y").is_err());
    }

    #[test]
    fn debounce_max_defaults_to_four_times_min() {
        let d = Debounce::parse("500ms").unwrap();
        assert_eq!(d.max, Duration::from_secs(2));
        let d = Debounce::parse("2s:1s").unwrap();
        assert_eq!(d.max, Duration::from_secs(2), "max is never below min");
    }

    #[test]
    fn signals_parse_with_or_without_sig() {
        assert_eq!(parse_signal("SIGHUP"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("usr1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("15"), Ok(Signal::SIGTERM));
        assert!(parse_signal("SIGNOPE").unwrap_err().contains("SIGNOPE"));
    }

    #[test]
    fn wait_targets() {
        let kind = |s: &str| WaitTarget::parse(s).map(|t| t.kind().clone());
        assert_eq!(
            kind("tcp://db:5432"),
            Ok(WaitKind::Tcp {
                host: "db".into(),
                port: 5432
            })
        );
        assert_eq!(
            kind("tcp://[::1]:80"),
            Ok(WaitKind::Tcp {
                host: "::1".into(),
                port: 80
            })
        );
        assert_eq!(kind("file:///run/x"), Ok(WaitKind::File("/run/x".into())));
        assert!(matches!(
            kind("http://api:8080/healthz"),
            Ok(WaitKind::Http(_))
        ));
        for bad in [
            "tcp://db",
            "db:5432",
            "udp://db:53",
            "http:///x",
            "tcp://db:5432/x",
            "file://relative/x",
        ] {
            assert!(kind(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(
            WaitTarget::parse(" tcp://db:5432 ").unwrap().to_string(),
            "tcp://db:5432"
        );
    }

    #[test]
    fn placeholders_are_quoted_in_shell_strings_only_when_needed() {
        let c = CommandSpec::Shell("nginx -t -c {{ staged }}".into());
        assert_eq!(
            c.substitute(&[("staged", "/etc/a b")]),
            CommandSpec::Shell("nginx -t -c '/etc/a b'".into())
        );
        let c = CommandSpec::Argv(vec!["x".into(), "{{staged}}".into()]);
        assert_eq!(
            c.substitute(&[("staged", "/etc/a b")]),
            CommandSpec::Argv(vec!["x".into(), "/etc/a b".into()])
        );
    }

    #[test]
    fn unknown_placeholders_are_left_alone() {
        let c = CommandSpec::Shell("echo {{ other }} {{ staged }}".into());
        assert_eq!(
            c.substitute(&[("staged", "x")]),
            CommandSpec::Shell("echo {{ other }} x".into())
        );
    }

    #[test]
    fn a_bare_listen_port_is_on_loopback() {
        assert_eq!(parse_listen("9180"), Ok("127.0.0.1:9180".parse().unwrap()));
        assert_eq!(parse_listen("0.0.0.0:1"), Ok("0.0.0.0:1".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:1"), Ok("[::1]:1".parse().unwrap()));
        assert!(parse_listen("localhost:1").is_err());
        assert!(parse_listen("70000").is_err());
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_urls("etcd at http://web:PASS@127.0.0.1:1 did not answer"),
            "etcd at http://web:***@127.0.0.1:1 did not answer"
        );
        assert_eq!(redact_urls("https://TOKEN@h/x"), "https://***@h/x");
        assert_eq!(
            redact_urls("\"http://a:p/w@d@h:1/x\", http://h/p@q"),
            "\"http://a:***@h:1/x\", http://***@q"
        );
        assert_eq!(redact_urls("no url, http://h:1/x"), "no url, http://h:1/x");
        let t = WaitTarget::parse("http://admin:PASS@api:8080/h").unwrap();
        assert_eq!(t.to_string(), "http://admin:***@api:8080/h");
    }
}
