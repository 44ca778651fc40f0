//! A loopback HTTP/1.1 sink written on raw TCP, for the faults a framework
//! server will not produce: a black hole (accepts, reads, never answers),
//! a connection closed in the middle of its response. It can also answer
//! any status with any headers, or accept (200) and keep the lines. The
//! mode can change while an exporter is sending to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// 200, lines kept.
    Accept,
    /// Read the request, then hold the connection open and never answer.
    BlackHole,
    /// Read the request, send the status line and half the promised body, close.
    CloseMidResponse,
    /// Read the request, send part of the status line, close.
    CloseMidStatusLine,
    /// Answer after this delay (then as `Accept`).
    Slow(Duration),
    /// Answer this status with these extra headers and a short text body.
    Status(u16, Vec<(String, String)>),
    /// A worker pool: serve this many requests at once (a divisor of
    /// [`POOL_PERMITS`]), each taking this long; more wait their turn
    /// (counted in `queued`), then as `Accept`.
    Pool(usize, Duration),
}

/// The pool's permits: a request of `Mode::Pool(w, _)` takes `POOL_PERMITS / w`.
pub const POOL_PERMITS: usize = 64;

/// What every connection of one sink shares.
struct Shared {
    mode: Arc<Mutex<Mode>>,
    lines: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<(Instant, Mode)>>>,
    pool: Arc<tokio::sync::Semaphore>,
    /// `Mode::Pool` requests inside: being served or waiting for a worker.
    inside: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
}

pub struct RawSink {
    pub url: String,
    pub port: u16,
    pub mode: Arc<Mutex<Mode>>,
    /// Lines of the requests answered 200.
    pub lines: Arc<Mutex<Vec<String>>>,
    /// Requests fully read (whatever the answer).
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    /// When each request was read, and the mode it met.
    pub log: Arc<Mutex<Vec<(Instant, Mode)>>>,
    /// `Mode::Pool` requests that found every worker busy.
    pub queued: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawSink {
    pub async fn start(mode: Mode) -> RawSink {
        RawSink::start_on(0, mode).await
    }

    /// On a given port (to bring a refused port to life).
    pub async fn start_on(port: u16, mode: Mode) -> RawSink {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind raw sink");
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(mode));
        let (lines, requests, connections, log) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let queued = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(tokio::sync::Semaphore::new(POOL_PERMITS));
        let inside = Arc::new(AtomicU64::new(0));
        let (m, l, r, c, g, q) = (
            Arc::clone(&mode),
            Arc::clone(&lines),
            Arc::clone(&requests),
            Arc::clone(&connections),
            Arc::clone(&log),
            Arc::clone(&queued),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::Relaxed);
                let shared = Shared {
                    mode: Arc::clone(&m),
                    lines: Arc::clone(&l),
                    requests: Arc::clone(&r),
                    log: Arc::clone(&g),
                    pool: Arc::clone(&pool),
                    inside: Arc::clone(&inside),
                    queued: Arc::clone(&q),
                };
                tokio::spawn(async move {
                    let _ = serve(sock, shared).await;
                });
            }
        });
        let url = format!("http://127.0.0.1:{port}/ingest");
        RawSink { url, port, mode, lines, requests, connections, log, queued, task }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for RawSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read one request: head, then `Content-Length` bytes. None at EOF.
async fn read_request(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Ok(Some(body))
}

async fn serve(mut sock: tokio::net::TcpStream, shared: Shared) -> std::io::Result<()> {
    let Shared { mode, lines, requests, log, pool, inside, queued } = shared;
    let mut buf = Vec::new();
    while let Some(body) = read_request(&mut sock, &mut buf).await? {
        requests.fetch_add(1, Ordering::Relaxed);
        let m = mode.lock().unwrap().clone();
        log.lock().unwrap().push((Instant::now(), m.clone()));
        let accept = |lines: &Mutex<Vec<String>>| {
            let text = String::from_utf8_lossy(&body).to_string();
            lines.lock().unwrap().extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        };
        match m {
            Mode::Accept => {
                accept(&lines);
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await?;
            }
            Mode::Slow(d) => {
                tokio::time::sleep(d).await;
                accept(&lines);
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await?;
            }
            Mode::Pool(width, d) => {
                let permits = u32::try_from(POOL_PERMITS / width.max(1)).unwrap_or(1);
                // Requests inside (served or waiting) when this one came: a
                // full pool means it waits.
                if inside.fetch_add(1, Ordering::AcqRel) >= width as u64 {
                    queued.fetch_add(1, Ordering::Relaxed);
                }
                let held = pool.acquire_many(permits).await.expect("the pool is never closed");
                tokio::time::sleep(d).await;
                drop(held);
                inside.fetch_sub(1, Ordering::AcqRel);
                accept(&lines);
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await?;
            }
            Mode::BlackHole => {
                // Keep reading (and discarding) until the client gives up.
                let mut sink = [0u8; 8192];
                while sock.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            Mode::CloseMidResponse => {
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nok, but").await?;
                sock.flush().await?;
                return Ok(()); // dropped: the client sees the body cut short
            }
            Mode::CloseMidStatusLine => {
                sock.write_all(b"HTTP/1.1 20").await?;
                sock.flush().await?;
                return Ok(());
            }
            Mode::Status(code, headers) => {
                let mut resp = format!("HTTP/1.1 {code} Status\r\ncontent-length: 5\r\n");
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\nnope.");
                sock.write_all(resp.as_bytes()).await?;
            }
        }
    }
    Ok(())
}
