//! The hardened accept loop that the broker and the exporter's `/metrics`
//! both serve on: every connection is served by hyper's HTTP/1.1 server
//! directly, with a deadline on each request head.
//!
//! Why not `axum::serve`: it sets no header-read timeout, so a client that
//! opens connections and never finishes a request head (slowloris) keeps
//! each one, and its task, forever. Here a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] of the server starting to wait for it, else
//! hyper closes the connection. A stop (SIGTERM/SIGINT) stops accepting,
//! lets every connection finish the request it is in (so a batch being
//! committed still gets its answer), closes idle ones, and returns once
//! all are gone.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a connection may take to send a whole request head, counted
/// from when the server waits for one (also on an idle keep-alive
/// connection: an idle client is closed after this, as by most servers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed `accept` (out of file descriptors, say), wait this long
/// before the next: the error is not the client's, and retrying at once
/// would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serve `service` on `listener` until `stop` resolves, then drain.
pub async fn serve<S, B>(listener: TcpListener, service: S, stop: impl Future<Output = ()>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with(listener, service, stop, HEADER_READ_TIMEOUT).await
}

async fn serve_with<S, B>(listener: TcpListener, service: S, stop: impl Future<Output = ()>, head_timeout: Duration)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(head_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // One write per answer; Nagle would only add delay.
                    let _ = stream.set_nodelay(true);
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection closed with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut stop => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Read until the peer closes or `limit` passes; returns what was read
    /// and whether the peer closed.
    async fn read_until_closed(conn: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, false),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let front = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::builder().status(503).body(String::from("busy")).unwrap())
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            listener,
            front,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_millis(300),
        ));

        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /v1/topics/events/records HTTP/1.1\r\nHost: weir\r\n").await.unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
        assert!(closed, "a half-sent request head kept its connection for 10 s");
        assert!(started.elapsed() >= Duration::from_millis(250), "closed before the deadline: {:?}", started.elapsed());

        // The server still answers a whole request.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET /readyz HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n").await.unwrap();
        let (answer, closed) = read_until_closed(&mut ok, Duration::from_secs(10)).await;
        assert!(closed);
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    }
}
