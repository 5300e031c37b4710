//! A large batch renders and installs on a few threads.
//!
//! Each install fsyncs its staged file before the rename: most of an
//! install's time, spent waiting on the disk, not the CPU. One thread waits
//! for a thousand fsyncs in turn (≈ 1 s at start-up with a thousand
//! templates); the fsyncs of a few threads overlap on the disk: a quarter
//! of the time on this project's machine (BENCHMARKS.md, issue 15). Each
//! file still lands as soon as its own template is rendered and its
//! content is durable, and the batch's
//! books (report, directories to fsync, reloads) are kept on the calling
//! thread, in the batch's order, once every install is done.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Result;

use super::{Delivered, Options, Pipeline};
use crate::config::Destination;
use crate::template::Deps;

/// Below this many templates a batch stays on its thread: a change
/// usually renders one or two, and a start-up of a few templates gains a
/// few milliseconds while its threads' concurrent reads open a connection
/// each to etcd or Consul (a fleet of sidecars with 10 templates each had
/// 4–6 connections per instance instead of 2).
const MIN_TEMPLATES: usize = 32;

/// Threads installing at once: enough for their fsyncs to overlap (4 and
/// 16 measured alike), few enough for two cores.
const THREADS: usize = 4;

/// Whether the batch may run on several threads: many templates, each
/// written to its own file with nothing printed, and no check command
/// (checks run one at a time, as users of confd and consul-template
/// expect: `nginx -t` twice at once may fight over a pid file).
pub(super) fn suits(pipeline: &Pipeline, which: &[usize], opts: &Options) -> bool {
    which.len() >= MIN_TEMPLATES
        && !opts.dry_run
        && !opts.diff
        && which.iter().all(|&i| {
            let spec = &pipeline.units[i].spec;
            matches!(spec.destination, Destination::File(_)) && spec.check.is_none()
        })
}

/// Renders and delivers the templates on [`THREADS`] threads; the results
/// in the order of `which`.
pub(super) fn render_and_deliver(
    pipeline: &Pipeline,
    which: &[usize],
    opts: &Options,
) -> Vec<(usize, Result<Delivered>, Deps)> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    // Takes the next template until none is left.
    let work = |tx: mpsc::Sender<_>| {
        // Nothing is printed (no stdout destination, no dry run).
        let mut out = std::io::sink();
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = which.get(at) else {
                return;
            };
            let done = pipeline.render_and_deliver(index, opts, &mut out as &mut dyn Write);
            if tx.send((at, done)).is_err() {
                return;
            }
        }
    };
    let work = &work;
    std::thread::scope(|scope| {
        // A thread that finds no template left ends at once.
        for _ in 0..THREADS {
            let worker_tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("stencil-install".into())
                .spawn_scoped(scope, move || work(worker_tx));
            if let Err(e) = spawned {
                // The templates still get done, by the threads that started
                // or by this one.
                tracing::debug!("cannot start an install thread: {e}");
                work(tx.clone());
                break;
            }
        }
    });
    drop(tx);
    let mut done: Vec<_> = rx.into_iter().collect();
    done.sort_unstable_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, done)| done).collect()
}
