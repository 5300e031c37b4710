//! Check and reload commands.
//!
//! A command is a string run with `sh -c`, or an array run as argv with no
//! shell. `{{ staged }}` and `{{ destination }}` in it are replaced by the
//! staged file and the destination. Each command runs in its own process
//! group so a timeout kills everything it started (a reload that forks a
//! helper must not outlive its deadline), and its stdout and stderr go to an
//! unnamed temporary file rather than a pipe: a backgrounded grandchild that
//! keeps a pipe open would otherwise hang stencil after the command exits.
//! While stencil supervises an app, the child is spawned through the
//! reaper (`reap`), which owns waitpid then and hands its status back.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::spec::CommandSpec;
use anyhow::{Context, Result};

/// How much of a command's output is kept for the error message.
const OUTPUT_LIMIT: u64 = 16 * 1024;

/// A check or reload command that ran and failed (exit status, signal or
/// timeout), as opposed to one that could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandFailed(pub String);

/// Whether an error is (or was caused by) a failed command.
pub fn is_command_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<CommandFailed>())
}

/// Runs `spec` to completion or until `timeout`, then kills its process group.
///
/// `what` names the command in errors ("check command", "reload command").
/// A non-zero exit, a signal or a timeout is an error carrying the command's
/// output. A successful command's output is logged at info, one line per
/// output line, each prefixed by `label` (the template), as confd and
/// consul-template users expect to see it.
pub fn run(spec: &CommandSpec, what: &str, label: &str, timeout: Duration) -> Result<()> {
    let mut cmd = match spec {
        CommandSpec::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        CommandSpec::Argv(v) => {
            let mut c = Command::new(&v[0]);
            c.args(&v[1..]);
            c
        }
    };
    let mut out = tempfile::tempfile().context("cannot create a file for the command's output")?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .process_group(0);
    // Registered while it runs, so a signal that ends stencil kills it.
    let (mut child, _group) = crate::cleanup::spawn_group(|| {
        let child = crate::reap::spawn(&mut cmd)?;
        let pid = child.pid();
        Ok((child, pid))
    })
    .with_context(|| format!("{what} `{spec}` could not be started"))?;
    let status = match child.wait_timeout(timeout)? {
        // A daemon the command started and left running is its business
        // (`service foo start`); only a timeout kills the group.
        Some(status) => status,
        None => {
            child.kill_group();
            let output = read_output(&mut out);
            return Err(CommandFailed(format!(
                "{what} `{spec}` timed out after {}; its process group was killed{}",
                humantime::format_duration(timeout),
                format_output(&output)
            ))
            .into());
        }
    };
    let output = read_output(&mut out);
    if !status.success() {
        return Err(CommandFailed(format!(
            "{what} `{spec}` failed ({}){}",
            describe_status(status),
            format_output(&output)
        ))
        .into());
    }
    for line in output.trim_end().lines() {
        tracing::info!("{label}: {line}");
    }
    Ok(())
}

/// How a process ended, for messages: `exit status 3`, `killed by SIGKILL`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

fn read_output(f: &mut std::fs::File) -> String {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_LIMIT);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        s.insert_str(0, "[…earlier output cut…]\n");
    }
    s
}

fn format_output(output: &str) -> String {
    let trimmed = output.trim_end();
    if trimmed.is_empty() {
        "; it printed nothing".into()
    } else {
        let indented: Vec<String> = trimmed.lines().map(|l| format!("    {l}")).collect();
        format!("; its output:\n{}", indented.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_command_reports_status_and_output() {
        let err = run(
            &CommandSpec::Shell("echo broken config >&2; exit 3".into()),
            "check command",
            "a.j2",
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status 3"), "{err}");
        assert!(err.contains("broken config"), "{err}");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // The background sleep would create the marker if it outlived the
        // group kill.
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let err = run(
            &CommandSpec::Shell(script),
            "reload command",
            "a.j2",
            Duration::from_millis(200),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("timed out"), "{err}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "a process of the group outlived the timeout"
        );
    }
}
