//! `exporter`: see `exporter --help` and `../shared/CONTRACT.md`.
use exporter::worker::ExportError;

fn main() {
    let args: exporter::config::Args = broker::parse_args_or_exit();
    broker::init_tracing();
    let opts = exporter::config::Options::resolve(args).unwrap_or_else(|e| {
        eprintln!("exporter: {e}");
        std::process::exit(2);
    });
    let result = broker::runtime_or_exit("exporter").block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut t), Ok(mut i)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
                let _ = tx.send(true);
            }
        });
        exporter::worker::run(opts, rx).await
    });
    let code = match &result {
        Ok(()) => return,
        Err(ExportError::Usage(_)) => 2,
        Err(ExportError::Fatal(_)) => 1,
    };
    if let Err(e) = result {
        eprintln!("exporter: {e}");
    }
    std::process::exit(code);
}
