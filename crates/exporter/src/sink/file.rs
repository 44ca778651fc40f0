//! `file:PATH`: append each record as one line and fsync before the lease
//! is committed. Lines follow the NDJSON framing of [`super::framing`]: a
//! record that is one JSON line is written as is, newline terminated; any
//! other record as one `{"payload_b64":...}` line.
//!
//! Crash safety, step by step (the committed length lives in
//! `<file>.committed`, see [`super::committed`]):
//! 1. create: the output file is created, fsynced, and its directory
//!    fsynced, so a committed record cannot vanish with its file's entry;
//! 2. deliver: append, fdatasync the file, then durably store the new
//!    committed length; only then does the worker commit the lease;
//! 3. open: the file is cut back to the committed length, so bytes of a
//!    delivery that never finished (whole lines included: their lease was
//!    not committed and will be redelivered) neither stay nor get glued to;
//! 4. after a failed write or sync, the next attempt first stores the
//!    committed length again and cuts the file back to it.
//!
//! A file shorter than its committed length means committed records are
//! gone; the sink refuses to start rather than write past the hole. The
//! file is `flock`ed so that two exporters never cut each other's lines.

use super::committed::{self, Committed};
use super::framing::{push_ndjson_line, Shape};
use super::{Delivery, OpenError, Record, Sink, SinkError};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Cut an unterminated last line; returns the length kept. Only for a file
/// without a usable committed length (first run of this version, or the
/// file was replaced): then every complete line is taken as committed.
fn trim_partial_line(f: &mut File) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        f.set_len(end)?;
        f.sync_data()?;
    }
    Ok(end)
}

/// The output file and what of it is committed; behind one lock so that
/// each batch's lines stay together and the committed length is exact.
struct Output {
    file: File,
    committed: Committed,
    /// A write or sync failed: the file may hold bytes past `committed`.
    dirty: bool,
}

impl Output {
    /// Step 4: make the committed length the file's length again.
    fn cut_back(&mut self) -> std::io::Result<()> {
        let len = self.committed.committed();
        // Stored first: a failed store may have left the newer length in
        // the slot being written; a crash after the cut must not find it.
        self.committed.store(len)?;
        self.file.set_len(len)?;
        self.file.sync_data()
    }

    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.dirty {
            self.cut_back()?;
            self.dirty = false;
        }
        let result = (|| {
            self.file.write_all(buf)?;
            self.file.sync_data()?;
            self.committed.store(self.committed.committed() + buf.len() as u64)
        })();
        self.dirty = result.is_err();
        result
    }
}

/// Leases in flight to a file sink under `--concurrency adaptive`.
pub const FILE_CONCURRENCY: usize = 16;

pub struct FileSink {
    path: String,
    output: Arc<Mutex<Output>>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// Open (creating if needed) and lock the output file; whether it was created.
fn open_locked(path: &Path) -> Result<(File, bool), OpenError> {
    let opts = |create_new: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).append(true);
        if create_new {
            o.create_new(true);
        }
        o
    };
    let (file, created) = match opts(true).open(path) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            (opts(false).open(path).map_err(io_err(path))?, false)
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(OpenError::Locked { path: path.to_path_buf() });
    }
    if created {
        // Step 1: the new file's entry must be durable before anything in it
        // is reported committed.
        file.sync_all().map_err(io_err(path))?;
        committed::sync_dir(committed::parent_dir(path)).map_err(io_err(path))?;
    }
    Ok((file, created))
}

impl FileSink {
    pub fn open(path: &str) -> Result<FileSink, OpenError> {
        let data = PathBuf::from(path);
        let (mut file, created) = open_locked(&data)?;
        let ino = file.metadata().map_err(io_err(&data))?.ino();
        let marker = committed::path_for(&data);
        let known = committed::load(&marker).map_err(io_err(&marker))?.filter(|r| r.ino == ino && !created);
        let committed = match known {
            Some(rec) => {
                let len = file.metadata().map_err(io_err(&data))?.len();
                if len < rec.len {
                    return Err(OpenError::Shorter { path: data, len, committed: rec.len });
                }
                if len > rec.len {
                    // Step 3: bytes past the committed length were never committed.
                    file.set_len(rec.len).map_err(io_err(&data))?;
                    file.sync_data().map_err(io_err(&data))?;
                    tracing::warn!(
                        path,
                        bytes = len - rec.len,
                        "cut bytes past the committed length (an interrupted delivery; it will be redelivered)"
                    );
                }
                Committed::open(&marker, rec).map_err(io_err(&marker))?
            }
            None => {
                let before = file.metadata().map_err(io_err(&data))?.len();
                let kept = trim_partial_line(&mut file).map_err(io_err(&data))?;
                if kept < before {
                    tracing::warn!(
                        path,
                        bytes = before - kept,
                        "cut an unterminated last line left by an interrupted delivery"
                    );
                }
                Committed::create(&marker, kept, ino).map_err(io_err(&marker))?
            }
        };
        let output = Output { file, committed, dirty: false };
        Ok(FileSink { path: path.to_string(), output: Arc::new(Mutex::new(output)) })
    }
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, records: &'a [Record], _key: &'a str) -> Delivery<'a> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 1).sum());
        for r in records {
            push_ndjson_line(&mut buf, &r.payload, &Shape::of(&r.payload));
        }
        let output = Arc::clone(&self.output);
        let path = self.path.clone();
        Box::pin(async move {
            let res = tokio::task::spawn_blocking(move || {
                // A panic elsewhere cannot leave `Output` half-updated in a
                // way `dirty` does not cover, so a poisoned lock is usable.
                let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                out.append(&buf)
            })
            .await;
            match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::Retryable {
                    message: format!("writing {path}: {e}"),
                    retry_after: None,
                    timed_out: false,
                    overload: false,
                }),
                Err(e) => Err(SinkError::Retryable {
                    message: format!("file sink task: {e}"),
                    retry_after: None,
                    timed_out: false,
                    overload: false,
                }),
            }
        })
    }

    /// The file takes one lease at a time under its lock, so the adaptive
    /// controller reads every second lease as queueing and settles at one or
    /// two: the file then waits on each acquire and commit round trip in
    /// turn (~650k records/s in `benches/export_throughput.sh` against ~1M
    /// at 16). The leases in flight here are a pipeline, not a load on a
    /// remote capacity: [`FILE_CONCURRENCY`] of them.
    fn fixed_concurrency(&self) -> Option<usize> {
        Some(FILE_CONCURRENCY)
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: u64, payload: &[u8]) -> Record {
        Record { offset, payload: bytes::Bytes::copy_from_slice(payload), ..Record::default() }
    }

    #[test]
    fn without_a_committed_length_an_unterminated_last_line_is_cut_and_whole_lines_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        drop(FileSink::open(path.to_str().unwrap()).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(committed::load(&committed::path_for(&path)).unwrap().map(|r| r.len), Some(16));
    }

    #[tokio::test]
    async fn open_cuts_back_to_the_committed_length_not_to_the_last_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let p = path.to_str().unwrap();
        let sink = FileSink::open(p).unwrap();
        sink.deliver(&[rec(0, b"{\"a\":1}")], "k").await.unwrap();
        drop(sink);
        // A delivery that wrote whole lines but died before its committed
        // length was stored (so before its lease was committed).
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"b\":2}\n{\"c\":3}\n").unwrap();
        let sink = FileSink::open(p).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        sink.deliver(&[rec(1, b"{\"b\":2}")], "k").await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_committed_length_is_refused_and_a_second_opener_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let p = path.to_str().unwrap();
        let sink = FileSink::open(p).unwrap();
        sink.deliver(&[rec(0, b"{\"a\":1}"), rec(1, b"{\"b\":2}")], "k").await.unwrap();
        assert!(matches!(FileSink::open(p), Err(OpenError::Locked { .. })));
        drop(sink);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(3).unwrap();
        match FileSink::open(p) {
            Err(OpenError::Shorter { len: 3, committed: 16, .. }) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a file missing committed bytes was accepted"),
        }
    }

    #[tokio::test]
    async fn a_replaced_file_starts_from_its_own_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let p = path.to_str().unwrap();
        let sink = FileSink::open(p).unwrap();
        sink.deliver(&[rec(0, b"{\"a\":1}"), rec(1, b"{\"b\":2}")], "k").await.unwrap();
        drop(sink);
        // Rotated away: the new file is another inode, the old length is not its own.
        std::fs::rename(&path, dir.path().join("out.1")).unwrap();
        drop(FileSink::open(p).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(committed::load(&committed::path_for(&path)).unwrap().map(|r| r.len), Some(0));
    }

    #[tokio::test]
    async fn hostile_records_are_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let sink = FileSink::open(path.to_str().unwrap()).unwrap();
        let records =
            [rec(0, b"{\"a\":1}"), rec(1, b"x\ny"), rec(2, b"{\"b\":2}\r\n{\"c\":3}"), rec(3, &[0xff, b'\n'])];
        sink.deliver(&records, "k").await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "{\"a\":1}");
        for (l, r) in lines.iter().zip(&records) {
            assert_eq!(super::super::framing::unframe(l.as_bytes()).unwrap(), r.payload);
        }
    }
}
