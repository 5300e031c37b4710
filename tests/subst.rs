//! `stencil subst`: byte-for-byte GNU envsubst, and the extensions.
//!
//! The default mode is checked differentially: every input of a corpus the
//! tests generate (and keep under `$CARGO_TARGET_TMPDIR/subst-corpus/` so a
//! failure can be replayed by hand) goes through the installed GNU envsubst
//! and through stencil, with the same environment and SHELL-FORMAT, and the
//! outputs must be equal byte for byte. The `--extended` operators are
//! checked the same way against dash expanding a here-document.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{BIN, Output, Test};

/// The environment both programs see: set, empty, odd-valued and (by
/// omission) unset variables. nginx's lowercase names are set too, to show
/// that SHELL-FORMAT keeps them as written.
fn env() -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = [
        ("HOST", "example.org"),
        ("PORT", "8080"),
        ("A", "alpha"),
        ("B_1", "b one"),
        ("_x", "underscore"),
        ("x9", "x nine"),
        ("EMPTY", ""),
        ("DOLLAR", "$HOST ${PORT} $$"),
        ("host", "SHOULD-NOT-APPEAR-WITH-FORMAT"),
        ("UTF", "h\u{e9}llo \u{1f600}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    env.push((
        "BYTES".into(),
        OsString::from_vec(b"\xff\xfe\x80 raw".to_vec()),
    ));
    env
}

const FORMATS: &[&str] = &[
    "$HOST ${PORT}",
    "$A,$B_1 ${EMPTY} $UNSET ${_x}$x9 $BYTES $UTF $DOLLAR",
    // Garbage around a name still names it, as in envsubst's find_variables.
    "${ $$ ${A $} ${} $PORT$",
];

/// GNU envsubst, or a failure telling how to get it: the differential tests
/// are the point of this file, so they must never pass by not running.
fn envsubst() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("envsubst"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "GNU envsubst not found: install gettext-base \
             (apt-get install gettext-base; scripts/test does it)"
        )
    })
}

/// Runs a program with exactly `env` (and PATH), `input` on stdin.
fn run_with(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    input: &[u8],
) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stencil(args: &[OsString], env: &[(OsString, OsString)], input: &[u8]) -> Output {
    let mut test = Test::new().stdin(input.to_vec()).args(args.iter().cloned());
    for (k, v) in env {
        test = test.env(k.clone(), v.clone());
    }
    test.run()
}

/// Where a failing input is kept for replaying by hand.
fn keep(name: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("subst-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.in"));
    std::fs::write(&path, input).unwrap();
    path
}

/// Shows where two outputs part, without printing megabytes.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let around = |s: &[u8]| {
        let from = at.saturating_sub(40);
        String::from_utf8_lossy(
            &s[from..(at + 40).min(s.len())]
                .escape_ascii()
                .collect::<Vec<_>>(),
        )
        .into_owned()
    };
    format!(
        "lengths {} and {}; first difference at byte {at}\n  envsubst: {}\n  stencil:  {}",
        a.len(),
        b.len(),
        around(a),
        around(b)
    )
}

/// Runs both programs on `input`, without and with each SHELL-FORMAT.
fn differential(name: &str, input: &[u8], formats: &[&str]) {
    let envsubst = envsubst();
    let env = env();
    let path = keep(name, input);
    let mut runs: Vec<Vec<OsString>> = vec![vec![]];
    runs.extend(formats.iter().map(|f| vec![OsString::from(f)]));
    for args in runs {
        let (code, expected, stderr) = run_with(&envsubst, &args, &env, input);
        assert_eq!(code, 0, "envsubst failed on {}: {stderr}", path.display());
        let mut ours = vec![OsString::from("subst")];
        ours.extend(args.iter().cloned());
        let out = stencil(&ours, &env, input);
        assert_eq!(
            out.code,
            0,
            "stencil failed on {}: {}",
            path.display(),
            out.stderr
        );
        assert!(
            out.stdout == expected,
            "stencil subst {args:?} < {} differs from envsubst: {}",
            path.display(),
            first_difference(&expected, &out.stdout)
        );
    }
}

/// A small deterministic generator (xorshift), so the corpus is the same
/// on every run and a failure can be reproduced from its name.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).expect("a usize fits in u64");
        usize::try_from(self.next() % n).expect("below n, which was a usize")
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const NGINX: &str = r#"user nginx;
worker_processes ${WORKERS};
error_log /var/log/nginx/error.log warn;
pid /var/run/nginx.pid;

events {
    worker_connections 1024;
}

http {
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log /var/log/nginx/access.log main;

    upstream backend {
        server ${BACKEND_HOST}:${BACKEND_PORT};
    }

    server {
        listen ${PORT};
        server_name $HOST www.${HOST};
        root /srv/$A;

        location / {
            proxy_pass http://backend;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }

        location /static/ {
            alias /srv/static/;
            expires 30d;
            add_header Cache-Control "public, max-age=$EMPTY${UNSET}2592000";
        }

        if ($request_method !~ ^(GET|HEAD|POST)$ ) {
            return 405;
        }
        set $cost $$;
        return 200 "cost: $1 ${1} $_x $x9 ${B_1}\n";
    }
}
"#;

#[test]
fn nginx_config() {
    differential("nginx", NGINX.as_bytes(), FORMATS);
    // The reason SHELL-FORMAT exists: nginx's own variables survive.
    let out = stencil(
        &["subst".into(), "$HOST $PORT".into()],
        &env(),
        NGINX.as_bytes(),
    );
    let text = out.success().stdout_str();
    assert!(
        text.contains("server_name example.org www.example.org;"),
        "{text}"
    );
    assert!(text.contains("listen 8080;"), "{text}");
    assert!(text.contains("proxy_set_header Host $host;"), "{text}");
    assert!(text.contains("root /srv/$A;"), "{text}");
}

#[test]
fn edge_cases() {
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("dollar-dollar", b"$$ $$A $$$ $$$$HOST"),
        ("trailing-dollar", b"price: 5$"),
        ("only-dollar", b"$"),
        ("trailing-dollar-brace", b"x ${"),
        ("unterminated-at-end", b"x ${HOST"),
        ("unterminated-then-more", b"${HOST ${PORT} ${A$A} ${A\n}"),
        ("empty-braces", b"${} ${ } ${{A}} {$A} ${$A}"),
        (
            "digits",
            b"$1 ${1} $1A $A1 ${A1} $9x ${_} $_ $_x $x9 ${x9}y $B_1_",
        ),
        ("underscores", b"$_ ${_} $__ $_x_ ${_x}_ $B_1 ${B_1}"),
        (
            "non-ascii",
            "$\u{e9} ${\u{e9}} $A\u{e9} $UTF \u{1f600}$HOST\u{1f600}".as_bytes(),
        ),
        (
            "invalid-utf8",
            b"\xff$A\xfe ${A}\x80 $\xff ${\xc3} \xc3$HOST\xa9 $BYTES",
        ),
        ("nul", b"\0$A\0${A}\0$\0${\0$A"),
        ("crlf", b"$HOST\r\n${PORT}\r\n$\r\n${A\r\n}\r\n"),
        (
            "operators-pass-through",
            b"${A:-x} ${U-y} ${A:=z} ${U:?m} ${A:+w} ${#A} ${A%x}",
        ),
        (
            "shell-specials",
            b"$? $# $@ $* $! $- $0 ${?} $(cmd) `cmd` \\$A",
        ),
        ("values-not-rescanned", b"$DOLLAR ${DOLLAR}"),
        ("case", b"$host $Host $HOST"),
    ];
    for (name, input) in cases {
        differential(name, input, FORMATS);
    }
    // An empty SHELL-FORMAT names nothing, so nothing is replaced.
    differential("empty-format", b"$HOST ${PORT} $", &[""]);
}

#[test]
fn random_inputs() {
    // Bytes that matter to the parser, weighted towards `$`, braces and
    // name bytes, plus the ones that must pass through untouched.
    const ALPHABET: &[&[u8]] = &[
        b"$",
        b"$",
        b"$",
        b"{",
        b"}",
        b"A",
        b"B_1",
        b"HOST",
        b"_",
        b"_x",
        b"x9",
        b"1",
        b"EMPTY",
        b"UNSET",
        b"a",
        b" ",
        b"\n",
        b"\r\n",
        b"\0",
        b"\xff",
        b"\xc3\xa9",
        b":",
        b"-",
        b"=",
    ];
    let mut rng = Rng(0x5eed_5ab5_7000_0007);
    for case in 0..40 {
        let mut input = Vec::new();
        let len = 1 + rng.below(4000);
        while input.len() < len {
            input.extend_from_slice(rng.pick(ALPHABET));
        }
        differential(&format!("random-{case}"), &input, FORMATS);
    }
}

#[test]
fn one_megabyte_lines() {
    let mut line = Vec::new();
    while line.len() < 1 << 20 {
        line.extend_from_slice(b"0123456789abcdef $HOST:${PORT} $$ $ ${A ${} \xff\0 ");
    }
    differential("1mb-line", &line, FORMATS);

    // A name longer than any read: the reference spans many chunks.
    let mut long_name = b"start $".to_vec();
    long_name.extend(std::iter::repeat_n(b'N', 1 << 20));
    long_name.extend_from_slice(b" ${");
    long_name.extend(std::iter::repeat_n(b'A', 1 << 20));
    long_name.extend_from_slice(b" end $HOST");
    differential("1mb-name", &long_name, FORMATS);
}

#[test]
fn ten_megabytes() {
    let mut input = Vec::with_capacity(10 << 20);
    while input.len() < 10 << 20 {
        input.extend_from_slice(NGINX.as_bytes());
    }
    differential("10mb", &input, &FORMATS[..1]);
}

#[test]
fn variables_lists_names_like_envsubst() {
    let envsubst = envsubst();
    for format in FORMATS
        .iter()
        .chain(&["", "$A $A ${A}", "${A:-x} $B_1$$_x", "no names"])
    {
        let args = [OsString::from("-v"), OsString::from(format)];
        let (code, expected, _) = run_with(&envsubst, &args, &[], b"");
        assert_eq!(code, 0);
        let out = Test::new().args(["subst", "-v", *format]).run().success();
        assert_eq!(
            out.stdout_str(),
            String::from_utf8(expected).unwrap(),
            "format {format:?}"
        );
        // The long option too.
        Test::new()
            .args(["subst", "--variables", *format])
            .run()
            .success();
    }
    // With --extended, operator forms name their variables too.
    Test::new()
        .args(["subst", "--extended", "-v", "${A:-$B} ${C:?x}"])
        .run()
        .success()
        .stdout_is("A\nB\nC\n");
}

#[test]
fn variables_without_format_is_a_usage_error() {
    Test::new()
        .args(["subst", "-v"])
        .run()
        .code(2)
        .stderr_has("needs a SHELL-FORMAT");
    Test::new().args(["subst", "$A", "$B"]).run().code(2);
}

#[test]
fn help_and_version() {
    let out = Test::new().args(["subst", "--help"]).run().success();
    assert!(
        out.stdout_str().contains("Migrating from envsubst"),
        "{}",
        out.stdout_str()
    );
    Test::new().args(["subst", "-h"]).run().success();
    let out = Test::new().args(["subst", "--version"]).run().success();
    assert!(
        out.stdout_str().starts_with("stencil"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn no_unset_names_every_unset_variable() {
    Test::new()
        .env("SET", "1")
        .stdin("$SET $MISSING ${ALSO_MISSING} $MISSING\n")
        .args(["subst", "--no-unset"])
        .run()
        .code(1)
        .stdout_is("")
        .stderr_has("unset: MISSING, ALSO_MISSING");
    // Empty is fine for --no-unset, and unlisted names are not looked at.
    Test::new()
        .env("SET", "")
        .stdin("[$SET] $OTHER\n")
        .args(["subst", "--no-unset", "$SET"])
        .run()
        .success()
        .stdout_is("[] $OTHER\n");
    // An operator says what to do with an unset variable, as with `set -u`.
    Test::new()
        .stdin("${MISSING:-fallback}\n")
        .args(["subst", "--no-unset", "--extended"])
        .run()
        .success()
        .stdout_is("fallback\n");
}

#[test]
fn no_empty_names_empty_and_unset_variables() {
    Test::new()
        .env("SET", "1")
        .env("BLANK", "")
        .stdin("$SET $BLANK $MISSING ${BLANK}\n")
        .args(["subst", "--no-empty"])
        .run()
        .code(1)
        .stdout_is("")
        .stderr_has("unset: MISSING")
        .stderr_has("empty: BLANK");
    Test::new()
        .env("BLANK", "")
        .env("STENCIL_SUBST_NO_EMPTY", "true")
        .stdin("$BLANK")
        .args(["subst"])
        .run()
        .code(1)
        .stderr_has("empty: BLANK");
}

#[test]
fn failure_leaves_the_output_file_alone() {
    Test::new()
        .file("out.conf", "old\n")
        .file("in.tmpl", "host $MISSING\n")
        .args(["subst", "--no-unset", "-i", "in.tmpl", "-o", "out.conf"])
        .run()
        .code(1)
        .stderr_has("MISSING")
        .file_is("out.conf", "old\n")
        .no_staged_files(".");
    Test::new()
        .file("in.tmpl", "${NEEDED:?set NEEDED to the database URL}\n")
        .args(["subst", "--extended", "-i", "in.tmpl", "-o", "out.conf"])
        .run()
        .code(1)
        .stderr_has("NEEDED: set NEEDED to the database URL")
        .no_file("out.conf");
}

#[test]
fn input_and_output_files() {
    let out = Test::new()
        .file("in.tmpl", "listen $PORT; host $host;\n")
        .file("out.conf", "old\n")
        .mode("out.conf", 0o600)
        .env("PORT", "80")
        .args(["subst", "$PORT", "-i", "in.tmpl", "-o", "out.conf"])
        .run()
        .success()
        .stdout_is("")
        .file_is("out.conf", "listen 80; host $host;\n")
        .no_staged_files(".");
    // Installed like render: the existing file's mode is kept.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.dir.join("out.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // `-` means the standard streams; the options come from the environment too.
    Test::new()
        .stdin("$PORT")
        .env("PORT", "81")
        .env("STENCIL_SUBST_INPUT", "-")
        .args(["subst", "-o", "-"])
        .run()
        .success()
        .stdout_is("81");
    Test::new()
        .file("in.tmpl", "${PORT:-443}")
        .env("STENCIL_SUBST_EXTENDED", "true")
        .env("STENCIL_SUBST_OUTPUT", "out.conf")
        .args(["subst", "-i", "in.tmpl"])
        .run()
        .success()
        .file_is("out.conf", "443");
    Test::new()
        .args(["subst", "-i", "nope.tmpl"])
        .run()
        .code(1)
        .stderr_has("nope.tmpl");
}

/// `stencil subst < big | head -c1`: a closed pipe is not an error.
#[test]
fn closed_stdout_is_success() {
    let mut child = Command::new(BIN)
        .args(["subst"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Far more than a pipe holds, so stencil is still writing when the
    // reader goes away.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..16 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // Dropping the read end closes it.
    let status = child.wait().unwrap();
    writer.join().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

/// Templates for `--extended`, generated from a grammar both stencil and a
/// POSIX shell agree on: no quotes (stencil keeps them, shells remove
/// them), no backslash outside an operator's word, no `$` that is not a
/// reference (a shell knows `$1`, `$?` and `$(...)`).
fn extended_template(rng: &mut Rng, depth: usize, in_word: bool, out: &mut Vec<u8>) {
    const NAMES: &[&str] = &["A", "E", "U", "V", "W", "S", "LONG_NAME_9"];
    const OPS: &[&str] = &["-", ":-", "=", ":=", "+", ":+"];
    const TEXT: &[&str] = &[
        "a", "b c", "  ", ".", ",", ";", "/", "#", "%", "@", "!", "-", "+", "=", "?", ":", "{",
        "x{y", "'q'", "9", "\n", "\u{e9}",
    ];
    const ESCAPES: &[&str] = &["\\$", "\\}", "\\\\", "\\x"];
    let pieces = 1 + rng.below(if depth == 0 { 30 } else { 4 });
    for _ in 0..pieces {
        match rng.below(10) {
            0..=3 => {
                let text = rng.pick(TEXT);
                // `}` would close the word; outside one it is plain text.
                out.extend_from_slice(text.as_bytes());
                if !in_word && rng.below(4) == 0 {
                    out.push(b'}');
                }
            }
            4 if in_word => out.extend_from_slice(rng.pick(ESCAPES).as_bytes()),
            4 | 5 => {
                // A plain reference, followed by a byte that ends its name.
                out.push(b'$');
                out.extend_from_slice(rng.pick(NAMES).as_bytes());
                out.push(b' ');
            }
            6 => {
                out.extend_from_slice(b"${");
                out.extend_from_slice(rng.pick(NAMES).as_bytes());
                out.push(b'}');
            }
            _ if depth < 3 => {
                out.extend_from_slice(b"${");
                out.extend_from_slice(rng.pick(NAMES).as_bytes());
                out.extend_from_slice(rng.pick(OPS).as_bytes());
                extended_template(rng, depth + 1, true, out);
                out.push(b'}');
            }
            _ => out.extend_from_slice(b"z"),
        }
    }
}

/// What dash makes of `template` as a here-document.
fn dash_heredoc(template: &[u8], env: &[(OsString, OsString)]) -> (i32, Vec<u8>, String) {
    let mut script = b"cat <<__STENCIL_EOF__\n".to_vec();
    script.extend_from_slice(template);
    script.extend_from_slice(b"\n__STENCIL_EOF__\n");
    run_with(Path::new("dash"), &[], env, &script)
}

fn extended_env() -> Vec<(OsString, OsString)> {
    [
        ("A", "alpha"),
        ("E", ""),
        ("S", "x}$A\\y{z"),
        ("LONG_NAME_9", "long"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

#[test]
fn extended_matches_posix_shell() {
    let env = extended_env();
    let mut rng = Rng(0xd1ff_e7e7_0000_0042);
    for case in 0..60 {
        let mut template = Vec::new();
        extended_template(&mut rng, 0, false, &mut template);
        let path = keep(&format!("extended-{case}"), &template);
        let (code, mut expected, stderr) = dash_heredoc(&template, &env);
        assert_eq!(code, 0, "dash failed on {}: {stderr}", path.display());
        // The here-document's own final newline.
        assert_eq!(expected.pop(), Some(b'\n'));
        let out = stencil(&["subst".into(), "--extended".into()], &env, &template);
        assert_eq!(
            out.code,
            0,
            "stencil failed on {}: {}",
            path.display(),
            out.stderr
        );
        assert!(
            out.stdout == expected,
            "stencil subst --extended < {} differs from dash: {}",
            path.display(),
            first_difference(&expected, &out.stdout)
        );
    }
}

#[test]
fn extended_errors_match_posix_shell() {
    let env = extended_env();
    // The template, and the variable it fails on (None: no failure).
    let cases = [
        ("${U:?}", Some("U")),
        ("${U?}", Some("U")),
        ("${E:?}", Some("E")),
        ("${E?}", None),
        ("${A:?unused $U}", None),
        ("${U:?not set: $A}", Some("U")),
        ("${E:-${U?inner}}", Some("U")),
        ("${E-${U?inner}}", None),
        ("before ${A} ${U?} after", Some("U")),
    ];
    for (template, fails_on) in cases {
        let (code, expected, stderr) = dash_heredoc(template.as_bytes(), &env);
        let out = stencil(
            &["subst".into(), "--extended".into()],
            &env,
            template.as_bytes(),
        );
        match fails_on {
            None => {
                assert_eq!(code, 0, "dash on {template:?}: {stderr}");
                let out = out.success();
                assert_eq!(out.stdout, expected[..expected.len() - 1], "{template:?}");
            }
            Some(name) => {
                assert_ne!(code, 0, "dash on {template:?}");
                assert!(stderr.contains(&format!("{name}: ")), "dash: {stderr}");
                out.code(1)
                    .stdout_is("")
                    .stderr_has(&format!("error: line 1: {name}: "));
            }
        }
    }
    // The message is the expanded word.
    Test::new()
        .env("A", "alpha")
        .stdin("${U:?not set: $A}")
        .args(["subst", "--extended"])
        .run()
        .code(1)
        .stderr_has("U: not set: alpha");
}

#[test]
fn extended_respects_shell_format() {
    Test::new()
        .env("A", "alpha")
        .stdin("${A:-x} ${B:-y} $A ${C:-$A}")
        .args(["subst", "--extended", "$A ${B:-}"])
        .run()
        .success()
        .stdout_is("alpha y alpha ${C:-$A}");
}

#[test]
fn extended_is_off_by_default() {
    Test::new()
        .stdin("${U:-x}")
        .args(["subst"])
        .run()
        .success()
        .stdout_is("${U:-x}");
}

#[test]
fn extended_unterminated_operator_is_an_error() {
    // GNU envsubst copies `${PORT:-80` as text; with --extended it is a
    // typo a shell would reject too, so stencil names the line.
    Test::new()
        .file("out.conf", "old\n")
        .stdin("a\nlisten ${PORT:-80;\n")
        .args(["subst", "--extended", "-o", "out.conf"])
        .run()
        .code(1)
        .stderr_has("line 2: ${PORT:-… has no closing }")
        .file_is("out.conf", "old\n");
}
