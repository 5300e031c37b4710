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
            .map_err(|_| invalid(not_shown("atoi", "a decimal integer")))
    });
    env.add_function("seq", seq);
    env.add_function("trimSpace", |s: String| s.trim().to_string());
    env.add_function("replaceAll", |old: String, new: String, s: String| {
        let matches = if old.is_empty() {
            s.chars().count() + 1
        } else {
            s.matches(old.as_str()).count()
        };
        let size = super::limits::replaced_size(&s, matches, old.len(), &new);
        super::limits::check_size("replaceAll", size)?;
        Ok::<_, Error>(s.replace(old.as_str(), new.as_str()))
    });
    env.add_function("parseBool", |s: String| parse_bool(&s));
    env.add_function("split", |sep: String, s: String| split(&sep, &s));
    env.add_function("in", |list: Value, v: Value| member(&list, &v));
    env.add_function("contains", |v: Value, list: Value| member(&list, &v));
    env.add_function("regexMatch", |re: String, s: String| {
        Ok::<_, Error>(regex("regexMatch", &re)?.is_match(&s))
    });
    env.add_function("regexReplaceAll", |re: String, with: String, s: String| {
        let re = regex("regexReplaceAll", &re)?;
        // `$1` in the replacement can repeat a whole match: at most the
        // replacement's length times the longest match, per match.
        let (mut matches, mut longest) = (0usize, 0usize);
        for m in re.find_iter(&s) {
            matches += 1;
            longest = longest.max(m.len());
        }
        let per_match = (with.len() as u128).saturating_mul(longest.max(1) as u128);
        let size = (s.len() as u128).saturating_add((matches as u128).saturating_mul(per_match));
        super::limits::check_size("regexReplaceAll", size)?;
        Ok::<_, Error>(re.replace_all(&s, with.as_str()).into_owned())
    });
    env.add_function("parseInt", |s: String| {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<i64>()
            .map_err(|_| invalid(not_shown("parseInt", "a decimal integer")))
    });
}

/// confd's `seq FIRST LAST`: the integers from FIRST to LAST. At most as
/// many as minijinja's `range` makes (100,000): the bounds may come from a
/// source.
fn seq(first: i64, last: i64) -> Result<Vec<Value>, Error> {
    const MAX_ITEMS: i128 = 100_000;
    if i128::from(last) - i128::from(first) >= MAX_ITEMS {
        return Err(invalid(format!(
            "seq: more than {MAX_ITEMS} numbers (the most range() makes too)"
        )));
    }
    Ok((first..=last).map(Value::from).collect())
}

/// consul-template's split: the string is trimmed first, and an empty (or
/// all-space) string is an empty list, not `[""]`. Go's strings.Split with
/// an empty separator splits into characters.
fn split(sep: &str, s: &str) -> Vec<Value> {
    let s = s.trim();
    if s.is_empty() {
        return Vec::new();
    }
    if sep.is_empty() {
        return s.chars().map(|c| Value::from(c.to_string())).collect();
    }
    s.split(sep).map(Value::from).collect()
}

/// consul-template's `in LIST VALUE` (`contains VALUE LIST` with the
/// arguments swapped, for `LIST | contains VALUE`): an item equal to the
/// value, compared within one kind only (integers with integers, floats
/// with floats, strings with strings: "1" is not 1); when LIST is a string,
/// a substring test. Anything else is false, never an error.
fn member(list: &Value, v: &Value) -> bool {
    use minijinja::value::ValueKind;
    if let (Some(hay), Some(needle)) = (list.as_str(), v.as_str()) {
        return hay.contains(needle);
    }
    if !matches!(list.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return false;
    }
    let Ok(items) = list.try_iter() else {
        return false;
    };
    items.into_iter().any(|item| same_kind_equal(&item, v))
}

fn same_kind_equal(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return x == y;
    }
    if a.is_number() && b.is_number() && a.is_integer() == b.is_integer() {
        return a == b;
    }
    false
}

/// Go's regexp and the regex crate share RE2's syntax, and `$1`/`${name}`
/// in the replacement expand the same way.
fn regex(func: &str, re: &str) -> Result<regex::Regex, Error> {
    regex::Regex::new(re).map_err(|e| invalid(format!("{func}: invalid pattern: {e}")))
}

/// Go's "parsing X: invalid syntax" without X: the value may come from a
/// source and be a secret, and errors reach logs and `/status`.
fn not_shown(func: &str, wanted: &str) -> String {
    format!("{func}: invalid syntax: the value is not {wanted} (the value is not shown)")
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// strconv.ParseBool, with consul-template's "" -> false.
fn parse_bool(s: &str) -> Result<bool, Error> {
    match s {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(invalid(not_shown("parseBool", "a boolean"))),
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

    #[test]
    fn split_of_nothing_is_an_empty_list() {
        assert!(split(",", "").is_empty());
        assert!(split(",", "  \n").is_empty());
        assert_eq!(
            split(",", " a,b \n"),
            vec![Value::from("a"), Value::from("b")]
        );
        assert_eq!(split(",", "a,").len(), 2);
        assert_eq!(split("", "ab"), vec![Value::from("a"), Value::from("b")]);
    }

    #[test]
    fn membership_compares_within_one_kind() {
        let list = Value::from(minijinja::value::Serde(serde_json::json!(["a", 1, 2.5])));
        assert!(member(&list, &Value::from("a")));
        assert!(member(&list, &Value::from(1)));
        assert!(member(&list, &Value::from(2.5)));
        assert!(!member(&list, &Value::from("1")));
        assert!(!member(&list, &Value::from(1.0)));
        assert!(!member(&list, &Value::from("b")));
        assert!(member(&Value::from("abc"), &Value::from("b")));
        assert!(!member(&Value::from(5), &Value::from(5)));
    }
}
