//! Secrets never leave: a known secret goes through every path an error,
//! a log line or an endpoint could take, and appears in none of them:
//! stderr (text and JSON logs, at trace level), `/status`, `/readyz` and
//! `/metrics`, diffs and dry runs, `--print-config`, `deps --json`.

use std::net::SocketAddr;

use crate::support::{Running, Test, status_get as get};

/// The one secret every test puts through its path.
const SECRET: &str = "Tr0ub4dor-s3cret";

/// Both log formats at the most verbose level, before the subcommand.
const LOGS: [[&str; 4]; 2] = [
    ["--log-level", "trace", "--log-format", "text"],
    ["--log-level", "trace", "--log-format", "json"],
];

fn hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
    assert!(!text.contains("s3cret"), "{what} shows part of it:\n{text}");
}

fn with_logs<'a>(logs: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    logs.iter().chain(args).copied().collect()
}

/// Waits until `/readyz` reports `needle`, then checks that no endpoint
/// shows the secret.
fn endpoints_hide_it(run: &mut Running, addr: SocketAddr, needle: &str) -> String {
    let readyz = run.wait_for(&format!("/readyz to report {needle:?}"), |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains(needle)).then_some(body)
    });
    hidden("/readyz", &readyz);
    let status = get(addr, "/status").unwrap().1;
    hidden("/status", &status);
    hidden("/metrics", &get(addr, "/metrics").unwrap().1);
    status
}

// ---------------------------------------------------------------------------
// 1. Data files that do not parse.

#[test]
fn data_file_parse_errors_name_the_place_never_the_value() {
    let cases = [
        (
            "d.toml",
            format!("a = 1\npassword = \"C:\\{SECRET}\\pw\"\n"),
            "line 2, column 16",
        ),
        (
            "d.env",
            format!("A=1\nDB_PASSWORD={SECRET} \"horse\"\n"),
            "line 2, column 30",
        ),
        (
            "d.json",
            format!("{{\"a\": 1,\n \"pw\": \"\\{SECRET}\"}}"),
            "line 2, column",
        ),
        (
            "d.yaml",
            format!("a: 1\npw: \"\\{SECRET}\"\n"),
            "line 2, column",
        ),
    ];
    for (file, content, place) in cases {
        for logs in LOGS {
            let out = Test::new()
                .file("a.j2", "{{ key('a') }}\n")
                .file(file, &content)
                .args(with_logs(&logs, &["render", "--data", file, "-t", "a.j2"]))
                .run()
                // A data file that does not parse must be fixed by a person.
                .code(2)
                .stderr_has(file)
                .stderr_has(place);
            hidden(file, &out.stderr);
        }
    }
}

#[test]
fn a_data_file_broken_while_watching_keeps_its_value_out_of_the_endpoints() {
    let t = Test::new()
        .file("a.j2", "pw={{ key('pw') }}\n")
        .file("d.env", "pw=old\n")
        .args([
            "watch",
            "--data",
            "d.env",
            "-t",
            "a.j2:a.conf",
            "--listen",
            "0",
        ]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "pw=old\n");
    let tmp = t.path("d.env.tmp");
    std::fs::write(&tmp, format!("pw={SECRET} \"x\n")).unwrap();
    std::fs::rename(tmp, t.path("d.env")).unwrap();
    let status = endpoints_hide_it(&mut run, addr, "line 1, column");
    assert!(status.contains("d.env"), "{status}");
    hidden("stderr", &run.stderr());
}

// ---------------------------------------------------------------------------
// 2. Credentials in URLs.

#[test]
fn a_password_in_a_source_url_is_never_shown() {
    let config = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"http://web:{SECRET}@127.0.0.1:1\"]\ntimeout = \"2s\"\n\n\
         [sources.c]\nkind = \"consul\"\naddress = \"http://web:{SECRET}@127.0.0.1:1\"\n\n\
         [[templates]]\nsource = \"a.j2\"\n\n[[templates]]\nsource = \"b.j2\"\ndata = \"c\"\n"
    );
    // etcd's gateway takes no credentials in the URL (they go through
    // /v3/auth/authenticate): such an endpoint is refused, redacted.
    let etcd_only = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"http://web:{SECRET}@127.0.0.1:1\"]\n\n\
         [[templates]]\nsource = \"a.j2\"\n"
    );
    // Consul's address is used, and shown with its password as ***.
    let consul_only = format!(
        "[sources.c]\nkind = \"consul\"\naddress = \"http://web:{SECRET}@127.0.0.1:1\"\n\n\
         [[templates]]\nsource = \"b.j2\"\n"
    );
    for logs in LOGS {
        let out = Test::new()
            .file("a.j2", "{{ key('a') }}\n")
            .file("stencil.toml", &etcd_only)
            .args(with_logs(&logs, &["render", "-c", "stencil.toml"]))
            .run()
            .code(2)
            .stderr_has("has a user or password in it");
        hidden("render (etcd)", &out.stderr);
        let out = Test::new()
            .file("b.j2", "{{ key('b') }}\n")
            .file("stencil.toml", &consul_only)
            .args(with_logs(&logs, &["render", "-c", "stencil.toml"]))
            .run()
            .code(1)
            .stderr_has("http://web:***@127.0.0.1:1");
        hidden("render (consul)", &out.stderr);
    }
    let out = Test::new()
        .file("a.j2", "x\n")
        .file("stencil.toml", &config)
        .args(["render", "-c", "stencil.toml", "--print-config"])
        .run()
        .success();
    hidden("--print-config", &out.stdout_str());
    // A --source flag refuses user information, without repeating it.
    for url in [
        format!("etcd=http://web:{SECRET}@127.0.0.1:1?prefix=/s/"),
        format!("consul=consul+http://web:{SECRET}@127.0.0.1:1"),
    ] {
        let out = Test::new()
            .file("a.j2", "x\n")
            .args(["render", "--source", &url, "-t", "a.j2"])
            .run()
            .code(2)
            .stderr_has("does not go in the URL");
        hidden("--source", &out.stderr);
    }
}

#[test]
fn a_password_in_a_source_url_stays_out_of_the_endpoints() {
    let t = Test::new()
        .file("a.j2", "{{ key('a') }}\n")
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"consul\"\naddress = \"http://web:{SECRET}@127.0.0.1:1\"\n\n\
                 [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n"
            ),
        )
        .args([
            "--log-level",
            "trace",
            "watch",
            "-c",
            "stencil.toml",
            "--listen",
            "127.0.0.1:0",
        ]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    endpoints_hide_it(&mut run, addr, "web:***@127.0.0.1:1");
    hidden("stderr", &run.stderr());
}

#[test]
fn a_password_in_a_wait_url_is_never_shown() {
    let url = format!("http://admin:{SECRET}@127.0.0.1:1/health");
    for logs in LOGS {
        let out = Test::new()
            .file("a.j2", "x\n")
            .args(with_logs(
                &logs,
                &[
                    "exec",
                    "-t",
                    "a.j2:a.conf",
                    "--wait",
                    &url,
                    "--wait-timeout",
                    "300ms",
                    "--",
                    "true",
                ],
            ))
            .run()
            .code(1)
            .stderr_has("admin:***@127.0.0.1:1");
        hidden("exec --wait", &out.stderr);
    }
    // A URL the flag parser refuses is quoted by it: without the password.
    let out = Test::new()
        .file("a.j2", "x\n")
        .args([
            "exec",
            "-t",
            "a.j2",
            "--wait",
            &format!("http://admin:{SECRET}@/x"),
            "--",
            "true",
        ])
        .run()
        .code(2)
        .stderr_has("admin:***@/x");
    hidden("--wait usage error", &out.stderr);
}

// ---------------------------------------------------------------------------
// 3. The in-place fallback.

#[test]
fn the_in_place_fallback_sets_the_mode_before_writing_the_secret() {
    // rename(2) over a bind-mounted file fails with EBUSY; the fallback
    // writes in place. strace records the order of the calls on the file:
    // fchmod to 0600 must come before the secret goes in.
    // scripts/test installs strace.
    let t = Test::new()
        .file("a.j2", "password={{ env.PW }}\n")
        .file("mounted.conf", "old\n")
        .mode("mounted.conf", 0o644)
        .file("app/f.conf", "placeholder\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"app/f.conf\"\nmode = \"0600\"\n",
        )
        .env("PW", SECRET);
    let trace = t.path("trace");
    let out = t
        .via([
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount --bind mounted.conf app/f.conf && exec strace -f -qq -o \"$TRACE\" \
             -e trace=openat,fchmod,fchown,ftruncate,write \"$0\" \"$@\"",
        ])
        .env("TRACE", &trace)
        .args(["render", "-c", "stencil.toml"])
        .run();
    // Read before `out` goes: it keeps the directory.
    let trace = std::fs::read_to_string(trace).unwrap();
    out.success()
        .stderr_has("bind-mounted")
        .file_is("mounted.conf", &format!("password={SECRET}\n"));
    // The descriptor of the in-place open: the destination itself, not a
    // staged file beside it.
    let fd = trace
        .lines()
        .filter(|l| l.contains("openat(") && l.contains("app/f.conf\""))
        .filter_map(|l| l.rsplit("= ").next()?.trim().parse::<i32>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no in-place open in:\n{trace}"));
    let calls: Vec<&str> = trace
        .lines()
        .skip_while(|l| !(l.contains("openat(") && l.contains("app/f.conf\"")))
        .filter_map(|l| {
            let call = l.split_whitespace().nth(1)?;
            call.starts_with(&format!("fchmod({fd},"))
                .then_some("fchmod")
                .or_else(|| {
                    call.starts_with(&format!("ftruncate({fd},"))
                        .then_some("ftruncate")
                })
                .or_else(|| call.starts_with(&format!("write({fd},")).then_some("write"))
        })
        .collect();
    assert_eq!(calls, ["fchmod", "ftruncate", "write"], "{trace}");
}

// ---------------------------------------------------------------------------
// 4. Check and reload output.

#[test]
fn a_secret_templates_failed_check_shows_neither_output_nor_command_in_the_endpoints() {
    let t = Test::new()
        .file("a.j2", "password={{ key('pw') }}\n")
        .file("d.json", format!(r#"{{"pw": "{SECRET}"}}"#))
        .file(
            "stencil.toml",
            "[sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nsecret = true\n\
             check = \"cat {{ staged }}; false\"\n",
        )
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    let status = endpoints_hide_it(&mut run, addr, "check command failed (exit status 1)");
    assert!(!status.contains("cat "), "{status}");
    // The operator's log keeps the output: it is what they need to fix it.
    assert!(run.stderr().contains(SECRET), "{}", run.stderr());
}

// ---------------------------------------------------------------------------
// 5. --diff and --dry-run.

#[test]
fn diff_and_dry_run_show_a_secret_files_size_and_hash_only() {
    for (mode, secret) in [("0600", false), ("0644", true)] {
        let config = format!(
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nmode = \"{mode}\"\nsecret = {secret}\n"
        );
        let t = || {
            Test::new()
                .file("a.j2", "password={{ env.PW }}\n")
                .file("a.conf", "password=old-one\n")
                .file("stencil.toml", &config)
                .env("PW", SECRET)
        };
        for flags in [&["--diff", "--dry-run"][..], &["--dry-run"]] {
            let flag = flags[0];
            let out = t()
                .args([&["render", "-c", "stencil.toml"][..], flags].concat())
                .run()
                .success()
                .file_is("a.conf", "password=old-one\n");
            let stdout = out.stdout_str();
            hidden(flag, &stdout);
            assert!(!stdout.contains("old-one"), "{stdout}");
            assert!(stdout.contains("17 bytes, sha256 "), "{stdout}");
            assert!(stdout.contains("--show-secrets"), "{stdout}");
            let out = t()
                .args(
                    [
                        &["render", "-c", "stencil.toml", "--show-secrets"][..],
                        flags,
                    ]
                    .concat(),
                )
                .run()
                .success();
            assert!(out.stdout_str().contains(SECRET), "{}", out.stdout_str());
        }
    }
}

#[test]
fn diff_shows_an_ordinary_file_in_full() {
    Test::new()
        .file("a.j2", "port=2\n")
        .file("a.conf", "port=1\n")
        .mode("a.conf", 0o640)
        .args(["render", "-t", "a.j2:a.conf", "--diff", "--dry-run"])
        .run()
        .success()
        .stdout_is("--- a.conf\n+++ a.conf\n@@ -1 +1 @@\n-port=1\n+port=2\n");
}

// ---------------------------------------------------------------------------
// 6. The listen address.

#[test]
fn a_bare_listen_port_is_on_loopback_and_an_open_address_warns() {
    let t = Test::new()
        .file("a.j2", "x\n")
        .args(["watch", "-t", "a.j2:a.conf", "--listen", "0"]);
    let mut run = t.spawn();
    assert!(run.serving_on(1).ip().is_loopback());
    assert!(!run.stderr().contains("reachable from other machines"));
    let t = Test::new().file("a.j2", "x\n").args([
        "watch",
        "-t",
        "a.j2:a.conf",
        "--listen",
        "0.0.0.0:0",
    ]);
    let mut run = t.spawn();
    run.serving_on(1);
    run.wait_for("the warning", |r| {
        r.stderr()
            .contains("reachable from other machines")
            .then_some(())
    });
}

// ---------------------------------------------------------------------------
// 7. What already keeps secrets out, and must keep doing so.

#[test]
fn deps_json_and_print_config_show_no_values() {
    let t = || {
        Test::new()
            .file("a.j2", "{{ key('pw') }} {{ env.PW }}\n")
            .file("d.json", format!(r#"{{"pw": "{SECRET}"}}"#))
            .file("pw", SECRET)
            .file(
                "stencil.toml",
                "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                 username = \"u\"\npassword_file = \"pw\"\n\n\
                 [sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n\
                 [[templates]]\nsource = \"a.j2\"\ndata = \"d\"\n",
            )
            .env("PW", SECRET)
            .env("ETCDCTL_PASSWORD", SECRET)
            .env("CONSUL_HTTP_TOKEN", SECRET)
    };
    let out = t()
        .args(["render", "-c", "stencil.toml", "--print-config"])
        .run()
        .success();
    hidden("--print-config", &out.stdout_str());
    let out = t()
        .args(["deps", "-c", "stencil.toml", "--json"])
        .run()
        .success();
    assert!(out.stdout_str().contains("pw"), "{}", out.stdout_str());
    hidden("deps --json", &out.stdout_str());
    hidden("deps stderr", &out.stderr);
}

#[test]
fn a_config_file_error_on_a_password_or_token_line_does_not_quote_it() {
    for line in [
        format!("password = \"{SECRET}\\q\""),
        "password = 12345678".to_string(),
        format!("token = \"{SECRET}\" x"),
    ] {
        let kind = if line.starts_with("token") {
            "consul"
        } else {
            "etcd"
        };
        let out = Test::new()
            .file("a.j2", "x\n")
            .file(
                "stencil.toml",
                format!("[sources.kv]\nkind = \"{kind}\"\n{line}\n"),
            )
            .args(["render", "-c", "stencil.toml"])
            .run()
            .code(2)
            .stderr_has("stencil.toml: line 3, column");
        hidden("config error", &out.stderr);
        assert!(!out.stderr.contains("12345678"), "{}", out.stderr);
    }
}
