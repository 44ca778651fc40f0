//! Stop signals.

/// Resolves at the first SIGTERM or SIGINT (never, if they cannot be
/// watched: the process then stops only by being killed).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// A watch that turns `true` at the first SIGTERM or SIGINT.
pub fn stop_flag() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// SIGHUP's stream, registered now: from here on a SIGHUP no longer stops
/// the process (the default action) but waits in the stream for
/// [`spawn_on_hangup`]. `None` if it cannot be watched (logged).
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be watched: the configuration is read at start only");
            None
        }
    }
}

/// Run `on_hangup` at each SIGHUP of `hangups`, one at a time on the
/// blocking pool, until `stopped` turns true.
pub fn spawn_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    on_hangup: impl FnMut() + Send + 'static,
) {
    // A reload reads files, and the broker's reads its metadata store and
    // WAL: on the blocking pool, never on an async worker; one at a time.
    let on_hangup = std::sync::Arc::new(std::sync::Mutex::new(on_hangup));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hangups.recv() => if got.is_none() { return },
                _ = stopped.changed() => return,
            }
            let reload = std::sync::Arc::clone(&on_hangup);
            let run = move || (reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner))();
            if let Err(e) = tokio::task::spawn_blocking(run).await {
                tracing::error!(error = %e, "SIGHUP: the reload did not finish");
            }
        }
    });
}
