//! Bad input: each case gets a clear error naming the file, line, variable,
//! key or command, a non-zero exit, and leaves the destination byte for byte
//! as it was.

use crate::support::{Output, Test};

const OLD: &str = "old content\n";

/// A test with an existing destination `out.conf` holding [`OLD`].
fn with_old_file() -> Test {
    Test::new().file("out.conf", OLD)
}

#[track_caller]
fn untouched(out: Output) -> Output {
    out.file_is("out.conf", OLD).no_staged_files(".")
}

#[test]
fn template_syntax_error() {
    let out = with_old_file()
        .file("a.j2", "line one\n{% if env.X %}\nno endif\n")
        .args(["render", "-t", "a.j2:out.conf"])
        .run()
        .code(2)
        .stderr_has("template a.j2 has a syntax error")
        .stderr_has("a.j2:3");
    untouched(out);
}

#[test]
fn undefined_variable() {
    let out = with_old_file()
        .file("a.j2", "ok\nvalue {{ hostname }}\n")
        .args(["render", "-t", "a.j2:out.conf"])
        .run()
        .code(1)
        .stderr_has("cannot render template a.j2")
        .stderr_has("hostname")
        .stderr_has("a.j2:2");
    untouched(out);
}

#[test]
fn unset_env_var() {
    let out = with_old_file()
        .file("a.j2", "port {{ env.PORT }}\n")
        .args(["render", "-t", "a.j2:out.conf"])
        .run()
        .code(1)
        .stderr_has("environment variable \"PORT\" is not set")
        .stderr_has("a.j2:1");
    untouched(out);
}

#[test]
fn missing_key_in_a_data_file() {
    let out = with_old_file()
        .file("a.j2", "{{ key('db/host') }}\n")
        .file("vars.json", r#"{"db": {"port": 1}}"#)
        .args(["render", "--data", "vars.json", "-t", "a.j2:out.conf"])
        .run()
        .code(1)
        .stderr_has("key \"db/host\" not found in source \"vars\" (file vars.json)")
        .stderr_has("a.j2:1");
    untouched(out);
}

#[test]
fn malformed_data_files_name_file_and_line() {
    for (name, text, needle) in [
        ("d.json", "{\n  \"a\": 1,\n  oops\n}\n", "line 3"),
        ("d.toml", "a = 1\nb = = 2\n", "line 2"),
        ("d.yaml", "a: 1\nb: [1, 2\n", "line"),
        ("d.env", "A=1\nB='unterminated\n", "line 2"),
    ] {
        let out = with_old_file()
            .file("a.j2", "x\n")
            .file(name, text)
            .args(["render", "--data", name, "-t", "a.j2:out.conf"])
            .run()
            .code(2)
            .stderr_has(name)
            .stderr_has(needle);
        untouched(out);
    }
}

#[test]
fn unknown_config_key_names_line_and_column() {
    let out = with_old_file()
        .file("a.j2", "x\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\nrelaod = \"x\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(2)
        .stderr_has("stencil.toml")
        .stderr_has("line 4, column 1")
        .stderr_has("unknown field `relaod`");
    untouched(out);
}

#[test]
fn missing_destination_directory() {
    Test::new()
        .file("a.j2", "x\n")
        .args(["render", "-t", "a.j2:missing/out.conf"])
        .run()
        .code(1)
        .stderr_has("destination directory missing does not exist")
        .stderr_has("create_dirs")
        .no_file("missing");
}

#[test]
fn destination_directory_not_writable() {
    let t = Test::new()
        .file("a.j2", "x\n")
        .file("ro/out.conf", OLD)
        .unprivileged()
        .args(["render", "-t", "a.j2:ro/out.conf"]);
    std::fs::set_permissions(
        t.path("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    t.run()
        .code(1)
        .stderr_has("cannot install ro/out.conf")
        .stderr_has("Permission denied")
        .file_is("ro/out.conf", OLD)
        .no_staged_files("ro");
}

#[test]
fn check_command_failing() {
    let out = with_old_file()
        .file("a.j2", "new\n")
        .file(
            "stencil.toml",
            r#"
[[templates]]
source = "a.j2"
destination = "out.conf"
check = "echo 'line 1: bad directive' >&2; exit 4"
reload = "touch reloaded"
"#,
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has(
            "check command `echo 'line 1: bad directive' >&2; exit 4` failed (exit status 4)",
        )
        .stderr_has("line 1: bad directive")
        .no_file("reloaded");
    untouched(out);
}

#[test]
fn reload_command_timing_out() {
    // The reload runs after install by design, so the new file is in place;
    // what matters is that stencil does not hang and names the command.
    Test::new()
        .file("a.j2", "new\n")
        .file(
            "stencil.toml",
            r#"
[[templates]]
source = "a.j2"
destination = "out.conf"
reload = "sleep 30"
command_timeout = "300ms"
"#,
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has("reload command `sleep 30` timed out after 300ms")
        .file_is("out.conf", "new\n");
}

#[test]
fn two_templates_with_the_same_destination() {
    let out = with_old_file()
        .file("a.j2", "a\n")
        .file("b.j2", "b\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\n\n[[templates]]\nsource = \"b.j2\"\ndestination = \"./out.conf\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(2)
        .stderr_has("stencil.toml:5")
        .stderr_has("also written by the template at stencil.toml:1");
    untouched(out);
}

#[test]
fn check_lists_every_error_and_exits_2() {
    Test::new()
        .file("a.j2", "{% for %}\n")
        .file("b.j2", "{{ 1 + }}\n")
        .file("c.j2", "fine\n")
        .args([
            "check",
            "-t",
            "a.j2:a.conf",
            "-t",
            "b.j2:b.conf",
            "-t",
            "c.j2:c.conf",
        ])
        .run()
        .code(2)
        .stderr_has("a.j2:1")
        .stderr_has("b.j2:1")
        .no_file("a.conf")
        .no_file("c.conf");
}

#[test]
fn check_passes_good_input_and_writes_nothing() {
    Test::new()
        .file("a.j2", "{{ key('x') }}\n")
        .file("d.json", r#"{"x": 1}"#)
        .args([
            "check",
            "--data",
            "d.json",
            "-t",
            "a.j2:a.conf:touch reloaded",
        ])
        .run()
        .success()
        .no_file("a.conf")
        .no_file("reloaded");
}

#[test]
fn missing_template_file() {
    with_old_file()
        .args(["render", "-t", "nope.j2:out.conf"])
        .run()
        .code(2)
        .stderr_has("cannot read template nope.j2");
}

#[test]
fn missing_data_file() {
    let out = with_old_file()
        .file("a.j2", "x\n")
        .args(["render", "--data", "nope.json", "-t", "a.j2:out.conf"])
        .run()
        .code(2)
        .stderr_has("cannot read nope.json");
    untouched(out);
}

#[test]
fn bad_mode_names_line_and_value() {
    with_old_file()
        .file("a.j2", "x\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\nmode = \"rw-r--r--\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(2)
        .stderr_has("line 4")
        .stderr_has("invalid mode \"rw-r--r--\"");
}

#[test]
fn key_without_any_source_says_how_to_add_one() {
    Test::new()
        .file("a.j2", "{{ key('x') }}\n")
        .args(["render", "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_has("no data source is configured");
}

#[test]
fn template_errors_do_not_print_values() {
    // minijinja's debug output lists variables in scope with their values;
    // stencil must not, since they can be secrets.
    Test::new()
        .file("a.j2", "{% set pw = env.DB_PASSWORD %}\n{{ nope }}\n")
        .env("DB_PASSWORD", "hunter2-secret")
        .args(["render", "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_lacks("hunter2-secret");
}

/// Durations are bounded (a year): a huge one is a usage error naming the
/// flag, where adding it to the clock used to panic (exit 134).
#[test]
fn durations_over_a_year_are_usage_errors_naming_the_flag() {
    for (command, flag, huge) in [
        (&["render"][..], "--wait-for-data", "500000000000y"),
        (&["watch", "--once"], "--debounce", "200000000000y"),
        (&["exec"], "--wait-timeout", "500000000000y"),
        (&["exec", "--watch"], "--kill-timeout", "500000000000y"),
    ] {
        let mut args = command.to_vec();
        args.extend([flag, huge, "-t", "a.j2:out.conf"]);
        if command[0] == "exec" {
            // exec runs an app once the file is in place.
            args.extend(["--", "true"]);
        }
        let out = with_old_file()
            .file("a.j2", "new\n")
            .args(args)
            .run()
            .code(2)
            .stderr_has(&format!("for '{flag} <"))
            .stderr_has(&format!("duration \"{huge}\" is too long"))
            .stderr_lacks("panicked");
        untouched(out);
    }
}

/// The same bound in a config file: the message names the file, the line
/// and the key.
#[test]
fn durations_over_a_year_in_the_config_name_file_line_and_key() {
    for (command, config, line, key) in [
        (
            "render",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\n\
             command_timeout = \"500000000000y\"\n",
            4,
            "command_timeout",
        ),
        (
            "exec",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\n\n\
             [exec]\ncommand = [\"true\"]\nkill_timeout = \"500000000000y\"\n",
            7,
            "kill_timeout",
        ),
    ] {
        let out = with_old_file()
            .file("a.j2", "new\n")
            .file("stencil.toml", config)
            .args([command, "-c", "stencil.toml"])
            .run()
            .code(2)
            .stderr_has("invalid config file stencil.toml")
            .stderr_has(&format!("line {line}, column"))
            .stderr_has(&format!("{key} = \"500000000000y\""))
            .stderr_has("duration \"500000000000y\" is too long")
            .stderr_lacks("panicked");
        untouched(out);
    }
}

/// The file type of `p` itself (not following a symlink), for asserting
/// that a special file is still what it was.
fn kind_of(p: &std::path::Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::symlink_metadata(p).unwrap().file_type();
    match () {
        () if t.is_fifo() => "fifo",
        () if t.is_socket() => "socket",
        () if t.is_char_device() => "char device",
        () if t.is_dir() => "directory",
        () if t.is_symlink() => "symlink",
        () => "file",
    }
}

#[test]
fn special_file_destinations_are_refused_and_left_alone() {
    // A FIFO would block the comparison read forever; a device node or a
    // socket would be replaced by a regular file (a systemd unit masked by
    // a link to /dev/null would take /dev/null with it).
    type Make = fn(&std::path::Path);
    let fifo: Make = |p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    };
    let link_to_fifo: Make = |p| {
        let target = p.with_file_name("real-fifo");
        nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    };
    let socket: Make = |p| {
        // Bound, then closed: the socket file stays.
        drop(std::os::unix::net::UnixListener::bind(p).unwrap());
    };
    let dir: Make = |p| std::fs::create_dir(p).unwrap();
    for (make, kind, what) in [
        (fifo, "fifo", "a FIFO"),
        (link_to_fifo, "symlink", "a FIFO"),
        (socket, "socket", "a socket"),
        (dir, "directory", "a directory"),
    ] {
        let t = Test::new().file("a.j2", "x\n");
        let dest = t.path("dest");
        make(&dest);
        let t = t.args(["render", "-t", &format!("a.j2:{}", dest.display())]);
        let out = t
            .run()
            .code(1)
            .stderr_has("refusing to write")
            .stderr_has(what);
        assert_eq!(
            kind_of(&dest),
            kind,
            "{what}: the destination changed\n{}",
            out.stderr
        );
    }
    // A link to a device node, where a masked unit's link points. With
    // --dry-run, so that even a regression writes nothing to /dev/null.
    let t = Test::new().file("a.j2", "x\n");
    let masked = t.path("masked.service");
    std::os::unix::fs::symlink("/dev/null", &masked).unwrap();
    t.args([
        "render",
        "--dry-run",
        "-t",
        &format!("a.j2:{}", masked.display()),
    ])
    .run()
    .code(1)
    .stderr_has("refusing to write /dev/null")
    .stderr_has("a character device");
    assert_eq!(kind_of(std::path::Path::new("/dev/null")), "char device");
}

#[test]
fn an_environment_variable_that_is_not_utf8_is_an_error_not_unset() {
    use std::os::unix::ffi::OsStringExt;
    let bad = std::ffi::OsString::from_vec(vec![b'p', 0xff, b'w']);
    for template in [
        "{{ env.DB_PASSWORD | default('fallback') }}\n",
        "{{ env_or_file('DB_PASSWORD') }}\n",
    ] {
        let out = with_old_file()
            .file("a.j2", template)
            .env("DB_PASSWORD", bad.clone())
            .args(["render", "-t", "a.j2:out.conf"])
            .run()
            .code(1)
            .stderr_has("environment variable \"DB_PASSWORD\"")
            .stderr_has("not UTF-8");
        untouched(out);
    }
}
