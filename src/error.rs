//! Exit codes and how errors reach the user.
//!
//! Every message stencil prints about a failure goes through [`print`], so
//! the format (`error: …` followed by one `caused by: …` line per cause, and
//! the offending template line for template errors) is the same everywhere.

use std::fmt;
use std::io::Write;

/// The process exit status, as documented in stencil(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every file is in place.
    Success,
    /// A render, install, command or source failed.
    Failure,
    /// Usage or configuration error: bad flag, bad config, template syntax.
    Usage,
    /// A child's status passed through (exec), or 128+N for signal N.
    Code(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Code(c) => c,
        }
    }

    /// The worse of two outcomes, so a batch reports its worst failure.
    pub fn max(self, other: Exit) -> Exit {
        if other.code() > self.code() {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// Marks an error as a usage or configuration error (exit status 2).
///
/// It is attached as anyhow context, so code that branches on the kind of
/// failure asks [`is_usage`] instead of matching on message text.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error with just a message.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Extension to mark any result's error as a usage error with a message.
pub trait UsageContext<T> {
    fn usage_context(self, msg: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> UsageContext<T> for Result<T, E> {
    fn usage_context(self, msg: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(UsageError(msg())))
    }
}

pub fn is_usage(err: &anyhow::Error) -> bool {
    err.downcast_ref::<UsageError>().is_some()
}

/// The exit status an error maps to.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    if is_usage(err) {
        Exit::Usage
    } else {
        Exit::Failure
    }
}

/// Prints `error: …` and the cause chain to stderr. A template error also
/// shows the template's lines around the failure.
pub fn print(err: &anyhow::Error) {
    let mut out = std::io::stderr().lock();
    let _ = write!(out, "{}", Report(err));
}

/// The text [`print`] writes, for tests and for logs.
pub struct Report<'a>(pub &'a anyhow::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chain = self.0.chain();
        if let Some(first) = chain.next() {
            writeln!(f, "error: {first}")?;
        }
        for cause in chain {
            writeln!(f, "  caused by: {cause}")?;
        }
        for cause in self.0.chain() {
            if let Some(tmpl) = cause.downcast_ref::<minijinja::Error>() {
                write_template_excerpt(f, tmpl)?;
                break;
            }
        }
        Ok(())
    }
}

/// An error inside a log line: [`Report`]'s text without its leading
/// `error: ` (the line's level already says ERROR) and without the final
/// newline, so a failure reads the same in a one-shot run and in a log.
pub struct Logged<'a>(pub &'a anyhow::Error);

impl fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = Report(self.0).to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        f.write_str(text.trim_end())
    }
}

/// Shows the template lines around a template error with a marker under the
/// failing expression.
///
/// minijinja's own `display_debug_info` also prints the values of the
/// variables in scope, and those can be secrets read from Consul or etcd:
/// values never reach logs or terminals, so stencil prints only the source.
fn write_template_excerpt(f: &mut fmt::Formatter<'_>, err: &minijinja::Error) -> fmt::Result {
    let (Some(source), Some(line)) = (err.template_source(), err.line()) else {
        return Ok(());
    };
    let lines: Vec<&str> = source.lines().collect();
    if line == 0 || line > lines.len() {
        return Ok(());
    }
    let name = err.name().unwrap_or("<template>");
    // Column of the failing expression within its line, when minijinja knows
    // the byte range.
    let column = err.range().map(|r| {
        let line_start = source[..r.start.min(source.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        (r.start - line_start, (r.end - r.start).max(1))
    });
    match column {
        Some((col, _)) => writeln!(f, "  --> {name}:{line}:{}", col + 1)?,
        None => writeln!(f, "  --> {name}:{line}")?,
    }
    let first = line.saturating_sub(2).max(1);
    let width = line.to_string().len();
    for n in first..=line {
        writeln!(f, "{n:>width$} | {}", lines[n - 1])?;
    }
    if let Some((col, len)) = column {
        let len = len.min(lines[line - 1].len().saturating_sub(col).max(1));
        writeln!(f, "{:>width$} | {}{}", "", " ".repeat(col), "^".repeat(len))?;
    }
    Ok(())
}
