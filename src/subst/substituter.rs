//! The substitution itself: the variables it reads ([`Env`]), what it may
//! replace and refuse ([`Options`]), and the streaming [`Substituter`].

use std::collections::HashSet;
use std::os::unix::ffi::OsStringExt;

use anyhow::{Result, bail};

use super::fnv::FastMap;
use super::parse::{OpKind, Parsed, Part, Ref, count_newlines, find_dollar, parse_ref};

/// The variables substitution reads: a snapshot of the environment.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: FastMap<Vec<u8>, Vec<u8>>,
}

impl Env {
    /// The process environment. When a name occurs twice, the first wins,
    /// as with getenv(3), which is what envsubst calls.
    pub(crate) fn from_process() -> Env {
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
    pub(crate) fn can_fail(&self) -> bool {
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
                    // `${X:?message}` fails here: name the line, as a
                    // syntax error does.
                    self.eval(buf, &r, out).map_err(|e| {
                        let line = self.lines + 1 + count_newlines(&buf[..d]);
                        anyhow::anyhow!("line {line}: {e}")
                    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subst::parse::MAX_DEPTH;

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
        assert_eq!(err, "line 1: U: must be set");
        let err = ext("${E:?}").unwrap_err().to_string();
        assert_eq!(err, "line 1: E: parameter null or not set");
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
