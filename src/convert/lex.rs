//! Go text/template's lexer: the text between actions and the tokens of
//! each action, with the trim markers (`{{- ` and ` -}}`) already applied
//! to the neighbouring text, exactly as Go applies them (it trims spaces,
//! tabs, carriage returns and newlines). Comments are dropped here.

use super::GoError;

/// One token inside an action, with its byte offset in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A keyword or function name: `if`, `range`, `getv`, `true`, `nil`.
    Ident(String),
    /// `.Field` (the field name without the dot).
    Field(String),
    /// `.` alone.
    Dot,
    /// `$name`, or `$` alone (name empty).
    Var(String),
    /// A string literal, unescaped.
    Str(String),
    /// A number as written (`42`, `0x1f`, `1.5`, `'a'` as its code point).
    Number(String),
    LParen,
    RParen,
    Pipe,
    Comma,
    Declare,
    Assign,
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Text(String),
    /// The tokens of one action and the offset of its `{{`.
    Action(Vec<(Tok, usize)>, usize),
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits `src` into text and actions.
pub(crate) fn lex(src: &str) -> Result<Vec<Item>, GoError> {
    let mut items = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    while pos < src.len() {
        let Some(rel) = src[pos..].find(LEFT) else {
            push_text(&mut items, &src[pos..], trim_next, false);
            break;
        };
        let start = pos + rel;
        let mut inner = start + LEFT.len();
        let trim_left =
            src[inner..].starts_with('-') && src[inner + 1..].chars().next().is_some_and(is_space);
        if trim_left {
            inner += 1;
        }
        push_text(&mut items, &src[pos..start], trim_next, trim_left);
        let (toks, end, trim_right) = lex_action(src, inner, start)?;
        if let Some(toks) = toks {
            items.push(Item::Action(toks, start));
        }
        trim_next = trim_right;
        pos = end;
    }
    Ok(items)
}

fn push_text(items: &mut Vec<Item>, text: &str, trim_start: bool, trim_end: bool) {
    let mut text = text;
    if trim_start {
        text = text.trim_start_matches(is_space);
    }
    if trim_end {
        text = text.trim_end_matches(is_space);
    }
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
}

/// Lexes from just inside `{{` (after a trim marker) to just past `}}`.
/// Returns the tokens (None for a comment), the end offset and whether a
/// right trim marker was present.
#[allow(clippy::type_complexity)] // one private call site
fn lex_action(
    src: &str,
    mut pos: usize,
    start: usize,
) -> Result<(Option<Vec<(Tok, usize)>>, usize, bool), GoError> {
    let unclosed = || GoError::new(start, "unclosed action", "{{");
    // A comment: `{{/* ... */}}`, with optional trim markers around it.
    let after_space = pos + src[pos..].len() - src[pos..].trim_start_matches(is_space).len();
    if src[after_space..].starts_with("/*") {
        let close = src[after_space..]
            .find("*/")
            .map(|i| after_space + i + 2)
            .ok_or_else(|| GoError::new(start, "unclosed comment", "/*"))?;
        let rest = &src[close..];
        if rest.starts_with(RIGHT) {
            return Ok((None, close + 2, false));
        }
        if rest.starts_with(" -}}") || rest.starts_with("\t-}}") || rest.starts_with("\n-}}") {
            return Ok((None, close + 4, true));
        }
        return Err(GoError::new(
            close,
            "comment ends before closing delimiter",
            "*/",
        ));
    }
    let mut toks = Vec::new();
    loop {
        let rest = &src[pos..];
        let Some(c) = rest.chars().next() else {
            return Err(unclosed());
        };
        if is_space(c) {
            // ` -}}`: a right trim marker needs the space before it.
            let trimmed = rest.trim_start_matches(is_space);
            if trimmed.starts_with("-}}") {
                return Ok((Some(toks), src.len() - trimmed.len() + 3, true));
            }
            pos = src.len() - trimmed.len();
            continue;
        }
        if rest.starts_with(RIGHT) {
            return Ok((Some(toks), pos + 2, false));
        }
        let (tok, len) = lex_token(rest, pos)?;
        toks.push((tok, pos));
        pos += len;
    }
}

fn lex_token(rest: &str, pos: usize) -> Result<(Tok, usize), GoError> {
    let c = rest.chars().next().unwrap_or(' ');
    let word_len = |s: &str| {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    Ok(match c {
        '(' => (Tok::LParen, 1),
        ')' => (Tok::RParen, 1),
        '|' => (Tok::Pipe, 1),
        ',' => (Tok::Comma, 1),
        ':' if rest.starts_with(":=") => (Tok::Declare, 2),
        '=' => (Tok::Assign, 1),
        '.' if rest[1..].starts_with(|c: char| c.is_ascii_digit()) => number(rest, pos)?,
        '.' => {
            let n = word_len(&rest[1..]);
            if n == 0 {
                (Tok::Dot, 1)
            } else {
                (Tok::Field(rest[1..=n].to_string()), n + 1)
            }
        }
        '$' => {
            let n = word_len(&rest[1..]);
            (Tok::Var(rest[1..=n].to_string()), n + 1)
        }
        '"' => quoted(rest, pos)?,
        '`' => {
            let end = rest[1..]
                .find('`')
                .ok_or_else(|| GoError::new(pos, "unterminated raw string", "`"))?;
            (Tok::Str(rest[1..=end].to_string()), end + 2)
        }
        '\'' => char_literal(rest, pos)?,
        '-' | '+' | '0'..='9' => number(rest, pos)?,
        c if c.is_alphabetic() || c == '_' => {
            let n = word_len(rest);
            (Tok::Ident(rest[..n].to_string()), n)
        }
        c => {
            return Err(GoError::new(
                pos,
                "unexpected character in action",
                &c.to_string(),
            ));
        }
    })
}

fn number(rest: &str, pos: usize) -> Result<(Tok, usize), GoError> {
    let n = rest
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || (i == 0 && "+-".contains(c)))
                && !(matches!(c, '+' | '-') && i > 0 && rest[..i].ends_with(['e', 'E', 'p', 'P']))
        })
        .map_or(rest.len(), |(i, _)| i);
    let text = &rest[..n];
    if n == 0 || text == "-" || text == "+" {
        return Err(GoError::new(pos, "bad number syntax", &rest[..n.max(1)]));
    }
    Ok((Tok::Number(text.to_string()), n))
}

/// A Go interpreted string literal: the escapes Go's strconv.Unquote knows.
fn quoted(rest: &str, pos: usize) -> Result<(Tok, usize), GoError> {
    let mut out = String::new();
    let mut chars = rest.char_indices().skip(1);
    let bad = |what: &str| GoError::new(pos, what, "\"");
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((Tok::Str(out), i + 1)),
            '\n' => return Err(bad("unterminated quoted string")),
            '\\' => {
                let (_, e) = chars
                    .next()
                    .ok_or_else(|| bad("unterminated quoted string"))?;
                let simple = match e {
                    'n' => Some('\n'),
                    't' => Some('\t'),
                    'r' => Some('\r'),
                    'a' => Some('\x07'),
                    'b' => Some('\x08'),
                    'f' => Some('\x0c'),
                    'v' => Some('\x0b'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '\'' => Some('\''),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    continue;
                }
                let digits = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return Err(bad("unknown escape sequence in string")),
                };
                let hex: String = (0..digits)
                    .filter_map(|_| chars.next().map(|p| p.1))
                    .collect();
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| bad("bad escape in string"))?;
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    Err(bad("unterminated quoted string"))
}

fn char_literal(rest: &str, pos: usize) -> Result<(Tok, usize), GoError> {
    let mut chars = rest.char_indices().skip(1);
    let bad = || GoError::new(pos, "bad character literal", "'");
    let (_, c) = chars.next().ok_or_else(bad)?;
    let c = if c == '\\' {
        let (_, e) = chars.next().ok_or_else(bad)?;
        match e {
            'n' => '\n',
            't' => '\t',
            '\\' => '\\',
            '\'' => '\'',
            _ => return Err(bad()),
        }
    } else {
        c
    };
    match chars.next() {
        Some((i, '\'')) => Ok((Tok::Number(u32::from(c).to_string()), i + 1)),
        _ => Err(bad()),
    }
}
