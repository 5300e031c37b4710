//! consul-template's encoders with its exact output: `toJSON` and
//! `toJSONPretty` as Go's encoding/json writes them, `toYAML` without the
//! trailing newline, `base64Encode`/`base64Decode` and `sha256Hex`; the
//! JSON decoders confd's `json`/`jsonArray` and consul-template's
//! `parseJSON`.

use base64::Engine as _;
use minijinja::value::{Serde, Value};
use minijinja::{Environment, Error, ErrorKind};

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("toJSON", |v: Value| to_json(&v, false));
    env.add_function("toJSONPretty", |v: Value| to_json(&v, true));
    env.add_function("toYAML", |v: Value| to_yaml(&v));
    env.add_function("base64Encode", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    env.add_function("base64Decode", |s: String| base64_decode(&s));
    env.add_function("sha256Hex", |s: String| sha256_hex(&s));
    env.add_function("json", |s: String| from_json("json", &s, Some(true)));
    env.add_function("jsonArray", |s: String| {
        from_json("jsonArray", &s, Some(false))
    });
    env.add_function("parseJSON", |s: String| {
        // consul-template: an empty string is an empty map.
        if s.is_empty() {
            return Ok(Value::from(
                std::collections::BTreeMap::<String, Value>::new(),
            ));
        }
        from_json("parseJSON", &s, None)
    });
}

/// A JSON text as a value: an object (`Some(true)`), an array
/// (`Some(false)`) or anything. The error names the function and the
/// position, never the text (a key's value may be a secret).
fn from_json(name: &str, s: &str, object: Option<bool>) -> Result<Value, Error> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| {
        invalid(format!(
            "{name}: invalid JSON at line {}, column {}",
            e.line(),
            e.column()
        ))
    })?;
    match (object, &v) {
        (Some(true), serde_json::Value::Object(_))
        | (Some(false), serde_json::Value::Array(_))
        | (None, _) => Ok(Value::from(Serde(&v))),
        (Some(true), _) => Err(invalid(format!("{name}: the JSON is not an object"))),
        (Some(false), _) => Err(invalid(format!("{name}: the JSON is not an array"))),
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// Go's json.Marshal (or MarshalIndent with two spaces): map keys sorted,
/// and `<`, `>`, `&`, U+2028 and U+2029 written as `\u` escapes, which Go
/// does by default. These characters only occur inside JSON strings, so
/// escaping them in the whole text is the same as escaping each string.
fn to_json(v: &Value, pretty: bool) -> Result<String, Error> {
    let name = if pretty { "toJSONPretty" } else { "toJSON" };
    // Through serde_json::Value: its maps are sorted, as Go sorts them.
    let value = serde_json::to_value(v).map_err(|e| invalid(format!("{name}: {e}")))?;
    let text = if pretty {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    }
    .map_err(|e| invalid(format!("{name}: {e}")))?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// YAML with the surrounding whitespace trimmed, as consul-template trims
/// it: `{{ toYAML $x }}` on a line of its own adds no blank line.
fn to_yaml(v: &Value) -> Result<String, Error> {
    serde_norway::to_string(v)
        .map(|s| s.trim().to_string())
        .map_err(|e| invalid(format!("toYAML: {e}")))
}

/// Go's StdEncoding (padded; line breaks skipped, other whitespace refused). The error says what is
/// wrong and where, never which character: the value may be a secret.
fn base64_decode(s: &str) -> Result<String, Error> {
    use base64::DecodeError::{InvalidByte, InvalidLastSymbol, InvalidLength, InvalidPadding};
    // Go's decoder skips line breaks (wrapped base64, as in PEM files).
    let s: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| {
            invalid(match e {
                InvalidByte(offset, _) => {
                    format!("base64Decode: illegal base64 data at input byte {offset}")
                }
                InvalidLastSymbol { offset, .. } => {
                    format!("base64Decode: illegal base64 data at input byte {offset} (extra bits)")
                }
                InvalidLength(_) => {
                    "base64Decode: illegal base64 data: the length is wrong (truncated?)".into()
                }
                InvalidPadding => "base64Decode: illegal base64 data: wrong `=` padding".into(),
            })
        })?;
    String::from_utf8(bytes)
        .map_err(|_| invalid("base64Decode: the decoded bytes are not UTF-8 text".into()))
}

fn sha256_hex(s: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_what_go_writes() {
        let v = Value::from(minijinja::value::Serde(
            serde_json::json!({"b": "<a&b>", "a": [1, 2]}),
        ));
        assert_eq!(
            to_json(&v, false).unwrap(),
            r#"{"a":[1,2],"b":"\u003ca\u0026b\u003e"}"#
        );
        assert_eq!(
            to_json(&v, true).unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"\\u003ca\\u0026b\\u003e\"\n}"
        );
    }

    #[test]
    fn yaml_has_no_trailing_newline() {
        let v = Value::from(minijinja::value::Serde(
            serde_json::json!({"a": "x", "b": [1]}),
        ));
        assert_eq!(to_yaml(&v).unwrap(), "a: x\nb:\n- 1");
    }

    #[test]
    fn base64_decode_errors_never_quote_the_value() {
        assert_eq!(base64_decode("c2VjcmV0").unwrap(), "secret");
        assert_eq!(base64_decode("c2Vj\r\ncmV0\n").unwrap(), "secret");
        for input in [
            "c2Vj*mV0",
            "c2VjcmV0Z",
            "c2VjcmV0Zh==",
            "c2Vj=mV0",
            " c2VjcmV0",
        ] {
            let err = base64_decode(input).unwrap_err().to_string();
            assert!(err.contains("base64Decode: illegal base64 data"), "{err}");
            for needle in ["c2Vj", "'*'", "'Z'", "'h'", "'='", "' '"] {
                assert!(!err.contains(needle), "{input}: {err}");
            }
        }
    }

    #[test]
    fn sha256_hex_is_lowercase_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
