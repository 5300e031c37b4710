//! The status server's connections: hyper's HTTP/1 server with the limits
//! `axum::serve` has no settings for ("use hyper or hyper-util if you need
//! configuration", its docs say). Without them, 300 half-sent requests
//! were held forever and, under a 256-file limit, starved the etcd client
//! and `/healthz` of file descriptors.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// How long a client has to send a request's headers, counted from when
/// the connection opens or its previous response went out: hyper's
/// `header_read_timeout`, so it closes half-sent requests and idle
/// keep-alive connections alike.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once, and at most a quarter of the
/// process's file limit, so held connections never take the descriptors
/// the sources and the installs need. At the limit the oldest is closed to
/// make room, so a probe that just connected is answered even while
/// clients hold connections open: every endpoint answers at once, so the
/// oldest connection is the one doing nothing.
pub(crate) const MAX_CONNECTIONS: usize = 64;

fn max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let quarter = getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .and_then(|(soft, _)| usize::try_from(soft / 4).ok())
        .unwrap_or(MAX_CONNECTIONS);
    quarter.clamp(4, MAX_CONNECTIONS)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (for at most [`HEADER_TIMEOUT`]).
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let mut open: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    let max = max_connections();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: retry after a
                    // pause rather than spin; closing connections free
                    // some.
                    tracing::warn!("status server: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        open.retain(|c| !c.is_finished());
        while open.len() >= max {
            if let Some(oldest) = open.pop_front() {
                oldest.abort();
                // Awaited, so its socket is closed before the next accept:
                // in a burst, the accept loop would otherwise run ahead of
                // the aborted tasks and hit the file limit.
                let _ = oldest.await;
            }
        }
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let task = tokio::spawn(async move {
            // A client that hung up or timed out: nothing to report.
            let _ = conn.await;
        });
        open.push_back(task);
    }
    drop(listener);
    if tokio::time::timeout(HEADER_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        for c in open {
            c.abort();
        }
    }
    Ok(())
}
