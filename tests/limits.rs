//! Render limits, renders beside the loop, liveness, and signals during a
//! one-shot render's commands: a value read from a source must not stop
//! the process, freeze the other templates, or leave a command behind.
//! Every wait is a poll with a deadline.

use std::net::SocketAddr;

use crate::support::etcd::Etcd;
use crate::support::{Running, Test, status_get as get};

fn status_json(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/status").expect("status server").1).unwrap()
}

/// The state and detail `/status` shows for a template.
fn state_of(addr: SocketAddr, template: &str) -> (String, String) {
    let status = status_json(addr);
    let t = &status["templates"][template];
    (
        t["state"].as_str().unwrap_or_default().to_string(),
        t["detail"].as_str().unwrap_or_default().to_string(),
    )
}

fn wait_failed(run: &mut Running, addr: SocketAddr, template: &str, naming: &str) -> String {
    run.wait_for(&format!("{template} to fail naming {naming}"), |_| {
        let (state, detail) = state_of(addr, template);
        (state == "failed" && detail.contains(naming)).then_some(detail)
    })
}

/// A loop count, an indent width and a key 20,000 folders deep, each from
/// etcd: each fails its own template naming the limit, its last good file
/// stays, and a change for another template is still applied after them.
#[test]
fn hostile_values_from_etcd_fail_only_their_own_template() {
    let etcd = Etcd::start();
    etcd.put("/app/n", "2");
    etcd.put("/app/w", "2");
    etcd.put("/app/deep/a", "1");
    etcd.put("/app/other", "1");
    let config = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/app/\"\n\n\
         [limits]\nrender_fuel = 200000\n\n\
         [[templates]]\nsource = \"loop.j2\"\ndestination = \"loop.conf\"\n\n\
         [[templates]]\nsource = \"indent.j2\"\ndestination = \"indent.conf\"\n\n\
         [[templates]]\nsource = \"tree.j2\"\ndestination = \"tree.conf\"\n\n\
         [[templates]]\nsource = \"other.j2\"\ndestination = \"other.conf\"\n",
        etcd.url()
    );
    let mut run = Test::new()
        .file(
            "loop.j2",
            "{% for i in range(key('n')|int) %}{% for j in range(key('n')|int) %}x\
             {% endfor %}{% endfor %}\n",
        )
        .file("indent.j2", "{{ 'a\\nb' | indent(key('w')|int) }}\n")
        .file("tree.j2", "{{ tree('deep') | length }}\n")
        .file("other.j2", "other={{ key('other') }}\n")
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("loop.conf", "xxxx");
    run.wait_file("indent.conf", "a\n  b\n");
    run.wait_file("tree.conf", "1\n");
    run.wait_file("other.conf", "other=1\n");

    etcd.put("/app/n", "31337");
    etcd.put("/app/w", "987654321987");
    etcd.put(&format!("/app/deep/{}", "s/".repeat(20_000)), "1");
    wait_failed(&mut run, addr, "loop.conf", "render_fuel (200000)");
    wait_failed(&mut run, addr, "indent.conf", "render_fuel (200000)");
    wait_failed(&mut run, addr, "tree.conf", "max_depth (100)");

    etcd.put("/app/other", "2");
    run.wait_file("other.conf", "other=2\n");
    assert_eq!(run.file("loop.conf").unwrap(), "xxxx");
    assert_eq!(run.file("indent.conf").unwrap(), "a\n  b\n");
    assert_eq!(run.file("tree.conf").unwrap(), "1\n");
    let log = run.stderr();
    for value in ["31337", "987654321987"] {
        assert!(!log.contains(value), "a value is in the log:\n{log}");
        assert!(!get(addr, "/status").unwrap().1.contains(value));
    }
}

/// The allocation bombs of minijinja's builtins and of stencil's own
/// functions, with the size from the environment: an error naming the
/// limit (never the value), exit 1, the old file kept.
#[test]
fn allocation_bombs_fail_the_render_naming_the_limit() {
    let cases = [
        ("{{ 'x' | indent(env.N|int) }}", "render_fuel"),
        ("{{ 'x' * (env.N|int) }}", "render_fuel"),
        ("{{ range(env.N|int) | list | length }}", "range"),
        ("{{ seq(1, env.N|int) | length }}", "seq"),
        ("{{ {'a': [1]} | tojson(env.N|int) }}", "max_output"),
        ("{{ ('{:>' ~ env.N ~ '}').format('x') }}", "max_output"),
        ("{{ ('x' * 4000).replace('', 'y' * 4000) }}", "max_output"),
        ("{{ replaceAll('', 'y' * 4000, 'x' * 4000) }}", "max_output"),
        (
            "{{ regexReplaceAll('', 'y' * 4000, 'x' * 4000) }}",
            "max_output",
        ),
        ("{{ ('y' * 4000).join(['x'] * 4000) }}", "max_output"),
        ("{{ printf('%' ~ env.N ~ 'd', 1) }}", ""),
    ];
    for (template, naming) in cases {
        let out = Test::new()
            .file("a.j2", format!("{template}\n"))
            .file("out.conf", "old\n")
            .file("stencil.toml", "[limits]\nmax_output = \"1MiB\"\n\n[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\n")
            .env("N", "987654321987")
            .args(["render", "-c", "stencil.toml"])
            .run();
        if naming.is_empty() {
            // Small enough to render (printf's width is Go's BADWIDTH).
            assert_eq!(out.code, 0, "{template}: {}", out.stderr);
            continue;
        }
        let out = out.code(1).stderr_has(naming).file_is("out.conf", "old\n");
        assert!(
            !out.stderr.contains("987654321987"),
            "{template}: the value is in the error:\n{}",
            out.stderr
        );
    }
}

#[test]
fn output_past_max_output_fails_and_keeps_the_old_file() {
    Test::new()
        .file("a.j2", "{% for i in range(2000) %}0123456789{% endfor %}\n")
        .file("b.j2", "small\n")
        .file("out.conf", "old\n")
        .file(
            "stencil.toml",
            "[limits]\nmax_output = \"16KiB\"\n\n\
             [[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\n\n\
             [[templates]]\nsource = \"b.j2\"\ndestination = \"b.conf\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has("cannot render template a.j2")
        .stderr_has("larger than max_output (16384 bytes)")
        .file_is("out.conf", "old\n")
        .file_is("b.conf", "small\n");
}

#[test]
fn recursion_past_max_depth_is_an_error_not_a_crash() {
    Test::new()
        .file(
            "a.j2",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}\n",
        )
        .file(
            "stencil.toml",
            "[limits]\nmax_depth = 500\n\n[[templates]]\nsource = \"a.j2\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has("deeper than max_depth (500)");
}

#[test]
fn limits_out_of_range_are_usage_errors_naming_the_key() {
    for (limits, naming) in [
        (
            "max_depth = 0",
            "[limits] max_depth must be between 1 and 500",
        ),
        (
            "max_depth = 501",
            "[limits] max_depth must be between 1 and 500",
        ),
        (
            "render_fuel = 10",
            "[limits] render_fuel must be at least 1000",
        ),
        ("max_output = \"12 parsecs\"", "invalid size"),
        (
            "stall_timeout = \"10ms\"",
            "[limits] stall_timeout must be at least 1s",
        ),
        ("fuel = 1", "unknown field `fuel`"),
    ] {
        Test::new()
            .file("a.j2", "a\n")
            .file(
                "stencil.toml",
                format!("[limits]\n{limits}\n\n[[templates]]\nsource = \"a.j2\"\n"),
            )
            .args(["render", "-c", "stencil.toml"])
            .run()
            .code(2)
            .stderr_has(naming);
    }
}

/// Whether process `pid` is gone (a zombie counts as gone: it runs no more).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(run: &mut Running, pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gone(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} outlived stencil\n{}",
            run.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A render that runs for minutes (its fuel raised for it) holds back
/// neither another template's change nor SIGTERM.
#[test]
fn a_long_render_blocks_neither_other_templates_nor_sigterm() {
    let etcd = Etcd::start();
    etcd.put("/app/n", "1");
    etcd.put("/app/other", "1");
    let config = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/app/\"\n\n\
         [limits]\nrender_fuel = 1000000000000\n\n\
         [[templates]]\nsource = \"slow.j2\"\ndestination = \"slow.conf\"\n\n\
         [[templates]]\nsource = \"other.j2\"\ndestination = \"other.conf\"\n",
        etcd.url()
    );
    let mut run = Test::new()
        .file(
            "slow.j2",
            "{% for i in range(key('n')|int) %}{% for j in range(key('n')|int) %}{% endfor %}\
             {% endfor %}slow\n",
        )
        .file("other.j2", "other={{ key('other') }}\n")
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("other.conf", "other=1\n");
    etcd.put("/app/n", "99999");
    run.wait_for("the long render to start", |_| {
        let status = status_json(addr);
        let renders = status["templates"]["slow.conf"]["renders"].as_u64()?;
        (renders == 1).then_some(())
    });
    etcd.put("/app/other", "2");
    run.wait_file("other.conf", "other=2\n");
    assert_eq!(get(addr, "/healthz").unwrap().0, 200);
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(run.wait_exit(std::time::Duration::from_secs(20)), 0);
}

/// `/healthz` fails while the loop does not turn: here it blocks opening
/// a template that was replaced by a FIFO nobody writes, until someone
/// does. `/readyz` is not what says so.
#[test]
fn healthz_fails_while_the_loop_is_stuck() {
    let t = Test::new()
        .file("a.j2", "a\n")
        .file(
            "stencil.toml",
            "[limits]\nstall_timeout = \"1s\"\n\n\
             [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n",
        )
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "a\n");
    assert_eq!(get(addr, "/healthz").unwrap().0, 200);
    let fifo = t.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::fs::rename(&fifo, t.path("a.j2")).unwrap();
    let body = run.wait_for("/healthz to fail", |_| {
        let (code, body) = get(addr, "/healthz")?;
        (code == 503).then_some(body)
    });
    assert!(body.contains("stall_timeout (1s)"), "{body}");
    // Unblocked: the loop turns again and /healthz recovers.
    std::fs::write(t.path("a.j2"), "b\n").unwrap();
    run.wait_file("a.conf", "b\n");
    run.wait_for("/healthz to recover", |_| {
        (get(addr, "/healthz")?.0 == 200).then_some(())
    });
}

/// A one-shot render stopped by SIGTERM or SIGINT while its check runs
/// kills the check's process group and removes the staged file.
#[test]
fn a_signal_during_a_one_shot_check_kills_it_and_removes_the_staged_file() {
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let t = Test::new()
            .file("a.j2", "new\n")
            .file("out/a.conf", "old\n")
            .args([
                "render",
                "-t",
                "a.j2:out/a.conf",
                "--check",
                CHECK_UNTIL_STOPPED,
            ]);
        drop(stop_during_check(&t, signal, code));
    }
}

/// A check that writes its pid to check.pid and runs until killed.
const CHECK_UNTIL_STOPPED: &str = "echo $$ > check.pid; exec sleep 60";

/// Runs `t` (a.j2 rendering "new" over out/a.conf's "old", checked by
/// [`CHECK_UNTIL_STOPPED`]), sends `signal` once the check runs, and checks
/// that stencil exits `code` having killed the check, kept the old file and
/// left no staged file.
fn stop_during_check(t: &Test, signal: nix::sys::signal::Signal, code: i32) -> Running {
    let mut run = t.spawn();
    let pid: i32 = run.wait_for("the check to start", |r| {
        r.file("check.pid")?.trim().parse().ok()
    });
    run.signal(signal);
    assert_eq!(run.wait_exit(std::time::Duration::from_secs(10)), code);
    wait_gone(&mut run, pid);
    assert_eq!(run.file("out/a.conf").unwrap(), "old\n");
    let left: Vec<_> = std::fs::read_dir(t.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["a.conf"], "a staged file was left");
    run
}

/// The same for `stencil exec`'s first render, which runs before the app:
/// a stop during its check kills the check, keeps the old file, leaves no
/// staged file and never starts the app.
#[test]
fn a_signal_during_exec_first_check_kills_it_and_never_starts_the_app() {
    let t = Test::new()
        .file("a.j2", "new\n")
        .file("out/a.conf", "old\n")
        .file(
            "stencil.toml",
            format!(
                "[[templates]]\nsource = \"a.j2\"\ndestination = \"out/a.conf\"\n\
                 check = {CHECK_UNTIL_STOPPED:?}\n"
            ),
        )
        .args(["exec", "-c", "stencil.toml", "--", "touch", "app-started"]);
    let run = stop_during_check(&t, nix::sys::signal::Signal::SIGTERM, 143);
    assert_eq!(run.file("app-started"), None, "the app was started");
}

/// Two templates share a reload command and change in two batches that run
/// at once (batches run on threads of their own): the command runs one at a
/// time. The reload fails if another copy of it is running.
#[test]
fn batches_sharing_a_reload_command_run_it_one_at_a_time() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    let reload = "mkdir lock || { echo overlap >> overlaps; exit 1; }; echo x >> started; sleep 1; rmdir lock";
    let config = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/app/\"\n\n\
         [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nreload = {reload:?}\n\n\
         [[templates]]\nsource = \"b.j2\"\ndestination = \"b.conf\"\nreload = {reload:?}\n",
        etcd.url()
    );
    let test = Test::new()
        .file("a.j2", "a={{ key('a') }}\n")
        .file("b.j2", "b={{ key('b') }}\n")
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml"]);
    let lock = test.path("lock");
    let mut run = test.spawn();
    // The first batch renders both and runs the shared command once.
    run.wait_file("started", "x\n");
    run.wait_for("the first reload to end", |_| {
        (!lock.exists()).then_some(())
    });
    etcd.put("/app/a", "2");
    // a's reload is running (it holds `lock` for a second): b's change
    // starts a batch of its own meanwhile.
    run.wait_file("started", "x\nx\n");
    etcd.put("/app/b", "2");
    run.wait_file("b.conf", "b=2\n");
    run.wait_file("started", "x\nx\nx\n");
    assert_eq!(run.file("overlaps"), None, "a reload ran beside another");
}
