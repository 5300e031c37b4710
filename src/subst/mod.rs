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

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::SubstArgs;
use crate::error::{Exit, usage};
use crate::install;

/// How much input one streaming step reads: at first, and at most.
const FIRST_CHUNK: usize = 16 * 1024;
const CHUNK: usize = 256 * 1024;

/// How deep `${A:-${B:-...}}` may nest. The parser is recursive, and a
/// fuzzer (or a hostile template) can nest a million levels.
pub const MAX_DEPTH: usize = 64;

pub fn run(args: &SubstArgs, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<Exit> {
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
    };
    install::install(&req).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The variables substitution reads: a snapshot of the environment.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: FastMap<Vec<u8>, Vec<u8>>,
}

impl Env {
    /// The process environment. When a name occurs twice, the first wins,
    /// as with getenv(3), which is what envsubst calls.
    pub fn from_process() -> Env {
        Env::from_pairs(std::env::vars_os().map(|(k, v)| (k.into_vec(), v.into_vec())))
    }

    /// Variables from pairs; the first of two equal names wins.
    pub fn from_pairs<I, K, V>(pairs: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Vec<u8>>,
        V: Into<Vec<u8>>,
    {
        let mut vars = FastMap::default();
        for (k, v) in pairs {
            vars.entry(k.into()).or_insert_with(|| v.into());
        }
        Env { vars }
    }

    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.vars.get(name).map(Vec::as_slice)
    }
}

/// What to substitute and what to refuse.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `${NAME<op>WORD}` forms.
    pub extended: bool,
    /// Only these names are replaced (SHELL-FORMAT); `None`: all.
    pub only: Option<HashSet<Vec<u8>>>,
    /// Fail if a plain reference names an unset variable.
    pub no_unset: bool,
    /// Fail if a plain reference names an empty variable.
    pub no_empty: bool,
}

/// Substitutes a whole input at once (tests, fuzzing, small inputs).
pub fn substitute(input: &[u8], env: &Env, options: Options) -> Result<Vec<u8>> {
    let mut subst = Substituter::new(env, options);
    let mut out = Vec::with_capacity(input.len());
    subst.feed(input, true, &mut out)?;
    subst.check()?;
    Ok(out)
}

/// The names a SHELL-FORMAT references, in order, repeats included: what
/// `envsubst -v` prints. With `extended`, names inside operator words count.
pub fn names(format: &[u8], extended: bool) -> Vec<Vec<u8>> {
    fn collect(buf: &[u8], parts: &[Part], out: &mut Vec<Vec<u8>>) {
        for part in parts {
            if let Part::Ref(r) = part {
                out.push(buf[r.name.clone()].to_vec());
                if let Some((_, word)) = &r.op {
                    collect(buf, word, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(d) = find_dollar(&format[i..]) {
        let d = i + d;
        // The format is complete (eof), and too deep a nesting only hides
        // the names below it: list what was found up to there.
        i = match parse_ref(format, d, true, extended, 0) {
            Ok(Parsed::Ref(r)) => {
                let end = r.raw.end;
                collect(format, &[Part::Ref(r)], &mut out);
                end
            }
            Ok(Parsed::Literal(end)) => end,
            Ok(Parsed::Incomplete) | Err(_) => d + 1,
        };
    }
    out
}

/// A hash map keyed by variable names, with FNV-1a instead of SipHash:
/// names are short, and a 10 MB config makes hundreds of thousands of
/// lookups. The keys come from the environment and the template, which
/// whoever runs stencil controls, so collision attacks are not a concern.
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    // The length prefix `[u8]`'s Hash writes: one step, not eight.
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x0100_0000_01b3);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A streaming substituter: feed it input, it appends output.
pub struct Substituter<'e> {
    env: &'e Env,
    options: Options,
    /// SHELL-FORMAT's names with their values, looked up once, so a
    /// reference costs one hash lookup.
    selected: Option<FastMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Values set by `${NAME:=WORD}`, seen by later references.
    assigned: FastMap<Vec<u8>, Vec<u8>>,
    unset: Names,
    empty: Names,
    /// Lines fed so far, for error messages.
    lines: usize,
}

impl<'e> Substituter<'e> {
    pub fn new(env: &'e Env, options: Options) -> Substituter<'e> {
        let selected = options.only.as_ref().map(|only| {
            only.iter()
                .map(|name| (name.clone(), env.get(name).map(<[u8]>::to_vec)))
                .collect()
        });
        Substituter {
            env,
            options,
            selected,
            assigned: FastMap::default(),
            unset: Names::default(),
            empty: Names::default(),
            lines: 0,
        }
    }

    /// Whether some input could make substitution fail, so output must
    /// wait for the end of input.
    pub fn can_fail(&self) -> bool {
        self.options.extended || self.options.no_unset || self.options.no_empty
    }

    /// Substitutes `buf` into `out` and returns how many bytes it used.
    ///
    /// Unless `eof`, a reference that might continue past the end of `buf`
    /// is left unused: call again with those bytes and more.
    pub fn feed(&mut self, buf: &[u8], eof: bool, out: &mut Vec<u8>) -> Result<usize> {
        let mut copied = 0;
        while let Some(d) = find_dollar(&buf[copied..]) {
            let d = copied + d;
            out.extend_from_slice(&buf[copied..d]);
            let parsed = parse_ref(buf, d, eof, self.options.extended, 0).map_err(|e| {
                let line = self.lines + 1 + count_newlines(&buf[..e.at]);
                anyhow::anyhow!("line {line}: {}", e.message)
            })?;
            copied = match parsed {
                Parsed::Incomplete => {
                    self.count_lines(&buf[..d]);
                    return Ok(d);
                }
                Parsed::Literal(end) => {
                    out.extend_from_slice(&buf[d..end]);
                    end
                }
                Parsed::Ref(r) => {
                    self.eval(buf, &r, out)?;
                    r.raw.end
                }
            };
        }
        out.extend_from_slice(&buf[copied..]);
        self.count_lines(buf);
        Ok(buf.len())
    }

    /// Keeps the line number for syntax errors, which only `--extended`
    /// can have: the default mode does not pay for counting.
    fn count_lines(&mut self, used: &[u8]) {
        if self.options.extended {
            self.lines += count_newlines(used);
        }
    }

    /// After the last [`feed`](Self::feed): the `--no-unset` and
    /// `--no-empty` verdict, naming every offending variable.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !self.unset.list.is_empty() {
            problems.push(format!("unset: {}", self.unset.join()));
        }
        if !self.empty.list.is_empty() {
            problems.push(format!("empty: {}", self.empty.join()));
        }
        if !problems.is_empty() {
            bail!("variables referenced but {}", problems.join("; "));
        }
        Ok(())
    }

    /// `None` if SHELL-FORMAT leaves the name alone, else its value.
    fn resolve(&self, name: &[u8]) -> Option<Option<&[u8]>> {
        // Most inputs assign nothing: skip hashing the name twice.
        if !self.assigned.is_empty() {
            // Only selected names are ever assigned.
            if let Some(v) = self.assigned.get(name) {
                return Some(Some(v));
            }
        }
        match &self.selected {
            Some(selected) => selected.get(name).map(Option::as_deref),
            None => Some(self.env.get(name)),
        }
    }

    fn eval(&mut self, buf: &[u8], r: &Ref, out: &mut Vec<u8>) -> Result<()> {
        let name = &buf[r.name.clone()];
        let Some(value) = self.resolve(name) else {
            out.extend_from_slice(&buf[r.raw.clone()]);
            return Ok(());
        };
        let Some((op, word)) = &r.op else {
            let (unset, empty) = match value {
                Some(v) => {
                    out.extend_from_slice(v);
                    (false, v.is_empty())
                }
                None => (true, false),
            };
            if unset && self.options.no_unset {
                self.unset.add(name);
            } else if empty && self.options.no_empty {
                self.empty.add(name);
            }
            return Ok(());
        };
        let value = value.map(<[u8]>::to_vec);
        let usable = match &value {
            Some(v) => !op.colon || !v.is_empty(),
            None => false,
        };
        match op.kind {
            OpKind::Default | OpKind::Assign | OpKind::Error if usable => {
                out.extend_from_slice(&value.unwrap_or_default());
            }
            OpKind::Default => self.expand(buf, word, out)?,
            OpKind::Assign => {
                let mut w = Vec::new();
                self.expand(buf, word, &mut w)?;
                out.extend_from_slice(&w);
                self.assigned.insert(name.to_vec(), w);
            }
            OpKind::Error => {
                let mut w = Vec::new();
                self.expand(buf, word, &mut w)?;
                let name = String::from_utf8_lossy(name);
                if w.is_empty() {
                    let what = if op.colon {
                        "null or not set"
                    } else {
                        "not set"
                    };
                    bail!("{name}: parameter {what}");
                }
                bail!("{name}: {}", String::from_utf8_lossy(&w));
            }
            OpKind::Alternative if usable => self.expand(buf, word, out)?,
            OpKind::Alternative => {}
        }
        Ok(())
    }

    fn expand(&mut self, buf: &[u8], word: &[Part], out: &mut Vec<u8>) -> Result<()> {
        for part in word {
            match part {
                Part::Literal(range) => out.extend_from_slice(&buf[range.clone()]),
                Part::Byte(b) => out.push(*b),
                Part::Ref(r) => self.eval(buf, r, out)?,
            }
        }
        Ok(())
    }
}

/// Names in order of first appearance, each once.
#[derive(Debug, Default)]
struct Names {
    seen: HashSet<Vec<u8>>,
    list: Vec<Vec<u8>>,
}

impl Names {
    fn add(&mut self, name: &[u8]) {
        if !self.seen.contains(name) {
            self.seen.insert(name.to_vec());
            self.list.push(name.to_vec());
        }
    }

    fn join(&self) -> String {
        let names: Vec<_> = self
            .list
            .iter()
            .map(|n| String::from_utf8_lossy(n))
            .collect();
        names.join(", ")
    }
}

/// One reference, as byte ranges into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The whole reference, `$` to the closing brace: copied as is when
    /// SHELL-FORMAT does not select the name.
    pub raw: Range<usize>,
    pub name: Range<usize>,
    pub op: Option<(Op, Vec<Part>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// `:-` rather than `-`: an empty value counts as unset.
    pub colon: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `-`: the value, else WORD.
    Default,
    /// `=`: the value, else WORD, which becomes the value.
    Assign,
    /// `?`: the value, else fail with WORD as the message.
    Error,
    /// `+`: WORD if there is a value, else nothing.
    Alternative,
}

/// A piece of an operator's WORD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(Range<usize>),
    /// An escaped `$`, `}` or `\`.
    Byte(u8),
    Ref(Ref),
}

/// What starts at a `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a reference: copy the input up to this offset as it is, and go
    /// on scanning there.
    Literal(usize),
    Ref(Ref),
    /// The input ends before it is known which (only when not at eof).
    Incomplete,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses the reference at `buf[d] == b'$'`, exactly as envsubst's
/// `subst_from_stdin` reads one, and with `extended` the operator forms.
pub fn parse_ref(
    buf: &[u8],
    d: usize,
    eof: bool,
    extended: bool,
    depth: usize,
) -> Result<Parsed, SyntaxError> {
    debug_assert_eq!(buf[d], b'$');
    let len = buf.len();
    let more = |at: usize| at >= len && !eof;
    let mut j = d + 1;
    if more(j) {
        return Ok(Parsed::Incomplete);
    }
    let brace = j < len && buf[j] == b'{';
    if brace {
        j += 1;
        if more(j) {
            return Ok(Parsed::Incomplete);
        }
    }
    if j >= len || !is_name_start(buf[j]) {
        // envsubst puts the byte after `$` or `${` back: it is scanned
        // again, so `$$HOME` is `$` and then a reference.
        return Ok(Parsed::Literal(j));
    }
    let name_start = j;
    let mut k = j + 1;
    while k < len && is_name_byte(buf[k]) {
        k += 1;
    }
    if more(k) {
        return Ok(Parsed::Incomplete);
    }
    let name = name_start..k;
    if !brace {
        return Ok(Parsed::Ref(Ref {
            raw: d..k,
            name,
            op: None,
        }));
    }
    if k < len && buf[k] == b'}' {
        return Ok(Parsed::Ref(Ref {
            raw: d..k + 1,
            name,
            op: None,
        }));
    }
    if extended && k < len {
        let colon = buf[k] == b':';
        let at = if colon { k + 1 } else { k };
        if more(at) {
            return Ok(Parsed::Incomplete);
        }
        let kind = match buf.get(at) {
            Some(b'-') => Some(OpKind::Default),
            Some(b'=') => Some(OpKind::Assign),
            Some(b'?') => Some(OpKind::Error),
            Some(b'+') => Some(OpKind::Alternative),
            _ => None,
        };
        if let Some(kind) = kind {
            if depth >= MAX_DEPTH {
                return Err(SyntaxError {
                    at: d,
                    message: format!("${{…}} nested more than {MAX_DEPTH} levels deep"),
                });
            }
            match parse_word(buf, at + 1, eof, depth + 1)? {
                Word::Incomplete => return Ok(Parsed::Incomplete),
                Word::Done(parts, end) => {
                    return Ok(Parsed::Ref(Ref {
                        raw: d..end,
                        name,
                        op: Some((Op { kind, colon }, parts)),
                    }));
                }
                // A shell says "missing }" too. Copying it as GNU does
                // would make the caller rescan the rest of the input from
                // each nested `${`: exponential in the nesting (a fuzzer
                // found it), and it hides a typo in the template.
                Word::Unterminated => {
                    return Err(SyntaxError {
                        at: d,
                        message: format!(
                            "{}… has no closing }}",
                            String::from_utf8_lossy(&buf[d..=at])
                        ),
                    });
                }
            }
        }
    }
    // `${NAME` without its `}`: envsubst copies `${NAME` and goes on
    // scanning at the byte after NAME.
    Ok(Parsed::Literal(k))
}

/// A malformed `--extended` form, at byte `at` of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
}

enum Word {
    /// The parts, and the offset after the closing brace.
    Done(Vec<Part>, usize),
    Unterminated,
    Incomplete,
}

/// Reads an operator's WORD up to its closing brace.
fn parse_word(buf: &[u8], start: usize, eof: bool, depth: usize) -> Result<Word, SyntaxError> {
    let end_of_input = || {
        if eof {
            Word::Unterminated
        } else {
            Word::Incomplete
        }
    };
    let mut parts = Vec::new();
    let mut literal = start;
    let mut p = start;
    let flush = |parts: &mut Vec<Part>, from: usize, to: usize| {
        if from < to {
            parts.push(Part::Literal(from..to));
        }
    };
    loop {
        let Some(&b) = buf.get(p) else {
            return Ok(end_of_input());
        };
        match b {
            b'}' => {
                flush(&mut parts, literal, p);
                return Ok(Word::Done(parts, p + 1));
            }
            b'\\' => {
                let Some(&next) = buf.get(p + 1) else {
                    return Ok(end_of_input());
                };
                if matches!(next, b'$' | b'}' | b'\\') {
                    flush(&mut parts, literal, p);
                    parts.push(Part::Byte(next));
                    p += 2;
                    literal = p;
                } else {
                    p += 1;
                }
            }
            b'$' => match parse_ref(buf, p, eof, true, depth)? {
                Parsed::Incomplete => return Ok(Word::Incomplete),
                // Literal text stays in the current literal run.
                Parsed::Literal(end) => p = end,
                Parsed::Ref(r) => {
                    flush(&mut parts, literal, p);
                    p = r.raw.end;
                    literal = p;
                    parts.push(Part::Ref(r));
                }
            },
            _ => p += 1,
        }
    }
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The offset of the first `$`.
///
/// The fixed-size inner loop has no early exit, so LLVM vectorizes it
/// (std's memchr is not public, and this crate has no memchr dependency).
#[inline]
fn find_dollar(hay: &[u8]) -> Option<usize> {
    const LANES: usize = 32;
    let mut chunks = hay.chunks_exact(LANES);
    let mut offset = 0;
    for chunk in &mut chunks {
        let hit = chunk.iter().fold(0u8, |acc, &b| acc | u8::from(b == b'$'));
        if hit != 0 {
            return chunk.iter().position(|&b| b == b'$').map(|p| offset + p);
        }
        offset += LANES;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'$')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs([("A", "a"), ("E", ""), ("HOST", "example.org")])
    }

    fn gnu(input: &str) -> String {
        let out = substitute(input.as_bytes(), &env(), Options::default()).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn ext(input: &str) -> Result<String> {
        let options = Options {
            extended: true,
            ..Options::default()
        };
        Ok(String::from_utf8(substitute(input.as_bytes(), &env(), options)?).unwrap())
    }

    #[test]
    fn gnu_edge_cases() {
        assert_eq!(gnu("$A ${A} $U ${U}|"), "a a  |");
        assert_eq!(gnu("$$A $ ${ ${} $"), "$a $ ${ ${} $");
        assert_eq!(gnu("${A ${A:-x} ${1} $1"), "${A ${A:-x} ${1} $1");
        assert_eq!(gnu("${$A}"), "${a}");
        assert_eq!(gnu("${A$A}"), "${Aa}");
    }

    #[test]
    fn extended_operators() {
        assert_eq!(ext("${U:-d} ${E:-d} ${E-d} ${A:-d}").unwrap(), "d d  a");
        assert_eq!(ext("${U:+x} ${E:+x} ${E+x} ${A:+x}").unwrap(), "  x x");
        assert_eq!(ext("${U:=v} $U ${E=w}|").unwrap(), "v v |");
        assert_eq!(ext("${U:-a\\}b\\$c\\\\d\\x}").unwrap(), "a}b$c\\d\\x");
        assert_eq!(ext("${U:-${V:-$A}}").unwrap(), "a");
        let err = ext("x\n${U:-${A:-a}\n").unwrap_err().to_string();
        assert_eq!(err, "line 2: ${U:-… has no closing }");
        assert_eq!(ext("${A:?}").unwrap(), "a");
        let err = ext("${U:?must be set}").unwrap_err().to_string();
        assert_eq!(err, "U: must be set");
        let err = ext("${E:?}").unwrap_err().to_string();
        assert_eq!(err, "E: parameter null or not set");
        // The unused WORD is not evaluated.
        assert_eq!(ext("${A:-${U:?boom}}").unwrap(), "a");
    }

    #[test]
    fn streaming_matches_whole() {
        let input = b"x $HOST ${A} ${U:-d} $$ ${A".repeat(50);
        let env = env();
        for extended in [false, true] {
            let options = Options {
                extended,
                ..Options::default()
            };
            let whole = substitute(&input, &env, options.clone()).unwrap();
            for step in [1, 2, 3, 7, 64] {
                let mut subst = Substituter::new(&env, options.clone());
                let mut out = Vec::new();
                let mut pending = Vec::new();
                for chunk in input.chunks(step) {
                    pending.extend_from_slice(chunk);
                    let used = subst.feed(&pending, false, &mut out).unwrap();
                    pending.drain(..used);
                }
                let used = subst.feed(&pending, true, &mut out).unwrap();
                assert_eq!(used, pending.len());
                assert_eq!(out, whole, "step {step}, extended {extended}");
            }
        }
    }

    #[test]
    fn find_dollar_everywhere() {
        for len in 0..100 {
            for at in 0..len {
                let mut hay = vec![b'x'; len];
                hay[at] = b'$';
                assert_eq!(find_dollar(&hay), Some(at));
            }
            assert_eq!(find_dollar(&vec![b'x'; len]), None);
        }
    }

    /// Found by the fuzzer: copying an unterminated operator and scanning
    /// on from each nested `${` took time exponential in the nesting.
    #[test]
    fn unterminated_nesting_is_linear() {
        let input = "${U:-".repeat(MAX_DEPTH - 1);
        let err = ext(&input).unwrap_err().to_string();
        assert!(err.contains("has no closing"), "{err}");
        let input = "${U:-\\${U:-".repeat(10_000);
        assert!(ext(&input).is_err());
    }

    #[test]
    fn too_deep_is_an_error() {
        let input = "${U:-".repeat(MAX_DEPTH + 2) + &"}".repeat(MAX_DEPTH + 2);
        let err = ext(&input).unwrap_err().to_string();
        assert!(err.contains("nested more than"), "{err}");
        let ok = "${U:-".repeat(MAX_DEPTH) + "x" + &"}".repeat(MAX_DEPTH);
        assert_eq!(ext(&ok).unwrap(), "x");
    }
}
