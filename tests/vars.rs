//! A data file's document as typed variables (`vars`, and its top-level
//! keys as variables), and `stencil render TEMPLATE [DATA]`, as j2cli,
//! minijinja-cli and Ansible users write them.

use std::time::Duration;

use crate::support::Test;

/// The Ansible-role case of issue 13: `false` must be false and `[]` an
/// empty list, not the strings "false" and nothing.
const NGINX_VARS: &str = "\
nginx_listen_ipv6: false
nginx_port: 8080
nginx_ratio: 0.5
redis_includes: []
server:
  names: [a.example, b.example]
  gzip: true
";

const NGINX_TEMPLATE: &str = "\
listen {{ nginx_port + 1 }};
{% if nginx_listen_ipv6 %}listen [::]:{{ nginx_port }};
{% endif %}server_name {{ server.names | join(' ') }};
gzip {{ 'on' if vars.server.gzip else 'off' }};
includes{% for i in redis_includes %} {{ i }}{% endfor %} {{ redis_includes | length }}
ratio {{ nginx_ratio * 2 }} {{ vars.nginx_port is number }} {{ vars.redis_includes is sequence }}
string view {{ key('nginx_listen_ipv6') }} {{ key('server/names/1') }}
";

const NGINX_OUT: &str = "\
listen 8081;
server_name a.example b.example;
gzip on;
includes 0
ratio 1.0 true true
string view false b.example
";

#[test]
fn render_template_data_prints_typed_variables_to_stdout() {
    Test::new()
        .file("nginx.conf.j2", NGINX_TEMPLATE)
        .file("vars/nginx.conf.yml", NGINX_VARS)
        .args(["render", "nginx.conf.j2", "vars/nginx.conf.yml"])
        .run()
        .success()
        .stdout_is(NGINX_OUT);
}

#[test]
fn data_flag_gives_the_same_variables() {
    Test::new()
        .file("nginx.conf.j2", NGINX_TEMPLATE)
        .file("vars/nginx.conf.yml", NGINX_VARS)
        .args([
            "render",
            "--data",
            "vars/nginx.conf.yml",
            "-t",
            "nginx.conf.j2:out.conf",
        ])
        .run()
        .success()
        .file_is("out.conf", NGINX_OUT);
}

#[test]
fn every_format_is_typed_as_written() {
    let template = "{{ port + 1 }} {{ on }} {{ when }} {{ tags | length }}\n";
    for (name, data, out) in [
        (
            "d.json",
            r#"{"port": 1, "on": false, "when": "x", "tags": []}"#,
            "2 false x 0\n",
        ),
        (
            "d.toml",
            "port = 1\non = false\nwhen = 1979-05-27T07:32:00Z\ntags = []\n",
            "2 false 1979-05-27T07:32:00Z 0\n",
        ),
    ] {
        Test::new()
            .file("a.j2", template)
            .file(name, data)
            .args(["render", "a.j2", name])
            .run()
            .success()
            .stdout_is(out);
    }
    // A dotenv file holds strings only.
    Test::new()
        .file("a.j2", "{{ PORT ~ 1 }} {{ vars.PORT is string }}\n")
        .file("d.env", "PORT=80\n")
        .args(["render", "a.j2", "d.env"])
        .run()
        .success()
        .stdout_is("801 true\n");
}

#[test]
fn a_data_key_does_not_hide_a_stencil_function() {
    Test::new()
        .file(
            "a.j2",
            "{{ key('key') }} {{ env.X }} {{ vars.env }} {{ vars.range }} {{ range(2) | list }}\n",
        )
        .file("d.json", r#"{"key": "k", "env": "e", "range": 3}"#)
        .env("X", "x")
        .args(["render", "a.j2", "d.json"])
        .run()
        .success()
        .stdout_is("k x e 3 [0, 1]\n");
}

#[test]
fn the_template_own_variables_win_over_the_data() {
    Test::new()
        .file(
            "a.j2",
            "{% set port = 1 %}{{ port }}{% for port in [2] %} {{ port }}{% endfor %} {{ vars.port }}\n",
        )
        .file("d.json", r#"{"port": 9}"#)
        .args(["render", "a.j2", "d.json"])
        .run()
        .success()
        .stdout_is("1 2 9\n");
}

#[test]
fn a_data_file_source_prefix_is_the_document_root() {
    Test::new()
        .file("a.j2", "{{ port }} {{ vars.port }} {{ key('port') }}\n")
        .file("d.json", r#"{"apps": {"web": {"port": 80}}}"#)
        .file(
            "stencil.toml",
            "[sources.d]\nkind = \"file\"\npath = \"d.json\"\nprefix = \"apps/web\"\n\
             [[templates]]\nsource = \"a.j2\"\n",
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("80 80 80\n");
}

#[test]
fn without_a_data_file_vars_says_why() {
    Test::new()
        .file("a.j2", "{{ vars.port }}\n")
        .args(["render", "a.j2"])
        .run()
        .code(1)
        .stderr_has("no data source is configured");
    Test::new()
        .file("a.j2", "{{ vars.port }}\n")
        .file("a.json", "{}")
        .file("b.json", "{}")
        .args([
            "render", "--data", "a.json", "--data", "b.json", "-t", "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("several sources are configured (a, b)");
    // Without vars, a template without data renders from the environment.
    Test::new()
        .file("a.j2", "{{ env.X }}\n")
        .env("X", "x")
        .args(["render", "a.j2"])
        .run()
        .success()
        .stdout_is("x\n");
}

#[test]
fn a_missing_name_names_no_value_of_the_data() {
    Test::new()
        .file("a.j2", "password={{ db.pasword }}\n")
        .file("d.yaml", "db:\n  password: hunter2-s3cr3t\n")
        .args(["render", "a.j2", "d.yaml"])
        .run()
        .code(1)
        .stderr_has("undefined")
        .stderr_lacks("hunter2");
}

#[test]
fn deps_and_check_know_the_data_names() {
    let deps = Test::new()
        .file(
            "a.j2",
            "{{ port }} {{ tls.on }} {% if missing is defined %}x{% endif %}\n",
        )
        .file("d.json", r#"{"port": 1, "tls": {"on": true}}"#)
        .args(["deps", "--data", "d.json", "-t", "a.j2"])
        .run()
        .success()
        .stdout_str();
    for line in [
        "  key     d:missing  (missing)\n",
        "  key     d:port\n",
        "  prefix  d:tls/\n",
    ] {
        assert!(deps.contains(line), "{line:?} in {deps}");
    }
    Test::new()
        .file("a.j2", "{{ port }} {{ vars.port }} {{ nope }}\n")
        .file("d.json", r#"{"port": 1}"#)
        .args(["check", "--data", "d.json", "-t", "a.j2"])
        .run()
        .success()
        .stderr_has("(undefined when reached): nope template=a.j2");
}

#[test]
fn data_requires_a_template_and_other_forms_still_work() {
    Test::new()
        .file("a.j2", "{{ x }} {{ key('x') }}\n")
        .file("d.json", r#"{"x": 1}"#)
        .file("b.j2", "b\n")
        .args(["render", "a.j2", "d.json", "-t", "b.j2:out"])
        .run()
        .success()
        .stdout_is("1 1\n")
        .file_is("out", "b\n");
}

#[test]
fn watch_re_renders_when_a_data_file_read_through_vars_changes() {
    let t = Test::new()
        .file("a.j2", "port {{ vars.port }} {{ tls }}\n")
        .file("d.yaml", "port: 80\ntls: false\n")
        .args(["watch", "--data", "d.yaml", "-t", "a.j2:out.conf"]);
    let mut run = t.spawn();
    run.wait_file("out.conf", "port 80 false\n");
    let tmp = t.path("d.yaml.tmp");
    std::fs::write(&tmp, "port: 8080\ntls: true\n").unwrap();
    std::fs::rename(tmp, t.path("d.yaml")).unwrap();
    run.wait_file("out.conf", "port 8080 true\n");
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        run.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        run.stderr()
    );
}
