//! `--wait`: poll each dependency until it is up, within one timeout.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::spec::{WaitKind, WaitTarget};

/// One attempt: `Err` says what was seen ("connection refused", "HTTP
/// 503", "does not exist").
fn probe(target: &WaitTarget, timeout: Duration) -> Result<(), String> {
    match target.kind() {
        WaitKind::Tcp { host, port } => {
            use std::net::ToSocketAddrs;
            let addrs = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let mut last = format!("{host} has no address");
            for addr in addrs {
                match std::net::TcpStream::connect_timeout(&addr, timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = io_reason(&e),
                }
            }
            Err(last)
        }
        WaitKind::Http(url) => {
            let client =
                crate::runtime::http_client(&crate::runtime::Tls::default(), timeout, false)
                    .map_err(|e| format!("{e:#}"))?;
            crate::runtime::block_on(async {
                let resp = client.get(url.clone()).send().await.map_err(|e| {
                    let mut why = String::new();
                    let mut cause: Option<&dyn std::error::Error> = Some(&e);
                    while let Some(c) = cause {
                        why = c.to_string();
                        cause = c.source();
                    }
                    if e.is_timeout() {
                        "no answer in time".to_string()
                    } else {
                        // reqwest moves user:password into a header, but
                        // its causes are not all its own text.
                        crate::spec::redact_urls(&why)
                    }
                })?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", resp.status()))
                }
            })
        }
        WaitKind::File(path) => match std::fs::metadata(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{} does not exist", path.display()))
            }
            Err(e) => Err(format!("{}: {}", path.display(), io_reason(&e))),
        },
    }
}

/// `d` cut to whole milliseconds: humantime prints every nanosecond.
fn whole_millis(d: Duration) -> Duration {
    Duration::new(d.as_secs(), d.subsec_millis() * 1_000_000)
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "no answer in time".into(),
        _ => e.to_string(),
    }
}

/// Waits for every dependency, polling each with backoff (50 ms doubling up
/// to 1 s), all within one `timeout`. The error names the dependency that
/// was not ready and what its last attempt saw.
pub fn wait_all(deps: &[WaitTarget], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    for dep in deps {
        let mut delay = Duration::from_millis(50);
        let mut logged = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = left.clamp(Duration::from_millis(100), Duration::from_secs(5));
            let seen = match probe(dep, attempt) {
                Ok(()) => {
                    if logged {
                        tracing::info!(
                            "{dep} is ready after {}",
                            humantime::format_duration(whole_millis(start.elapsed()))
                        );
                    }
                    break;
                }
                Err(seen) => seen,
            };
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {} waiting for {dep}: {seen}",
                    humantime::format_duration(timeout)
                );
            }
            if logged {
                tracing::debug!("still waiting for {dep}: {seen}");
            } else {
                tracing::info!("waiting for {dep}: {seen}");
                logged = true;
            }
            std::thread::sleep(delay.min(deadline - now));
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
    Ok(())
}
