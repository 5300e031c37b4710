//! Supervising the app under `stencil exec --watch`: its process group,
//! the signals it gets, its exit status, and the orphans it leaves.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::spec::ExecSpec;
use crate::command::describe_status;
use crate::error::Exit;
use crate::reap::{Claimed, Reaper};

/// The signals stencil forwards to a supervised child, and no others:
/// runtime signals (SIGRTMIN+n) and job control stay with stencil.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The command could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{program}`")]
pub struct SpawnError {
    pub(super) program: String,
    #[source]
    pub(super) source: std::io::Error,
}

/// 127 when the command was not found, 126 when it cannot be run, as
/// env(1) and shells report it; 1 for any other error.
pub fn spawn_exit(err: &anyhow::Error) -> Exit {
    match err.downcast_ref::<SpawnError>() {
        Some(e) if e.source.kind() == std::io::ErrorKind::NotFound => Exit::Code(127),
        Some(_) => Exit::Code(126),
        None => crate::error::exit_for(err),
    }
}

/// The exit status stencil reports for a child's: its code, or 128+N when
/// signal N killed it.
pub fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        // Both fit: a code is WEXITSTATUS (0 to 255) and signals end at 64.
        (Some(code), _) => Exit::Code(u8::try_from(code).unwrap_or(u8::MAX)),
        (None, Some(sig)) => Exit::Code(u8::try_from(128 + sig).unwrap_or(u8::MAX)),
        _ => Exit::Failure,
    }
}

/// Receives the signals stencil forwards ([`FORWARDED`]); while it exists,
/// they no longer have their default action (terminating stencil).
///
/// Create it before [`Supervisor::spawn`], so a SIGTERM that arrives while
/// the child starts is handled rather than fatal. Needs a Tokio runtime.
pub struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub fn new() -> Result<Signals> {
        let streams = FORWARDED
            .iter()
            .map(|&sig| {
                let kind = tokio::signal::unix::SignalKind::from_raw(sig as i32);
                tokio::signal::unix::signal(kind)
                    .map(|s| (sig, s))
                    .with_context(|| format!("cannot handle {sig}"))
            })
            .collect::<Result<_>>()?;
        Ok(Signals { streams })
    }

    /// The next signal received. Cancel-safe, for `select!`.
    pub async fn recv(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*sig);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Owns the supervised child (`stencil exec --watch`).
///
/// # Theory of Operation
///
/// The child is spawned in a process group of its own (its PGID is its
/// PID), so signals can be sent to everything it started, and a terminal's
/// Ctrl-C does not reach it twice. When stencil's standard input is the
/// terminal and stencil is in its foreground group, the child's group is
/// made the foreground group, so an interactive child can read the terminal
/// (it would be stopped by SIGTTIN in a background group).
///
/// Forwarded and reload signals go to the child alone, as `docker kill`
/// sends them: a helper a shell app started must not die of the app's
/// reload SIGHUP. With `signal_group` they go to the child's process group,
/// as `tini -g` sends them, so a shell script that runs the app without
/// `exec` still has them reach the app. The SIGKILL after `kill_timeout`
/// always goes to the group.
///
/// **States** (`State`): `Running`; `Restarting` or `Stopping` once asked
/// to stop, with the kill timer armed; `Exited` with stencil's exit status.
///
/// **Signals stencil receives** ([`Signals`], then [`Supervisor::on_signal`]):
/// SIGTERM sends `kill_signal` (SIGTERM unless configured) and SIGINT is
/// forwarded; both then arm the kill timer: a child still running
/// `kill_timeout` later has its group SIGKILLed. SIGHUP, SIGQUIT, SIGUSR1,
/// SIGUSR2 and SIGWINCH are forwarded once and nothing else happens: in
/// particular a forwarded SIGHUP or SIGQUIT never arms the kill timer (a
/// JVM prints a thread dump on SIGQUIT; nginx reloads on SIGHUP). No other
/// signal is forwarded.
///
/// **Changes** ([`Supervisor::reload`]): `reload_signal` (default SIGHUP) is
/// sent to the group, and that is all: a reload never kills the child.
/// Note that an app without a handler for its reload signal dies of it
/// (SIGHUP's default action is to terminate), so set `reload_signal` to
/// what the app expects, or use `restart_on_change`. With
/// `restart_on_change`, the child is stopped as on SIGTERM (`kill_signal`,
/// then SIGKILL after `kill_timeout`) and started again once it exited; its
/// exit is not reported.
///
/// **Exit** ([`Supervisor::wait`]): the child's status becomes stencil's:
/// its exit code, or 128+N when signal N killed it (137 after the kill
/// timeout's SIGKILL). Processes the child left behind in its group are not
/// killed when it exits of its own accord.
///
/// **Reaping**: the reaper (`crate::reap`) owns waitpid from the first
/// spawn on. It makes stencil a child subreaper, so the child's orphans
/// come to stencil (as they do to PID 1) and are reaped at once; the
/// child's own status, and those of check and reload commands, go to
/// whoever spawned them.
///
/// **Use**: in a Tokio runtime, one task owns the supervisor and selects
/// over [`Supervisor::wait`] (cancel-safe), [`Signals::recv`] and its other
/// events, calling [`Supervisor::on_signal`] and [`Supervisor::reload`]
/// from the loop; none of those blocks.
pub struct Supervisor {
    spec: ExecSpec,
    reaper: &'static Reaper,
    state: State,
}

/// Where the child is in its life.
enum State {
    Running(Claimed),
    /// Asked to stop for a restart; started again once it exited.
    /// `kill_at`: when its group gets SIGKILL, `None` once it got it.
    Restarting {
        child: Claimed,
        kill_at: Option<Instant>,
    },
    /// Asked to stop for good.
    Stopping {
        child: Claimed,
        kill_at: Option<Instant>,
    },
    /// Exited for good, or a restart could not start it again: stencil's
    /// exit status.
    Exited(Exit),
}

impl State {
    fn child(&self) -> Option<&Claimed> {
        match self {
            State::Running(child)
            | State::Restarting { child, .. }
            | State::Stopping { child, .. } => Some(child),
            State::Exited(_) => None,
        }
    }
}

impl Supervisor {
    /// Starts the child in its own process group. Call inside a Tokio
    /// runtime with signals and time enabled (`runtime::get()` has both).
    /// Takes the settings of a reloaded `[exec]` table. The signals and the
    /// kill timeout apply from now on; a changed command runs from the next
    /// start (a restart), not by killing a healthy app.
    pub fn set_spec(&mut self, spec: ExecSpec) {
        if spec.command != self.spec.command {
            tracing::warn!(
                "the command changed to `{}`; it runs when the app restarts",
                spec.display()
            );
        }
        self.spec = spec;
    }

    pub fn spawn(spec: &ExecSpec) -> Result<Supervisor> {
        let reaper = crate::reap::start()?;
        let child = start(spec, reaper, None)?;
        Ok(Supervisor {
            spec: spec.clone(),
            reaper,
            state: State::Running(child),
        })
    }

    /// The running child's PID (also its process group), if one runs.
    #[cfg(test)]
    pub fn pid(&self) -> Option<Pid> {
        self.state.child().map(Claimed::pid)
    }

    /// Sends `sig` to the child alone, or to its process group with
    /// `signal_group`, and nothing else.
    pub fn forward(&self, sig: Signal) {
        self.send(sig, self.spec.signal_group);
    }

    fn send(&self, sig: Signal, group: bool) {
        let Some(child) = self.state.child() else {
            return;
        };
        tracing::debug!(signal = %sig, pid = child.pid().as_raw(), group, "signalling the child");
        let sent = if group {
            child.signal_group(sig)
        } else {
            child.signal(sig)
        };
        match sent {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!("cannot send {sig} to the child: {e}"),
        }
    }

    /// What stencil does with a signal it received (see the Theory of
    /// Operation): SIGTERM and SIGINT stop the child, the others are
    /// forwarded.
    pub fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGTERM => self.stop(self.spec.kill_signal),
            Signal::SIGINT => self.stop(Signal::SIGINT),
            other => self.forward(other),
        }
    }

    /// After a change: sends `reload_signal`, or restarts the child when
    /// `restart_on_change` is set ([`Supervisor::wait`] carries the restart
    /// out). Does nothing unless the child is running.
    pub fn reload(&mut self) {
        if !matches!(self.state, State::Running(_)) {
            return;
        }
        if self.spec.restart_on_change {
            tracing::info!("restarting the child after a change");
            self.forward(self.spec.kill_signal);
            let kill_at = Some(self.kill_at());
            if let State::Running(child) = self.take() {
                self.state = State::Restarting { child, kill_at };
            }
        } else {
            tracing::info!(signal = %self.spec.reload_signal, "signalling the child after a change");
            self.forward(self.spec.reload_signal);
        }
    }

    /// Asks the child to stop for good with `sig`; its group is SIGKILLed
    /// if it still runs `kill_timeout` later (the timer of a restart in
    /// progress stays). [`Supervisor::wait`] then returns its status.
    pub fn stop(&mut self, sig: Signal) {
        self.forward(sig);
        let armed = self.kill_at();
        self.state = match self.take() {
            State::Running(child) => State::Stopping {
                child,
                kill_at: Some(armed),
            },
            State::Restarting { child, kill_at } | State::Stopping { child, kill_at } => {
                State::Stopping {
                    child,
                    kill_at: kill_at.or(Some(armed)),
                }
            }
            exited @ State::Exited(_) => exited,
        };
    }

    /// When the kill timer armed now fires.
    fn kill_at(&self) -> Instant {
        Instant::now() + self.spec.kill_timeout
    }

    /// The state, leaving a placeholder for the caller to replace.
    fn take(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Exited(Exit::Failure))
    }

    /// [`Supervisor::stop`] with `sig`, then waits for the child's status.
    #[cfg(test)]
    pub async fn shutdown(&mut self, sig: Signal) -> Result<Exit> {
        self.stop(sig);
        self.wait().await
    }

    /// Runs the supervision until the child exited for good (not for a
    /// restart) and returns stencil's exit status for it. Carries out the
    /// kill timer and restarts meanwhile, so it must be polled for those to
    /// happen. Cancel-safe; after the child exited it returns the same
    /// status at once. An error: a restart could not start the command (see
    /// [`spawn_exit`]).
    pub async fn wait(&mut self) -> Result<Exit> {
        loop {
            let (child, kill_at) = match &self.state {
                State::Exited(exit) => return Ok(*exit),
                State::Running(child) => (child, None),
                State::Restarting { child, kill_at } | State::Stopping { child, kill_at } => {
                    (child, *kill_at)
                }
            };
            let exited = tokio::select! {
                status = child.exited() => Some(status),
                () = sleep_until(kill_at) => None,
            };
            match exited {
                Some(status) => self.exited(status)?,
                None => self.kill(),
            }
        }
    }

    /// The kill timer fired: SIGKILL the child's group.
    fn kill(&mut self) {
        tracing::warn!(
            "the child did not stop within {}: sending SIGKILL to its process group",
            humantime::format_duration(self.spec.kill_timeout)
        );
        // Whatever the child started dies with it: always the group.
        self.send(Signal::SIGKILL, true);
        if let State::Restarting { kill_at, .. } | State::Stopping { kill_at, .. } = &mut self.state
        {
            *kill_at = None;
        }
    }

    /// The child exited: start it again when restarting, else that is
    /// stencil's exit status.
    fn exited(&mut self, status: ExitStatus) -> Result<()> {
        let State::Restarting { child, .. } = self.take() else {
            tracing::info!("the child exited ({})", describe_status(status));
            self.state = State::Exited(exit_of(status));
            return Ok(());
        };
        tracing::info!(
            "the child exited ({}); starting it again",
            describe_status(status)
        );
        match start(&self.spec, self.reaper, Some(child.pid())) {
            Ok(child) => {
                self.state = State::Running(child);
                Ok(())
            }
            Err(e) => {
                self.state = State::Exited(spawn_exit(&e));
                Err(e)
            }
        }
    }
}

/// Starts the command in a process group of its own; `previous` is the
/// group of the child it replaces, which may hold the terminal.
fn start(spec: &ExecSpec, reaper: &'static Reaper, previous: Option<Pid>) -> Result<Claimed> {
    let argv = &spec.command;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).process_group(0);
    let child = reaper.spawn(&mut cmd).map_err(|source| SpawnError {
        program: argv[0].to_string_lossy().into_owned(),
        source,
    })?;
    tracing::info!(pid = child.pid().as_raw(), "started `{}`", spec.display());
    give_terminal(child.pid(), previous);
    Ok(child)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Makes `pgid` the terminal's foreground group when stencil (or the
/// previous child, after a restart) holds it, so an interactive child can
/// read the terminal.
fn give_terminal(pgid: Pid, previous: Option<Pid>) {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return;
    }
    let Ok(foreground) = nix::unistd::tcgetpgrp(&stdin) else {
        return;
    };
    if foreground != nix::unistd::getpgrp() && Some(foreground) != previous {
        return;
    }
    // From a background group, tcsetpgrp raises SIGTTOU (which would stop
    // stencil) unless the signal is blocked.
    let mut block = SigSet::empty();
    block.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old));
    if let Err(e) = nix::unistd::tcsetpgrp(&stdin, pgid) {
        tracing::debug!("cannot give the terminal to the child: {e}");
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A child that writes its PID to `pid` and records HUP and TERM in
    /// `got`, started by a supervisor. Its sleeps ignore both: killed by
    /// the signal sent to the group, they would have the shell print
    /// "Hangup" or "Terminated" into the test output.
    fn recorder(dir: &std::path::Path, restart_on_change: bool) -> ExecSpec {
        let script = r#"cd "$1" || exit 1
echo $$ > pid
trap 'echo HUP >> got' HUP
trap 'echo TERM >> got; exit 0' TERM
echo > ready
while :; do (trap '' HUP TERM; exec sleep 0.05); done"#;
        ExecSpec {
            command: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                dir.as_os_str().into(),
            ],
            reload_signal: Signal::SIGHUP,
            restart_on_change,
            kill_signal: Signal::SIGTERM,
            kill_timeout: Duration::from_secs(30),
            signal_group: false,
        }
    }

    /// Drives the supervisor until `cond` holds for the files in `dir`.
    async fn until(sup: &mut Supervisor, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            tokio::select! {
                exit = sup.wait() => panic!("the child exited ({exit:?}) while waiting for {what}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
        }
    }

    fn read(dir: &std::path::Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn reload_sends_the_reload_signal_and_never_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sup = Supervisor::spawn(&recorder(d, false)).unwrap();
        until(&mut sup, "the child to start", || d.join("ready").exists()).await;
        let pid = sup.pid().unwrap();
        assert_eq!(read(d, "pid").trim(), pid.to_string());
        sup.reload();
        until(&mut sup, "SIGHUP", || read(d, "got") == "HUP\n").await;
        sup.reload();
        until(&mut sup, "the second SIGHUP", || {
            read(d, "got") == "HUP\nHUP\n"
        })
        .await;
        assert_eq!(sup.pid(), Some(pid), "the child was restarted");
        let exit = sup.shutdown(Signal::SIGTERM).await.unwrap();
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(read(d, "got"), "HUP\nHUP\nTERM\n");
        // Once exited, wait returns the same status again.
        assert_eq!(sup.wait().await.unwrap(), Exit::Code(0));
        assert_eq!(sup.pid(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn restart_on_change_stops_the_child_and_starts_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sup = Supervisor::spawn(&recorder(d, true)).unwrap();
        until(&mut sup, "the child to start", || d.join("ready").exists()).await;
        let first = sup.pid().unwrap();
        std::fs::remove_file(d.join("ready")).unwrap();
        sup.reload();
        until(&mut sup, "the restarted child", || d.join("ready").exists()).await;
        let second = sup.pid().unwrap();
        assert_ne!(first, second);
        assert_eq!(read(d, "pid").trim(), second.to_string());
        // The old child got kill_signal, not the reload signal.
        assert_eq!(read(d, "got"), "TERM\n");
        let exit = sup.shutdown(Signal::SIGTERM).await.unwrap();
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(read(d, "got"), "TERM\nTERM\n");
    }

    #[test]
    fn exit_status_mapping() {
        assert_eq!(exit_of(ExitStatus::from_raw(3 << 8)), Exit::Code(3));
        assert_eq!(exit_of(ExitStatus::from_raw(9)), Exit::Code(137));
        assert_eq!(exit_of(ExitStatus::from_raw(15)), Exit::Code(143));
    }
}
