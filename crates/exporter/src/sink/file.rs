//! `file:PATH`: append each record as one line and fsync before the lease
//! is committed.

use super::{Record, Sink, SinkError};
use std::io::Write;
use std::sync::{Arc, Mutex};

pub struct FileSink {
    path: String,
    file: Arc<Mutex<std::fs::File>>,
}

impl FileSink {
    pub fn open(path: &str) -> Result<FileSink, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open sink file {path}: {e}"))?;
        Ok(FileSink { path: path.to_string(), file: Arc::new(Mutex::new(file)) })
    }
}

impl Sink for FileSink {
    fn deliver<'a>(
        &'a self,
        records: &'a [Record],
        _key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'a>> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 1).sum());
        for r in records {
            buf.extend_from_slice(&r.payload);
            buf.push(b'\n');
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
