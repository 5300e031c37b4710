//! The render threads batches run on, kept between batches.
//!
//! Starting a thread per batch cost 0.17 ms before the batch's first
//! instruction (a 16 MiB stack mapped, the thread scheduled), waking one
//! that waits 0.03 ms (BENCHMARKS.md, issue 15): on a watch whose changes
//! are a key each, that is a tenth of stencil's part of the latency. A
//! thread that has had nothing to do for [`IDLE_EXIT`] ends, so a quiet
//! sidecar holds no render stacks; batches that overlap (a slow check
//! beside a quick template) each get a thread, as before. A batch offers
//! its thread again just before it reports ([`Ready::now`]), so the batch
//! the coordinator starts on that report finds the thread waiting, not
//! still busy, and needs no second one.

use std::cell::Cell;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One batch: renders, installs, and reports back by itself, calling
/// [`Ready::now`] just before it does.
pub(super) type Job = Box<dyn FnOnce(&Ready) + Send + 'static>;

/// Offers the running batch's thread for the next batch.
pub(super) struct Ready<'a> {
    offered: Cell<bool>,
    offer: &'a dyn Fn(),
}

impl Ready<'_> {
    /// The batch is done but for its report: its thread may be handed the
    /// next batch now (it runs it once this one returns).
    pub(super) fn now(&self) {
        if !self.offered.replace(true) {
            (self.offer)();
        }
    }
}

/// How long a render thread waits for another batch before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// A render thread's stack: minijinja recurses per nesting level (up to
/// `max_depth`, at most 500) and the default 2 MiB is not enough for that
/// in a debug build. Only touched pages cost memory.
const RENDER_STACK: usize = 16 << 20;

/// The render threads waiting for a batch.
pub(super) struct Workers {
    idle: Arc<Mutex<Vec<Waiting>>>,
    next_id: u64,
    idle_exit: Duration,
}

/// A thread waiting for its next job on `jobs`.
struct Waiting {
    id: u64,
    jobs: mpsc::Sender<Job>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers::with_idle_exit(IDLE_EXIT)
    }
}

impl Workers {
    fn with_idle_exit(idle_exit: Duration) -> Workers {
        Workers {
            idle: Arc::default(),
            next_id: 0,
            idle_exit,
        }
    }

    /// Runs `job` on a waiting thread, or on a new one if none waits. An
    /// error only when no thread could be started.
    pub(super) fn run(&mut self, job: Job) -> std::io::Result<()> {
        let mut job = job;
        while let Some(waiting) = lock(&self.idle).pop() {
            match waiting.jobs.send(job) {
                Ok(()) => return Ok(()),
                // Its thread is gone (a batch that panicked): the next.
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        self.spawn(job)
    }

    fn spawn(&mut self, first: Job) -> std::io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let idle = self.idle.clone();
        let idle_exit = self.idle_exit;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("stencil-render".into())
            .stack_size(RENDER_STACK)
            .spawn(move || {
                let mut job = first;
                let offer = || {
                    lock(&idle).push(Waiting {
                        id,
                        jobs: tx.clone(),
                    });
                };
                loop {
                    let ready = Ready {
                        offered: Cell::new(false),
                        offer: &offer,
                    };
                    job(&ready);
                    // A batch that did not say it was done is done now.
                    ready.now();
                    job = match rx.recv_timeout(idle_exit) {
                        Ok(next) => next,
                        Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {
                            let mut waiting = lock(&idle);
                            if let Some(at) = waiting.iter().position(|w| w.id == id) {
                                waiting.swap_remove(at);
                                return;
                            }
                            drop(waiting);
                            // `run` took this thread off the list just now:
                            // its job is being sent (this thread holds a
                            // sender, so the channel stays open).
                            match rx.recv() {
                                Ok(next) => next,
                                Err(_) => return,
                            }
                        }
                    };
                }
            })
            .map(drop)
    }
}

fn lock(idle: &Mutex<Vec<Waiting>>) -> MutexGuard<'_, Vec<Waiting>> {
    // A thread that panicked while holding the lock left a plain list.
    idle.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::ThreadId;

    fn run_and_wait(workers: &mut Workers) -> ThreadId {
        let (tx, rx) = mpsc::channel();
        workers
            .run(Box::new(move |ready: &Ready| {
                ready.now();
                tx.send(std::thread::current().id()).unwrap();
            }))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn a_batch_that_does_not_offer_its_thread_still_frees_it() {
        let mut workers = Workers::default();
        let (tx, rx) = mpsc::channel();
        workers
            .run(Box::new(move |_: &Ready| {
                tx.send(std::thread::current().id()).unwrap();
            }))
            .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let mut listed = false;
        for _ in 0..1000 {
            listed = !lock(&workers.idle).is_empty();
            if listed {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(listed, "the thread never offered itself");
        assert_eq!(run_and_wait(&mut workers), first);
    }

    #[test]
    fn overlapping_batches_get_a_thread_each() {
        let mut workers = Workers::default();
        let (release, hold) = mpsc::channel::<()>();
        let (started, is_started) = mpsc::channel();
        workers
            .run(Box::new(move |_: &Ready| {
                started.send(()).unwrap();
                hold.recv().unwrap();
            }))
            .unwrap();
        is_started.recv().unwrap();
        // The first batch still runs: the second may not wait for it.
        let (tx, rx) = mpsc::channel();
        workers
            .run(Box::new(move |_: &Ready| tx.send(()).unwrap()))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the second batch ran beside the first");
        release.send(()).unwrap();
    }

    #[test]
    fn a_thread_idle_for_its_time_ends_and_the_next_batch_still_runs() {
        let mut workers = Workers::with_idle_exit(Duration::from_millis(20));
        let first = run_and_wait(&mut workers);
        let mut left = usize::MAX;
        for _ in 0..1000 {
            std::thread::sleep(Duration::from_millis(5));
            left = lock(&workers.idle).len();
            if left == 0 {
                break;
            }
        }
        assert_eq!(left, 0, "the idle thread did not end");
        let second = run_and_wait(&mut workers);
        assert_ne!(first, second);
    }

    #[test]
    fn a_thread_handed_a_batch_as_its_idle_time_ends_runs_it() {
        let idle_exit = Duration::from_millis(200);
        for _ in 0..20 {
            let mut workers = Workers::with_idle_exit(idle_exit);
            run_and_wait(&mut workers);
            let mut list = lock(&workers.idle);
            // The thread offered itself before its report; if this thread
            // was held up past the idle time, it is gone: again.
            let Some(waiting) = list.pop() else {
                continue;
            };
            // Held past the thread's idle time: it times out and waits for
            // the list, while the batch is handed to it as `run` does.
            std::thread::sleep(idle_exit * 2);
            let (tx, rx) = mpsc::channel();
            let sent = waiting
                .jobs
                .send(Box::new(move |_: &Ready| tx.send(()).unwrap()));
            assert!(sent.is_ok(), "the thread ended with its sender listed");
            drop(list);
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the batch handed over as the thread's idle time ended ran");
            return;
        }
        panic!("never got to the list before the thread's idle time ended");
    }

    #[test]
    fn a_batch_started_on_the_last_ones_report_finds_its_thread_free() {
        let mut workers = Workers::default();
        let (tx, rx) = mpsc::channel();
        workers
            .run(Box::new(move |ready: &Ready| {
                ready.now();
                tx.send(std::thread::current().id()).unwrap();
                // What a batch does after its report (dropping its
                // snapshot), drawn out.
                std::thread::sleep(Duration::from_millis(200));
            }))
            .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            lock(&workers.idle).len(),
            1,
            "not offered before the report"
        );
        assert_eq!(run_and_wait(&mut workers), first);
    }
}
