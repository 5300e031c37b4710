//! `stencil exec`'s arguments: the render before the app starts, the
//! `--wait` dependencies, and how the app is run and supervised.

use std::time::Duration;

use clap::Args;

use super::TemplateArgs;
use crate::spec::{Debounce, WaitTarget, parse_duration, parse_listen, parse_signal};

pub(super) const EXEC_EXAMPLES: &str = "\
Examples:
  # A Dockerfile entrypoint: render, then become the app (same PID):
  ENTRYPOINT [\"stencil\", \"exec\", \"-t\", \"/tpl/app.conf.j2:/etc/app.conf\", \"--\"]
  CMD [\"app\", \"--serve\"]

  # Wait for the database and the API before starting:
  stencil exec -t app.conf.j2:/etc/app.conf --wait tcp://db:5432 \\
      --wait http://api:8080/healthz --wait-timeout 2m -- app --serve

  # Wait for a secret file to be mounted:
  stencil exec -t app.conf.j2:/etc/app.conf --wait file:///run/secrets/token -- app

  # Supervise nginx, SIGQUIT (graceful) when asked to stop:
  stencil exec -c stencil.toml --watch --kill-signal SIGQUIT -- nginx -g 'daemon off;'

Signals with --watch (without it, stencil is gone and the app gets them itself),
sent to the app's process alone, or to its process group with --signal-group:
  SIGTERM          sends --kill-signal (default SIGTERM) to the app;
                   SIGKILL to the group after --kill-timeout
  SIGINT           forwarded; SIGKILL to the group after --kill-timeout
  SIGHUP SIGQUIT   forwarded, nothing else: never a kill timer
  SIGUSR1 SIGUSR2  forwarded, nothing else
  SIGWINCH         forwarded, nothing else
  others           not forwarded
  after a change   --reload-signal (default SIGHUP) to the app, or a restart
                   with --restart-on-change. An app without a handler for its
                   reload signal dies of it: set the one it reloads on.";

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub templates: TemplateArgs,

    #[command(flatten)]
    pub render: ExecRenderArgs,

    #[command(flatten)]
    pub exec: ExecOptions,

    /// The command to run and its arguments, after `--`; passed exactly.
    ///
    /// Wins over `command` in the config file's [exec] table.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// The output options of render that make sense before an app starts.
/// Reload commands do not run before the app starts: there is nothing to
/// reload yet.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct ExecRenderArgs {
    /// How long to wait for missing data before failing (e.g. 30s, 2m). Default: fail at once.
    #[arg(long, env = "STENCIL_WAIT_FOR_DATA", value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for_data: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Running the app")]
pub struct ExecOptions {
    /// Before starting the app, wait until URL is up; repeatable.
    ///
    /// tcp://HOST:PORT accepts a connection; http://… or https://… answers
    /// with a 2xx status; file:///PATH exists. Example: --wait tcp://db:5432
    /// --wait http://api:8080/healthz. STENCIL_WAIT takes several, separated
    /// by spaces.
    #[arg(long, env = "STENCIL_WAIT", value_name = "URL", value_delimiter = ' ',
          value_parser = WaitTarget::parse)]
    pub wait: Vec<WaitTarget>,

    /// How long to wait for all --wait dependencies together (e.g. 30s, 2m).
    #[arg(long, env = "STENCIL_WAIT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration,
          default_value = "60s")]
    pub wait_timeout: Duration,

    /// Stay as the app's parent and supervise it instead of exec'ing into it.
    ///
    /// Re-renders when the data changes, as `stencil watch` does, and sends
    /// the app --reload-signal after a change (or restarts it). Forwards
    /// signals to the app's process group, stops it with --kill-signal and
    /// --kill-timeout, reaps orphaned processes and exits with the app's
    /// status.
    #[arg(long, env = "STENCIL_WATCH")]
    pub watch: bool,

    /// With --watch: serve /healthz, /readyz, /metrics and /status on this
    /// address; a bare port is on 127.0.0.1.
    #[arg(long, env = "STENCIL_LISTEN", value_name = "ADDR|PORT", value_parser = parse_listen)]
    pub listen: Option<std::net::SocketAddr>,

    /// With --watch: quiet period before acting on a change, MIN or MIN:MAX.
    #[arg(long, env = "STENCIL_DEBOUNCE", value_name = "MIN[:MAX]", value_parser = Debounce::parse)]
    pub debounce: Option<Debounce>,

    /// With --watch: the signal sent to the app after a change (e.g. SIGHUP, SIGUSR2). [default: SIGHUP]
    ///
    /// An app that has no handler for it dies of it (SIGHUP's default action
    /// is to terminate): set the signal the app reloads on, or use
    /// --restart-on-change. Config: reload_signal in [exec].
    #[arg(long, env = "STENCIL_RELOAD_SIGNAL", value_name = "SIG",
          value_parser = parse_signal)]
    pub reload_signal: Option<nix::sys::signal::Signal>,

    /// With --watch: restart the app after a change instead of signalling it.
    #[arg(long, env = "STENCIL_RESTART_ON_CHANGE")]
    pub restart_on_change: bool,

    /// With --watch: the signal that asks the app to stop, sent on SIGTERM and before a restart. [default: SIGTERM]
    ///
    /// Example: --kill-signal SIGQUIT for nginx's graceful stop.
    #[arg(long, env = "STENCIL_KILL_SIGNAL", value_name = "SIG",
          value_parser = parse_signal)]
    pub kill_signal: Option<nix::sys::signal::Signal>,

    /// With --watch: how long the app may take to stop before its process group is SIGKILLed. [default: 10s]
    #[arg(long, env = "STENCIL_KILL_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub kill_timeout: Option<Duration>,

    /// With --watch: send forwarded and reload signals to the app's whole process group.
    ///
    /// Without it they go to the app's process alone, as `docker kill -s HUP`
    /// does, so a helper the app started (a shell app's `sleep`) is not
    /// killed by a reload's SIGHUP; with it, as `tini -g` does. The SIGKILL
    /// after --kill-timeout always reaches the group. Config: signal_group
    /// in [exec].
    #[arg(long, env = "STENCIL_SIGNAL_GROUP")]
    pub signal_group: bool,
}
