//! Go's builtin functions and literals as Jinja: what the translator
//! writes for `and`, `eq`, `index`, a string or a number, and the text
//! between actions.

use super::GoError;

fn err(offset: usize, what: &str, construct: &str) -> GoError {
    GoError::new(offset, what, construct)
}

pub(super) const RESERVED: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "elif",
    "for",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "loop",
    "self",
    "super",
    "caller",
    "varargs",
    "kwargs",
    "set",
    "with",
    "range",
    "dict",
    "namespace",
    "lipsum",
    "cycler",
    "joiner",
    "debug",
    "go_range",
    "root",
];

/// Go text with Jinja's openers written as expressions, so `{%` or `{#` in
/// the original text is printed, not parsed.
/// A trailing `{` is written as an expression too: followed by the next
/// tag it would make `{{%` or `{{{`, which Jinja reads differently.
pub(super) fn escape_text(t: &str) -> String {
    let (body, brace) = match t.strip_suffix('{') {
        Some(b) => (b, "{{ \"{\" }}"),
        None => (t, ""),
    };
    let escaped = body
        .replace("{%", "{\u{0}%")
        .replace("{#", "{\u{0}#")
        .replace("{\u{0}%", "{{ \"{%\" }}")
        .replace("{\u{0}#", "{{ \"{#\" }}");
    format!("{escaped}{brace}")
}

/// A Jinja string literal: JSON's escapes, which minijinja reads.
pub(super) fn jinja_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A Go number literal as Jinja writes it.
pub(super) fn number(n: &str) -> Option<String> {
    let clean = n.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = |p: &str, r: u32| {
        digits
            .strip_prefix(p)
            .and_then(|d| i128::from_str_radix(d, r).ok())
    };
    let v = radix("0x", 16)
        .or_else(|| radix("0X", 16))
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| {
            (digits.len() > 1 && digits.starts_with('0') && !digits.contains('.'))
                .then(|| i128::from_str_radix(&digits[1..], 8).ok())
                .flatten()
        });
    let sign = if neg { "-" } else { "" };
    if let Some(v) = v {
        return Some(format!("{sign}{v}"));
    }
    if digits.parse::<i128>().is_ok() {
        return Some(format!("{sign}{digits}"));
    }
    digits.parse::<f64>().ok().map(|f| format!("{sign}{f:?}"))
}

/// Go's own functions, or None for another name.
pub(super) fn builtin(
    name: &str,
    args: &[String],
    at: usize,
) -> Result<Option<(String, bool)>, GoError> {
    let need = |n: usize| {
        if args.len() < n {
            Err(err(at, &format!("{name} needs {n} arguments"), name))
        } else {
            Ok(())
        }
    };
    let cmp = |op: &str| -> Result<(String, bool), GoError> {
        need(2)?;
        Ok((format!("({} {op} {})", args[0], args[1]), false))
    };
    Ok(Some(match name {
        "and" | "or" => {
            need(1)?;
            (format!("({})", args.join(&format!(" {name} "))), false)
        }
        "not" => {
            need(1)?;
            (format!("(not {})", args[0]), false)
        }
        "eq" => {
            need(2)?;
            let alts: Vec<String> = args[1..]
                .iter()
                .map(|b| format!("{} == {b}", args[0]))
                .collect();
            (format!("({})", alts.join(" or ")), false)
        }
        "ne" => cmp("!=")?,
        "lt" => cmp("<")?,
        "le" => cmp("<=")?,
        "gt" => cmp(">")?,
        "ge" => cmp(">=")?,
        "len" => {
            need(1)?;
            (format!("({} | length)", args[0]), false)
        }
        "index" => {
            need(1)?;
            let keys: String = args[1..].iter().map(|k| format!("[{k}]")).collect();
            (format!("{}{keys}", args[0]), false)
        }
        "slice" => {
            need(1)?;
            let r = match &args[1..] {
                [] => ":".to_string(),
                [i] => format!("{i}:"),
                [i, j] => format!("{i}:{j}"),
                _ => return Err(err(at, "3-index slice cannot be translated", "slice")),
            };
            (format!("{}[{r}]", args[0]), false)
        }
        _ => return Ok(None),
    }))
}
