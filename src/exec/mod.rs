//! `stencil exec`: the container entrypoint.
//!
//! Render every template, wait for the `--wait` dependencies, then either
//! become the app with exec(2) (the default: same PID, environment and argv,
//! stencil is gone and signals reach the app directly), or, with `--watch`,
//! stay as its parent and supervise it with a [`Supervisor`].
//!
//! A failed render or wait exits before the app starts, naming what failed:
//! an app started with a half-written config is worse than one that never
//! starts (issue 6).
//!
//! Exit status: the app's own (exec), or the child's code, or 128+N when
//! signal N killed it (`--watch`, as a shell reports it); 126 when CMD cannot
//! be run and 127 when it is not found (as env(1) and shells do).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};

use crate::cli::ExecArgs;
use crate::commands;
use crate::config::Flags;
use crate::error::{Exit, usage};
use crate::pipeline::Options;

// watch uses spec and supervise, and run here uses watch: the layering
// is by file (ARCHITECTURE.md), so watch imports these directly.
pub(crate) mod spec;
pub(crate) mod supervise;
mod wait;

use spec::ExecSpec;
use supervise::{SpawnError, spawn_exit};

/// `stencil exec`: render, wait, then exec into the command (or supervise it).
pub fn run(args: &ExecArgs) -> Result<Exit> {
    let flags = Flags {
        templates: args.templates.clone(),
        listen: args.exec.listen,
        debounce: args.exec.debounce,
        templates_optional: !args.exec.wait.is_empty(),
    };
    let mut pipeline = match commands::load(&flags)? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let spec = ExecSpec::resolve(args, pipeline.config.exec.as_ref())?;
    pipeline.remove_stale();
    // As in one-shot `render`: a stop during a check kills it and removes
    // the staged file; a stop during --wait exits at once. Taken until the
    // app is exec'd or the watch loop takes the signals over.
    let signals = crate::cleanup::exit_on_signals();
    let all: Vec<usize> = (0..pipeline.units.len()).collect();
    let report = pipeline.run(&all, &args.options(), &mut std::io::stdout().lock());
    let errors: Vec<anyhow::Error> = report
        .into_errors()
        .into_iter()
        // Said once, as the wait failure below says it: `error: not
        // starting …` and the cause, not an extra summary line.
        .map(|e| e.context(format!("not starting `{}`", spec.display())))
        .collect();
    if !errors.is_empty() {
        return Ok(commands::print_all(&errors).max(Exit::Failure));
    }
    wait::wait_all(&args.exec.wait, args.exec.wait_timeout)
        .with_context(|| format!("not starting `{}`", spec.display()))?;
    drop(signals);
    if args.exec.watch {
        // The loop starts the app, re-renders on change and sends it the
        // reload signal; reload commands run from now on.
        let settings = crate::watch::Settings {
            once: false,
            options: Options {
                no_reload: false,
                wait_for_data: None,
                ..args.options()
            },
            exec: Some(crate::watch::Exec {
                spec,
                args: args.clone(),
            }),
        };
        return crate::watch::run(flags, settings, pipeline);
    }
    let err = exec_into(&spec.command);
    crate::error::print(&err);
    Ok(spawn_exit(&err))
}

/// Replaces stencil with `argv` (searched in `PATH` as execvp(3) does).
/// Returns only on failure.
///
/// std's `exec` also resets what Rust's runtime changed: SIGPIPE, which
/// the runtime ignores and an ignored signal stays ignored across exec(2),
/// is the default again, so the app dies quietly in `app | head` as it
/// expects rather than getting EPIPE.
fn exec_into(argv: &[OsString]) -> anyhow::Error {
    tracing::debug!(command = %argv[0].to_string_lossy(), "exec");
    let _ = std::io::stdout().flush();
    let source = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    if source.kind() == std::io::ErrorKind::InvalidInput {
        // std refuses arguments with a NUL byte before trying.
        return usage("the command contains a NUL byte");
    }
    anyhow::Error::new(SpawnError {
        program: argv[0].to_string_lossy().into_owned(),
        source,
    })
}
