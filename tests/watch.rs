//! `stencil watch`: the sidecar, driven as a real process against real
//! files and a real etcd. Every wait is a poll with a deadline.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::consul::http;
use crate::support::etcd::{Etcd, free_port};
use crate::support::{Running, Test};

/// GET on the status server: (status code, body), or None while it is not
/// up yet.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http::get(&format!("http://127.0.0.1:{port}{path}"))
        .try_send()
        .ok()
        .map(|r| (r.status, r.text()))
}

fn status_json(port: u16) -> serde_json::Value {
    serde_json::from_str(&get(port, "/status").expect("status server").1).unwrap()
}

fn renders(port: u16, template: &str) -> u64 {
    status_json(port)["templates"][template]["renders"]
        .as_u64()
        .unwrap_or_else(|| panic!("no template {template} in /status"))
}

fn wait_ready(run: &mut Running, port: u16) {
    run.wait_for("/readyz to answer 200", |_| {
        (get(port, "/readyz")?.0 == 200).then_some(())
    });
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
    let port = free_port();
    let t = Test::new()
        .file("a.j2", "port {{ key('port') }}\n")
        .file("d.yaml", "port: 80\n")
        .args([
            "watch",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            "d.yaml",
            "-t",
            "a.j2:out.conf",
        ]);
    let mut run = t.spawn();
    run.wait_file("out.conf", "port 80\n");
    wait_ready(&mut run, port);

    // Editors replace files by rename; write-and-rename like they do.
    std::fs::write(t.path("d.yaml.tmp"), "port: 8080\n").unwrap();
    std::fs::rename(t.path("d.yaml.tmp"), t.path("d.yaml")).unwrap();
    run.wait_file("out.conf", "port 8080\n");

    // A malformed data file: the output stays, the template is reported.
    std::fs::write(t.path("d.yaml"), "port: [unclosed\n").unwrap();
    run.wait_for("the failure to be reported", |_| {
        let (code, body) = get(port, "/readyz")?;
        (code == 503 && body.contains("d.yaml")).then_some(())
    });
    assert_eq!(run.file("out.conf").as_deref(), Some("port 8080\n"));

    // Fixed data and an edited template are both picked up.
    std::fs::write(t.path("d.yaml"), "port: 9090\n").unwrap();
    run.wait_file("out.conf", "port 9090\n");
    std::fs::write(t.path("a.j2"), "listen {{ key('port') }}\n").unwrap();
    run.wait_file("out.conf", "listen 9090\n");
    wait_ready(&mut run, port);
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
/// on `etcd`, through [`TWO_TEMPLATES`]; the status port with it.
fn watch_two(etcd: &Etcd, b_template: &str) -> (Running, u16) {
    let port = free_port();
    let run = Test::new()
        .file("a.j2", "a={{ key('a') }}\n")
        .file("b.j2", b_template)
        .file("stencil.toml", etcd_config(etcd, TWO_TEMPLATES))
        .args([
            "watch",
            "-c",
            "stencil.toml",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .spawn();
    (run, port)
}

#[test]
fn a_key_change_re_renders_only_the_templates_that_read_it() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    etcd.put("/app/pool/x", "10.0.0.1");
    let (mut run, port) = watch_two(
        &etcd,
        "b={{ key('b') }}{% for n in ls('pool') %} {{ key('pool/' ~ n) }}{% endfor %}\n\n",
    );
    run.wait_file("a.conf", "a=1\n");
    run.wait_file("b.conf", "b=1 10.0.0.1\n");
    wait_ready(&mut run, port);
    let (a0, b0) = (renders(port, "a.conf"), renders(port, "b.conf"));

    etcd.put("/app/a", "2");
    run.wait_file("a.conf", "a=2\n");
    run.wait_for("the render to be counted", |_| {
        (renders(port, "a.conf") == a0 + 1).then_some(())
    });
    assert_eq!(renders(port, "b.conf"), b0, "b.conf does not read /app/a");
    run.wait_file("reloads", "a\na\n");

    // A new key under a prefix b.conf lists is a change for b.conf alone.
    etcd.put("/app/pool/y", "10.0.0.2");
    run.wait_file("b.conf", "b=1 10.0.0.1 10.0.0.2\n");
    run.wait_for("the render to be counted", |_| {
        (renders(port, "b.conf") == b0 + 1).then_some(())
    });
    assert_eq!(renders(port, "a.conf"), a0 + 1);
}

#[test]
fn a_missing_key_keeps_the_template_pending_until_it_appears() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "1");
    let (mut run, port) = watch_two(&etcd, "b={{ key('b') }}\n");
    run.wait_file("a.conf", "a=1\n");
    run.wait_for("/readyz to say b.conf is pending", |_| {
        let (code, body) = get(port, "/readyz")?;
        (code == 503 && body.contains("b.conf is pending") && body.contains("key \\\"b\\\""))
            .then_some(())
    });
    run.wait_for("the pending log line", |r| {
        r.stderr().contains("waiting for key \"b\"").then_some(())
    });

    etcd.put("/app/b", "here");
    run.wait_file("b.conf", "b=here\n");
    wait_ready(&mut run, port);
}

#[test]
fn an_etcd_outage_keeps_the_files_and_applies_changes_made_meanwhile() {
    let mut etcd = Etcd::start();
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    let (mut run, port) = watch_two(&etcd, "b={{ key('b') }}\n");
    run.wait_file("a.conf", "a=1\n");
    wait_ready(&mut run, port);

    etcd.stop();
    run.wait_for("the source to be reported down", |_| {
        let (code, body) = get(port, "/readyz")?;
        (code == 503 && body.contains("source \\\"kv\\\" is failing")).then_some(())
    });
    assert_eq!(run.file("a.conf").as_deref(), Some("a=1\n"));

    // Changed as soon as etcd is back, before stencil reconnects.
    etcd.restart();
    etcd.put("/app/a", "2");
    etcd.put("/app/b", "2");
    run.wait_file("a.conf", "a=2\n");
    run.wait_file("b.conf", "b=2\n");
    wait_ready(&mut run, port);
    let metrics = get(port, "/metrics").unwrap().1;
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

#[test]
fn health_metrics_and_status_endpoints() {
    let port = free_port();
    let t = Test::new().file("a.j2", "x\n").args([
        "watch",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "-t",
        "a.j2:a.conf",
    ]);
    let mut run = t.spawn();
    wait_ready(&mut run, port);
    assert_eq!(get(port, "/healthz").unwrap(), (200, "ok\n".to_string()));
    let metrics = get(port, "/metrics").unwrap().1;
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
    let status = status_json(port);
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
    let port = free_port();
    let t = Test::new()
        .file("tpl/a.j2", "{% include 'part.j2' %}")
        .file("tpl/part.j2", "part one\n")
        .args([
            "watch",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "-t",
            "tpl/a.j2:out/a.conf",
        ]);
    std::fs::create_dir_all(t.path("out")).unwrap();
    let mut run = t.spawn();
    run.wait_file("out/a.conf", "part one\n");

    std::fs::write(t.path("tpl/part.j2"), "part two\n").unwrap();
    run.wait_file("out/a.conf", "part two\n");

    // A syntax error: reported, and the last good file stays (the old
    // parse is not rendered in its place).
    std::fs::write(t.path("tpl/a.j2"), "{% include 'part.j2' %}{% if %}").unwrap();
    run.wait_for("the syntax error to be reported", |_| {
        let (code, body) = get(port, "/readyz")?;
        (code == 503 && body.contains("syntax error")).then_some(())
    });
    assert_eq!(run.file("out/a.conf").as_deref(), Some("part two\n"));

    std::fs::write(t.path("tpl/a.j2"), "fixed: {% include 'part.j2' %}").unwrap();
    run.wait_file("out/a.conf", "fixed: part two\n");
    wait_ready(&mut run, port);
}
