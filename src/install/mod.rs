//! Installing a rendered file: stage, check, rename, fsync.
//!
//! The promise to the operator: at every instant the destination holds
//! either the old bytes or the new bytes, never a mix and never an empty
//! file, and a failed check leaves the old file as it was.
//!
//! 1. Equal bytes, mode and owner: nothing is written, no command runs.
//! 2. The new content is staged next to the destination
//!    (`.NAME.stencil-XXXXXX`, created with O_EXCL), its mode and owner set
//!    before the first byte is written, then fsynced.
//! 3. The check command runs against the staged path.
//! 4. rename(2) replaces the destination; the directory is fsynced so the
//!    rename survives a crash, at once or, with [`Request::defer_dir_sync`],
//!    by the caller once for all the files of a batch in that directory
//!    ([`sync_dir`]) before their reload commands run. A symlinked
//!    destination has its target replaced (the link stays a link).
//! 5. rename fails with EBUSY or EXDEV when the destination is a single
//!    file bind-mounted into a container (consul-template's long-standing
//!    bug): stencil warns once and writes in place instead, reporting any
//!    failure.
//! 6. [`install_keeping`] also hands back the file it replaced
//!    ([`Previous`], held in memory: a hard link would share the in-place
//!    fallback's truncated inode), and [`restore`] puts it back through the
//!    same staged install, or removes a file that did not exist before.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::command;
use crate::spec::CommandSpec;

const STAGE_MARK: &str = ".stencil-";
const DEFAULT_MODE: u32 = 0o644;

/// Everything [`install`] needs to know about one file.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub(crate) destination: &'a Path,
    pub(crate) content: &'a [u8],
    pub(crate) mode: Option<u32>,
    pub(crate) owner: Option<&'a str>,
    pub(crate) group: Option<&'a str>,
    pub(crate) check: Option<&'a CommandSpec>,
    pub(crate) command_timeout: Duration,
    pub(crate) backup: bool,
    pub(crate) create_dirs: bool,
    /// Prefixes the check command's logged output: the template.
    pub(crate) label: &'a str,
    /// How the caller creates a missing directory, said when one is
    /// missing ("set create_dirs = true …"); empty when it cannot.
    pub(crate) create_dirs_hint: &'a str,
    /// The caller fsyncs the directory after the rename
    /// ([`Previous::directory`]): a batch of a thousand files in one
    /// directory then pays one directory fsync, not a thousand (a third of
    /// a start-up's install time, measured).
    pub(crate) defer_dir_sync: bool,
}

/// What the destination holds now, and what installing would change.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The file actually written: the destination, or its symlink target.
    pub(crate) target: PathBuf,
    /// Its current content, if it exists.
    pub(crate) current: Option<Vec<u8>>,
    pub(crate) mode: u32,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) changed: bool,
    /// The current file's mode, uid and gid, if it exists.
    current_meta: Option<(u32, u32, u32)>,
    /// The current file, open until the plan is dropped, after the rename:
    /// the replaced inode is then freed by that close, not inside
    /// rename(2), so the new file is visible sooner (on ext4 a rename that
    /// frees the old inode took 0.37 ms, one that does not 0.03 ms;
    /// BENCHMARKS.md, issue 15).
    _current_file: Option<File>,
}

/// The file an install replaced, as it was: what [`restore`] puts back.
#[derive(Debug, Clone)]
pub(crate) struct Previous {
    /// The destination as configured, for messages.
    pub(crate) destination: PathBuf,
    /// The file written (the symlink target when there is one).
    target: PathBuf,
    /// Content, mode, uid and gid; `None` when there was no file.
    file: Option<(Vec<u8>, u32, u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Unchanged,
    Written,
}

/// Compares the wanted file with the current one without writing anything.
pub(crate) fn plan(req: &Request) -> Result<Plan> {
    let target = resolve_symlinks(req.destination)?;
    let dir = parent(&target);
    if !dir.is_dir() && !req.create_dirs {
        let hint = if req.create_dirs_hint.is_empty() {
            String::new()
        } else {
            format!(" ({})", req.create_dirs_hint)
        };
        bail!(
            "destination directory {} does not exist{hint}",
            dir.display()
        );
    }
    refuse_special(req.destination, &target)?;
    let (current, meta, current_file) = match read_current(&target) {
        Ok((file, bytes, meta)) => (Some(bytes), Some(meta), Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None, None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", target.display())),
    };
    let mode = req
        .mode
        .or_else(|| meta.as_ref().map(|m| m.mode() & 0o7777))
        .unwrap_or(DEFAULT_MODE);
    let uid = match req.owner {
        Some(owner) => Some(lookup_user(owner)?),
        None => meta.as_ref().map(|m| m.uid()),
    };
    let gid = match req.group {
        Some(group) => Some(lookup_group(group)?),
        None => meta.as_ref().map(|m| m.gid()),
    };
    let changed = match (&current, &meta) {
        (Some(bytes), Some(m)) => {
            bytes.as_slice() != req.content
                || m.mode() & 0o7777 != mode
                || uid.is_some_and(|u| u != m.uid())
                || gid.is_some_and(|g| g != m.gid())
        }
        _ => true,
    };
    Ok(Plan {
        target,
        current,
        mode,
        uid,
        gid,
        changed,
        current_meta: meta.map(|m| (m.mode() & 0o7777, m.uid(), m.gid())),
        _current_file: current_file,
    })
}

/// The current file, open, with its content and metadata (from the open
/// file: what was read is what is described).
fn read_current(target: &Path) -> std::io::Result<(File, Vec<u8>, fs::Metadata)> {
    use std::io::Read;
    let mut file = File::open(target)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok((file, bytes, meta))
}

/// Installs one file as the module documentation describes.
pub(crate) fn install(req: &Request) -> Result<Outcome> {
    install_keeping(req).map(|(outcome, _)| outcome)
}

/// Like [`install`], and when it wrote, also the file it replaced.
pub(crate) fn install_keeping(req: &Request) -> Result<(Outcome, Option<Previous>)> {
    let mut plan = plan(req)?;
    if !plan.changed {
        return Ok((Outcome::Unchanged, None));
    }
    write(req, &plan)?;
    let file = match (plan.current.take(), plan.current_meta) {
        (Some(bytes), Some((mode, uid, gid))) => Some((bytes, mode, uid, gid)),
        _ => None,
    };
    let previous = Previous {
        destination: req.destination.to_path_buf(),
        target: plan.target,
        file,
    };
    Ok((Outcome::Written, Some(previous)))
}

impl Previous {
    /// The directory the new file was renamed into: the one to fsync
    /// when the install deferred it.
    pub(crate) fn directory(&self) -> &Path {
        parent(&self.target)
    }
}

/// Puts back the file an install replaced: its content, mode and owner
/// through the same stage, fsync, rename and directory fsync, or, when
/// there was no file, removes the new one. Its owner is best effort, as
/// when a file keeps its owner: a non-root stencil cannot give files away.
pub(crate) fn restore(previous: &Previous) -> Result<()> {
    let target = &previous.target;
    let Some((content, mode, uid, gid)) = &previous.file else {
        match fs::remove_file(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", target.display())),
        }
        return sync_dir(parent(target));
    };
    let req = Request {
        destination: &previous.destination,
        content,
        mode: Some(*mode),
        owner: None,
        group: None,
        check: None,
        command_timeout: Duration::ZERO,
        backup: false,
        create_dirs: false,
        label: "",
        create_dirs_hint: "",
        defer_dir_sync: false,
    };
    let plan = Plan {
        target: target.clone(),
        current: None,
        mode: *mode,
        uid: Some(*uid),
        gid: Some(*gid),
        changed: true,
        current_meta: None,
        _current_file: None,
    };
    write(&req, &plan)
}

/// Stages, checks and renames the planned file into place.
fn write(req: &Request, plan: &Plan) -> Result<()> {
    let target = &plan.target;
    let dir = parent(target);
    if req.create_dirs && !dir.is_dir() {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let staged = stage(req, plan)?;
    // Removed by a signal that ends stencil before the rename.
    let _registered = crate::cleanup::staged(staged.path());

    if let Some(check) = req.check {
        let staged_path = staged.path().to_string_lossy().into_owned();
        let dest = req.destination.to_string_lossy().into_owned();
        let spec = check.substitute(&[("staged", &staged_path), ("destination", &dest)]);
        // On failure `staged` is dropped, which removes it: the old file
        // was never touched.
        command::run(&spec, "check command", req.label, req.command_timeout)?;
    }

    if req.backup && plan.current.is_some() {
        backup(target)?;
    }

    match staged.persist(target) {
        Ok(_) => {}
        Err(e) if is_busy_or_cross_device(&e.error) => {
            warn_in_place_once(target, &e.error);
            let staged = e.file;
            write_in_place(target, req, plan).with_context(|| {
                format!(
                    "rename over {} failed ({}) and writing it in place failed too",
                    target.display(),
                    e.error
                )
            })?;
            drop(staged);
        }
        Err(e) => {
            return Err(anyhow!(e.error)).with_context(|| {
                format!("cannot rename the staged file over {}", target.display())
            });
        }
    }
    if req.defer_dir_sync {
        return Ok(());
    }
    sync_dir(dir)
}

/// Writes the content to a new file beside the destination, mode and owner
/// set before the first byte.
fn stage(req: &Request, plan: &Plan) -> Result<tempfile::NamedTempFile> {
    let target = &plan.target;
    let dir = parent(target);
    let name = target
        .file_name()
        .ok_or_else(|| anyhow!("destination {} has no file name", target.display()))?;
    let prefix = format!(".{}{STAGE_MARK}", name.to_string_lossy());
    let mut staged = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(6)
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a staged file in {}", dir.display()))?;
    staged
        .as_file()
        .set_permissions(Permissions::from_mode(plan.mode))
        .with_context(|| {
            format!(
                "cannot set mode {:o} on {}",
                plan.mode,
                staged.path().display()
            )
        })?;
    chown(staged.as_file(), staged.path(), plan, req)?;
    staged
        .write_all(req.content)
        .and_then(|()| staged.as_file().sync_all())
        .with_context(|| format!("cannot write {}", staged.path().display()))?;
    Ok(staged)
}

/// Sets the owner the plan asks for. An owner stencil only carries over
/// from the old file (not configured) is best effort: a non-root stencil
/// cannot give files away, and says so.
fn chown(file: &File, path: &Path, plan: &Plan, req: &Request) -> Result<()> {
    let meta = file.metadata()?;
    let uid = plan.uid.filter(|u| *u != meta.uid());
    let gid = plan.gid.filter(|g| *g != meta.gid());
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let result = nix::unistd::fchown(
        file,
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    );
    match result {
        Ok(()) => Ok(()),
        Err(e) if req.owner.is_none() && req.group.is_none() => {
            tracing::warn!(
                path = %req.destination.display(),
                "cannot keep the previous owner {}:{} ({e}); the file will belong to stencil's user",
                plan.uid.unwrap_or_default(),
                plan.gid.unwrap_or_default()
            );
            Ok(())
        }
        Err(e) => Err(anyhow!(e)).with_context(|| {
            format!(
                "cannot set owner {}:{} on {}",
                req.owner.unwrap_or("-"),
                req.group.unwrap_or("-"),
                path.display()
            )
        }),
    }
}

/// Keeps the current file as DEST.bak: a hard link when possible (atomic,
/// no copy), else a copy.
fn backup(target: &Path) -> Result<()> {
    let mut bak = target.as_os_str().to_owned();
    bak.push(".bak");
    let bak = PathBuf::from(bak);
    match fs::remove_file(&bak) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot replace backup {}", bak.display()));
        }
    }
    if fs::hard_link(target, &bak).is_err() {
        fs::copy(target, &bak).with_context(|| format!("cannot write backup {}", bak.display()))?;
    }
    Ok(())
}

fn is_busy_or_cross_device(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::EBUSY || code == nix::libc::EXDEV)
}

fn warn_in_place_once(target: &Path, e: &std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            path = %target.display(),
            "rename failed ({e}); is it a single file bind-mounted into a container? \
             Writing in place instead: readers may briefly see a partial file"
        );
    }
}

/// The fallback when rename cannot work. Not atomic, but never silent.
/// Owner and mode are set as on a staged file, or the next run would see
/// a difference and rewrite the file forever.
///
/// Owner and mode are set before the new content goes in, so a secret is
/// never readable under the old, looser mode: open without truncating,
/// chown (which may clear set-id bits, so it goes first), chmod, then
/// truncate and write.
fn write_in_place(target: &Path, req: &Request, plan: &Plan) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(target)
        .with_context(|| format!("cannot open {} for writing", target.display()))?;
    chown(&f, target, plan, req)?;
    f.set_permissions(Permissions::from_mode(plan.mode))?;
    f.set_len(0)?;
    f.write_all(req.content)?;
    f.sync_all()?;
    Ok(())
}

/// Makes the renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Follows a chain of symlinks to the file that will actually be replaced.
fn resolve_symlinks(dest: &Path) -> Result<PathBuf> {
    let mut path = dest.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&path)
                    .with_context(|| format!("cannot read symlink {}", path.display()))?;
                path = parent(&path).join(link);
            }
            _ => return Ok(path),
        }
    }
    bail!("too many levels of symbolic links at {}", dest.display())
}

/// Refuses a destination that is (or whose symlink points to) a device
/// node, a FIFO or a socket: replacing `/dev/null` (where a masked systemd
/// unit links) with a regular file breaks the machine, and reading a FIFO
/// to compare contents blocks forever. Checked before anything is read.
fn refuse_special(destination: &Path, target: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = fs::symlink_metadata(target) else {
        return Ok(());
    };
    let t = meta.file_type();
    let kind = if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else {
        return Ok(());
    };
    let via = if target == destination {
        String::new()
    } else {
        format!(" (through the symlink {})", destination.display())
    };
    bail!(
        "refusing to write {}{via}: it is {kind}, not a regular file; nothing was changed",
        target.display()
    )
}

/// Removes staged files a crashed run left beside `destination`.
pub(crate) fn remove_stale(destination: &Path) {
    let Ok(target) = resolve_symlinks(destination) else {
        return;
    };
    let Some(name) = target.file_name() else {
        return;
    };
    let prefix = format!(".{}{STAGE_MARK}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent(&target)) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.len() == prefix.len() + 6 && file_name.starts_with(&prefix) {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a staged file left by an earlier run")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), "cannot remove a stale staged file: {e}")
                }
            }
        }
    }
}

fn lookup_user(name: &str) -> Result<u32> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => bail!("owner {name:?}: no such user"),
        Err(e) => bail!("owner {name:?}: cannot look up the user: {e}"),
    }
}

fn lookup_group(name: &str) -> Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => bail!("group {name:?}: no such group"),
        Err(e) => bail!("group {name:?}: cannot look up the group: {e}"),
    }
}

#[cfg(test)]
mod tests;
