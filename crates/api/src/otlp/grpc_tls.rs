//! OTLP/gRPC over TLS: the listener's connections, each through its own
//! TLS handshake (spawned, so a slow or silent client holds no one else's
//! handshake; bounded by [`HANDSHAKE_TIMEOUT`]), handed to tonic as they
//! complete. The certificate in force is [`LiveTls::current`] at each
//! handshake, so a reloaded certificate applies to the next connection.

use plumbing::tls::LiveTls;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A handshake must finish within this, else the connection is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed and not yet taken by tonic: a bound, so a burst
/// of connections waits in the kernel's backlog rather than in memory.
const READY_QUEUE: usize = 64;

/// Handshakes in progress at once: each holds a socket and CPU, so a
/// flood of connections waits in the kernel's backlog past this.
const HANDSHAKES: usize = 256;

/// After a failed `accept` (out of descriptors), wait before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One TLS connection, as tonic takes it.
pub(crate) struct TlsConnection(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The stream of `listener`'s connections after their handshakes. The
/// accept task ends when tonic drops the stream (at shutdown).
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Arc<LiveTls>,
) -> impl futures_util::Stream<Item = Result<TlsConnection, std::io::Error>> {
    let (ready, taken) = mpsc::channel::<TlsConnection>(READY_QUEUE);
    tokio::spawn(accept_loop(listener, tls, ready));
    futures_util::stream::unfold(taken, |mut taken| async move { taken.recv().await.map(|c| (Ok(c), taken)) })
}

async fn accept_loop(listener: TcpListener, tls: Arc<LiveTls>, ready: mpsc::Sender<TlsConnection>) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    loop {
        // A place for the handshake before the accept (the semaphore is
        // never closed, so this waits or succeeds).
        let Ok(place) = Arc::clone(&handshakes).acquire_owned().await else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // tonic dropped the stream: the server stopped.
            () = ready.closed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP/gRPC: accepting a connection failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(place);
            match handshake {
                Ok(Ok(secured)) => {
                    let _ = ready.send(TlsConnection(secured)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "OTLP/gRPC: TLS handshake refused"),
                Err(_) => tracing::debug!("OTLP/gRPC: TLS handshake timed out"),
            }
        });
    }
}
