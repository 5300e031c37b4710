//! What a batch reports when a reload failed and the files it reloaded
//! onto were put back: one line for `/status`, the whole story for stderr.

use anyhow::{Result, anyhow};

use crate::command;
use crate::spec::CommandSpec;

/// A reload that failed and the files put back after it.
pub(super) struct Rollback<'a> {
    pub(super) spec: &'a CommandSpec,
    /// The templates restored.
    pub(super) names: &'a [String],
    pub(super) first: &'a anyhow::Error,
    /// The run on the restored files.
    pub(super) second: Option<&'a Result<()>>,
}

impl Rollback<'_> {
    /// One line for `/status` and `/readyz`: statuses, no output.
    pub(super) fn summary(&self) -> String {
        let first = status_line(self.first);
        match self.second {
            Some(Err(e)) => format!(
                "{first} on this content; the previous file was restored, and the reload \
                 failed on it too ({}); the restored file stays",
                status_line(e)
            ),
            _ => format!(
                "{first} on this content; the previous file was restored and the reload ran \
                 again on it, successfully"
            ),
        }
    }

    /// The error for stderr and the log: both runs, with their output.
    pub(super) fn error(&self) -> anyhow::Error {
        let names = self.names.join(", ");
        let (what, file, it) = if self.names.len() == 1 {
            ("file was", "file", "it")
        } else {
            ("files were", "files", "them")
        };
        let first = format!("first run, on the new {file}: {:#}", self.first);
        match self.second {
            Some(Err(e)) => anyhow!("second run, on the restored {file}: {e:#}")
                .context(first)
                .context(format!(
                    "reload command `{}` failed on the new {names}, and again after the \
                     previous {what} restored; the restored {what} kept",
                    self.spec
                )),
            _ => anyhow!(first).context(format!(
                "reload command `{}` failed on the new {names}; the previous {what} restored \
                 and the reload ran again on {it}: it succeeded",
                self.spec
            )),
        }
    }
}

/// A command's failure in one line: its status, without its output.
fn status_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<command::CommandFailed>() {
        Some(failed) => {
            let line = failed.0.lines().next().unwrap_or_default();
            line.trim_end_matches("; its output:")
                .trim_end_matches("; it printed nothing")
                .to_string()
        }
        None => format!("{e:#}"),
    }
}
