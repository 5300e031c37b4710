//! What `stencil exec` runs and how: the flags merged over the `[exec]`
//! table of the config file.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::cli::ExecArgs;
use crate::config::ExecTable;
use crate::error::usage;
use crate::pipeline::Options;
use crate::spec::CommandSpec;

/// Default `kill_timeout`: how long a child may take to stop before SIGKILL.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run and how to treat it: flags merged over the `[exec]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSpec {
    /// argv; a string command from the config file is `/bin/sh -c STRING`.
    pub command: Vec<OsString>,
    /// Sent to the child's process group after a change (`--watch`).
    pub reload_signal: Signal,
    /// Restart the child after a change instead of signalling it.
    pub restart_on_change: bool,
    /// Asks the child to stop: sent when stencil gets SIGTERM, and before a
    /// restart.
    pub kill_signal: Signal,
    /// How long the child may take to stop before its group is SIGKILLed.
    pub kill_timeout: Duration,
    /// Forwarded signals go to the child's whole process group (`tini -g`),
    /// not to the child alone (`docker kill`).
    pub signal_group: bool,
}

impl ExecSpec {
    pub fn resolve(args: &ExecArgs, table: Option<&ExecTable>) -> Result<ExecSpec> {
        let table = table.cloned().unwrap_or_default();
        let command = if !args.command.is_empty() {
            args.command.clone()
        } else {
            match table.command {
                Some(CommandSpec::Argv(v)) => v.into_iter().map(OsString::from).collect(),
                Some(CommandSpec::Shell(s)) => vec!["/bin/sh".into(), "-c".into(), s.into()],
                None => {
                    return Err(usage(
                        "no command to run: give it after `--` \
                         (stencil exec -t app.conf.j2:/etc/app.conf -- app --serve) \
                         or as `command` in the config file's [exec] table",
                    ));
                }
            }
        };
        if command[0].is_empty() {
            return Err(usage("the command to run is empty"));
        }
        let reload_signal = args
            .exec
            .reload_signal
            .or(table.reload_signal)
            .unwrap_or(Signal::SIGHUP);
        if matches!(reload_signal, Signal::SIGKILL | Signal::SIGSTOP) {
            return Err(usage(format!(
                "{reload_signal} cannot be the reload signal: a reload never kills or stops the child \
                 (use --restart-on-change to restart it)"
            )));
        }
        Ok(ExecSpec {
            command,
            reload_signal,
            restart_on_change: args.exec.restart_on_change
                || table.restart_on_change.unwrap_or(false),
            kill_signal: args
                .exec
                .kill_signal
                .or(table.kill_signal)
                .unwrap_or(Signal::SIGTERM),
            kill_timeout: args
                .exec
                .kill_timeout
                .or(table.kill_timeout)
                .unwrap_or(DEFAULT_KILL_TIMEOUT),
            signal_group: args.exec.signal_group || table.signal_group.unwrap_or(false),
        })
    }

    /// The command as a user would type it, for logs and errors.
    pub fn display(&self) -> String {
        self.command
            .iter()
            .map(|a| {
                let s = a.to_string_lossy();
                shlex::try_quote(&s).map_or_else(|_| s.to_string(), |q| q.into_owned())
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl ExecArgs {
    /// The pipeline options of the render before the app starts: files are
    /// installed and checked, but no reload command runs, since the app to
    /// reload is not running yet (a `reload = "nginx -s reload"` shared with
    /// `stencil watch` would fail and keep the app from starting). Re-renders
    /// under `--watch` run them: set `no_reload` to false there.
    pub fn options(&self) -> Options {
        Options {
            dry_run: false,
            diff: false,
            show_secrets: false,
            no_reload: true,
            wait_for_data: self.render.wait_for_data,
        }
    }
}
