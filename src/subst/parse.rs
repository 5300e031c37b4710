//! The syntax of `stencil subst`: where a reference starts, what it is
//! (a name, `${NAME}`, or with `--extended` an operator and its WORD), and
//! where it ends. Only offsets into the input come out; nothing is copied.

use std::ops::Range;

/// How deep `${A:-${B:-...}}` may nest. The parser is recursive, and a
/// fuzzer (or a hostile template) can nest a million levels.
pub(super) const MAX_DEPTH: usize = 64;

/// One reference, as byte ranges into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ref {
    /// The whole reference, `$` to the closing brace: copied as is when
    /// SHELL-FORMAT does not select the name.
    pub(super) raw: Range<usize>,
    pub(super) name: Range<usize>,
    pub(super) op: Option<(Op, Vec<Part>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Op {
    pub(super) kind: OpKind,
    /// `:-` rather than `-`: an empty value counts as unset.
    pub(super) colon: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    /// `-`: the value, else WORD.
    Default,
    /// `=`: the value, else WORD, which becomes the value.
    Assign,
    /// `?`: the value, else fail with WORD as the message.
    Error,
    /// `+`: WORD if there is a value, else nothing.
    Alternative,
}

/// A piece of an operator's WORD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Literal(Range<usize>),
    /// An escaped `$`, `}` or `\`.
    Byte(u8),
    Ref(Ref),
}

/// What starts at a `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Parsed {
    /// Not a reference: copy the input up to this offset as it is, and go
    /// on scanning there.
    Literal(usize),
    Ref(Ref),
    /// The input ends before it is known which (only when not at eof).
    Incomplete,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses the reference at `buf[d] == b'$'`, exactly as envsubst's
/// `subst_from_stdin` reads one, and with `extended` the operator forms.
pub(super) fn parse_ref(
    buf: &[u8],
    d: usize,
    eof: bool,
    extended: bool,
    depth: usize,
) -> Result<Parsed, SyntaxError> {
    debug_assert_eq!(buf[d], b'$');
    let len = buf.len();
    let more = |at: usize| at >= len && !eof;
    let mut j = d + 1;
    if more(j) {
        return Ok(Parsed::Incomplete);
    }
    let brace = j < len && buf[j] == b'{';
    if brace {
        j += 1;
        if more(j) {
            return Ok(Parsed::Incomplete);
        }
    }
    if j >= len || !is_name_start(buf[j]) {
        // envsubst puts the byte after `$` or `${` back: it is scanned
        // again, so `$$HOME` is `$` and then a reference.
        return Ok(Parsed::Literal(j));
    }
    let name_start = j;
    let mut k = j + 1;
    while k < len && is_name_byte(buf[k]) {
        k += 1;
    }
    if more(k) {
        return Ok(Parsed::Incomplete);
    }
    let name = name_start..k;
    if !brace {
        return Ok(Parsed::Ref(Ref {
            raw: d..k,
            name,
            op: None,
        }));
    }
    if k < len && buf[k] == b'}' {
        return Ok(Parsed::Ref(Ref {
            raw: d..k + 1,
            name,
            op: None,
        }));
    }
    if extended && k < len {
        if let Some(parsed) = parse_op(buf, d, name, eof, depth)? {
            return Ok(parsed);
        }
    }
    // `${NAME` without its `}`: envsubst copies `${NAME` and goes on
    // scanning at the byte after NAME.
    Ok(Parsed::Literal(k))
}

/// Parses `${NAME<op>WORD}` from the byte after NAME, which the caller
/// has checked is in `buf`. `None`: no operator follows NAME.
fn parse_op(
    buf: &[u8],
    d: usize,
    name: Range<usize>,
    eof: bool,
    depth: usize,
) -> Result<Option<Parsed>, SyntaxError> {
    let colon = buf[name.end] == b':';
    let at = if colon { name.end + 1 } else { name.end };
    if at >= buf.len() && !eof {
        return Ok(Some(Parsed::Incomplete));
    }
    let kind = match buf.get(at) {
        Some(b'-') => OpKind::Default,
        Some(b'=') => OpKind::Assign,
        Some(b'?') => OpKind::Error,
        Some(b'+') => OpKind::Alternative,
        _ => return Ok(None),
    };
    if depth >= MAX_DEPTH {
        return Err(SyntaxError {
            at: d,
            message: format!("${{…}} nested more than {MAX_DEPTH} levels deep"),
        });
    }
    match parse_word(buf, at + 1, eof, depth + 1)? {
        Word::Incomplete => Ok(Some(Parsed::Incomplete)),
        Word::Done(parts, end) => Ok(Some(Parsed::Ref(Ref {
            raw: d..end,
            name,
            op: Some((Op { kind, colon }, parts)),
        }))),
        // A shell says "missing }" too. Copying it as GNU does would make
        // the caller rescan the rest of the input from each nested `${`:
        // exponential in the nesting (a fuzzer found it), and it hides a
        // typo in the template.
        Word::Unterminated => Err(SyntaxError {
            at: d,
            message: format!(
                "{}… has no closing }}",
                String::from_utf8_lossy(&buf[d..=at])
            ),
        }),
    }
}

/// A malformed `--extended` form, at byte `at` of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub(super) at: usize,
    pub(super) message: String,
}

enum Word {
    /// The parts, and the offset after the closing brace.
    Done(Vec<Part>, usize),
    Unterminated,
    Incomplete,
}

/// Reads an operator's WORD up to its closing brace.
fn parse_word(buf: &[u8], start: usize, eof: bool, depth: usize) -> Result<Word, SyntaxError> {
    let end_of_input = || {
        if eof {
            Word::Unterminated
        } else {
            Word::Incomplete
        }
    };
    let mut parts = Vec::new();
    let mut literal = start;
    let mut p = start;
    let flush = |parts: &mut Vec<Part>, from: usize, to: usize| {
        if from < to {
            parts.push(Part::Literal(from..to));
        }
    };
    loop {
        let Some(&b) = buf.get(p) else {
            return Ok(end_of_input());
        };
        match b {
            b'}' => {
                flush(&mut parts, literal, p);
                return Ok(Word::Done(parts, p + 1));
            }
            b'\\' => {
                let Some(&next) = buf.get(p + 1) else {
                    return Ok(end_of_input());
                };
                if matches!(next, b'$' | b'}' | b'\\') {
                    flush(&mut parts, literal, p);
                    parts.push(Part::Byte(next));
                    p += 2;
                    literal = p;
                } else {
                    p += 1;
                }
            }
            b'$' => match parse_ref(buf, p, eof, true, depth)? {
                Parsed::Incomplete => return Ok(Word::Incomplete),
                // Literal text stays in the current literal run.
                Parsed::Literal(end) => p = end,
                Parsed::Ref(r) => {
                    flush(&mut parts, literal, p);
                    p = r.raw.end;
                    literal = p;
                    parts.push(Part::Ref(r));
                }
            },
            _ => p += 1,
        }
    }
}

pub(super) fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The offset of the first `$`.
///
/// The fixed-size inner loop has no early exit, so LLVM vectorizes it
/// (std's memchr is not public, and this crate has no memchr dependency).
#[inline]
pub(super) fn find_dollar(hay: &[u8]) -> Option<usize> {
    const LANES: usize = 32;
    let mut chunks = hay.chunks_exact(LANES);
    let mut offset = 0;
    for chunk in &mut chunks {
        let hit = chunk.iter().fold(0u8, |acc, &b| acc | u8::from(b == b'$'));
        if hit != 0 {
            return chunk.iter().position(|&b| b == b'$').map(|p| offset + p);
        }
        offset += LANES;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'$')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_dollar_everywhere() {
        for len in 0..100 {
            for at in 0..len {
                let mut hay = vec![b'x'; len];
                hay[at] = b'$';
                assert_eq!(find_dollar(&hay), Some(at));
            }
            assert_eq!(find_dollar(&vec![b'x'; len]), None);
        }
    }
}
