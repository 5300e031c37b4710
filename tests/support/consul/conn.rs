//! Connections a test can cut: a listener whose connections fail their
//! reads and writes once killed, so a reply is never written.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

pub(super) struct KillListener(pub(super) tokio::net::TcpListener);

impl axum::serve::Listener for KillListener {
    type Io = ConnIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (ConnIo, Conn) {
        loop {
            match self.0.accept().await {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let ctl = Arc::new(ConnCtl::default());
                    return (
                        ConnIo {
                            inner: sock,
                            ctl: ctl.clone(),
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
