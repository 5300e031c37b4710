//! Fuzzes `stencil subst`'s parser.
//!
//! The first byte picks the mode and how the rest is cut into chunks; the
//! rest is the input. For every input:
//!
//! - default mode equals a line-by-line port of GNU envsubst's
//!   `subst_from_stdin` (getc/ungetc on a cursor), with and without a
//!   SHELL-FORMAT restriction: the reference model this parser must match;
//! - feeding the input in chunks gives the same output as feeding it whole,
//!   in both modes (a reference cut by a read boundary must not change);
//! - input without `$` comes out unchanged;
//! - nothing panics, however deep `${A:-${B:-...}}` nests.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use stencil::{SubstEnv as Env, SubstOptions as Options, Substituter, substitute};

fn env() -> Env {
    Env::from_pairs([
        ("A", &b"alpha"[..]),
        ("B_1", b""),
        ("_", b"$A ${A}"),
        ("x9", b"\xff\x00\xfe"),
    ])
}

/// GNU gettext's envsubst.c `subst_from_stdin`, transcribed: one byte at a
/// time, with its single-byte push-back.
fn reference(input: &[u8], env: &Env, only: Option<&HashSet<Vec<u8>>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    let getc = |pos: &mut usize| -> Option<u8> {
        let c = input.get(*pos).copied();
        if c.is_some() {
            *pos += 1;
        }
        c
    };
    let ungetc = |pos: &mut usize, c: Option<u8>| {
        if c.is_some() {
            *pos -= 1;
        }
    };
    let alpha = |c: Option<u8>| matches!(c, Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'));
    let alnum = |c: Option<u8>| alpha(c) || matches!(c, Some(b'0'..=b'9'));
    while let Some(c) = getc(&mut pos) {
        if c != b'$' {
            out.push(c);
            continue;
        }
        let mut opening = false;
        let mut closing = false;
        let mut c = getc(&mut pos);
        if c == Some(b'{') {
            opening = true;
            c = getc(&mut pos);
        }
        if alpha(c) {
            let mut name = Vec::new();
            while alnum(c) {
                name.push(c.unwrap());
                c = getc(&mut pos);
            }
            let mut valid;
            if opening {
                if c == Some(b'}') {
                    closing = true;
                    valid = true;
                } else {
                    valid = false;
                    ungetc(&mut pos, c);
                }
            } else {
                valid = true;
                ungetc(&mut pos, c);
            }
            if valid && only.is_some_and(|o| !o.contains(&name)) {
                valid = false;
            }
            if valid {
                if let Some(v) = env.get(&name) {
                    out.extend_from_slice(v);
                }
            } else {
                out.push(b'$');
                if opening {
                    out.push(b'{');
                }
                out.extend_from_slice(&name);
                if closing {
                    out.push(b'}');
                }
            }
        } else {
            ungetc(&mut pos, c);
            out.push(b'$');
            if opening {
                out.push(b'{');
            }
        }
    }
    out
}

fn chunked(input: &[u8], env: &Env, options: Options, step: usize) -> Option<Vec<u8>> {
    let mut subst = Substituter::new(env, options);
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for chunk in input.chunks(step) {
        pending.extend_from_slice(chunk);
        let used = subst.feed(&pending, false, &mut out).ok()?;
        pending.drain(..used);
    }
    let used = subst.feed(&pending, true, &mut out).ok()?;
    assert_eq!(used, pending.len());
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let env = env();
    let step = 1 + usize::from(control >> 2);
    let only: HashSet<Vec<u8>> = [b"A".to_vec(), b"x9".to_vec(), b"UNSET".to_vec()].into();

    // Default mode against the model, all names and a SHELL-FORMAT.
    for restrict in [false, true] {
        let options = Options {
            only: restrict.then(|| only.clone()),
            ..Options::default()
        };
        let got = substitute(input, &env, options.clone()).expect("default mode cannot fail");
        let want = reference(input, &env, options.only.as_ref());
        assert_eq!(got, want, "differs from envsubst's algorithm");
        let streamed = chunked(input, &env, options, step).expect("default mode cannot fail");
        assert_eq!(streamed, got, "chunk size {step} changes the output");
    }
    if !input.contains(&b'$') {
        let out = substitute(input, &env, Options::default()).unwrap();
        assert_eq!(out, input);
    }

    // Extended mode: may fail (`${X:?}`, too deep), must not panic, and
    // must not depend on how the input is cut.
    let options = Options {
        extended: true,
        only: (control & 1 == 1).then_some(only),
        ..Options::default()
    };
    let whole = substitute(input, &env, options.clone()).ok();
    let streamed = chunked(input, &env, options, step);
    assert_eq!(
        whole, streamed,
        "extended: chunk size {step} changes the output"
    );

    let _ = stencil::subst_names(input, control & 2 == 2);
});
