//! Connections a test can cut: a listener whose connections fail their
//! reads and writes once killed, so a reply is never written.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-connection switch: once killed, the connection's reads and writes
/// fail, so hyper closes the socket without writing the reply. axum has no
/// other way to drop a connection from a handler.
#[derive(Default)]
struct ConnCtl {
    killed: AtomicBool,
}

#[derive(Clone)]
pub(super) struct Conn {
    ctl: Arc<ConnCtl>,
}

// axum::serve wants the listener's address type printable.
impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    pub(super) fn kill(&self) {
        self.ctl.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, KillListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// `limits.http_max_conns_per_client`, as Consul's agent enforces it
/// through hashicorp/go-connlimit (agent/agent.go wires
/// HTTPConnStateFuncWithDefault429Handler into the HTTP server's
/// ConnState): a new connection past the cap gets a raw
/// "429 Too Many Requests" and is closed, before any request is read. All
/// of the test server's clients are 127.0.0.1, so per client is in total.
#[derive(Default)]
pub(super) struct ConnLimit {
    /// 0: no limit (the test server's default; Consul's is 200).
    pub(super) max: AtomicUsize,
    pub(super) open: Arc<AtomicUsize>,
    pub(super) rejected: AtomicUsize,
}

/// go-connlimit's reply, byte for byte.
const TOO_MANY: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls\n";

pub(super) struct KillListener(
    pub(super) tokio::net::TcpListener,
    pub(super) Arc<ConnLimit>,
);

/// Writes the 429 and closes. Unlike Consul (which closes at once, so a
/// client whose request is still arriving may see a reset instead), the
/// request is drained first, so the client reliably reads the 429.
async fn refuse(mut sock: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TOO_MANY}",
        TOO_MANY.len()
    );
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut buf)).await;
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl axum::serve::Listener for KillListener {
    type Io = ConnIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (ConnIo, Conn) {
        loop {
            match self.0.accept().await {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let max = self.1.max.load(Ordering::SeqCst);
                    if max > 0 && self.1.open.load(Ordering::SeqCst) >= max {
                        self.1.rejected.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(refuse(sock));
                        continue;
                    }
                    self.1.open.fetch_add(1, Ordering::SeqCst);
                    let ctl = Arc::new(ConnCtl::default());
                    return (
                        ConnIo {
                            inner: sock,
                            ctl: ctl.clone(),
                            open: self.1.open.clone(),
                        },
                        Conn { ctl },
                    );
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Conn> {
        self.0.local_addr().map(|_| Conn {
            ctl: Arc::default(),
        })
    }
}

pub(super) struct ConnIo {
    inner: tokio::net::TcpStream,
    ctl: Arc<ConnCtl>,
    /// The count of open connections, decremented when this one closes.
    open: Arc<AtomicUsize>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnIo {
    fn killed(&self) -> Option<io::Error> {
        self.ctl
            .killed
            .load(Ordering::SeqCst)
            .then(|| io::Error::from(io::ErrorKind::ConnectionAborted))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
