//! The reliability group: what `stencil watch` must survive as a sidecar
//! that runs for months (issue 11). kill -9 during installs, torn reads
//! during rewrites, etcd outages in a row, replies and watch lines over the
//! size cap, hostile values through a real etcd, special-file
//! destinations, a status server under a connection flood, and a bounded
//! soak. Every wait is a poll with a deadline; no assertion is on time
//! (the recovery times are printed, for the report).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::support::consul::ConsulServer;
use crate::support::etcd::Etcd;
use crate::support::{Running, Test, status_get as get};

fn status_json(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/status").expect("status server").1).unwrap()
}

fn wait_ready(run: &mut Running, addr: SocketAddr) {
    run.wait_for("/readyz to answer 200", |_| {
        (get(addr, "/readyz")?.0 == 200).then_some(())
    });
}

/// The delays, in ms, of the etcd watch's "next attempt in N ms" lines.
fn retry_delays(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("next attempt in ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

const ROOT_PASSWORD: &str = "root-pw-5e1f";
const PASSWORD: &str = "reader-pw-77c2";
const SECRET_VALUE: &str = "s3cr3t-value-9ab0";

/// etcd stopped and started three times in a row, each outage long enough
/// for an exponential backoff to have grown to seconds. Each time the key
/// put as etcd returns reaches the file; the watch's retries while etcd is
/// down stay at most 500 ms apart (so a returned etcd is noticed within
/// that), each retry is one short line without the password or a value,
/// and `/status` counts every failed attempt and shows the latest error.
#[test]
fn three_etcd_outages_in_a_row_are_each_noticed_at_once() {
    let mut etcd = Etcd::start();
    etcd.enable_auth(ROOT_PASSWORD, "reader", PASSWORD, "/app/");
    let root = Some(("root", ROOT_PASSWORD));
    etcd.put_as(root, "/app/a", "0");
    etcd.put_as(root, "/app/secret", SECRET_VALUE);
    let config = format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/app/\"\n\
         username = \"reader\"\npassword = \"{PASSWORD}\"\n\n\
         [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n",
        etcd.url()
    );
    let mut run = Test::new()
        .file("a.j2", "a={{ key('a') }} {{ key('secret') | length }}\n")
        .file("stencil.toml", config)
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "a=0 17\n");
    wait_ready(&mut run, addr);

    for round in 1..=3 {
        etcd.stop();
        // Enough failed attempts that a doubling backoff (250 ms, 500 ms,
        // 1 s, 2 s …) would be waiting seconds by now.
        let errors = run.wait_for("five failed attempts in /status", |_| {
            let s = status_json(addr);
            let kv = &s["sources"]["kv"];
            let n = kv["errors"].as_u64()?;
            (n >= 5 * round).then(|| (n, kv["last_error"].as_str().unwrap_or("").to_string()))
        });
        assert!(
            errors.1.contains("Connection refused"),
            "round {round}: /status shows {:?}, not the current error",
            errors.1
        );
        let readyz = get(addr, "/readyz").unwrap();
        assert!(
            readyz.0 == 503 && readyz.1.contains("Connection refused"),
            "round {round}: {readyz:?}"
        );

        etcd.restart();
        let back = Instant::now();
        let value = format!("{round}");
        etcd.put_as(root, "/app/a", &value);
        run.wait_file("a.conf", &format!("a={value} 17\n"));
        eprintln!(
            "reliability: outage {round}: the file had the new value {:?} after etcd was back",
            back.elapsed()
        );
        wait_ready(&mut run, addr);
    }

    let log = run.stderr();
    let delays = retry_delays(&log);
    assert!(delays.len() >= 15, "too few retry lines:\n{log}");
    assert!(
        delays.iter().all(|&d| d <= 500),
        "a retry waited longer than 500 ms: {delays:?}\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("next attempt in")) {
        assert!(
            line.len() < 300 && !line.contains("error sending request"),
            "a retry line is not short: {line}"
        );
    }
    for secret in [PASSWORD, SECRET_VALUE, ROOT_PASSWORD] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        let status = get(addr, "/status").unwrap().1;
        assert!(!status.contains(secret), "{secret} in /status");
    }
    // At least one per outage: a token etcd's restart dropped costs the
    // first attempt after it (PermissionDenied, then authenticating again).
    let reconnects = status_json(addr)["sources"]["kv"]["reconnects"].as_u64();
    assert!(reconnects >= Some(3), "{reconnects:?}");
}

fn etcd_config(url: &str, extra: &str) -> String {
    format!(
        "[sources.kv]\nkind = \"etcd\"\nendpoints = [\"{url}\"]\nprefix = \"/app/\"\n{extra}\n\
         [[templates]]\nsource = \"a.j2\"\ndestination = \"a.conf\"\n"
    )
}

/// A reply (one-shot render) and a watch message (watch) over
/// `max_response_size`, from a real etcd: an error naming the endpoint and
/// the limit, the old file kept, `/healthz` answering; never the value.
#[test]
fn etcd_replies_and_watch_messages_over_the_cap_are_errors_naming_the_endpoint() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "small");
    let big = format!("{SECRET_VALUE}{}", "x".repeat(20_000));
    let t = Test::new().file("a.j2", "a={{ key('a') }}\n").file(
        "stencil.toml",
        etcd_config(&etcd.url(), "max_response_size = 4096\n"),
    );
    let mut run = t
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "a=small\n");
    wait_ready(&mut run, addr);

    etcd.put("/app/a", &big);
    let limit = format!(
        "etcd at {} sent a watch message over the 4096-byte limit",
        etcd.url()
    );
    run.wait_for("the watch message over the cap to be logged", |r| {
        r.stderr().contains(&limit).then_some(())
    });
    run.wait_for("/readyz to show the cap", |_| {
        let (code, body) = get(addr, "/readyz")?;
        (code == 503 && body.contains("4096-byte limit")).then_some(())
    });
    assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(run.file("a.conf").as_deref(), Some("a=small\n"));
    assert!(!run.stderr().contains(SECRET_VALUE), "{}", run.stderr());
    drop(run);

    // One-shot: the range reply itself is over the cap.
    Test::new()
        .file("a.j2", "a={{ key('a') }}\n")
        .file("out.conf", "old\n")
        .file(
            "stencil.toml",
            etcd_config(&etcd.url(), "max_response_size = 4096\n"),
        )
        .args(["render", "-c", "stencil.toml", "-t", "a.j2:out.conf"])
        .run()
        .code(1)
        .stderr_has(&format!(
            "etcd at {} sent a reply over the 4096-byte limit (max_response_size)",
            etcd.url()
        ))
        .stderr_lacks(SECRET_VALUE)
        .file_is("out.conf", "old\n");
}

/// A Consul reply over the cap, from the Consul test server.
#[test]
fn a_consul_reply_over_the_cap_is_an_error_naming_the_address() {
    let consul = ConsulServer::start();
    consul.put("big", format!("{SECRET_VALUE}{}", "y".repeat(20_000)));
    Test::new()
        .file("a.j2", "{{ key('big') }}\n")
        .file("out.conf", "old\n")
        .file(
            "stencil.toml",
            format!(
                "[sources.kv]\nkind = \"consul\"\naddress = \"{}\"\nmax_response_size = 4096\n",
                consul.addr()
            ),
        )
        .args(["render", "-c", "stencil.toml", "-t", "a.j2:out.conf"])
        .run()
        .code(1)
        .stderr_has("sent a reply over the 4096-byte limit (max_response_size)")
        .stderr_has(&consul.addr())
        .stderr_lacks(SECRET_VALUE)
        .file_is("out.conf", "old\n");
}

/// A tiny etcd-like server: every request but a watch gets a range reply
/// holding `/app/a` = "1"; a watch gets a created message, then bytes
/// without a newline until the client hangs up. A real etcd cannot send
/// an endless line.
fn endless_line_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve_fake_etcd(conn));
        }
    });
    addr
}

fn serve_fake_etcd(mut conn: TcpStream) {
    let range = r#"{"header":{"revision":"1"},"kvs":[{"key":"L2FwcC9h","value":"MQ==","mod_revision":"1"}],"count":"1"}"#;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let (head_end, length) = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (pos + 4, length);
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let is_watch = String::from_utf8_lossy(&buf[..head_end]).contains("/v3/watch");
        buf.drain(..head_end + length);
        if !is_watch {
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{range}",
                range.len()
            );
            if conn.write_all(reply.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let created = "{\"result\":{\"header\":{\"revision\":\"1\"},\"created\":true}}\n";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{created}\r\n",
            created.len()
        );
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        let endless = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
        while conn.write_all(endless.as_bytes()).is_ok() {}
        return;
    }
}

/// An etcd watch stream without newlines is cut at the cap (it grew RSS to
/// 124 MB and took a minute of CPU before): an error naming the endpoint,
/// the file kept, `/healthz` answering throughout.
#[test]
fn an_endless_watch_line_is_cut_at_the_cap() {
    let addr = endless_line_server();
    let url = format!("http://{addr}");
    let mut run = Test::new()
        .file("a.j2", "a={{ key('a') }}\n")
        .file(
            "stencil.toml",
            etcd_config(&url, "max_response_size = 1048576\n"),
        )
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let status = run.serving_on(1);
    run.wait_file("a.conf", "a=1\n");
    let limit = format!("etcd at {url} sent a watch message over the 1048576-byte limit");
    run.wait_for("the endless line to be cut", |r| {
        r.stderr().contains(&limit).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(get(status, "/healthz").map(|r| r.0), Some(200));
    }
    assert_eq!(run.file("a.conf").as_deref(), Some("a=1\n"));
}

/// 300 connections that send half a request each, under a 64-file limit:
/// the status server closes the oldest to make room and `/healthz` still
/// answers; a half-sent request is closed after the header timeout.
#[test]
fn half_sent_requests_do_not_starve_the_status_server() {
    let t = Test::new()
        .file("a.j2", "a\n")
        .via(["prlimit", "--nofile=64:64", "--"])
        .args(["watch", "-t", "a.j2:a.conf", "--listen", "127.0.0.1:0"]);
    let mut run = t.spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "a\n");
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(mut c) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        held.push(c);
    }
    run.wait_for("/healthz to answer during the flood", |_| {
        (get(addr, "/healthz")?.0 == 200).then_some(())
    });
    // The newest half-sent request is closed by the server, not held.
    let mut last = held.pop().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    match last.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the half-sent connection was not closed: {e}"),
    }
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "a half-sent request was answered"
    );
    assert!(
        !run.stderr().contains("Too many open files"),
        "{}",
        run.stderr()
    );
}

/// `n` copies of `c`, a line per 1 KiB: big enough that an install takes
/// several writes, so a kill lands in the middle of some.
fn filler(c: char, n: usize) -> String {
    let line: String = std::iter::repeat_n(c, 1023).chain(['\n']).collect();
    line.repeat(n / 1024)
}

/// kill -9 at 40 moments of one-shot renders that replace a 1 MiB file:
/// the destination is always the old file or the new one, whole.
#[test]
fn kill_9_during_installs_leaves_the_old_or_the_new_file_whole() {
    let old = filler('o', 1 << 20);
    let new = filler('n', 1 << 20);
    let t = Test::new()
        .file(
            "a.j2",
            "{% for i in range(1024) %}{{ key('line') }}\n{% endfor %}",
        )
        .file("d.json", format!("{{\"line\": \"{}\"}}", "n".repeat(1023)))
        .args(["render", "--data", "d.json", "-t", "a.j2:out.conf"]);
    let mut outcomes = [0usize; 2];
    for i in 0..40u64 {
        std::fs::write(t.path("out.conf"), &old).unwrap();
        let mut run = t.spawn();
        // Not a synchronisation: the moment of the kill, spread over the
        // render, the staging and the rename.
        std::thread::sleep(Duration::from_millis(i * 3));
        run.signal(nix::sys::signal::Signal::SIGKILL);
        run.wait_exit(Duration::from_secs(30));
        let now = std::fs::read_to_string(t.path("out.conf")).unwrap();
        assert!(
            now == old || now == new,
            "kill {i}: out.conf is neither the old nor the new file ({} bytes)",
            now.len()
        );
        outcomes[usize::from(now == new)] += 1;
    }
    eprintln!(
        "reliability: kill -9: {} old, {} new",
        outcomes[0], outcomes[1]
    );
}

/// A reader that reads the destination without pause while a watch
/// rewrites it 100 times never sees a torn file.
#[test]
fn readers_never_see_a_torn_file_during_watch_rewrites() {
    let data = |c: char| format!("{{\"line\": \"{}\"}}", c.to_string().repeat(1023));
    let t = Test::new()
        .file(
            "a.j2",
            "{% for i in range(256) %}{{ key('line') }}\n{% endfor %}",
        )
        .file("d.json", data('a'))
        .args(["watch", "--data", "d.json", "-t", "a.j2:out.conf"]);
    let mut run = t.spawn();
    run.wait_file("out.conf", &filler('a', 256 << 10));
    let path = t.path("out.conf");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                let first = text.chars().next().unwrap();
                assert!(
                    text.len() == 256 << 10 && text == filler(first, 256 << 10),
                    "a torn read: {} bytes",
                    text.len()
                );
                reads += 1;
            }
            reads
        }
    });
    for i in 0..100 {
        let c = if i % 2 == 0 { 'b' } else { 'a' };
        let tmp = t.path("d.json.tmp");
        std::fs::write(&tmp, data(c)).unwrap();
        std::fs::rename(&tmp, t.path("d.json")).unwrap();
        run.wait_file("out.conf", &filler(c, 256 << 10));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("a torn read");
    eprintln!("reliability: {reads} reads during 100 rewrites, none torn");
}

/// Values built to break a template engine or a file, through a real
/// etcd: each lands in the file byte for byte, never evaluated.
#[test]
fn hostile_values_through_etcd_are_written_literally() {
    let etcd = Etcd::start();
    let values = [
        "{{ 7 * 7 }}",
        "{% include '/etc/passwd' %}",
        "{% for i in range(1000000000) %}x{% endfor %}",
        "{{ ''.__class__ }}",
        "line\r\nnext\u{0}nul\u{202e}rtl",
        "$(rm -rf /) `id` ${HOME}",
    ];
    let big = "z".repeat(1 << 20);
    for (i, v) in values.iter().enumerate() {
        etcd.put(&format!("/app/v{i}"), v);
    }
    etcd.put("/app/big", &big);
    let template: String = (0..values.len())
        .map(|i| format!("{{{{ key('v{i}') }}}}|"))
        .chain(["{{ key('big') | length }}".to_string()])
        .collect();
    let expected = format!("{}|{}", values.join("|"), big.len());
    let t = Test::new()
        .file("a.j2", &template)
        .file("stencil.toml", etcd_config(&etcd.url(), ""));
    let mut run = t
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", &expected);
    wait_ready(&mut run, addr);
    // And a change of one of them, through the watch.
    etcd.put("/app/v0", "{{ 6 * 7 }}");
    run.wait_file(
        "a.conf",
        &expected.replacen("{{ 7 * 7 }}", "{{ 6 * 7 }}", 1),
    );
}

/// A destination that is a device node (through a symlink) or a FIFO is
/// refused: exit 1, nothing touched, no hang.
#[test]
fn special_file_destinations_are_refused() {
    let t = Test::new().file("a.j2", "a\n");
    std::os::unix::fs::symlink("/dev/null", t.path("masked.conf")).unwrap();
    nix::unistd::mkfifo(
        &t.path("fifo.conf"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for dest in ["masked.conf", "fifo.conf"] {
        let mut run = Test::new()
            .args([
                "render".to_string(),
                "-t".to_string(),
                format!("{}:{}", t.path("a.j2").display(), t.path(dest).display()),
            ])
            .spawn();
        assert_eq!(
            run.wait_exit(Duration::from_secs(30)),
            1,
            "{}",
            run.stderr()
        );
        assert!(run.stderr().contains(dest), "{}", run.stderr());
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::symlink_metadata(t.path("fifo.conf"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A bounded soak: 600 changes through a real etcd, each waited for in
/// the file; RSS after the last is within 1 MiB of RSS after the 100th
/// (bench/soak_bench.py runs the 20,000-write version).
#[test]
fn memory_stays_flat_over_many_writes() {
    let etcd = Etcd::start();
    etcd.put("/app/a", "0");
    let t = Test::new().file("a.j2", "a={{ key('a') }}\n").file(
        "stencil.toml",
        etcd_config(&etcd.url(), "").replace(
            "destination = \"a.conf\"\n",
            "destination = \"a.conf\"\nreload = \"true\"\n",
        ),
    );
    let mut run = t
        .args(["watch", "-c", "stencil.toml", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = run.serving_on(1);
    run.wait_file("a.conf", "a=0\n");
    let mut after_100 = 0;
    for i in 1..=600 {
        etcd.put("/app/a", i.to_string());
        run.wait_file("a.conf", &format!("a={i}\n"));
        let _ = get(addr, "/metrics");
        if i == 100 {
            after_100 = rss_kib(run.pid());
        }
    }
    let after_600 = rss_kib(run.pid());
    eprintln!("reliability: RSS {after_100} KiB after 100 writes, {after_600} KiB after 600");
    assert!(
        after_600 < after_100 + 1024,
        "RSS grew from {after_100} KiB to {after_600} KiB over 500 writes"
    );
}
