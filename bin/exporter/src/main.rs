//! `exporter`: see `exporter --help` and `../shared/CONTRACT.md`.
use exporter::worker::ExportError;

fn main() {
    let args: exporter::config::Args = plumbing::cli::parse_args_or_exit();
    plumbing::logging::init_tracing();
    let opts = exporter::config::Options::resolve(args).unwrap_or_else(|e| {
        eprintln!("exporter: {e}");
        std::process::exit(2);
    });
    let result = plumbing::cli::runtime_or_exit("exporter")
        .block_on(async { exporter::worker::run(opts, plumbing::signals::stop_flag()).await });
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
