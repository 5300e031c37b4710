//! The edges a new user hit (issue 16): command output, exit codes, log
//! lines, `-t` flags, subst.

use crate::support::Test;

#[test]
fn successful_command_output_is_logged_per_line_with_the_template() {
    Test::new()
        .file("a.j2", "x\n")
        .args([
            "render",
            "-t",
            "a.j2:out.conf:echo reloaded; echo second line >&2",
        ])
        .run()
        .success()
        .stderr_has("INFO a.j2: reloaded\n")
        .stderr_has("INFO a.j2: second line\n");
}

#[test]
fn render_and_check_agree_on_exit_codes() {
    // Missing template, bad data file, template syntax: 2 for both.
    let cases: [(&str, &[&str]); 3] = [
        ("missing template", &["-t", "missing.j2:out"]),
        ("bad YAML", &["--data", "bad.yaml", "-t", "a.j2:out"]),
        ("template syntax", &["-t", "syntax.j2:out"]),
    ];
    for (what, args) in cases {
        for cmd in ["render", "check"] {
            let t = Test::new()
                .file("a.j2", "x\n")
                .file("syntax.j2", "{% if %}\n")
                .file("bad.yaml", "a: [unclosed\n");
            let out = t.args([cmd]).args(args.iter().copied()).run();
            assert_eq!(out.code, 2, "{cmd} with {what}: {}", out.stderr);
        }
    }
}

fn log_line_starts(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("INFO"))
        .map(|l| l.split(" INFO").next().unwrap().to_string())
        .collect()
}

#[test]
fn log_lines_carry_an_rfc3339_timestamp_unless_journald_or_switched_off() {
    let t = || Test::new().file("a.j2", "x\n");
    let out = t().args(["render", "-t", "a.j2:out"]).run().success();
    let starts = log_line_starts(&out.stderr.clone());
    assert!(!starts.is_empty());
    for ts in &starts {
        // 2026-11-29T23:21:43.863172Z
        assert!(
            ts.len() >= 20
                && ts.as_bytes()[4] == b'-'
                && ts.as_bytes()[10] == b'T'
                && ts.ends_with('Z'),
            "not an RFC 3339 timestamp: {ts:?}"
        );
    }
    for args in [
        vec!["render", "-t", "a.j2:out"],
        vec!["render", "--log-timestamps=false", "-t", "a.j2:out"],
    ] {
        let journal = args.len() == 3;
        let mut test = t().args(args);
        if journal {
            test = test.env("JOURNAL_STREAM", "8:12345");
        }
        let out = test.run().success();
        let text = out.stderr.clone();
        // No timestamp and no padding before the level.
        assert!(text.starts_with("INFO wrote"), "{text:?}");
    }
}

#[test]
fn a_failed_render_in_watch_says_its_error_once() {
    let out = Test::new()
        .file("a.j2", "{{ env.NOPE }}\n")
        .args(["watch", "--once", "-t", "a.j2:out"])
        .run()
        .code(1);
    let text = out.stderr.clone();
    assert_eq!(
        text.matches("cannot render template a.j2").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("error: "), "{text}");
    assert!(
        text.contains("ERROR a.j2 failed, the current file stays: cannot render"),
        "{text}"
    );
}

#[test]
fn exec_says_a_failed_render_once() {
    let out = Test::new()
        .file("a.j2", "{{ env.NOPE }}\n")
        .args(["exec", "-t", "a.j2:out", "--", "true"])
        .run()
        .code(1);
    let text = out.stderr.clone();
    assert!(text.starts_with("error: not starting `true`\n"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
fn template_flags_set_what_a_config_table_can() {
    // --create-dirs and --mode.
    let out = Test::new()
        .file("a.j2", "x\n")
        .args([
            "render",
            "--create-dirs",
            "--mode",
            "0640",
            "-t",
            "a.j2:sub/dir/out",
        ])
        .run()
        .success()
        .file_is("sub/dir/out", "x\n");
    let mode = std::fs::metadata(out.dir.join("sub/dir/out")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
        0o640
    );
    // Without it, the error names the flag too.
    Test::new()
        .file("a.j2", "x\n")
        .args(["render", "-t", "a.j2:missing/out"])
        .run()
        .code(1)
        .stderr_has("set create_dirs = true, or --create-dirs for -t, to create it");
    // --check: a failing check keeps the old file byte for byte.
    Test::new()
        .file("a.j2", "new\n")
        .file("out", "old\n")
        .args([
            "render",
            "--check",
            "grep -q good {{ staged }}",
            "-t",
            "a.j2:out",
        ])
        .run()
        .code(1)
        .stderr_has("check command")
        .file_is("out", "old\n");
    // --owner / --group: a numeric id is taken as it is (our own).
    let uid = nix::unistd::geteuid().to_string();
    let gid = nix::unistd::getegid().to_string();
    let out = Test::new()
        .file("a.j2", "x\n")
        .args([
            "render",
            "--owner",
            &uid,
            "--group",
            &gid,
            "-t",
            "a.j2:out",
            "--print-config",
        ])
        .run()
        .success();
    let config = out.stdout_str();
    assert!(
        config.contains(&format!("\"owner\": \"{uid}\"")),
        "{config}"
    );
    assert!(
        config.contains(&format!("\"group\": \"{gid}\"")),
        "{config}"
    );
    // A bad mode is a usage error naming the flag.
    Test::new()
        .args(["render", "--mode", "999", "-t", "a.j2:out"])
        .run()
        .code(2)
        .stderr_has("--mode");
}

#[test]
fn subst_error_operator_names_the_line() {
    Test::new()
        .args(["subst", "--extended"])
        .stdin("a\nb ${X:?need X}\n")
        .run()
        .code(1)
        .stderr_has("line 2: X: need X");
}

#[test]
fn subst_output_into_a_missing_directory_does_not_suggest_create_dirs() {
    Test::new()
        .args(["subst", "-o", "missing/out"])
        .stdin("x\n")
        .run()
        .code(1)
        .stderr_has("destination directory missing does not exist")
        .stderr_lacks("create_dirs");
}
