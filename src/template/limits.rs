//! What one render may do: how much work and memory (`render_fuel`), how
//! much output (`max_output`), how deep it may nest (`max_depth`).
//!
//! A value read from a source must not stop the process: a loop count, a
//! width or a key's depth comes from etcd as easily as from the template.
//! minijinja's fuel bounds the work and memory of its own instructions,
//! filters and operators (`"x" * n` and `indent(n)` are refused before they
//! allocate); stencil's functions that allocate from an argument check it
//! against `max_output` first, since no single value needs to be larger
//! than the file it ends up in. An error names the limit and its setting,
//! never the value that hit it (it may be a secret).

use std::io;

use minijinja::{Error, ErrorKind};
use serde::Serialize;

/// The defaults. A render of a large real template (a few thousand keys
/// through `tree()` and loops) uses well under a tenth of the fuel; all of
/// it is about a second of CPU and, at most, some hundreds of MB held.
pub const DEFAULT_RENDER_FUEL: u64 = 20_000_000;
pub const DEFAULT_MAX_OUTPUT: u64 = 64 << 20;
pub const DEFAULT_MAX_DEPTH: usize = 100;
/// minijinja's own ceiling on its recursion limit.
pub const MAX_DEPTH_CEILING: usize = 500;

/// The limits of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// minijinja's fuel: about one unit per instruction and per 64 bytes
    /// the template creates.
    pub render_fuel: u64,
    /// The most bytes one template may render, and the largest value a
    /// function may build.
    pub max_output: u64,
    /// The deepest nesting: macro calls, includes, recursive loops, and the
    /// folders of a key `tree()` turns into dicts.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            render_fuel: DEFAULT_RENDER_FUEL,
            max_output: DEFAULT_MAX_OUTPUT,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A render stopped by one of the [`Limits`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitExceeded(pub String);

/// The render's output, refused past `max` bytes.
pub(super) struct CappedOutput {
    pub(super) bytes: Vec<u8>,
    max: u64,
    pub(super) over: bool,
}

impl CappedOutput {
    pub(super) fn new(max: u64) -> CappedOutput {
        CappedOutput {
            bytes: Vec::new(),
            max,
            over: false,
        }
    }
}

impl io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = u64::try_from(self.bytes.len().saturating_add(buf.len())).unwrap_or(u64::MAX);
        if len > self.max {
            self.over = true;
            return Err(io::Error::other("max_output reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Refuses a value of `bytes` bytes (an estimate made before building it)
/// that would be larger than `max_output`. `what` names the function.
pub(super) fn ensure_size(what: &str, bytes: u128, limits: &Limits) -> Result<(), Error> {
    if bytes <= u128::from(limits.max_output) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what}: the result would be larger than max_output ({} bytes); \
             raise [limits] max_output if that is meant",
            limits.max_output
        ),
    ))
}

/// `what` with the render in progress's limits (the defaults outside one).
pub(super) fn check_size(what: &str, bytes: u128) -> Result<(), Error> {
    let limits = super::reads::current().map_or_else(|_| Limits::default(), |s| s.limits);
    ensure_size(what, bytes, &limits)
}

/// The message for a render minijinja stopped, when a limit stopped it.
pub(super) fn explain(err: &Error, limits: &Limits) -> Option<String> {
    if err.kind() == ErrorKind::OutOfFuel {
        return Some(format!(
            "the template used up its render_fuel ({}): it did more work or built more data \
             than one render may (a loop count or a size read from a source?); raise [limits] \
             render_fuel if that is meant",
            limits.render_fuel
        ));
    }
    let recursion = err.kind() == ErrorKind::InvalidOperation
        && err
            .detail()
            .is_some_and(|d| d.contains("recursion limit exceeded"));
    recursion.then(|| {
        format!(
            "the template nests deeper than max_depth ({}) (macro calls, includes or \
             recursive loops)",
            limits.max_depth
        )
    })
}

/// The size of `s` with every match of a pattern (found `matches` times)
/// replaced by `with`.
pub(super) fn replaced_size(s: &str, matches: usize, pattern_len: usize, with: &str) -> u128 {
    let m = matches as u128;
    (s.len() as u128)
        .saturating_sub(m.saturating_mul(pattern_len as u128))
        .saturating_add(m.saturating_mul(with.len() as u128))
}

/// The pycompat string methods, with `replace`, `join` and `format`
/// refused before they build a value larger than `max_output`.
pub(super) fn method_callback(
    state: &mut minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> Result<minijinja::Value, Error> {
    if let Some(s) = value.as_str() {
        let arg = |i: usize| args.get(i).and_then(|a| a.as_str()).unwrap_or_default();
        match method {
            "replace" if !arg(0).is_empty() || !s.is_empty() => {
                let (old, new) = (arg(0), arg(1));
                // An empty pattern matches between every character.
                let matches = if old.is_empty() {
                    s.chars().count() + 1
                } else {
                    s.matches(old).count()
                };
                check_size("replace", replaced_size(s, matches, old.len(), new))?;
            }
            "join" => {
                let items = args.first().and_then(|a| a.len()).unwrap_or(0) as u128;
                let listed: u128 = args
                    .first()
                    .and_then(|a| a.try_iter().ok())
                    .map_or(0, |it| {
                        it.map(|v| v.as_str().map_or(0, str::len) as u128).sum()
                    });
                check_size("join", (s.len() as u128).saturating_mul(items) + listed)?;
            }
            "format" => check_size("format", widest_number(s))?,
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// The largest number written in a format string: a width or precision
/// there is at least that many bytes of output.
fn widest_number(format: &str) -> u128 {
    format
        .split(|c: char| !c.is_ascii_digit())
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<u128>().unwrap_or(u128::MAX))
        .max()
        .unwrap_or(0)
}
