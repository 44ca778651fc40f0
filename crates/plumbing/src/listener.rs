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
//! all are gone — or until [`Limits::drain`] passed, whatever clients do.
//!
//! Bounded: at most [`Limits::max_connections`] connections are served at
//! once; one more is answered `503 overloaded` (the contract's JSON, with
//! `Retry-After`) and closed, and counted through [`Limits::on_refused`].
//! Connections that have not sent a whole first request head are held apart
//! ([`crate::admission`]): at most [`Limits::max_pending`], each with a
//! first-byte and a first-head deadline, the oldest silent one evicted for
//! a new one. A refused connection still has a bounded part of what it
//! sent read before the close, so the client reads the 503 instead of a
//! reset.
//!
//! Every error answer in the contract's shape: hyper answers some requests
//! itself, before any handler runs (a head too large: 431; one it cannot
//! parse: 400), with an empty body. [`contract_errors`] rewrites any
//! bodiless error answer into `{"error":{"code":..,"message":..}}`, so no
//! layer answers outside the contract.

use crate::admission::{HeadSlot, PendingPool};
use crate::reasons::Reason;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a connection may take to send a whole request head, counted
/// from when the server waits for one (also on an idle keep-alive
/// connection: an idle client is closed after this, as by most servers).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed `accept` (out of file descriptors, say), wait this long
/// before the next: the error is not the client's, and retrying at once
/// would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds of one listener.
#[derive(Clone)]
pub struct Limits {
    /// Connections served at once; beyond, `503 overloaded` and close.
    pub max_connections: usize,
    /// Connections waiting for their first request head at once (see
    /// [`crate::admission`]).
    pub max_pending: usize,
    /// A new connection's first byte must arrive within this.
    pub first_byte_timeout: Duration,
    /// A new connection's whole first head must arrive within this.
    pub first_head_timeout: Duration,
    /// After a stop, how long requests in flight may take to finish.
    pub drain: Duration,
    /// Called with a reason for every connection refused or closed early:
    /// `connections` (the cap), `pending` (every pending connection is
    /// mid-head), `evicted` (the oldest silent one made room),
    /// `first_byte_timeout`, `first_head_timeout`.
    pub on_refused: std::sync::Arc<dyn Fn(crate::reasons::Reason) + Send + Sync>,
    /// TLS on this listener (`None`: plain HTTP). The handshake has the
    /// first-head deadline; a plain-text request gets a clear 400.
    pub tls: Option<std::sync::Arc<crate::tls::LiveTls>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_pending: 256,
            first_byte_timeout: Duration::from_secs(2),
            first_head_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            on_refused: std::sync::Arc::new(|_| {}),
            tls: None,
        }
    }
}

/// Serve `service` on `listener` until `stop` resolves, then drain.
pub async fn serve<S, B>(listener: TcpListener, service: S, limits: Limits, stop: impl Future<Output = ()>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with(listener, move |_| service.clone(), limits, stop, HEADER_READ_TIMEOUT).await
}

/// [`serve`], with each connection's service made from the client's
/// address: what a handler needs to bound state per peer (the broker's
/// capacity reports) without a per-request extension on the hot path.
pub async fn serve_per_peer<M, S, B>(listener: TcpListener, make: M, limits: Limits, stop: impl Future<Output = ()>)
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with(listener, make, limits, stop, HEADER_READ_TIMEOUT).await
}

async fn serve_with<M, S, B>(
    listener: TcpListener,
    make: M,
    limits: Limits,
    stop: impl Future<Output = ()>,
    head_timeout: Duration,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(head_timeout);
    let graceful = GracefulShutdown::new();
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pool = PendingPool::new(limits.max_pending);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if live.load(std::sync::atomic::Ordering::Acquire) >= limits.max_connections {
                        (limits.on_refused)(Reason::Connections);
                        tokio::spawn(refuse(stream, "the server is at its connection limit; retry shortly"));
                        continue;
                    }
                    let (slot, evicted) = pool.admit();
                    if evicted {
                        (limits.on_refused)(Reason::Evicted);
                    }
                    let Some(slot) = slot else {
                        (limits.on_refused)(Reason::Pending);
                        tokio::spawn(refuse(stream, "too many connections are waiting to send their first request; retry shortly"));
                        continue;
                    };
                    // One write per answer; Nagle would only add delay.
                    let _ = stream.set_nodelay(true);
                    let slot = std::sync::Arc::new(slot);
                    let service = ReleaseOnHead { inner: make(peer), slot: std::sync::Arc::clone(&slot) };
                    let guard = LiveGuard::new(&live);
                    let (limits, http, watcher) = (limits.clone(), http.clone(), graceful.watcher());
                    tokio::spawn(async move {
                        serve_admitted(stream, service, slot, &limits, &http, watcher).await;
                        drop(guard);
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
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(drain = ?limits.drain, "requests still in flight after the drain bound; stopping anyway");
    }
}

/// One admitted connection: its first byte and its first head within their
/// deadlines (else it is closed: it has sent no request to answer), then
/// served until it closes.
async fn serve_admitted<S, B>(
    stream: tokio::net::TcpStream,
    service: ReleaseOnHead<S>,
    slot: std::sync::Arc<HeadSlot>,
    limits: &Limits,
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut probe = [0u8; 1];
    tokio::select! {
        spoke = tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut probe)) => match spoke {
            Ok(Ok(n)) if n > 0 => slot.spoke(),
            Ok(_) => return, // closed, or an error: nothing to answer
            Err(_) => {
                (limits.on_refused)(Reason::FirstByteTimeout);
                return;
            }
        },
        () = slot.evicted() => return,
    }
    // One first-head deadline, the TLS handshake included.
    let deadline = tokio::time::Instant::now() + limits.first_head_timeout;
    let Some(tls) = &limits.tls else {
        return serve_connection(stream, service, &slot, deadline, limits, http, watcher).await;
    };
    if probe[0] != crate::tls::TLS_HANDSHAKE_RECORD {
        // A plain-text client on a TLS port: a clear answer, not a hang
        // or a handshake alert it cannot read.
        let answer = error_answer(
            400,
            "invalid_request",
            "this port speaks TLS: use https:// (the request was sent in plain text)",
        );
        // Awaited here, so the connection keeps its place under the caps.
        answer_and_close(stream, answer).await;
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(secured)) => serve_connection(secured, service, &slot, deadline, limits, http, watcher).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
        Err(_) => (limits.on_refused)(Reason::FirstHeadTimeout),
    }
}

/// Serve one connection (plain or TLS) until it closes; closed at the
/// first-head deadline if no whole head arrived by then.
async fn serve_connection<I, S, B>(
    io: I,
    service: ReleaseOnHead<S>,
    slot: &HeadSlot,
    first_head_deadline: tokio::time::Instant,
    limits: &Limits,
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let io = TokioIo::new(ContractErrors::new(io));
    let conn = watcher.watch(http.serve_connection(io, service));
    tokio::pin!(conn);
    let deadline = tokio::time::sleep_until(first_head_deadline);
    tokio::pin!(deadline);
    let result = tokio::select! {
        r = &mut conn => r,
        () = &mut deadline => {
            if !slot.is_released() {
                // No whole head yet: no request is in flight, so dropping the connection answers no one.
                (limits.on_refused)(Reason::FirstHeadTimeout);
                return;
            }
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// Write `answer` and close, reading (and dropping) a bounded part of what
/// the client sends so it reads the answer rather than a reset.
async fn answer_and_close(mut stream: tokio::net::TcpStream, answer: Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut read = 0usize;
        while read < REFUSED_READ_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// A connection's service that gives its pending place back at the first
/// request: hyper calls a service once a whole head was read.
struct ReleaseOnHead<S> {
    inner: S,
    slot: std::sync::Arc<HeadSlot>,
}

impl<S, R> Service<R> for ReleaseOnHead<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> Self::Future {
        self.slot.release();
        self.inner.call(req)
    }
}

/// Counts a live connection until dropped.
struct LiveGuard(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl LiveGuard {
    fn new(live: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        live.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LiveGuard(std::sync::Arc::clone(live))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Answer a connection beyond a cap with `503 overloaded` and close it,
/// after reading (and dropping) a bounded part of what it sends: closing a
/// socket with unread bytes resets it, and the client would read a reset
/// instead of the answer. Bounded in bytes and time: the peer may never
/// stop sending, nor read.
async fn refuse(stream: tokio::net::TcpStream, why: &str) {
    answer_and_close(stream, error_answer(503, "overloaded", why)).await;
}

/// How much of a refused connection's request is read before the close.
const REFUSED_READ_BYTES: usize = 256 << 10;

/// A whole HTTP/1.1 error answer in the contract's shape; closes the connection.
pub(crate) fn error_answer(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}");
    let retry = if status == 503 || status == 429 { "retry-after: 1\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The contract's code and message for a bodiless error answer of `status`.
fn code_for(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request", "the request could not be parsed as HTTP/1.1; check its request line and headers"),
        404 => ("not_found", "no such endpoint; see docs/api.md for the routes"),
        405 => ("method_not_allowed", "this endpoint does not take that method; see docs/api.md"),
        413 => ("payload_too_large", "the request is larger than the server accepts"),
        431 => {
            ("headers_too_large", "the request head is larger than the server accepts; send fewer or shorter headers")
        }
        s if s >= 500 => ("overloaded", "the server could not answer this request; retry shortly"),
        _ => ("invalid_request", "the request was refused; see docs/api.md"),
    }
}

#[cfg(test)]
use contract::contract_errors;
use contract::ContractErrors;

mod contract;
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
            move |_| front,
            Limits::default(),
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

    #[test]
    fn only_bodiless_error_heads_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(contract_errors(hyper_431).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 ") && out.ends_with("{\"error\":{\"code\":\"headers_too_large\",\"message\":\"the request head is larger than the server accepts; send fewer or shorter headers\"}}"), "{out}");
        let json_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(contract_errors(json_400), None, "an answer with a body is the handler's own");
        assert_eq!(contract_errors(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(contract_errors(b"HTTP/1.1 204 No Content\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn a_head_too_large_is_answered_in_the_contracts_shape() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        });
        let server = tokio::spawn(serve(listener, svc, Limits::default(), std::future::pending()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
        let _ = c.write_all(big.as_bytes()).await;
        let (answer, _) = read_until_closed(&mut c, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 431") && text.contains("\"code\":\"headers_too_large\""), "{text}");
        server.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_get_503_overloaded_and_are_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        });
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = std::sync::Arc::clone(&refused);
        let limits = Limits {
            max_connections: 2,
            on_refused: std::sync::Arc::new(move |_| {
                r.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }),
            ..Limits::default()
        };
        let server = tokio::spawn(serve(listener, svc, limits, std::future::pending()));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            held.push(c);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            closed
                && text.starts_with("HTTP/1.1 503")
                && text.contains("overloaded")
                && text.contains("retry-after: 1"),
            "{text}"
        );
        assert_eq!(refused.load(std::sync::atomic::Ordering::Acquire), 1);
        server.abort();
    }

    #[tokio::test]
    async fn a_stop_returns_within_the_drain_bound_whatever_clients_do() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A handler that never answers: a request stuck in flight.
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            std::future::pending::<()>().await;
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let limits = Limits { drain: Duration::from_millis(300), ..Limits::default() };
        let server = tokio::spawn(serve(listener, svc, limits, async move {
            let _ = stop_rx.await;
        }));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("stopped within the bound").unwrap();
    }
}
