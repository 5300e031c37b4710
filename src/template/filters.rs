//! stencil's filters: the conversions config files need (JSON, YAML,
//! base64, paths, shell quoting) and `required`.

use base64::Engine as _;
use minijinja::value::{Kwargs, Rest, Serde, Value};
use minijinja::{Environment, Error, ErrorKind};

/// stencil's own filters, as registered by `register`; stencil-templates(7)
/// documents each (a test checks).
pub const FILTERS: &[&str] = &[
    "fromjson",
    "tojson",
    "fromyaml",
    "toyaml",
    "b64encode",
    "b64decode",
    "basename",
    "dirname",
    "shell_quote",
    "required",
];

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_filter("fromjson", fromjson);
    env.add_filter("tojson", tojson);
    env.add_filter("fromyaml", fromyaml);
    env.add_filter("toyaml", toyaml);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("basename", basename);
    env.add_filter("dirname", dirname);
    env.add_filter("shell_quote", shell_quote);
    env.add_filter("required", required);
}

fn fromjson(s: &str) -> Result<Value, Error> {
    serde_json::from_str::<serde_json::Value>(s)
        .map(|v| Value::from(Serde(v)))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}")))
}

/// Plain JSON. minijinja's own `tojson` escapes `<`, `>`, `&` and `'` for
/// embedding in HTML, which only makes config files harder to read.
fn tojson(v: Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let result = match indent {
        None => serde_json::to_string(&v),
        Some(n) => {
            // The width may come from a source: the exact size (the text
            // indented by 0, plus n for every unit of indent by 1) is
            // checked before anything that large is allocated.
            let (zero, one) = (pretty(&v, b"").len(), pretty(&v, b" ").len());
            let size =
                (zero as u128).saturating_add((n as u128).saturating_mul((one - zero) as u128));
            super::limits::check_size("tojson", size)?;
            let indent = " ".repeat(n);
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&v, &mut ser)
                .map(|()| String::from_utf8(out).unwrap_or_default())
        }
    };
    result
        .map(Value::from)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}

/// `v` as pretty JSON indented by `indent` per level ("" when it fails:
/// only its length is used).
fn pretty(v: &Value, indent: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    match serde::Serialize::serialize(v, &mut ser) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

fn fromyaml(s: &str) -> Result<Value, Error> {
    serde_norway::from_str::<serde_norway::Value>(s)
        .map(|v| Value::from(Serde(v)))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromyaml: {e}")))
}

fn toyaml(v: Value) -> Result<Value, Error> {
    serde_norway::to_string(&v)
        .map(Value::from)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("toyaml: {e}")))
}

fn b64encode(v: Value) -> Result<String, Error> {
    let bytes: Vec<u8> = match (v.as_str(), v.as_bytes()) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, Some(b)) => b.to_vec(),
        _ => v.to_string().into_bytes(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64decode(s: &str) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, b64_error(&e)))?;
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "b64decode: the decoded bytes are not UTF-8 text",
        )
    })
}

/// The base64 crate's messages quote the offending character, which is a
/// piece of the value: secrets are what gets base64-encoded, so only the
/// offset is told.
fn b64_error(e: &base64::DecodeError) -> String {
    use base64::DecodeError::{InvalidByte, InvalidLastSymbol, InvalidLength, InvalidPadding};
    match e {
        InvalidByte(offset, _) => {
            format!("b64decode: not base64: an invalid character at offset {offset}")
        }
        InvalidLastSymbol { offset, .. } => {
            format!("b64decode: not base64: the last character (offset {offset}) has extra bits")
        }
        InvalidLength(_) => "b64decode: not base64: the length is wrong (truncated?)".to_string(),
        InvalidPadding => "b64decode: not base64: the `=` padding is wrong".to_string(),
    }
}

/// Like basename(1): `/etc/nginx/` -> `nginx`.
fn basename(s: &str) -> String {
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return if s.is_empty() {
            String::new()
        } else {
            "/".into()
        };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Like dirname(1): `/etc/nginx/nginx.conf` -> `/etc/nginx`, `a` -> `.`.
fn dirname(s: &str) -> String {
    let trimmed = s.trim_end_matches('/');
    match trimmed.rfind('/') {
        None if s.starts_with('/') => "/".into(),
        None => ".".into(),
        Some(0) => "/".into(),
        Some(i) => trimmed[..i].trim_end_matches('/').to_string(),
    }
}

/// Quotes a value for a POSIX shell.
fn shell_quote(v: Value) -> Result<String, Error> {
    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    shlex::try_quote(&s).map(|q| q.into_owned()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "shell_quote: the value contains a NUL byte",
        )
    })
}

/// `value | required("message")`: an error when the value is undefined,
/// none, an empty string or an empty list (`service("web") |
/// required(…)` keeps the last good file when no instance is left).
fn required(v: Value, message: Rest<String>) -> Result<Value, Error> {
    let empty = v.is_undefined()
        || v.is_none()
        || v.as_str().is_some_and(str::is_empty)
        || (v.kind() == minijinja::value::ValueKind::Seq && v.len() == Some(0));
    if empty {
        let msg = message
            .0
            .first()
            .cloned()
            .unwrap_or_else(|| "a required value is missing or empty".into());
        return Err(Error::new(ErrorKind::InvalidOperation, msg));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn filters_list_matches_the_registered_filters() {
        let mut env = Environment::new();
        register(&mut env);
        for name in FILTERS {
            let result = env.render_str(&format!("{{{{ '' | {name} }}}}"), ());
            assert!(
                !matches!(result, Err(e) if e.kind() == ErrorKind::UnknownFilter),
                "filter {name} is not registered"
            );
        }
        // Filters cannot be listed through minijinja's API: read them here.
        let source = include_str!("filters.rs");
        let registered: BTreeSet<&str> = source
            .split("env.add_filter(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert_eq!(registered, FILTERS.iter().copied().collect());
    }

    #[test]
    fn b64decode_errors_do_not_quote_the_value() {
        for input in ["c2Vj*mV0", "c2VjcmV0Z", "c2VjcmV0Zh==", "c2Vj=mV0"] {
            let err = b64decode(input).unwrap_err().to_string();
            assert!(err.contains("not base64"), "{input}: {err}");
            for c in ['*', 'Z', 'h', '='] {
                assert!(!err.contains(&format!("'{c}'")), "{input}: {err}");
            }
            assert!(!err.contains("42") && !err.contains("0x"), "{input}: {err}");
        }
        assert_eq!(b64decode("c2VjcmV0").unwrap(), "secret");
    }

    #[test]
    fn basename_and_dirname_follow_coreutils() {
        assert_eq!(basename("/etc/nginx/nginx.conf"), "nginx.conf");
        assert_eq!(basename("/etc/nginx/"), "nginx");
        assert_eq!(basename("/"), "/");
        assert_eq!(dirname("/etc/nginx/nginx.conf"), "/etc/nginx");
        assert_eq!(dirname("nginx.conf"), ".");
        assert_eq!(dirname("/etc"), "/");
        assert_eq!(dirname("/"), "/");
    }
}
