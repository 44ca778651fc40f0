//! `file:PATH`: append each record as one line and fsync before the lease
//! is committed. Lines follow the NDJSON framing of [`super::framing`]: a
//! record that is one JSON line is written as is, newline terminated; any
//! other record as one `{"payload_b64":...}` line.
//!
//! Everything committed ends with a newline (the write and its fsync come
//! before the commit). An exporter that died mid-write can leave an
//! unterminated last line; its lease was not committed and will be
//! redelivered, so at open that partial line is cut off — otherwise the next
//! append would be glued onto it.

use super::framing::{push_ndjson_line, Shape};
use super::{Delivery, Record, Sink, SinkError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

/// Cut an unterminated last line; returns how many bytes were removed.
fn trim_partial_line(f: &mut std::fs::File) -> std::io::Result<u64> {
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
    Ok(len - end)
}

pub struct FileSink {
    path: String,
    file: Arc<Mutex<std::fs::File>>,
}

impl FileSink {
    pub fn open(path: &str) -> Result<FileSink, String> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| format!("cannot open sink file {path}: {e}"))?;
        let cut = trim_partial_line(&mut file).map_err(|e| format!("cannot check the tail of {path}: {e}"))?;
        if cut > 0 {
            tracing::warn!(path, bytes = cut, "cut an unterminated last line left by an interrupted delivery");
        }
        Ok(FileSink { path: path.to_string(), file: Arc::new(Mutex::new(file)) })
    }
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, records: &'a [Record], _key: &'a str) -> Delivery<'a> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 1).sum());
        for r in records {
            push_ndjson_line(&mut buf, &r.payload, &Shape::of(&r.payload));
        }
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        Box::pin(async move {
            let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                // One writer at a time keeps each batch's lines together.
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                f.write_all(&buf)?;
                f.sync_data()
            })
            .await;
            match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::Retryable {
                    message: format!("writing {path}: {e}"),
                    retry_after: None,
                    timed_out: false,
                }),
                Err(e) => Err(SinkError::Retryable {
                    message: format!("file sink task: {e}"),
                    retry_after: None,
                    timed_out: false,
                }),
            }
        })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unterminated_last_line_is_cut_at_open_and_whole_lines_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let _sink = FileSink::open(path.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        std::fs::write(&path, b"no newline at all").unwrap();
        let _sink = FileSink::open(path.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }
}
