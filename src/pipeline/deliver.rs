//! Delivering one rendered template: to stdout, to the `--dry-run` and
//! `--diff` report (secret files summarised), or to its destination
//! through the install path.

use std::io::Write;

use anyhow::{Context, Result, anyhow};

use super::{Options, Unit};
use crate::config::Destination;
use crate::install::{self, Outcome, Previous};

/// Puts one rendered template where it goes: stdout, the dry-run report,
/// or the destination file.
pub(super) fn deliver(
    unit: &Unit,
    content: &[u8],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<(Outcome, Option<Previous>)> {
    let spec = &unit.spec;
    let dest = match &spec.destination {
        Destination::Stdout => {
            write_stdout(out, content)?;
            return Ok((Outcome::Written, None));
        }
        Destination::File(p) => p,
    };
    let label = spec.source.display().to_string();
    let req = install::Request {
        destination: dest,
        content,
        mode: spec.mode,
        owner: spec.owner.as_deref(),
        group: spec.group.as_deref(),
        check: spec.check.as_ref(),
        command_timeout: spec.command_timeout,
        backup: spec.backup,
        create_dirs: spec.create_dirs,
        label: &label,
        create_dirs_hint: "set create_dirs = true, or --create-dirs for -t, to create it",
        // Pipeline::run fsyncs each directory once, before the reloads.
        defer_dir_sync: true,
    };
    let context = || format!("cannot install {}", dest.display());
    if opts.dry_run || opts.diff {
        let plan = install::plan(&req).with_context(context)?;
        if !plan.changed {
            tracing::debug!(path = %dest.display(), "unchanged");
            return Ok((Outcome::Unchanged, None));
        }
        // Mode 0600 or tighter says the file is for its owner's eyes only.
        let secret = (spec.is_secret() || plan.mode & 0o077 == 0) && !opts.show_secrets;
        if secret {
            let shown = secret_summary(dest, plan.mode, plan.current.as_deref(), content);
            write_stdout(out, shown.as_bytes())?;
        } else if opts.diff {
            write_stdout(out, diff(dest, plan.current.as_deref(), content).as_bytes())?;
        } else {
            let header = format!("==> {} (mode {:04o}) <==\n", dest.display(), plan.mode);
            write_stdout(out, header.as_bytes())?;
            write_stdout(out, content)?;
        }
        if opts.dry_run {
            return Ok((Outcome::Written, None));
        }
    }
    let (outcome, previous) = install::install_keeping(&req).with_context(context)?;
    match outcome {
        Outcome::Written => tracing::info!(path = %dest.display(), "wrote"),
        Outcome::Unchanged => tracing::debug!(path = %dest.display(), "unchanged"),
    }
    Ok((outcome, previous))
}

/// A broken stdout pipe (`stencil render … | head`) is not a failure.
fn write_stdout(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow!(e).context("cannot write to stdout")),
    }
}

/// What `--diff` and `--dry-run` print for a secret file: sizes and
/// hashes, which tell whether and how it changes but not what it holds.
fn secret_summary(dest: &std::path::Path, mode: u32, old: Option<&[u8]>, new: &[u8]) -> String {
    let describe = |bytes: &[u8]| {
        let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
        let hex: String = hash.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{} bytes, sha256 {hex}…", bytes.len())
    };
    let was = old.map_or_else(|| "absent".to_string(), describe);
    format!(
        "==> {} (mode {mode:04o}, secret) <==\ncontent not shown (--show-secrets shows it): {was} -> {}\n",
        dest.display(),
        describe(new)
    )
}

fn diff(dest: &std::path::Path, current: Option<&[u8]>, new: &[u8]) -> String {
    let old = current.map(String::from_utf8_lossy).unwrap_or_default();
    let new = String::from_utf8_lossy(new);
    let old_name = if current.is_some() {
        dest.display().to_string()
    } else {
        "/dev/null".into()
    };
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .header(&old_name, &dest.display().to_string())
        .to_string()
}
