//! `exporter`: see `exporter --help` and `../shared/CONTRACT.md`.
use clap::Parser;

fn main() {
    let args = match exporter::config::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    broker::init_tracing();
    let opts = match exporter::config::Options::resolve(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("exporter: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("exporter: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
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
    match result {
        Ok(()) => {}
        Err(exporter::worker::ExportError::Usage(e)) => {
            eprintln!("exporter: {e}");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("exporter: {e}");
            std::process::exit(1);
        }
    }
}
