//! Templates that only substitute environment variables — literal text and
//! `{{ env.NAME }}`, the shape of every envsubst template moved to stencil —
//! rendered without minijinja's compiler.
//!
//! Compiling was most of such a render: a 5,000-line file spent half of its
//! instructions in minijinja's lexer and parser to produce one lookup per
//! line (BENCHMARKS.md, "The 5,000 references"). A template of that shape
//! is recognised by a scan that accepts only a strict subset of the
//! language (no tags, comments, filters, whitespace markers or non-ASCII
//! names), and rendered by copying text and looking variables up.
//!
//! The fast path only ever succeeds with the output and reads minijinja
//! would have produced: whatever it cannot do exactly as minijinja does — an
//! unset or non-UTF-8 variable, output near `max_output`, a fuel budget too
//! small to be sure of — makes [`Plan::render`] answer `None`, and the
//! template is compiled and rendered the ordinary way, which reports the
//! error. `differs_from_minijinja_nowhere` in the tests below holds the two
//! side by side on generated templates.

use std::ops::Range;

use super::Limits;
use super::functions::read_env;

/// A substitution-only template: its text split into literal runs and
/// variable names (byte ranges into the source).
#[derive(Debug)]
pub(super) struct Plan {
    source: Box<str>,
    pieces: Vec<Piece>,
}

#[derive(Debug)]
enum Piece {
    Text(Range<usize>),
    Env(Range<usize>),
}

impl Plan {
    /// The plan of `source`, or `None` when it is anything but literal text
    /// and `{{ env.NAME }}` references. `keep_trailing_newline` as in the
    /// template's whitespace settings: without it minijinja drops one final
    /// `\n`, then one final `\r`, before reading the template.
    pub(super) fn of(source: &str, keep_trailing_newline: bool) -> Option<Plan> {
        let mut text = source;
        if !keep_trailing_newline {
            text = text.strip_suffix('\n').unwrap_or(text);
            text = text.strip_suffix('\r').unwrap_or(text);
        }
        let bytes = text.as_bytes();
        let mut pieces = Vec::new();
        let mut pos = 0;
        while let Some(start) = next_marker(bytes, pos) {
            // `{%` and `{#` open tags and comments: not this shape.
            if bytes[start + 1] != b'{' {
                return None;
            }
            if start > pos {
                pieces.push(Piece::Text(pos..start));
            }
            let (name, end) = reference(bytes, start + 2)?;
            pieces.push(Piece::Env(name));
            pos = end;
        }
        if pos < bytes.len() {
            pieces.push(Piece::Text(pos..bytes.len()));
        }
        Some(Plan {
            source: text.into(),
            pieces,
        })
    }

    /// The output, with each variable's read recorded for the render in
    /// progress; `None` when the template must be rendered the ordinary way
    /// (see the module's comment).
    pub(super) fn render(&self, limits: &Limits) -> Option<String> {
        let mut out = String::with_capacity(self.source.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(range) => out.push_str(&self.source[range.clone()]),
                Piece::Env(range) => out.push_str(read_env(&self.source[range.clone()]).ok()??),
            }
            if u64::try_from(out.len()).unwrap_or(u64::MAX) >= limits.max_output {
                return None;
            }
        }
        // minijinja spends 3 units of fuel on a reference (lookup,
        // attribute, emit), 1 on a run of text, and 1 per 64 bytes of the
        // values it makes and emits; twice that, so the fast path never
        // succeeds where minijinja would run out.
        let pieces = u64::try_from(self.pieces.len()).unwrap_or(u64::MAX);
        let bytes = u64::try_from(out.len()).unwrap_or(u64::MAX);
        let fuel = pieces.saturating_mul(8).saturating_add(bytes / 16);
        if fuel > limits.render_fuel {
            return None;
        }
        Some(out)
    }
}

/// Where the next `{{`, `{%` or `{#` at or after `from` starts.
fn next_marker(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'{') {
        let start = at + offset;
        match bytes.get(start + 1) {
            Some(b'{' | b'%' | b'#') => return Some(start),
            Some(_) => at = start + 1,
            None => return None,
        }
    }
    None
}

/// After a `{{` ending before `from`: ` env.NAME }}` with spaces or tabs
/// around the reference, nothing else. The range of NAME and where the
/// text after `}}` starts.
fn reference(bytes: &[u8], from: usize) -> Option<(Range<usize>, usize)> {
    let blanks = |at: usize| {
        at + bytes[at..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count()
    };
    let at = blanks(from);
    let name_start = at + b"env.".len();
    if bytes.get(at..name_start)? != b"env." {
        return None;
    }
    let first = *bytes.get(name_start)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let name_end = name_start
        + bytes[name_start..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_')
            .count();
    let close = blanks(name_end);
    if bytes.get(close..close + 2)? != b"}}" {
        return None;
    }
    Some((name_start..name_end, close + 2))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::Sources;
    use crate::template::{Scope, Template, Whitespace};

    fn names(plan: &Plan) -> Vec<&str> {
        plan.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Env(r) => Some(&plan.source[r.clone()]),
                Piece::Text(_) => None,
            })
            .collect()
    }

    const PATH: &str = "/nonexistent/t.j2";

    /// A render scope with no sources: these templates read the
    /// environment only.
    fn scope() -> Scope {
        Scope {
            sources: Sources::default(),
            default_source: None,
        }
    }

    #[test]
    fn only_text_and_env_references_have_a_plan() {
        let plan = Plan::of("a={{ env.HOME }}\nb={{env.PATH}}{{\tenv._X1\t}}}\n", true).unwrap();
        assert_eq!(names(&plan), ["HOME", "PATH", "_X1"]);
        assert!(Plan::of("no references at all { } }}\n", true).is_some());
        for other in [
            "{% if true %}x{% endif %}",
            "{# comment #}",
            "{{- env.HOME }}",
            "{{ env.HOME -}}",
            "{{+ env.HOME }}",
            "{{ env.HOME | upper }}",
            "{{ env['HOME'] }}",
            "{{ env . HOME }}",
            "{{ env.1X }}",
            "{{ env.HOMÉ }}",
            "{{ HOME }}",
            "{{ env.HOME }",
            "{{ env.HOME",
            "{{{ env.HOME }}",
            "{{\nenv.HOME }}",
        ] {
            assert!(Plan::of(other, true).is_none(), "{other:?} has a plan");
        }
    }

    /// One template rendered both ways, in a scope with no sources.
    fn both_ways(
        source: &str,
        whitespace: Whitespace,
    ) -> (Option<Result<String, String>>, Result<String, String>) {
        let path = Path::new(PATH);
        let scope = scope();
        let fast = Template::with_whitespace(path, source.to_string(), whitespace)
            .ok()
            .filter(|t| t.substitution.is_some())
            .map(|t| {
                let r = t.render(&scope);
                r.result.map_err(|e| format!("{e:#}"))
            });
        let slow = Template::compiled(path, source.to_string(), whitespace)
            .map_err(|e| format!("{e:#}"))
            .and_then(|t| t.render(&scope).result.map_err(|e| format!("{e:#}")));
        (fast, slow)
    }

    /// Generated templates of fragments that are, are nearly, or are not
    /// references, with every whitespace setting: wherever the fast path
    /// renders, the output is minijinja's, byte for byte. Where minijinja
    /// fails (an unset variable), the fast path hands over and the error is
    /// minijinja's own.
    #[test]
    fn differs_from_minijinja_nowhere() {
        const FRAGMENTS: &[&str] = &[
            "{{ env.HOME }}",
            "{{env.PATH}}",
            "{{ env.STENCIL_UNSET_VAR }}",
            "{{",
            "}}",
            "{",
            "}",
            "{%",
            "{#",
            "#}",
            "%}",
            "env.",
            "HOME",
            " ",
            "\t",
            "\n",
            "\r",
            "\r\n",
            "-",
            "+",
            "x",
            "é",
            "{{ env.HOME -}}",
            "{{- env.HOME }}",
            "{{ env.HOME }}}",
            "{{{",
        ];
        let mut seed: u64 = 0x5eed_0001;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap_or(0)
        };
        let mut fast_ones = 0;
        for _ in 0..4_000 {
            let len = next() % 8;
            let source: String = (0..len)
                .map(|_| FRAGMENTS[next() % FRAGMENTS.len()])
                .collect();
            let bits = next();
            let whitespace = Whitespace {
                trim_blocks: bits & 1 != 0,
                lstrip_blocks: bits & 2 != 0,
                keep_trailing_newline: bits & 4 != 0,
            };
            let (fast, slow) = both_ways(&source, whitespace);
            if let Some(fast) = fast {
                fast_ones += 1;
                assert_eq!(fast, slow, "{source:?} with {whitespace:?}");
            }
        }
        assert!(
            fast_ones > 500,
            "only {fast_ones} generated templates took the fast path"
        );
    }

    #[test]
    fn small_limits_hand_over_to_minijinja_and_its_errors() {
        let path = Path::new(PATH);
        let scope = scope();
        let source = "x={{ env.HOME }}\n".repeat(50);
        let mut template = Template::with_whitespace(path, source, Whitespace::default()).unwrap();
        assert!(template.substitution.is_some());
        for (limits, says) in [
            (
                Limits {
                    render_fuel: 20,
                    ..Limits::default()
                },
                "render_fuel",
            ),
            (
                Limits {
                    max_output: 40,
                    ..Limits::default()
                },
                "max_output",
            ),
        ] {
            template.set_limits(limits);
            let error = format!("{:#}", template.render(&scope).result.unwrap_err());
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn an_unset_variable_is_minijinjas_error_and_recorded_missing() {
        let path = Path::new(PATH);
        let source = "a={{ env.HOME }}\nb={{ env.STENCIL_UNSET_VAR }}\n".to_string();
        let template = Template::with_whitespace(path, source, Whitespace::default()).unwrap();
        assert!(template.substitution.is_some());
        let scope = scope();
        let rendered = template.render(&scope);
        let error = format!("{:#}", rendered.result.unwrap_err());
        assert!(
            error.contains("STENCIL_UNSET_VAR") && error.contains(":2"),
            "{error}"
        );
        assert!(
            rendered
                .deps
                .missing
                .iter()
                .any(|d| d.to_string().contains("STENCIL_UNSET_VAR"))
        );
    }
}
