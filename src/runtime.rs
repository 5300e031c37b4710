//! The async runtime and the HTTP client, built only when a network source
//! (etcd, Consul) is configured: a render from env and files starts no
//! threads and loads no TLS, so it stays at envsubst's start-up cost.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

/// The process's runtime, created on first use. One worker thread: the work
/// is waiting on sockets, not computing.
pub fn get() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stencil-io")
            .enable_all()
            .build()
            .expect("cannot start the async runtime")
    })
}

/// Runs a future to completion from synchronous code (the template
/// functions run inside minijinja, which is synchronous).
pub fn block_on<F: Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        // Already on a runtime thread (tests driving the library from
        // async code): block this thread without stalling the runtime.
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(f)),
        Err(_) => get().block_on(f),
    }
}

/// TLS material for an HTTP client, as file paths.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Tls {
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

/// An HTTP client with stencil's timeouts and TLS settings.
///
/// `timeout` bounds connecting and each request; long-lived watch streams
/// are built with `for_streams` and rely on TCP keepalive instead.
pub(crate) fn http_client(
    tls: &Tls,
    timeout: Duration,
    for_streams: bool,
) -> Result<reqwest::Client> {
    static PROVIDER: OnceLock<()> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        // Fails only if another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .tcp_keepalive(Duration::from_secs(15))
        .no_proxy()
        .user_agent(concat!("stencil/", env!("CARGO_PKG_VERSION")));
    if !for_streams {
        builder = builder.timeout(timeout);
    }
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca, "CA certificate")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("cannot parse the CA certificate {}", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert, "client certificate")?;
            pem.push(b'\n');
            pem.extend(read(key, "client key")?);
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "cannot use the client certificate {} with key {}",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => anyhow::bail!("a client certificate needs both cert_file and key_file"),
    }
    builder.build().context("cannot build the HTTP client")
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// What went wrong in a request, in a few words: the innermost cause
/// (connection refused, reset, a certificate problem, timed out). The
/// layers above it repeat the URL and "error sending request", which made
/// every retry's log line a paragraph; the caller names the endpoint.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(cause) = root.source() {
        root = cause;
    }
    let mut msg = root.to_string();
    if e.is_timeout() && !msg.contains("timed out") {
        msg.push_str(" (timed out)");
    }
    msg
}

/// Exponential backoff with jitter: 250 ms doubling up to a cap (1 min by
/// default), each delay up to 20% shorter so many clients do not retry in
/// step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

const FIRST_DELAY: Duration = Duration::from_millis(250);

impl Default for Backoff {
    fn default() -> Self {
        Backoff::capped(Duration::from_secs(60))
    }
}

impl Backoff {
    /// Backoff whose delays never exceed `cap`.
    pub(crate) fn capped(cap: Duration) -> Backoff {
        Backoff {
            next: FIRST_DELAY.min(cap),
            cap,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d.mul_f64(1.0 - jitter_fraction() * 0.2)
    }

    pub(crate) fn reset(&mut self) {
        *self = Backoff::capped(self.cap);
    }
}

/// A number in [0, 1) that differs between calls and processes; good enough
/// for spreading retries, not for anything secret.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let bucket = u32::try_from(h.finish() % 10_000).expect("below 10 000");
    f64::from(bucket) / 10_000.0
}

/// The default cap on one HTTP response body and one watch-stream line
/// from etcd or Consul (`max_response_size`): far above any real KV reply,
/// far below what would exhaust a sidecar's memory.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 64 << 20;

/// A reply over the cap on response sizes; the message names the server.
#[derive(Debug, thiserror::Error)]
#[error("{server} sent a reply over the {cap}-byte limit (max_response_size); not read further")]
pub(crate) struct TooLarge {
    pub(crate) server: String,
    pub(crate) cap: usize,
}

/// Sends `req`; an error says `server` did not answer, and why.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    server: &str,
) -> anyhow::Result<reqwest::Response> {
    (req.send().await)
        .map_err(|e| anyhow::anyhow!("{server} did not answer: {}", describe_reqwest(&e)))
}

/// Reads `resp`'s body whole, but never more than `cap` bytes: a server
/// that says (Content-Length) or sends more is a [`TooLarge`] error naming
/// `server`, not memory.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    cap: usize,
    server: &str,
) -> anyhow::Result<Vec<u8>> {
    let too_large = || TooLarge {
        server: server.to_string(),
        cap,
    };
    let announced = resp.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > cap) {
        return Err(too_large().into());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err(too_large().into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                let kind = describe_reqwest(&e);
                return Err(anyhow::anyhow!("{server} broke off its reply: {kind}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_backoff_never_waits_longer_than_its_cap() {
        let cap = Duration::from_millis(500);
        let mut b = Backoff::capped(cap);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= cap), "{delays:?}");
        assert!(delays[19] >= cap.mul_f64(0.8), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= FIRST_DELAY);
    }
}
