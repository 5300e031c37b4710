//! `stencil render`: the one-shot job.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::Test;

#[test]
fn renders_env_to_a_file() {
    Test::new()
        .file(
            "app.conf.j2",
            "host={{ env.HOST }}\nport={{ env.PORT | default('8080') }}\n",
        )
        .env("HOST", "db.internal")
        .args(["render", "-t", "app.conf.j2:app.conf"])
        .run()
        .success()
        .file_is("app.conf", "host=db.internal\nport=8080\n")
        .no_staged_files(".");
}

#[test]
fn renders_to_stdout_without_dest() {
    Test::new()
        .file("a.j2", "{% for i in range(3) %}\n{{ i }}\n{% endfor %}\n")
        .args(["render", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("0\n1\n2\n");
    Test::new()
        .file("a.j2", "x\n")
        .args(["render", "-t", "a.j2:-"])
        .run()
        .success()
        .stdout_is("x\n");
}

#[test]
fn new_files_get_mode_0644_and_configured_modes_apply() {
    let t = Test::new()
        .file("a.j2", "a\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"secret.conf\"\nmode = \"0600\"\n",
        )
        .args(["render", "-c", "stencil.toml", "-t", "a.j2:plain.conf"]);
    t.run().success();
    let mode = |p: &str| std::fs::metadata(t.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("secret.conf"), 0o600);
    assert_eq!(mode("plain.conf"), 0o644);
}

#[test]
fn unchanged_output_writes_nothing_and_runs_no_reload() {
    let t = Test::new()
        .file("a.j2", "same\n")
        .file("out.conf", "same\n")
        .mode("out.conf", 0o644)
        .args(["render", "-t", "a.j2:out.conf:echo reloaded >> reloads"]);
    let before = std::fs::metadata(t.path("out.conf")).unwrap();
    t.run().success().no_file("reloads");
    let after = std::fs::metadata(t.path("out.conf")).unwrap();
    assert_eq!(before.ino(), after.ino(), "the file was replaced");
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
}

#[test]
fn reload_runs_after_a_change() {
    Test::new()
        .file("a.j2", "new\n")
        .file("out.conf", "old\n")
        .args([
            "render",
            "-t",
            "a.j2:out.conf:cat out.conf > seen-by-reload",
        ])
        .run()
        .success()
        .file_is("out.conf", "new\n")
        // The reload sees the installed file, not the old one.
        .file_is("seen-by-reload", "new\n");
}

#[test]
fn identical_reloads_of_a_batch_run_once_after_every_file_is_installed() {
    Test::new()
        .file("a.j2", "a\n")
        .file("b.j2", "b\n")
        .file(
            "stencil.toml",
            r#"
[[templates]]
source = "a.j2"
destination = "a.conf"
reload = "cat a.conf b.conf >> reloads"

[[templates]]
source = "b.j2"
destination = "b.conf"
reload = "cat a.conf b.conf >> reloads"
"#,
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .file_is("reloads", "a\nb\n");
}

#[test]
fn a_batch_makes_its_renames_durable_before_its_reload_runs() {
    // Three files into one directory: the directory is fsynced after the
    // last rename (a crash after that keeps all three), once for the batch
    // (not once per file: the start-up of a thousand templates), and before
    // the reload command starts, so the service is never reloaded onto a
    // rename a crash could undo. scripts/test installs strace.
    let mut t = Test::new();
    let mut config = String::new();
    for name in ["a", "b", "c"] {
        t = t.file(&format!("{name}.j2"), format!("{name}\n"));
        config.push_str(&format!(
            "[[templates]]\nsource = \"{name}.j2\"\ndestination = \"out/{name}.conf\"\n\
             create_dirs = true\nreload = \"touch reloaded\"\n\n"
        ));
    }
    let t = t.file("stencil.toml", &config);
    let trace = t.path("trace");
    let out = t
        .via([
            "strace",
            "-f",
            "-qq",
            "-o",
            trace.to_str().unwrap(),
            "-e",
            "trace=openat,rename,renameat,renameat2,fsync,execve",
        ])
        .args(["render", "-c", "stencil.toml"])
        .run();
    let trace = std::fs::read_to_string(&trace).unwrap();
    out.success()
        .file_is("out/a.conf", "a\n")
        .file_is("out/c.conf", "c\n")
        .file_is("reloaded", "");
    // The calls in order, each fsync named by the path its descriptor
    // was opened on.
    let mut open: std::collections::HashMap<String, String> = Default::default();
    let mut calls = Vec::new();
    for line in trace.lines() {
        let call = line.split_whitespace().nth(1).unwrap_or_default();
        let result = line.rsplit("= ").next().unwrap_or_default().trim();
        if call.starts_with("openat(") {
            if let Some(path) = line.split('"').nth(1) {
                open.insert(result.to_string(), path.to_string());
            }
        } else if let Some(fd) = call.strip_prefix("fsync(") {
            let path = &open[fd.trim_end_matches(')')];
            if path == "out" {
                calls.push("fsync out");
            }
        } else if call.starts_with("rename") {
            calls.push("rename");
        } else if line.contains("execve(") && line.contains("touch reloaded") {
            calls.push("reload");
            break;
        }
    }
    assert_eq!(
        calls,
        ["rename", "rename", "rename", "fsync out", "reload"],
        "rename, rename, rename, directory fsync, reload:\n{trace}"
    );
}

#[test]
fn a_large_batch_keeps_each_failure_to_its_template_and_reports_in_order() {
    // Forty templates: enough for the batch to install on several
    // threads. Two fail to render: they keep their old files and are
    // reported in the config's order; the other 38 are installed before
    // the shared reload runs, once.
    let mut t = Test::new();
    let mut config = String::new();
    for i in 0..40 {
        let body = if i == 3 || i == 7 {
            format!("{{{{ env.MISSING_{i} }}}}\n")
        } else {
            format!("{i}\n")
        };
        t = t
            .file(&format!("t{i}.j2"), body)
            .file(&format!("out/t{i}.conf"), "old\n");
        config += &format!(
            "[[templates]]\nsource = \"t{i}.j2\"\ndestination = \"out/t{i}.conf\"\n\
             reload = \"cat out/*.conf | grep -vc old >> reloads\"\n\n"
        );
    }
    let out = t
        .file("stencil.toml", config)
        .args(["render", "-c", "stencil.toml"])
        .run();
    let stderr = out.stderr.clone();
    let first = stderr.find("t3.j2").expect("t3 reported");
    let second = stderr.find("t7.j2").expect("t7 reported");
    assert!(first < second, "reported in the config's order:\n{stderr}");
    out.code(1)
        .file_is("out/t0.conf", "0\n")
        .file_is("out/t3.conf", "old\n")
        .file_is("out/t7.conf", "old\n")
        .file_is("out/t39.conf", "39\n")
        .file_is("reloads", "38\n")
        .no_staged_files("out");
}

#[test]
fn reload_as_an_array_runs_without_a_shell() {
    Test::new()
        .file("a.j2", "a\n")
        .file(
            "stencil.toml",
            r#"
[[templates]]
source = "a.j2"
destination = "a.conf"
reload = ["touch", "reloaded; not a shell"]
"#,
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .file_is("reloaded; not a shell", "");
}

#[test]
fn no_reload_installs_but_runs_nothing() {
    Test::new()
        .file("a.j2", "a\n")
        .args(["render", "--no-reload", "-t", "a.j2:a.conf:touch reloaded"])
        .run()
        .success()
        .file_is("a.conf", "a\n")
        .no_file("reloaded");
}

#[test]
fn check_runs_on_the_staged_file_before_install() {
    Test::new()
        .file("a.j2", "new\n")
        .file("a.conf", "old\n")
        .file(
            "stencil.toml",
            r#"
[[templates]]
source = "a.j2"
destination = "a.conf"
check = "cp {{ staged }} checked && test {{ destination }} = a.conf && grep -q old a.conf"
"#,
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .file_is("checked", "new\n")
        .file_is("a.conf", "new\n")
        .no_staged_files(".");
}

#[test]
fn dry_run_prints_and_writes_nothing() {
    Test::new()
        .file("a.j2", "new\n")
        .file("a.conf", "old\n")
        .args(["render", "--dry-run", "-t", "a.j2:a.conf:touch reloaded"])
        .run()
        .success()
        .stdout_is("==> a.conf (mode 0644) <==\nnew\n")
        .file_is("a.conf", "old\n")
        .no_file("reloaded")
        .no_staged_files(".");
}

#[test]
fn diff_shows_a_unified_diff_and_installs() {
    let out = Test::new()
        .file("a.j2", "one\ntwo\n")
        .file("a.conf", "one\n")
        .args(["render", "--diff", "-t", "a.j2:a.conf"])
        .run()
        .success()
        .file_is("a.conf", "one\ntwo\n");
    let stdout = out.stdout_str();
    assert!(stdout.contains("--- a.conf\n+++ a.conf\n"), "{stdout}");
    assert!(stdout.contains("\n one\n+two\n"), "{stdout}");
}

#[test]
fn dry_run_with_diff_only_shows_the_diff() {
    let out = Test::new()
        .file("a.j2", "two\n")
        .args(["render", "--dry-run", "--diff", "-t", "a.j2:a.conf"])
        .run()
        .success()
        .no_file("a.conf");
    assert!(
        out.stdout_str()
            .contains("--- /dev/null\n+++ a.conf\n@@ -0,0 +1 @@\n+two\n"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn backup_keeps_the_previous_version() {
    Test::new()
        .file("a.j2", "new\n")
        .file("a.conf", "old\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nbackup = true\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .file_is("a.conf", "new\n")
        .file_is("a.conf.bak", "old\n");
}

#[test]
fn a_symlinked_destination_has_its_target_replaced() {
    let t = Test::new()
        .file("real/a.conf", "old\n")
        .file("a.j2", "new\n")
        .args(["render", "-t", "a.j2:link.conf"]);
    std::os::unix::fs::symlink("real/a.conf", t.path("link.conf")).unwrap();
    t.run()
        .success()
        .file_is("real/a.conf", "new\n")
        .no_staged_files(".")
        .no_staged_files("real");
    assert!(
        std::fs::symlink_metadata(t.path("link.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn create_dirs_creates_the_destination_directory() {
    Test::new()
        .file("a.j2", "a\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"deep/er/a.conf\"\ncreate_dirs = true\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .file_is("deep/er/a.conf", "a\n");
}

#[test]
fn stale_staged_files_from_a_crash_are_removed() {
    Test::new()
        .file("a.j2", "a\n")
        .file(".a.conf.stencil-x1Y2z3", "half a file")
        .args(["render", "-t", "a.j2:a.conf"])
        .run()
        .success()
        .no_file(".a.conf.stencil-x1Y2z3")
        .file_is("a.conf", "a\n");
}

#[test]
fn config_paths_are_relative_to_the_config_file() {
    Test::new()
        .file("etc/tpl/a.j2", "{{ key('x') }}\n")
        .file("etc/data.json", r#"{"x": "from data"}"#)
        .file(
            "etc/stencil.toml",
            r#"
[sources.d]
kind = "file"
path = "data.json"

[[templates]]
source = "tpl/a.j2"
destination = "out/a.conf"
create_dirs = true
"#,
        )
        .args(["render", "-c", "etc/stencil.toml"])
        .run()
        .success()
        .file_is("etc/out/a.conf", "from data\n");
}

#[test]
fn data_files_in_every_format_read_the_same() {
    let tpl = "{{ key('db/host') }}:{{ key('db/port') }}\n";
    for (name, text) in [
        ("d.json", r#"{"db": {"host": "h", "port": 5432}}"#),
        ("d.toml", "[db]\nhost = \"h\"\nport = 5432\n"),
        ("d.yaml", "db:\n  host: h\n  port: 5432\n"),
    ] {
        Test::new()
            .file("a.j2", tpl)
            .file(name, text)
            .args(["render", "--data", name, "-t", "a.j2"])
            .run()
            .success()
            .stdout_is("h:5432\n");
    }
    Test::new()
        .file("a.j2", "{{ key('DB_HOST') }}\n")
        .file("app.env", "# comment\nDB_HOST=h\n")
        .args(["render", "--data", "app.env", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("h\n");
}

const KV_DATA: &str = r#"{
  "upstreams": {"web1": "10.0.0.1:80", "web2": "10.0.0.2:80"},
  "db": {"primary": {"host": "p", "port": "5432"}, "replica": {"host": "r"}},
  "flag": "on"
}"#;

#[test]
fn kv_functions_read_keys_prefixes_and_trees() {
    let tpl = r#"{{ key("flag") }} {{ key_or("nope", "dflt") }} {{ key_exists("flag") }} {{ key_exists("nope") }}
{{ ls("upstreams") | join(",") }}
{% for k, v in kv("db") | items %}{{ k }}={{ v }};{% endfor %}

{{ tree("db").primary.host }} {{ tree("db").replica.host }}
{{ ls("/db/") | join(",") }}
"#;
    Test::new()
        .file("a.j2", tpl)
        .file("d.json", KV_DATA)
        .args(["render", "--data", "d.json", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("on dflt true false\nweb1,web2\nprimary/host=p;primary/port=5432;replica/host=r;\np r\nprimary,replica\n");
}

#[test]
fn confd_and_consul_template_aliases_work() {
    let tpl = r#"{{ getv("/flag") }} {{ getv("/nope", "d") }} {{ exists("/flag") }}
{% for kv in gets("/upstreams/*") %}{{ kv.Key }}={{ kv.Value }};{% endfor %}

{{ getvs("/db/*/host") | join(",") }}
{{ lsdir("/db") | join(",") }} {{ lsdir("/") | join(",") }}
{{ keyOrDefault("nope", "x") }} {{ keyExists("flag") }}
"#;
    Test::new()
        .file("a.j2", tpl)
        .file("d.json", KV_DATA)
        .args(["render", "--data", "d.json", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("on d true\n/upstreams/web1=10.0.0.1:80;/upstreams/web2=10.0.0.2:80;\np,r\nprimary,replica db,upstreams\nx true\n");
}

#[test]
fn several_sources_are_chosen_with_source_or_data() {
    Test::new()
        .file("a.j2", "{{ key('x') }} {{ key('x', source='two') }}\n")
        .file("one.json", r#"{"x": "1"}"#)
        .file("two.yaml", "x: 2\n")
        .file(
            "stencil.toml",
            r#"
[sources.one]
kind = "file"
path = "one.json"

[sources.two]
kind = "file"
path = "two.yaml"

[[templates]]
source = "a.j2"
data = "one"
"#,
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("1 2\n");
}

#[test]
fn file_source_prefix_makes_keys_relative() {
    Test::new()
        .file("a.j2", "{{ key('host') }} {{ ls() | join(',') }}\n")
        .file("d.json", r#"{"apps": {"web": {"host": "h", "port": "1"}}}"#)
        .file(
            "stencil.toml",
            "[sources.d]\nkind = \"file\"\npath = \"d.json\"\nprefix = \"apps/web/\"\n\n[[templates]]\nsource = \"a.j2\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("h host,port\n");
}

#[test]
fn filters_do_what_the_table_says() {
    let tpl = r#"{{ '{"a": [1, 2]}' | fromjson | tojson }}
{{ "a: [1, 2]" | fromyaml | tojson }}
{{ {"b": "x"} | toyaml }}{{ "hello" | b64encode }} {{ "aGVsbG8=" | b64decode }}
{{ "/etc/nginx/nginx.conf" | basename }} {{ "/etc/nginx/nginx.conf" | dirname }}
{{ "it's" | shell_quote }} {{ "plain" | shell_quote }}
{{ "x" | required("need x") }}
"#;
    Test::new()
        .file("a.j2", tpl)
        .args(["render", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("{\"a\":[1,2]}\n{\"a\":[1,2]}\nb: x\naGVsbG8= hello\nnginx.conf /etc/nginx\n\"it's\" plain\nx\n");
}

#[test]
fn required_fails_with_its_message() {
    Test::new()
        .file(
            "a.j2",
            "{{ env.X | default('') | required('X must be set') }}\n",
        )
        .args(["render", "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_has("X must be set")
        .stderr_has("a.j2:1");
}

#[test]
fn env_or_file_prefers_the_file() {
    Test::new()
        .file(
            "a.j2",
            "{{ env_or_file('DB_PASSWORD') }}|{{ env_or_file('USER') }}\n",
        )
        .file("secret", "s3cret\n")
        .env("DB_PASSWORD", "ignored")
        .env("DB_PASSWORD_FILE", "secret")
        .env("USER", "app")
        .args(["render", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("s3cret|app\n");
}

#[test]
fn file_and_include_resolve_relative_to_the_template() {
    Test::new()
        .file("tpl/a.j2", "{% include 'part.j2' %}{{ file('raw.txt') }}")
        .file("tpl/part.j2", "part {{ env.X }}\n")
        .file("tpl/raw.txt", "raw {{ not rendered }}\n")
        .env("X", "1")
        .args(["render", "-t", "tpl/a.j2"])
        .run()
        .success()
        .stdout_is("part 1\nraw {{ not rendered }}\n");
}

#[test]
fn deps_lists_what_each_template_read() {
    Test::new()
        .file("tpl/a.j2", "{% include 'part.j2' %}{{ key('flag') }}{{ key_or('nope', '') }}{% for u in ls('upstreams') %}{% endfor %}{{ env.HOME | default('') }}")
        .file("tpl/part.j2", "{{ env.X }}")
        .file("d.json", KV_DATA)
        .env("X", "1")
        .args(["deps", "--data", "d.json", "-t", "tpl/a.j2:out.conf"])
        .run()
        .success()
        .stdout_is(
            "tpl/a.j2 -> out.conf\n  env     HOME  (missing)\n  env     X\n  key     d:flag\n  key     d:nope  (missing)\n  prefix  d:upstreams/\n  file    tpl/a.j2\n  file    tpl/part.j2\n",
        );
}

#[test]
fn print_config_shows_the_merged_configuration() {
    let out = Test::new()
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nmode = \"0640\"\n",
        )
        .args([
            "render",
            "-c",
            "stencil.toml",
            "-t",
            "b.j2:b.conf",
            "--print-config",
        ])
        .run()
        .success();
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["templates"][0]["mode"], "0640");
    assert_eq!(config["templates"][1]["source"], "b.j2");
}

#[test]
fn a_failing_template_does_not_stop_the_others() {
    Test::new()
        .file("good.j2", "good\n")
        .file("bad.j2", "{{ env.MISSING }}\n")
        .file("bad.conf", "old\n")
        .args(["render", "-t", "bad.j2:bad.conf", "-t", "good.j2:good.conf"])
        .run()
        .code(1)
        .file_is("good.conf", "good\n")
        .file_is("bad.conf", "old\n");
}

#[test]
fn keeps_the_existing_files_mode_when_none_is_configured() {
    let t = Test::new()
        .file("a.j2", "new\n")
        .file("a.conf", "old\n")
        .mode("a.conf", 0o640)
        .args(["render", "-t", "a.j2:a.conf"]);
    t.run().success().file_is("a.conf", "new\n");
    let mode = std::fs::metadata(t.path("a.conf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);
}

#[test]
fn a_bind_mounted_single_file_is_written_in_place_with_a_warning() {
    // Docker and Kubernetes mount single files with a bind mount; rename(2)
    // over a mount point fails with EBUSY. A private mount namespace makes
    // the same situation here (the tests run as root, as CI does).
    let out = Test::new()
        .file("a.j2", "new\n")
        .file("mounted.conf", "old\n")
        .file("app/f.conf", "placeholder\n")
        .via([
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount --bind mounted.conf app/f.conf && exec \"$0\" \"$@\"",
        ])
        .args(["render", "-t", "a.j2:app/f.conf"])
        .run();
    out.success()
        .stderr_has("rename failed")
        .stderr_has("bind-mounted")
        .file_is("mounted.conf", "new\n")
        .no_staged_files("app");
}

#[test]
fn data_file_lists_keep_their_order() {
    let servers: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let data = serde_json::json!({ "servers": servers, "pools": { "a": [{"host": "x"}] } });
    Test::new()
        .file("a.j2", "{{ ls('servers') | join(',') }}\n{{ tree('servers') | join(',') }}\n{{ tree('pools').a[0].host }}\n")
        .file("d.json", data.to_string())
        .args(["render", "--data", "d.json", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("0,1,2,3,4,5,6,7,8,9,10,11\ns0,s1,s2,s3,s4,s5,s6,s7,s8,s9,s10,s11\nx\n");
}

#[test]
fn tojson_is_plain_json_and_python_methods_work() {
    Test::new()
        .file("a.j2", "{{ \"it's <b> & c\" | tojson }} {{ {'a': [1]} | tojson(indent=2) }}\n{{ 'a,b'.split(',') | join(' ') }} {{ {'k': 'v'}.items() | list | length }}\n")
        .args(["render", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("\"it's <b> & c\" {\n  \"a\": [\n    1\n  ]\n}\na b 1\n");
}

#[test]
fn owner_and_group_are_set_by_name_and_an_unknown_user_is_an_error() {
    // The tests run as root (as CI does), so ownership can be given away.
    let t = Test::new()
        .file("a.j2", "a\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nowner = \"nobody\"\ngroup = \"65534\"\n",
        )
        .args(["render", "-c", "stencil.toml"]);
    t.run().success();
    let meta = std::fs::metadata(t.path("a.conf")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    // Unchanged content, mode and owner: nothing to do.
    t.run().success().stderr_lacks("wrote");

    Test::new()
        .file("a.j2", "a\n")
        .file("a.conf", "old\n")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\nowner = \"no-such-user-x\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has("owner \"no-such-user-x\": no such user")
        .file_is("a.conf", "old\n");
}

#[test]
fn whitespace_switches_apply_per_template_over_top_level_defaults() {
    let body = "{% if true %}\n  x\n  {% endif %}\nend";
    Test::new()
        .file("a.j2", body)
        .file("b.j2", body)
        .file(
            "stencil.toml",
            "trim_blocks = false\nkeep_trailing_newline = false\n\
             [[templates]]\nsource = \"a.j2\"\ndestination = \"a.out\"\n\
             [[templates]]\nsource = \"b.j2\"\ndestination = \"b.out\"\n\
             trim_blocks = true\nlstrip_blocks = true\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        // Top-level defaults: no block trimming, Go-like.
        .file_is("a.out", "\n  x\n  \nend")
        // The template's own switches: the tag lines vanish.
        .file_is("b.out", "  x\nend");
}

#[test]
fn an_unknown_whitespace_key_is_an_error_with_its_line() {
    Test::new()
        .file("a.j2", "x")
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"a.j2\"\ntrim_block = false\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(2)
        .stderr_has("line 3")
        .stderr_has("trim_block");
}

#[test]
fn confd_getvs_sorts_by_value_not_by_key() {
    // confd's GetAllValues ends with sort.Strings: z-key's "a" comes first.
    Test::new()
        .file("a.j2", "{{ getvs(\"/hosts/*\") | join(\",\") }}\n")
        .file(
            "d.json",
            r#"{"hosts": {"a": "zeta", "b": "alpha", "c": "mid"}}"#,
        )
        .args(["render", "--data", "d.json", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("alpha,mid,zeta\n");
}

#[test]
fn a_data_file_with_dots_in_its_name_is_accepted() {
    Test::new()
        .file("vars/nginx.conf.yml", "port: 8080\n")
        .file("a.j2", "{{ key('port', source='nginx_conf') }}\n")
        .args(["render", "--data", "vars/nginx.conf.yml", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("8080\n");
}

#[test]
fn go_helpers_behave_as_in_confd_and_consul_template() {
    let tpl = concat!(
        "{{ toUpper('ab') }} {{ toLower('AB') }} {{ base('/a/b/') }} {{ dir('/a/b/c') }}\n",
        "{{ trimSuffix('x.conf', '.conf') }} {{ atoi('+7') + 1 }} {{ seq(1, 3) | join(',') }}\n",
        "[{{ trimSpace('  x \\n') }}] {{ replaceAll('o', '0', 'foo') }}\n",
        "{{ parseBool('') }} {{ parseBool('T') }} {{ parseInt('') }} {{ parseInt('-12') }}\n",
    );
    Test::new()
        .file("a.j2", tpl)
        .args(["render", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("AB ab b /a/b\nx 8 1,2,3\n[x] f00\nfalse true 0 -12\n");
    // The value may be a secret: the error says what was wanted, not what
    // came.
    for call in ["atoi(env.PW)", "parseInt(env.PW)", "parseBool(env.PW)"] {
        Test::new()
            .env("PW", "hunter2-secret")
            .file("a.j2", format!("{{{{ {call} }}}}\n"))
            .args(["render", "-t", "a.j2"])
            .run()
            .code(1)
            .stderr_has("invalid syntax: the value is not")
            .stderr_lacks("hunter2");
    }
}
