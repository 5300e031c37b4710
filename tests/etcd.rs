//! The etcd source against real etcd servers (every version found: 3.4 and
//! 3.5 under scripts/test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stencil::EtcdSource;
use stencil::{Source, SourceEvent, WatchSpec};

use crate::support::Test;
use crate::support::etcd::{self, Certs, Etcd};

const TEMPLATE: &str = "db={{ key('db/host') }}:{{ key_or('db/port', '5432') }}\n\
{% for name in ls('upstreams') %}\nupstream {{ name }} {{ key('upstreams/' ~ name) }}\n{% endfor %}\n";

fn seed(etcd: &Etcd) {
    etcd.put("/apps/web/db/host", "db.internal");
    etcd.put("/apps/web/upstreams/a", "10.0.0.1:80");
    etcd.put("/apps/web/upstreams/b", "10.0.0.2:80");
    etcd.put("/apps/other/secret", "not for web");
}

#[test]
fn renders_keys_and_prefixes_from_every_etcd_version() {
    for binary in etcd::binaries() {
        let etcd = Etcd::start_with(&binary, None);
        seed(&etcd);
        let source = format!("etcd={}?prefix=/apps/web/", etcd.url());
        Test::new()
            .file("a.j2", TEMPLATE)
            .args(["render", "--source", &source, "-t", "a.j2:out.conf"])
            .run()
            .success()
            .file_is(
                "out.conf",
                "db=db.internal:5432\nupstream a 10.0.0.1:80\nupstream b 10.0.0.2:80\n",
            );
        eprintln!("ok with {}", etcd.version());
    }
}

#[test]
fn config_file_source_with_etcdctl_endpoints_and_a_dead_first_endpoint() {
    let etcd = Etcd::start();
    seed(&etcd);
    let dead = "http://127.0.0.1:9"; // discard port: connection refused
    Test::new()
        .file("a.j2", TEMPLATE)
        .file(
            "stencil.toml",
            "[sources.kv]\nkind = \"etcd\"\nprefix = \"/apps/web\"\n\n[[templates]]\nsource = \"a.j2\"\n",
        )
        .env("ETCDCTL_ENDPOINTS", format!("{dead},{}", etcd.url()))
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("db=db.internal:5432\nupstream a 10.0.0.1:80\nupstream b 10.0.0.2:80\n");
}

#[test]
fn refused_connection_names_the_endpoint_and_fails_at_once() {
    let started = Instant::now();
    Test::new()
        .file("a.j2", "{{ key('x') }}\n")
        .args([
            "render",
            "--source",
            "etcd=http://127.0.0.1:9",
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("etcd at http://127.0.0.1:9 did not answer")
        .stderr_has("Connection refused");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "render did not give up at once"
    );
}

#[test]
fn wait_for_data_waits_for_a_key_that_appears_later() {
    let etcd = Etcd::start();
    let mut run = Test::new()
        .file("a.j2", "{{ key('late') }}\n")
        .args([
            "render",
            "--wait-for-data",
            "5m",
            "--source",
            &format!("etcd={}", etcd.url()),
            "-t",
            "a.j2",
        ])
        .spawn();
    // Written only once stencil says it waits, so the render that finds the
    // key is one that had missed it.
    run.wait_for("stencil to wait for the key", |run| {
        run.stderr().contains("waiting for data").then_some(())
    });
    etcd.put("/late", "arrived");
    assert_eq!(
        run.wait_exit(Duration::from_secs(60)),
        0,
        "{}",
        run.stderr()
    );
    assert_eq!(run.stdout(), "arrived\n");
}

#[test]
fn malformed_source_url_is_a_usage_error() {
    for (url, needle) in [
        ("etcd=", "the URL is empty"),
        ("kv=etcd+http://?prefix=/a", "no endpoint"),
        ("kv=http://127.0.0.1:2379", "say which kind"),
        (
            "etcd=http://127.0.0.1:2379?prefx=/a",
            "unknown URL parameter \"prefx\"",
        ),
        ("etcd=gopher://x", "unsupported URL scheme"),
        ("noequals", "expected NAME=URL"),
    ] {
        Test::new()
            .file("a.j2", "x\n")
            .args(["render", "--source", url, "-t", "a.j2"])
            .run()
            .code(2)
            .stderr_has(needle);
    }
}

#[test]
fn a_value_that_is_not_utf8_is_an_error_naming_the_key() {
    let etcd = Etcd::start();
    etcd.put("/bin", [0xff, 0xfe, 0x00]);
    Test::new()
        .file("a.j2", "{{ key('bin') }}\n")
        .args([
            "render",
            "--source",
            &format!("etcd={}", etcd.url()),
            "-t",
            "a.j2",
        ])
        .run()
        .code(1)
        .stderr_has("the value of key \"/bin\" is not UTF-8");
}

#[test]
fn a_one_mebibyte_value_renders() {
    let etcd = Etcd::start();
    let big: String = "x".repeat(1024 * 1024);
    etcd.put("/big", &big);
    let out = Test::new()
        .file("a.j2", "{{ key('big') }}")
        .args([
            "render",
            "--source",
            &format!("etcd={}", etcd.url()),
            "-t",
            "a.j2",
        ])
        .run()
        .success();
    assert_eq!(out.stdout.len(), big.len());
}

#[test]
fn ten_thousand_keys_under_a_prefix_cost_one_range_request() {
    let etcd = Etcd::start();
    let client = etcd.client(None);
    stencil::block_on(async {
        for i in 0..10_000 {
            client
                .put(
                    format!("/many/k{i:05}").as_bytes(),
                    format!("v{i}").as_bytes(),
                )
                .await
                .unwrap();
        }
    });
    let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
    let sources =
        stencil::Sources::from_iter([("kv".to_string(), source.clone() as Arc<dyn Source>)]);
    let template = stencil::Template::from_source(
        std::path::Path::new("t.j2"),
        "{% for k, v in kv('many') | items %}{{ k }}={{ v }}\n{% endfor %}{{ key('many/k00042') }}\n".into(),
    )
    .unwrap();
    let scope = stencil::Scope {
        sources,
        default_source: Some("kv".into()),
    };
    let before = source
        .client()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let rendered = template.render(&scope);
    let text = rendered.result.unwrap();
    let after = source
        .client()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(text.lines().count(), 10_001);
    assert!(text.starts_with("k00000=v0\n"));
    assert!(text.ends_with("v42\n"));
    assert_eq!(
        after - before,
        1,
        "one range request for the prefix; the key inside it is served from it"
    );
}

const ROOT_PW: &str = "root-pw-7c1e";
const USER_PW: &str = "web-pw-93ab1";

/// The auth tests run on every etcd version found (`for binary in
/// etcd::binaries()`): 3.4's and 3.5's gateways differ in their auth errors.
fn with_auth(binary: &std::path::Path) -> Etcd {
    let etcd = Etcd::start_with(binary, None);
    seed(&etcd);
    etcd.enable_auth(ROOT_PW, "web", USER_PW, "/apps/web/");
    etcd
}

#[test]
fn username_and_password_file_authenticate() {
    for binary in etcd::binaries() {
        let etcd = with_auth(&binary);
        Test::new()
        .file("a.j2", TEMPLATE)
        .file("pw", format!("{USER_PW}\n"))
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/apps/web/\"\nusername = \"web\"\npassword_file = \"pw\"\n\n[[templates]]\nsource = \"a.j2\"\n",
                etcd.url()
            ),
        )
        .args(["render", "-c", "stencil.toml", "--log-level", "trace"])
        .run()
        .success()
        .stdout_is("db=db.internal:5432\nupstream a 10.0.0.1:80\nupstream b 10.0.0.2:80\n")
        .stderr_lacks(USER_PW);
    }
}

#[test]
fn etcdctl_user_gives_user_and_password() {
    for binary in etcd::binaries() {
        let etcd = with_auth(&binary);
        Test::new()
            .file("a.j2", "{{ key('db/host') }}\n")
            .env("ETCDCTL_USER", format!("web:{USER_PW}"))
            .args([
                "render",
                "--source",
                &format!("etcd={}?prefix=/apps/web", etcd.url()),
                "-t",
                "a.j2",
            ])
            .run()
            .success()
            .stdout_is("db.internal\n");
    }
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    for binary in etcd::binaries() {
        let etcd = with_auth(&binary);
        Test::new()
            .file("a.j2", "{{ key('db/host') }}\n")
            .env("ETCDCTL_USER", "web:wrong-secret-5d2")
            .args([
                "render",
                "--log-level",
                "trace",
                "--source",
                &format!("etcd={}?prefix=/apps/web", etcd.url()),
                "-t",
                "a.j2",
            ])
            .run()
            .code(1)
            .stderr_has("cannot authenticate to etcd as user \"web\"")
            .stderr_has("wrong username or password")
            .stderr_lacks("wrong-secret-5d2");
    }
}

#[test]
fn a_prefix_the_user_may_not_read_says_permission() {
    for binary in etcd::binaries() {
        let etcd = with_auth(&binary);
        Test::new()
            .file("a.j2", "{{ key('secret') }}\n")
            .env("ETCDCTL_USER", format!("web:{USER_PW}"))
            .args([
                "render",
                "--source",
                &format!("etcd={}?prefix=/apps/other", etcd.url()),
                "-t",
                "a.j2",
            ])
            .run()
            .code(1)
            .stderr_has("permission denied")
            .stderr_has("lacks permission")
            .stderr_lacks(USER_PW);
    }
}

#[test]
fn auth_required_but_no_credentials_says_so() {
    for binary in etcd::binaries() {
        let etcd = with_auth(&binary);
        Test::new()
            .file("a.j2", "{{ key('db/host') }}\n")
            .args([
                "render",
                "--source",
                &format!("etcd={}?prefix=/apps/web", etcd.url()),
                "-t",
                "a.j2",
            ])
            .run()
            .code(1)
            .stderr_has("etcd has authentication enabled");
    }
}

#[test]
fn reauthenticates_after_an_etcd_restart() {
    for binary in etcd::binaries() {
        let mut etcd = with_auth(&binary);
        let mut config = etcd.config(Some(("web", USER_PW)));
        config.prefix = "/apps/web/".into();
        let source = EtcdSource::new("kv", &config).unwrap();
        assert_eq!(
            source.get("db/host").unwrap().as_deref(),
            Some("db.internal")
        );
        // Simple tokens live in the server's memory: a restart invalidates the
        // token the client holds.
        etcd.restart();
        source.refresh();
        assert_eq!(
            source.get("db/host").unwrap().as_deref(),
            Some("db.internal")
        );
    }
}

#[test]
fn tls_with_client_certificates() {
    let certs = Arc::new(Certs::generate());
    let etcd = Etcd::start_with(&etcd::binary(), Some(certs.clone()));
    etcd.put("/tls/key", "over tls");
    let config = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[[templates]]\nsource = \"a.j2\"\n",
        etcd.url(),
        certs.path("ca.pem").display(),
        certs.path("client.pem").display(),
        certs.path("client.key").display()
    );
    Test::new()
        .file("a.j2", "{{ key('tls/key') }}\n")
        .file("stencil.toml", &config)
        .args(["render", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("over tls\n");
    // Without the client certificate the server refuses the handshake.
    let no_client_cert = config
        .lines()
        .filter(|l| !l.starts_with("cert_file") && !l.starts_with("key_file"))
        .collect::<Vec<_>>()
        .join("\n");
    Test::new()
        .file("a.j2", "{{ key('tls/key') }}\n")
        .file("stencil.toml", no_client_cert)
        .args(["render", "-c", "stencil.toml"])
        .run()
        .code(1)
        .stderr_has(&etcd.url());
}

// ---------------------------------------------------------------------------
// Watching.

fn recv(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<SourceEvent>,
    within: Duration,
) -> SourceEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = stencil::block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await })
            .expect("no change arrived in time")
            .expect("the watch ended");
        // Which member the watch is on is reported for /status; these
        // tests follow the data.
        if !matches!(event, SourceEvent::Members { .. }) {
            return event;
        }
    }
}

/// Collects changed keys until every expected key was seen.
fn collect_keys(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<SourceEvent>,
    expected: &[&str],
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !expected.iter().all(|e| seen.iter().any(|s| s == e)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv(rx, left) {
            SourceEvent::Changed { keys, .. } => seen.extend(keys),
            SourceEvent::Resync { .. } => seen.push("<resync>".into()),
            _ => {}
        }
    }
    seen
}

#[test]
fn watch_sees_changes_and_resumes_after_a_restart_without_losing_any() {
    for binary in etcd::binaries() {
        let mut etcd = Etcd::start_with(&binary, None);
        let start = etcd.put("/apps/web/db/host", "one");
        let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = {
            let source = source.clone();
            stencil::async_runtime().spawn(async move {
                let spec = WatchSpec {
                    keys: ["apps/web/db/host".to_string()].into(),
                    prefixes: ["apps/web/upstreams".to_string()].into(),
                    catalog: Default::default(),
                };
                source.watch_from(&spec, start + 1, &tx).await
            })
        };
        etcd.put("/apps/web/db/host", "two");
        etcd.put("/apps/web/unrelated", "x");
        etcd.put("/apps/web/upstreams/a", "1");
        let seen = collect_keys(&mut rx, &["apps/web/db/host", "apps/web/upstreams/a"]);
        assert!(!seen.iter().any(|k| k.contains("unrelated")), "{seen:?}");

        // Stop etcd, start it again and change keys at once: the watcher is
        // still backing off, so these changes happen while it is
        // disconnected. Resuming from the last revision + 1 delivers them.
        etcd.restart();
        etcd.put("/apps/web/upstreams/b", "2");
        etcd.delete("/apps/web/upstreams/a");
        etcd.put("/apps/web/db/host", "three");
        let seen = collect_keys(
            &mut rx,
            &[
                "apps/web/upstreams/b",
                "apps/web/upstreams/a",
                "apps/web/db/host",
            ],
        );
        assert!(!seen.contains(&"<resync>".to_string()), "{seen:?}");
        drop(rx);
        watcher.abort();
        eprintln!("ok with {}", etcd.version());
    }
}

#[test]
fn a_compacted_start_revision_asks_for_a_full_read() {
    for binary in etcd::binaries() {
        let etcd = Etcd::start_with(&binary, None);
        let first = etcd.put("/w/k", "1");
        etcd.put("/w/k", "2");
        let last = etcd.put("/w/k", "3");
        stencil::block_on(etcd.client(None).compact(last)).unwrap();
        let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = {
            let source = source.clone();
            let spec = WatchSpec {
                keys: Default::default(),
                prefixes: ["w".to_string()].into(),
                catalog: Default::default(),
            };
            stencil::async_runtime()
                .spawn(async move { source.watch_from(&spec, first + 1, &tx).await })
        };
        assert!(matches!(
            recv(&mut rx, Duration::from_secs(30)),
            SourceEvent::Resync { .. }
        ));
        // And the watch goes on after the resync.
        etcd.put("/w/k", "4");
        assert_eq!(collect_keys(&mut rx, &["w/k"]), vec!["w/k".to_string()]);
        watcher.abort();
    }
}

#[test]
fn a_watch_the_user_may_not_make_is_an_error() {
    for binary in etcd::binaries() {
        let etcd = with_auth(&binary);
        let mut config = etcd.config(Some(("web", USER_PW)));
        config.prefix = "/apps/other/".into();
        let source = EtcdSource::new("kv", &config).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let spec = WatchSpec {
            keys: ["secret".to_string()].into(),
            prefixes: Default::default(),
            catalog: Default::default(),
        };
        let result = stencil::block_on(async {
            tokio::time::timeout(Duration::from_secs(30), source.watch_from(&spec, 1, &tx)).await
        })
        .expect("a refused watch must end, not hang");
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.contains("refused") && err.contains("permission denied"),
            "{err}"
        );
        assert!(!err.contains(USER_PW));
    }
}
