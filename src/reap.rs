//! The one place that waits for children while stencil supervises an app.
//!
//! # Theory of Operation
//!
//! Under `stencil exec --watch` stencil is a child subreaper (or PID 1):
//! the processes its app orphans become stencil's children, and unless
//! stencil reaps them they stay zombies. Reaping them means waiting for any
//! child, which would also take the status of a child that another part of
//! stencil waits for: the app's (the supervisor) or a check or reload
//! command's (`command::run`). So once the [`Reaper`] runs, it is the only
//! code that waits: every child is spawned through it ([`Reaper::spawn`],
//! [`spawn`]) and registered with a slot that the reaper fills with its
//! status. A zombie nobody registered is an orphan and is reaped at once.
//!
//! **Race-free registration.** One lock guards the registry. The reaper
//! holds it from looking for a zombie until it handed the status over, and
//! a spawn holds it from fork until the new pid is registered, so a child
//! that exits before its spawn returned stays a zombie until the reaper
//! finds it registered: it is never mistaken for an orphan. The lock also
//! keeps the reaper off std's own waitpid: when exec(2) fails in the child,
//! `Command::spawn` reaps that child itself before it returns the error.
//!
//! **Waking up.** A thread of its own blocks in waitid(P_ALL, WEXITED |
//! WNOWAIT), which returns once some child is a zombie and leaves it there
//! for the reaper to reap under the lock. Not on SIGCHLD: tokio delivers
//! it through the async runtime, whose one worker is the very thread that
//! may block in a check command's wait, and the status must arrive while it
//! blocks. With no child at all waitid fails at once (ECHILD), and the thread
//! sleeps until the next spawn: until then no process can become stencil's
//! child (a subreaper's orphaned descendants come to it, but without
//! children it has no descendants).
//!
//! **Reaping**, under the lock, until no zombie is left: waitid(P_ALL,
//! WEXITED | WNOHANG | WNOWAIT) names the next zombie without reaping it.
//! A registered one is reaped by std's `try_wait`, which keeps the raw
//! status; any other with waitpid(pid). nix decodes a status through its
//! `Signal`, which has no real-time signals: a child killed by SIGRTMIN+n
//! makes waitid fail with EINVAL instead of naming it (and makes waitpid
//! reap it and then fail). Then every registered child is tried with
//! `try_wait`, and if none had exited the zombie is an orphan, reaped with
//! waitpid(-1). Should that take a registered child killed by such a signal
//! in the instant since, its status is lost: its owner gets exit status
//! 255 rather than waiting forever.
//!
//! **Signals.** A registered child's pid stays its own until the reaper
//! reaps it. [`Claimed::signal_group`] sends under the lock and only while
//! no status arrived, so a signal never reaches a recycled pid.
//!
//! **Without the reaper** (render, watch without exec, and exec until the
//! app starts) [`spawn`] returns std's child and its owner waits for it as
//! usual. The reaper, once started, runs until stencil exits; anything
//! that spawns with std directly after that would lose its child's status.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use wait_timeout::ChildExt;

/// Owns waitpid for the whole process once started; see the module docs.
pub struct Reaper {
    state: Mutex<State>,
    /// Signalled on every spawn: the reaper thread sleeps on it while
    /// stencil has no child.
    spawned: Condvar,
}

static REAPER: Reaper = Reaper {
    state: Mutex::new(State {
        running: false,
        claims: BTreeMap::new(),
        spawns: 0,
    }),
    spawned: Condvar::new(),
};

struct State {
    /// The reaper thread was started: every spawn goes through it.
    running: bool,
    claims: BTreeMap<Pid, Claim>,
    /// Spawns so far: tells the reaper thread whether one happened since it
    /// found no child.
    spawns: u64,
}

struct Claim {
    /// Kept for `try_wait`, which returns the raw status.
    child: std::process::Child,
    slot: Arc<Slot>,
}

/// Starts the reaper (once; later calls return the same one) and makes
/// stencil a child subreaper, so orphans of its children come to it.
pub fn start() -> Result<&'static Reaper> {
    let mut state = REAPER.lock();
    if !state.running {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("cannot become a child subreaper ({e}); orphans go to PID 1");
        }
        // It blocks in waitid all its life: a small stack is plenty.
        std::thread::Builder::new()
            .name("stencil-reaper".into())
            .stack_size(64 * 1024)
            .spawn(|| REAPER.run())
            .context("cannot start the thread that reaps children")?;
        state.running = true;
    }
    Ok(&REAPER)
}

/// Spawns `cmd`, through the reaper if it runs.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let state = REAPER.lock();
    if state.running {
        REAPER.register(state, cmd).map(Child::Claimed)
    } else {
        drop(state);
        cmd.spawn().map(Child::Own)
    }
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere under the lock leaves the map consistent: every
        // change to it is a single insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns `cmd` and registers the child.
    pub fn spawn(&'static self, cmd: &mut Command) -> std::io::Result<Claimed> {
        self.register(self.lock(), cmd)
    }

    /// Spawns `cmd` and registers the child before `state`, the lock, is
    /// released (see "Race-free registration").
    fn register(
        &'static self,
        mut state: MutexGuard<'_, State>,
        cmd: &mut Command,
    ) -> std::io::Result<Claimed> {
        let child = cmd.spawn()?;
        let pid = pid_of(&child);
        let slot = Arc::new(Slot::default());
        let claim = Claim {
            child,
            slot: slot.clone(),
        };
        state.claims.insert(pid, claim);
        state.spawns += 1;
        self.spawned.notify_all();
        Ok(Claimed {
            pid,
            slot,
            reaper: self,
        })
    }

    fn run(&self) {
        loop {
            let spawns = self.lock().spawns;
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) | Err(Errno::EINVAL) => self.reap(),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    let mut state = self.lock();
                    while state.spawns == spawns {
                        state = self
                            .spawned
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot wait for children: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Reaps every zombie child, handing registered statuses over.
    fn reap(&self) {
        let mut state = self.lock();
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            let progress = match waitid(Id::All, peek) {
                Ok(status) => status.pid().is_some_and(|pid| state.reap(pid)),
                Err(Errno::EINVAL) => state.reap_unnamed(),
                Err(_) => false,
            };
            if !progress {
                return;
            }
        }
    }
}

impl State {
    /// Reaps the zombie `pid`. False if it could not (it would be found
    /// again at once).
    fn reap(&mut self, pid: Pid) -> bool {
        let Some(mut claim) = self.claims.remove(&pid) else {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(_) | Err(Errno::EINVAL) => {
                    tracing::debug!(pid = pid.as_raw(), "reaped an orphan");
                }
                Err(e) => tracing::debug!(pid = pid.as_raw(), "cannot reap an orphan: {e}"),
            }
            return true;
        };
        match claim.child.try_wait() {
            Ok(Some(status)) => claim.slot.fill(status),
            Ok(None) => {
                self.claims.insert(pid, claim);
                return false;
            }
            Err(e) => {
                tracing::warn!(pid = pid.as_raw(), "cannot collect a child's status: {e}");
                claim.slot.fill(unknown());
            }
        }
        true
    }

    /// A zombie killed by a signal nix cannot name, so waitid did not say
    /// which: a registered child, or else an orphan.
    fn reap_unnamed(&mut self) -> bool {
        if self.sweep() {
            return true;
        }
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            // A registered child that exited since the sweep: nix named it.
            Ok(status) => status.pid().is_some_and(|pid| {
                if let Some(claim) = self.claims.remove(&pid) {
                    claim.slot.fill(decode(status));
                }
                true
            }),
            // The orphan, or a registered child killed by a real-time
            // signal since the sweep, reaped and its status lost: sweep
            // again so its owner hears of it rather than waiting forever.
            Err(Errno::EINVAL) => {
                self.sweep();
                true
            }
            Err(_) => false,
        }
    }

    /// Collects every registered child that exited, with std's `try_wait`.
    /// One that is no longer stencil's child was reaped without its
    /// status: it gets [`unknown`]. Whether any was collected.
    fn sweep(&mut self) -> bool {
        let done: Vec<(Pid, ExitStatus)> = self
            .claims
            .iter_mut()
            .filter_map(|(&pid, claim)| match claim.child.try_wait() {
                Ok(status) => Some((pid, status?)),
                Err(e) => {
                    tracing::warn!(pid = pid.as_raw(), "a child's status is lost: {e}");
                    Some((pid, unknown()))
                }
            })
            .collect();
        for (pid, status) in &done {
            if let Some(claim) = self.claims.remove(pid) {
                claim.slot.fill(*status);
            }
        }
        !done.is_empty()
    }
}

/// Reported when a child's status is lost: exit status 255, what shells
/// report for a status out of range.
fn unknown() -> ExitStatus {
    ExitStatus::from_raw(255 << 8)
}

/// The raw status of one nix could decode.
fn decode(status: WaitStatus) -> ExitStatus {
    match status {
        WaitStatus::Exited(_, code) => ExitStatus::from_raw((code & 0xff) << 8),
        WaitStatus::Signaled(_, sig, core) => {
            ExitStatus::from_raw(sig as i32 | if core { 0x80 } else { 0 })
        }
        _ => unknown(),
    }
}

fn pid_of(child: &std::process::Child) -> Pid {
    // std hands the kernel's pid_t back as u32: it fits in i32.
    #[allow(clippy::cast_possible_wrap)]
    Pid::from_raw(child.id() as i32)
}

/// Where the reaper puts one child's status, for a thread that blocks on it
/// (`command::run`) or a task that awaits it (the supervisor).
#[derive(Default)]
struct Slot {
    status: Mutex<Option<ExitStatus>>,
    filled: Condvar,
    notify: tokio::sync::Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<ExitStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fill(&self, status: ExitStatus) {
        *self.lock() = Some(status);
        self.filled.notify_all();
        // Stores a permit when no task awaits yet, so none is missed.
        self.notify.notify_one();
    }
}

/// A child spawned through the [`Reaper`], which collects its status.
pub struct Claimed {
    pid: Pid,
    slot: Arc<Slot>,
    reaper: &'static Reaper,
}

impl Claimed {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its status, once it exited.
    fn status(&self) -> Option<ExitStatus> {
        *self.slot.lock()
    }

    /// Waits until it exited. Cancel-safe: the status stays.
    pub async fn exited(&self) -> ExitStatus {
        loop {
            if let Some(status) = self.status() {
                return status;
            }
            self.slot.notify.notified().await;
        }
    }

    /// Blocks until it exited or `timeout` passed.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let status = self.slot.lock();
        let (status, _) = self
            .slot
            .filled
            .wait_timeout_while(status, timeout, |s| s.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        *status
    }

    fn wait(&self) -> ExitStatus {
        let status = self.slot.lock();
        let status = self
            .slot
            .filled
            .wait_while(status, |s| s.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        status.unwrap_or(unknown())
    }

    /// Sends `sig` to it alone; ESRCH once it was reaped (see "Signals").
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        let _state = self.reaper.lock();
        if self.status().is_some() {
            return Err(Errno::ESRCH);
        }
        nix::sys::signal::kill(self.pid, sig)
    }

    /// Sends `sig` to its process group (it must lead one); ESRCH once it
    /// was reaped (see "Signals").
    pub fn signal_group(&self, sig: Signal) -> nix::Result<()> {
        let _state = self.reaper.lock();
        if self.status().is_some() {
            return Err(Errno::ESRCH);
        }
        killpg(self.pid, sig)
    }
}

/// A child of `command::run`'s: claimed when the reaper runs, else std's
/// own, waited for as usual.
pub enum Child {
    Own(std::process::Child),
    Claimed(Claimed),
}

impl Child {
    pub fn pid(&self) -> i32 {
        match self {
            Child::Own(child) => pid_of(child).as_raw(),
            Child::Claimed(child) => child.pid().as_raw(),
        }
    }

    /// Waits until the child exited or `timeout` passed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Child::Own(child) => child.wait_timeout(timeout),
            Child::Claimed(child) => Ok(child.wait_timeout(timeout)),
        }
    }

    /// SIGKILLs the child's process group (it must lead one) and waits for
    /// the child.
    pub fn kill_group(&mut self) {
        match self {
            Child::Own(child) => {
                let _ = killpg(pid_of(child), Signal::SIGKILL);
                let _ = child.wait();
            }
            Child::Claimed(child) => {
                let _ = child.signal_group(Signal::SIGKILL);
                child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::Instant;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).process_group(0);
        cmd
    }

    #[track_caller]
    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn every_child_gets_its_own_status_even_when_it_exits_at_once() {
        let reaper = start().unwrap();
        let children: Vec<(i32, Claimed)> = (0..40)
            .map(|n| (n, reaper.spawn(&mut sh(&format!("exit {n}"))).unwrap()))
            .collect();
        for (n, child) in children {
            let status = child.wait_timeout(Duration::from_secs(20));
            assert_eq!(status.and_then(|s| s.code()), Some(n));
        }
    }

    #[test]
    fn a_real_time_signal_reaches_the_owner() {
        // nix cannot name SIGRTMIN+n: the status comes through std.
        let reaper = start().unwrap();
        let child = reaper.spawn(&mut sh("kill -s 40 $$")).unwrap();
        let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(status.signal(), Some(40), "{status}");
    }

    #[test]
    fn orphans_are_reaped_whatever_killed_them() {
        let reaper = start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell exits at once: the sleeps are orphans, reparented to
        // this process (a subreaper now).
        let script = format!(
            "sleep 0.2 & echo $! >> {0}; sleep 30 & echo $! >> {0}",
            pids.display()
        );
        let child = reaper.spawn(&mut sh(&script)).unwrap();
        assert_eq!(
            child
                .wait_timeout(Duration::from_secs(20))
                .map(|s| s.code()),
            Some(Some(0))
        );
        let text = std::fs::read_to_string(&pids).unwrap();
        let orphans: Vec<i32> = text.lines().map(|l| l.parse().unwrap()).collect();
        // The long one dies of a signal nix has no name for.
        let mut kill = Command::new("kill");
        kill.args(["-s", "41", &orphans[1].to_string()]);
        let killed = reaper.spawn(&mut kill).unwrap();
        assert_eq!(
            killed
                .wait_timeout(Duration::from_secs(20))
                .map(|s| s.code()),
            Some(Some(0))
        );
        for pid in orphans {
            // A zombie keeps its /proc entry: gone means reaped.
            until(&format!("orphan {pid} to be reaped"), || {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
            });
        }
    }

    #[test]
    fn no_signal_after_the_child_was_reaped() {
        let reaper = start().unwrap();
        let child = reaper.spawn(&mut sh("exit 0")).unwrap();
        child.wait_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(child.signal_group(Signal::SIGTERM), Err(Errno::ESRCH));
    }
}
