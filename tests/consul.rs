//! The Consul KV source, through the real binary for reads and through the
//! library for watches.
//!
//! Behaviour tests use `ConsulTarget`, so they also run against a real
//! Consul when `STENCIL_TEST_CONSUL_ADDR` is set; tests that inject faults
//! or count requests use `ConsulServer`, the test server. No sleeps as
//! synchronisation: `wait_parked` says when a blocking query waits, the
//! request log says what the client sent, and every wait has a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stencil::{ConsulConfig, ConsulSource};
use stencil::{Source, SourceEvent};

use crate::support::Test;
use crate::support::consul::{Acl, ConsulServer, ConsulTarget, Policy, Rule};
use crate::support::watch::{Watch, spec};

const TEMPLATE: &str = "db={{ key('db/host') }}:{{ key_or('db/port', '5432') }}\n\
{% for name in ls('upstreams') %}\nupstream {{ name }} {{ key('upstreams/' ~ name) }}\n{% endfor %}\n\
{{ kv('upstreams') | tojson }}\n";

const EXPECTED: &str = "db=db.internal:5432\nupstream a 10.0.0.1:80\nupstream b 10.0.0.2:80\n\
{\"a\":\"10.0.0.1:80\",\"b\":\"10.0.0.2:80\"}\n";

/// A token no other text contains, to search stderr for.
const TOKEN: &str = "tok-5e1f-e0c4-distinctive";

fn seed(t: &ConsulTarget) {
    t.put("apps/web/db/host", "db.internal");
    // A folder marker, as the UI and `consul kv put upstreams/` make.
    t.put("apps/web/upstreams/", "");
    t.put("apps/web/upstreams/a", "10.0.0.1:80");
    t.put("apps/web/upstreams/b", "10.0.0.2:80");
    t.put("apps/webx/not-under-the-prefix", "x");
    t.put("apps/other/secret", "not for web");
}

/// The target's token, if it has one, as stencil reads it.
fn with_token(test: Test, t: &ConsulTarget) -> Test {
    match t.token() {
        Some(token) => test.env("CONSUL_HTTP_TOKEN", token),
        None => test,
    }
}

/// A library source on the target, keys relative to the target's root.
fn source_on(t: &ConsulTarget, prefix: &str) -> Arc<ConsulSource> {
    let mut config = ConsulConfig::new(t.addr());
    config.prefix = t.key(prefix);
    config.token = t.token().map(str::to_string);
    Arc::new(ConsulSource::new("kv", &config).unwrap())
}

fn source_on_server(server: &ConsulServer, wait: Duration) -> Arc<ConsulSource> {
    let mut config = ConsulConfig::new(server.addr());
    config.query_wait = wait;
    Arc::new(ConsulSource::new("kv", &config).unwrap())
}

// ---------------------------------------------------------------------------
// Reading.

#[test]
fn renders_keys_and_prefixes_with_a_source_flag() {
    let t = ConsulTarget::start();
    seed(&t);
    let source = format!("consul={}?prefix={}", t.addr(), t.key("apps/web/"));
    with_token(Test::new(), &t)
        .file("a.j2", TEMPLATE)
        .args(["render", "--source", &source, "-t", "a.j2:out.conf"])
        .run()
        .success()
        .file_is("out.conf", EXPECTED);
    // consul+http:// works whatever the name.
    let source = format!("kv=consul+{}?prefix={}", t.addr(), t.key("apps/web"));
    with_token(Test::new(), &t)
        .file("a.j2", "{{ key('db/host') }} {{ ls('') | join(',') }}\n")
        .args(["render", "--source", &source, "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("db.internal db,upstreams\n");
}

#[test]
fn renders_from_a_config_file_with_a_token_file() {
    let t = ConsulTarget::start_with_acl();
    seed(&t);
    let token = t.create_token(&[Rule::key_prefix("apps/web/", Policy::Read)]);
    with_token(Test::new(), &t)
        .file("tpl/a.j2", TEMPLATE)
        .file("secrets/consul-token", format!("{token}\n"))
        .file(
            "conf/stencil.toml",
            format!(
                "[sources.kv]\nkind = \"consul\"\naddress = \"{}\"\nprefix = \"{}\"\n\
                 token_file = \"../secrets/consul-token\"\ntimeout = \"5s\"\n\n\
                 [[templates]]\nsource = \"../tpl/a.j2\"\n",
                t.addr(),
                t.key("apps/web/")
            ),
        )
        // The file's token_file wins over the environment's token.
        .env("CONSUL_HTTP_TOKEN", "not-this-one")
        .args(["render", "-c", "conf/stencil.toml", "--log-level", "trace"])
        .run()
        .success()
        .stdout_is(EXPECTED)
        .stderr_lacks(&token);
}

#[test]
fn consul_http_addr_and_token_are_honoured_and_the_file_wins() {
    let server = ConsulServer::with_acl(
        Acl::new("root").token(TOKEN, [Rule::key_prefix("apps/", Policy::Read)]),
    );
    server.put("apps/web/db/host", "db.internal");
    let host_port = server.addr().trim_start_matches("http://").to_string();
    let config = "[sources.kv]\nkind = \"consul\"\nprefix = \"apps/web\"\n\n[[templates]]\nsource = \"a.j2\"\n";
    Test::new()
        .file("a.j2", "{{ key('db/host') }}\n")
        .file("stencil.toml", config)
        // Without a scheme, as the consul CLI accepts it.
        .env("CONSUL_HTTP_ADDR", &host_port)
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .args(["render", "-c", "stencil.toml", "--log-level", "trace"])
        .run()
        .success()
        .stdout_is("db.internal\n")
        .stderr_lacks(TOKEN);
    let requests = server.kv_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].token.as_deref(), Some(TOKEN));
    assert!(
        !requests[0].query.contains(TOKEN),
        "the token went in the URL"
    );

    // What the file says wins over the variables.
    Test::new()
        .file("a.j2", "{{ key('db/host') }}\n")
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"consul\"\naddress = \"{}\"\nprefix = \"apps/web\"\ntoken = \"{TOKEN}\"\n\n\
                 [[templates]]\nsource = \"a.j2\"\n",
                server.addr()
            ),
        )
        .env("CONSUL_HTTP_ADDR", "127.0.0.1:9")
        .env("CONSUL_HTTP_TOKEN", "wrong")
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("db.internal\n");
}

#[test]
fn consul_http_ssl_makes_a_bare_address_https() {
    let out = Test::new()
        .file("a.j2", "{{ key('k') }}\n")
        .file(
            "stencil.toml",
            "[sources.kv]\nkind = \"consul\"\n\n[[templates]]\nsource = \"a.j2\"\n",
        )
        .env("CONSUL_HTTP_ADDR", "127.0.0.1:9")
        .env("CONSUL_HTTP_SSL", "true")
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .args(["render", "-c", "stencil.toml", "--print-config"])
        .run()
        .success();
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kv = &config["sources"]["kv"];
    assert_eq!(kv["kind"], "consul");
    assert_eq!(kv["address"], "https://127.0.0.1:9");
    assert!(kv.get("token").is_none(), "{kv}");
    assert!(!out.stdout_str().contains(TOKEN));
}

#[test]
fn the_token_never_appears_in_output_even_at_trace_level() {
    let server = ConsulServer::with_acl(
        Acl::new("root").token(TOKEN, [Rule::key_prefix("apps/", Policy::Read)]),
    );
    server.put("apps/web/db/host", "db.internal");
    let source = format!("consul={}?prefix=apps/web", server.addr());
    let source = source.as_str();
    for args in [
        vec![
            "render",
            "--log-level",
            "trace",
            "--source",
            source,
            "-t",
            "a.j2",
        ],
        vec![
            "render",
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "--source",
            source,
            "-t",
            "a.j2",
        ],
        vec!["render", "--print-config", "--source", source, "-t", "a.j2"],
    ] {
        let out = Test::new()
            .file(
                "a.j2",
                "{{ key('db/host') }} {{ key_or('missing', 'd') }} {{ ls('') | join(',') }}\n",
            )
            .env("CONSUL_HTTP_TOKEN", TOKEN)
            .args(args.clone())
            .run()
            .success()
            .stderr_lacks(TOKEN);
        assert!(
            !out.stdout_str().contains(TOKEN),
            "{args:?}: {}",
            out.stdout_str()
        );
    }
    // And when the server fails or refuses.
    server.fail_next(1);
    Test::new()
        .file("a.j2", "{{ key('db/host') }}\n")
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .args([
            "render",
            "--log-level",
            "trace",
            "--source",
            source,
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("No cluster leader")
        .stderr_lacks(TOKEN);
}

#[test]
fn a_key_the_token_may_not_read_is_an_error_naming_it() {
    let t = ConsulTarget::start_with_acl();
    t.put("apps/web/db/host", "db.internal");
    t.put("secret/password", "hunter2");
    let token = t.create_token(&[Rule::key_prefix("apps/", Policy::Read)]);
    Test::new()
        .file(
            "a.j2",
            "{{ key('apps/web/db/host') }} {{ key('secret/password') }}\n",
        )
        .env("CONSUL_HTTP_TOKEN", &token)
        .args([
            "render",
            "--log-level",
            "trace",
            "--source",
            &format!("consul={}?prefix={}", t.addr(), t.key("")),
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has(&format!(
            "refused to read key {:?}",
            t.key("secret/password")
        ))
        .stderr_has("the token lacks permission")
        .stderr_has("Permission denied")
        .stderr_lacks(&token)
        .stderr_lacks("hunter2");
}

/// Consul answers a recursive read the token may only partly read with
/// the readable keys and `X-Consul-Results-Filtered-By-ACLs`, never a 403:
/// stencil refuses to render partial data unless told to.
#[test]
fn a_prefix_read_filtered_by_acls_is_an_error_unless_warn() {
    let t = ConsulTarget::start_with_acl();
    t.put("apps/web/a", "1");
    t.put("apps/web/b", "2");
    t.put("apps/web/secret", "hunter2");
    let token = t.create_token(&[
        Rule::key_prefix("apps/web/", Policy::Read),
        Rule::key("apps/web/secret", Policy::Deny),
    ]);
    let source = format!("consul={}?prefix={}", t.addr(), t.key("apps"));
    let test = || {
        Test::new()
            .file("a.j2", "{{ kv('web') | tojson }}\n")
            .env("CONSUL_HTTP_TOKEN", &token)
    };
    test()
        .args(["render", "--source", &source, "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_has(&format!(
            "consul source \"consul\": the read of prefix {:?}",
            t.key("apps/web/")
        ))
        .stderr_has("was filtered by ACLs")
        .stderr_has("acl_filtered = \"warn\"")
        .stderr_lacks(&token)
        .stderr_lacks("hunter2");
    // With acl_filtered = "warn": rendered from what the token may read,
    // with one warning.
    let out = test()
        .args([
            "render",
            "--source",
            &format!("{source}&acl_filtered=warn"),
            "-t",
            "a.j2",
        ])
        .run()
        .success()
        .stdout_is("{\"a\":\"1\",\"b\":\"2\"}\n")
        .stderr_has("was filtered by ACLs")
        .stderr_lacks(&token);
    assert_eq!(
        out.stderr.matches("filtered by ACLs").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn acl_filtered_takes_only_error_or_warn() {
    Test::new()
        .file(
            "stencil.toml",
            "[sources.kv]\nkind = \"consul\"\naddress = \"127.0.0.1:1\"\nacl_filtered = \"maybe\"\n",
        )
        .file("a.j2", "x\n")
        .args(["render", "--config", "stencil.toml", "-t", "a.j2"])
        .run()
        .code(2)
        .stderr_has("stencil.toml")
        .stderr_has("acl_filtered = \"maybe\": use \"error\" or \"warn\"");
}

#[test]
fn max_watch_queries_takes_a_positive_whole_number() {
    Test::new()
        .file(
            "stencil.toml",
            "[sources.kv]\nkind = \"consul\"\naddress = \"127.0.0.1:1\"\nmax_watch_queries = 0\n",
        )
        .file("a.j2", "x\n")
        .args(["render", "--config", "stencil.toml", "-t", "a.j2"])
        .run()
        .code(2)
        .stderr_has("stencil.toml")
        .stderr_has("max_watch_queries = 0: a watch needs at least 1 query");
    Test::new()
        .file("a.j2", "x\n")
        .args([
            "render",
            "--source",
            "consul=http://127.0.0.1:1?max_watch_queries=many",
            "-t",
            "a.j2",
        ])
        .run()
        .code(2)
        .stderr_has("max_watch_queries=\"many\": use a whole number of queries");
}

/// Every KV 404 from Consul carries X-Consul-Index; a 404 without it means
/// the address is not a Consul agent, and must not render defaults.
#[test]
fn a_404_without_an_index_is_not_a_missing_key() {
    let server = ConsulServer::start();
    Test::new()
        .file("a.j2", "{{ key_or('db/host', 'localhost') }}\n")
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"consul\"\naddress = \"{}/proxy\"\n",
                server.addr()
            ),
        )
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .args(["render", "--config", "stencil.toml", "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_has(&format!(
            "consul at {}/proxy answered 404 without X-Consul-Index",
            server.addr()
        ))
        .stderr_has("not a Consul agent")
        .stderr_lacks(TOKEN);
}

/// Consul answers 429 to connections past its per-client cap, which every
/// local client shares: a render retries with backoff rather than fail.
#[test]
fn a_429_from_the_connection_cap_is_retried() {
    let server = ConsulServer::start();
    server.put("db/host", "db.internal");
    server.max_conns_per_client(1);
    // Another local client holds the only connection.
    let held = std::net::TcpStream::connect(server.socket_addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.open_connections() < 1 {
        assert!(
            Instant::now() < deadline,
            "the held connection was not accepted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while server.rejected_connections() < 1 {
                assert!(Instant::now() < deadline, "stencil was never refused");
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(held);
        });
        Test::new()
            .file("a.j2", "{{ key('db/host') }}\n")
            .args([
                "render",
                "--source",
                &format!("consul={}?timeout=30s", server.addr()),
                "-t",
                "a.j2",
            ])
            .run()
            .success()
            .stdout_is("db.internal\n");
    });
}

/// `stale` lets a follower answer, however far behind; `max_stale`
/// bounds that: a staler answer is read again from the leader.
#[test]
fn max_stale_rereads_an_answer_from_a_lagging_follower() {
    let server = ConsulServer::start();
    server.put("k", "old");
    server.lagging_follower(Duration::from_secs(5));
    server.put("k", "new");
    let render = |params: &str| {
        Test::new()
            .file("a.j2", "{{ key('k') }}\n")
            .args([
                "render",
                "--source",
                &format!("consul={}?{params}", server.addr()),
                "-t",
                "a.j2",
            ])
            .run()
            .success()
    };
    render("stale").stdout_is("old\n");
    render("max_stale=1s").stdout_is("new\n");
    render("stale&max_stale=10s").stdout_is("old\n");
    let log = server.kv_requests();
    let rereads: Vec<&str> = log.iter().map(|r| r.query.as_str()).collect();
    assert_eq!(rereads, ["stale", "stale", "", "stale"]);
}

#[test]
fn an_unknown_token_says_consul_does_not_know_it() {
    let server = ConsulServer::with_acl(Acl::new("root"));
    server.put("k", "v");
    Test::new()
        .file("a.j2", "{{ key('k') }}\n")
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .args([
            "render",
            "--source",
            &format!("consul={}", server.addr()),
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("refused to read key \"k\"")
        .stderr_has("the token lacks permission: Consul does not know it")
        .stderr_lacks(TOKEN);
}

#[test]
fn folder_markers_are_not_keys_and_prefixes_are_folders() {
    let t = ConsulTarget::start();
    seed(&t);
    with_token(Test::new(), &t)
        .file(
            "a.j2",
            "{{ ls('apps') | join(',') }}|{{ ls('apps/web') | join(',') }}|{{ kv('apps/web') | tojson }}|\
             {{ tree('apps/web') | tojson }}|{{ key_exists('apps/web/upstreams') }}|{{ key_exists('apps/web/db/host') }}\n",
        )
        .args([
            "render",
            "--source",
            &format!("consul={}?prefix={}", t.addr(), t.key("")),
            "-t",
            "a.j2",
        ])
        .run()
        .success()
        .stdout_is(
            "other,web,webx|db,upstreams|\
             {\"db/host\":\"db.internal\",\"upstreams/a\":\"10.0.0.1:80\",\"upstreams/b\":\"10.0.0.2:80\"}|\
             {\"db\":{\"host\":\"db.internal\"},\"upstreams\":{\"a\":\"10.0.0.1:80\",\"b\":\"10.0.0.2:80\"}}|\
             false|true\n",
        );
}

#[test]
fn a_value_that_is_not_utf8_is_an_error_naming_the_key() {
    let t = ConsulTarget::start();
    t.put("bin", [0xff, 0xfe, 0x00]);
    t.put("empty", "");
    let source = format!("consul={}?prefix={}", t.addr(), t.key(""));
    with_token(Test::new(), &t)
        .file("a.j2", "{{ key('bin') }}\n")
        .args(["render", "--source", &source, "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_has(&format!("the value of key {:?} is not UTF-8", t.key("bin")));
    // An empty value is Consul's null: an empty string, not a missing key.
    with_token(Test::new(), &t)
        .file("a.j2", "[{{ key('empty') }}]\n")
        .args(["render", "--source", &source, "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("[]\n");
}

#[test]
fn keys_with_spaces_and_question_marks_are_escaped() {
    let t = ConsulTarget::start();
    t.put("odd/a key?#%+b", "odd value");
    with_token(Test::new(), &t)
        .file(
            "a.j2",
            "{{ key('odd/a key?#%+b') }} {{ ls('odd') | join(',') }}\n",
        )
        .args([
            "render",
            "--source",
            &format!("consul={}?prefix={}", t.addr(), t.key("")),
            "-t",
            "a.j2",
        ])
        .run()
        .success()
        .stdout_is("odd value a key?#%+b\n");
}

#[test]
fn datacenter_and_stale_reach_the_server() {
    let server = ConsulServer::start();
    server.put("k", "v");
    Test::new()
        .file("a.j2", "{{ key('k') }} {{ kv('') | length }}\n")
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"consul\"\naddress = \"{}\"\ndatacenter = \"dc1\"\nstale = true\n\n\
                 [[templates]]\nsource = \"a.j2\"\n",
                server.addr()
            ),
        )
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("v 1\n");
    let requests = server.kv_requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for r in &requests {
        assert_eq!(r.param("dc"), Some("dc1"), "{r:?}");
        assert!(r.has("stale"), "{r:?}");
    }
    // Another datacenter: Consul's own error, with the address.
    Test::new()
        .file("a.j2", "{{ key('k') }}\n")
        .args([
            "render",
            "--source",
            &format!("consul={}?dc=dc2", server.addr()),
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has(&format!("consul at {}", server.addr()))
        .stderr_has("No path to datacenter");
}

#[test]
fn a_refused_connection_names_the_address() {
    Test::new()
        .file("a.j2", "{{ key('x') }}\n")
        .args([
            "render",
            "--source",
            "consul=http://127.0.0.1:9",
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("consul at http://127.0.0.1:9 did not answer")
        .stderr_has("Connection refused");
}

#[test]
fn malformed_source_urls_and_foreign_keys_are_usage_errors() {
    for (url, needle) in [
        ("consul=consul+http://?prefix=a", "no address in the URL"),
        ("consul=http://a:1,b:2", "Consul takes one agent's address"),
        (
            "consul=http://127.0.0.1:8500?stale=maybe",
            "stale=\"maybe\"",
        ),
        (
            "consul=http://127.0.0.1:8500?prefx=a",
            "unknown URL parameter \"prefx\"",
        ),
        ("kv=http://127.0.0.1:8500", "consul+http://"),
        (
            "consul=http://127.0.0.1:8500?token=s3cr3t-in-url",
            "a token does not go in the URL",
        ),
    ] {
        Test::new()
            .file("a.j2", "x\n")
            .args(["render", "--source", url, "-t", "a.j2"])
            .run()
            .code(2)
            .stderr_has(needle)
            .stderr_lacks("s3cr3t-in-url");
    }
    for (kind, key, value) in [
        ("consul", "endpoints", "[\"http://127.0.0.1:2379\"]"),
        ("consul", "password_file", "\"pw\""),
        ("etcd", "token_file", "\"t\""),
        ("etcd", "address", "\"http://127.0.0.1:8500\""),
        ("file", "datacenter", "\"dc1\""),
    ] {
        let path = if kind == "file" {
            "path = \"d.json\"\n"
        } else {
            ""
        };
        Test::new()
            .file("a.j2", "x\n")
            .file(
                "stencil.toml",
                format!(
                    "[sources.kv]\nkind = \"{kind}\"\n{path}{key} = {value}\n\n\
                     [[templates]]\nsource = \"a.j2\"\n"
                ),
            )
            .args(["check", "-c", "stencil.toml"])
            .run()
            .code(2)
            .stderr_has(&format!(
                "source \"kv\" of kind \"{kind}\" does not take {key}"
            ));
    }
}

#[test]
fn ten_thousand_keys_under_a_prefix_cost_one_request() {
    let server = ConsulServer::start();
    server.put_many((0..10_000).map(|i| (format!("many/k{i:05}"), format!("v{i}"))));
    let source = source_on_server(&server, Duration::from_secs(60));
    let sources =
        stencil::Sources::from_iter([("kv".to_string(), source.clone() as Arc<dyn Source>)]);
    let template = stencil::Template::from_source(
        std::path::Path::new("t.j2"),
        "{% for k, v in kv('many') | items %}{{ k }}={{ v }}\n{% endfor %}\
         {{ key('many/k00042') }} {{ ls('many') | length }} {{ key_exists('many/k99999') }}\n"
            .into(),
    )
    .unwrap();
    let scope = stencil::Scope {
        sources,
        default_source: Some("kv".into()),
    };
    let text = template.render(&scope).result.unwrap();
    assert_eq!(text.lines().count(), 10_001);
    assert!(text.starts_with("k00000=v0\n"));
    assert!(
        text.ends_with("v42 10000 false\n"),
        "{}",
        &text[text.len() - 40..]
    );
    let requests = server.kv_requests();
    assert_eq!(
        requests.len(),
        1,
        "one request for the prefix; keys inside it are served from it: {requests:#?}"
    );
    assert_eq!(requests[0].key(), Some("many/"));
    assert!(requests[0].has("recurse"));
    assert_eq!(source.requests(), Some(1));

    // The snapshot is kept for the next batch (the watch brings it
    // forward): no request.
    source.refresh();
    assert_eq!(source.get("many/k00001").unwrap().as_deref(), Some("v1"));
    assert_eq!(server.kv_requests().len(), 1);
}

// ---------------------------------------------------------------------------
// Watching.

#[test]
fn a_change_is_seen_by_a_parked_blocking_query_without_polling() {
    let server = ConsulServer::start();
    server.put("apps/web/port", "8080");
    server.put("apps/web/db/host", "db.internal");
    let source = source_on_server(&server, Duration::from_secs(300));
    assert_eq!(source.list("apps/web").unwrap().len(), 2);
    let (read_index, _) = server.list("apps/web/");
    server.clear_requests();

    // The key inside the watched prefix shares its query.
    let mut watch = Watch::start(source.clone(), spec(&["apps/web/port"], &["apps/web"]));
    server.wait_parked(1);
    let log = server.kv_requests();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].key(), Some("apps/web/"));
    assert!(log[0].has("recurse"));
    assert_eq!(
        log[0].blocking_index(),
        Some(read_index),
        "starts from what the render read"
    );

    // A write elsewhere does not end the query; one under the prefix does.
    server.put("apps/other", "x");
    server.put("apps/web/port", "9090");
    assert_eq!(watch.changed(), ["apps/web/port"]);
    // At once, a new query from the new index, and nothing else.
    let log = server.wait_until("the next blocking query", |log| {
        log.len() == 2 && log[1].status.is_none()
    });
    assert!(log[1].blocking_index().unwrap() > read_index);
    server.wait_parked(1);
    assert_eq!(server.kv_requests().len(), 2);

    // A creation and a deletion are changes too.
    server.put("apps/web/new", "1");
    assert_eq!(watch.changed(), ["apps/web/new"]);
    server.wait_parked(1);
    assert_eq!(server.kv_requests().len(), 3);
    server.delete("apps/web/db/host");
    assert_eq!(watch.changed(), ["apps/web/db/host"]);
    server.wait_parked(1);
    assert_eq!(server.kv_requests().len(), 4);
}

#[test]
fn a_key_outside_watched_prefixes_gets_its_own_query() {
    let server = ConsulServer::start();
    server.put("a/x", "1");
    server.put("b", "2");
    let source = source_on_server(&server, Duration::from_secs(300));
    source.list("a").unwrap();
    source.get("a/x").unwrap();
    source.get("b").unwrap();
    server.clear_requests();
    let mut watch = Watch::start(source.clone(), spec(&["a/x", "b"], &["a"]));
    server.wait_parked(2);
    let mut keys: Vec<String> = server
        .kv_requests()
        .iter()
        .map(|r| r.key().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, ["a/", "b"]);
    server.put("b", "3");
    assert_eq!(watch.changed(), ["b"]);
}

#[test]
fn a_missing_key_is_seen_when_it_is_created() {
    let t = ConsulTarget::start();
    let source = source_on(&t, "");
    assert_eq!(source.get("late").unwrap(), None);
    let mut watch = Watch::start(source.clone(), spec(&["late"], &[]));
    if let Some(server) = t.test_server() {
        server.wait_parked(1);
    }
    // A query on a missing key returns on any write (its index is the KV
    // table's): that is no change.
    t.put("unrelated", "x");
    t.put("late", "arrived");
    assert_eq!(watch.changed(), ["late"]);
    t.delete("late");
    assert_eq!(watch.changed(), ["late"]);
}

#[test]
fn a_deleted_prefix_lists_every_deleted_key() {
    let t = ConsulTarget::start();
    t.put("up/a", "1");
    t.put("up/b", "2");
    t.put("up/c/d", "3");
    t.put("keep", "x");
    let source = source_on(&t, "");
    assert_eq!(source.list("up").unwrap().len(), 3);
    let mut watch = Watch::start(source.clone(), spec(&[], &["up"]));
    if let Some(server) = t.test_server() {
        server.wait_parked(1);
    }
    t.delete_tree("up/");
    assert_eq!(
        watch.collect(&["up/a", "up/b", "up/c/d"]),
        ["up/a", "up/b", "up/c/d"]
    );
}

#[test]
fn an_index_that_goes_backwards_resets_to_zero_and_sees_the_next_change() {
    let server = ConsulServer::start();
    for i in 0..20 {
        server.put(&format!("w/k{i}"), "v");
    }
    // A short wait: after a restore, the parked query returns only when its
    // wait ends, with the lower index.
    let source = source_on_server(&server, Duration::from_secs(1));
    source.list("w").unwrap();
    let mut watch = Watch::start(source.clone(), spec(&[], &["w"]));
    server.wait_parked(1);
    let old = server
        .kv_requests()
        .last()
        .unwrap()
        .blocking_index()
        .unwrap();
    server.clear_requests();
    server.index_goes_backwards();
    let log = server.wait_until(
        "a query from index 0, then one from the lower index",
        |log| {
            let zero = log.iter().position(|r| r.param("index") == Some("0"));
            zero.is_some_and(|z| {
                log[z + 1..]
                    .iter()
                    .any(|r| r.status.is_none() && r.blocking_index().is_some_and(|i| i < old))
            })
        },
    );
    assert!(
        !log.iter().any(|r| r.blocking_index() == Some(old)),
        "the old index was used again: {log:#?}"
    );
    server.put("w/k3", "changed");
    // The content did not change with the restore: the first event is the
    // write.
    assert_eq!(watch.changed(), ["w/k3"]);
}

#[test]
fn each_500_is_reported_and_recovery_delivers_the_change() {
    let server = ConsulServer::start();
    server.put("k", "1");
    let source = source_on_server(&server, Duration::from_secs(300));
    source.get("k").unwrap();
    server.clear_requests();
    server.fail_next(2);
    let mut watch = Watch::start(source.clone(), spec(&["k"], &[]));
    match watch.next() {
        SourceEvent::Failed { source, error } => {
            assert_eq!(source, "kv");
            assert!(
                error.contains("500") && error.contains("No cluster leader"),
                "{error}"
            );
            assert!(error.contains(&server.addr()), "{error}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // Written while the watch backs off.
    server.put("k", "2");
    // Every failed attempt is reported (counted in /status), then one Up.
    let mut next = watch.next();
    while matches!(next, SourceEvent::Failed { .. }) {
        next = watch.next();
    }
    assert!(matches!(next, SourceEvent::Up { .. }), "{next:?}");
    assert_eq!(watch.changed(), ["k"]);
    let log = server.kv_requests();
    assert_eq!(log.iter().filter(|r| r.status == Some(500)).count(), 2);
    // Backoff, not a hot loop: 250 ms less at most 20% of jitter.
    assert!(
        log[1].at - log[0].at >= Duration::from_millis(200),
        "{log:#?}"
    );
}

#[test]
fn a_dropped_connection_mid_query_loses_no_change() {
    let server = ConsulServer::start();
    server.put("p/a", "1");
    let source = source_on_server(&server, Duration::from_secs(300));
    source.list("p").unwrap();
    let mut watch = Watch::start(source.clone(), spec(&[], &["p"]));
    server.wait_parked(1);
    server.drop_parked_connections();
    assert!(matches!(watch.next(), SourceEvent::Failed { .. }));
    server.put("p/a", "2");
    server.put("p/b", "3");
    assert!(matches!(watch.next(), SourceEvent::Up { .. }));
    assert_eq!(watch.collect(&["p/a", "p/b"]), ["p/a", "p/b"]);
    assert!(server.kv_requests().iter().any(|r| r.dropped));
}

/// Issue 18: an agent that freezes holds a parked query without ever
/// answering. The query's own limit, its wait plus Consul's jitter (at most
/// wait/16, agent/consul/rpc.go) plus the request timeout, notices it; the
/// watch reports the failure, retries with backoff and catches up once
/// the agent answers again.
#[test]
fn a_frozen_agent_is_noticed_within_the_query_limit_and_retried() {
    let server = ConsulServer::start();
    server.put("k", "1");
    let mut config = ConsulConfig::new(server.addr());
    config.query_wait = Duration::from_secs(1);
    config.timeout = Duration::from_secs(1);
    let source = Arc::new(ConsulSource::new("kv", &config).unwrap());
    source.get("k").unwrap();
    let mut watch = Watch::start(source.clone(), spec(&["k"], &[]));
    server.wait_parked(1);
    server.freeze();
    server.put("k", "2");
    match watch.next() {
        SourceEvent::Failed { error, .. } => {
            // 1s wait + 62.5ms (1s/16) + 1s timeout.
            assert!(
                error.contains("did not answer within 2s 62ms 500us"),
                "{error}"
            );
        }
        other => panic!("expected the failure, got {other:?}"),
    }
    server.thaw();
    loop {
        match watch.next() {
            SourceEvent::Changed { keys, .. } => {
                assert_eq!(keys, ["k"]);
                break;
            }
            SourceEvent::Up { .. } => {}
            other => panic!("expected recovery, got {other:?}"),
        }
    }
}

#[test]
fn recovery_is_reported_without_waiting_for_a_change() {
    let server = ConsulServer::start();
    server.put("p/a", "1");
    // A wait far longer than the test's deadline: only a plain read after
    // the failure can say the server is back.
    let source = source_on_server(&server, Duration::from_secs(600));
    source.list("p").unwrap();
    let mut watch = Watch::start(source.clone(), spec(&[], &["p"]));
    server.wait_parked(1);
    server.drop_parked_connections();
    assert!(matches!(watch.next(), SourceEvent::Failed { .. }));
    assert!(matches!(watch.next(), SourceEvent::Up { .. }));
    // And it blocks again, from the same index.
    server.wait_parked(1);
    let log = server.kv_requests();
    let last = log.last().unwrap();
    assert_eq!(last.blocking_index(), log[1].blocking_index(), "{log:#?}");
}

#[test]
fn a_server_that_answers_at_once_is_not_queried_in_a_hot_loop() {
    let server = ConsulServer::start();
    // A query on an empty prefix reports the KV table's index, so it
    // returns on every write anywhere with nothing changed (KVS.List has
    // no errNotFound, unlike KVS.Get since Consul 1.12): the next query
    // must wait MIN_INTERVAL, however fast the answers come.
    let source = source_on_server(&server, Duration::from_secs(300));
    source.list("missing").unwrap();
    server.clear_requests();
    let _watch = Watch::start(source.clone(), spec(&[], &["missing"]));
    server.wait_parked(1);
    let start = Instant::now();
    for i in 0..10 {
        // Each write ends the query on the empty prefix without a change.
        server.wait_until("the next query", |log| {
            log.len() == i + 1 && log[i].status.is_none()
        });
        server.wait_parked(1);
        server.put("other", i.to_string());
    }
    server.wait_until("the eleventh query", |log| log.len() == 11);
    // 10 answers without a change: at least 10 × MIN_INTERVAL between the
    // queries' starts.
    let log = server.kv_requests();
    let spread = log[10].at - log[0].at;
    assert!(
        spread >= stencil::CONSUL_MIN_INTERVAL * 9,
        "{spread:?} for {} queries",
        log.len()
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_token_revoked_while_watching_ends_the_watch_with_an_error() {
    let server = ConsulServer::with_acl(
        Acl::new("root").token(TOKEN, [Rule::key_prefix("apps/", Policy::Read)]),
    );
    server.put("apps/k", "1");
    let mut config = ConsulConfig::new(server.addr());
    config.token = Some(TOKEN.into());
    let source = Arc::new(ConsulSource::new("kv", &config).unwrap());
    source.get("apps/k").unwrap();
    let watch = Watch::start(source.clone(), spec(&["apps/k"], &[]));
    server.wait_parked(1);
    server.remove_token(TOKEN);
    server.put("apps/k", "2");
    let err = format!("{:#}", watch.result().unwrap_err());
    assert!(
        err.contains("the Consul watch of source \"kv\" stopped"),
        "{err}"
    );
    assert!(err.contains("refused to read key \"apps/k\""), "{err}");
    assert!(err.contains("lacks permission"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
}

/// A key the token may not read appearing under a watched prefix makes
/// Consul filter the answer: the watch ends with an error naming the
/// prefix rather than going on with partial data.
#[test]
fn a_filtered_answer_ends_the_watch_of_a_prefix() {
    let server = ConsulServer::with_acl(Acl::new("root").token(
        TOKEN,
        [
            Rule::key_prefix("apps/", Policy::Read),
            Rule::key("apps/web/secret", Policy::Deny),
        ],
    ));
    server.put("apps/web/a", "1");
    let mut config = ConsulConfig::new(server.addr());
    config.token = Some(TOKEN.into());
    let source = Arc::new(ConsulSource::new("kv", &config).unwrap());
    source.list("apps/web").unwrap();
    let watch = Watch::start(source.clone(), spec(&[], &["apps/web"]));
    server.wait_parked(1);
    server.put("apps/web/secret", "hunter2");
    let err = format!("{:#}", watch.result().unwrap_err());
    assert!(
        err.contains("the read of prefix \"apps/web/\"") && err.contains("filtered by ACLs"),
        "{err}"
    );
    assert!(!err.contains(TOKEN) && !err.contains("hunter2"), "{err}");
}

/// With `acl.enable_key_list_policy`, the folder query stencil merges two
/// keys of one folder into gets a 403 although each key may be read: the
/// watch falls back to one query per key instead of stopping.
#[test]
fn a_merged_query_refused_by_the_list_policy_falls_back_to_one_per_key() {
    let server = ConsulServer::with_acl(
        Acl::new("root")
            .key_list_policy()
            .token(TOKEN, [Rule::key_prefix("apps/", Policy::Read)]),
    );
    server.put("apps/web/a", "1");
    server.put("apps/web/b", "2");
    let mut config = ConsulConfig::new(server.addr());
    config.token = Some(TOKEN.into());
    config.query_wait = Duration::from_secs(30);
    let source = Arc::new(ConsulSource::new("kv", &config).unwrap());
    source.get("apps/web/a").unwrap();
    source.get("apps/web/b").unwrap();
    let mut watch = Watch::start(source.clone(), spec(&["apps/web/a", "apps/web/b"], &[]));
    server.wait_parked(2);
    let log = server.kv_requests();
    assert!(
        log.iter()
            .any(|r| r.key() == Some("apps/web/") && r.status == Some(403)),
        "{log:#?}"
    );
    server.put("apps/web/b", "3");
    assert_eq!(watch.changed(), ["apps/web/b"]);
    // A later watch (templates changed) splits the folder from the start.
    drop(watch);
    server.clear_requests();
    let _watch = Watch::start(source.clone(), spec(&["apps/web/a", "apps/web/b"], &[]));
    let log = server.wait_until("a query on each key", |log| {
        ["apps/web/a", "apps/web/b"]
            .iter()
            .all(|k| log.iter().any(|r| r.key() == Some(k)))
    });
    assert!(log.iter().all(|r| r.key() != Some("apps/web/")), "{log:#?}");
    assert!(
        server
            .kv_requests()
            .iter()
            .all(|r| r.key() != Some("apps/web/")),
        "{:#?}",
        server.kv_requests()
    );
}

/// A token rotated in place (new token written to token_file, then the old
/// one revoked) is picked up by the next request; the watch goes on.
#[test]
fn a_token_rotated_in_token_file_is_used_from_the_next_request() {
    let old = "tok-old-1b7d";
    let new = "tok-new-93ac";
    let server = ConsulServer::with_acl(
        Acl::new("root").token(old, [Rule::key_prefix("apps/", Policy::Read)]),
    );
    server.put("apps/k", "1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let mut config = ConsulConfig::new(server.addr());
    config.token_file = Some(file.clone());
    let source = Arc::new(ConsulSource::new("kv", &config).unwrap());
    source.get("apps/k").unwrap();
    let mut watch = Watch::start(source.clone(), spec(&["apps/k"], &[]));
    server.wait_parked(1);
    server.add_token(new, [Rule::key_prefix("apps/", Policy::Read)]);
    std::fs::write(&file, format!("{new}\n")).unwrap();
    server.remove_token(old);
    server.put("apps/k", "2");
    assert_eq!(watch.changed(), ["apps/k"]);
    server.wait_parked(1);
    server.put("apps/k", "3");
    assert_eq!(watch.changed(), ["apps/k"]);
    let last = server.kv_requests().pop().unwrap();
    assert_eq!(last.token.as_deref(), Some(new));
}

#[test]
fn a_restarted_watch_goes_on_from_what_the_last_one_saw() {
    let server = ConsulServer::start();
    server.put("a", "1");
    server.put("b", "1");
    let source = source_on_server(&server, Duration::from_secs(300));
    source.get("a").unwrap();
    let mut first = Watch::start(source.clone(), spec(&["a"], &[]));
    server.wait_parked(1);
    server.put("a", "2");
    assert_eq!(first.changed(), ["a"]);
    server.wait_parked(1);
    drop(first);
    // The next batch re-renders a template that reads only b, and the
    // coordinator restarts the watch for a and b: a is not in the new
    // snapshot, but the old watch saw it, so nothing is reported twice.
    source.refresh();
    source.get("b").unwrap();
    let mut second = Watch::start(source.clone(), spec(&["a", "b"], &[]));
    server.wait_parked(2);
    server.put("b", "2");
    assert_eq!(second.changed(), ["b"]);
    server.put("a", "3");
    assert_eq!(second.changed(), ["a"]);
}

#[test]
fn a_watch_with_nothing_read_reports_what_it_finds() {
    let t = ConsulTarget::start();
    t.put("cold/a", "1");
    let source = source_on(&t, "");
    // No read before the watch: it cannot know what the render saw.
    let mut watch = Watch::start(source.clone(), spec(&[], &["cold"]));
    assert_eq!(watch.changed(), ["cold/a"]);
    if let Some(server) = t.test_server() {
        server.wait_parked(1);
    }
    t.put("cold/b", "2");
    assert_eq!(watch.changed(), ["cold/b"]);
}

// ---------------------------------------------------------------------------
// The real binary watching.

#[test]
fn stencil_watch_follows_consul_through_a_missing_key_an_outage_and_a_delete() {
    let server = ConsulServer::start();
    server.put("app/pool/x", "10.0.0.1");
    let mut run = Test::new()
        .file(
            "a.j2",
            // trim_blocks eats the newline after endfor.
            "{{ key('port') }}{% for n in ls('pool') %} {{ key('pool/' ~ n) }}{% endfor %}\n\n",
        )
        .args([
            "watch",
            "--source",
            &format!("consul={}?prefix=app", server.addr()),
            "-t",
            "a.j2:out.conf",
        ])
        .spawn();
    // Pending on the missing key, rendered when it appears.
    run.wait_for("the pending log line", |r| {
        r.stderr()
            .contains("waiting for key \"port\"")
            .then_some(())
    });
    server.put("app/port", "80");
    run.wait_file("out.conf", "80 10.0.0.1\n");
    server.put("app/pool/y", "10.0.0.2");
    run.wait_file("out.conf", "80 10.0.0.1 10.0.0.2\n");

    // An outage: the file stays, a change made meanwhile is applied.
    server.wait_until("the watch's queries to park", |_| server.parked() >= 2);
    server.drop_parked_connections();
    server.put("app/port", "8080");
    run.wait_file("out.conf", "8080 10.0.0.1 10.0.0.2\n");
    run.wait_for("the outage and the recovery in the log", |r| {
        let log = r.stderr();
        (log.contains("source is failing") && log.contains("source is answering again"))
            .then_some(())
    });

    server.delete_tree("app/pool/");
    run.wait_file("out.conf", "8080\n");
    // One query per watched prefix and per other key, never one per key
    // under a prefix.
    let parked: Vec<String> = server
        .kv_requests()
        .iter()
        .filter(|r| r.status.is_none() && r.blocking_index().is_some())
        .map(|r| r.key().unwrap().to_string())
        .collect();
    assert!(
        parked.iter().all(|k| k == "app/pool/" || k == "app/port"),
        "{parked:?}"
    );
    assert!(!run.stderr().contains("app/pool/x\""), "{}", run.stderr());
}

#[test]
fn keys_in_one_folder_share_one_blocking_query() {
    // A hundred templates each reading its own key in one folder must not
    // hold a hundred connections (consul-template's complaint).
    let server = ConsulServer::start();
    let names: Vec<String> = (0..100).map(|i| format!("app/k{i:03}")).collect();
    server.put_many(names.iter().map(|k| (k.clone(), b"1".to_vec())));
    server.put("app/unread", "x");
    let source = source_on_server(&server, Duration::from_secs(5));
    for k in &names {
        source.get(k).unwrap();
    }
    let keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut watch = Watch::start(source.clone(), spec(&keys, &[]));
    server.wait_parked(1);
    assert_eq!(server.parked(), 1, "one query for the folder");
    server.put("app/k042", "2");
    // The folder's neighbours the render did not read may be reported
    // too (the coordinator ignores keys nobody read); k042 must be there.
    let seen = watch.collect(&["app/k042"]);
    assert!(
        !seen
            .iter()
            .any(|k| k.starts_with("app/k0") && k != "app/k042"),
        "{seen:?}"
    );
}

/// Every parked blocking query holds a connection, and Consul refuses a
/// client past `limits.http_max_conns_per_client` (shared by every local
/// client): with `max_watch_queries`, keys in different folders are merged
/// into the folder holding them until the watch fits, a change to any of
/// them is still applied, and /status and /metrics say how many queries
/// are parked.
#[test]
fn a_watch_over_max_watch_queries_merges_folders_and_stays_within_it() {
    let server = ConsulServer::start();
    for (k, v) in [("app/a/x", "1"), ("app/b/y", "2"), ("app/c/z", "3")] {
        server.put(k, v);
    }
    server.put("other/w", "4");
    // Unbounded, these four keys in four folders are four parked queries.
    // The cap leaves room for the render's pooled connection and for one
    // being replaced after an answer (on a loaded machine the old one may
    // not have closed yet): what must hold is how many queries ever parked.
    server.max_conns_per_client(5);
    let config = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n\
         [sources.kv]\nkind = \"consul\"\naddress = \"{}\"\nmax_watch_queries = 2\n\n\
         [[templates]]\nsource = \"a.j2\"\ndestination = \"out.conf\"\n",
        server.addr()
    );
    let mut run = Test::new()
        .file(
            "a.j2",
            "{{ key('app/a/x') }} {{ key('app/b/y') }} {{ key('app/c/z') }} {{ key('other/w') }}\n",
        )
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("out.conf", "1 2 3 4\n");
    server.wait_parked(2);
    let get = |path: &str| {
        crate::support::consul::http::get(&format!("http://{addr}{path}"))
            .try_send()
            .ok()
            .map(|r| r.text())
    };
    run.wait_for("/status to count the parked queries", |_| {
        let status: serde_json::Value = serde_json::from_str(&get("/status")?).ok()?;
        (status["sources"]["kv"]["watch_queries"] == 2).then_some(())
    });
    let metrics = get("/metrics").unwrap();
    assert!(
        metrics.contains("stencil_source_watch_queries{source=\"kv\",kind=\"consul\"} 2"),
        "{metrics}"
    );
    server.put("app/b/y", "20");
    run.wait_file("out.conf", "1 20 3 4\n");
    server.put("other/w", "40");
    run.wait_file("out.conf", "1 20 3 40\n");
    server.wait_parked(2);
    assert_eq!(server.rejected_connections(), 0, "{}", run.stderr());
    assert!(
        server.most_parked() <= 2,
        "{} queries were parked at once",
        server.most_parked()
    );
    let stderr = run.stderr();
    assert!(stderr.contains("max_watch_queries = 2"), "{stderr}");
    // Merged into app/ (the deepest folder holding several), other/w alone.
    let parked: std::collections::BTreeSet<String> = server
        .kv_requests()
        .iter()
        .filter(|r| r.blocking_index().is_some())
        .map(|r| r.key().unwrap().to_string())
        .collect();
    assert_eq!(
        parked,
        ["app/".to_string(), "other/w".to_string()].into(),
        "{stderr}"
    );
}
