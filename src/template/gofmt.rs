//! Go's fmt for templates converted from Go: `print`, `printf`, `println`
//! as text/template's builtins (fmt.Sprint, Sprintf, Sprintln), and
//! `go_range`, the pairs `range $k, $v :=` walks. A converted template
//! prints every value that is not known to be a string through `print`,
//! so a list prints `[a b c]` as Go prints it.

use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("print", |args: Rest<Value>| sprint(&args));
    env.add_function("println", |args: Rest<Value>| {
        let parts: Vec<String> = args.iter().map(go_value).collect();
        format!("{}\n", parts.join(" "))
    });
    env.add_function("printf", |format: String, args: Rest<Value>| {
        sprintf(&format, &args)
    });
    env.add_function("go_range", go_range);
}

/// fmt.Sprint: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |v: &Value| v.kind() == ValueKind::String;
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&go_value(a));
    }
    out
}

/// `%v` of a value.
pub(super) fn go_value(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => "<no value>".into(),
        ValueKind::None => "<nil>".into(),
        ValueKind::Bool => v.is_true().to_string(),
        ValueKind::Number => number(v),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = v
                .try_iter()
                .map(|it| it.map(|x| go_value(&x)).collect())
                .unwrap_or_default();
            format!("[{}]", items.join(" "))
        }
        ValueKind::Map => {
            let mut pairs: Vec<(String, String)> = v
                .try_iter()
                .map(|it| {
                    it.map(|k| {
                        let val = v.get_item(&k).unwrap_or_default();
                        (go_value(&k), go_value(&val))
                    })
                    .collect()
                })
                .unwrap_or_default();
            pairs.sort();
            let items: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", items.join(" "))
        }
        _ => v.as_str().map_or_else(|| v.to_string(), str::to_string),
    }
}

/// Go's `%v` of a number: integers as they are, floats in the shortest
/// form, with an exponent from 1e21 on (strconv's 'g' with Go's %v rule).
fn number(v: &Value) -> String {
    if let Ok(i) = i64::try_from(v.clone()) {
        if v.as_i64().is_some() || !v.to_string().contains('.') {
            return i.to_string();
        }
    }
    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
    let abs = f.abs();
    if f.fract() == 0.0 && abs < 1e21 {
        return format!("{f:.0}");
    }
    if (1e-4..1e21).contains(&abs) {
        return format!("{f}");
    }
    let s = format!("{f:e}");
    // Rust writes 1e21 and 1.5e-5; Go writes 1e+21 and 1.5e-05.
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
    format!("{m}e{sign}{digits:0>2}")
}

struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// fmt.Sprintf with the verbs templates use: v s d q t f F e g x X o b c %.
fn sprintf(format: &str, args: &[Value]) -> Result<String, Error> {
    let mut out = String::new();
    let mut next = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec {
            minus: false,
            plus: false,
            zero: false,
            space: false,
            width: None,
            precision: None,
        };
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        // Go refuses a width or precision over 1e6 (and the format string
        // may come from a source); Rust's formatter panics on a precision
        // over 65535, so that is the bound for it here.
        if spec.width.is_some_and(|w| w > MAX_WIDTH) {
            out.push_str("%!(BADWIDTH)");
            spec.width = None;
        }
        if spec.precision.is_some_and(|p| p > MAX_PRECISION) {
            out.push_str("%!(BADPREC)");
            spec.precision = None;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = next.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let body = verb_body(verb, &spec, arg)?;
        out.push_str(&pad(
            &body,
            &spec,
            matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g' | 'x' | 'X' | 'o' | 'b'),
        ));
    }
    let extra: Vec<String> = next.map(go_value).collect();
    if !extra.is_empty() {
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    Ok(out)
}

/// Go's fmt: a larger width is `%!(BADWIDTH)`.
const MAX_WIDTH: usize = 1_000_000;
const MAX_PRECISION: usize = u16::MAX as usize;

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        let d = usize::try_from(d).unwrap_or(0);
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d));
        chars.next();
    }
    n
}

fn verb_body(verb: char, spec: &Spec, arg: &Value) -> Result<String, Error> {
    let int = || i64::try_from(arg.clone()).ok();
    let float = || f64::try_from(arg.clone()).ok();
    let sign = |neg: bool| {
        if neg {
            "-"
        } else if spec.plus {
            "+"
        } else if spec.space {
            " "
        } else {
            ""
        }
    };
    let bad = || format!("%!{verb}({})", go_value(arg));
    Ok(match verb {
        'v' => go_value(arg),
        's' => {
            let s = go_value(arg);
            match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s,
            }
        }
        'q' => serde_json::to_string(&go_value(arg)).unwrap_or_default(),
        't' if arg.kind() == ValueKind::Bool => go_value(arg),
        'd' if arg.kind() == ValueKind::Number => match int() {
            Some(i) => format!("{}{}", sign(i < 0), i.unsigned_abs()),
            None => bad(),
        },
        'x' | 'X' | 'o' | 'b' if arg.kind() == ValueKind::Number => match int() {
            Some(i) => {
                let a = i.unsigned_abs();
                let s = match verb {
                    'x' => format!("{a:x}"),
                    'X' => format!("{a:X}"),
                    'o' => format!("{a:o}"),
                    _ => format!("{a:b}"),
                };
                format!("{}{s}", sign(i < 0))
            }
            None => bad(),
        },
        'x' if arg.kind() == ValueKind::String => arg
            .as_str()
            .unwrap_or_default()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect(),
        'f' | 'F' | 'e' | 'g' if arg.kind() == ValueKind::Number => match float() {
            Some(f) => {
                let p = spec.precision.unwrap_or(6);
                let body = match verb {
                    'e' => go_exp(&format!("{:.p$e}", f.abs())),
                    'g' => number(&Value::from(f.abs())),
                    _ => format!("{:.p$}", f.abs()),
                };
                format!("{}{body}", sign(f < 0.0))
            }
            None => bad(),
        },
        'c' => match int()
            .and_then(|i| u32::try_from(i).ok())
            .and_then(char::from_u32)
        {
            Some(c) => c.to_string(),
            None => bad(),
        },
        _ => bad(),
    })
}

fn go_exp(s: &str) -> String {
    let (m, e) = s.split_once('e').unwrap_or((s, "0"));
    let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
    format!("{m}e{sign}{digits:0>2}")
}

fn pad(body: &str, spec: &Spec, numeric: bool) -> String {
    let Some(w) = spec.width else {
        return body.to_string();
    };
    let len = body.chars().count();
    if len >= w {
        return body.to_string();
    }
    let fill = w - len;
    if spec.minus {
        format!("{body}{}", " ".repeat(fill))
    } else if spec.zero && numeric {
        let (sign, rest) = match body.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), &body[1..]),
            _ => (String::new(), body),
        };
        format!("{sign}{}{rest}", "0".repeat(fill))
    } else {
        format!("{}{body}", " ".repeat(fill))
    }
}

/// `range $k, $v := X`: a map's pairs sorted by key, a list's index and
/// item.
fn go_range(v: Value) -> Result<Value, Error> {
    match v.kind() {
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            keys.sort();
            Ok(Value::from(
                keys.into_iter()
                    .map(|k| {
                        let val = v.get_item(&k).unwrap_or_default();
                        Value::from(vec![k, val])
                    })
                    .collect::<Vec<_>>(),
            ))
        }
        ValueKind::Seq | ValueKind::Iterable => Ok(Value::from(
            v.try_iter()?
                .enumerate()
                .map(|(i, x)| Value::from(vec![Value::from(i), x]))
                .collect::<Vec<_>>(),
        )),
        ValueKind::None | ValueKind::Undefined => Ok(Value::from(Vec::<Value>::new())),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "range over {} (a {}) is not possible",
                go_value(&v),
                v.kind()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_prints_values_as_go_does() {
        assert_eq!(go_value(&Value::from(vec!["a", "b", "c"])), "[a b c]");
        assert_eq!(go_value(&Value::from(1.5)), "1.5");
        assert_eq!(go_value(&Value::from(3.0)), "3");
        assert_eq!(go_value(&Value::from(())), "<nil>");
        assert_eq!(
            sprint(&[Value::from(1), Value::from(2), Value::from("x")]),
            "1 2x"
        );
    }

    #[test]
    fn printf_knows_go_verbs() {
        let f = |fmt: &str, args: &[Value]| sprintf(fmt, args).unwrap();
        assert_eq!(f("%s:%d", &[Value::from("web"), Value::from(80)]), "web:80");
        assert_eq!(
            f(
                "%05d|%-4s|%4s",
                &[Value::from(42), Value::from("a"), Value::from("b")]
            ),
            "00042|a   |   b"
        );
        assert_eq!(
            f(
                "%.2f %x %q %v %%",
                &[
                    Value::from(1.234),
                    Value::from(255),
                    Value::from("a\"b"),
                    Value::from(true)
                ]
            ),
            "1.23 ff \"a\\\"b\" true %"
        );
        assert_eq!(f("%d", &[]), "%!d(MISSING)");
    }
}
