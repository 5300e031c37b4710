//! `on_reload_failure = "restore"`: a reload that fails on the new files
//! puts the previous ones back and runs again on them. The reload is a real
//! script that fails only when a file holds `bad`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Running, Test, status_get as get};

/// Logs each run to `reloads`, prints the files it reloads onto (as
/// `nginx -t` prints a bad line: values, for the log only) and fails when
/// one holds `bad`. A missing file is no failure.
const RELOAD: &str = "echo run >> reloads\n\
    for f in a.conf b.conf out.conf; do\n\
      [ -f \"$f\" ] || continue\n\
      if grep -q bad \"$f\"; then echo \"rejected $f: $(cat \"$f\")\" >&2; exit 1; fi\n\
    done\n";

fn config(templates: &str, top: &str) -> String {
    format!("{top}\n[sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n{templates}")
}

fn template(dest: &str, extra: &str) -> String {
    format!(
        "[[templates]]\nsource = \"{dest}.j2\"\ndestination = \"{dest}\"\n\
         reload = \"sh reload.sh\"\n{extra}\n"
    )
}

fn runs(out: &crate::support::Output) -> usize {
    std::fs::read_to_string(out.dir.join("reloads"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_reload_that_fails_on_the_new_file_restores_the_old_one_and_reloads_again() {
    let out = Test::new()
        .file("reload.sh", RELOAD)
        .file("out.conf.j2", "value {{ key('v') }}\n")
        .file("d.json", r#"{"v": "bad"}"#)
        .file("out.conf", "value good\n")
        .mode("out.conf", 0o600)
        .file(
            "stencil.toml",
            config(
                &template(
                    "out.conf",
                    "mode = \"0644\"\non_reload_failure = \"restore\"",
                ),
                "",
            ),
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .file_is("out.conf", "value good\n")
        .stderr_has("reload command `sh reload.sh` failed on the new out.conf (from ")
        .stderr_has("first run, on the new file: reload command")
        .stderr_has("failed (exit status 1)")
        .stderr_has("rejected out.conf: value bad")
        .stderr_has("the previous file was restored and the reload ran again on it: it succeeded")
        .no_staged_files(".");
    assert_eq!(runs(&out), 2, "{}", out.stderr);
    let mode = std::fs::metadata(out.dir.join("out.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "the previous mode is restored");
}

#[test]
fn keep_is_the_default_and_leaves_the_new_file() {
    let out = Test::new()
        .file("reload.sh", RELOAD)
        .file("out.conf.j2", "value {{ key('v') }}\n")
        .file("d.json", r#"{"v": "bad"}"#)
        .file("out.conf", "value good\n")
        .file("stencil.toml", config(&template("out.conf", ""), ""))
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .file_is("out.conf", "value bad\n")
        .stderr_has("reload command `sh reload.sh` failed (exit status 1)")
        .stderr_lacks("restored");
    assert_eq!(runs(&out), 1);
}

#[test]
fn when_the_second_reload_fails_too_both_failures_are_reported_and_the_restored_file_stays() {
    let out = Test::new()
        .file("out.conf.j2", "value {{ key('v') }}\n")
        .file("d.json", r#"{"v": "new"}"#)
        .file("out.conf", "value old\n")
        .file(
            "stencil.toml",
            "on_reload_failure = \"restore\"\n\
             [sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [[templates]]\nsource = \"out.conf.j2\"\ndestination = \"out.conf\"\n\
             reload = \"echo run >> reloads; echo service is down >&2; exit 3\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .file_is("out.conf", "value old\n")
        .stderr_has("and again after the previous file was restored; the restored file was kept")
        .stderr_has("first run, on the new file: reload command")
        .stderr_has("second run, on the restored file: reload command")
        .stderr_has("exit status 3")
        .stderr_has("service is down");
    assert_eq!(runs(&out), 2);
}

#[test]
fn templates_sharing_a_reload_are_restored_together_and_reloaded_once() {
    // The top-level default applies to both; c.conf keeps its new file.
    let templates = [
        template("a.conf", ""),
        template("b.conf", ""),
        template("c.conf", "on_reload_failure = \"keep\""),
    ]
    .concat();
    let out = Test::new()
        .file("reload.sh", RELOAD)
        .file("a.conf.j2", "a {{ key('a') }}\n")
        .file("b.conf.j2", "b {{ key('b') }}\n")
        .file("c.conf.j2", "c {{ key('c') }}\n")
        .file("d.json", r#"{"a": "bad", "b": "new", "c": "new"}"#)
        .file("a.conf", "a old\n")
        .file("b.conf", "b old\n")
        .file("c.conf", "c old\n")
        .file(
            "stencil.toml",
            config(&templates, "on_reload_failure = \"restore\""),
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .file_is("a.conf", "a old\n")
        .file_is("b.conf", "b old\n")
        .file_is("c.conf", "c new\n")
        .stderr_has("the previous files were restored")
        .stderr_has("a.conf (from ")
        .stderr_has("b.conf (from ");
    assert_eq!(runs(&out), 2, "{}", out.stderr);
}

#[test]
fn a_large_batch_restores_every_file_its_shared_reload_rejected() {
    // Forty templates (a batch that installs on several threads), each
    // replacing an old file; the shared reload fails because one of them
    // holds `bad`: every restorable file is put back, the one with
    // `keep` stays new, and the reload runs twice in all.
    let mut t = Test::new().file(
        "reload.sh",
        RELOAD.replace("a.conf b.conf out.conf", "*.conf"),
    );
    let mut templates = String::new();
    let mut data = Vec::new();
    for i in 0..40 {
        let name = format!("t{i:02}.conf");
        let extra = if i == 39 {
            "on_reload_failure = \"keep\""
        } else {
            ""
        };
        templates += &template(&name, extra);
        t = t
            .file(&format!("{name}.j2"), format!("{{{{ key('v{i}') }}}}\n"))
            .file(&name, "old\n");
        let value = if i == 17 { "bad" } else { "new" };
        data.push(format!("\"v{i}\": \"{value}\""));
    }
    let out = t
        .file("d.json", format!("{{{}}}", data.join(", ")))
        .file(
            "stencil.toml",
            config(&templates, "on_reload_failure = \"restore\""),
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .file_is("t00.conf", "old\n")
        .file_is("t17.conf", "old\n")
        .file_is("t38.conf", "old\n")
        .file_is("t39.conf", "new\n")
        .stderr_has("the previous files were restored");
    assert_eq!(runs(&out), 2, "{}", out.stderr);
}

#[test]
fn a_file_that_did_not_exist_before_is_removed() {
    let out = Test::new()
        .file("reload.sh", RELOAD)
        .file("out.conf.j2", "value {{ key('v') }}\n")
        .file("d.json", r#"{"v": "bad"}"#)
        .file(
            "stencil.toml",
            config(&template("out.conf", ""), "on_reload_failure = \"restore\""),
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .no_file("out.conf")
        .stderr_has("the reload ran again on it: it succeeded")
        .no_staged_files(".");
    assert_eq!(runs(&out), 2);
}

#[test]
fn an_unknown_value_names_the_file_and_line() {
    Test::new()
        .file("a.j2", "x\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n\
             on_reload_failure = \"rollback\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(2)
        .stderr_has("stencil.toml")
        .stderr_has("line 4")
        .stderr_has("`keep`");
}

fn out_status(addr: SocketAddr) -> Option<serde_json::Value> {
    let body = get(addr, "/status")?.1;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(status["templates"]["out.conf"].clone())
}

fn reload_runs(run: &Running) -> usize {
    run.file("reloads").unwrap_or_default().lines().count()
}

/// Replaces `rel` by rename, so the watch sees the whole new content once.
fn replace(t: &Test, rel: &str, content: &str) {
    let tmp = t.path(&format!("{rel}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, t.path(rel)).unwrap();
}

fn sha256_hex(content: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn watch_restores_reports_the_rejected_content_and_does_not_retry_it() {
    let t = Test::new()
        .file("reload.sh", RELOAD)
        .file("out.conf.j2", "value {{ key('v') }} pw={{ key('pw') }}\n")
        .file(
            "d.json",
            r#"{"v": "good", "pw": "s3cret-in-reload-output"}"#,
        )
        .file(
            "stencil.toml",
            config(&template("out.conf", "on_reload_failure = \"restore\""), ""),
        )
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    let good = "value good pw=s3cret-in-reload-output\n";
    run.wait_file("out.conf", good);
    run.wait_for("ready", |_| (get(addr, "/readyz")?.0 == 200).then_some(()));
    assert_eq!(reload_runs(&run), 1);

    // Bad data: installed, rejected by the reload, restored, reloaded.
    replace(
        &t,
        "d.json",
        r#"{"v": "bad", "pw": "s3cret-in-reload-output"}"#,
    );
    let bad = "value bad pw=s3cret-in-reload-output\n";
    let status = run.wait_for("the restore to show in /status", |_| {
        let s = out_status(addr)?;
        (s["state"] == "failed").then_some(s)
    });
    assert_eq!(run.file("out.conf").as_deref(), Some(good));
    assert_eq!(reload_runs(&run), 3, "{}", run.stderr());
    assert_eq!(status["rejected_sha256"], sha256_hex(bad).as_str());
    let detail = status["detail"].as_str().unwrap();
    assert!(detail.contains("previous file was restored"), "{detail}");
    let (code, readyz) = get(addr, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(readyz.contains("restored"), "{readyz}");
    let status_body = get(addr, "/status").unwrap().1;
    for body in [&readyz, &status_body] {
        assert!(!body.contains("s3cret"), "{body}");
    }
    // The output is the operator's, in the log.
    assert!(run.stderr().contains("rejected out.conf: value bad"));

    // A data change that renders the same content: not installed again.
    replace(
        &t,
        "d.json",
        r#"{"v": "bad", "pw": "s3cret-in-reload-output", "other": 1}"#,
    );
    run.wait_for("the same content to be refused", |r| {
        r.stderr()
            .contains("renders the content its reload rejected")
            .then_some(())
    });
    assert_eq!(run.file("out.conf").as_deref(), Some(good));
    assert_eq!(reload_runs(&run), 3, "no reload loop");

    // A good change installs normally.
    replace(
        &t,
        "d.json",
        r#"{"v": "fixed", "pw": "s3cret-in-reload-output"}"#,
    );
    run.wait_file("out.conf", "value fixed pw=s3cret-in-reload-output\n");
    run.wait_for("ready again", |_| {
        (get(addr, "/readyz")?.0 == 200).then_some(())
    });
    assert_eq!(reload_runs(&run), 4);
    assert!(out_status(addr).unwrap()["rejected_sha256"].is_null());
}

#[test]
fn a_reload_that_times_out_restores_the_previous_owner_too() {
    // The tests run as root (as CI does), so ownership can be given away.
    use std::os::unix::fs::MetadataExt;
    let t = Test::new()
        .file("out.conf.j2", "value {{ key('v') }}\n")
        .file("d.json", r#"{"v": "bad"}"#)
        .file("out.conf", "value old\n")
        .file(
            "stencil.toml",
            "[sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [[templates]]\nsource = \"out.conf.j2\"\ndestination = \"out.conf\"\n\
             owner = \"0\"\ngroup = \"0\"\ncommand_timeout = \"300ms\"\n\
             on_reload_failure = \"restore\"\n\
             reload = \"echo run >> reloads; if grep -q bad out.conf; then sleep 30; fi\"\n",
        )
        .args(["render", "-c", "stencil.toml"]);
    nix::unistd::chown(
        &t.path("out.conf"),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let out = t
        .run()
        .code(1)
        .file_is("out.conf", "value old\n")
        .stderr_has("timed out after 300ms")
        .stderr_has("the reload ran again on it: it succeeded");
    assert_eq!(runs(&out), 2);
    let meta = std::fs::metadata(out.dir.join("out.conf")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}

#[test]
fn watch_retries_a_template_restored_with_another_once_their_reload_succeeds() {
    let templates = [template("a.conf", ""), template("b.conf", "")].concat();
    let t = Test::new()
        .file("reload.sh", RELOAD)
        .file("a.conf.j2", "a {{ key('a') }}\n")
        .file("b.conf.j2", "b {{ key('b') }}\n")
        .file("d.json", r#"{"a": "old", "b": "old"}"#)
        .file(
            "stencil.toml",
            config(&templates, "on_reload_failure = \"restore\""),
        )
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_for("ready", |_| (get(addr, "/readyz")?.0 == 200).then_some(()));

    // a breaks the service; b, restored with it, was innocent.
    replace(&t, "d.json", r#"{"a": "bad", "b": "new"}"#);
    run.wait_for("both to be restored", |r| {
        r.stderr()
            .contains("the previous files were restored")
            .then_some(())
    });
    assert_eq!(run.file("a.conf").as_deref(), Some("a old\n"));
    assert_eq!(run.file("b.conf").as_deref(), Some("b old\n"));

    // a is fixed; b renders what was rejected with a, installed once the
    // reload succeeds again.
    replace(&t, "d.json", r#"{"a": "fixed", "b": "new"}"#);
    run.wait_file("a.conf", "a fixed\n");
    run.wait_file("b.conf", "b new\n");
    run.wait_for("ready again", |_| {
        (get(addr, "/readyz")?.0 == 200).then_some(())
    });
}

#[test]
fn a_restore_that_cannot_write_says_so_and_keeps_the_reloads_output() {
    // The reload makes the directory read-only, so the restore cannot stage
    // the previous file; stencil runs unprivileged for the refusal to be
    // real.
    let t = Test::new()
        .unprivileged()
        .file("out.j2", "value {{ key('v') }}\n")
        .file("d.json", r#"{"v": "bad"}"#)
        .file("etc/out.conf", "value old\n")
        .file(
            "stencil.toml",
            "on_reload_failure = \"restore\"\n\
             [sources.d]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [[templates]]\nsource = \"out.j2\"\ndestination = \"etc/out.conf\"\n\
             reload = \"chmod 555 etc; echo refused by the service >&2; exit 1\"\n",
        );
    for path in ["etc", "etc/out.conf"] {
        let uid = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&t.path(path), uid, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    }
    t.args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .file_is("etc/out.conf", "value bad\n")
        .stderr_has("could not be restored after the reload failed on the new one (below): the new file stays")
        .stderr_has("refused by the service")
        .stderr_lacks("second run");
}
