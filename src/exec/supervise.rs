//! Supervising the app under `stencil exec --watch`: its process group,
//! the signals it gets, its exit status, and the orphans it leaves.

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::spec::ExecSpec;
use crate::error::Exit;

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
        (Some(code), _) => Exit::Code(code as u8),
        (None, Some(sig)) => Exit::Code((128 + sig).min(255) as u8),
        _ => Exit::Failure,
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
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

/// How long a zombie outside the child's process group stays before
/// stencil reaps it. See "Reaping" below.
const REAP_GRACE: Duration = Duration::from_secs(2);

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
/// All signals go to the child's process group: a shell script that runs
/// the app without `exec` still has the signal reach the app.
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
/// **Reaping**: stencil makes itself a child subreaper
/// (PR_SET_CHILD_SUBREAPER), so processes the child orphans are reparented
/// to stencil rather than to PID 1, and when stencil is PID 1 they come to
/// it anyway. On every SIGCHLD, stencil reaps the main child with
/// waitpid(its pid) and scans /proc for its own zombie children. A zombie in
/// a group stencil created for a child is an orphan and is reaped at once.
/// Any other zombie may be a check or reload command that another part of
/// stencil is about to wait for (`command::run`, which would fail if its
/// child were reaped under it), so it is reaped only after it stayed a
/// zombie for two seconds (`REAP_GRACE`): by then nobody is waiting for it. stencil
/// never calls waitpid(-1), so it never takes another waiter's status.
///
/// **Use**: in a Tokio runtime, one task owns the supervisor and selects
/// over [`Supervisor::wait`] (cancel-safe), [`Signals::recv`] and its other
/// events, calling [`Supervisor::on_signal`] and [`Supervisor::reload`]
/// from the loop; none of those blocks.
pub struct Supervisor {
    spec: ExecSpec,
    /// The running child; `None` only between a restart's stop and start.
    child: Option<Child>,
    /// Every process group stencil created for a child (restarts add one).
    groups: Vec<Pid>,
    sigchld: tokio::signal::unix::Signal,
    /// When to SIGKILL the child's group, once a stop was asked for.
    kill_at: Option<tokio::time::Instant>,
    /// Start the child again when it exits (a restart is in progress).
    restart: bool,
    /// A stop was asked for; no restart happens any more.
    stopping: bool,
    /// Zombies outside the children's groups, with when first seen.
    zombies: HashMap<i32, Instant>,
    /// The child's final status, once it exited for good.
    exit: Option<Exit>,
}

impl Supervisor {
    /// Starts the child in its own process group. Call inside a Tokio
    /// runtime with signals and time enabled (`runtime::get()` has both).
    pub fn spawn(spec: &ExecSpec) -> Result<Supervisor> {
        // Listen before the child exists, so its exit cannot go unnoticed.
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .context("cannot handle SIGCHLD")?;
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("cannot become a child subreaper ({e}); orphans go to PID 1");
        }
        let mut sup = Supervisor {
            spec: spec.clone(),
            child: None,
            groups: Vec::new(),
            sigchld,
            kill_at: None,
            restart: false,
            stopping: false,
            zombies: HashMap::new(),
            exit: None,
        };
        sup.start()?;
        Ok(sup)
    }

    fn start(&mut self) -> Result<()> {
        let argv = &self.spec.command;
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .process_group(0)
            .spawn()
            .map_err(|source| SpawnError {
                program: argv[0].to_string_lossy().into_owned(),
                source,
            })?;
        let pgid = Pid::from_raw(child.id() as i32);
        tracing::info!(pid = child.id(), "started `{}`", self.spec.display());
        let previous = self.groups.last().copied();
        give_terminal(pgid, previous);
        self.groups.push(pgid);
        self.child = Some(child);
        Ok(())
    }

    /// The running child's PID (also its process group), if one runs.
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .filter(|_| self.exit.is_none())
            .map(|c| Pid::from_raw(c.id() as i32))
    }

    /// Sends `sig` to the child's process group, and nothing else.
    pub fn forward(&self, sig: Signal) {
        let Some(pgid) = self.pid() else { return };
        tracing::debug!(signal = %sig, pgid = pgid.as_raw(), "signalling the child's group");
        match killpg(pgid, sig) {
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
    /// out). Does nothing while the child is stopping or restarting.
    pub fn reload(&mut self) {
        if self.stopping || self.restart || self.pid().is_none() {
            return;
        }
        if self.spec.restart_on_change {
            tracing::info!("restarting the child after a change");
            self.restart = true;
            self.signal_and_arm(self.spec.kill_signal);
        } else {
            tracing::info!(signal = %self.spec.reload_signal, "signalling the child after a change");
            self.forward(self.spec.reload_signal);
        }
    }

    /// Asks the child to stop for good with `sig`; its group is SIGKILLed
    /// if it still runs `kill_timeout` later. [`Supervisor::wait`] then
    /// returns its status.
    pub fn stop(&mut self, sig: Signal) {
        self.stopping = true;
        self.restart = false;
        self.signal_and_arm(sig);
    }

    fn signal_and_arm(&mut self, sig: Signal) {
        self.forward(sig);
        if self.kill_at.is_none() && self.pid().is_some() {
            self.kill_at = Some(tokio::time::Instant::now() + self.spec.kill_timeout);
        }
    }

    /// [`Supervisor::stop`] with `sig`, then waits for the child's status.
    #[cfg(test)]
    pub async fn shutdown(&mut self, sig: Signal) -> Result<Exit> {
        self.stop(sig);
        self.wait().await
    }

    /// Runs the supervision until the child exited for good (not for a
    /// restart) and returns stencil's exit status for it. Reaps orphans and
    /// carries out the kill timer and restarts meanwhile, so it must be
    /// polled for those to happen. Cancel-safe; after the child exited it
    /// returns the same status at once. An error: a restart could not start
    /// the command (see [`spawn_exit`]).
    pub async fn wait(&mut self) -> Result<Exit> {
        loop {
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            if self.child.is_none() {
                // A restart whose start failed earlier; nothing to wait for.
                return Ok(Exit::Failure);
            }
            self.collect()?;
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            self.reap_orphans();
            let kill_at = self.kill_at;
            let rescan = (!self.zombies.is_empty())
                .then(|| tokio::time::Instant::now() + Duration::from_millis(500));
            tokio::select! {
                _ = self.sigchld.recv() => {}
                () = sleep_until(kill_at) => {
                    if let Some(pgid) = self.pid() {
                        tracing::warn!(
                            "the child did not stop within {}: sending SIGKILL to its process group",
                            humantime::format_duration(self.spec.kill_timeout)
                        );
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    self.kill_at = None;
                }
                () = sleep_until(rescan) => {}
            }
        }
    }

    /// Collects the main child's status if it exited; restarts it when a
    /// restart is pending.
    fn collect(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let Some(status) = child.try_wait().context("cannot wait for the child")? else {
            return Ok(());
        };
        self.kill_at = None;
        if self.restart && !self.stopping {
            self.restart = false;
            tracing::info!("the child exited ({}); starting it again", describe(status));
            if let Err(e) = self.start() {
                self.child = None;
                self.exit = Some(spawn_exit(&e));
                return Err(e);
            }
            return Ok(());
        }
        tracing::info!("the child exited ({})", describe(status));
        self.exit = Some(exit_of(status));
        Ok(())
    }

    /// Reaps zombie children of stencil's that are not the main child; see
    /// "Reaping" in the Theory of Operation.
    fn reap_orphans(&mut self) {
        let me = nix::unistd::getpid().as_raw();
        let main = self.child.as_ref().map(|c| c.id() as i32);
        let now = Instant::now();
        let mut still = HashMap::new();
        for z in zombie_children(me) {
            if Some(z.pid) == main {
                continue;
            }
            let orphan = self.groups.iter().any(|g| g.as_raw() == z.pgrp);
            let since = self.zombies.get(&z.pid).copied().unwrap_or(now);
            if orphan || now.duration_since(since) >= REAP_GRACE {
                match waitpid(Pid::from_raw(z.pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(_) => tracing::debug!(pid = z.pid, "reaped an orphan"),
                    Err(e) => tracing::debug!(pid = z.pid, "cannot reap: {e}"),
                }
            } else {
                still.insert(z.pid, since);
            }
        }
        self.zombies = still;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Zombie {
    pid: i32,
    pgrp: i32,
}

/// Zombie processes whose parent is `parent`, from /proc/PID/stat.
fn zombie_children(parent: i32) -> Vec<Zombie> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            let pgrp: i32 = fields.next()?.parse().ok()?;
            (state == "Z" && ppid == parent).then_some(Zombie { pid, pgrp })
        })
        .collect()
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

    /// A child that writes its PID to `pid` and records HUP and TERM in
    /// `got`, started by a supervisor.
    fn recorder(dir: &std::path::Path, restart_on_change: bool) -> ExecSpec {
        let script = r#"cd "$1" || exit 1
echo $$ > pid
trap 'echo HUP >> got' HUP
trap 'echo TERM >> got; exit 0' TERM
echo > ready
while :; do sleep 0.05; done"#;
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
