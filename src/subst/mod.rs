//! `stencil subst`: GNU envsubst, byte for byte, plus opt-in extensions.
//!
//! # Compatibility
//!
//! The default mode reproduces `envsubst.c` from GNU gettext exactly, on
//! bytes rather than text (stencil does not care about UTF-8 here, and
//! neither does envsubst):
//!
//! - `$NAME` and `${NAME}` with NAME = `[A-Za-z_][A-Za-z0-9_]*` (ASCII only)
//!   are references; an unset variable expands to nothing.
//! - Everything else passes through untouched: `$$`, `$` before a non-name
//!   byte or at the end of input, `${}`, `${` without a closing brace (the
//!   `${NAME` text is copied and scanning resumes right after NAME, so a `$`
//!   inside it is still seen), NUL bytes, invalid UTF-8, CR.
//! - With SHELL-FORMAT only the names referenced in it are replaced; any
//!   other reference is copied as written, braces included.
//!
//! # Extensions
//!
//! With `--extended`, `${NAME<op>WORD}` for the eight POSIX operators
//! (`-` `=` `?` `+`, each with or without `:`) behaves as in a POSIX
//! here-document: WORD is expanded only when it is used, may contain
//! nested references, and `\$`, `\}` and `\\` escape a character. Unlike
//! a shell, quotes in WORD are literal (as in docker-compose's
//! interpolation), and there is no command substitution, arithmetic,
//! tilde or pattern expansion. A form stencil does not know (`${#X}`,
//! `${X%.*}`) is copied the way GNU envsubst copies it; an operator whose
//! WORD has no closing brace is an error naming its line, as in a shell.
//!
//! `--no-unset` and `--no-empty` follow `set -u`: they concern plain
//! references, since an operator already says what to do with an unset or
//! empty variable.
//!
//! # Speed
//!
//! The scanner looks for `$` 32 bytes at a time (a loop LLVM turns into
//! vector compares) and copies whole runs of plain text, so a large input
//! costs little more than a copy. Without a way to fail (no extension, no
//! check, no `-o`), input is streamed in chunks like envsubst does; otherwise
//! it is read whole, so a failure writes nothing.
//!
//! # Files
//!
//! This file is the command: input, output, `-o`. `substituter` evaluates
//! what `parse` finds; `fnv` is the hash of their name lookups.

mod fnv;
mod parse;
mod substituter;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::SubstArgs;
use crate::error::{Exit, usage};
use crate::install;
pub use substituter::{Env, Options, Substituter, names, substitute};

/// How much input one streaming step reads: at first, and at most.
const FIRST_CHUNK: usize = 16 * 1024;
const CHUNK: usize = 256 * 1024;

pub(crate) fn run(args: &SubstArgs, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<Exit> {
    let format = args.shell_format.as_deref().map(OsStr::as_bytes);
    if args.variables {
        let Some(format) = format else {
            return Err(usage(
                "--variables needs a SHELL-FORMAT argument, e.g. stencil subst -v '$HOST ${PORT}'",
            ));
        };
        let mut out = Vec::new();
        for name in names(format, args.extended) {
            out.extend_from_slice(&name);
            out.push(b'\n');
        }
        return finish_stdout(stdout.write_all(&out).and_then(|()| stdout.flush()));
    }

    let options = Options {
        extended: args.extended,
        only: format.map(|f| names(f, args.extended).into_iter().collect()),
        no_unset: args.no_unset || args.no_empty,
        no_empty: args.no_empty,
    };
    let env = Env::from_process();
    let mut subst = Substituter::new(&env, options);

    let mut file;
    let input: &mut dyn Read = match &args.input {
        Some(path) if path.as_os_str() != "-" => {
            file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            &mut file
        }
        _ => stdin,
    };
    let output = args.output.as_deref().filter(|p| p.as_os_str() != "-");

    if output.is_none() && !subst.can_fail() {
        return stream(&mut subst, input, stdout);
    }

    let mut data = Vec::new();
    input
        .read_to_end(&mut data)
        .context("cannot read the input")?;
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    subst.feed(&data, true, &mut out)?;
    subst.check()?;
    match output {
        Some(path) => {
            write_file(path, &out)?;
            Ok(Exit::Success)
        }
        None => finish_stdout(stdout.write_all(&out).and_then(|()| stdout.flush())),
    }
}

/// Copies input to output chunk by chunk, substituting as it goes.
fn stream(subst: &mut Substituter, input: &mut dyn Read, stdout: &mut dyn Write) -> Result<Exit> {
    // The buffer starts small and doubles while reads fill it: zeroing a
    // large buffer up front costs more than substituting a small config.
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut filled = 0;
    let mut out: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof {
        // A reference cut by the end of a read stays in `buf[..filled]`.
        // Reading until the buffer doubles keeps a pathologically long name
        // (a 1 MB `$AAAA…`) from being rescanned once per pipe-sized read.
        let pending = filled > 0;
        if pending {
            let target = (2 * filled).max(filled + FIRST_CHUNK);
            if buf.len() < target {
                buf.resize(target, 0);
            }
        }
        let mut last = 0;
        while filled < buf.len() {
            last = match input.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("cannot read the input"),
            };
            filled += last;
            if last == 0 {
                eof = true;
            }
            if eof || !pending {
                break;
            }
        }
        let used = subst.feed(&buf[..filled], eof, &mut out)?;
        if let Err(e) = stdout.write_all(&out) {
            return finish_stdout(Err(e));
        }
        out.clear();
        buf.copy_within(used..filled, 0);
        filled -= used;
        if last == buf.len() && buf.len() < CHUNK {
            buf.resize(buf.len() * 2, 0);
        }
    }
    finish_stdout(stdout.flush())
}

/// A closed stdout pipe (`stencil subst | head`) is success, as STYLE.md
/// asks; any other write error is a failure.
fn finish_stdout(result: io::Result<()>) -> Result<Exit> {
    match result {
        Ok(()) => Ok(Exit::Success),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Success),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// `-o FILE`: the same staged, fsynced, renamed install as `render`.
fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    let req = install::Request {
        destination: path,
        content,
        mode: None,
        owner: None,
        group: None,
        check: None,
        command_timeout: Duration::from_secs(30),
        backup: false,
        create_dirs: false,
        label: "subst",
        // subst has no create_dirs: mkdir -p is the user's.
        create_dirs_hint: "",
        defer_dir_sync: false,
    };
    install::install(&req).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
