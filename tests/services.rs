//! Service discovery: `service()`, `services()`, `nodes()`, `node()` over
//! Consul's catalog and health API, rendered and watched through the real
//! binary against the Consul test server; and the test server's catalog
//! endpoints themselves, described with the Consul source they come from
//! (agent/health_endpoint.go, agent/catalog_endpoint.go, v1.16.4).

use std::thread;

use crate::support::consul::{Acl, ConsulServer, Policy, Registration, Rule, http};
use crate::support::{Test, status_get};

/// A token no other text contains, to search stderr for.
const TOKEN: &str = "tok-c4t4-109-distinctive";

/// Three instances of "web" on three nodes, registered out of order, with
/// tags out of order, one without a port; every check passing.
fn three_webs(consul: &ConsulServer) {
    consul.register(
        Registration::new("web", "web-3")
            .node("node-c", "10.0.0.3")
            .port(8080)
            .tags(["v2", "blue"].as_slice()),
    );
    consul.register(
        Registration::new("web", "web-1")
            .node("node-a", "10.0.0.1")
            .address("192.0.2.1")
            .port(8080)
            .tags(&["v1"])
            .meta("version", "1.2"),
    );
    consul.register(Registration::new("Web", "web-2").node("node-b", "10.0.0.2"));
    for (node, id) in [
        ("node-a", "web-1"),
        ("node-b", "web-2"),
        ("node-c", "web-3"),
    ] {
        consul.set_check(node, id, "passing");
    }
}

fn health(consul: &ConsulServer, query: &str) -> http::Reply {
    http::get(&format!("{}/v1/health/service/{query}", consul.addr())).send()
}

fn ids(reply: &http::Reply) -> Vec<String> {
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// The test server's catalog, as Consul answers.

/// healthServiceNodes: `?passing` runs filterNonPassing, which moves the
/// last instance into the place of a dropped one: the answer comes out of
/// order, which is why clients sort.
#[test]
fn server_passing_drops_unhealthy_instances_and_reorders_the_rest() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    consul.register(
        Registration::new("web", "web-0")
            .node("node-0", "10.0.0.9")
            .port(1),
    );
    consul.set_check("node-0", "web-0", "warning");
    let all = health(&consul, "web");
    assert_eq!(ids(&all), ["web-0", "web-1", "web-2", "web-3"]);
    let passing = health(&consul, "web?passing");
    assert_eq!(ids(&passing), ["web-3", "web-1", "web-2"]);
    assert!(passing.index() >= 1);
    // A node check counts for every service on the node.
    consul.set_check("node-b", "", "critical");
    assert_eq!(ids(&health(&consul, "web?passing")), ["web-3", "web-1"]);
    assert_eq!(
        http::get(&format!(
            "{}/v1/health/service/web?passing=maybe",
            consul.addr()
        ))
        .send()
        .status,
        400
    );
}

/// Tags filter case-insensitively and all must match; names match
/// case-insensitively; a service registered without a port is answered
/// without one; the services list's tags come in random order.
#[test]
fn server_tags_names_ports_and_the_services_list() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    assert_eq!(ids(&health(&consul, "WEB?tag=V2")), ["web-3"]);
    assert_eq!(ids(&health(&consul, "web?tag=v2&tag=blue")), ["web-3"]);
    assert!(ids(&health(&consul, "web?tag=v2&tag=v1")).is_empty());
    let web2 = &health(&consul, "web?tag=").json();
    assert!(
        web2.as_array().unwrap().is_empty(),
        "an empty tag matches none"
    );
    let all = health(&consul, "web").json();
    assert!(all[1]["Service"].get("Port").is_none(), "{all}");
    assert_eq!(all[1]["Service"]["Service"], "Web");
    assert_eq!(all[2]["Service"]["Tags"], serde_json::json!(["v2", "blue"]));
    let services = http::get(&format!("{}/v1/catalog/services", consul.addr())).send();
    let json = services.json();
    let tags: Vec<&str> = json["web"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(sorted, ["blue", "v1", "v2"]);
    let nodes = http::get(&format!("{}/v1/catalog/nodes", consul.addr()))
        .send()
        .json();
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    let node = http::get(&format!("{}/v1/catalog/node/node-a", consul.addr()))
        .send()
        .json();
    assert_eq!(node["Services"]["web-1"]["Port"], 8080);
    let none = http::get(&format!("{}/v1/catalog/node/nope", consul.addr())).send();
    assert_eq!((none.status, none.text().as_str()), (200, "null"));
}

/// A blocking query on a service returns when that service changes, not
/// when another does (its index is the service's own).
#[test]
fn server_blocks_on_the_index_of_the_service() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    consul.register(Registration::new("db", "db-1").port(5432));
    let index = health(&consul, "web").index();
    assert_eq!(index, consul.service_index("web"));
    let url = format!(
        "{}/v1/health/service/web?index={index}&wait=30s",
        consul.addr()
    );
    let waiting = thread::spawn(move || http::get(&url).send());
    consul.wait_parked(1);
    consul.register(Registration::new("db", "db-2").port(5432));
    consul.set_check("node-a", "web-1", "critical");
    let reply = waiting.join().unwrap();
    assert!(reply.index() > index);
    assert_eq!(reply.json()[0]["Checks"][0]["Status"], "critical");
    // Deregistering moves the index too.
    let before = consul.service_index("web");
    consul.deregister("node-a", "web-1");
    assert!(consul.service_index("web") > before);
    assert_eq!(ids(&health(&consul, "web")), ["web-2", "web-3"]);
}

/// Catalog reads are filtered by service:read and node:read, never
/// denied; the header says so only to a request that sent a token; an
/// unknown token is 403 "ACL not found"; registering needs service:write.
#[test]
fn server_acls_filter_catalog_reads() {
    let acl = Acl::new("root").token(
        "api-only",
        [
            Rule::service_prefix("api", Policy::Read),
            Rule::node_prefix("", Policy::Read),
        ],
    );
    let consul = ConsulServer::with_acl(acl);
    three_webs(&consul);
    let get = |q: &str| http::get(&format!("{}/v1/health/service/{q}", consul.addr()));
    let r = get("web").token("api-only").send();
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert_eq!(r.header("X-Consul-Results-Filtered-By-ACLs"), Some("true"));
    let r = get("web").send();
    assert_eq!(r.text(), "[]");
    assert_eq!(r.header("X-Consul-Results-Filtered-By-ACLs"), None);
    assert_eq!(ids(&get("web").token("root").send()).len(), 3);
    let r = get("web").token("nobody").send();
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    let body = r#"{"Node":"n","Address":"10.0.0.5","Service":{"Service":"web","Port":80}}"#;
    let url = format!("{}/v1/catalog/register", consul.addr());
    assert_eq!(http::put(&url, body).token("api-only").send().status, 403);
    assert_eq!(http::put(&url, body).token("root").send().status, 200);
    assert_eq!(ids(&get("web").token("root").send()).len(), 4);
}

// ---------------------------------------------------------------------------
// Rendering.

const UPSTREAM: &str = "upstream web {\n\
{% for s in service('web') %}\n  server {{ s.address }}:{{ s.port }}; # {{ s.id }} {{ s.tags | join(',') }} {{ s.status }}\n{% else %}\n  server 127.0.0.1:65535 down;\n{% endfor %}\n}\n";

#[test]
fn service_renders_healthy_instances_sorted_whatever_consul_sent() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    consul.register(
        Registration::new("web", "web-0")
            .node("node-0", "10.0.0.9")
            .port(1),
    );
    consul.set_check("node-0", "web-0", "critical");
    Test::new()
        .file("a.j2", UPSTREAM)
        .args(["render", "--source", &format!("consul={}", consul.addr()), "-t", "a.j2"])
        .run()
        .success()
        .stdout_is(
            "upstream web {\n  server 192.0.2.1:8080; # web-1 v1 passing\n  \
             server 10.0.0.2:0; # web-2  passing\n  server 10.0.0.3:8080; # web-3 blue,v2 passing\n}\n",
        );
    let requests = consul.requests();
    let q: Vec<&str> = requests.iter().map(|r| r.query.as_str()).collect();
    assert_eq!(q, ["passing"], "one query, healthy instances only");
}

#[test]
fn query_forms_states_and_the_other_catalog_functions() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    consul.set_check("node-c", "web-3", "warning");
    let template = "{{ service('v2.web') | map(attribute='id') | join(',') }}|\
{{ service('web', 'any') | map(attribute='status') | join(',') }}|\
{{ service('web', state='passing,warning') | length }}|\
{{ service('web@dc1', tag=['v1']) | map(attribute='ID') | join(',') }}|\
{% for s in services() %}{{ s.Name }}={{ s.tags | join('+') }} {% endfor %}|\
{% for n in nodes() %}{{ n.Node }}@{{ n.address }} {% endfor %}|\
{{ node('node-a').node.address }} {{ node('node-a').Services[0].Service }} {{ node('nope') is none }}\n";
    Test::new()
        .file("a.j2", template)
        .args(["render", "--source", &format!("consul={}", consul.addr()), "-t", "a.j2"])
        .run()
        .success()
        .stdout_is(
            "|passing,passing,warning|3|web-1|Web= web=blue+v1+v2 |node-a@10.0.0.1 node-b@10.0.0.2 node-c@10.0.0.3 |10.0.0.1 web true\n",
        );
    let bad = Test::new()
        .file("a.j2", "{{ service('web', 'sick') }}")
        .args([
            "render",
            "--source",
            &format!("consul={}", consul.addr()),
            "-t",
            "a.j2",
        ])
        .run()
        .code(1);
    bad.stderr_has("unknown health state \"sick\"");
    Test::new()
        .file("a.j2", "{{ service('web') }}")
        .file("d.json", "{}")
        .args(["render", "--data", "d.json", "-t", "a.j2"])
        .run()
        .code(1)
        .stderr_has("service discovery reads a Consul source");
}

/// A converted consul-template template keeps rendering: `service`,
/// `.Address`, `.Port` as Go spells them.
#[test]
fn a_converted_consul_template_template_renders() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    let t = Test::new().file(
        "in/upstream.ctmpl",
        "upstream web {\n{{ range service \"web\" }}  server {{ .Address }}:{{ .Port }};\n{{ end }}}\n",
    );
    let t = t.args([
        "convert",
        "consul-template",
        "-t",
        "in/upstream.ctmpl:upstream.conf",
        "--consul-addr",
        &consul.addr(),
        "-o",
        "out",
    ]);
    t.run().success();
    t.args(["render", "-c", "out/stencil.toml"])
        .run()
        .success()
        .file_is(
            "out/upstream.conf",
            "upstream web {\n  server 192.0.2.1:8080;\n  server 10.0.0.2:0;\n  server 10.0.0.3:8080;\n}\n",
        );
}

#[test]
fn deps_lists_the_catalog_queries_a_template_made() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    Test::new()
        .file("a.j2", "{{ service('v2.web', near='_agent') | length }} {{ services(dc='dc1') | length }}\n")
        .args(["deps", "--source", &format!("consul={}", consul.addr()), "-t", "a.j2"])
        .run()
        .success()
        .stdout_is(
            "a.j2 -> stdout\n  file    a.j2\n  catalog consul:service(\"web\", tag=\"v2\", near=\"_agent\")\n  \
             catalog consul:services(dc=\"dc1\")\n",
        );
}

/// Every new error path with a token set: the token never shows.
#[test]
fn catalog_errors_never_show_the_token() {
    let acl = Acl::new("root").token(TOKEN, [Rule::node_prefix("", Policy::Read)]);
    let consul = ConsulServer::with_acl(acl);
    three_webs(&consul);
    let source = format!("consul={}", consul.addr());
    let run = |template: &str, token: &str| {
        Test::new()
            .env("CONSUL_HTTP_TOKEN", token)
            .file("a.j2", template)
            .args([
                "render",
                "--source",
                &source,
                "-t",
                "a.j2",
                "--log-level",
                "trace",
            ])
            .run()
            .code(1)
    };
    // Filtered by ACLs: partial data is an error naming the query.
    run("{{ service('web') }}", TOKEN)
        .stderr_has("service(\"web\") at")
        .stderr_has("filtered by ACLs")
        .stderr_lacks(TOKEN);
    // An unknown token: 403.
    let unknown = format!("{TOKEN}-gone");
    run("{{ nodes() }}", &unknown)
        .stderr_has("ACL not found")
        .stderr_lacks(TOKEN);
    // Bad arguments.
    run("{{ service('bad name!') }}", TOKEN)
        .stderr_lacks(TOKEN)
        .stderr_has("not a service name");
    run("{{ node() }}", TOKEN)
        .stderr_lacks(TOKEN)
        .stderr_has("node() needs a node name");
    // Not a Consul agent: something answering 404 without an index.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here\n");
    });
    Test::new()
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .file("a.j2", "{{ services() }}")
        .args([
            "render",
            "--source",
            &format!("consul=http://{addr}"),
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("without X-Consul-Index")
        .stderr_lacks(TOKEN);
}

// ---------------------------------------------------------------------------
// Watching.

const WATCHED: &str = r#"
[[templates]]
source = "upstream.j2"
destination = "upstream.conf"
reload = "echo r >> reloads"

[[templates]]
source = "other.j2"
destination = "other.conf"
"#;

/// Issue 14 item 5: three instances render; one goes critical, the file
/// drops it and the reload runs once; deregistered all, the upstream is
/// empty (the template's `{% else %}`); the template reading another
/// service is not rendered again.
#[test]
fn watch_follows_health_and_membership_with_one_reload_per_change() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    consul.register(Registration::new("db", "db-1").port(5432));
    let config = format!(
        "[sources.consul]\nkind = \"consul\"\naddress = \"{}\"\n{WATCHED}",
        consul.addr()
    );
    let mut run = Test::new()
        .file("upstream.j2", UPSTREAM)
        .file(
            "other.j2",
            "{{ service('db') | map(attribute='id') | join(',') }}\n",
        )
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file(
        "upstream.conf",
        "upstream web {\n  server 192.0.2.1:8080; # web-1 v1 passing\n  \
         server 10.0.0.2:0; # web-2  passing\n  server 10.0.0.3:8080; # web-3 blue,v2 passing\n}\n",
    );
    run.wait_file("other.conf", "db-1\n");
    run.wait_file("reloads", "r\n");
    // Both templates' queries parked: a change now is seen.
    consul.wait_parked(2);
    let other = renders(addr, "other.conf");

    consul.set_check("node-b", "web-2", "critical");
    run.wait_file(
        "upstream.conf",
        "upstream web {\n  server 192.0.2.1:8080; # web-1 v1 passing\n  \
         server 10.0.0.3:8080; # web-3 blue,v2 passing\n}\n",
    );
    run.wait_file("reloads", "r\nr\n");

    for (node, id) in [
        ("node-a", "web-1"),
        ("node-b", "web-2"),
        ("node-c", "web-3"),
    ] {
        consul.deregister(node, id);
    }
    run.wait_file(
        "upstream.conf",
        "upstream web {\n  server 127.0.0.1:65535 down;\n}\n",
    );
    // One more reload, not one per instance: a third "r" alone, so the
    // critical check above gave exactly one.
    run.wait_file("reloads", "r\nr\nr\n");
    assert_eq!(
        renders(addr, "other.conf"),
        other,
        "other.conf reads only db"
    );
}

fn renders(addr: std::net::SocketAddr, template: &str) -> u64 {
    let (_, body) = status_get(addr, "/status").expect("/status answers");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["templates"][template]["renders"]
        .as_u64()
        .unwrap_or_else(|| panic!("no template {template} in /status: {json}"))
}

/// The runnable example under templates-examples/consul-services/: its
/// services.json registered through the catalog endpoint, rendered to
/// exactly its expected/ files.
#[test]
fn the_consul_services_example_renders_its_expected_output() {
    let consul = ConsulServer::start();
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates-examples/consul-services"
    );
    let seed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/services.json")).unwrap())
            .unwrap();
    for reg in seed.as_array().unwrap() {
        let r = http::put(
            &format!("{}/v1/catalog/register", consul.addr()),
            reg.to_string(),
        )
        .send();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut t = Test::new().env("CONSUL_HTTP_ADDR", consul.addr());
    for f in ["stencil.toml", "haproxy.cfg.j2", "upstream.conf.j2"] {
        t = t.file(
            &format!("ex/{f}"),
            std::fs::read(format!("{dir}/{f}")).unwrap(),
        );
    }
    let mut out = t.args(["render", "-c", "ex/stencil.toml"]).run().success();
    for f in ["haproxy.cfg", "upstream.conf"] {
        let want = std::fs::read_to_string(format!("{dir}/expected/{f}")).unwrap();
        out = out.file_is(&format!("ex/out/{f}"), &want);
    }
}

/// The documented guard: with `required`, a service with no instance left
/// fails the render and the installed file stays as it was, byte for byte.
#[test]
fn a_required_guard_keeps_the_last_good_file_when_no_instance_is_left() {
    let consul = ConsulServer::start();
    consul.register(Registration::new("web", "web-1").port(80));
    let template = "{% for s in service('web') | required('no instance of web') %}{{ s.address }}:{{ s.port }}\n{% endfor %}";
    let source = format!("consul={}", consul.addr());
    let t = Test::new().file("a.j2", template);
    let t = t.args(["render", "--source", &source, "-t", "a.j2:out.conf"]);
    t.run().success().file_is("out.conf", "127.0.0.1:80\n");
    consul.deregister("node1", "web-1");
    t.run()
        .code(1)
        .stderr_has("no instance of web")
        .file_is("out.conf", "127.0.0.1:80\n");
}

// ---------------------------------------------------------------------------
// The watch of a catalog query, through the library.

/// One blocking query per catalog query, from the index the render read:
/// a change to another service wakes nothing (its index is that
/// service's); a health change is reported as a change of that query; a
/// change that leaves the sorted answer as it was (Consul reordering, a
/// registration rewritten unchanged) reports nothing.
#[test]
fn a_catalog_watch_reports_changes_of_its_own_query_only() {
    use stencil::{CatalogQuery, ConsulConfig, ConsulSource, Source, SourceEvent, WatchSpec};
    let consul = ConsulServer::start();
    three_webs(&consul);
    let mut config = ConsulConfig::new(consul.addr());
    config.query_wait = std::time::Duration::from_secs(30);
    let source = std::sync::Arc::new(ConsulSource::new("c", &config).unwrap());
    let query = CatalogQuery::Service {
        name: "web".into(),
        tags: Vec::new(),
        dc: None,
        near: None,
        passing: true,
    };
    // The render's read, which the watch starts from.
    assert!(source.catalog(&query).is_ok());
    let spec = WatchSpec {
        catalog: [query.clone()].into(),
        ..WatchSpec::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let future = source.clone().watch("c".into(), spec, tx).unwrap();
    let task = stencil::async_runtime().spawn(future);
    consul.wait_parked(1);
    let first = consul.requests().len();
    // Another service: the parked query stays parked.
    consul.register(Registration::new("db", "db-1").port(5432));
    // The same registration again: a new index, the same answer.
    consul.register(
        Registration::new("web", "web-1")
            .node("node-a", "10.0.0.1")
            .address("192.0.2.1")
            .port(8080)
            .tags(&["v1"])
            .meta("version", "1.2"),
    );
    consul.wait_until("the query to come back and park again", |log| {
        log.len() > first && consul.parked() == 1
    });
    // Any event of that answer was sent before the next query went out.
    while let Ok(e) = rx.try_recv() {
        assert!(
            matches!(e, SourceEvent::Queries { .. }),
            "an unchanged answer reported {e:?}"
        );
    }
    consul.set_check("node-b", "web-2", "critical");
    let event = stencil::block_on(async {
        loop {
            let e = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
                .await
                .expect("an event in time")
                .expect("the watch runs");
            if !matches!(e, SourceEvent::Queries { .. }) {
                return e;
            }
        }
    });
    assert_eq!(
        event,
        SourceEvent::CatalogChanged {
            source: "c".into(),
            queries: vec![query],
        }
    );
    task.abort();
}

/// A deploy flaps instances (critical, passing, deregistered, registered
/// again): with the template's `wait`, the burst gives one render and one
/// reload, not one per flap.
#[test]
fn flapping_instances_give_one_reload_with_a_wait() {
    let consul = ConsulServer::start();
    three_webs(&consul);
    // `min` is far longer than the burst below, which the test makes
    // straight in the server's memory, so the burst is quiet long before it.
    let config = format!(
        "[sources.consul]\nkind = \"consul\"\naddress = \"{}\"\n\n[[templates]]\nsource = \"upstream.j2\"\n\
         destination = \"upstream.conf\"\nreload = \"echo r >> reloads\"\nwait = {{ min = \"3s\", max = \"30s\" }}\n",
        consul.addr()
    );
    let mut run = Test::new()
        .file("upstream.j2", UPSTREAM)
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml"])
        .spawn();
    run.wait_file("reloads", "r\n");
    consul.wait_parked(1);
    for status in ["critical", "passing", "critical", "warning", "passing"] {
        consul.set_check("node-a", "web-1", status);
        consul.set_check("node-c", "web-3", status);
    }
    consul.deregister("node-b", "web-2");
    consul.register(Registration::new("web", "web-2").node("node-b", "10.0.0.2"));
    consul.deregister("node-b", "web-2");
    run.wait_file(
        "upstream.conf",
        "upstream web {\n  server 192.0.2.1:8080; # web-1 v1 passing\n  \
         server 10.0.0.3:8080; # web-3 blue,v2 passing\n}\n",
    );
    run.wait_file("reloads", "r\nr\n");
    // One more change gives exactly one more reload: the burst gave one.
    consul.set_check("node-c", "web-3", "critical");
    run.wait_file("reloads", "r\nr\nr\n");
    assert_eq!(
        run.file("upstream.conf").unwrap(),
        "upstream web {\n  server 192.0.2.1:8080; # web-1 v1 passing\n}\n"
    );
}

/// Written against `ConsulTarget`, so it also runs against a real Consul
/// (`STENCIL_TEST_CONSUL_ADDR`): registrations go through
/// `/v1/catalog/register` with a name of its own, and are deregistered at
/// the end. filterNonPassing (agent/health_endpoint.go) moves the last
/// instance into a dropped one's place: with node-a's instance critical,
/// `?passing` answers c before b.
#[test]
fn target_passing_answers_out_of_order() {
    let t = crate::support::consul::ConsulTarget::start();
    let tag = t.key("").replace(['/', '-'], "");
    let name = format!("svc{}", &tag[tag.len().saturating_sub(12)..]);
    let send = |path: &str, body: String| {
        let call = http::put(&format!("{}/v1/catalog/{path}", t.addr()), body);
        let call = match t.token() {
            Some(tok) => call.token(tok),
            None => call,
        };
        let r = call.send();
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let nodes = ["a", "b", "c"].map(|n| format!("{name}-node-{n}"));
    for (i, node) in nodes.iter().enumerate() {
        let status = if i == 0 { "critical" } else { "passing" };
        send(
            "register",
            serde_json::json!({
                "Node": node, "Address": format!("10.9.0.{i}"),
                "Service": {"ID": format!("{name}-{i}"), "Service": name, "Port": 80},
                "Check": {"CheckID": format!("service:{name}-{i}"), "Name": "check",
                          "ServiceID": format!("{name}-{i}"), "Status": status},
            })
            .to_string(),
        );
    }
    let mut get = http::get(&format!("{}/v1/health/service/{name}?passing", t.addr()));
    if let Some(tok) = t.token() {
        get = get.token(tok);
    }
    let reply = get.send();
    let order: Vec<String> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Node"]["Node"].as_str().unwrap().to_string())
        .collect();
    for node in &nodes {
        send("deregister", serde_json::json!({"Node": node}).to_string());
    }
    assert_eq!(order, [nodes[2].clone(), nodes[1].clone()]);
}
