//! What a signal that ends stencil must undo first: the process groups of
//! check and reload commands still running, and staged files not yet
//! renamed into place. Left alone, a check would outlive stencil and a
//! `.NAME.stencil-XXXXXX` file would stay beside the destination.
//!
//! `command` registers each group it spawns and `install` each file it
//! stages, for as long as they exist; [`run`] kills and removes what is
//! registered and refuses new commands from then on, so a command a batch
//! starts while stencil exits is not left behind either.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

#[derive(Default)]
struct State {
    closing: bool,
    groups: BTreeSet<i32>,
    files: BTreeSet<PathBuf>,
}

static STATE: Mutex<State> = Mutex::new(State {
    closing: false,
    groups: BTreeSet::new(),
    files: BTreeSet::new(),
});

fn lock() -> MutexGuard<'static, State> {
    // A panic elsewhere cannot leave the sets half-updated.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered process group, unregistered on drop.
pub struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        lock().groups.remove(&self.0);
    }
}

/// Runs `spawn` (which starts a process leading its own group, and gives
/// its pid) and registers the group, both under the lock: [`run`] either
/// sees the group or has already refused it.
pub fn spawn_group<T>(
    spawn: impl FnOnce() -> std::io::Result<(T, i32)>,
) -> std::io::Result<(T, Group)> {
    let mut state = lock();
    if state.closing {
        return Err(std::io::Error::other("stencil is exiting"));
    }
    let (child, pid) = spawn()?;
    state.groups.insert(pid);
    Ok((child, Group(pid)))
}

/// A registered staged file, unregistered on drop (renamed or removed).
pub struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        lock().files.remove(&self.0);
    }
}

pub fn staged(path: &Path) -> Staged {
    lock().files.insert(path.to_path_buf());
    Staged(path.to_path_buf())
}

/// Kills every registered command's process group and removes every
/// registered staged file; no command starts after it.
pub fn run() {
    let mut state = lock();
    state.closing = true;
    for &pid in &state.groups {
        tracing::info!(pid, "killing the process group of a command still running");
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for file in &state.files {
        let _ = std::fs::remove_file(file);
    }
}

/// Until the guard is dropped, SIGTERM, SIGINT or SIGHUP [`run`]s the
/// cleanup and exits with 128 + the signal's number, as the default action
/// would have: for a one-shot run that starts commands. The handlers are in
/// place when this returns. After the drop the handlers stay installed
/// (tokio never removes one) but nothing acts on them: only drop it right
/// before exec(2), which resets them, or before a loop that takes the
/// signals itself.
pub fn exit_on_signals() -> SignalExit {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("stencil-signals".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                let _ = ready_tx.send(());
                return;
            };
            rt.block_on(async move {
                let streams = [
                    (SignalKind::terminate(), 15),
                    (SignalKind::interrupt(), 2),
                    (SignalKind::hangup(), 1),
                ]
                .map(|(kind, n)| (signal(kind).ok(), n));
                let _ = ready_tx.send(());
                let [(mut term, _), (mut int, _), (mut hup, _)] = streams;
                let n = tokio::select! {
                    Some(()) = recv(&mut term) => 15,
                    Some(()) = recv(&mut int) => 2,
                    Some(()) = recv(&mut hup) => 1,
                    _ = stopped => return,
                };
                run();
                std::process::exit(128 + n);
            });
        });
    if spawned.is_ok() {
        let _ = ready_rx.recv();
    }
    SignalExit { _stop: stop }
}

/// Ends [`exit_on_signals`] when dropped.
#[must_use = "the signals are taken only while the guard lives"]
pub struct SignalExit {
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
