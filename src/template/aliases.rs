//! confd's and consul-template's string and number helpers, with Go's
//! exact semantics (strings, path and strconv), for converted templates
//! and for users who know them by these names. Only names whose meaning
//! is the same in both tools are here: consul-template's `contains` tests
//! list membership where confd's tests a substring.

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("toUpper", |s: String| s.to_uppercase());
    env.add_function("toLower", |s: String| s.to_lowercase());
    env.add_function("base", |s: String| base(&s));
    env.add_function("dir", |s: String| dir(&s));
    env.add_function("trimSuffix", |s: String, suffix: String| {
        s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_string()
    });
    env.add_function("atoi", |s: String| {
        s.parse::<i64>()
            .map_err(|_| invalid(format!("atoi: parsing {s:?}: invalid syntax")))
    });
    env.add_function("seq", |first: i64, last: i64| {
        (first..=last).map(Value::from).collect::<Vec<_>>()
    });
    env.add_function("trimSpace", |s: String| s.trim().to_string());
    env.add_function("replaceAll", |old: String, new: String, s: String| {
        s.replace(old.as_str(), new.as_str())
    });
    env.add_function("parseBool", |s: String| parse_bool(&s));
    env.add_function("parseInt", |s: String| {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<i64>()
            .map_err(|_| invalid(format!("parseInt: parsing {s:?}: invalid syntax")))
    });
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// strconv.ParseBool, with consul-template's "" -> false.
fn parse_bool(s: &str) -> Result<bool, Error> {
    match s {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(invalid(format!("parseBool: parsing {s:?}: invalid syntax"))),
    }
}

/// Go's path.Base: "" is ".", trailing slashes go, all slashes is "/".
fn base(s: &str) -> String {
    if s.is_empty() {
        return ".".into();
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's path.Dir: everything up to the last slash, cleaned.
fn dir(s: &str) -> String {
    let upto = s.rfind('/').map_or("", |i| &s[..=i]);
    clean(upto)
}

/// Go's path.Clean.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers_match_go() {
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base(""), ".");
        assert_eq!(base("///"), "/");
        assert_eq!(dir("/a/b/c"), "/a/b");
        assert_eq!(dir("c"), ".");
        assert_eq!(dir("/c"), "/");
        assert_eq!(dir("a/../../b/x"), "../b");
        assert!(parse_bool("yes").is_err());
        assert!(!parse_bool("").unwrap());
    }
}
