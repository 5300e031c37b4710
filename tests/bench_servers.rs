//! Servers for the benchmarks in `bench/`, not tests: each `#[ignore]`d
//! function runs a server until its stdin closes (or it is killed), so a
//! benchmark script can start it with
//!
//! ```text
//! cargo test --release --test main -- --ignored --exact bench_servers::consul_server --nocapture
//! ```
//!
//! and read `CONSUL_ADDR=http://127.0.0.1:PORT` from its stdout.

use std::io::{Read, Write};

use crate::support::consul::ConsulServer;

/// The Consul KV test server on 127.0.0.1 and a free port; prints its
/// address, then serves until stdin reaches end of file.
#[test]
#[ignore = "a server for bench/watch_bench.py, not a test"]
fn consul_server() {
    let consul = ConsulServer::start();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "CONSUL_ADDR={}", consul.addr()).unwrap();
        out.flush().unwrap();
    }
    // The benchmark holds stdin open while it needs the server; when it
    // exits (even killed), the pipe closes and the server stops.
    let mut sink = [0u8; 256];
    let mut stdin = std::io::stdin().lock();
    while stdin.read(&mut sink).is_ok_and(|n| n > 0) {}
    let kv = consul.kv_requests().len();
    writeln!(std::io::stdout(), "CONSUL_KV_REQUESTS={kv}").unwrap();
}
