//! `stencil watch`: the sidecar, driven as a real process against real
//! files and a real etcd. Every wait is a poll with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::etcd::Etcd;
use crate::support::{Running, SERVING, Test, status_get as get};

fn status_json(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/status").expect("status server").1).unwrap()
}

fn renders(addr: SocketAddr, template: &str) -> u64 {
    status_json(addr)["templates"][template]["renders"]
        .as_u64()
        .unwrap_or_else(|| panic!("no template {template} in /status"))
}

fn wait_ready(run: &mut Running, addr: SocketAddr) {
    run.wait_for("/readyz to answer 200", |_| {
        (get(addr, "/readyz")?.0 == 200).then_some(())
    });
}

/// Replaces `rel` in `t`'s directory by rename, as editors and deploy
/// tools do: the watch sees one event, with the whole new content.
fn replace(t: &Test, rel: &str, content: impl AsRef<[u8]>) {
    let tmp = t.path(&format!("{rel}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, t.path(rel)).unwrap();
}

#[test]
fn once_renders_everything_and_exits() {
    Test::new()
        .file("a.j2", "{{ key('x') }} {{ env.E }}\n")
        .file("d.json", r#"{"x": "1"}"#)
        .env("E", "e")
        .args([
            "watch",
            "--once",
            "--data",
            "d.json",
            "-t",
            "a.j2:out.conf:touch reloaded",
        ])
        .run()
        .success()
        .file_is("out.conf", "1 e\n")
        .file_is("reloaded", "");
}

#[test]
fn once_waits_for_a_missing_key_in_a_data_file() {
    let t = Test::new()
        .file("a.j2", "{{ key('late') }}\n")
        .file("d.json", r#"{"early": "1"}"#)
        .args(["watch", "--once", "--data", "d.json", "-t", "a.j2:out.conf"]);
    let mut run = t.spawn();
    run.wait_for("the pending log line", |r| {
        r.stderr()
            .contains("waiting for key \"late\"")
            .then_some(())
    });
    assert!(run.file("out.conf").is_none());
    std::fs::write(t.path("d.json"), r#"{"early": "1", "late": "here"}"#).unwrap();
    assert_eq!(
        run.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        run.stderr()
    );
    assert_eq!(run.file("out.conf").as_deref(), Some("here\n"));
}

#[test]
fn once_fails_for_what_waiting_cannot_fix() {
    Test::new()
        .file("a.j2", "x\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\ncheck = \"false\"\n",
        )
        .args(["watch", "--once", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has("check command `false` failed")
        .no_file("out.conf");
}

#[test]
fn once_does_not_wait_for_an_environment_variable() {
    // The environment is read once: an unset variable never appears, so
    // waiting for it would hang a provisioning script forever.
    Test::new()
        .file("a.j2", "{{ key_or('x', '') }}{{ env.NOT_SET }}\n")
        .file("d.json", "{}")
        .args(["watch", "--once", "--data", "d.json", "-t", "a.j2:out.conf"])
        .run()
        .code(1)
        .stderr_has("environment variable \"NOT_SET\" is not set");
}

#[test]
fn data_file_and_template_edits_re_render_and_a_bad_edit_keeps_the_last_good_file() {
    let t = Test::new()
        .file("a.j2", "port {{ key('port') }}\n")
        .file("d.yaml", "port: 80\n")
        .args([
            "watch",
            "--listen",
            "127.0.0.1:0",
            "--data",
            "d.yaml",
            "-t",
            "a.j2:out.conf",
        ]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_file("out.conf", "port 80\n");
    wait_ready(&mut run, addr);

    replace(&t, "d.yaml", "port: 8080\n");
    run.wait_file("out.conf", "port 8080\n");

    // A malformed data file: the output stays, the template is reported.
    std::fs::write(t.path("d.yaml"), "port: [unclosed\n").unwrap();
    run.wait_for("the failure to be reported", |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains("d.yaml")).then_some(())
    });
    assert_eq!(run.file("out.conf").as_deref(), Some("port 8080\n"));

    // Fixed data and an edited template are both picked up.
    std::fs::write(t.path("d.yaml"), "port: 9090\n").unwrap();
    run.wait_file("out.conf", "port 9090\n");
    std::fs::write(t.path("a.j2"), "listen {{ key('port') }}\n").unwrap();
    run.wait_file("out.conf", "listen 9090\n");
    wait_ready(&mut run, addr);
}

fn etcd_config(etcd: &Etcd, templates: &str) -> String {
    format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/app/\"\n\n{templates}",
        etcd.url()
    )
}

const TWO_TEMPLATES: &str = r#"
[[templates]]
source = "a.j2"
destination = "a.conf"
reload = "echo a >> reloads"

[[templates]]
source = "b.j2"
destination = "b.conf"
"#;

/// `stencil watch --listen` of a.j2 (reads key `a`) and b.j2 (`b_template`)
/// on `etcd`, through [`TWO_TEMPLATES`]; the status address with it.
fn watch_two(etcd: &Etcd, b_template: &str) -> (Running, SocketAddr) {
    let mut run = Test::new()
        .file("a.j2", "a={{ key('a') }}\n")
        .file("b.j2", b_template)
        .file("stencil.toml", etcd_config(etcd, TWO_TEMPLATES))
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    (run, addr)
}

#[test]
fn a_key_change_re_renders_only_the_templates_that_read_it() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    etcd.put("/app/pool/x", "10.0.0.1");
    let (mut run, addr) = watch_two(
        &etcd,
        "b={{ key('b') }}{% for n in ls('pool') %} {{ key('pool/' ~ n) }}{% endfor %}\n\n",
    );
    run.wait_file("a.conf", "a=1\n");
    run.wait_file("b.conf", "b=1 10.0.0.1\n");
    wait_ready(&mut run, addr);
    let (a0, b0) = (renders(addr, "a.conf"), renders(addr, "b.conf"));

    etcd.put("/app/a", "2");
    run.wait_file("a.conf", "a=2\n");
    run.wait_for("the render to be counted", |_| {
        (renders(addr, "a.conf") == a0 + 1).then_some(())
    });
    assert_eq!(renders(addr, "b.conf"), b0, "b.conf does not read /app/a");
    run.wait_file("reloads", "a\na\n");

    // A new key under a prefix b.conf lists is a change for b.conf alone.
    etcd.put("/app/pool/y", "10.0.0.2");
    run.wait_file("b.conf", "b=1 10.0.0.1 10.0.0.2\n");
    run.wait_for("the render to be counted", |_| {
        (renders(addr, "b.conf") == b0 + 1).then_some(())
    });
    assert_eq!(renders(addr, "a.conf"), a0 + 1);
}

#[test]
fn a_missing_key_keeps_the_template_pending_until_it_appears() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "1");
    let (mut run, addr) = watch_two(&etcd, "b={{ key('b') }}\n");
    run.wait_file("a.conf", "a=1\n");
    run.wait_for("/readyz to say b.conf is pending", |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains("b.conf is pending") && body.contains("key \\\"b\\\""))
            .then_some(())
    });
    run.wait_for("the pending log line", |r| {
        r.stderr().contains("waiting for key \"b\"").then_some(())
    });

    etcd.put("/app/b", "here");
    run.wait_file("b.conf", "b=here\n");
    wait_ready(&mut run, addr);
}

#[test]
fn an_etcd_outage_keeps_the_files_and_applies_changes_made_meanwhile() {
    let mut etcd = Etcd::start();
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    let (mut run, addr) = watch_two(&etcd, "b={{ key('b') }}\n");
    run.wait_file("a.conf", "a=1\n");
    wait_ready(&mut run, addr);

    etcd.stop();
    run.wait_for("the source to be reported down", |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains("source \\\"kv\\\" is failing")).then_some(())
    });
    assert_eq!(run.file("a.conf").as_deref(), Some("a=1\n"));

    // Changed as soon as etcd is back, before stencil reconnects.
    etcd.restart();
    etcd.put("/app/a", "2");
    etcd.put("/app/b", "2");
    run.wait_file("a.conf", "a=2\n");
    run.wait_file("b.conf", "b=2\n");
    wait_ready(&mut run, addr);
    let metrics = get(addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("stencil_source_reconnects_total{source=\"kv\",kind=\"etcd\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sighup_reloads_the_config_and_sigterm_exits_0() {
    let t = Test::new()
        .file("a.j2", "a\n")
        .file("b.j2", "b\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n",
        )
        .args(["watch", "-c", "stencil.toml"]);
    let mut run = t.spawn();
    run.wait_file("a.conf", "a\n");
    // Written in place, so the change is not seen as a config file edit
    // before the signal... either way the new template must appear.
    std::fs::write(
        t.path("stencil.toml"),
        "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n\n[[templates]]\nsource = \"b.j2\"\ndestination = \"b.conf\"\n",
    )
    .unwrap();
    run.signal(Signal::SIGHUP);
    run.wait_file("b.conf", "b\n");
    run.signal(Signal::SIGTERM);
    assert_eq!(
        run.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        run.stderr()
    );
}

/// One template, a.j2 to a.conf, after `head` (top-level keys, tables).
fn one_template(head: &str) -> String {
    format!("{head}\n[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n")
}

#[test]
fn sighup_moves_the_endpoints_to_a_changed_listen_address() {
    let t = Test::new()
        .file("a.j2", "a\n")
        .file(
            "stencil.toml",
            one_template("[listen]\naddress = \"127.0.0.1:0\""),
        )
        .args(["watch", "-c", "stencil.toml"]);
    let mut run = t.spawn();
    let old = run.serving_on(1);
    wait_ready(&mut run, old);

    // Another loopback address, so the port can stay 0 and the kernel's.
    replace(
        &t,
        "stencil.toml",
        one_template("[listen]\naddress = \"127.0.0.2:0\""),
    );
    run.signal(Signal::SIGHUP);
    let new = run.serving_on(2);
    assert_eq!(new.ip().to_string(), "127.0.0.2");
    assert_eq!(get(new, "/healthz"), Some((200, "ok\n".to_string())));
    run.wait_for("the old address to be closed", |_| {
        let refused = std::net::TcpStream::connect(old)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        refused.then_some(())
    });
}

#[test]
fn a_reload_whose_listen_address_is_taken_keeps_the_running_config() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let t = Test::new()
        .file("a.j2", "a\n")
        .file("b.j2", "b\n")
        .file(
            "stencil.toml",
            one_template("[listen]\naddress = \"127.0.0.1:0\""),
        )
        .args(["watch", "-c", "stencil.toml"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    wait_ready(&mut run, addr);
    let head = format!("[listen]\naddress = \"{}\"", taken.local_addr().unwrap());
    replace(
        &t,
        "stencil.toml",
        one_template(&head) + "\n[[templates]]\nsource = \"b.j2\"\ndestination = \"b.conf\"\n",
    );
    run.wait_for("the reload to be refused", |r| {
        let stderr = r.stderr();
        (stderr.contains("keeping the running one") && stderr.contains("cannot listen on"))
            .then_some(())
    });
    let status = status_json(addr);
    assert!(status["templates"]["b.conf"].is_null(), "{status}");
    assert_eq!(status["templates"]["a.conf"]["state"], "ok");
}

#[test]
fn a_listen_flag_wins_over_a_listen_address_a_reload_brings() {
    let t = Test::new()
        .file("a.j2", "a\n")
        .file("stencil.toml", one_template(""))
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    replace(
        &t,
        "stencil.toml",
        one_template("[listen]\naddress = \"127.0.0.2:0\""),
    );
    run.signal(Signal::SIGHUP);
    // A move is logged before the reload is.
    run.wait_for("the reload", |r| {
        r.stderr().contains("configuration reloaded").then_some(())
    });
    let stderr = run.stderr();
    assert_eq!(stderr.matches(SERVING).count(), 1, "{stderr}");
    assert_eq!(get(addr, "/healthz"), Some((200, "ok\n".to_string())));
}

#[test]
fn a_reload_applies_the_new_top_level_wait_to_the_next_change() {
    let t = Test::new()
        .file("a.j2", "one\n")
        .file("stencil.toml", one_template(""))
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "one\n");
    // Without a wait, an edit is rendered...
    replace(&t, "a.j2", "two\n");
    run.wait_file("a.conf", "two\n");

    // ...with the reloaded hour, the same edit waits. No sleep can show
    // that a file is not written; /status shows when it will be instead.
    replace(&t, "stencil.toml", one_template("wait = { min = \"1h\" }"));
    run.wait_for("the reload", |r| {
        r.stderr().contains("configuration reloaded").then_some(())
    });
    // The reload renders everything at once, reading a.j2 then: the edit
    // must come after that render, the first of the counters the reload
    // starts over (they were 2 before it).
    run.wait_for("the render after the reload", |_| {
        (renders(addr, "a.conf") == 1).then_some(())
    });
    replace(&t, "a.j2", "three\n");
    let in_half_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 1800.0;
    run.wait_for("the edit to wait out the new wait", |_| {
        let due = status_json(addr)["templates"]["a.conf"]["next_render_unix"].as_f64();
        due.filter(|&due| due > in_half_an_hour)
    });
    assert_eq!(run.file("a.conf").as_deref(), Some("two\n"));
}

#[test]
fn health_metrics_and_status_endpoints() {
    let t = Test::new().file("a.j2", "x\n").args([
        "watch",
        "--listen",
        "127.0.0.1:0",
        "-t",
        "a.j2:a.conf",
    ]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    wait_ready(&mut run, addr);
    assert_eq!(get(addr, "/healthz").unwrap(), (200, "ok\n".to_string()));
    let metrics = get(addr, "/metrics").unwrap().1;
    for needle in [
        "# TYPE stencil_renders counter",
        "stencil_renders_total{template=\"a.conf\"} 1",
        "stencil_writes_total{template=\"a.conf\"} 1",
        "stencil_template_ready{template=\"a.conf\"} 1",
        "stencil_template_last_success_timestamp_seconds{template=\"a.conf\"}",
        "stencil_commands_total",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    let status = status_json(addr);
    assert_eq!(status["templates"]["a.conf"]["state"], "ok");
    run.signal(Signal::SIGINT);
    assert_eq!(run.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn secrets_and_passwords_never_reach_the_logs() {
    let etcd = Etcd::start();
    etcd.put("/app/db/password", "s3cret-value-8f2a");
    etcd.enable_auth("root-pw-11", "app", "user-pw-4b7e", "/app/");
    let t = Test::new()
        .file("a.j2", "password={{ key('db/password') }}\n{{ nope }}\n")
        .file("ok.j2", "password={{ key('db/password') }}\n")
        .file("pw", "user-pw-4b7e")
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/app/\"\nusername = \"app\"\npassword_file = \"pw\"\n\n\
                 [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n\n[[templates]]\nsource = \"ok.j2\"\ndestination = \"ok.conf\"\n",
                etcd.url()
            ),
        )
        .args(["--log-level", "trace", "watch", "-c", "stencil.toml"]);
    let mut run = t.spawn();
    run.wait_file("ok.conf", "password=s3cret-value-8f2a\n");
    run.wait_for("the failing template's error", |r| {
        r.stderr().contains("nope").then_some(())
    });
    let stderr = run.stderr();
    assert!(!stderr.contains("s3cret-value-8f2a"), "{stderr}");
    assert!(!stderr.contains("user-pw-4b7e"), "{stderr}");
}

#[test]
fn a_failed_checks_output_stays_out_of_the_endpoints() {
    // The check prints the staged file, as `nginx -t` prints a bad line:
    // its output holds values, for the operator's log only.
    let t = Test::new()
        .file("a.j2", "password={{ key('pw') }}\n")
        .file("d.json", r#"{"pw": "s3cret-value-in-check-output"}"#)
        .file(
            "stencil.toml",
            "[sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n\
             check = \"cat {{ staged }}; false\"\n",
        )
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    let readyz = run.wait_for("the failed check to be reported", |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains("check command")).then_some(body)
    });
    let status = get(addr, "/status").unwrap().1;
    for body in [&readyz, &status] {
        assert!(body.contains("failed (exit status 1)"), "{body}");
        assert!(!body.contains("s3cret-value"), "{body}");
    }
}

#[test]
fn deps_shows_live_etcd_reads() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "1");
    etcd.put("/app/pool/x", "1");
    Test::new()
        .file("a.j2", "{{ key('a') }}{{ key_or('gone', '') }}{% for n in ls('pool') %}{% endfor %}")
        .file("stencil.toml", etcd_config(&etcd, "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n"))
        .args(["deps", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("a.j2 -> a.conf\n  key     kv:a\n  key     kv:gone  (missing)\n  prefix  kv:pool/\n  file    a.j2\n");
}

/// An app that records its PID and every SIGHUP it gets, and runs until
/// TERM.
const APP: &str = r#"trap 'echo HUP >> signals' HUP
trap 'exit 0' TERM
echo $$ >> pids
while :; do sleep 0.05; done
"#;

#[test]
fn exec_watch_sends_the_reload_signal_on_a_change_without_restarting_the_app() {
    let t = Test::new()
        .file("a.j2", "v={{ key('v') }}\n")
        .file("d.json", r#"{"v": "1"}"#)
        .file("app.sh", APP)
        .args([
            "exec",
            "--watch",
            "--data",
            "d.json",
            "-t",
            "a.j2:a.conf",
            "--",
            "sh",
            "app.sh",
        ]);
    let mut run = t.spawn();
    run.wait_file("a.conf", "v=1\n");
    run.wait_for("the app to start", |r| {
        r.file("pids").filter(|p| p.lines().count() == 1)
    });
    assert!(run.file("signals").is_none(), "no reload before any change");

    std::fs::write(t.path("d.json"), r#"{"v": "2"}"#).unwrap();
    run.wait_file("a.conf", "v=2\n");
    run.wait_file("signals", "HUP\n");
    assert_eq!(
        run.file("pids").unwrap().lines().count(),
        1,
        "the app was restarted"
    );

    // TERM goes to the app; stencil exits with its status.
    run.signal(Signal::SIGTERM);
    assert_eq!(
        run.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        run.stderr()
    );
}

#[test]
fn exec_watch_restart_on_change_starts_a_new_app() {
    let t = Test::new()
        .file("a.j2", "v={{ key('v') }}\n")
        .file("d.json", r#"{"v": "1"}"#)
        .file("app.sh", APP)
        .args([
            "exec",
            "--watch",
            "--restart-on-change",
            "--data",
            "d.json",
            "-t",
            "a.j2:a.conf",
            "--",
            "sh",
            "app.sh",
        ]);
    let mut run = t.spawn();
    run.wait_for("the app to start", |r| {
        r.file("pids").filter(|p| p.lines().count() == 1)
    });
    std::fs::write(t.path("d.json"), r#"{"v": "2"}"#).unwrap();
    run.wait_file("a.conf", "v=2\n");
    let pids = run.wait_for("a second app", |r| {
        r.file("pids").filter(|p| p.lines().count() == 2)
    });
    let pids: Vec<&str> = pids.lines().collect();
    assert_ne!(pids[0], pids[1]);
    run.signal(Signal::SIGTERM);
    assert_eq!(
        run.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        run.stderr()
    );
}

#[test]
fn exec_watch_exits_with_the_apps_status() {
    let t = Test::new().file("a.j2", "x\n").args([
        "exec",
        "--watch",
        "-t",
        "a.j2:a.conf",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    let mut run = t.spawn();
    assert_eq!(
        run.wait_exit(Duration::from_secs(30)),
        7,
        "{}",
        run.stderr()
    );
}

#[test]
fn an_edited_include_is_picked_up_and_a_broken_template_is_reported_not_rendered() {
    let t = Test::new()
        .file("tpl/a.j2", "{% include 'part.j2' %}")
        .file("tpl/part.j2", "part one\n")
        .args([
            "watch",
            "--listen",
            "127.0.0.1:0",
            "-t",
            "tpl/a.j2:out/a.conf",
        ]);
    std::fs::create_dir_all(t.path("out")).unwrap();
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_file("out/a.conf", "part one\n");

    std::fs::write(t.path("tpl/part.j2"), "part two\n").unwrap();
    run.wait_file("out/a.conf", "part two\n");

    // A syntax error: reported, and the last good file stays (the old
    // parse is not rendered in its place).
    std::fs::write(t.path("tpl/a.j2"), "{% include 'part.j2' %}{% if %}").unwrap();
    run.wait_for("the syntax error to be reported", |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains("syntax error")).then_some(())
    });
    assert_eq!(run.file("out/a.conf").as_deref(), Some("part two\n"));

    std::fs::write(t.path("tpl/a.j2"), "fixed: {% include 'part.j2' %}").unwrap();
    run.wait_file("out/a.conf", "fixed: part two\n");
    wait_ready(&mut run, addr);
}

/// Start-up is one large batch: each reload command the templates share
/// runs once, after every one of their files is in place.
#[test]
fn a_large_start_up_batch_runs_each_shared_reload_once_after_all_its_files() {
    let mut t = Test::new();
    let mut config = String::new();
    for i in 0..100 {
        let group = format!("g{}", i % 3);
        t = t.file(&format!("t{i}.j2"), format!("{i}\n"));
        config += &format!(
            "[[templates]]\nsource = \"t{i}.j2\"\ndestination = \"{group}-{i}.conf\"\n\
             reload = \"ls {group}-*.conf | wc -l >> {group}-reloads\"\n\n"
        );
    }
    t.file("stencil.toml", config)
        .args(["watch", "--once", "-c", "stencil.toml"])
        .run()
        .success()
        .file_is("g0-reloads", "34\n")
        .file_is("g1-reloads", "33\n")
        .file_is("g2-reloads", "33\n");
}
